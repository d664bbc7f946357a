//! Payments BB connector (G2P): register a beneficiary in the identity account mapper, disburse one
//! payment as a raw batch whose outcome arrives by callback, and reverse a payment for compensation.
//!
//! | job type | call | outcome |
//! |---|---|---|
//! | `govstack.payments.registerBeneficiary` | `POST /identityAccountMapper/beneficiary` | `beneficiary` at the acknowledgement |
//! | `govstack.payments.disburse` | `POST /batchtransactions?type=raw` → 202 `{batchId}` | waits; the callback completes it (`payment`) or throws `PAYMENT_FAILED` |
//! | `govstack.payments.reverse` | the same, debiting the beneficiary and crediting the programme account | as disburse |
//!
//! # Exactly once
//! A disbursement carries the job's idempotency key three times: `X-CorrelationID` (the BB answers a
//! repeated batch with the same `batchId` and sends its recorded outcome again), the transaction's
//! `requestId` (a BB never pays a request id twice) and the callback URL
//! `{callback_url}/payments/{idempotencyKey}` (which names the waiting job). A job handed out again after
//! a timeout, a retry or a crash therefore repeats the same request, and the beneficiary is paid once.
//! The spec caps `requestId` at 16 characters, `X-CorrelationID` at 20 and the beneficiary `RequestID`
//! at 12: a longer key is replaced by a hash of it of that length, the same on every attempt.
//!
//! # Reversal
//! The Payments BB API has no reversal or refund endpoint. `govstack.payments.reverse` is modelled as a
//! disbursement in the other direction: the beneficiary is the debit party, the programme account the
//! credit party, under the reversal job's own idempotency key. Whether a BB may debit a beneficiary's
//! account is its policy; a refusal arrives as `PAYMENT_FAILED`.
//!
//! # Callback
//! [`callback_outcome`] reads the BB's batch status update (BulkPaymentStatusUpdate.yml, with the
//! `status` and `transactions` the sandbox and Mifos Payment Hub add): `COMPLETED` → `payment`,
//! `FAILED` → `PAYMENT_FAILED` with the failed transactions' reasons.
//!
//! Leaves out: batches of more than one transaction (a journey pays one beneficiary; a bulk run is many
//! instances), CSV batches, `PUT` beneficiary updates, account lookup and pre-payment validation,
//! vouchers and P2G bill payments. The beneficiary onboarding report goes to
//! `{callback_url}/beneficiaries/{key}`, where govflow acknowledges and logs it: the registration job
//! completes at the BB's acknowledgement, not at the report.

use govflow_engine::runtime::VariableMap;
use reqwest::Method;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{
    complete, optional, optional_str, permanent, require_text, required, setting_or, text_field, Param,
    TaskContract,
};
use crate::client::{BbClient, BbRequest, BbResponse};
use crate::config::Bb;
use crate::connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};

pub const REGISTER_BENEFICIARY: &str = "govstack.payments.registerBeneficiary";
pub const DISBURSE: &str = "govstack.payments.disburse";
pub const REVERSE: &str = "govstack.payments.reverse";

pub const PAYMENT_FAILED: &str = "PAYMENT_FAILED";
pub const BENEFICIARY_NOT_REGISTERED: &str = "BENEFICIARY_NOT_REGISTERED";

/// `Platform-TenantId` when `connectors.payments.tenant` is not set.
pub const DEFAULT_TENANT: &str = "govflow";
pub const DEFAULT_PAYMENT_MODE: &str = "mojaloop";
pub const DEFAULT_PAYEE_ID_TYPE: &str = "nationalId";
pub const DEFAULT_ACCOUNT_TYPE: &str = "accountNumber";
/// The spec's `maxLength` of `X-Callback-URL`.
const MAX_CALLBACK_URL: usize = 100;
const MAX_DESCRIPTION: usize = 50;

