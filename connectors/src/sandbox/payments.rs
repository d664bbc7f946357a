//! Simulated Payments BB (`payments/api/G2P-API-YAMLs`), served under `/payments`: bulk disbursement by
//! batch with an asynchronous callback, and the identity account mapper. It must never pay a `requestId`
//! twice: deduplication by `requestId` is what makes a caller's retries safe.
//!
//! Routes:
//! - `POST /batchtransactions?type=raw` (BulkPayment.yml 1.0.2) with headers `X-CorrelationID` (≤ 20
//!   chars), `Platform-TenantId` (≤ 20), `X-Callback-URL` (absolute http(s), ≤ 100) — each required, else
//!   400 `{error}` naming it — and a body `[{requestId (≤ 16), creditParty:[{key,value}],
//!   debitParty:[{key,value}], paymentMode (≤ 20), amount (number, as the spec types it), currency (≤ 3),
//!   descriptionText? (≤ 50)}]` → **202 `{batchId}`**. The spec's `maxLength`s are enforced, so a
//!   connector that would be rejected by a real Payments BB is rejected here too.
//!   Each transaction is settled at once: paid (`COMPLETED`) or `FAILED` with a `reason` — an amount ≤ 0,
//!   or a payee whose national id has no account in the mapper. A `creditParty` key naming an account
//!   (`accountNumber`, `bankAccount`, `iban`, `msisdn`, `walletId`, `financialAddress`) pays that account;
//!   one naming a person (`nationalId`, `payeeIdentity`, `functionalId`, `individualId`, `ID`) is
//!   resolved through the mapper. A `requestId` already paid is never paid again: it is reported
//!   `COMPLETED` with `reason: "duplicate requestId: already paid in batch …"`. Re-submitting with an
//!   `X-CorrelationID` already seen answers 202 with the same `batchId` and calls back again with the
//!   recorded outcome (to the new request's `X-Callback-URL`), whatever the new body says.
//! - `GET /api/v1/batch/detail?batchId` (BatchDetails.yml) with `Platform-TenantId` → the transactions.
//! - `POST /identityAccountMapper/beneficiary` (RegisterBeneficiaryRequest.yml) with headers
//!   `X-Callback-URL` and `X-Registering-Institution-ID` (required) and `{RequestID, Beneficiaries:
//!   [{payeeIdentity, PaymentModality, FinancialAddress}]}` → 200 `{responseCode:"00",
//!   responseDescription, requestID}`, then the onboarding callback (RegisterBeneficiaryResponse.yml)
//!   `{requestID, registerRequestID, numberFailedCases, failedCases:[{payeeIdentity, paymentModality,
//!   failureReason}]}`. Already registered payees fail there.
//! - `PUT /identityAccountMapper/beneficiary` (UpdateBeneficiaryRequest.yml) `{requestID, sourceBBID,
//!   beneficiaries:[{payeeIdentity, bankingInstitutionCode?, paymentModality?, financialAddress?}]}` →
//!   200; unknown payees are added (an upsert). Both casings of the field names are accepted on both verbs.
//!
//! # Batch callback
//! `payment_callback_delay` after the 202 (and once released, while a test holds callbacks back with
//! `Sandbox::hold_callbacks`), `POST X-Callback-URL` with headers `X-CorrelationID`,
//! `Platform-TenantId` and the body of BulkPaymentStatusUpdate.yml extended with the transactions:
//! ```json
//! {"batchId": "…", "correlationId": "…", "requestId": "<X-CorrelationID>",
//!  "status": "COMPLETED" | "FAILED",
//!  "TotalTransactions": 2, "ongoing": 0, "completed": 1, "failed": 1,
//!  "totalAmount": 150.0, "completed_amount": 100.0, "ongoing_amount": 0.0, "failed_amount": 50.0,
//!  "result_file": "", "resultGeneratedAt": "2025-…Z", "note": "1 of 2 transactions completed",
//!  "transactions": [{"requestId": "…", "status": "COMPLETED", "amount": 100.0, "currency": "USD"},
//!                   {"requestId": "…", "status": "FAILED", "amount": 50.0, "currency": "USD",
//!                    "reason": "payee 123… has no account registered in the identity account mapper"}]}
//! ```
//! `status` is `COMPLETED` when no transaction failed, else `FAILED` (read `transactions` for which).
//! The callback is retried with back-off (100 ms, doubling) up to `callback_attempts` times while the
//! target refuses the connection, times out or answers 5xx/408/429; any other answer ends it.
//!
//! Seeded mapper: every farmer with a bank account (modality `00`, their account) and every
//! `maternal-support` registrant with a phone (modality `01`, mobile money to the phone).
//!
//! Leaves out: vouchers, P2G bill payments, pre-payment validation, account lookup, authorisation, CSV
//! batches (`type=csv`), balances and limits, and the 1.0 paths of the Gherkin files (`/bulk-payment`).

