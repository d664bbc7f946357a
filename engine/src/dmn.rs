//! DMN decisions as Camunda Modeler writes them for Zeebe (DMN 1.3): a file is parsed once, at deploy time,
//! into decisions that are then evaluated against JSON variables. It must never panic on any DMN input, and
//! evaluation is pure: it reads no clock, does no I/O, and the same decision with the same variables always
//! gives byte-identical JSON.
//!
//! # How
//!
//! The XML is read by the engine's hardened reader (`crate::xml`: size and depth limits, no DTDs, any
//! declared encoding, line:column positions) and mapped onto `dsntk-model`'s decision-table types;
//! `dsntk-model-evaluator` evaluates the tables (matching, hit policies, aggregation) and `dsntk-feel-*` the
//! FEEL in their cells. `dsntk-model`'s own XML parser is not used: it rejects the empty output cells
//! Camunda Modeler writes, most of its errors name no element id or line, and it would bypass the engine's
//! XML limits. Literal-expression decisions are ordinary Zeebe expressions and go through [`crate::feel`].
//!
//! # Semantics (those of Zeebe's DMN engine, dmn-scala, where dsntk allows)
//!
//! * **Hit policies**: UNIQUE (the default; several matching rules is an error), FIRST, ANY (matching rules
//!   with different outputs is an error), PRIORITY and OUTPUT ORDER (ordered by each output's
//!   `outputValues`), RULE ORDER, COLLECT as a list or with aggregation SUM, MIN, MAX or COUNT.
//! * **Result**: one output → its value; several outputs → an object keyed by the outputs' `name`s (keys
//!   sorted, like every object [`crate::feel::eval`] returns); RULE ORDER, OUTPUT ORDER and COLLECT → an
//!   array of those; **no rule matched → `null`**, whatever the hit policy (as Zeebe).
//! * **Cells**: input expressions and output entries are FEEL expressions (`applicant.income`,
//!   `min(20000 + 2000 * householdSize, 30000)`); input entries are FEEL unary tests (`< 100000`, `[18..65)`,
//!   `"partial","total"`, `not("none")`). An empty input cell is `-` (any value), an empty output cell
//!   `null`.
//! * **Variables**: a missing variable is `null`; a `null` input matches `-` and `null`, never a comparison,
//!   a range or a value. An input expression that fails (`applicant.income` with `applicant` a number) is an
//!   error, as in Zeebe, not a silent mismatch. Output entries are evaluated for every rule, but only a
//!   matched rule's can fail.
//! * `inputValues` are not enforced (Zeebe ignores them). `outputValues` only order PRIORITY and OUTPUT
//!   ORDER tables; there an output entry outside them becomes `null` (dsntk's rule). `typeRef`s are not
//!   checked.
//! * **Required decisions** (`informationRequirement/requiredDecision href="#id"`) are evaluated first, in
//!   dependency order and without recursion; a result is visible to the decisions requiring it under the
//!   required decision's `variable` name, else its id (Zeebe's rule), overriding a variable of that name.
//!
//! # Refused at parse time, as diagnostics
//!
//! * `now()` and `today()`: evaluation reads no clock and [`DecisionModel::evaluate`] takes no "now"; pass
//!   the date as a variable.
//! * `?` in an input entry, and an input entry that is a comparison or a boolean expression (`? > 3`,
//!   `income > 1000 and size < 3`): dsntk compares the input value *with* such an entry's result instead of
//!   taking the result as the test, so the rule would silently never match. Write a unary test (`> 3`) or
//!   move the condition into the input expression.
//! * What [`crate::feel`] refuses in any expression: function definitions, `external`, texts over its size
//!   limits, and syntax trees deeper than [`MAX_AST_DEPTH`] (less two levels for the table's own wrapping).
//! * Business knowledge models, boxed contexts, invocations and other decision logic than a decision table or
//!   a literal expression; required decisions of other files (imports); `defaultOutputEntry`; any
//!   expression language other than FEEL.
//!
//! # Contract
//!
//! As for [`crate::feel::eval::evaluate`]: the caller of [`DecisionModel::evaluate`] leaves it at least
//! 1 MiB of stack.
//!
//! # Limitations (dsntk 0.3)
//!
//! Those of [`crate::feel::eval`] apply to every cell: `x = 1` with `x` null is `null`; a `date and time`
//! without offset or zone is read in the host's zone (so run the engine with `TZ=UTC`). Also, an input entry
//! calling a function that returns a boolean (`list contains(tags, "urgent")`) is compared with the input
//! value, not taken as the test. Names are per table, as [`crate::feel`]'s are per expression: a name
//! called as a function anywhere in the table (`count(items)`) is not bound to a variable of that name
//! anywhere in it, and a table using a multi-word built-in (`date and time(...)`) cannot also use a
//! variable named like one of its words (`time`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, FixedOffset};
use dsntk_feel::context::FeelContext;
use dsntk_feel::values::Value;
use dsntk_feel::{Evaluator, FeelScope, Name};
use dsntk_feel_parser::AstNode;
use dsntk_model::{
    BuiltinAggregator, DecisionRule, DecisionTable, DecisionTableOrientation, HitPolicy, InputClause,
    InputEntry, OutputClause, OutputEntry,
};
use serde_json::Value as Json;

use crate::diagnostics::{has_errors, Code, Diagnostic};
use crate::feel::eval::{self, to_feel, to_json, Variables, MAX_AST_DEPTH};
use crate::feel::FeelExpression;
use crate::model::{ElementId, Position};
use crate::xml::{self, Limits, Node};

/// "Not a DMN file".
const NOT_DMN: Code = Code::NotDmn;
/// "Invalid decision structure" (entry counts, output names, cycles, unsupported DMN features).
const INVALID_DECISION: Code = Code::InvalidDecision;

/// The namespaces of DMN 1.1 to 1.5 (Camunda Modeler 5 writes 1.3; the `http` form of 1.3 also occurs).
const DMN_NAMESPACES: &[&str] = &[
    "https://www.omg.org/spec/DMN/20191111/MODEL/",
    "http://www.omg.org/spec/DMN/20191111/MODEL/",
    "https://www.omg.org/spec/DMN/20211108/MODEL/",
    "https://www.omg.org/spec/DMN/20230324/MODEL/",
    "http://www.omg.org/spec/DMN/20180521/MODEL/",
    "http://www.omg.org/spec/DMN/20151101/dmn.xsd",
];

/// dsntk's result when no rule matched and no default is defined: `null` to the caller, not an error.
const NO_RULE_MATCHED: &str = "no rules matched, no output value defined";
/// The table wraps each input entry as `input in (entry)` and, with output values, each output entry as
/// `entry out (values)`: cells leave it these levels of [`MAX_AST_DEPTH`] (one is enough; one spare).
const TABLE_WRAPPING: usize = 2;
/// Limits on the text of one cell, the same as [`crate::feel`]'s on an expression (see there why).
const MAX_LENGTH: usize = 16 * 1024;
const MAX_NESTING: usize = 64;
const MAX_TOKENS: usize = 1000;
const MAX_PATH_SEGMENTS: usize = 16;
/// Longest dsntk message kept in an evaluation error: dsntk prints whole values into some messages.
const MAX_MESSAGE: usize = 300;

/// A parsed DMN file: its decisions by id, ready to evaluate. Built once at deploy time.
///
/// # Invariants
///
/// Decision ids are unique, every required decision exists, and the requirements have no cycle: a
/// decision's `rank` is above the ranks of all the decisions it requires.
#[derive(Debug)]
pub struct DecisionModel {
    /// In document order.
    decisions: Vec<Decision>,
}

#[derive(Debug)]
struct Decision {
    id: String,
    /// The name decisions requiring this one see its result under: its `variable`'s name, else its id.
    result_name: String,
    /// Direct requirements, as indexes into [`DecisionModel::decisions`].
    required: Vec<usize>,
    /// Position in a topological order of the requirements: below the rank of every decision requiring it.
    rank: usize,
    logic: Logic,
}

#[derive(Debug)]
enum Logic {
    Table(Table),
    Literal(FeelExpression),
}

