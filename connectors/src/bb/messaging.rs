//! Messaging BB connector (`messaging/swagger.yaml`): e-mail to one recipient or a batch, and SMS (our
//! documented extension `/send/sms/single`, shaped like the e-mail call), with the configured `apiKey`.
//!
//! | job type | call | body |
//! |---|---|---|
//! | `govstack.messaging.email` | `POST /send/email/single` | `{senderInfo?, recipientInfo:{email, name?}, emailContent:{encoding, title, content}}` |
//! | `govstack.messaging.emailBatch` | `POST /send/email/batch` | as single, `recipientInfo:{batchEmailAsBase64}`: base64 of `[{recipientInfo:{email, name?}}]` |
//! | `govstack.messaging.sms` | `POST /send/sms/single` | `{senderInfo?, recipientInfo:{phoneNumber, name?}, smsContent:{content}}` |
//!
//! Output `message` = `{requestUid, response}`. `govstack.messaging.email` given a list of several
//! recipients sends the batch call (one content for all, which is what the batch is for).
//!
//! # Contract
//! The API key is read from the configuration for each call and sent only in the `apiKey` header; no
//! message or log line carries it. A refused key (401/403) is permanent.
//!
//! # Delivery
//! The Messaging API has no request id: a send repeated after a lost answer (timeout, crash) may deliver
//! the message twice. Delivery is at least once.
//!
//! Leaves out: `/status/email` polling, the `/callback/email` reply service, priorities, CC/BCC.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{complete, optional, optional_str, permanent, required, text_field, Param, TaskContract};
use crate::client::{BbClient, BbRequest, BbResponse};
use crate::config::Bb;
use crate::connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};

pub const EMAIL: &str = "govstack.messaging.email";
pub const EMAIL_BATCH: &str = "govstack.messaging.emailBatch";
pub const SMS: &str = "govstack.messaging.sms";

const SENDER_HEADERS: &[Param] = &[
    optional("senderName", "senderInfo.name"),
    optional("senderEmail", "senderInfo.email"),
    optional("replyTo", "senderInfo.replyTo"),
    optional("organisationName", "senderInfo.organisationName"),
    optional("organisationRegNr", "senderInfo.organisationRegNr"),
];
const TEXT: [Param; 2] = [
    optional("body", "the message text (or input 'message')"),
    optional("message", "the message text (when 'body' is not set)"),
];

pub const CONTRACTS: &[TaskContract] = &[
    TaskContract {
        job_type: EMAIL,
        inputs: &[
            required("to", "e-mail address (a list of several sends the batch call)"),
            optional("subject", "e-mail title"),
            TEXT[0],
            TEXT[1],
            optional("name", "recipient's name"),
        ],
        headers: SENDER_HEADERS,
        outputs: &["message"],
        errors: &[],
    },
    TaskContract {
        job_type: EMAIL_BATCH,
        inputs: &[
            required("to", "list of e-mail addresses, or of {email, name}"),
            optional("subject", "e-mail title"),
            TEXT[0],
            TEXT[1],
        ],
        headers: SENDER_HEADERS,
        outputs: &["message"],
        errors: &[],
    },
    TaskContract {
        job_type: SMS,
        inputs: &[
            required("to", "phone number, E.164 (+ and 7 to 15 digits)"),
            TEXT[0],
            TEXT[1],
            optional("name", "recipient's name"),
        ],
        headers: SENDER_HEADERS,
        outputs: &["message"],
        errors: &[],
    },
];

/// The Messaging connector (all its job types).
#[derive(Debug, Clone)]
pub struct MessagingConnector {
    client: BbClient,
}

impl MessagingConnector {
    pub fn new(client: BbClient) -> MessagingConnector {
        MessagingConnector { client }
    }
}

impl Connector for MessagingConnector {
    fn job_types(&self) -> Vec<String> {
        CONTRACTS.iter().map(|contract| contract.job_type.to_owned()).collect()
    }

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let call = build(&request)?;
            let key = client.config().messaging_api_key().ok_or_else(|| {
                permanent(
                    &request,
                    "the Messaging BB needs an API key: set connectors.messaging.api_key, or api_key_env naming \
                     the variable that holds it (or GOVFLOW_MESSAGING_API_KEY)",
                )
            })?;
            let call = call.header("apiKey", key.expose());
            let response = client.call(Bb::Messaging, call).await?;
            interpret(&request, &response)
        })
    }
}

/// One recipient: an address or number, and maybe a name.
#[derive(Debug, Clone, PartialEq)]
struct Recipient {
    to: String,
    name: Option<String>,
}