use super::{json_error, lock, parse_json, ApiError, SeedData, Shared};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// A transaction actually paid (once, whatever the retries).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disbursement {
    pub request_id: String,
    pub batch_id: String,
    pub correlation_id: String,
    pub tenant_id: String,
    /// The `creditParty` key that named the payee, e.g. `nationalId` or `accountNumber`.
    pub payee_key: String,
    pub payee_value: String,
    /// The account credited (the mapper's financial address for an identity key).
    pub financial_address: String,
    pub payment_mode: String,
    pub amount: f64,
    pub currency: String,
    pub description: Option<String>,
    /// Always `"COMPLETED"`: only paid transactions are disbursements.
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Beneficiary {
    payee_identity: String,
    payment_modality: Option<String>,
    financial_address: Option<String>,
    banking_institution_code: Option<String>,
    registering_institution_id: Option<String>,
}

#[derive(Debug, Clone)]
struct TxOutcome {
    request_id: String,
    completed: bool,
    amount: f64,
    currency: String,
    reason: Option<String>,
    payee_key: String,
    payee_value: String,
}

#[derive(Debug, Clone)]
struct Batch {
    batch_id: String,
    correlation_id: String,
    tenant_id: String,
    outcomes: Vec<TxOutcome>,
}

/// The Payments BB's books.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    beneficiaries: BTreeMap<String, Beneficiary>,
    /// By `X-CorrelationID`.
    batches: BTreeMap<String, Batch>,
    /// `requestId` → batch id that paid it.
    paid: BTreeMap<String, String>,
    disbursements: Vec<Disbursement>,
}

impl Ledger {
    pub(crate) fn seeded(seed: &SeedData) -> Ledger {
        let mut ledger = Ledger::default();
        for farmer in seed.farmers() {
            if let Some(account) = &farmer.bank_account {
                ledger.beneficiaries.insert(
                    farmer.national_id.clone(),
                    Beneficiary {
                        payee_identity: farmer.national_id.clone(),
                        payment_modality: Some("00".to_string()),
                        financial_address: Some(account.clone()),
                        banking_institution_code: Some("GOVBANK".to_string()),
                        registering_institution_id: Some("MINAGRI".to_string()),
                    },
                );
            }
        }
        for household in seed.households() {
            if !household.programmes.iter().any(|p| p == "maternal-support") {
                continue;
            }
            let Some(phone) = seed.person(&household.national_id).and_then(|p| p.phone.clone()) else {
                continue;
            };
            ledger.beneficiaries.entry(household.national_id.clone()).or_insert_with(|| Beneficiary {
                payee_identity: household.national_id.clone(),
                payment_modality: Some("01".to_string()),
                financial_address: Some(phone),
                banking_institution_code: None,
                registering_institution_id: Some("MINSOC".to_string()),
            });
        }
        ledger
    }

    pub(crate) fn disbursements(&self) -> Vec<Disbursement> {
        self.disbursements.clone()
    }

    pub(crate) fn beneficiaries(&self) -> Vec<Value> {
        self.beneficiaries.values().map(|b| serde_json::to_value(b).unwrap_or(Value::Null)).collect()
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/batchtransactions", post(batch_transactions))
        .route("/api/v1/batch/detail", get(batch_detail))
        .route("/identityAccountMapper/beneficiary", post(register_beneficiaries).put(update_beneficiaries))
        .fallback(|| async {
            json_error(StatusCode::NOT_FOUND, json!({"error": "no such Payments BB route"}))
        })
        .with_state(shared)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, json!({"error": message.into()}))
}

/// A required header of at most `max_len` characters.
fn required_header(headers: &HeaderMap, name: &str, max_len: usize) -> Result<String, ApiError> {
    let value = headers
        .get(name)
        .map(|v| v.to_str().map(str::trim))
        .transpose()
        .map_err(|_| bad_request(format!("header {name} must be visible ASCII")))?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad_request(format!("missing required header {name}")))?;
    if value.chars().count() > max_len {
        return Err(bad_request(format!(
            "header {name} is longer than {max_len} characters (the spec's maxLength)"
        )));
    }
    Ok(value.to_string())
}