const PAYMENT_INPUTS: &[Param] = &[
    required("payee", "the beneficiary: national id (functional id), or account as payeeIdType says"),
    required("amount", "amount, a number > 0"),
    required("currency", "ISO 4217 code, e.g. USD"),
    optional("description", "narration, at most 50 characters (longer is cut)"),
    optional("paymentMode", "the BB's payment mode, e.g. mojaloop, gsma (default mojaloop)"),
];
const PAYMENT_HEADERS: &[Param] = &[
    required("programmeAccount", "the programme's account (debited by disburse, credited by reverse)"),
    optional("programmeAccountType", "key of the programme account party (default accountNumber)"),
    optional("payeeIdType", "key of the payee party (default nationalId: resolved by the account mapper)"),
    optional("paymentMode", "the BB's payment mode (default mojaloop)"),
    optional("programId", "X-Program-Id, the budget programme"),
];

pub const CONTRACTS: &[TaskContract] = &[
    TaskContract {
        job_type: REGISTER_BENEFICIARY,
        inputs: &[
            required("payee", "the beneficiary's national id (payeeIdentity, at most 20 characters)"),
            required(
                "paymentModality",
                "00 bank account, 01 mobile money, 02 voucher, 03 wallet, 04 proxy (or those names)",
            ),
            required("financialAddress", "account number, phone number or wallet id"),
        ],
        headers: &[optional(
            "registeringInstitution",
            "X-Registering-Institution-ID, at most 12 characters (default: the tenant)",
        )],
        outputs: &["beneficiary"],
        errors: &[BENEFICIARY_NOT_REGISTERED],
    },
    TaskContract {
        job_type: DISBURSE,
        inputs: PAYMENT_INPUTS,
        headers: PAYMENT_HEADERS,
        outputs: &["payment"],
        errors: &[PAYMENT_FAILED],
    },
    TaskContract {
        job_type: REVERSE,
        inputs: &[
            required("payee", "the beneficiary whose account is debited"),
            required("amount", "amount, a number > 0"),
            required("currency", "ISO 4217 code, e.g. USD"),
            optional("description", "narration (default: Reversal of {originalBatchId})"),
            optional("paymentMode", "the BB's payment mode (default mojaloop)"),
            optional("originalBatchId", "the batch of the payment reversed, for the narration"),
        ],
        headers: PAYMENT_HEADERS,
        outputs: &["payment"],
        errors: &[PAYMENT_FAILED],
    },
];

/// The Payments connector (all its job types).
#[derive(Debug, Clone)]
pub struct PaymentsConnector {
    client: BbClient,
}

impl PaymentsConnector {
    pub fn new(client: BbClient) -> PaymentsConnector {
        PaymentsConnector { client }
    }
}

impl Connector for PaymentsConnector {
    fn job_types(&self) -> Vec<String> {
        CONTRACTS.iter().map(|contract| contract.job_type.to_owned()).collect()
    }

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture {
        let client = self.client.clone();
        Box::pin(async move {
            match request.job_type.as_str() {
                REGISTER_BENEFICIARY => {
                    let call = beneficiary_request(&client, &request)?;
                    let response = client.call(Bb::Payments, call).await?;
                    beneficiary_outcome(&request, &response)
                }
                DISBURSE | REVERSE => {
                    let call = payment_request(&client, &request)?;
                    let response = client.call(Bb::Payments, call).await?;
                    accepted(&request, &response)
                }
                other => Err(permanent(&request, format!("the payments connector does not serve '{other}'"))),
            }
        })
    }
}

/// The idempotency key cut to a field's `max` length: itself when it fits, else the first `max` hex
/// digits of its SHA-256 (the same on every attempt).
pub fn short_key(key: &str, max: usize) -> String {
    if key.len() <= max {
        key.to_owned()
    } else {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        digest.chars().take(max).collect()
    }
}

fn tenant(client: &BbClient) -> String {
    client
        .config()
        .payments
        .tenant
        .clone()
        .filter(|tenant| !tenant.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_TENANT.to_owned())
}