/// The recipients in `to`: a string, or a list of strings or `{email|phoneNumber|to, name}` (nulls and
/// empty strings dropped, as a FEEL list like `[mother.email, father.email]` may hold them).
fn recipients(request: &ConnectorRequest) -> Result<Vec<Recipient>, ConnectorError> {
    let bad = |what: String| permanent(request, format!("input variable 'to' {what}"));
    let one = |value: &Value| -> Result<Option<Recipient>, ConnectorError> {
        match value {
            Value::Null => Ok(None),
            Value::String(text) if text.trim().is_empty() => Ok(None),
            Value::String(text) => Ok(Some(Recipient { to: text.trim().to_owned(), name: None })),
            Value::Number(number) => Ok(Some(Recipient { to: number.to_string(), name: None })),
            Value::Object(object) => {
                let to = ["email", "phoneNumber", "to"]
                    .iter()
                    .find_map(|name| object.get(*name).and_then(Value::as_str));
                match to {
                    Some(to) if !to.trim().is_empty() => Ok(Some(Recipient {
                        to: to.trim().to_owned(),
                        name: object.get("name").and_then(Value::as_str).map(str::to_owned),
                    })),
                    _ => Err(bad("holds a context without email (or phoneNumber)".to_owned())),
                }
            }
            other => Err(bad(format!("must hold addresses, not {}", super::kind(other)))),
        }
    };
    let list = match request.require("to")? {
        Value::Array(items) => {
            items.iter().map(one).filter_map(Result::transpose).collect::<Result<Vec<_>, _>>()?
        }
        value => one(value)?.into_iter().collect(),
    };
    if list.is_empty() {
        return Err(bad("names no recipient".to_owned()));
    }
    let name = optional_str(request, "name")?;
    Ok(list
        .into_iter()
        .map(|recipient| Recipient { name: recipient.name.or_else(|| name.clone()), ..recipient })
        .collect())
}

/// The message text: `body`, else `message`.
fn text(request: &ConnectorRequest) -> Result<String, ConnectorError> {
    let text = match optional_str(request, "body")? {
        Some(body) => Some(body),
        None => optional_str(request, "message")?,
    };
    text.filter(|text| !text.trim().is_empty()).ok_or_else(|| {
        permanent(request, "input variable 'body' (or 'message') is missing: map the message text")
    })
}

fn sender_info(request: &ConnectorRequest) -> Option<Value> {
    let mut sender = Map::new();
    for (header, field) in [
        ("senderName", "name"),
        ("senderEmail", "email"),
        ("replyTo", "replyTo"),
        ("organisationName", "organisationName"),
        ("organisationRegNr", "organisationRegNr"),
    ] {
        if let Some(value) = request.headers.get(header).filter(|value| !value.trim().is_empty()) {
            sender.insert(field.into(), json!(value));
        }
    }
    (!sender.is_empty()).then_some(Value::Object(sender))
}

fn recipient_info(recipient: &Recipient, field: &str) -> Value {
    let mut info = Map::new();
    info.insert(field.into(), json!(recipient.to));
    if let Some(name) = &recipient.name {
        info.insert("name".into(), json!(name));
    }
    Value::Object(info)
}

/// The call a job makes (without the API key).
fn build(request: &ConnectorRequest) -> Result<BbRequest, ConnectorError> {
    let recipients = recipients(request)?;
    let text = text(request)?;
    let mut body = Map::new();
    if let Some(sender) = sender_info(request) {
        body.insert("senderInfo".into(), sender);
    }
    let (path, operation) = match request.job_type.as_str() {
        SMS => {
            let [recipient] = &recipients[..] else {
                return Err(permanent(request, "input variable 'to' must name one phone number"));
            };
            body.insert("recipientInfo".into(), recipient_info(recipient, "phoneNumber"));
            body.insert("smsContent".into(), json!({"content": text}));
            ("/send/sms/single", "messaging sms")
        }
        EMAIL | EMAIL_BATCH => {
            let subject = optional_str(request, "subject")?.unwrap_or_default();
            body.insert(
                "emailContent".into(),
                json!({"encoding": "UTF-8", "title": subject, "content": text}),
            );
            if recipients.len() == 1 && request.job_type == EMAIL {
                body.insert("recipientInfo".into(), recipient_info(&recipients[0], "email"));
                ("/send/email/single", "messaging email")
            } else {
                let list: Vec<Value> =
                    recipients.iter().map(|r| json!({"recipientInfo": recipient_info(r, "email")})).collect();
                let encoded = STANDARD.encode(Value::Array(list).to_string());
                body.insert("recipientInfo".into(), json!({"batchEmailAsBase64": encoded}));
                ("/send/email/batch", "messaging emailBatch")
            }
        }
        other => return Err(permanent(request, format!("the messaging connector does not serve '{other}'"))),
    };
    Ok(BbRequest::new(Method::POST, path, operation)
        .json(Value::Object(body))
        .for_job(&request.idempotency_key, request.user.as_deref()))
}

