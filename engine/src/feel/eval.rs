//! Evaluating parsed FEEL against JSON variables; must never panic and never read the clock.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use dsntk_feel::closure::Closure;
use dsntk_feel::context::FeelContext;
use dsntk_feel::values::Value;
use dsntk_feel::{FeelNumber, FeelScope, FeelType, FunctionBody, Name};
use serde_json::Value as Json;

use super::{parse_expression, FeelExpression};

/// Variables visible to an expression, innermost scope last wins (caller resolves scoping): a JSON object.
pub type Variables = serde_json::Map<String, serde_json::Value>;

/// Deepest nesting of arrays and objects converted either way.
const MAX_DEPTH: usize = 256;

/// Why an expression could not be evaluated; `Display` quotes the expression and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to evaluate '{expression}': {message}")]
pub struct EvalError {
    pub expression: String,
    pub message: String,
}

/// Evaluates a parsed FEEL expression. `now` is the command's time: `now()` and `today()` return it
/// (in its offset), never the system clock.
pub fn evaluate(
    expression: &FeelExpression,
    variables: &Variables,
    now: DateTime<FixedOffset>,
) -> Result<Json, EvalError> {
    let error = |message: String| EvalError { expression: expression.source.clone(), message };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let scope = scope_for(&expression.source, variables, now)?;
        let value = dsntk_feel_evaluator::evaluate(&scope, &expression.ast);
        if let Some(message) = first_failure(&value, 0) {
            return Err(message);
        }
        to_json(&value)
    }));
    match outcome {
        Ok(result) => result.map_err(error),
        Err(_) => Err(error("the FEEL evaluator failed on this expression".to_owned())),
    }
}

/// A Zeebe value: `=expr` evaluated as FEEL, otherwise the literal string (as JSON string).
pub fn evaluate_value(
    text: &str,
    variables: &Variables,
    now: DateTime<FixedOffset>,
) -> Result<Json, EvalError> {
    match super::Value::classify(text) {
        super::Value::Feel(body) => {
            let expression = parse_expression(body)
                .map_err(|error| EvalError { expression: error.expression, message: error.message })?;
            evaluate(&expression, variables, now)
        }
        super::Value::Literal(literal) => Ok(Json::String(literal.to_owned())),
    }
}

/// A condition: must evaluate to a boolean; null or any other value is an error naming the value.
pub fn evaluate_condition(
    expression: &FeelExpression,
    variables: &Variables,
    now: DateTime<FixedOffset>,
) -> Result<bool, EvalError> {
    match evaluate(expression, variables, now)? {
        Json::Bool(condition) => Ok(condition),
        other => Err(EvalError {
            expression: expression.source.clone(),
            message: format!(
                "condition '={}' evaluated to {}, not a boolean",
                expression.source,
                abbreviate(&other.to_string())
            ),
        }),
    }
}

/// Converts JSON to FEEL (see the module documentation for the table).
pub fn to_feel(value: &Json) -> Value {
    to_feel_at(value, 0)
}

/// Converts FEEL to JSON (see the module documentation for the table); ranges, functions and other
/// values JSON cannot hold are errors.
pub fn to_json(value: &Value) -> Result<Json, String> {
    to_json_at(value, 0)
}

fn to_feel_at(value: &Json, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null(Some(format!("a variable is nested more than {MAX_DEPTH} levels deep")));
    }
    match value {
        Json::Null => Value::Null(None),
        Json::Bool(boolean) => Value::Boolean(*boolean),
        Json::Number(number) => number_to_feel(number),
        Json::String(string) => Value::String(string.clone()),
        Json::Array(items) => Value::List(items.iter().map(|item| to_feel_at(item, depth + 1)).collect()),
        Json::Object(entries) => {
            let mut context = FeelContext::default();
            for (key, entry) in entries {
                context.set_entry(&Name::from(key.as_str()), to_feel_at(entry, depth + 1));
            }
            Value::Context(context)
        }
    }
}

fn number_to_feel(number: &serde_json::Number) -> Value {
    if let Some(integer) = number.as_i64() {
        return Value::Number(FeelNumber::from(integer));
    }
    if let Some(integer) = number.as_u64() {
        return Value::Number(FeelNumber::from(integer));
    }
    // serde_json prints the shortest text that reads back as the same f64 (`0.1`, `1e300`): the decimal
    // the author wrote, not the binary fraction's expansion.
    let text = number.to_string();
    match text.parse::<FeelNumber>() {
        Ok(number) => Value::Number(number),
        Err(_) => Value::Null(Some(format!("the number {text} cannot be represented in FEEL"))),
    }
}