/// `{callback_url}/{kind}/{idempotency_key}`, within the spec's length.
fn callback_url(client: &BbClient, request: &ConnectorRequest, kind: &str) -> Result<String, ConnectorError> {
    let base = client.config().callback_url.as_deref().ok_or_else(|| {
        permanent(
            request,
            "the Payments BB answers by callback, but connectors.callback_url is not set in govflow.toml \
             (the public base URL of govflow's /api/v1/callbacks, or GOVFLOW_CALLBACK_URL)",
        )
    })?;
    let url = format!("{}/{kind}/{}", base.trim_end_matches('/'), request.idempotency_key);
    if url.len() > MAX_CALLBACK_URL {
        return Err(permanent(
            request,
            format!(
                "the callback URL would be {} characters, over the {MAX_CALLBACK_URL} the Payments BB accepts: \
                 shorten connectors.callback_url",
                url.len()
            ),
        ));
    }
    Ok(url)
}

/// A positive, finite amount (a JSON number or a numeric string).
fn amount(request: &ConnectorRequest) -> Result<f64, ConnectorError> {
    let value = request.require("amount")?;
    let amount = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    match amount {
        Some(amount) if amount.is_finite() && amount > 0.0 => Ok(amount),
        Some(_) => Err(permanent(request, "input variable 'amount' must be greater than 0")),
        None => Err(permanent(
            request,
            format!("input variable 'amount' must be a number, not {}", super::kind(value)),
        )),
    }
}

fn currency(request: &ConnectorRequest) -> Result<String, ConnectorError> {
    let currency = require_text(request, "currency")?.trim().to_ascii_uppercase();
    if currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        Ok(currency)
    } else {
        Err(permanent(request, "input variable 'currency' must be a 3-letter ISO 4217 code, e.g. USD"))
    }
}

fn party(key: &str, value: &str) -> Value {
    json!([{"key": key, "value": value}])
}

/// The batch of one transaction a disburse (or reverse) job sends.
fn payment_request(client: &BbClient, request: &ConnectorRequest) -> Result<BbRequest, ConnectorError> {
    let payee = require_text(request, "payee")?;
    let amount = amount(request)?;
    let currency = currency(request)?;
    let programme = request.require_setting("programmeAccount")?;
    let programme_type = setting_or(request, "programmeAccountType", DEFAULT_ACCOUNT_TYPE);
    let payee_type = setting_or(request, "payeeIdType", DEFAULT_PAYEE_ID_TYPE);
    let payment_mode = setting_or(request, "paymentMode", DEFAULT_PAYMENT_MODE);
    let reverse = request.job_type == REVERSE;
    let description = match optional_str(request, "description")? {
        Some(description) if !description.trim().is_empty() => description,
        _ if reverse => match optional_str(request, "originalBatchId")? {
            Some(batch) => format!("Reversal of {batch}"),
            None => "Reversal".to_owned(),
        },
        _ => String::new(),
    };
    let (credit, debit) = if reverse {
        (party(&programme_type, &programme), party(&payee_type, &payee))
    } else {
        (party(&payee_type, &payee), party(&programme_type, &programme))
    };
    let mut transaction = Map::new();
    transaction.insert("requestId".into(), json!(short_key(&request.idempotency_key, 16)));
    transaction.insert("creditParty".into(), credit);
    transaction.insert("debitParty".into(), debit);
    transaction.insert("paymentMode".into(), json!(payment_mode));
    transaction.insert("amount".into(), json!(amount));
    transaction.insert("currency".into(), json!(currency));
    if !description.is_empty() {
        transaction.insert(
            "descriptionText".into(),
            json!(description.chars().take(MAX_DESCRIPTION).collect::<String>()),
        );
    }
    let operation = if reverse { "payments reverse" } else { "payments disburse" };
    let mut call = BbRequest::new(Method::POST, "/batchtransactions", operation)
        .query("type", "raw")
        .header("X-CorrelationID", short_key(&request.idempotency_key, 20))
        .header("Platform-TenantId", tenant(client))
        .header("X-Callback-URL", callback_url(client, request, "payments")?)
        .json(Value::Array(vec![Value::Object(transaction)]));
    if let Some(program) = request.setting("programId") {
        call = call.header("X-Program-Id", program);
    }
    Ok(call.for_job(&request.idempotency_key, request.user.as_deref()))
}

