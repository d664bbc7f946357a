//! The retry back-off of a job, configured in BPMN by task headers (Camunda Modeler: "Headers" of the
//! task):
//!
//! | header | value | default |
//! |---|---|---|
//! | `retryBackoff` | ISO 8601 duration of the first wait, e.g. `PT10S` | none: retry at once |
//! | `retryBackoffPolicy` | `fixed` (every wait the same) or `exponential` (doubles after each failure) | `fixed` |
//! | `retryBackoffMax` | ISO 8601 duration no wait exceeds | `PT1H` |
//!
//! The number of attempts comes from `zeebe:taskDefinition retries` (default 3). Durations must be exact
//! (weeks, days, hours, minutes, seconds): a month has no fixed length.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::timer::IsoDuration;

/// The header naming the first wait.
pub const BACKOFF: &str = "retryBackoff";
/// The header choosing `fixed` or `exponential`.
pub const POLICY: &str = "retryBackoffPolicy";
/// The header capping every wait.
pub const MAX: &str = "retryBackoffMax";

const DEFAULT_MAX: Duration = Duration::from_secs(3600);

/// How long to wait before attempt `attempt + 1`, after attempt `attempt` (1-based) failed. `Ok(None)`: no
/// back-off configured. An error names the header and what is wrong with it.
pub fn backoff(headers: &BTreeMap<String, String>, attempt: u32) -> Result<Option<Duration>, String> {
    let Some(first) = headers.get(BACKOFF) else { return Ok(None) };
    let first = exact(BACKOFF, first)?;
    let max = headers.get(MAX).map(|max| exact(MAX, max)).transpose()?.unwrap_or(DEFAULT_MAX);
    let wait = match headers.get(POLICY).map(|policy| policy.trim().to_ascii_lowercase()).as_deref() {
        None | Some("fixed") => first,
        Some("exponential") => {
            let factor = 2u32.checked_pow(attempt.saturating_sub(1));
            factor.and_then(|factor| first.checked_mul(factor)).unwrap_or(Duration::MAX)
        }
        Some(other) => {
            return Err(format!("task header {POLICY} is '{other}'; expected 'fixed' or 'exponential'"))
        }
    };
    Ok(Some(wait.min(max)))
}

fn exact(header: &str, text: &str) -> Result<Duration, String> {
    let parsed = IsoDuration::parse(text).map_err(|error| format!("task header {header}: {error}"))?;
    if parsed.years != 0 || parsed.months != 0 {
        return Err(format!(
            "task header {header} is '{text}': years and months have no fixed length; use weeks, days or less"
        ));
    }
    let millis = ((u64::from(parsed.weeks) * 7 + u64::from(parsed.days)) * 24 + u64::from(parsed.hours))
        * 3_600_000
        + u64::from(parsed.minutes) * 60_000
        + u64::from(parsed.seconds) * 1000
        + u64::from(parsed.millis);
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn no_header_means_no_backoff() {
        assert_eq!(backoff(&headers(&[]), 3), Ok(None));
    }

    #[test]
    fn fixed_is_the_same_every_time() {
        let h = headers(&[(BACKOFF, "PT10S")]);
        assert_eq!(backoff(&h, 1), Ok(Some(Duration::from_secs(10))));
        assert_eq!(backoff(&h, 5), Ok(Some(Duration::from_secs(10))));
    }

    #[test]
    fn exponential_doubles_and_is_capped() {
        let h = headers(&[(BACKOFF, "PT1S"), (POLICY, "Exponential"), (MAX, "PT5S")]);
        let waits: Vec<_> = (1..=5).map(|attempt| backoff(&h, attempt).unwrap().unwrap().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        let h = headers(&[(BACKOFF, "PT0.5S"), (POLICY, "exponential")]);
        assert_eq!(
            backoff(&h, 1000),
            Ok(Some(DEFAULT_MAX)),
            "a huge attempt number neither overflows nor panics"
        );
    }

    #[test]
    fn bad_headers_are_named() {
        let error = backoff(&headers(&[(BACKOFF, "10s")]), 1).unwrap_err();
        assert!(error.contains("retryBackoff"), "{error}");
        let error = backoff(&headers(&[(BACKOFF, "P1M")]), 1).unwrap_err();
        assert!(error.contains("no fixed length"), "{error}");
        let error = backoff(&headers(&[(BACKOFF, "PT1S"), (POLICY, "linear")]), 1).unwrap_err();
        assert!(error.contains("retryBackoffPolicy") && error.contains("linear"), "{error}");
    }
}