fn to_json_at(value: &Value, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the value is nested more than {MAX_DEPTH} levels deep"));
    }
    Ok(match value {
        Value::Null(_) => Json::Null,
        Value::Boolean(boolean) => Json::Bool(*boolean),
        Value::Number(number) => number_to_json(number)?,
        Value::String(string) => Json::String(string.clone()),
        Value::Date(date) => Json::String(date.to_string()),
        Value::DateTime(date_time) => Json::String(date_time.to_string()),
        Value::Time(time) => Json::String(time.to_string()),
        Value::DaysAndTimeDuration(duration) => Json::String(duration.to_string()),
        Value::YearsAndMonthsDuration(duration) => Json::String(duration.to_string()),
        Value::List(items) => {
            Json::Array(items.iter().map(|item| to_json_at(item, depth + 1)).collect::<Result<_, _>>()?)
        }
        Value::Context(context) => {
            let mut entries = serde_json::Map::new();
            // FeelContext is a BTreeMap: entries come out sorted by name, whatever order serde_json keeps.
            for (name, entry) in context.iter() {
                entries.insert(name.to_string(), to_json_at(entry, depth + 1)?);
            }
            Json::Object(entries)
        }
        Value::Range(..) => return Err("a range cannot be stored as a variable".to_owned()),
        Value::BuiltInFunction(_) | Value::FunctionDefinition(..) => {
            return Err("a function cannot be stored as a variable".to_owned())
        }
        other => return Err(format!("a FEEL {} cannot be stored as a variable", other.type_of())),
    })
}

/// `FeelNumber`'s `Display` unwraps on non-finite values; its `Debug` is the decimal's raw text
/// (`+3E-1`, `-125E+0`, `+Inf`, `+NaN`), read here without any unwrap.
fn number_to_json(number: &FeelNumber) -> Result<Json, String> {
    let raw = format!("{number:?}");
    let not_finite = || format!("the number {raw} is not finite");
    let (negative, unsigned) = match raw.as_bytes().first() {
        Some(b'-') => (true, &raw[1..]),
        Some(b'+') => (false, &raw[1..]),
        _ => (false, raw.as_str()),
    };
    let (digits, exponent) = unsigned.split_once('E').ok_or_else(not_finite)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(not_finite());
    }
    let exponent: i64 = exponent.parse().map_err(|_| not_finite())?;
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Ok(Json::from(0));
    }
    let exponent = exponent + (digits.len() - significant.len()) as i64;
    let sign = if negative { "-" } else { "" };
    if exponent >= 0 && significant.len() as i64 + exponent <= 20 {
        let integer = format!("{sign}{significant}{}", "0".repeat(exponent as usize));
        if let Ok(integer) = integer.parse::<i64>() {
            return Ok(Json::from(integer));
        }
        if let Ok(integer) = integer.parse::<u64>() {
            return Ok(Json::from(integer));
        }
    }
    let float: f64 = format!("{sign}{significant}e{exponent}").parse().map_err(|_| not_finite())?;
    serde_json::Number::from_f64(float)
        .map(Json::Number)
        .ok_or_else(|| format!("the number {sign}{significant}e{exponent} is too large for JSON"))
}

/// dsntk traces that mark FEEL's ordinary nulls rather than failures: a name or context entry that
/// does not exist, a comparison involving null or values of different types.
const NULL_TRACES: &[&str] =
    &["context has no value for key", "build_path: no entry", "no value for qualified name", "eval_", "equal err"];

/// The first failure recorded in `value`: dsntk reports errors as nulls carrying a trace.
fn first_failure(value: &Value, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return None;
    }
    match value {
        Value::Null(Some(trace)) if !NULL_TRACES.iter().any(|prefix| trace.starts_with(prefix)) => {
            Some(trace.clone())
        }
        Value::List(items) => items.iter().find_map(|item| first_failure(item, depth + 1)),
        Value::Context(context) => context.values().find_map(|entry| first_failure(entry, depth + 1)),
        _ => None,
    }
}

fn scope_for(source: &str, variables: &Variables, now: DateTime<FixedOffset>) -> Result<FeelScope, String> {
    let called = called_names(source);
    let mut context = FeelContext::default();
    for word in super::words(source) {
        let is_identifier = word.chars().next().is_some_and(|first| !first.is_ascii_digit());
        if !is_identifier || super::KEYWORDS.contains(&word) || called.contains(&word) {
            continue;
        }
        let name = Name::from(word);
        if context.contains_entry(&name) {
            continue;
        }
        match variables.get(word) {
            Some(value) => context.set_entry(&name, to_feel(value)),
            None => context.set_null(name),
        }
    }
    if called.contains(&"now") {
        let text = now.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let value = Value::try_from_xsd_date_time(&text)
            .map_err(|_| format!("now() = {text} is outside FEEL's date and time range"))?;
        context.set_entry(&Name::from("now"), constant_function(value, FeelType::DateTime));
    }
    if called.contains(&"today") {
        let text = now.date_naive().format("%Y-%m-%d").to_string();
        let value = Value::try_from_xsd_date(&text)
            .map_err(|_| format!("today() = {text} is outside FEEL's date range"))?;
        context.set_entry(&Name::from("today"), constant_function(value, FeelType::Date));
    }
    let scope = FeelScope::default();
    scope.push(context);
    Ok(scope)
}