/// 202 `{batchId}`: the job waits for the callback.
fn accepted(request: &ConnectorRequest, response: &BbResponse) -> Result<Outcome, ConnectorError> {
    let operation = if request.job_type == REVERSE { "reverse" } else { "disburse" };
    if !response.is_success() {
        return Err(response.unexpected(Bb::Payments, operation));
    }
    let body = response.json(Bb::Payments, operation)?;
    match text_field(&body, "batchId") {
        Some(batch) if !batch.is_empty() => {
            tracing::info!(job = %request.idempotency_key, batch, "payment accepted; waiting for the callback");
            Ok(Outcome::AwaitCallback)
        }
        _ => Err(ConnectorError::Permanent(format!(
            "payments BB {operation}: HTTP {} from {} without a batchId",
            response.status, response.path
        ))),
    }
}

/// The payment modality code for a code or a name.
fn modality(request: &ConnectorRequest) -> Result<String, ConnectorError> {
    let text = require_text(request, "paymentModality")?;
    let code = match text.trim().to_ascii_lowercase().replace([' ', '_', '-'], "").as_str() {
        "00" | "bank" | "bankaccount" => "00",
        "01" | "mobile" | "mobilemoney" => "01",
        "02" | "voucher" => "02",
        "03" | "wallet" | "digitalwallet" => "03",
        "04" | "proxy" => "04",
        _ => return Err(permanent(
            request,
            "input variable 'paymentModality' must be 00 (bank account), 01 (mobile money), 02 (voucher), \
                 03 (wallet) or 04 (proxy)",
        )),
    };
    Ok(code.to_owned())
}

fn beneficiary_request(client: &BbClient, request: &ConnectorRequest) -> Result<BbRequest, ConnectorError> {
    let payee = require_text(request, "payee")?;
    let modality = modality(request)?;
    let address = require_text(request, "financialAddress")?;
    let institution = request.setting("registeringInstitution").unwrap_or_else(|| tenant(client));
    let body = json!({
        "RequestID": short_key(&request.idempotency_key, 12),
        "Beneficiaries": [{"payeeIdentity": payee, "PaymentModality": modality, "FinancialAddress": address}],
    });
    Ok(BbRequest::new(Method::POST, "/identityAccountMapper/beneficiary", "payments registerBeneficiary")
        .header("X-Callback-URL", callback_url(client, request, "beneficiaries")?)
        .header("X-Registering-Institution-ID", institution)
        .json(body)
        .for_job(&request.idempotency_key, request.user.as_deref()))
}

fn beneficiary_outcome(request: &ConnectorRequest, response: &BbResponse) -> Result<Outcome, ConnectorError> {
    if !response.is_success() {
        return Err(response.unexpected(Bb::Payments, "registerBeneficiary"));
    }
    let body = response.json(Bb::Payments, "registerBeneficiary")?;
    let field =
        |names: &[&str]| names.iter().find_map(|name| text_field(&body, name)).unwrap_or_default().to_owned();
    let code = field(&["responseCode", "ResponseCode"]);
    let description = field(&["responseDescription", "ResponseDescription"]);
    if code != "00" {
        return Err(ConnectorError::business(
            BENEFICIARY_NOT_REGISTERED,
            format!("the Payments BB did not take the beneficiary (response code {code}): {description}"),
        ));
    }
    let beneficiary = json!({
        "payeeIdentity": request.require_str("payee")?,
        "paymentModality": modality(request)?,
        "financialAddress": request.require_str("financialAddress")?,
        "requestId": field(&["requestID", "RequestID", "requestId"]),
        "status": "RECEIVED",
        "responseDescription": description,
    });
    Ok(complete([("beneficiary", beneficiary)]))
}