/// A decision table, parsed and prepared by dsntk.
struct Table {
    hit_policy: HitPolicy,
    /// Every name the table's cells mention that is not a function call, sorted: each is bound in the
    /// evaluation scope to its variable, or to `null`.
    names: Vec<String>,
    /// The input expressions again, labelled, evaluated on their own first so that a failing one is an error.
    inputs: Vec<(String, Evaluator)>,
    /// The whole table: matching, hit policy, aggregation.
    evaluator: Evaluator,
    n_rules: usize,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inputs: Vec<&str> = self.inputs.iter().map(|(label, _)| label.as_str()).collect();
        f.debug_struct("Table")
            .field("hit_policy", &self.hit_policy)
            .field("inputs", &inputs)
            .field("n_rules", &self.n_rules)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl DecisionModel {
    /// Parses DMN 1.x XML (Camunda Modeler writes DMN 1.3, namespace
    /// `https://www.omg.org/spec/DMN/20191111/MODEL/`). On failure, every error found, each with its
    /// element id and line:column where there is one.
    pub fn parse(bytes: &[u8]) -> Result<DecisionModel, Vec<Diagnostic>> {
        match catch_unwind(AssertUnwindSafe(|| parse_model(bytes))) {
            Ok(result) => result,
            Err(_) => Err(vec![Diagnostic::error(Code::MalformedXml, "the DMN parser failed on this file")]),
        }
    }

    /// The ids of the file's decisions, in document order.
    pub fn decision_ids(&self) -> Vec<String> {
        self.decisions.iter().map(|decision| decision.id.clone()).collect()
    }

    /// Evaluates decision `decision_id` with the variables as its input context; the result as JSON
    /// (a decision table with hit policy UNIQUE/FIRST single output → the value; multiple outputs →
    /// object; COLLECT → array; no rule matched → null). The error names the decision that failed, and
    /// why.
    pub fn evaluate(&self, decision_id: &str, variables: &Variables) -> Result<Json, String> {
        let Some(target) = self.decisions.iter().position(|decision| decision.id == decision_id) else {
            return Err(format!(
                "the DMN file has no decision '{decision_id}' (its decisions: {})",
                self.decision_ids().join(", ")
            ));
        };
        // Everything the target needs, each after its requirements: no recursion, each evaluated once.
        let mut plan: Vec<usize> = self.needed_by(target).into_iter().collect();
        plan.sort_by_key(|&index| self.decisions[index].rank);
        let mut results: BTreeMap<usize, Json> = BTreeMap::new();
        for index in plan {
            let decision = &self.decisions[index];
            let mut inputs = Cow::Borrowed(variables);
            for &required in &decision.required {
                let result = results.get(&required).cloned().unwrap_or(Json::Null);
                inputs.to_mut().insert(self.decisions[required].result_name.clone(), result);
            }
            let result = catch_unwind(AssertUnwindSafe(|| decision.logic.evaluate(&inputs)))
                .unwrap_or_else(|_| Err("the DMN evaluator failed on this decision".to_owned()))
                .map_err(|message| format!("decision '{}' failed: {message}", decision.id))?;
            results.insert(index, result);
        }
        Ok(results.remove(&target).unwrap_or(Json::Null))
    }

    /// `index` and every decision it requires, transitively.
    fn needed_by(&self, index: usize) -> BTreeSet<usize> {
        let mut needed = BTreeSet::from([index]);
        let mut pending = vec![index];
        while let Some(next) = pending.pop() {
            for &required in &self.decisions[next].required {
                if needed.insert(required) {
                    pending.push(required);
                }
            }
        }
        needed
    }
}

impl Logic {
    fn evaluate(&self, variables: &Variables) -> Result<Json, String> {
        match self {
            Logic::Table(table) => table.evaluate(variables),
            Logic::Literal(expression) => {
                // `now()` and `today()` are refused at parse time, so this instant is never observed.
                eval::evaluate(expression, variables, DateTime::<FixedOffset>::default())
                    .map_err(|error| error.to_string())
            }
        }
    }
}

impl Table {
    fn evaluate(&self, variables: &Variables) -> Result<Json, String> {
        let mut context = FeelContext::default();
        for name in &self.names {
            match variables.get(name) {
                Some(value) => context.set_entry(&Name::from(name.as_str()), to_feel(value)),
                None => context.set_null(Name::from(name.as_str())),
            }
        }
        let scope = FeelScope::default();
        scope.push(context);
        for (label, input) in &self.inputs {
            if let Some(message) = eval::first_failure(&input(&scope), 0) {
                return Err(format!("input '{label}' cannot be evaluated: {}", abbreviate(&message)));
            }
        }
        let value = (self.evaluator)(&scope);
        if matches!(&value, Value::Null(Some(trace)) if trace == NO_RULE_MATCHED) {
            return Ok(Json::Null);
        }
        if let Some(message) = eval::first_failure(&value, 0) {
            return Err(explain(&message, self.hit_policy));
        }
        to_json(&value)
    }
}

/// dsntk's error codes in plain words.
fn explain(trace: &str, hit_policy: HitPolicy) -> String {
    match trace {
        "err_multiple_rules_match_in_unique_hit_policy" => {
            "several rules matched, but the hit policy is UNIQUE".to_owned()
        }
        "err_all_matching_rules_must_have_the_same_value" => {
            "the matching rules give different outputs, but the hit policy is ANY".to_owned()
        }
        _ => format!("{} (hit policy {hit_policy:?})", abbreviate(trace)),
    }
}

fn abbreviate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

/// A decision as read, before its requirements are resolved.
struct Draft {
    id: String,
    pos: Position,
    result_name: String,
    /// (required decision id, position of the `requiredDecision`).
    required: Vec<(String, Position)>,
    /// `None` when the logic had errors (already reported).
    logic: Option<Logic>,
}

fn parse_model(bytes: &[u8]) -> Result<DecisionModel, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let root = xml::read(bytes, Limits::default(), &mut diagnostics);
    let root = match root {
        Some(root) if !has_errors(&diagnostics) => root,
        _ => return Err(diagnostics),
    };
    let Some(ns) = root.ns.as_deref().filter(|ns| root.local == "definitions" && DMN_NAMESPACES.contains(ns))
    else {
        let message = format!(
            "the root element is <{}>{}, not a DMN <definitions> (Camunda Modeler writes the namespace {})",
            root.qname,
            root.ns.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default(),
            DMN_NAMESPACES[0]
        );
        return Err(vec![Diagnostic::error(NOT_DMN, message).at(root.pos)]);
    };
    if let Some(language) = root.attr("expressionLanguage").filter(|language| !is_feel(language)) {
        let message =
            format!("expression language '{language}' is not supported; govflow evaluates FEEL only");
        return Err(vec![Diagnostic::error(Code::Unsupported, message).at(root.pos)]);
    }
    let drafts: Vec<Draft> = children(&root, ns, "decision")
        .filter_map(|node| read_decision(ns, node, &mut diagnostics))
        .collect();
    let decisions = link(drafts, &mut diagnostics);
    if has_errors(&diagnostics) {
        return Err(diagnostics);
    }
    Ok(DecisionModel { decisions })
}

fn children<'a>(node: &'a Node, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
    node.children.iter().filter(move |child| child.is(ns, local))
}

fn child<'a>(node: &'a Node, ns: &str, local: &str) -> Option<&'a Node> {
    node.children.iter().find(|child| child.is(ns, local))
}

/// The text of `node`'s `<text>` child, trimmed; empty when there is none.
fn text_of(node: &Node, ns: &str) -> String {
    child(node, ns, "text").map(|text| text.text.trim().to_owned()).unwrap_or_default()
}

fn is_feel(language: &str) -> bool {
    language.to_ascii_lowercase().contains("feel")
}

/// Reports an error about `node`, naming its id when it has one.
fn report(diagnostics: &mut Vec<Diagnostic>, code: Code, node: &Node, message: String) {
    let mut diagnostic = Diagnostic::error(code, message).at(node.pos);
    if let Some(id) = node.attr("id") {
        diagnostic = diagnostic.on(&ElementId::new(id));
    }
    diagnostics.push(diagnostic);
}