fn constant_function(value: Value, result_type: FeelType) -> Value {
    let body = FunctionBody::LiteralExpression(Arc::new(Box::new(move |_: &FeelScope| value.clone())));
    Value::FunctionDefinition(vec![], body, false, Closure::default(), FeelContext::default(), result_type)
}

/// Names used as functions (`name(`), outside strings. A multi-word built-in (`date and time(`) is
/// called under its full name, so its last word is not a called name.
fn called_names(source: &str) -> Vec<&str> {
    let mut called = Vec::new();
    let mut in_string = false;
    let mut word_start: Option<usize> = None;
    let mut last_word: Option<(usize, usize)> = None;
    for (index, ch) in source.char_indices() {
        if ch == '"' {
            in_string = !in_string;
        }
        let in_word = !in_string && (ch.is_alphanumeric() || ch == '_' || ch == '$');
        match (word_start, in_word) {
            (None, true) => word_start = Some(index),
            (Some(start), false) => {
                last_word = Some((start, index));
                word_start = None;
            }
            _ => {}
        }
        if in_word {
            continue;
        }
        if ch == '(' && !in_string {
            if let Some((start, end)) = last_word {
                let before = &source[..end];
                let multi_word = super::MULTI_WORD_BUILTINS.iter().any(|builtin| before.ends_with(builtin));
                if !multi_word {
                    called.push(&source[start..end]);
                }
            }
        }
        if !ch.is_whitespace() {
            last_word = None;
        }
    }
    called
}

/// At most 100 characters of a rendered value, for messages.
fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn explore() {
        let now = at("2001-02-03T04:05:06+01:00");
        let variables: Variables = json!({
            "x": 3, "s": "b", "applicant": {"address": {"city": "Nairobi"}},
            "items": [{"price": 5}, {"price": 20}, {"name": "n"}], "birthDate": "2000-01-01",
            "n": 5, "count": 7
        })
        .as_object()
        .unwrap()
        .clone();
        for source in [
            "x",
            "missing",
            "missing > 1",
            "missing = 1",
            "1 = missing",
            "missing - 1",
            "missing + 1",
            "\"a\" + missing",
            "applicant.address.city",
            "applicant.address.street",
            "missing.address.city",
            "items[price > 10]",
            "count(items)",
            "sum(items.price)",
            "items.price",
            "\"a\" + s",
            "if x > 1 then \"big\" else \"small\"",
            "for i in 1..3 return i * 2",
            "some i in [1, 2] satisfies i > 1",
            "date(\"2027-01-31\") + duration(\"P1M\")",
            "today() - date(birthDate) > duration(\"P30D\")",
            "today() - date(birthDate)",
            "{a: 1, b: x}",
            "now()",
            "today()",
            "1 / 0",
            "0.1 + 0.2",
            "date(\"garbage\")",
            "x.y",
            "{f: function(n) if n = 0 then 0 else f(n - 1), r: f(3)}.r",
            "1..3",
            "count",
            "date and time(\"2027-01-01T10:00:00@Europe/Berlin\")",
            "date and time(\"2027-01-01T10:00:00\")",
            "time(\"10:00:00\")",
            "duration(\"P1Y2M\")",
            "10 / 4",
            "1 / 3",
            "2 ** 100",
            "sum",
            "string(now())",
            "{a: 1/0}",
        ] {
            let parsed = parse_expression(source);
            match parsed {
                Ok(expression) => {
                    let raw = {
                        let scope = scope_for(source, &variables, now).unwrap();
                        format!("{:?}", dsntk_feel_evaluator::evaluate(&scope, &expression.ast))
                    };
                    eprintln!(
                        "{source:60} => {:?}\n{:60}    raw {raw}",
                        evaluate(&expression, &variables, now),
                        ""
                    );
                }
                Err(error) => eprintln!("{source:60} => parse error {error}"),
            }
        }
    }
}
#[cfg(test)]
mod probe {
    use super::*;
    fn run(source: &str) {
        let now = DateTime::parse_from_rfc3339("2001-02-03T04:05:06+01:00").unwrap();
        let started = std::time::Instant::now();
        let parsed = parse_expression(source);
        eprintln!("parsed: {} in {:?}", parsed.is_ok(), started.elapsed());
        if std::env::var("PARSE_ONLY").is_ok() { return; }
        if let Ok(expression) = parsed {
            let result = evaluate(&expression, &Variables::new(), now);
            eprintln!("result: {:?}", result.map_err(|e| e.message.chars().take(200).collect::<String>()));
        }
    }
    #[test]
    fn sized() {
        let n: usize = std::env::var("N").unwrap().parse().unwrap();
        match std::env::var("K").unwrap().as_str() {
            "sum" => run(&format!("1{}", "+1".repeat(n))),
            "rec" => run(&format!("{{f: function(n) if n = 0 then 0 else f(n - 1), r: f({n})}}.r")),
            "neg" => run(&format!("{}1", "- ".repeat(n))),
            "and" => run(&format!("true{}", " and true".repeat(n))),
            "path" => run(&format!("x{}", ".a".repeat(n))),
            _ => {}
        }
    }
}
