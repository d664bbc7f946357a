//! Evaluating parsed FEEL against JSON variables, deterministically: the same expression, variables and
//! `now` always give byte-identical JSON. It must never panic, never read the clock (`now()` and `today()`
//! return the `now` argument) and never reach the network.
//!
//! # Conversions
//!
//! | JSON                              | FEEL (dsntk `Value`)       | back to JSON                                   |
//! |-----------------------------------|----------------------------|------------------------------------------------|
//! | `null`                            | `null`                     | `null`                                         |
//! | `true` / `false`                  | boolean                    | `true` / `false`                               |
//! | integer (`i64` or `u64`)          | number, exact              | integer when integral and within `i64`/`u64`   |
//! | float (`0.1`, `1e300`)            | number, from the shortest decimal text that reads back as the same `f64` (`0.1` is exactly 0.1) | otherwise the `f64` nearest to the decimal; non-finite or beyond `f64` is an error |
//! | string                            | string (never a date: write `date(x)`) | string                             |
//! | array                             | list                       | array                                          |
//! | object                            | context, keys as FEEL names | object, keys **sorted** (byte order)          |
//! | —                                 | date                       | `"2027-01-31"`                                 |
//! | —                                 | date and time              | FEEL's own text, as `string(x)` gives and `date and time(x)` reads back: `"2027-01-01T10:00:00Z"`, `"…+01:00"` (RFC 3339), `"…@Europe/Berlin"` (zone id), `"2027-01-01T10:00:00"` (no zone) |
//! | —                                 | time                       | `"10:30:00"`, `"10:30:00.5+01:00"`             |
//! | —                                 | days and time duration     | ISO 8601 `"P3DT4H"`, `"-PT30M"`                |
//! | —                                 | years and months duration  | ISO 8601 `"P1Y2M"`                             |
//! | —                                 | range, function, anything else | error "… cannot be stored as a variable"    |
//!
//! Numbers: FEEL numbers are 34-digit decimals, so `0.1 + 0.2` is exactly `0.3` and comes out as JSON
//! `0.3`; `5.0` is integral and comes out as `5` (so JSON `1.0` round-trips as `1`); `1 / 3` comes out as `0.3333333333333333` (the
//! nearest `f64`); `2 ** 100` as `1.2676506002282294e30` (integral but beyond `u64`). Object keys come out
//! sorted because a FEEL context is ordered by name; the runtime relies on this for byte-identical JSON.
//! Arrays and objects nested deeper than [`MAX_DEPTH`] are not converted (an error when used).
//!
//! # Evaluation
//!
//! * **Names.** Only top-level variables whose name occurs as a word of the expression are converted and
//!   put in scope; every other word is declared `null`, so a missing variable is a genuine FEEL `null`
//!   (as in Zeebe's FEEL 1.17+). Variables whose names are FEEL keywords or not identifiers (`"if"`,
//!   `"first name"`) can never be named by a Zeebe expression and are ignored.
//! * **Functions win over variables.** A name written as a call (`count(items)`, `date(x)`) always means
//!   the function: a variable of the same name is not visible in that expression (dsntk looks names up
//!   in the scope before its built-ins, so the variable would otherwise hide the function).
//! * **`now()` and `today()`** are scope entries holding constant functions that return `now` (in its
//!   offset) and `now`'s calendar date in that offset; dsntk's own versions read the system clock. The
//!   AST is not rewritten and nothing is re-parsed.
//! * **Errors and nulls.** dsntk has no error type at run time: a failure is a `null` carrying a trace
//!   (`null(division by zero)`). A trace anywhere in the result (top level, list item or context entry)
//!   is an [`EvalError`] carrying dsntk's message, except the traces dsntk also attaches to FEEL's
//!   ordinary nulls ([`NULL_TRACES`]: a missing name or context entry, a comparison involving null or
//!   values of different types), which are `Ok(null)`. So `1 / 0`, `date("garbage")` and `x.y` with `x`
//!   a number are errors; `x > 1` with `x` missing is `null`, and as a condition an error.
//! * **Never panic, never overflow.** dsntk evaluates recursively, using about 7 KiB of stack per level
//!   of the syntax tree in a debug build (a 300-term `1+1+…` overflows a 2 MiB stack, which aborts the
//!   process: `catch_unwind` cannot catch that). So trees deeper than [`MAX_AST_DEPTH`] are refused, and
//!   so are FEEL function definitions (a recursive `function(n) … f(n - 1)` has no depth bound at all;
//!   this also refuses `sort(xs, function(a, b) a < b)`). Panics inside dsntk are caught and become an
//!   [`EvalError`].
//!
//! # Contract
//!
//! The caller leaves [`evaluate`] at least 1 MiB of stack: [`MAX_AST_DEPTH`] levels fit in 1 MiB in a
//! debug build, so a thread with Rust's or tokio's default 2 MiB stack is enough.
//!
//! # Limitations of dsntk 0.3 (pinned by the tests below)
//!
//! * `x = 1` with `x` null is `null`, not `false` (dsntk's equality is asymmetric: `1 = x` is `false`).
//!   Write `x != null and x = 1` or `1 = x` in conditions.
//! * `x - 1` and `"a" + x` with `x` null are errors, while `x + 1` is `null`; `sum(items.price)` is an
//!   error when an item has no price.
//! * A `date and time` without offset or zone is placed in the **machine's local zone** (dsntk uses
//!   `chrono::Local`), so results depend on the host: `date and time("2027-01-01T10:00:00") =
//!   date and time("2027-01-01T10:00:00Z")` is `true` with `TZ=UTC` and `false` with `TZ=Europe/Berlin`;
//!   `date and time("2027-07-01T00:00:00") - date and time("2027-01-01T00:00:00")` is `P181D` or
//!   `P180DT23H`. Ordering a local against a zoned date and time is always `false`, subtracting them an
//!   error. Write `Z`, an offset or `@Zone/Id` in FEEL, or run the engine with `TZ=UTC`.
//! * One expression cannot use a name both as a variable and as a function (`date(date)`), and
//!   [`parse_expression`] cannot parse a variable named like a word of a multi-word built-in that the
//!   expression also uses (`time` next to `date and time(…)`).
//! * There is no bound on work: `for i in 1..100000000 return i` will run (slowly) and allocate.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use dsntk_feel::closure::Closure;
use dsntk_feel::context::FeelContext;
use dsntk_feel::values::Value;
use dsntk_feel::{FeelNumber, FeelScope, FeelType, FunctionBody, Name};
use dsntk_feel_parser::AstNode;
use serde_json::Value as Json;