/// The variables of a payment callback that says paid, or the BPMN error of one that says failed.
pub fn callback_outcome(body: &Value) -> Result<VariableMap, ConnectorError> {
    let Some(object) = body.as_object() else {
        return Err(ConnectorError::Permanent("a payment callback must be a JSON object".to_owned()));
    };
    let batch = text_field(body, "batchId")
        .filter(|batch| !batch.is_empty())
        .ok_or_else(|| ConnectorError::Permanent("a payment callback names its batchId".to_owned()))?;
    let count = |name: &str| object.get(name).and_then(Value::as_f64);
    let transactions: Vec<&Value> =
        object.get("transactions").and_then(Value::as_array).into_iter().flatten().collect();
    let status = match text_field(body, "status").map(str::to_ascii_uppercase) {
        Some(status) => status,
        None => match (count("failed"), count("ongoing"), count("completed"), count("TotalTransactions")) {
            (Some(failed), _, _, _) if failed > 0.0 => "FAILED".to_owned(),
            (_, Some(ongoing), _, _) if ongoing > 0.0 => "ONGOING".to_owned(),
            (_, _, Some(completed), Some(total)) if completed >= total && total > 0.0 => {
                "COMPLETED".to_owned()
            }
            _ => {
                return Err(ConnectorError::Permanent(format!(
                    "the callback for batch {batch} has neither a status nor transaction counts"
                )))
            }
        },
    };
    match status.as_str() {
        "COMPLETED" | "SUCCESS" | "SUCCEEDED" => {}
        "FAILED" | "FAILURE" | "REJECTED" => {
            let mut reasons: Vec<String> = transactions
                .iter()
                .filter(|tx| {
                    text_field(tx, "status").is_some_and(|status| !status.eq_ignore_ascii_case("COMPLETED"))
                })
                .filter_map(|tx| text_field(tx, "reason").map(str::to_owned))
                .collect();
            if reasons.is_empty() {
                reasons.extend(text_field(body, "note").map(str::to_owned));
            }
            let reason = if reasons.is_empty() { "no reason given".to_owned() } else { reasons.join("; ") };
            return Err(ConnectorError::business(PAYMENT_FAILED, format!("batch {batch} failed: {reason}")));
        }
        other => {
            return Err(ConnectorError::Permanent(format!(
                "the callback for batch {batch} reports status {other}, not a final COMPLETED or FAILED"
            )))
        }
    }
    let first = transactions.first().copied();
    let amount = first
        .and_then(|tx| tx.get("amount").filter(|a| a.is_number()))
        .or_else(|| object.get("completed_amount").filter(|a| a.is_number()))
        .or_else(|| object.get("totalAmount").filter(|a| a.is_number()))
        .cloned()
        .unwrap_or(Value::Null);
    let mut payment = Map::new();
    payment.insert("batchId".into(), json!(batch));
    payment.insert("status".into(), json!("COMPLETED"));
    payment.insert("amount".into(), amount);
    payment
        .insert("currency".into(), first.and_then(|tx| tx.get("currency")).cloned().unwrap_or(Value::Null));
    payment
        .insert("requestId".into(), first.and_then(|tx| tx.get("requestId")).cloned().unwrap_or(Value::Null));
    for (from, to) in
        [("correlationId", "correlationId"), ("resultGeneratedAt", "completedAt"), ("note", "note")]
    {
        if let Some(value) = object.get(from).filter(|value| !value.is_null()) {
            payment.insert(to.into(), value.clone());
        }
    }
    Ok(VariableMap::from([("payment".to_owned(), Value::Object(payment))]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bb::tests::request;
    use crate::client::Body;
    use crate::config::ConnectorsConfig;

    fn client(callback: Option<&str>) -> BbClient {
        let mut config = ConnectorsConfig::default();
        config.payments.url = Some("http://payments.local".into());
        config.callback_url = callback.map(str::to_owned);
        BbClient::new(std::sync::Arc::new(config)).unwrap()
    }

    const HEADERS: &[(&str, &str)] = &[("programmeAccount", "PROG-1")];

    #[test]
    fn a_disbursement_carries_the_idempotency_key_as_correlation_request_id_and_callback() {
        let request = request(
            DISBURSE,
            json!({"payee": "1234567897", "amount": "150.5", "currency": "usd", "description": "x".repeat(60)}),
            HEADERS,
        );
        let call = payment_request(&client(Some("http://govflow:8080/api/v1/callbacks/")), &request).unwrap();
        assert_eq!((call.method.clone(), call.path.as_str()), (Method::POST, "/batchtransactions"));
        assert_eq!(call.query, [("type".to_owned(), "raw".to_owned())]);
        let header = |name: &str| call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("X-CorrelationID"), Some("7-42"));
        assert_eq!(header("Platform-TenantId"), Some("govflow"));
        assert_eq!(header("X-Callback-URL"), Some("http://govflow:8080/api/v1/callbacks/payments/7-42"));
        let Body::Json(Value::Array(batch)) = &call.body else { panic!("{:?}", call.body) };
        assert_eq!(batch.len(), 1);
        let tx = &batch[0];
        assert_eq!(tx["requestId"], "7-42");
        assert_eq!(tx["creditParty"], json!([{"key": "nationalId", "value": "1234567897"}]));
        assert_eq!(tx["debitParty"], json!([{"key": "accountNumber", "value": "PROG-1"}]));
        assert_eq!((tx["amount"].as_f64(), tx["currency"].as_str()), (Some(150.5), Some("USD")));
        assert_eq!(tx["descriptionText"].as_str().unwrap().len(), 50, "cut to the spec's 50");
    }

    #[test]
    fn a_reversal_swaps_the_parties() {
        let request = request(
            REVERSE,
            json!({"payee": "1234567897", "amount": 10, "currency": "USD", "originalBatchId": "b-1"}),
            HEADERS,
        );
        let call = payment_request(&client(Some("http://g")), &request).unwrap();
        let Body::Json(batch) = &call.body else { panic!() };
        assert_eq!(batch[0]["debitParty"], json!([{"key": "nationalId", "value": "1234567897"}]));
        assert_eq!(batch[0]["creditParty"], json!([{"key": "accountNumber", "value": "PROG-1"}]));
        assert_eq!(batch[0]["descriptionText"], "Reversal of b-1");
    }

    #[test]
    fn long_keys_are_hashed_to_the_spec_lengths_stably() {
        let key = "18446744073709551615-18446744073709551615";
        assert_eq!(short_key(key, 16).len(), 16);
        assert_eq!(short_key(key, 16), short_key(key, 16));
        assert_ne!(short_key(key, 16), short_key("18446744073709551615-1", 16));
        assert_eq!(short_key("12-3", 16), "12-3");
    }

    #[test]
    fn bad_inputs_and_missing_configuration_are_permanent_and_named() {
        let ok = json!({"payee": "1", "amount": 1, "currency": "USD"});
        let error = payment_request(&client(None), &request(DISBURSE, ok.clone(), HEADERS)).unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Permanent(m) if m.contains("connectors.callback_url")),
            "{error}"
        );
        let error = payment_request(
            &client(Some(&format!("http://{}", "a".repeat(90)))),
            &request(DISBURSE, ok.clone(), HEADERS),
        )
        .unwrap_err();
        assert!(error.to_string().contains("100"), "{error}");
        let error = payment_request(&client(Some("http://g")), &request(DISBURSE, ok, &[])).unwrap_err();
        assert!(error.to_string().contains("'programmeAccount'"), "{error}");
        for (variables, named) in [
            (json!({"payee": "1", "amount": 0, "currency": "USD"}), "'amount'"),
            (json!({"payee": "1", "amount": "ten", "currency": "USD"}), "'amount'"),
            (json!({"payee": "1", "amount": 1, "currency": "dollars"}), "'currency'"),
            (json!({"amount": 1, "currency": "USD"}), "'payee'"),
        ] {
            let error = payment_request(&client(Some("http://g")), &request(DISBURSE, variables, HEADERS))
                .unwrap_err();
            assert!(matches!(&error, ConnectorError::Permanent(m) if m.contains(named)), "{error}");
        }
    }

    #[test]
    fn callbacks_complete_or_fail_the_payment() {
        let paid = json!({
            "batchId": "b-1", "status": "COMPLETED", "TotalTransactions": 1, "completed": 1, "failed": 0,
            "resultGeneratedAt": "2025-01-01T00:00:00Z",
            "transactions": [{"requestId": "7-42", "status": "COMPLETED", "amount": 100.0, "currency": "USD"}],
        });
        let variables = callback_outcome(&paid).unwrap();
        assert_eq!(
            variables["payment"],
            json!({"batchId": "b-1", "status": "COMPLETED", "amount": 100.0, "currency": "USD", "requestId": "7-42",
                   "completedAt": "2025-01-01T00:00:00Z"})
        );
        let failed = json!({
            "batchId": "b-2", "status": "FAILED",
            "transactions": [{"requestId": "7-43", "status": "FAILED", "reason": "payee has no account"}],
        });
        let error = callback_outcome(&failed).unwrap_err();
        assert!(
            matches!(&error, ConnectorError::Business { code, message } if code == PAYMENT_FAILED && message.contains("no account"))
        );
        // The spec's counts alone (no status field).
        let counted = json!({"batchId": "b-3", "TotalTransactions": 1, "completed": 0, "failed": 1, "note": "rejected"});
        assert!(matches!(callback_outcome(&counted), Err(ConnectorError::Business { .. })));
        let ongoing =
            json!({"batchId": "b-4", "TotalTransactions": 1, "ongoing": 1, "failed": 0, "completed": 0});
        assert!(
            matches!(callback_outcome(&ongoing), Err(ConnectorError::Permanent(m)) if m.contains("ONGOING"))
        );
        assert!(matches!(
            callback_outcome(&json!({"status": "COMPLETED"})),
            Err(ConnectorError::Permanent(_))
        ));
        assert!(matches!(callback_outcome(&json!([1])), Err(ConnectorError::Permanent(_))));
    }

    #[test]
    fn a_beneficiary_is_registered_with_the_spec_body() {
        let request = request(
            REGISTER_BENEFICIARY,
            json!({"payee": "1234567897", "paymentModality": "mobile money", "financialAddress": "+99970000000"}),
            &[("registeringInstitution", "MINSOC")],
        );
        let call = beneficiary_request(&client(Some("http://g")), &request).unwrap();
        assert_eq!(call.path, "/identityAccountMapper/beneficiary");
        assert_eq!(
            call.body,
            Body::Json(
                json!({"RequestID": "7-42", "Beneficiaries": [{"payeeIdentity": "1234567897", "PaymentModality": "01", "FinancialAddress": "+99970000000"}]})
            )
        );
        let header = |name: &str| call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(header("X-Registering-Institution-ID"), Some("MINSOC"));
        assert_eq!(header("X-Callback-URL"), Some("http://g/beneficiaries/7-42"));
        let refused = BbResponse {
            status: 200,
            headers: Default::default(),
            body: bytes::Bytes::from(
                json!({"responseCode": "01", "responseDescription": "not acknowledged"}).to_string(),
            ),
            path: call.path.clone(),
        };
        let error = beneficiary_outcome(&request, &refused).unwrap_err();
        assert!(
            matches!(error, ConnectorError::Business { ref code, .. } if code == BENEFICIARY_NOT_REGISTERED)
        );
    }
}
