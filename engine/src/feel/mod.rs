//! FEEL expressions as Zeebe writes them: a value starting with `=` is a FEEL expression, anything else
//! a literal. Parsing uses `dsntk-feel-parser`; each expression is parsed once (at deploy time) and the
//! AST kept. This module must never panic on any input: the third-party parser runs behind a nesting
//! limit and `catch_unwind`.
//!
//! # Names and the dsntk parser
//! dsntk resolves FEEL names against a scope known at parse time (FEEL names may contain spaces and
//! operators, e.g. `a+b` is one name unless `a` and `b` are known). Zeebe's dialect has no such names:
//! variables are identifiers. So before parsing, every identifier in the expression (outside string
//! literals, not a FEEL keyword, not part of a multi-word built-in function name that occurs in the text)
//! is declared in the parsing scope. `a + b` then parses as an addition, as it does in Zeebe.

use std::panic::{catch_unwind, AssertUnwindSafe};

use dsntk_feel::context::FeelContext;
use dsntk_feel::{FeelScope, Name};
use dsntk_feel_parser::AstNode;

pub mod eval;

/// Deepest bracket nesting accepted before handing an expression to the parser (guards its recursion).
const MAX_NESTING: usize = 64;
/// Longest accepted expression, in bytes.
const MAX_LENGTH: usize = 16 * 1024;
/// Most tokens (names, literals, operators) in one expression: the parser, the evaluator and dropping the
/// AST all recurse over it, so its size is bounded for every stack.
const MAX_TOKENS: usize = 300;
/// Longest path (`a.b.c...`): dsntk parses long paths very slowly.
const MAX_PATH_SEGMENTS: usize = 16;

/// A text attribute of the Zeebe dialect: FEEL (`=...`, the `=` removed) or a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Feel(&'a str),
    Literal(&'a str),
}

impl<'a> Value<'a> {
    pub fn classify(text: &'a str) -> Value<'a> {
        match text.trim_start().strip_prefix('=') {
            Some(body) => Value::Feel(body.trim()),
            None => Value::Literal(text),
        }
    }
}

/// A parsed FEEL expression: its source and its AST.
#[derive(Debug, Clone, PartialEq)]
pub struct FeelExpression {
    pub source: String,
    pub ast: AstNode,
}

/// Why an expression is not valid FEEL; `Display` quotes the expression and the parser's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{expression}' is not valid FEEL: {message}")]
pub struct FeelError {
    pub expression: String,
    pub message: String,
}

/// Parses one FEEL expression (without the leading `=`).
pub fn parse_expression(source: &str) -> Result<FeelExpression, FeelError> {
    let error = |message: String| FeelError { expression: source.to_owned(), message };
    if source.trim().is_empty() {
        return Err(error("the expression is empty".to_owned()));
    }
    if source.len() > MAX_LENGTH {
        return Err(error(format!("the expression is longer than {MAX_LENGTH} bytes")));
    }
    if nesting(source) > MAX_NESTING {
        return Err(error(format!("brackets are nested more than {MAX_NESTING} deep")));
    }
    let (n_tokens, longest_path) = shape(source);
    if n_tokens > MAX_TOKENS {
        return Err(error(format!(
            "the expression has more than {MAX_TOKENS} terms; split it into several steps"
        )));
    }
    if longest_path > MAX_PATH_SEGMENTS {
        return Err(error(format!("a path has more than {MAX_PATH_SEGMENTS} segments")));
    }
    if words(source).any(|word| word == "function") {
        // User-defined functions allow unbounded recursion in the evaluator.
        return Err(error("function definitions are not allowed in govflow expressions".to_owned()));
    }
    if words(source).any(|word| word == "external") {
        // dsntk can call out to Java/PMML services from `function() external {...}`: never from a file.
        return Err(error("external functions are not allowed in govflow expressions".to_owned()));
    }
    let scope = scope_for(source);
    let parsed =
        catch_unwind(AssertUnwindSafe(|| dsntk_feel_parser::parse_expression(&scope, source, false)));
    match parsed {
        // Evaluation recurses over the tree; refuse at deploy time what evaluation would refuse at run time.
        Ok(Ok(ast)) if eval::deeper_than(&ast, eval::MAX_AST_DEPTH) => Err(error(format!(
            "the expression is nested more than {} levels deep; split it into several steps",
            eval::MAX_AST_DEPTH
        ))),
        Ok(Ok(ast)) => Ok(FeelExpression { source: source.to_owned(), ast }),
        Ok(Err(parse_error)) => Err(error(clean_message(&parse_error.to_string()))),
        Err(_) => Err(error("the FEEL parser failed on this expression".to_owned())),
    }
}

/// Parses a value that must be FEEL when it starts with `=`; literals are accepted as they are.
pub fn check_value(text: &str) -> Result<(), FeelError> {
    match Value::classify(text) {
        Value::Feel(body) => parse_expression(body).map(|_| ()),
        Value::Literal(_) => Ok(()),
    }
}

/// dsntk prefixes messages with the error type (`<ParserError> syntax error: ...`); keep the words.
fn clean_message(message: &str) -> String {
    let message = match message.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((_, rest)) => rest.trim(),
        None => message.trim(),
    };
    message.to_owned()
}