fn interpret(request: &ConnectorRequest, response: &BbResponse) -> Result<Outcome, ConnectorError> {
    let operation = request.job_type.trim_start_matches("govstack.messaging.");
    if matches!(response.status, 401 | 403) {
        return Err(ConnectorError::Permanent(format!(
            "messaging BB {operation}: the Messaging BB refused our API key (HTTP {}); check \
             connectors.messaging.api_key / api_key_env",
            response.status
        )));
    }
    if !response.is_success() {
        return Err(response.unexpected(Bb::Messaging, operation));
    }
    let body = response.json(Bb::Messaging, operation)?;
    let uid = text_field(&body, "requestUid").ok_or_else(|| {
        ConnectorError::Permanent(format!(
            "messaging BB {operation}: the answer from {} has no requestUid",
            response.path
        ))
    })?;
    let message =
        json!({"requestUid": uid, "response": body.get("response").cloned().unwrap_or(Value::Null)});
    Ok(complete([("message", message)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bb::tests::request;
    use crate::client::Body;

    #[test]
    fn a_single_email_has_the_spec_shape_and_sender_headers() {
        let request = request(
            EMAIL,
            json!({"to": "amina@example.org", "subject": "Registered", "message": "Hello", "name": "Amina"}),
            &[("senderName", "Civil registry"), ("organisationName", "")],
        );
        let call = build(&request).unwrap();
        assert_eq!(call.path, "/send/email/single");
        assert_eq!(
            call.body,
            Body::Json(json!({
                "senderInfo": {"name": "Civil registry"},
                "recipientInfo": {"email": "amina@example.org", "name": "Amina"},
                "emailContent": {"encoding": "UTF-8", "title": "Registered", "content": "Hello"},
            }))
        );
        assert!(call.headers.is_empty(), "the API key is added at send time only");
    }

    #[test]
    fn several_recipients_go_as_a_base64_batch_and_nulls_are_dropped() {
        let request = request(
            EMAIL,
            json!({"to": ["a@x.org", null, "", {"email": "b@x.org", "name": "B"}], "body": "Hi"}),
            &[],
        );
        let call = build(&request).unwrap();
        assert_eq!(call.path, "/send/email/batch");
        let Body::Json(body) = &call.body else { panic!() };
        let decoded = STANDARD.decode(body["recipientInfo"]["batchEmailAsBase64"].as_str().unwrap()).unwrap();
        let list: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            list,
            json!([{"recipientInfo": {"email": "a@x.org"}}, {"recipientInfo": {"email": "b@x.org", "name": "B"}}])
        );
    }

    #[test]
    fn sms_names_one_phone_number() {
        let call = build(&request(SMS, json!({"to": "+99970000001", "body": "Paid"}), &[])).unwrap();
        assert_eq!(call.path, "/send/sms/single");
        assert_eq!(
            call.body,
            Body::Json(
                json!({"recipientInfo": {"phoneNumber": "+99970000001"}, "smsContent": {"content": "Paid"}})
            )
        );
        let error = build(&request(SMS, json!({"to": ["+1", "+2"], "body": "x"}), &[])).unwrap_err();
        assert!(error.to_string().contains("'to'"), "{error}");
    }

    #[test]
    fn missing_text_or_recipient_is_permanent_and_named() {
        let error = build(&request(EMAIL, json!({"to": "a@x.org"}), &[])).unwrap_err();
        assert!(matches!(&error, ConnectorError::Permanent(m) if m.contains("'body'")), "{error}");
        let error = build(&request(EMAIL, json!({"to": [null], "body": "x"}), &[])).unwrap_err();
        assert!(error.to_string().contains("no recipient"), "{error}");
        let error = build(&request(EMAIL, json!({"to": true, "body": "x"}), &[])).unwrap_err();
        assert!(error.to_string().contains("'to'"), "{error}");
    }

    #[test]
    fn a_refused_key_is_permanent_without_the_key() {
        let response = BbResponse {
            status: 401,
            headers: Default::default(),
            body: bytes::Bytes::from_static(b"{\"error\":\"invalid apiKey\"}"),
            path: "/send/email/single".into(),
        };
        let error = interpret(&request(EMAIL, json!({}), &[]), &response).unwrap_err();
        assert!(matches!(&error, ConnectorError::Permanent(m) if m.contains("API key")), "{error}");
    }
}
