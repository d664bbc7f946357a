//! Simulated Messaging BB (`messaging/swagger.yaml`, 0.1.1), served under `/messaging`. Nothing leaves
//! the process: every message goes to an outbox ([`super::Sandbox::messages`], `GET /sandbox/messages`)
//! and counts as delivered at once. It must never send real e-mail or SMS.
//!
//! Routes (header `apiKey` on each):
//! - `POST /send/email/single` `{senderInfo?, recipientInfo:{email, name?, emailCC?, emailBCC?},
//!   emailContent:{title?, content, encoding?}, callback?}` → 200 `{response, requestUid}`.
//! - `POST /send/email/batch` — as single, with `recipientInfo.batchEmailAsBase64`: base64 of a JSON
//!   array of `{recipientInfo:{email, name?}}` (plain `{email}` objects or strings accepted too); one
//!   message per recipient under one `requestUid`.
//! - `GET /status/email` with headers `apiKey`, `requestUid` and query `status` (repeated or
//!   comma-separated among `scheduled, processing, deferred, bounced, notSent, delivered`) → 200 with one
//!   count per selected status (everything is `delivered`); an unknown `requestUid` → 404 `{error}`.
//! - **SMS, our extension** (the spec has e-mail only), mirroring the e-mail shapes:
//!   `POST /send/sms/single` `{senderInfo?, recipientInfo:{phoneNumber, name?}, smsContent:{content}}`
//!   (short form `{to, message}` accepted too); `POST /send/sms/batch` with
//!   `recipientInfo.batchSmsAsBase64` (base64 JSON array of `{recipientInfo:{phoneNumber}}`) or
//!   `{to:[…], message}`; `GET /status/sms` as `/status/email`. Phone numbers: digits with an optional
//!   leading `+` (spaces and dashes ignored), 7 to 15 digits.
//!
//! Errors follow the spec, whose only error answer is **405 "Invalid input"** (its Gherkin expects 405
//! for a missing `apiKey`, body, `requestUid` or `status` too): those answer 405 `{error}` naming what is
//! missing or wrong. A present but wrong `apiKey` answers 401 `{error}` (the spec is silent there).
//!
//! Leaves out: priorities, scheduling, bounces, the `/callback/email` reply service (citizens' replies),
//! attachments, and `callback.URI` notifications.

use super::{json_error, lock, ApiError, Shared};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a message was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub channel: Channel,
    /// An e-mail address or a phone number (as given, spaces and dashes removed).
    pub to: String,
    /// The e-mail title; `None` for SMS.
    pub subject: Option<String>,
    pub body: String,
    pub request_uid: String,
}

/// Every message sent, and which request sent which.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    messages: Vec<SentMessage>,
    /// `requestUid` → number of messages it sent.
    requests: BTreeMap<String, u64>,
}

impl Outbox {
    pub(crate) fn messages(&self) -> Vec<SentMessage> {
        self.messages.clone()
    }
}

const STATUSES: [&str; 6] = ["scheduled", "processing", "deferred", "bounced", "notSent", "delivered"];

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/send/email/single", post(send_email_single))
        .route("/send/email/batch", post(send_email_batch))
        .route("/send/sms/single", post(send_sms_single))
        .route("/send/sms/batch", post(send_sms_batch))
        .route("/status/email", get(status))
        .route("/status/sms", get(status))
        .fallback(|| async {
            json_error(StatusCode::NOT_FOUND, json!({"error": "no such Messaging BB route"}))
        })
        .with_state(shared)
}

/// The spec's only error answer: 405 "Invalid input".
fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": format!("Invalid input: {}", message.into())}),
    )
}

fn check_api_key(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = headers.get("apiKey") else {
        return Err(invalid("missing required header apiKey"));
    };
    if key.as_bytes() == shared.config.messaging_api_key.as_bytes() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, json!({"error": "invalid apiKey"})))
    }
}