use super::{parse_expression, FeelExpression};

/// Variables visible to an expression, innermost scope last wins (caller resolves scoping): a JSON object.
pub type Variables = serde_json::Map<String, serde_json::Value>;

/// Deepest nesting of arrays and objects converted either way (serde_json itself parses at most 128).
pub const MAX_DEPTH: usize = 256;
/// Deepest syntax tree evaluated: far beyond hand-written expressions (a 99-term sum), and within 1 MiB
/// of stack for every kind of node in a debug build (about 7 KiB per level; 120 levels were measured to
/// fit in 1 MiB, 150 not).
pub const MAX_AST_DEPTH: usize = 100;
/// Longest dsntk message kept in an [`EvalError`]: dsntk prints whole values into some messages.
const MAX_MESSAGE: usize = 300;

/// dsntk traces that mark FEEL's ordinary nulls rather than failures: a name or context entry that does
/// not exist; a comparison (`<`, `>`, `=`, `in`, …) involving null or values of different types.
pub const NULL_TRACES: &[&str] = &[
    "context has no value for key",
    "no value for qualified name",
    "build_path: no entry",
    "eval_",
    "equal err",
];

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
    if super::words(&expression.source).any(|word| word == "function") {
        return Err(error(
            "function definitions are not supported in govflow expressions (a recursive function could \
             exhaust the evaluator's stack)"
                .to_owned(),
        ));
    }
    if deeper_than(&expression.ast, MAX_AST_DEPTH) {
        return Err(error(format!("the expression is nested more than {MAX_AST_DEPTH} levels deep")));
    }
    let run = || -> Result<Json, String> {
        let scope = scope_for(&expression.source, variables, now)?;
        let value = dsntk_feel_evaluator::evaluate(&scope, &expression.ast);
        if let Some(message) = first_failure(&value, 0) {
            return Err(abbreviate(&message, MAX_MESSAGE));
        }
        to_json(&value)
    };
    match catch_unwind(AssertUnwindSafe(run)) {
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

/// A condition: must evaluate to a boolean; null or non-boolean is an error naming the value
/// ("condition '=x > 1' evaluated to null, not a boolean").
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
                abbreviate(&other.to_string(), 100)
            ),
        }),
    }
}

/// JSON → FEEL, as in the module's table. Never fails: a value nested deeper than [`MAX_DEPTH`] becomes
/// a null carrying a trace, which is an error if the expression uses it.
pub fn to_feel(value: &Json) -> Value {
    to_feel_at(value, 0)
}