fn nesting(source: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    for ch in source.chars() {
        match ch {
            '"' => in_string = !in_string,
            '(' | '[' | '{' if !in_string => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// FEEL's keywords: never declared as names.
pub(crate) const KEYWORDS: &[&str] = &[
    "if",
    "then",
    "else",
    "for",
    "in",
    "return",
    "some",
    "every",
    "satisfies",
    "and",
    "or",
    "not",
    "function",
    "between",
    "instance",
    "of",
    "true",
    "false",
    "null",
    "external",
];

/// Multi-word names of FEEL built-in functions (and Camunda's extensions); their words must stay
/// undeclared so the parser can still recognise the function name.
pub(crate) const MULTI_WORD_BUILTINS: &[&str] = &[
    "date and time",
    "years and months duration",
    "days and time duration",
    "string length",
    "upper case",
    "lower case",
    "substring before",
    "substring after",
    "starts with",
    "ends with",
    "list contains",
    "insert before",
    "index of",
    "distinct values",
    "get value",
    "get entries",
    "day of year",
    "day of week",
    "month of year",
    "week of year",
    "is defined",
    "get or else",
    "context put",
    "context merge",
    "string join",
    "last day of month",
    "list replace",
    "is empty",
    "from json",
    "to json",
];

/// The identifier-like words of `source` outside string literals.
fn words(source: &str) -> impl Iterator<Item = &str> {
    let mut in_string = false;
    let mut escaped = false;
    source
        .split(move |ch: char| {
            if in_string {
                match (escaped, ch) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                return true;
            }
            if ch == '"' {
                in_string = true;
                return true;
            }
            !(ch.is_alphanumeric() || ch == '_' || ch == '$')
        })
        .filter(|word| !word.is_empty())
}

/// (number of tokens, longest dotted path) of `source`, outside string literals.
fn shape(source: &str) -> (usize, usize) {
    let mut n_tokens = 0usize;
    let mut path = 0usize;
    let mut longest = 0usize;
    let mut in_word = false;
    let mut in_string = false;
    let mut escaped = false;
    for ch in source.chars() {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        let word_char = ch.is_alphanumeric() || ch == '_' || ch == '$';
        if word_char {
            if !in_word {
                n_tokens += 1;
                path = if path > 0 { path } else { 1 };
            }
            in_word = true;
            continue;
        }
        in_word = false;
        match ch {
            '.' => path += 1,
            '"' => {
                in_string = true;
                n_tokens += 1;
                path = 0;
            }
            c if c.is_whitespace() => {}
            _ => {
                n_tokens += 1;
                path = 0;
            }
        }
        longest = longest.max(path);
    }
    (n_tokens, longest.max(path))
}

fn scope_for(source: &str) -> FeelScope {
    let protected: Vec<&str> = MULTI_WORD_BUILTINS
        .iter()
        .filter(|builtin| source.contains(*builtin))
        .flat_map(|builtin| builtin.split(' '))
        .collect();
    let scope = FeelScope::default();
    scope.push(FeelContext::default());
    for word in words(source) {
        let is_identifier = word.chars().next().is_some_and(|first| !first.is_ascii_digit());
        if is_identifier && !KEYWORDS.contains(&word) && !protected.contains(&word) {
            scope.set_name(Name::from(word));
        }
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zeebe_style_expressions() {
        for source in [
            "a + b",
            "order.total > 100",
            "date and time(dueDate) - duration(\"P1D\")",
            "if age < 18 then \"minor\" else \"adult\"",
            "some x in [1, 2] satisfies x > 1",
            "{name: applicant.name, total: sum(items.price)}",
            "string length(name) > 3 and upper case(country) = \"KE\"",
            "today() - date(birthDate) > duration(\"P30D\")",
            "x[item > 2]",
            "count(farmers)",
            "for i in 1..3 return i * 2",
        ] {
            let parsed = parse_expression(source);
            assert!(parsed.is_ok(), "{source}: {parsed:?}");
        }
    }

    #[test]
    fn addition_is_not_a_name() {
        let parsed = parse_expression("a + b").unwrap();
        assert!(matches!(parsed.ast, AstNode::Add(_, _)), "{:?}", parsed.ast);
    }

    #[test]
    fn rejects_invalid_expressions_with_the_parser_message() {
        for source in ["x >", "((", "1 +", "", "   ", "\"unterminated"] {
            let error = parse_expression(source).unwrap_err();
            assert_eq!(error.expression, source);
            assert!(!error.message.is_empty());
            assert!(!error.message.starts_with('<'), "{}", error.message);
        }
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse_expression(&deep).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn refuses_external_functions_but_not_the_word_in_strings() {
        let error = parse_expression("function(x) external {java: {class: \"A\", method signature: \"m\"}}");
        assert!(error.unwrap_err().message.contains("are not allowed"));
        assert!(parse_expression("note = \"external\"").is_ok());
    }

    #[test]
    fn bounds_the_size_of_expressions() {
        let long = vec!["1"; 400].join(" + ");
        assert!(parse_expression(&long).unwrap_err().message.contains("terms"));
        let path = format!("x{}", ".a".repeat(40));
        assert!(parse_expression(&path).unwrap_err().message.contains("segments"));
        assert!(parse_expression("applicant.address.city = \"Nairobi\"").is_ok());
        assert!(parse_expression("1.5 + 2.25").is_ok());
        let error = parse_expression("{f: function(n) f(n)}").unwrap_err();
        assert!(error.message.contains("function definitions"), "{error}");
        assert!(parse_expression("note = \"a \\\" function\"").is_ok());
    }

    #[test]
    fn classifies_values() {
        assert_eq!(Value::classify("=a"), Value::Feel("a"));
        assert_eq!(Value::classify("payments"), Value::Literal("payments"));
        assert!(check_value("=x >").is_err());
        assert!(check_value("x >").is_ok());
    }
}