fn callback_url(value: &str, header: &str) -> Result<(), ApiError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(bad_request(format!("header {header} must be an absolute http(s) URL"))),
    }
}

/// A string field of at most `max_len` characters.
fn string_field(
    item: &Value,
    at: &str,
    name: &str,
    max_len: usize,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match item.get(name) {
        None | Some(Value::Null) if required => Err(bad_request(format!("{at}.{name} is required"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max_len => Err(bad_request(format!(
            "{at}.{name} is longer than {max_len} characters (the spec's maxLength)"
        ))),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(bad_request(format!("{at}.{name} must not be empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request(format!("{at}.{name} must be a string"))),
    }
}

/// A `[{key, value}]` party list, non-empty.
fn parties(item: &Value, at: &str, name: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = item.get(name) else {
        return Err(bad_request(format!("{at}.{name} is required")));
    };
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        return Err(bad_request(format!("{at}.{name} must be a non-empty array of {{key, value}}")));
    };
    list.iter()
        .enumerate()
        .map(|(i, party)| {
            let at = format!("{at}.{name}[{i}]");
            let key = string_field(party, &at, "key", 64, true)?.unwrap_or_default();
            let value = string_field(party, &at, "value", 128, true)?.unwrap_or_default();
            Ok((key, value))
        })
        .collect()
}

struct Instruction {
    request_id: String,
    credit_party: Vec<(String, String)>,
    payment_mode: String,
    amount: f64,
    currency: String,
    description: Option<String>,
}

fn instructions(body: &Value) -> Result<Vec<Instruction>, ApiError> {
    let Some(items) = body.as_array() else {
        return Err(bad_request("request body must be a JSON array of credit instructions"));
    };
    if items.is_empty() {
        return Err(bad_request("request body must hold at least one credit instruction"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("[{i}]");
            if !item.is_object() {
                return Err(bad_request(format!("{at} must be an object")));
            }
            let request_id = string_field(item, &at, "requestId", 16, true)?.unwrap_or_default();
            let credit_party = parties(item, &at, "creditParty")?;
            parties(item, &at, "debitParty")?;
            let payment_mode = string_field(item, &at, "paymentMode", 20, true)?.unwrap_or_default();
            let amount = match item.get("amount") {
                Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
                None | Some(Value::Null) => return Err(bad_request(format!("{at}.amount is required"))),
                Some(_) => {
                    return Err(bad_request(format!(
                        "{at}.amount must be a number (the spec types it number/float)"
                    )))
                }
            };
            let currency = string_field(item, &at, "currency", 3, true)?.unwrap_or_default();
            let description = string_field(item, &at, "descriptionText", 50, false)?;
            Ok(Instruction { request_id, credit_party, payment_mode, amount, currency, description })
        })
        .collect()
}

fn normalise_key(key: &str) -> String {
    key.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase()
}

const ACCOUNT_KEYS: &[&str] =
    &["accountnumber", "bankaccount", "iban", "msisdn", "walletid", "financialaddress"];
const IDENTITY_KEYS: &[&str] =
    &["nationalid", "payeeidentity", "functionalid", "payeefunctionalid", "individualid", "id"];

/// The payee's key and value, and the account to credit or why there is none.
fn resolve_payee(
    ledger: &Ledger,
    credit_party: &[(String, String)],
) -> ((String, String), Result<String, String>) {
    for (key, value) in credit_party {
        let norm = normalise_key(key);
        if ACCOUNT_KEYS.contains(&norm.as_str()) {
            return ((key.clone(), value.clone()), Ok(value.clone()));
        }
        if IDENTITY_KEYS.contains(&norm.as_str()) {
            let account = ledger
                .beneficiaries
                .get(value)
                .and_then(|b| b.financial_address.clone())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    format!("payee {value} has no account registered in the identity account mapper")
                });
            return ((key.clone(), value.clone()), account);
        }
    }
    let (key, value) = credit_party.first().cloned().unwrap_or_default();
    let reason = format!(
        "unsupported creditParty key {key:?}: use an account key (accountNumber, msisdn, …) or an identity key (nationalId, payeeIdentity, …)"
    );
    ((key, value), Err(reason))
}

fn callback_body(batch: &Batch) -> Value {
    let completed: Vec<&TxOutcome> = batch.outcomes.iter().filter(|o| o.completed).collect();
    let n_failed = batch.outcomes.len() - completed.len();
    let total: f64 = batch.outcomes.iter().map(|o| o.amount).sum();
    let completed_amount: f64 = completed.iter().map(|o| o.amount).sum();
    let transactions: Vec<Value> = batch
        .outcomes
        .iter()
        .map(|o| {
            let mut tx = json!({
                "requestId": o.request_id,
                "status": if o.completed { "COMPLETED" } else { "FAILED" },
                "amount": o.amount,
                "currency": o.currency,
            });
            if let (Some(reason), Some(map)) = (&o.reason, tx.as_object_mut()) {
                map.insert("reason".to_string(), json!(reason));
            }
            tx
        })
        .collect();
    json!({
        "batchId": batch.batch_id,
        "correlationId": batch.correlation_id,
        "requestId": batch.correlation_id,
        "status": if n_failed == 0 { "COMPLETED" } else { "FAILED" },
        "TotalTransactions": batch.outcomes.len(),
        "ongoing": 0,
        "completed": completed.len(),
        "failed": n_failed,
        "totalAmount": total,
        "completed_amount": completed_amount,
        "ongoing_amount": 0.0,
        "failed_amount": total - completed_amount,
        // The spec says "null for JSON type request" but types it a non-nullable string.
        "result_file": "",
        "resultGeneratedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "note": format!("{} of {} transactions completed", completed.len(), batch.outcomes.len()),
        "transactions": transactions,
    })
}

/// Posts `body` to `url` after `delay`, retrying with back-off while the target is unreachable or 5xx.
fn schedule_callback(shared: &Arc<Shared>, url: String, headers: Vec<(&'static str, String)>, body: Value) {
    let task_shared = shared.clone();
    shared.spawn(async move {
        let shared = task_shared;
        if !shared.sleep(shared.config.payment_callback_delay).await || !shared.callbacks_released().await {
            return;
        }
        let attempts = shared.config.callback_attempts.max(1);
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts {
            let mut request = shared.http.post(&url).json(&body);
            for (name, value) in &headers {
                request = request.header(*name, value);
            }
            let retry = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(_) => true,
            };
            if !retry {
                return;
            }
            if attempt == attempts || !shared.sleep(backoff).await {
                break;
            }
            backoff = backoff.saturating_mul(2);
        }
        tracing::warn!(%url, "sandbox payments: callback not delivered after {attempts} attempts");
    });
}

async fn batch_transactions(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    match query.get("type").map(|t| t.trim()) {
        Some("raw") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "query parameter type must be \"raw\" (got {other:?}; CSV batches are not simulated)"
            )))
        }
        None => return Err(bad_request("missing required query parameter type (expected type=raw)")),
    }
    let correlation_id = required_header(&headers, "X-CorrelationID", 20)?;
    let tenant_id = required_header(&headers, "Platform-TenantId", 20)?;
    let callback = required_header(&headers, "X-Callback-URL", 100)?;
    callback_url(&callback, "X-Callback-URL")?;
    let callback_headers =
        vec![("X-CorrelationID", correlation_id.clone()), ("Platform-TenantId", tenant_id.clone())];

    // A batch already seen: the same answer, and its outcome once more.
    let known = lock(&shared.payments).batches.get(&correlation_id).cloned();
    if let Some(batch) = known {
        schedule_callback(&shared, callback, callback_headers, callback_body(&batch));
        return Ok((StatusCode::ACCEPTED, Json(json!({"batchId": batch.batch_id}))).into_response());
    }

    let body = parse_json(&body, StatusCode::BAD_REQUEST, "error")?;
    let instructions = instructions(&body)?;
    let batch_id = format!("batch-{}", shared.next_id(b"0123456789abcdefghijklmnopqrstuvwxyz", 16));
    let batch = {
        let mut ledger = lock(&shared.payments);
        // A concurrent request with the same correlation id may have won the race.
        if let Some(batch) = ledger.batches.get(&correlation_id).cloned() {
            drop(ledger);
            schedule_callback(&shared, callback, callback_headers, callback_body(&batch));
            return Ok((StatusCode::ACCEPTED, Json(json!({"batchId": batch.batch_id}))).into_response());
        }
        let mut outcomes = Vec::with_capacity(instructions.len());
        for tx in instructions {
            let (payee, account) = resolve_payee(&ledger, &tx.credit_party);
            let mut outcome = TxOutcome {
                request_id: tx.request_id.clone(),
                completed: false,
                amount: tx.amount,
                currency: tx.currency.clone(),
                reason: None,
                payee_key: payee.0.clone(),
                payee_value: payee.1.clone(),
            };
            if let Some(paid_in) = ledger.paid.get(&tx.request_id) {
                outcome.completed = true;
                outcome.reason =
                    Some(format!("duplicate requestId: already paid in batch {paid_in}, not paid again"));
            } else if tx.amount <= 0.0 {
                outcome.reason = Some(format!("amount must be greater than 0 (got {})", tx.amount));
            } else {
                match account {
                    Err(reason) => outcome.reason = Some(reason),
                    Ok(financial_address) => {
                        outcome.completed = true;
                        ledger.paid.insert(tx.request_id.clone(), batch_id.clone());
                        ledger.disbursements.push(Disbursement {
                            request_id: tx.request_id,
                            batch_id: batch_id.clone(),
                            correlation_id: correlation_id.clone(),
                            tenant_id: tenant_id.clone(),
                            payee_key: payee.0,
                            payee_value: payee.1,
                            financial_address,
                            payment_mode: tx.payment_mode,
                            amount: tx.amount,
                            currency: tx.currency,
                            description: tx.description,
                            status: "COMPLETED".to_string(),
                        });
                    }
                }
            }
            outcomes.push(outcome);
        }
        let batch =
            Batch { batch_id: batch_id.clone(), correlation_id: correlation_id.clone(), tenant_id, outcomes };
        ledger.batches.insert(correlation_id, batch.clone());
        batch
    };
    schedule_callback(&shared, callback, callback_headers, callback_body(&batch));
    Ok((StatusCode::ACCEPTED, Json(json!({"batchId": batch_id}))).into_response())
}