/// FEEL → JSON, as in the module's table: ranges, functions and other values JSON cannot hold are errors.
/// Every null, with or without a trace, becomes JSON `null` (telling failures apart is `evaluate`'s job).
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
    // the author wrote, not the expansion of the binary fraction.
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
            // A FeelContext is a BTreeMap: entries come out sorted by name, whatever order serde_json keeps.
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
    let (negative, unsigned) = match raw.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, raw.strip_prefix('+').unwrap_or(&raw)),
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
    let decimal = format!("{sign}{significant}e{exponent}");
    let float: f64 = decimal.parse().map_err(|_| not_finite())?;
    serde_json::Number::from_f64(float)
        .map(Json::Number)
        .ok_or_else(|| format!("the number {decimal} is too large for JSON"))
}

/// The first failure recorded in `value`: dsntk reports errors as nulls carrying a trace.
pub(crate) fn first_failure(value: &Value, depth: usize) -> Option<String> {
    // to_feel leaves its trace at depth MAX_DEPTH + 1; to_json refuses anything deeper.
    if depth > MAX_DEPTH + 1 {
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

/// One context: each word of the expression bound to its variable or to `null`, called names left to
/// the functions, and `now`/`today` bound to constant functions when called.
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

/// A FEEL function of no parameters returning `value`.
fn constant_function(value: Value, result_type: FeelType) -> Value {
    let body = FunctionBody::LiteralExpression(Arc::new(Box::new(move |_: &FeelScope| value.clone())));
    Value::FunctionDefinition(vec![], body, false, Closure::default(), FeelContext::default(), result_type)
}

/// Names written as calls (`name(`, `name (`), outside strings. A multi-word built-in (`date and time(`)
/// is called under its full name, which no variable can have, so its last word is not a called name.
fn called_names(source: &str) -> Vec<&str> {
    let mut called = Vec::new();
    let mut in_string = false;
    let mut word_start: Option<usize> = None;
    // The last word, kept while only whitespace follows it.
    let mut last_word: Option<(usize, usize)> = None;
    for (index, ch) in source.char_indices() {
        if ch == '"' {
            in_string = !in_string;
        }
        let in_word = !in_string && (ch.is_alphanumeric() || ch == '_' || ch == '$');
        if in_word {
            word_start.get_or_insert(index);
            continue;
        }
        if let Some(start) = word_start.take() {
            last_word = Some((start, index));
        }
        if ch == '(' && !in_string {
            if let Some((start, end)) = last_word {
                let before = &source[..end];
                if !super::MULTI_WORD_BUILTINS.iter().any(|builtin| before.ends_with(builtin)) {
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

/// Whether the tree has a path longer than `limit` nodes; iterative, so it cannot overflow itself.
pub(crate) fn deeper_than(root: &AstNode, limit: usize) -> bool {
    let mut pending = vec![(root, 1usize)];
    while let Some((node, depth)) = pending.pop() {
        if depth > limit {
            return true;
        }
        pending.extend(children(node).into_iter().map(|child| (child, depth + 1)));
    }
    false
}

fn children(node: &AstNode) -> Vec<&AstNode> {
    match node {
        AstNode::Add(a, b)
        | AstNode::And(a, b)
        | AstNode::ContextEntry(a, b)
        | AstNode::ContextTypeEntry(a, b)
        | AstNode::Div(a, b)
        | AstNode::Eq(a, b)
        | AstNode::Every(a, b)
        | AstNode::Exp(a, b)
        | AstNode::Filter(a, b)
        | AstNode::For(a, b)
        | AstNode::FormalParameter(a, b)
        | AstNode::FunctionDefinition(a, b)
        | AstNode::FunctionInvocation(a, b)
        | AstNode::FunctionType(a, b)
        | AstNode::Ge(a, b)
        | AstNode::Gt(a, b)
        | AstNode::In(a, b)
        | AstNode::InstanceOf(a, b)
        | AstNode::IterationContextSingle(a, b)
        | AstNode::Le(a, b)
        | AstNode::Lt(a, b)
        | AstNode::Mul(a, b)
        | AstNode::NamedParameter(a, b)
        | AstNode::Nq(a, b)
        | AstNode::Or(a, b)
        | AstNode::Out(a, b)
        | AstNode::Path(a, b)
        | AstNode::QuantifiedContext(a, b)
        | AstNode::Range(a, b)
        | AstNode::Some(a, b)
        | AstNode::Sub(a, b) => vec![a, b],
        AstNode::Between(a, b, c) | AstNode::If(a, b, c) | AstNode::IterationContextInterval(a, b, c) => {
            vec![a, b, c]
        }
        AstNode::EvaluatedExpression(a)
        | AstNode::FunctionBody(a, _)
        | AstNode::IntervalEnd(a, _)
        | AstNode::IntervalStart(a, _)
        | AstNode::ListType(a)
        | AstNode::Neg(a)
        | AstNode::RangeType(a)
        | AstNode::Satisfies(a)
        | AstNode::UnaryGe(a)
        | AstNode::UnaryGt(a)
        | AstNode::UnaryLe(a)
        | AstNode::UnaryLt(a)
        | AstNode::UnaryEq(a)
        | AstNode::UnaryNe(a) => vec![a],
        AstNode::CommaList(items)
        | AstNode::Context(items)
        | AstNode::ContextType(items)
        | AstNode::ExpressionList(items)
        | AstNode::FormalParameters(items)
        | AstNode::IterationContexts(items)
        | AstNode::List(items)
        | AstNode::NamedParameters(items)
        | AstNode::NegatedList(items)
        | AstNode::ParameterTypes(items)
        | AstNode::PositionalParameters(items)
        | AstNode::QualifiedName(items)
        | AstNode::QuantifiedContexts(items) => items.iter().collect(),
        AstNode::At(_)
        | AstNode::Boolean(_)
        | AstNode::ContextEntryKey(_)
        | AstNode::ContextTypeEntryKey(_)
        | AstNode::FeelType(_)
        | AstNode::Irrelevant
        | AstNode::Name(_)
        | AstNode::Null
        | AstNode::Numeric(..)
        | AstNode::ParameterName(_)
        | AstNode::QualifiedNameSegment(_)
        | AstNode::String(_) => vec![],
    }
}

/// At most `limit` characters of `text`, for messages.
fn abbreviate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use dsntk_feel::bif::Bif;
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    /// Saturday 3 February 2001, 04:05:06 at +01:00: far from any date the tests will run on.
    fn now() -> DateTime<FixedOffset> {
        at("2001-02-03T04:05:06+01:00")
    }

    fn variables(value: Json) -> Variables {
        match value {
            Json::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn eval(source: &str, variables: &Variables) -> Result<Json, EvalError> {
        let expression = parse_expression(source).unwrap_or_else(|error| panic!("{error}"));
        evaluate(&expression, variables, now())
    }

    fn nested_arrays(depth: usize) -> Json {
        (0..depth).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn json_round_trips_through_feel() {
        for value in [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-5),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(0.1),
            json!(-2.5),
            json!(1.5e300),
            json!(1e-7),
            json!(""),
            json!("text with \"quotes\""),
            json!("2027-01-01"),
            json!([]),
            json!([1, [2, [3, null]], {"a": "b"}]),
            json!({}),
            json!({"a": {"b": {"c": [true, 1.25, "x"]}}, "z": null}),
        ] {
            let feel = to_feel(&value);
            assert_eq!(to_json(&feel), Ok(value.clone()), "{value} went to FEEL as {feel:?}");
        }
        // The same number, written as an integer: FEEL does not remember that it was a float.
        assert_eq!(to_json(&to_feel(&json!(1.0))), Ok(json!(1)));
        assert_eq!(to_json(&to_feel(&json!(-2e3))), Ok(json!(-2000)));
    }

    #[test]
    fn json_becomes_the_matching_feel_value() {
        type Expected = fn(&Value) -> bool;
        let cases: Vec<(Json, Expected)> = vec![
            (json!(null), |v| matches!(v, Value::Null(None))),
            (json!(true), |v| matches!(v, Value::Boolean(true))),
            (json!(7), |v| matches!(v, Value::Number(n) if *n == FeelNumber::from(7))),
            (json!(0.1), |v| matches!(v, Value::Number(n) if *n == FeelNumber::new(1, 1))),
            (json!(u64::MAX), |v| matches!(v, Value::Number(n) if *n == FeelNumber::from(u64::MAX))),
            // Strings are never dates: FEEL code converts with date(x).
            (json!("2027-01-01"), |v| matches!(v, Value::String(s) if s == "2027-01-01")),
            (json!([1, "a"]), |v| matches!(v, Value::List(items) if items.len() == 2)),
            (json!({"a b": 1, "c": {"d": 2}}), |v| {
                matches!(v, Value::Context(ctx)
                    if ctx.get_entry(&Name::from("a b")).is_some()
                    && matches!(ctx.get_entry(&Name::from("c")), Some(Value::Context(_))))
            }),
        ];
        for (json, expected) in cases {
            let feel = to_feel(&json);
            assert!(expected(&feel), "{json} became {feel:?}");
        }
    }

    #[test]
    fn feel_values_become_json() {
        let none = Variables::new();
        for (source, expected) in [
            ("date(\"2027-01-31\")", json!("2027-01-31")),
            ("date and time(\"2027-01-01T10:00:00Z\")", json!("2027-01-01T10:00:00Z")),
            ("date and time(\"2027-01-01T10:00:00+01:00\")", json!("2027-01-01T10:00:00+01:00")),
            (
                "date and time(\"2027-01-01T10:00:00@Europe/Berlin\")",
                json!("2027-01-01T10:00:00@Europe/Berlin"),
            ),
            ("date and time(\"2027-01-01T10:00:00\")", json!("2027-01-01T10:00:00")),
            ("date and time(\"2027-01-01T10:00:00.5Z\")", json!("2027-01-01T10:00:00.5Z")),
            ("time(\"10:30:00\")", json!("10:30:00")),
            ("time(\"10:30:00+01:00\")", json!("10:30:00+01:00")),
            ("duration(\"P1Y2M\")", json!("P1Y2M")),
            ("duration(\"P14M\")", json!("P1Y2M")),
            ("duration(\"P3DT4H\")", json!("P3DT4H")),
            ("-duration(\"PT30M\")", json!("-PT30M")),
            ("0.1 + 0.2", json!(0.3)),
            ("10 / 4", json!(2.5)),
            ("5.0", json!(5)),
            ("0.5 + 0.5", json!(1)),
            ("-0", json!(0)),
            ("1 / 3", json!(0.3333333333333333)),
            ("2 ** 100", json!(1.2676506002282294e30)),
            ("9223372036854775807 + 1", json!(9_223_372_036_854_775_808u64)),
            ("-9223372036854775808", json!(i64::MIN)),
            ("[1, \"a\", null, true]", json!([1, "a", null, true])),
            ("{b: 2, a: {d: [1], c: 3}}", json!({"a": {"c": 3, "d": [1]}, "b": 2})),
        ] {
            assert_eq!(eval(source, &none), Ok(expected), "{source}");
        }
    }

    #[test]
    fn context_keys_come_out_sorted() {
        let result = eval("{zeta: 1, alpha: 2, Mid: 3, beta: {y: 1, x: 2}}", &Variables::new()).unwrap();
        assert_eq!(result.to_string(), r#"{"Mid":3,"alpha":2,"beta":{"x":2,"y":1},"zeta":1}"#);
    }

    #[test]
    fn values_json_cannot_hold_are_errors() {
        let none = Variables::new();
        let range = eval("[1..3]", &none).unwrap_err();
        assert_eq!(range.message, "a range cannot be stored as a variable");
        let builtin = Value::BuiltInFunction(Bif::from_str("count").unwrap());
        assert_eq!(to_json(&builtin), Err("a function cannot be stored as a variable".to_owned()));
        let constant = constant_function(Value::Boolean(true), FeelType::Boolean);
        assert_eq!(to_json(&constant), Err("a function cannot be stored as a variable".to_owned()));
        let nested = Value::List(vec![Value::Number(1.into()), Value::Irrelevant]);
        assert!(to_json(&nested).unwrap_err().contains("cannot be stored as a variable"));
        assert_eq!(
            to_json(&Value::Number(FeelNumber::infinite())),
            Err("the number +Inf is not finite".into())
        );
        let huge = Value::Number("1E+400".parse().unwrap());
        assert_eq!(to_json(&huge), Err("the number 1e400 is too large for JSON".to_owned()));
    }

    #[test]
    fn zeebe_style_expressions() {
        let vars = variables(json!({
            "x": 3,
            "s": "b",
            "name": "Amina",
            "applicant": {"name": "Amina", "address": {"city": "Nairobi"}},
            "items": [{"price": 5}, {"price": 20}, {"price": 12.5}],
            "birthDate": "2000-05-01",
            "registered": "2001-01-01",
        }));
        for (source, expected) in [
            ("x", json!(3)),
            ("applicant.address.city", json!("Nairobi")),
            ("items[price > 10]", json!([{"price": 20}, {"price": 12.5}])),
            ("items[price > 10].price", json!([20, 12.5])),
            ("[1, 20, 3][item > 10]", json!([20])),
            ("count(items)", json!(3)),
            ("sum(items.price)", json!(37.5)),
            ("\"a\" + s", json!("ab")),
            ("\"Dear \" + applicant.name + \"!\"", json!("Dear Amina!")),
            ("if x > 1 then \"big\" else \"small\"", json!("big")),
            ("for i in 1..3 return i * x", json!([3, 6, 9])),
            ("for item in items return item.price * 2", json!([10, 40, 25])),
            ("some item in items satisfies item.price > 15", json!(true)),
            ("every item in items satisfies item.price > 15", json!(false)),
            ("date(\"2027-01-31\") + duration(\"P1M\")", json!("2027-02-28")),
            ("date(\"2027-03-01\") - date(\"2027-01-31\")", json!("P29D")),
            ("today() - date(registered)", json!("P33D")),
            ("today() - date(registered) > duration(\"P30D\")", json!(true)),
            ("today() - date(registered) > duration(\"P40D\")", json!(false)),
            ("years and months duration(date(birthDate), today()).years", json!(0)),
            ("date(birthDate) + duration(\"P18Y\") <= today()", json!(false)),
            (
                "date and time(\"2027-01-01T10:00:00Z\") - date and time(\"2027-01-01T09:00:00Z\")",
                json!("PT1H"),
            ),
            ("{a: 1, b: x}", json!({"a": 1, "b": 3})),
            ("{a: 1, b: a + x}", json!({"a": 1, "b": 4})),
            ("string length(name) > 3 and upper case(s) = \"B\"", json!(true)),
            ("x in [1..5]", json!(true)),
            ("not(x > 5)", json!(true)),
        ] {
            assert_eq!(eval(source, &vars), Ok(expected), "{source}");
        }
    }

    #[test]
    fn missing_names_are_null() {
        let vars = variables(json!({"applicant": {"address": {"city": "Nairobi"}}}));
        for source in [
            "missing",
            "missing + 1",
            "missing > 1",
            "missing.address.city",
            "applicant.address.street",
            "applicant.phone.number",
            "if missing then 1 else null",
        ] {
            assert_eq!(eval(source, &vars), Ok(Json::Null), "{source}");
        }
        assert_eq!(eval("missing = null", &vars), Ok(json!(true)));
    }

    /// dsntk 0.3 deviations from FEEL, pinned so that an upgrade that fixes them is noticed.
    #[test]
    fn dsntk_limitations() {
        let vars = variables(json!({"items": [{"price": 5}, {"name": "no price"}]}));
        assert_eq!(eval("missing = 1", &vars), Ok(Json::Null), "FEEL says false");
        assert_eq!(eval("1 = missing", &vars), Ok(json!(false)));
        assert_eq!(
            eval("missing - 1", &vars).unwrap_err().message,
            "[subtraction] incompatible types: null - 1"
        );
        assert_eq!(
            eval("\"a\" + missing", &vars).unwrap_err().message,
            "expected string as a second argument in addition"
        );
        assert!(eval("sum(items.price)", &vars).unwrap_err().message.contains("[core::sum]"));
    }

    #[test]
    fn conditions_must_be_booleans() {
        let vars = variables(json!({"x": 3, "answer": "yes"}));
        let condition = |source: &str, vars: &Variables| {
            evaluate_condition(&parse_expression(source).unwrap(), vars, now())
        };
        assert_eq!(condition("x > 1", &vars), Ok(true));
        assert_eq!(condition("x > 5", &vars), Ok(false));
        for (source, message) in [
            ("missing > 1", "condition '=missing > 1' evaluated to null, not a boolean"),
            ("x + 1", "condition '=x + 1' evaluated to 4, not a boolean"),
            ("answer", "condition '=answer' evaluated to \"yes\", not a boolean"),
            ("[x]", "condition '=[x]' evaluated to [3], not a boolean"),
        ] {
            let error = condition(source, &vars).unwrap_err();
            assert_eq!(error.expression, source);
            assert_eq!(error.message, message);
        }
        let error = condition("x > 1", &Variables::new()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to evaluate 'x > 1': condition '=x > 1' evaluated to null, not a boolean"
        );
        let error = condition("1 / 0 > 1", &vars).unwrap_err();
        assert!(error.message.contains("evaluated to null"), "{error}");
        assert!(condition("x / 0", &vars).unwrap_err().message.contains("division by zero"));
    }

    #[test]
    fn now_and_today_come_from_the_argument() {
        let none = Variables::new();
        let run = |source: &str, now: &str| evaluate(&parse_expression(source).unwrap(), &none, at(now));
        assert_eq!(run("now()", "2001-02-03T04:05:06+01:00"), Ok(json!("2001-02-03T04:05:06+01:00")));
        assert_eq!(run("now()", "2030-12-31T23:59:59.25-05:00"), Ok(json!("2030-12-31T23:59:59.25-05:00")));
        assert_eq!(run("now()", "2001-02-03T04:05:06+00:00"), Ok(json!("2001-02-03T04:05:06Z")));
        assert_eq!(run("today()", "2001-02-03T04:05:06+01:00"), Ok(json!("2001-02-03")));
        assert_eq!(run("today()", "2030-12-31T23:59:59-05:00"), Ok(json!("2030-12-31")));
        // The date is taken in now's offset: 23:30 at -05:00 is already the 4th in UTC.
        assert_eq!(run("today()", "2001-02-03T23:30:00-05:00"), Ok(json!("2001-02-03")));
        assert_eq!(
            run("now() + duration(\"PT1H\")", "2001-02-03T04:05:06Z"),
            Ok(json!("2001-02-03T05:05:06Z"))
        );
        assert_eq!(run("today ( ) = date(\"2001-02-03\")", "2001-02-03T04:05:06Z"), Ok(json!(true)));
        assert_eq!(run("string(today())", "2001-02-03T04:05:06Z"), Ok(json!("2001-02-03")));
        // A variable named now does not hide the function, and is still a variable where not called.
        let vars = variables(json!({"now": "a variable"}));
        let expression = parse_expression("now()").unwrap();
        assert_eq!(evaluate(&expression, &vars, now()), Ok(json!("2001-02-03T04:05:06+01:00")));
        assert_eq!(eval("now", &vars), Ok(json!("a variable")));
    }

    #[test]
    fn functions_win_over_variables_of_the_same_name() {
        let vars =
            variables(json!({"count": 7, "date": "not a function", "items": [1, 2], "d": "2027-01-01"}));
        assert_eq!(eval("count(items)", &vars), Ok(json!(2)));
        assert_eq!(eval("date(d)", &vars), Ok(json!("2027-01-01")));
        assert_eq!(eval("count + 1", &vars), Ok(json!(8)));
        assert_eq!(eval("date + \"!\"", &vars), Ok(json!("not a function!")));
        // One expression cannot use a name both ways: here `date` is the function throughout.
        let error = eval("date(date)", &vars).unwrap_err();
        assert!(error.message.contains("[core::date] invalid argument type"), "{error}");
    }

    #[test]
    fn variables_that_no_expression_can_name_are_ignored() {
        let vars =
            variables(json!({"if": 1, "first name": "A", "x": 2, "deep": nested_arrays(MAX_DEPTH + 10)}));
        assert_eq!(eval("x + 1", &vars), Ok(json!(3)));
    }

    #[test]
    fn failures_are_errors_with_dsntk_messages_and_never_panics() {
        let vars = variables(json!({"x": 3, "deep": nested_arrays(MAX_DEPTH + 10)}));
        for (source, message) in [
            ("1 / 0", "[division] division by zero"),
            ("date(\"garbage\")", "[core::date] invalid date string 'garbage'"),
            ("x.y", "unexpected type: number, for property: y"),
            ("{a: 1, b: 1 / 0}", "[division] division by zero"),
            ("[1, date(\"2027-02-30\")]", "[core::date] invalid date string '2027-02-30'"),
            ("{a: 1, a: 2}", "duplicated context entry key: a"),
            ("deep", "a variable is nested more than 256 levels deep"),
        ] {
            let error = eval(source, &vars).unwrap_err();
            assert_eq!((error.expression.as_str(), error.message.as_str()), (source, message));
        }
        // Function definitions never reach the evaluator: parsing refuses them (unbounded recursion).
        for source in [
            "{f: function(n) if n = 0 then 0 else f(n - 1), r: f(100000)}.r",
            "sort([3, 1, 2], function(a, b) a < b)",
        ] {
            let error = parse_expression(source).unwrap_err();
            assert!(error.message.starts_with("function definitions are not allowed"), "{error}");
            assert!(evaluate_value(&format!("={source}"), &vars, now()).is_err());
        }
    }

    /// Runs on a test thread's 2 MiB stack: if MAX_AST_DEPTH grows past what dsntk can recurse through,
    /// this aborts with a stack overflow.
    #[test]
    fn the_deepest_expressions_allowed_fit_the_stack_and_deeper_ones_are_refused() {
        let vars = variables(json!({"x": [[1]]}));
        let n = MAX_AST_DEPTH - 4;
        for source in [
            format!("1{}", "+1".repeat(n)),
            format!("1{}", " - 1".repeat(n)),
            format!("1{}", " ** 1".repeat(n)),
            format!("true{}", " and true".repeat(n)),
            format!("{}0", "if false then 1 else ".repeat(n)),
            format!("{}true{}", "if true then ".repeat(n), " else false".repeat(n)),
            format!("{}1", "- ".repeat(n)),
            format!("x{}", "[1]".repeat(n)),
            format!("{}true", "some a in [1] satisfies ".repeat(n / 2)),
            format!("{}1", "for a in [1] return ".repeat(n / 2)),
        ] {
            let expression = match parse_expression(&source) {
                Ok(expression) => expression,
                // Wordy forms hit the term limit before the depth limit: refused before dsntk sees them.
                Err(error) => {
                    assert!(error.message.contains("terms"), "{error}");
                    continue;
                }
            };
            assert!(!deeper_than(&expression.ast, MAX_AST_DEPTH), "{source}");
            assert!(deeper_than(&expression.ast, n / 2), "{source}");
            assert!(evaluate(&expression, &vars, now()).is_ok(), "{source}");
        }
        // Deeper trees are refused when parsing (at deploy time), and evaluate_value reports it.
        let none = Variables::new();
        let too_deep = parse_expression(&format!("1{}", "+1".repeat(MAX_AST_DEPTH))).unwrap_err();
        assert!(too_deep.message.contains("nested more than 100 levels deep"), "{too_deep}");
        let chained_ifs = format!("={}0", "if false then 1 else ".repeat(MAX_AST_DEPTH));
        let refused = evaluate_value(&chained_ifs, &none, now()).unwrap_err().message;
        assert!(refused.contains("nested more than") || refused.contains("terms"), "{refused}");
        let deep = to_feel(&nested_arrays(MAX_DEPTH * 4));
        assert!(to_json(&deep).is_err());
    }

    #[test]
    fn evaluation_is_deterministic() {
        let vars = variables(json!({
            "applicant": {"surname": "Otieno", "given": "Amina", "children": [{"age": 3}, {"age": 9}]},
            "amount": 1250.75,
        }));
        let mut reordered = Variables::new();
        for (key, value) in vars.iter().rev() {
            reordered.insert(key.clone(), value.clone());
        }
        let source = "{summary: applicant.given + \" \" + applicant.surname, fee: amount * 0.1, \
                      at: now(), due: today() + duration(\"P30D\"), older: applicant.children[age > 5], \
                      ages: for c in applicant.children return c.age, total: sum(applicant.children.age)}";
        let first = serde_json::to_string(&eval(source, &vars).unwrap()).unwrap();
        let second = serde_json::to_string(&eval(source, &vars).unwrap()).unwrap();
        let third = serde_json::to_string(&eval(source, &reordered).unwrap()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first, third);
        assert_eq!(
            first,
            r#"{"ages":[3,9],"at":"2001-02-03T04:05:06+01:00","due":"2001-03-05","fee":125.075,"#.to_owned()
                + r#""older":[{"age":9}],"summary":"Amina Otieno","total":12}"#
        );
    }

    #[test]
    fn values_are_feel_or_literal() {
        let vars = variables(json!({"x": 41}));
        assert_eq!(evaluate_value("=x + 1", &vars, now()), Ok(json!(42)));
        assert_eq!(evaluate_value("= x + 1 ", &vars, now()), Ok(json!(42)));
        assert_eq!(evaluate_value("payments", &vars, now()), Ok(json!("payments")));
        assert_eq!(evaluate_value("x + 1", &vars, now()), Ok(json!("x + 1")));
        let error = evaluate_value("=x >", &vars, now()).unwrap_err();
        assert_eq!(error.expression, "x >");
        assert!(error.message.contains("syntax error"), "{error}");
    }

    #[test]
    fn error_display_quotes_the_expression() {
        let error = eval("x.y + 1", &variables(json!({"x": 1}))).unwrap_err();
        assert_eq!(error.to_string(), format!("failed to evaluate 'x.y + 1': {}", error.message));
    }

    #[test]
    fn called_names_skip_strings_and_multi_word_builtins() {
        assert_eq!(called_names("count(a) + f (b) + \"g(c)\" + date and time(d) + x"), vec!["count", "f"]);
        assert_eq!(called_names("string length(name) > sum(x.y)"), vec!["sum"]);
        assert_eq!(called_names("(a)(b)"), Vec::<&str>::new());
    }
}