/// Decision logic elements of DMN that govflow does not evaluate.
const UNSUPPORTED_LOGIC: &[&str] = &[
    "context",
    "invocation",
    "list",
    "relation",
    "functionDefinition",
    "conditional",
    "filter",
    "for",
    "every",
    "some",
];

fn read_decision(ns: &str, node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<Draft> {
    let Some(id) = node.attr("id").filter(|id| !id.trim().is_empty()) else {
        report(diagnostics, Code::MissingAttribute, node, "a decision has no id".to_owned());
        return None;
    };
    let result_name = child(node, ns, "variable")
        .and_then(|variable| variable.attr("name"))
        .filter(|name| !name.trim().is_empty())
        .unwrap_or(id)
        .to_owned();
    let mut required = Vec::new();
    for requirement in children(node, ns, "informationRequirement") {
        let Some(reference) = child(requirement, ns, "requiredDecision") else { continue };
        match reference.attr("href").unwrap_or_default().split_once('#') {
            Some(("", required_id)) if !required_id.is_empty() => {
                required.push((required_id.to_owned(), reference.pos));
            }
            Some((namespace, _)) if !namespace.is_empty() => report(
                diagnostics,
                Code::Unsupported,
                reference,
                format!(
                    "decision '{id}' requires a decision of another file ({namespace}); imports are not \
                     supported"
                ),
            ),
            _ => report(
                diagnostics,
                Code::MissingAttribute,
                reference,
                format!("a requiredDecision of decision '{id}' has no href of the form \"#decision-id\""),
            ),
        }
    }
    if let Some(requirement) = child(node, ns, "knowledgeRequirement") {
        report(
            diagnostics,
            Code::Unsupported,
            requirement,
            format!("decision '{id}' requires a business knowledge model; these are not supported"),
        );
    }
    let logic = if let Some(table) = child(node, ns, "decisionTable") {
        read_table(ns, id, table, diagnostics).map(Logic::Table)
    } else if let Some(literal) = child(node, ns, "literalExpression") {
        read_literal(ns, id, literal, diagnostics).map(Logic::Literal)
    } else {
        let other = node.children.iter().find(|child| {
            child.ns.as_deref() == Some(ns) && UNSUPPORTED_LOGIC.contains(&child.local.as_str())
        });
        let message = match other {
            Some(other) => format!(
                "decision '{id}' is a {}; govflow evaluates decision tables and literal expressions only",
                other.local
            ),
            None => {
                format!("decision '{id}' has no decision logic (a decision table or a literal expression)")
            }
        };
        report(diagnostics, Code::Unsupported, other.unwrap_or(node), message);
        None
    };
    Some(Draft { id: id.to_owned(), pos: node.pos, result_name, required, logic })
}

fn read_literal(
    ns: &str,
    id: &str,
    node: &Node,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<FeelExpression> {
    if let Some(language) = node.attr("expressionLanguage").filter(|language| !is_feel(language)) {
        let message = format!("decision '{id}': expression language '{language}' is not supported; use FEEL");
        report(diagnostics, Code::Unsupported, node, message);
        return None;
    }
    let text = text_of(node, ns);
    let checked = check_text(&text, Kind::Expression).and_then(|()| {
        crate::feel::parse_expression(&text).map_err(|error| format!("is not valid FEEL: {}", error.message))
    });
    match checked {
        Ok(expression) => Some(expression),
        Err(message) => {
            let message = format!("decision '{id}': literal expression '{text}' {message}");
            report(diagnostics, Code::InvalidFeel, node, message);
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Expression,
    UnaryTests,
}

/// One FEEL text of a table, with what to say about it when it is wrong.
struct Cell<'a> {
    text: String,
    kind: Kind,
    node: &'a Node,
    /// "input 'Income' of rule 3 (DecisionRule_1)", for messages.
    place: String,
}

fn read_table(ns: &str, id: &str, node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<Table> {
    let n_errors = diagnostics.len();
    let hit_policy = read_hit_policy(id, node, diagnostics);
    let mut cells: Vec<Cell<'_>> = Vec::new();
    let mut input_clauses = Vec::new();
    let mut labels = Vec::new();
    for (n, input) in children(node, ns, "input").enumerate() {
        let expression = child(input, ns, "inputExpression");
        let text = expression.map(|expression| text_of(expression, ns)).unwrap_or_default();
        let label = input.attr("label").filter(|label| !label.trim().is_empty()).map_or_else(
            || if text.is_empty() { format!("#{}", n + 1) } else { text.clone() },
            str::to_owned,
        );
        if let Some(language) = expression.and_then(|expression| expression.attr("expressionLanguage")) {
            if !is_feel(language) {
                let message = format!(
                    "decision '{id}', input '{label}': expression language '{language}' is not supported; \
                     use FEEL"
                );
                report(diagnostics, Code::Unsupported, input, message);
            }
        }
        let place = format!("decision '{id}', input '{label}': input expression");
        cells.push(Cell {
            text: text.clone(),
            kind: Kind::Expression,
            node: expression.unwrap_or(input),
            place,
        });
        // Zeebe ignores `inputValues` (they guide the modeler); dsntk would refuse other values.
        input_clauses.push(InputClause { input_expression: text, allowed_input_values: None });
        labels.push(label);
    }
    let orders_by_output_values = matches!(hit_policy, Some(HitPolicy::Priority | HitPolicy::OutputOrder));
    let mut output_clauses = Vec::new();
    let mut output_labels = Vec::new();
    let mut output_names: BTreeSet<String> = BTreeSet::new();
    let outputs: Vec<&Node> = children(node, ns, "output").collect();
    if outputs.is_empty() {
        report(
            diagnostics,
            INVALID_DECISION,
            node,
            format!("the decision table of decision '{id}' has no output"),
        );
    }
    for (n, output) in outputs.iter().enumerate() {
        let name = output.attr("name").map(str::trim).filter(|name| !name.is_empty());
        let label = name.or(output.attr("label")).map_or_else(|| format!("#{}", n + 1), str::to_owned);
        match name {
            None if outputs.len() > 1 => report(
                diagnostics,
                Code::MissingAttribute,
                output,
                format!(
                    "decision '{id}', output '{label}' has no name; a table with several outputs needs one \
                     per output"
                ),
            ),
            Some(name) if !output_names.insert(name.to_owned()) => report(
                diagnostics,
                INVALID_DECISION,
                output,
                format!("decision '{id}' has two outputs named '{name}'"),
            ),
            _ => {}
        }
        if let Some(default) = child(output, ns, "defaultOutputEntry") {
            let message = format!(
                "decision '{id}', output '{label}': default output entries are not supported; add a last \
                 rule matching anything (hit policy FIRST)"
            );
            report(diagnostics, Code::Unsupported, default, message);
        }
        let output_values = child(output, ns, "outputValues")
            .map(|values| text_of(values, ns))
            .filter(|values| orders_by_output_values && !values.is_empty());
        if let Some(values) = &output_values {
            let place = format!("decision '{id}', output '{label}': output values");
            cells.push(Cell { text: values.clone(), kind: Kind::UnaryTests, node: output, place });
        }
        output_labels.push(label);
        output_clauses.push(OutputClause {
            type_ref: None,
            name: name.map(str::to_owned),
            allowed_output_values: output_values,
            default_output_entry: None,
        });
    }
    if output_clauses.len() > 1
        && matches!(hit_policy, Some(HitPolicy::Collect(aggregator)) if aggregator != BuiltinAggregator::List)
    {
        let message = format!("decision '{id}': COLLECT with an aggregation needs a single output");
        report(diagnostics, INVALID_DECISION, node, message);
    }
    let mut rules = Vec::new();
    for (n, rule) in children(node, ns, "rule").enumerate() {
        let rule_name =
            format!("rule {}{}", n + 1, rule.attr("id").map(|id| format!(" ({id})")).unwrap_or_default());
        let input_entries: Vec<&Node> = children(rule, ns, "inputEntry").collect();
        let output_entries: Vec<&Node> = children(rule, ns, "outputEntry").collect();
        if input_entries.len() != input_clauses.len() || output_entries.len() != output_clauses.len() {
            let message = format!(
                "decision '{id}', {rule_name}: {} input and {} output entries, but the table has {} \
                 inputs and {} outputs",
                input_entries.len(),
                output_entries.len(),
                input_clauses.len(),
                output_clauses.len()
            );
            report(diagnostics, INVALID_DECISION, rule, message);
            continue;
        }
        let mut rule_inputs = Vec::new();
        for (entry, label) in input_entries.iter().zip(&labels) {
            let text = text_of(entry, ns);
            // Camunda Modeler writes an empty cell for "-".
            let text = if text.is_empty() { "-".to_owned() } else { text };
            let place = format!("decision '{id}', {rule_name}, input '{label}'");
            cells.push(Cell { text: text.clone(), kind: Kind::UnaryTests, node: entry, place });
            rule_inputs.push(InputEntry { text });
        }
        let mut rule_outputs = Vec::new();
        for (entry, label) in output_entries.iter().zip(&output_labels) {
            let text = text_of(entry, ns);
            let text = if text.is_empty() { "null".to_owned() } else { text };
            let place = format!("decision '{id}', {rule_name}, output '{label}'");
            cells.push(Cell { text: text.clone(), kind: Kind::Expression, node: entry, place });
            rule_outputs.push(OutputEntry { text });
        }
        rules.push(DecisionRule {
            input_entries: rule_inputs,
            output_entries: rule_outputs,
            annotation_entries: vec![],
        });
    }
    let names = TableNames::of(&cells);
    let scope = names.parse_scope();
    let mut input_asts = Vec::new();
    for (n, cell) in cells.iter().enumerate() {
        match parse_cell(&scope, cell) {
            // The first cells are the input expressions, one per input.
            Ok(ast) if n < labels.len() => input_asts.push(ast),
            Ok(_) => {}
            Err(message) => {
                let message = format!("{}: '{}' {message}", cell.place, cell.text);
                report(diagnostics, Code::InvalidFeel, cell.node, message);
            }
        }
    }
    let hit_policy = hit_policy?;
    if diagnostics.len() > n_errors {
        return None;
    }
    let n_rules = rules.len();
    let table = DecisionTable::new(
        None,
        input_clauses,
        output_clauses,
        vec![],
        rules,
        hit_policy,
        None,
        DecisionTableOrientation::RuleAsRow,
        None,
    );
    let built = catch_unwind(AssertUnwindSafe(|| {
        dsntk_model_evaluator::build_decision_table_evaluator(&scope, &table)
    }));
    let evaluator = match built {
        Ok(Ok(evaluator)) => evaluator,
        Ok(Err(error)) => {
            let message = format!(
                "decision '{id}': the decision table cannot be prepared: {}",
                clean_message(&error.to_string())
            );
            report(diagnostics, Code::InvalidFeel, node, message);
            return None;
        }
        Err(_) => {
            let message = format!("decision '{id}': the decision table cannot be prepared");
            report(diagnostics, Code::InvalidFeel, node, message);
            return None;
        }
    };
    let inputs = labels.into_iter().zip(input_asts.iter().map(dsntk_feel_evaluator::prepare)).collect();
    Some(Table { hit_policy, names: names.bound, inputs, evaluator, n_rules })
}

fn read_hit_policy(id: &str, node: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<HitPolicy> {
    let hit_policy = match node.attr("hitPolicy").map(str::trim).unwrap_or("UNIQUE") {
        "UNIQUE" => HitPolicy::Unique,
        "FIRST" => HitPolicy::First,
        "PRIORITY" => HitPolicy::Priority,
        "ANY" => HitPolicy::Any,
        "RULE ORDER" => HitPolicy::RuleOrder,
        "OUTPUT ORDER" => HitPolicy::OutputOrder,
        "COLLECT" => match node.attr("aggregation").map(str::trim) {
            None => HitPolicy::Collect(BuiltinAggregator::List),
            Some("SUM") => HitPolicy::Collect(BuiltinAggregator::Sum),
            Some("MIN") => HitPolicy::Collect(BuiltinAggregator::Min),
            Some("MAX") => HitPolicy::Collect(BuiltinAggregator::Max),
            Some("COUNT") => HitPolicy::Collect(BuiltinAggregator::Count),
            Some(other) => {
                let message =
                    format!("decision '{id}': aggregation '{other}' is not one of SUM, MIN, MAX, COUNT");
                report(diagnostics, Code::InvalidAttribute, node, message);
                return None;
            }
        },
        other => {
            let message = format!(
                "decision '{id}': hit policy '{other}' is not one of UNIQUE, FIRST, PRIORITY, ANY, COLLECT, \
                 RULE ORDER, OUTPUT ORDER"
            );
            report(diagnostics, Code::InvalidAttribute, node, message);
            return None;
        }
    };
    if node.attr("aggregation").is_some() && !matches!(hit_policy, HitPolicy::Collect(_)) {
        let message = format!("decision '{id}': an aggregation is only allowed with hit policy COLLECT");
        report(diagnostics, Code::InvalidAttribute, node, message);
        return None;
    }
    Some(hit_policy)
}

/// Resolves requirements and ranks the decisions; refuses duplicate ids, dangling references and cycles.
/// Decisions are built only when every draft has its logic (otherwise errors were reported).
fn link(drafts: Vec<Draft>, diagnostics: &mut Vec<Diagnostic>) -> Vec<Decision> {
    let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, draft) in drafts.iter().enumerate() {
        if index_of.insert(draft.id.as_str(), index).is_some() {
            let message = format!("two decisions have the id '{}'", draft.id);
            diagnostics.push(
                Diagnostic::error(Code::DuplicateId, message).at(draft.pos).on(&ElementId::new(&draft.id)),
            );
        }
    }
    let mut required: Vec<Vec<usize>> = Vec::new();
    for draft in &drafts {
        let mut direct = Vec::new();
        for (required_id, pos) in &draft.required {
            match index_of.get(required_id.as_str()) {
                Some(&index) if !direct.contains(&index) => direct.push(index),
                Some(_) => {}
                None => diagnostics.push(
                    Diagnostic::error(
                        Code::DanglingReference,
                        format!(
                            "decision '{}' requires decision '{required_id}', which is not in this file",
                            draft.id
                        ),
                    )
                    .at(*pos)
                    .on(&ElementId::new(&draft.id)),
                ),
            }
        }
        required.push(direct);
    }
    let ranks = match ranks(&required) {
        Ok(ranks) => ranks,
        Err(cyclic) => {
            let ids: Vec<String> = cyclic.iter().map(|&index| format!("'{}'", drafts[index].id)).collect();
            let message = format!(
                "the requirements of decisions {} form a cycle; a decision cannot require itself, even \
                 indirectly",
                ids.join(", ")
            );
            let first = &drafts[cyclic[0]];
            diagnostics.push(
                Diagnostic::error(INVALID_DECISION, message).at(first.pos).on(&ElementId::new(&first.id)),
            );
            return Vec::new();
        }
    };
    let mut decisions = Vec::new();
    for ((draft, required), rank) in drafts.into_iter().zip(required).zip(ranks) {
        let Some(logic) = draft.logic else { return Vec::new() };
        decisions.push(Decision { id: draft.id, result_name: draft.result_name, required, rank, logic });
    }
    decisions
}

/// Kahn's algorithm over the "requires" edges: each decision's position in an order where it comes after
/// everything it requires; on a cycle, the decisions that could not be placed (those on or after a cycle).
fn ranks(required: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); required.len()];
    for (dependent, needs) in required.iter().enumerate() {
        for &needed in needs {
            dependents[needed].push(dependent);
        }
    }
    let mut n_pending: Vec<usize> = required.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..required.len()).filter(|&index| n_pending[index] == 0).rev().collect();
    let mut ranks: Vec<Option<usize>> = vec![None; required.len()];
    let mut n_ranked = 0;
    while let Some(index) = ready.pop() {
        ranks[index] = Some(n_ranked);
        n_ranked += 1;
        for &dependent in &dependents[index] {
            n_pending[dependent] -= 1;
            if n_pending[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    let unranked: Vec<usize> = (0..required.len()).filter(|&index| ranks[index].is_none()).collect();
    if unranked.is_empty() {
        Ok(ranks.into_iter().flatten().collect())
    } else {
        Err(unranked)
    }
}

// ---------------------------------------------------------------------------------------------------------
// FEEL cells

/// The names of a table: dsntk resolves FEEL names against a scope known at parse time (FEEL names may
/// contain spaces and operators, so `a+b` is one name unless `a` and `b` are known), so every identifier
/// of every cell is declared, as [`crate::feel`] does for one expression.
struct TableNames {
    /// Declared for parsing.
    declared: Vec<String>,
    /// Bound at evaluation: the declared names that are never called as functions.
    bound: Vec<String>,
}

impl TableNames {
    fn of(cells: &[Cell<'_>]) -> TableNames {
        let all_text: String = cells.iter().map(|cell| cell.text.as_str()).collect::<Vec<_>>().join("\n");
        let protected: BTreeSet<&str> = crate::feel::MULTI_WORD_BUILTINS
            .iter()
            .filter(|builtin| all_text.contains(*builtin))
            .flat_map(|builtin| builtin.split(' '))
            .collect();
        let mut declared = BTreeSet::new();
        let mut called = BTreeSet::new();
        for cell in cells {
            for word in scan(&cell.text).words {
                let is_identifier = word.text.chars().next().is_some_and(|first| !first.is_ascii_digit());
                if is_identifier
                    && !crate::feel::KEYWORDS.contains(&word.text)
                    && !protected.contains(word.text)
                {
                    declared.insert(word.text.to_owned());
                }
                if word.called {
                    called.insert(word.text.to_owned());
                }
            }
        }
        let bound = declared.iter().filter(|name| !called.contains(*name)).cloned().collect();
        TableNames { declared: declared.into_iter().collect(), bound }
    }

    fn parse_scope(&self) -> FeelScope {
        let scope = FeelScope::default();
        scope.push(FeelContext::default());
        for name in &self.declared {
            scope.set_name(Name::from(name.as_str()));
        }
        scope
    }
}

/// Refuses what evaluation must never meet, then parses with dsntk as the table will. The error completes
/// "'<text>' ...".
fn parse_cell(scope: &FeelScope, cell: &Cell<'_>) -> Result<AstNode, String> {
    check_text(&cell.text, cell.kind)?;
    let parsed = catch_unwind(AssertUnwindSafe(|| match cell.kind {
        Kind::Expression => dsntk_feel_parser::parse_expression(scope, &cell.text, false),
        Kind::UnaryTests => dsntk_feel_parser::parse_unary_tests(scope, &cell.text, false),
    }));
    let ast = match parsed {
        Ok(Ok(ast)) => ast,
        Ok(Err(error)) => return Err(format!("is not valid FEEL: {}", clean_message(&error.to_string()))),
        Err(_) => return Err("is not valid FEEL: the FEEL parser failed on this text".to_owned()),
    };
    if eval::deeper_than(&ast, MAX_AST_DEPTH - TABLE_WRAPPING) {
        return Err(format!(
            "is refused: it is nested more than {} levels deep; split it into several steps",
            MAX_AST_DEPTH - TABLE_WRAPPING
        ));
    }
    if cell.kind == Kind::UnaryTests && is_boolean_test(&ast) {
        return Err("is refused: an input entry that is a comparison or a boolean expression is compared \
                    with the input value, not taken as the test; write a unary test (`> 3`, `[1..5]`) or \
                    move the condition into the input expression"
            .to_owned());
    }
    Ok(ast)
}

/// Unary tests one of whose items is a comparison or boolean operator (see the module's docs).
fn is_boolean_test(ast: &AstNode) -> bool {
    let items = match ast {
        AstNode::ExpressionList(items) | AstNode::NegatedList(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    items.iter().any(|item| {
        matches!(
            item,
            AstNode::And(..)
                | AstNode::Or(..)
                | AstNode::Eq(..)
                | AstNode::Nq(..)
                | AstNode::Lt(..)
                | AstNode::Le(..)
                | AstNode::Gt(..)
                | AstNode::Ge(..)
                | AstNode::Between(..)
                | AstNode::In(..)
                | AstNode::InstanceOf(..)
                | AstNode::Every(..)
                | AstNode::Some(..)
        )
    })
}

/// The text-level limits and refusals, before any parsing. The error completes "'<text>' ...".
fn check_text(text: &str, kind: Kind) -> Result<(), String> {
    refusal(text, kind).map_err(|reason| format!("is refused: {reason}"))
}

fn refusal(text: &str, kind: Kind) -> Result<(), String> {
    if text.is_empty() {
        return Err("the expression is empty".to_owned());
    }
    if text.len() > MAX_LENGTH {
        return Err(format!("it is longer than {MAX_LENGTH} bytes"));
    }
    let shape = scan(text);
    if shape.deepest > MAX_NESTING {
        return Err(format!("brackets are nested more than {MAX_NESTING} deep"));
    }
    if shape.n_tokens > MAX_TOKENS {
        return Err(format!("it has more than {MAX_TOKENS} terms; split it into several steps"));
    }
    if shape.longest_path > MAX_PATH_SEGMENTS {
        return Err(format!("a path has more than {MAX_PATH_SEGMENTS} segments"));
    }
    for word in &shape.words {
        match word.text {
            // User-defined functions allow unbounded recursion in the evaluator.
            "function" => return Err("function definitions are not allowed in decisions".to_owned()),
            // dsntk can call out to Java/PMML services from `function() external {...}`.
            "external" => return Err("external functions are not allowed in decisions".to_owned()),
            "now" | "today" if word.called => {
                return Err(format!(
                "{}() is not available in decisions, whose evaluation reads no clock; pass the date or time \
                     as a variable",
                word.text
            ))
            }
            _ => {}
        }
    }
    if kind == Kind::UnaryTests && shape.has_placeholder {
        return Err("the input-value placeholder `?` is not supported; write a unary test (`> 3`, `[1..5]`)"
            .to_owned());
    }
    Ok(())
}

/// What [`scan`] finds in a FEEL text, outside string literals.
#[derive(Debug, Default)]
struct Shape<'a> {
    words: Vec<Word<'a>>,
    n_tokens: usize,
    deepest: usize,
    longest_path: usize,
    /// A `?` occurs.
    has_placeholder: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word<'a> {
    text: &'a str,
    /// Followed by `(`: a function call.
    called: bool,
}

/// One pass over `text`: its identifier-like words, token count, bracket nesting and longest dotted path.
fn scan(text: &str) -> Shape<'_> {
    let mut shape = Shape::default();
    let mut depth = 0usize;
    let mut path = 0usize;
    let mut word_start: Option<usize> = None;
    let mut in_string = false;
    let mut escaped = false;
    for (at, ch) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if ch.is_alphanumeric() || ch == '_' || ch == '$' {
            if word_start.is_none() {
                word_start = Some(at);
                shape.n_tokens += 1;
                path = path.max(1);
            }
            continue;
        }
        if let Some(start) = word_start.take() {
            let called = text[at..].trim_start().starts_with('(');
            shape.words.push(Word { text: &text[start..at], called });
        }
        match ch {
            '.' => path += 1,
            c if c.is_whitespace() => {}
            c => {
                shape.n_tokens += 1;
                path = 0;
                match c {
                    '"' => in_string = true,
                    '?' => shape.has_placeholder = true,
                    '(' | '[' | '{' => {
                        depth += 1;
                        shape.deepest = shape.deepest.max(depth);
                    }
                    ')' | ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        shape.longest_path = shape.longest_path.max(path);
    }
    shape
}

/// dsntk prefixes messages with the error type (`<ParserError> syntax error: ...`); keep the words.
fn clean_message(message: &str) -> String {
    let message = match message.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((_, rest)) => rest.trim(),
        None => message.trim(),
    };
    abbreviate(message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn model(file: &str) -> DecisionModel {
        let path = format!("{}/test_data/dmn/{file}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        DecisionModel::parse(&bytes).unwrap_or_else(|diagnostics| panic!("{file}: {diagnostics:#?}"))
    }

    fn variables(value: Json) -> Variables {
        match value {
            Json::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn eval(model: &DecisionModel, decision: &str, input: Json) -> Result<Json, String> {
        model.evaluate(decision, &variables(input))
    }

    fn escape(text: &str) -> String {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }

    /// A one-decision file (id `d`) with a decision table: inputs are input expressions, outputs names.
    fn table(hit_policy: &str, inputs: &[&str], outputs: &[&str], rules: &[(&[&str], &[&str])]) -> String {
        let mut xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="defs" name="Test" namespace="test">
  <decision id="d" name="D">
    <decisionTable id="table" {hit_policy}>
"#
        );
        for (n, input) in inputs.iter().enumerate() {
            xml += &format!(
                "      <input id='in{n}' label='{input}'><inputExpression id='ie{n}'><text>{}</text></inputExpression></input>\n",
                escape(input)
            );
        }
        for (n, output) in outputs.iter().enumerate() {
            xml += &format!("      <output id=\"out{n}\" {output} />\n");
        }
        for (n, (ins, outs)) in rules.iter().enumerate() {
            xml += &format!("      <rule id=\"r{n}\">\n");
            for (m, text) in ins.iter().enumerate() {
                xml += &format!(
                    "        <inputEntry id=\"r{n}i{m}\"><text>{}</text></inputEntry>\n",
                    escape(text)
                );
            }
            for (m, text) in outs.iter().enumerate() {
                xml += &format!(
                    "        <outputEntry id=\"r{n}o{m}\"><text>{}</text></outputEntry>\n",
                    escape(text)
                );
            }
            xml += "      </rule>\n";
        }
        xml + "    </decisionTable>\n  </decision>\n</definitions>\n"
    }

    fn parse_str(xml: &str) -> DecisionModel {
        DecisionModel::parse(xml.as_bytes()).unwrap_or_else(|diagnostics| panic!("{diagnostics:#?}\n{xml}"))
    }

    fn errors(xml: &str) -> Vec<Diagnostic> {
        match DecisionModel::parse(xml.as_bytes()) {
            Ok(model) => panic!("parsed, expected errors: {model:?}\n{xml}"),
            Err(diagnostics) => {
                assert!(!diagnostics.is_empty());
                diagnostics
            }
        }
    }

    #[test]
    fn decision_model_is_send_sync_and_debug() {
        fn check<T: Send + Sync + fmt::Debug>() {}
        check::<DecisionModel>();
    }

    #[test]
    fn farmer_relief_eligibility() {
        let model = model("farmer-relief-eligibility.dmn");
        assert_eq!(model.decision_ids(), ["farmer-relief-eligibility"]);
        let not_eligible = json!({"amount": 0, "eligible": false});
        let cases = [
            // total damage: 20000 + 2000 per member, at most 30000, below an income of 100000
            (
                json!({"income": 50000, "householdSize": 3, "damageLevel": "total"}),
                json!({"amount": 26000, "eligible": true}),
            ),
            (
                json!({"income": 99999.99, "householdSize": 1, "damageLevel": "total"}),
                json!({"amount": 22000, "eligible": true}),
            ),
            (json!({"income": 100000, "householdSize": 3, "damageLevel": "total"}), not_eligible.clone()),
            (
                json!({"income": 0, "householdSize": 5, "damageLevel": "total"}),
                json!({"amount": 30000, "eligible": true}),
            ),
            (
                json!({"income": 0, "householdSize": 9, "damageLevel": "total"}),
                json!({"amount": 30000, "eligible": true}),
            ),
            (json!({"income": 0, "householdSize": 0, "damageLevel": "total"}), not_eligible.clone()),
            // partial damage: flat 10000 below an income of 60000, whatever the household
            (json!({"income": 59999, "damageLevel": "partial"}), json!({"amount": 10000, "eligible": true})),
            (json!({"income": 60000, "householdSize": 2, "damageLevel": "partial"}), not_eligible.clone()),
            (json!({"income": 1000, "householdSize": 2, "damageLevel": "none"}), not_eligible.clone()),
            // missing or mistyped inputs are null: only the catch-all rule matches
            (json!({"householdSize": 2, "damageLevel": "total"}), not_eligible.clone()),
            (json!({}), not_eligible.clone()),
            (json!({"income": "50000", "householdSize": 2, "damageLevel": "total"}), not_eligible.clone()),
        ];
        for (input, expected) in cases {
            assert_eq!(eval(&model, "farmer-relief-eligibility", input.clone()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn single_output_is_the_value_and_no_match_is_null() {
        let model = model("applicant-category.dmn");
        assert_eq!(model.decision_ids(), ["applicant-category"]);
        let cases = [
            (json!({"applicant": {"age": 17.9}}), json!("minor")),
            (json!({"applicant": {"age": 18}}), json!("adult")),
            (json!({"applicant": {"age": 64.5}}), json!("adult")),
            (json!({"applicant": {"age": 65}}), json!("senior")),
            (json!({"applicant": {"name": "Ana"}}), Json::Null),
            (json!({}), Json::Null),
        ];
        for (input, expected) in cases {
            assert_eq!(eval(&model, "applicant-category", input.clone()), Ok(expected), "{input}");
        }
    }

    #[test]
    fn a_failing_input_expression_is_an_error() {
        let model = model("applicant-category.dmn");
        let error = eval(&model, "applicant-category", json!({"applicant": 5})).unwrap_err();
        assert!(
            error.contains("decision 'applicant-category' failed: input 'Age' cannot be evaluated"),
            "{error}"
        );
    }

    #[test]
    fn required_decisions_and_literal_expressions() {
        let model = model("relief-documents.dmn");
        assert_eq!(model.decision_ids(), ["requiredDocuments", "documentCount"]);
        assert_eq!(
            eval(&model, "requiredDocuments", json!({"damageLevel": "total"})),
            Ok(json!(["national ID", "photo of the damage", "land title"]))
        );
        assert_eq!(eval(&model, "documentCount", json!({"damageLevel": "total"})), Ok(json!(3)));
        assert_eq!(eval(&model, "documentCount", json!({"damageLevel": "partial"})), Ok(json!(2)));
        // The required decision's result overrides a variable of the same name.
        assert_eq!(
            eval(&model, "documentCount", json!({"damageLevel": "none", "requiredDocuments": [1, 2, 3, 4]})),
            Ok(json!(1))
        );
    }

    #[test]
    fn hit_policies() {
        let rules: &[(&[&str], &[&str])] =
            &[(&["> 1"], &["\"a\""]), (&["> 2"], &["\"b\""]), (&["> 3"], &["\"a\""])];
        let cases = [
            ("hitPolicy=\"FIRST\"", json!("a")),
            ("hitPolicy=\"RULE ORDER\"", json!(["a", "b", "a"])),
            ("hitPolicy=\"COLLECT\"", json!(["a", "b", "a"])),
            ("hitPolicy=\"PRIORITY\"", json!("b")),
            ("hitPolicy=\"OUTPUT ORDER\"", json!(["b", "a", "a"])),
        ];
        for (hit_policy, expected) in cases {
            let xml = table(hit_policy, &["x"], &["name=\"o\""], rules).replace(
                "<output id=\"out0\" name=\"o\" />",
                "<output id=\"out0\" name=\"o\"><outputValues><text>\"b\",\"a\"</text></outputValues></output>",
            );
            let model = parse_str(&xml);
            assert_eq!(eval(&model, "d", json!({"x": 5})), Ok(expected), "{hit_policy}");
        }
        let numbers: &[(&[&str], &[&str])] = &[(&["> 1"], &["10"]), (&["> 2"], &["5"]), (&["> 9"], &["1"])];
        let cases = [
            ("hitPolicy=\"COLLECT\" aggregation=\"SUM\"", json!(15)),
            ("hitPolicy=\"COLLECT\" aggregation=\"MIN\"", json!(5)),
            ("hitPolicy=\"COLLECT\" aggregation=\"MAX\"", json!(10)),
            ("hitPolicy=\"COLLECT\" aggregation=\"COUNT\"", json!(2)),
        ];
        for (hit_policy, expected) in cases {
            let model = parse_str(&table(hit_policy, &["x"], &["name=\"o\""], numbers));
            assert_eq!(eval(&model, "d", json!({"x": 5})), Ok(expected), "{hit_policy}");
            assert_eq!(eval(&model, "d", json!({"x": 0})), Ok(Json::Null), "{hit_policy}, no rule matched");
        }
    }

    #[test]
    fn unique_and_any_conflicts_are_errors() {
        let rules: &[(&[&str], &[&str])] = &[(&["> 1"], &["1"]), (&["> 2"], &["2"])];
        let unique = parse_str(&table("", &["x"], &["name=\"o\""], rules));
        assert_eq!(eval(&unique, "d", json!({"x": 2})), Ok(json!(1)));
        let error = eval(&unique, "d", json!({"x": 3})).unwrap_err();
        assert_eq!(error, "decision 'd' failed: several rules matched, but the hit policy is UNIQUE");
        let any = parse_str(&table("hitPolicy=\"ANY\"", &["x"], &["name=\"o\""], rules));
        assert!(eval(&any, "d", json!({"x": 3})).unwrap_err().contains("hit policy is ANY"));
        let same: &[(&[&str], &[&str])] = &[(&["> 1"], &["1"]), (&["> 2"], &["1"])];
        let any = parse_str(&table("hitPolicy=\"ANY\"", &["x"], &["name=\"o\""], same));
        assert_eq!(eval(&any, "d", json!({"x": 3})), Ok(json!(1)));
    }

    #[test]
    fn multiple_outputs_are_objects_and_collected_as_arrays_of_objects() {
        let rules: &[(&[&str], &[&str])] = &[(&["> 1"], &["1", "\"one\""]), (&["> 2"], &["2", ""])];
        let outputs = ["name=\"n\"", "name=\"label\""];
        let first = parse_str(&table("hitPolicy=\"FIRST\"", &["x"], &outputs, rules));
        assert_eq!(eval(&first, "d", json!({"x": 5})), Ok(json!({"label": "one", "n": 1})));
        let collect = parse_str(&table("hitPolicy=\"COLLECT\"", &["x"], &outputs, rules));
        assert_eq!(
            eval(&collect, "d", json!({"x": 5})),
            Ok(json!([{"label": "one", "n": 1}, {"label": null, "n": 2}]))
        );
        assert_eq!(eval(&collect, "d", json!({"x": 0})), Ok(Json::Null));
    }

    #[test]
    fn feel_in_cells() {
        let cases: &[(&str, &str, &str, Json, Json)] = &[
            // (input expression, input entry, output entry, variables, result)
            ("x", "[1..5]", "x * 2", json!({"x": 5}), json!(10)),
            ("x", "(1..5]", "x * 2", json!({"x": 1}), Json::Null),
            ("x", "< 5, > 10", "\"outside\"", json!({"x": 11}), json!("outside")),
            ("x", "not(\"a\", \"b\")", "upper case(x)", json!({"x": "c"}), json!("C")),
            ("x", "-", "x", json!({"x": null}), Json::Null),
            ("x", "null", "\"none\"", json!({}), json!("none")),
            ("count(items)", ">= 2", "sum(items)", json!({"items": [1, 2, 3]}), json!(6)),
            (
                "date(day)",
                "< date(\"2025-01-01\")",
                "string(date(day) + duration(\"P1D\"))",
                json!({"day": "2024-12-31"}),
                json!("2025-01-01"),
            ),
            (
                "applicant.income - applicant.costs",
                "> 0",
                "{net: applicant.income - applicant.costs}",
                json!({"applicant": {"income": 10, "costs": 4}}),
                json!({"net": 6}),
            ),
            ("flag", "true", "0.1 + 0.2", json!({"flag": true}), json!(0.3)),
            (
                "x",
                "-",
                "date and time(\"2027-01-01T10:00:00Z\") > date and time(\"2026-01-01T10:00:00Z\")",
                json!({}),
                json!(true),
            ),
        ];
        for (input, entry, output, variables, expected) in cases {
            let model =
                parse_str(&table("hitPolicy=\"FIRST\"", &[input], &["name=\"o\""], &[(&[entry], &[output])]));
            assert_eq!(
                eval(&model, "d", variables.clone()),
                Ok(expected.clone()),
                "{input} / {entry} / {output}"
            );
        }
    }

    #[test]
    fn a_failing_output_entry_fails_only_when_its_rule_matched() {
        let rules: &[(&[&str], &[&str])] = &[(&["> 10"], &["1 / 0"]), (&["-"], &["2"])];
        let model = parse_str(&table("hitPolicy=\"FIRST\"", &["x"], &["name=\"o\""], rules));
        assert_eq!(eval(&model, "d", json!({"x": 5})), Ok(json!(2)));
        let error = eval(&model, "d", json!({"x": 11})).unwrap_err();
        assert!(error.contains("division by zero"), "{error}");
    }

    #[test]
    fn evaluation_is_deterministic() {
        let model = model("farmer-relief-eligibility.dmn");
        let input = json!({"income": 50000, "householdSize": 3, "damageLevel": "total", "unused": [1, {"b": 2, "a": 1}]});
        let first = eval(&model, "farmer-relief-eligibility", input.clone()).unwrap().to_string();
        for _ in 0..3 {
            assert_eq!(eval(&model, "farmer-relief-eligibility", input.clone()).unwrap().to_string(), first);
        }
        assert_eq!(first, r#"{"amount":26000,"eligible":true}"#);
        let again = self::model("farmer-relief-eligibility.dmn");
        assert_eq!(eval(&again, "farmer-relief-eligibility", input).unwrap().to_string(), first);
    }

    #[test]
    fn unknown_decision_is_an_error() {
        let model = model("relief-documents.dmn");
        assert_eq!(
            eval(&model, "nope", json!({})),
            Err("the DMN file has no decision 'nope' (its decisions: requiredDocuments, documentCount)"
                .to_owned())
        );
    }

    #[test]
    fn malformed_or_foreign_files_are_diagnostics() {
        let cases: &[(&[u8], Code)] = &[
            (b"", Code::MalformedXml),
            (b"<definitions", Code::MalformedXml),
            (b"\xff\xfe\x00garbage", Code::MalformedXml),
            (b"not xml at all", Code::MalformedXml),
            (b"<a><b></a>", Code::MalformedXml),
            (b"<definitions xmlns=\"http://www.omg.org/spec/BPMN/20100524/MODEL\"/>", NOT_DMN),
            (b"<definitions/>", NOT_DMN),
            (b"<!DOCTYPE d [<!ENTITY x 'y'>]><definitions xmlns='urn:x'>&x;</definitions>", Code::DtdRefused),
        ];
        for (bytes, code) in cases {
            let diagnostics = DecisionModel::parse(bytes).unwrap_err();
            assert!(
                diagnostics.iter().any(|d| d.code == *code),
                "{}: {diagnostics:#?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn invalid_feel_names_the_cell_and_its_line() {
        let xml =
            table("hitPolicy=\"FIRST\"", &["x"], &["name=\"o\""], &[(&["-"], &["1"]), (&["[1.."], &["1"])]);
        let diagnostics = errors(&xml);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let diagnostic = &diagnostics[0];
        assert_eq!(diagnostic.code, Code::InvalidFeel);
        assert_eq!(diagnostic.element, Some(ElementId::new("r1i0")));
        assert_eq!(diagnostic.pos.line, 12);
        assert!(
            diagnostic.message.starts_with("decision 'd', rule 2 (r1), input 'x': '[1..' is not valid FEEL"),
            "{}",
            diagnostic.message
        );
    }

    #[test]
    fn refused_cells() {
        let deep = vec!["1"; 150].join(" + ");
        let long_sum = vec!["1"; 600].join(" + ");
        let cases: Vec<(&str, &str, String, &str)> = vec![
            // (input expression, input entry, output entry, expected in the message)
            ("x", "-", "now()".to_owned(), "now() is not available"),
            ("today()", "-", "1".to_owned(), "today() is not available"),
            ("x", "? > 3", "1".to_owned(), "placeholder `?`"),
            ("x", "x > 3", "1".to_owned(), "comparison or a boolean expression"),
            ("x", "x > 1 and x < 3", "1".to_owned(), "comparison or a boolean expression"),
            ("x", "-", "function(a) a".to_owned(), "function definitions"),
            ("x", "-", "{f: function() external {java: {}}}".to_owned(), "function definitions"),
            ("x", "-", deep, "nested more than"),
            ("x", "-", long_sum, "more than 1000 terms"),
            ("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q", "-", "1".to_owned(), "more than 16 segments"),
            ("", "-", "1".to_owned(), "is empty"),
            ("x", "-", "1 +".to_owned(), "not valid FEEL"),
        ];
        for (input, entry, output, expected) in cases {
            let xml =
                table("hitPolicy=\"FIRST\"", &[input], &["name=\"o\""], &[(&[entry], &[output.as_str()])]);
            let diagnostics = errors(&xml);
            assert!(
                diagnostics.iter().any(|d| d.code == Code::InvalidFeel && d.message.contains(expected)),
                "{input} / {entry} / {output}: {diagnostics:#?}"
            );
        }
    }

    #[test]
    fn invalid_structure_is_reported_with_every_error() {
        let two_unnamed = table("", &["x"], &["label=\"A\"", "label=\"B\""], &[(&["-"], &["1", "2"])]);
        assert!(errors(&two_unnamed).iter().filter(|d| d.code == Code::MissingAttribute).count() == 2);
        let short_rule = table("", &["x", "y"], &["name=\"o\""], &[(&["-"], &["1"])]);
        assert!(errors(&short_rule)[0]
            .message
            .contains("1 input and 1 output entries, but the table has 2 inputs and 1 outputs"));
        let bad_policy = table("hitPolicy=\"SOMETIMES\"", &["x"], &["name=\"o\""], &[]);
        assert_eq!(errors(&bad_policy)[0].code, Code::InvalidAttribute);
        let bad_aggregation =
            table("hitPolicy=\"COLLECT\" aggregation=\"AVG\"", &["x"], &["name=\"o\""], &[]);
        assert!(errors(&bad_aggregation)[0].message.contains("aggregation 'AVG'"));
        let no_output = table("", &["x"], &[], &[]);
        assert!(errors(&no_output)[0].message.contains("has no output"));
        let duplicate = format!(
            "{}{}",
            table("", &["x"], &["name=\"o\""], &[]).replace("</definitions>\n", ""),
            "<decision id='d' name='again'><literalExpression><text>1</text></literalExpression></decision></definitions>"
        );
        assert_eq!(errors(&duplicate)[0].code, Code::DuplicateId);
    }

    fn drd(decisions: &str) -> String {
        format!(
            "<definitions xmlns='{}' id='defs' name='Test' namespace='test'>{decisions}</definitions>",
            DMN_NAMESPACES[0]
        )
    }

    fn literal(id: &str, requires: &[&str], text: &str) -> String {
        let requirements: String = requires
            .iter()
            .map(|required| {
                format!(
                    "<informationRequirement><requiredDecision href='#{required}'/></informationRequirement>"
                )
            })
            .collect();
        let logic = format!("<literalExpression><text>{text}</text></literalExpression>");
        format!("<decision id='{id}' name='{id}'>{requirements}{logic}</decision>")
    }

    #[test]
    fn requirements_are_resolved_and_planned() {
        let xml = drd(&[
            literal("total", &["base", "bonus"], "base + bonus"),
            literal("bonus", &["base"], "base * 2"),
            literal("base", &[], "x + 1"),
            literal("unrelated", &[], "1 / 0"),
        ]
        .concat());
        let model = parse_str(&xml);
        assert_eq!(eval(&model, "total", json!({"x": 1})), Ok(json!(6)));
        assert_eq!(eval(&model, "bonus", json!({"x": 1})), Ok(json!(4)));
        let error = eval(&model, "unrelated", json!({})).unwrap_err();
        assert!(error.starts_with("decision 'unrelated' failed:"), "{error}");
        let failing =
            parse_str(&drd(
                &[literal("top", &["bottom"], "bottom"), literal("bottom", &[], "1 / 0")].concat()
            ));
        assert!(eval(&failing, "top", json!({})).unwrap_err().starts_with("decision 'bottom' failed"));
    }

    #[test]
    fn requirement_errors() {
        let dangling = errors(&drd(&literal("a", &["missing"], "1")));
        assert_eq!(dangling[0].code, Code::DanglingReference);
        assert!(dangling[0].message.contains("'missing'"));
        let cycle = errors(&drd(&[literal("a", &["b"], "b"), literal("b", &["a"], "a")].concat()));
        assert!(cycle[0].message.contains("cycle"), "{cycle:#?}");
        let itself = errors(&drd(&literal("a", &["a"], "1")));
        assert!(itself[0].message.contains("cycle"), "{itself:#?}");
    }

    #[test]
    fn unsupported_logic_is_reported() {
        let one = "<literalExpression><text>1</text></literalExpression>";
        let cases = [
            (String::new(), "has no decision logic"),
            ("<context/>".to_owned(), "is a context"),
            (format!("<knowledgeRequirement><requiredKnowledge href='#k'/></knowledgeRequirement>{one}"), "business knowledge model"),
            ("<literalExpression expressionLanguage='javascript'><text>1</text></literalExpression>".to_owned(), "language 'javascript'"),
            (format!("<informationRequirement><requiredDecision href='other.dmn#b'/></informationRequirement>{one}"), "imports are not"),
        ];
        for (logic, expected) in cases {
            let decision = format!("<decision id='a' name='a'>{logic}</decision>");
            let diagnostics = errors(&drd(&decision));
            assert!(diagnostics.iter().any(|d| d.message.contains(expected)), "{decision}: {diagnostics:#?}");
        }
        let default_output = table("", &["x"], &["name=\"o\""], &[]).replace(
            "<output id=\"out0\" name=\"o\" />",
            "<output id=\"out0\" name=\"o\"><defaultOutputEntry><text>0</text></defaultOutputEntry></output>",
        );
        assert!(errors(&default_output)[0].message.contains("default output entries are not supported"));
    }

    #[test]
    fn input_values_are_not_enforced() {
        let xml =
            table("hitPolicy=\"FIRST\"", &["x"], &["name=\"o\""], &[(&["\"a\""], &["1"]), (&["-"], &["2"])])
                .replace(
                    "</inputExpression>",
                    "</inputExpression><inputValues><text>\"a\",\"b\"</text></inputValues>",
                );
        let model = parse_str(&xml);
        assert_eq!(eval(&model, "d", json!({"x": "z"})), Ok(json!(2)));
    }

    #[test]
    fn the_deepest_cells_evaluate_within_one_mebibyte_of_stack() {
        let deepest = vec!["x"; MAX_AST_DEPTH - TABLE_WRAPPING].join(" + ");
        let rules: &[(&[&str], &[&str])] = &[(&["-", "> 0"], &[&deepest])];
        let model = parse_str(&table("hitPolicy=\"FIRST\"", &["x", &deepest], &["name=\"o\""], rules));
        let evaluation = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || model.evaluate("d", &variables(json!({"x": 1}))))
            .unwrap();
        assert_eq!(evaluation.join().unwrap(), Ok(json!(MAX_AST_DEPTH - TABLE_WRAPPING)));
        let too_deep = format!("{deepest} + x");
        let diagnostics = errors(&table("", &["x"], &["name=\"o\""], &[(&["-"], &[&too_deep])]));
        assert!(diagnostics[0].message.contains("nested more than 98 levels"), "{diagnostics:#?}");
    }

    #[test]
    fn never_panics_on_damaged_files() {
        let original = std::fs::read(format!(
            "{}/test_data/dmn/farmer-relief-eligibility.dmn",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let input = variables(json!({"income": 1, "householdSize": 1, "damageLevel": "total"}));
        for cut in (0..original.len()).step_by(41) {
            let _ = DecisionModel::parse(&original[..cut]);
            let mut damaged = original.clone();
            damaged[cut] = b"<>&\"x0 -"[cut % 8];
            if let Ok(model) = DecisionModel::parse(&damaged) {
                let _ = model.evaluate("farmer-relief-eligibility", &input);
            }
        }
    }
}