async fn batch_detail(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant_id = required_header(&headers, "Platform-TenantId", 20)?;
    let Some(batch_id) = query.get("batchId").map(|b| b.trim()).filter(|b| !b.is_empty()) else {
        return Err(bad_request("missing required query parameter batchId"));
    };
    let ledger = lock(&shared.payments);
    // Tenants are data scopes: another tenant's batch does not exist for this caller.
    let found = ledger.batches.values().find(|b| b.batch_id == batch_id && b.tenant_id == tenant_id);
    let Some(batch) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, json!({"error": format!("no batch {batch_id}")})));
    };
    let rows: Vec<Value> = batch
        .outcomes
        .iter()
        .map(|o| {
            json!({
                "transactionId": o.request_id,
                "batchId": batch.batch_id,
                "status": if o.completed { "COMPLETED" } else { "FAILED" },
                "statusDetail": o.reason.clone().unwrap_or_default(),
                "payeePartyId": o.payee_value,
                "payeePartyIdType": o.payee_key,
                "amount": o.amount,
                "currency": o.currency,
                "direction": "OUTGOING",
                "errorInformation": if o.completed { String::new() } else { o.reason.clone().unwrap_or_default() },
            })
        })
        .collect();
    Ok(Json(rows).into_response())
}

/// The first of `names` present in `item`.
fn any_field<'a>(item: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| item.get(*n)).filter(|v| !v.is_null())
}

