//! Job types the engine serves itself. `govflow.message.publish`: a message throw event or message end
//! event of this type publishes a message (the way a journey starts another, e.g. "birth registered" starts
//! the maternity benefit). Its inputs:
//!
//! | input | meaning | default |
//! |---|---|---|
//! | `messageName` | the message name | required |
//! | `correlationKey` | the key subscriptions wait on (a string or a number) | `""` |
//! | `variables` | a context handed to the receiving instance | `{}` |
//! | `messageId` | de-duplication id | the job's idempotency key |
//! | `timeToLive` | ISO 8601 duration the message stays buffered for later subscriptions | `PT1H` |
//!
//! A repeated publish of the same job (after a crash between the publish and the job's completion) has the
//! same message id and is refused by the engine while the first is buffered; the handler takes that as
//! done. So the receiving process starts once.

use std::sync::Arc;

use serde_json::Value;

use crate::audit::Actor;
use crate::engine::{Engine, EngineError, JobHandle, Message};
use crate::runtime::VariableMap;
use crate::shell::{HandlerFuture, JobHandler, JobOutcome};
use crate::store::{Store, StoreError};
use crate::timer::IsoDuration;

/// The job type of [`MessagePublisher`].
pub const PUBLISH_MESSAGE: &str = "govflow.message.publish";

/// Publishes the message a job describes (see the module docs).
pub struct MessagePublisher<S: Store + 'static> {
    engine: Arc<Engine<S>>,
}

impl<S: Store + 'static> std::fmt::Debug for MessagePublisher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessagePublisher")
    }
}

impl<S: Store + 'static> MessagePublisher<S> {
    pub fn new(engine: Arc<Engine<S>>) -> MessagePublisher<S> {
        MessagePublisher { engine }
    }
}

/// The message a job asks for, or why it cannot be sent (an incident: retrying cannot fix an input).
pub fn message_of(job: &JobHandle) -> Result<Message, String> {
    let input = |name: &str| job.variables.get(name).filter(|value| !value.is_null());
    let name = match input("messageName") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        Some(other) => return Err(format!("input messageName must be a non-empty string, not {other}")),
        None => return Err(format!("'{}' needs the input 'messageName'", job.element)),
    };
    let correlation_key = match input("correlationKey") {
        None => String::new(),
        Some(Value::String(key)) => key.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(other) => return Err(format!("input correlationKey must be a string or a number, not {other}")),
    };
    let variables: VariableMap = match input("variables") {
        None => VariableMap::new(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(other) => return Err(format!("input variables must be a context, not {other}")),
    };
    let message_id = match input("messageId") {
        None => job.idempotency_key.clone(),
        Some(Value::String(id)) => id.clone(),
        Some(other) => return Err(format!("input messageId must be a string, not {other}")),
    };
    let ttl = match input("timeToLive") {
        None => chrono::Duration::hours(1),
        Some(Value::String(text)) => {
            let parsed = IsoDuration::parse(text).map_err(|error| format!("input timeToLive: {error}"))?;
            if parsed.years != 0 || parsed.months != 0 {
                return Err(format!(
                    "input timeToLive '{text}': use days or less (a month has no fixed length)"
                ));
            }
            let millis = ((i64::from(parsed.weeks) * 7 + i64::from(parsed.days)) * 24
                + i64::from(parsed.hours))
                * 3_600_000
                + i64::from(parsed.minutes) * 60_000
                + i64::from(parsed.seconds) * 1000
                + i64::from(parsed.millis);
            chrono::Duration::milliseconds(millis)
        }
        Some(other) => return Err(format!("input timeToLive must be an ISO 8601 duration, not {other}")),
    };
    Ok(Message { name, correlation_key, variables, ttl, message_id: Some(message_id) })
}

impl<S: Store + 'static> JobHandler for MessagePublisher<S> {
    fn handle(&self, job: JobHandle) -> HandlerFuture {
        let engine = Arc::clone(&self.engine);
        Box::pin(async move {
            let message = match message_of(&job) {
                Ok(message) => message,
                Err(message) => return JobOutcome::Incident { message },
            };
            let name = message.name.clone();
            let actor = Actor::engine();
            let published = tokio::task::spawn_blocking(move || engine.publish(message, &actor)).await;
            match published {
                Ok(Ok(_)) | Ok(Err(EngineError::Store(StoreError::Conflict(_)))) => {
                    JobOutcome::Complete(VariableMap::new())
                }
                Ok(Err(EngineError::InvalidMessage(reason))) => {
                    JobOutcome::Incident { message: format!("message '{name}': {reason}") }
                }
                Ok(Err(error)) => {
                    JobOutcome::Fail { message: format!("publishing '{name}': {error}"), backoff: None }
                }
                Err(error) => {
                    JobOutcome::Fail { message: format!("publishing '{name}': {error}"), backoff: None }
                }
            }
        })
    }
}