fn body_object(bytes: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("request body is required"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("request body must be a JSON object")),
        Err(e) => Err(invalid(format!("request body is not valid JSON: {e}"))),
    }
}

/// `body.<outer>.<inner>` as a non-empty string.
fn nested_string(body: &Map<String, Value>, outer: &str, inner: &str) -> Option<String> {
    body.get(outer)
        .and_then(|o| o.get(inner))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn valid_email(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !address.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// A phone number with spaces and dashes removed, if it is one.
fn phone_number(raw: &str) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    let ok = (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
    ok.then_some(cleaned)
}

fn request_uid(shared: &Shared) -> String {
    let raw = shared.next_id(b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789", 24);
    raw.as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Puts `messages` (recipient, subject, body) in the outbox under one new `requestUid`.
fn send(
    shared: &Shared,
    channel: Channel,
    recipients: Vec<String>,
    subject: Option<String>,
    body: String,
) -> Response {
    let uid = request_uid(shared);
    let mut outbox = lock(&shared.messaging);
    let n = u64::try_from(recipients.len()).unwrap_or(0);
    for to in recipients {
        outbox.messages.push(SentMessage {
            channel,
            to,
            subject: subject.clone(),
            body: body.clone(),
            request_uid: uid.clone(),
        });
    }
    outbox.requests.insert(uid.clone(), n);
    Json(json!({
        "response": "Request successfully accepted. Use \"requestUid\" to track its status.",
        "requestUid": uid,
    }))
    .into_response()
}

fn email_content(body: &Map<String, Value>) -> Result<(Option<String>, String), ApiError> {
    let Some(content) = nested_string(body, "emailContent", "content") else {
        return Err(invalid("emailContent.content is required"));
    };
    Ok((nested_string(body, "emailContent", "title"), content))
}

async fn send_email_single(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    {
        check_api_key(&shared, &headers)?;
        let body = body_object(&bytes)?;
        let Some(email) = nested_string(&body, "recipientInfo", "email") else {
            return Err(invalid("recipientInfo.email is required"));
        };
        if !valid_email(&email) {
            return Err(invalid(format!("recipientInfo.email {email:?} is not an e-mail address")));
        }
        let (subject, content) = email_content(&body)?;
        Ok(send(&shared, Channel::Email, vec![email], subject, content))
    }
}

/// The recipients of a batch: base64 of a JSON array of `{recipientInfo:{<field>}}`, `{<field>}` or strings.
fn batch_recipients(encoded: &str, field: &str, at: &str) -> Result<Vec<String>, ApiError> {
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .map_err(|e| invalid(format!("{at} is not base64: {e}")))?;
    let list: Vec<Value> = serde_json::from_slice(&decoded)
        .map_err(|e| invalid(format!("{at} must encode a JSON array: {e}")))?;
    if list.is_empty() {
        return Err(invalid(format!("{at} encodes no recipient")));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let value = match item {
                Value::String(s) => Some(s.as_str()),
                other => other
                    .get("recipientInfo")
                    .and_then(|r| r.get(field))
                    .or_else(|| other.get(field))
                    .and_then(Value::as_str),
            };
            value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(format!("{at}[{i}] has no {field}")))
        })
        .collect()
}

async fn send_email_batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    {
        check_api_key(&shared, &headers)?;
        let body = body_object(&bytes)?;
        let Some(encoded) = nested_string(&body, "recipientInfo", "batchEmailAsBase64") else {
            return Err(invalid("recipientInfo.batchEmailAsBase64 is required"));
        };
        let recipients = batch_recipients(&encoded, "email", "recipientInfo.batchEmailAsBase64")?;
        if let Some(bad) = recipients.iter().find(|r| !valid_email(r)) {
            return Err(invalid(format!(
                "recipient {bad:?} in recipientInfo.batchEmailAsBase64 is not an e-mail address"
            )));
        }
        let (subject, content) = email_content(&body)?;
        Ok(send(&shared, Channel::Email, recipients, subject, content))
    }
}

fn sms_text(body: &Map<String, Value>) -> Result<String, ApiError> {
    nested_string(body, "smsContent", "content")
        .or_else(|| {
            body.get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .ok_or_else(|| invalid("smsContent.content (or message) is required"))
}

fn checked_phone(raw: &str, at: &str) -> Result<String, ApiError> {
    phone_number(raw).ok_or_else(|| {
        invalid(format!("{at} {raw:?} is not a phone number (7 to 15 digits, optional leading +)"))
    })
}

async fn send_sms_single(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    {
        check_api_key(&shared, &headers)?;
        let body = body_object(&bytes)?;
        let raw = nested_string(&body, "recipientInfo", "phoneNumber")
            .or_else(|| body.get("to").and_then(Value::as_str).map(str::to_string));
        let Some(raw) = raw else {
            return Err(invalid("recipientInfo.phoneNumber (or to) is required"));
        };
        let phone = checked_phone(&raw, "recipientInfo.phoneNumber")?;
        let text = sms_text(&body)?;
        Ok(send(&shared, Channel::Sms, vec![phone], None, text))
    }
}

async fn send_sms_batch(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    {
        check_api_key(&shared, &headers)?;
        let body = body_object(&bytes)?;
        let raw = if let Some(encoded) = nested_string(&body, "recipientInfo", "batchSmsAsBase64") {
            batch_recipients(&encoded, "phoneNumber", "recipientInfo.batchSmsAsBase64")?
        } else if let Some(list) = body.get("to").and_then(Value::as_array) {
            list.iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| invalid(format!("to[{i}] must be a string")))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            return Err(invalid("recipientInfo.batchSmsAsBase64 (or a to array) is required"));
        };
        if raw.is_empty() {
            return Err(invalid("the batch names no recipient"));
        }
        let phones = raw.iter().map(|r| checked_phone(r, "recipient")).collect::<Result<Vec<_>, _>>()?;
        let text = sms_text(&body)?;
        Ok(send(&shared, Channel::Sms, phones, None, text))
    }
}

fn status_name(raw: &str) -> Option<&'static str> {
    let norm: String =
        raw.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
    STATUSES.into_iter().find(|s| s.to_ascii_lowercase() == norm)
}

async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_api_key(&shared, &headers)?;
    let Some(uid) =
        headers.get("requestUid").and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    else {
        return Err(invalid("missing required header requestUid"));
    };
    let mut selected: Vec<&'static str> = Vec::new();
    for (_, value) in params.iter().filter(|(k, _)| k == "status" || k == "status[]") {
        for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match status_name(raw) {
                Some(name) if !selected.contains(&name) => selected.push(name),
                Some(_) => {}
                None => {
                    return Err(invalid(format!(
                        "unknown status {raw:?}; expected some of {}",
                        STATUSES.join(", ")
                    )))
                }
            }
        }
    }
    if selected.is_empty() {
        return Err(invalid(format!(
            "missing required query parameter status (some of {})",
            STATUSES.join(", ")
        )));
    }
    let Some(&n_sent) = lock(&shared.messaging).requests.get(uid) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            json!({"error": format!("unknown requestUid {uid:?}")}),
        ));
    };
    let counts: Map<String, Value> = selected
        .into_iter()
        .map(|name| {
            let count = if name == "delivered" { n_sent } else { 0 };
            (name.to_string(), json!(count))
        })
        .collect();
    Ok(Json(Value::Object(counts)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers() {
        assert_eq!(phone_number("+999 7123-4567"), Some("+99971234567".to_string()));
        assert_eq!(phone_number("12345"), None);
        assert_eq!(phone_number("+99a71234567"), None);
    }

    #[test]
    fn status_names_accept_the_gherkin_spellings() {
        assert_eq!(status_name("not sent"), Some("notSent"));
        assert_eq!(status_name("not_sent"), Some("notSent"));
        assert_eq!(status_name("Delivered"), Some("delivered"));
        assert_eq!(status_name("lost"), None);
    }
}