fn any_string(item: &Value, names: &[&str]) -> Option<String> {
    any_field(item, names)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn mapper_error(request_id: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        json!({"ResponseCode": "01", "ResponseDescription": message.into(), "RequestID": request_id}),
    )
}

/// Validates one beneficiary entry: `payeeIdentity` (≤ 20) and a modality among `00`–`04` if given.
fn beneficiary(item: &Value, at: &str, request_id: &str) -> Result<Beneficiary, ApiError> {
    let Some(payee) = any_string(item, &["payeeIdentity", "PayeeIdentity"]) else {
        return Err(mapper_error(request_id, format!("{at}.payeeIdentity is required")));
    };
    if payee.chars().count() > 20 {
        return Err(mapper_error(request_id, format!("{at}.payeeIdentity is longer than 20 characters")));
    }
    let modality = any_string(item, &["paymentModality", "PaymentModality"]);
    if let Some(m) = &modality {
        if !["00", "01", "02", "03", "04"].contains(&m.as_str()) {
            return Err(mapper_error(
                request_id,
                format!("{at}.paymentModality must be one of 00, 01, 02, 03, 04"),
            ));
        }
    }
    Ok(Beneficiary {
        payee_identity: payee,
        payment_modality: modality,
        financial_address: any_string(item, &["financialAddress", "FinancialAddress"]),
        banking_institution_code: any_string(item, &["bankingInstitutionCode", "BankingInstitutionCode"]),
        registering_institution_id: None,
    })
}

fn beneficiary_list<'a>(body: &'a Value, request_id: &str) -> Result<&'a Vec<Value>, ApiError> {
    any_field(body, &["Beneficiaries", "beneficiaries"])
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| mapper_error(request_id, "Beneficiaries must be a non-empty array"))
}

async fn register_beneficiaries(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_json(&body, StatusCode::BAD_REQUEST, "ResponseDescription")?;
    let request_id = any_string(&body, &["RequestID", "requestID", "requestId"]).unwrap_or_default();
    let callback = match required_header(&headers, "X-Callback-URL", 100)
        .and_then(|url| callback_url(&url, "X-Callback-URL").map(|()| url))
    {
        Ok(url) => url,
        Err(_) => {
            return Err(mapper_error(
                &request_id,
                "missing or invalid required header X-Callback-URL (absolute http(s) URL, at most 100 characters)",
            ))
        }
    };
    let Ok(institution) = required_header(&headers, "X-Registering-Institution-ID", 12) else {
        return Err(mapper_error(
            &request_id,
            "missing or invalid required header X-Registering-Institution-ID (at most 12 characters)",
        ));
    };
    if request_id.is_empty() {
        return Err(mapper_error(&request_id, "RequestID is required"));
    }
    let list = beneficiary_list(&body, &request_id)?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match beneficiary(item, &format!("Beneficiaries[{i}]"), &request_id) {
            Ok(mut entry) => {
                entry.registering_institution_id = Some(institution.clone());
                entries.push(entry);
            }
            Err(e) => return Err(e),
        }
    }
    let mut failed = Vec::new();
    {
        let mut ledger = lock(&shared.payments);
        for entry in entries {
            let reason = if ledger.beneficiaries.contains_key(&entry.payee_identity) {
                Some("payee already registered; use PUT to update")
            } else if entry.financial_address.is_none() {
                Some("FinancialAddress is required to register a payee")
            } else {
                None
            };
            match reason {
                Some(reason) => failed.push(json!({
                    "payeeIdentity": entry.payee_identity,
                    "paymentModality": entry.payment_modality.clone().unwrap_or_default(),
                    "failureReason": reason,
                })),
                None => {
                    ledger.beneficiaries.insert(entry.payee_identity.clone(), entry);
                }
            }
        }
    }
    let notification = json!({
        "requestID": shared.next_id(b"0123456789", 12),
        "registerRequestID": request_id,
        "numberFailedCases": failed.len(),
        "failedCases": failed,
    });
    schedule_callback(&shared, callback, Vec::new(), notification);
    Ok(Json(json!({
        "responseCode": "00",
        "responseDescription": "Request successfully received by Pay-BB",
        "requestID": request_id,
    }))
    .into_response())
}

async fn update_beneficiaries(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    let body = parse_json(&body, StatusCode::BAD_REQUEST, "responseDescription")?;
    let request_id = any_string(&body, &["requestID", "RequestID", "requestId"]).unwrap_or_default();
    if request_id.is_empty() {
        return Err(mapper_error(&request_id, "requestID is required"));
    }
    let Some(source) = any_string(&body, &["sourceBBID", "SourceBBID"]) else {
        return Err(mapper_error(&request_id, "sourceBBID is required"));
    };
    let list = beneficiary_list(&body, &request_id)?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match beneficiary(item, &format!("beneficiaries[{i}]"), &request_id) {
            Ok(entry) => entries.push(entry),
            Err(e) => return Err(e),
        }
    }
    let mut ledger = lock(&shared.payments);
    for entry in entries {
        let slot = ledger.beneficiaries.entry(entry.payee_identity.clone()).or_insert_with(|| Beneficiary {
            payee_identity: entry.payee_identity.clone(),
            payment_modality: None,
            financial_address: None,
            banking_institution_code: None,
            registering_institution_id: Some(source.clone()),
        });
        if entry.payment_modality.is_some() {
            slot.payment_modality = entry.payment_modality;
        }
        if entry.financial_address.is_some() {
            slot.financial_address = entry.financial_address;
        }
        if entry.banking_institution_code.is_some() {
            slot.banking_institution_code = entry.banking_institution_code;
        }
    }
    Ok(Json(json!({
        "responseCode": "00",
        "responseDescription": "Beneficiary update successfully received",
        "requestID": request_id,
    }))
    .into_response())
}
