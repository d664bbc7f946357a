//! No drift between what the connectors read and what designers are offered: every Camunda element
//! template in `connectors/element-templates/` is parsed and checked against the task contracts the
//! connectors declare (`govflow_connectors::bb::contracts`) — job types, input and header names, outputs,
//! required fields, BPMN errors — and against the rules of the Camunda 8 template schema that matter
//! here; `docs/connectors.md` must name every job type, input, header, output and error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use govflow_connectors::bb::{self, TaskContract};
use govflow_connectors::config::ConnectorsConfig;
use serde_json::Value;

const SCHEMA: &str = "https://unpkg.com/@camunda/zeebe-element-templates-json-schema/resources/schema.json";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every template, with the file it came from.
fn templates() -> Vec<(String, Value)> {
    let dir = root().join("element-templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "one template file per connector in {}", dir.display());
    let mut templates = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|error| panic!("{name} is not JSON: {error}"));
        match value {
            Value::Array(items) => templates.extend(items.into_iter().map(|t| (name.clone(), t))),
            single => templates.push((name, single)),
        }
    }
    templates
}

fn job_type(template: &Value) -> Option<&str> {
    properties(template).find_map(|p| {
        (p["binding"]["type"] == "zeebe:taskDefinition"
            && p["binding"]["property"] == "type"
            && p["type"] == "Hidden")
            .then(|| p["value"].as_str())
            .flatten()
    })
}

fn properties(template: &Value) -> impl Iterator<Item = &Value> {
    template["properties"].as_array().into_iter().flatten()
}

fn contracts() -> BTreeMap<&'static str, TaskContract> {
    bb::contracts().into_iter().map(|contract| (contract.job_type, contract)).collect()
}

#[test]
fn every_task_type_has_one_template_and_every_template_one_task_type() {
    let contracts = contracts();
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (file, template) in templates() {
        let job =
            job_type(&template).unwrap_or_else(|| panic!("{file}: a template without a Hidden task type"));
        assert!(contracts.contains_key(job), "{file}: template for '{job}', which no connector serves");
        assert!(seen.insert(job.to_owned()), "{file}: a second template for '{job}'");
        let id = template["id"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "{file}: template id {id} twice");
    }
    let missing: Vec<_> = contracts.keys().filter(|job| !seen.contains(**job)).collect();
    assert!(missing.is_empty(), "task types without a template: {missing:?}");
}

#[test]
fn the_connectors_serve_exactly_the_declared_task_types() {
    let connectors = bb::all(Arc::new(ConnectorsConfig::default())).unwrap();
    let served: BTreeSet<String> = connectors.iter().flat_map(|c| c.job_types()).collect();
    let declared: BTreeSet<String> = contracts().keys().map(|job| (*job).to_owned()).collect();
    assert_eq!(served, declared);
}

#[test]
fn template_fields_are_the_inputs_headers_and_outputs_the_connectors_read() {
    let contracts = contracts();
    let engine_headers =
        [govflow_engine::retry::BACKOFF, govflow_engine::retry::POLICY, govflow_engine::retry::MAX];
    for (file, template) in templates() {
        let job = job_type(&template).unwrap();
        let contract = &contracts[job];
        let at = format!("{file} ({job})");
        let (mut inputs, mut headers, mut outputs) = (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
        let mut has_retries = false;
        for property in properties(&template) {
            let binding = &property["binding"];
            let required = property["constraints"]["notEmpty"] == true || property["type"] == "Dropdown";
            match binding["type"].as_str().unwrap() {
                "zeebe:taskDefinition" => has_retries |= binding["property"] == "retries",
                "zeebe:input" => {
                    let name = binding["name"].as_str().unwrap();
                    assert!(
                        contract.inputs.iter().any(|p| p.name == name),
                        "{at}: input '{name}' is not read by the connector"
                    );
                    inputs.insert(name.to_owned(), required);
                }
                "zeebe:taskHeader" => {
                    let key = binding["key"].as_str().unwrap();
                    assert!(
                        contract.headers.iter().any(|p| p.name == key) || engine_headers.contains(&key),
                        "{at}: header '{key}' is not read by the connector nor the engine"
                    );
                    headers.insert(key.to_owned(), required);
                }
                "zeebe:output" => {
                    let source = binding["source"].as_str().unwrap();
                    let name =
                        source.strip_prefix('=').unwrap_or_else(|| panic!("{at}: output source {source}"));
                    assert!(contract.outputs.contains(&name), "{at}: output '{name}' is not produced");
                    outputs.insert(name.to_owned());
                }
                other => panic!("{at}: unexpected binding {other}"),
            }
        }
        assert!(has_retries, "{at}: no retries field");
        for param in contract.inputs.iter().filter(|p| p.required) {
            assert_eq!(
                inputs.get(param.name),
                Some(&true),
                "{at}: required input '{}' is not a required field",
                param.name
            );
        }
        for param in contract.headers.iter().filter(|p| p.required) {
            assert_eq!(
                headers.get(param.name),
                Some(&true),
                "{at}: required header '{}' is not a required field",
                param.name
            );
        }
        for output in contract.outputs {
            assert!(outputs.contains(*output), "{at}: output '{output}' has no result field");
        }
        let description = template["description"].as_str().unwrap();
        for error in contract.errors {
            assert!(description.contains(error), "{at}: the description does not name BPMN error {error}");
        }
    }
}

#[test]
fn templates_follow_the_camunda_8_schema_rules_they_use() {
    for (file, template) in templates() {
        let at = format!("{file} ({})", template["id"]);
        assert_eq!(template["$schema"], SCHEMA, "{at}");
        for field in ["name", "id", "description"] {
            assert!(template[field].as_str().is_some_and(|v| !v.is_empty()), "{at}: {field}");
        }
        assert!(template["version"].is_u64(), "{at}: version is an integer");
        let applies: Vec<&str> =
            template["appliesTo"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(applies.contains(&"bpmn:ServiceTask"), "{at}: appliesTo");
        let groups: BTreeSet<&str> =
            template["groups"].as_array().unwrap().iter().filter_map(|g| g["id"].as_str()).collect();
        for property in properties(&template) {
            let kind = property["type"].as_str().unwrap();
            assert!(
                ["String", "Text", "Hidden", "Dropdown", "Boolean", "Number"].contains(&kind),
                "{at}: type {kind}"
            );
            if let Some(group) = property["group"].as_str() {
                assert!(groups.contains(group), "{at}: group {group} is not declared");
            }
            if property["optional"] == true {
                let binding = property["binding"]["type"].as_str().unwrap();
                assert!(
                    ["zeebe:input", "zeebe:output", "zeebe:taskHeader"].contains(&binding),
                    "{at}: optional {binding}"
                );
                assert_ne!(property["constraints"]["notEmpty"], true, "{at}: optional and notEmpty");
            }
            if property["feel"] == "required" {
                if let Some(value) = property["value"].as_str() {
                    assert!(value.starts_with('='), "{at}: FEEL value {value}");
                }
            }
            if kind == "Dropdown" {
                let choices: Vec<&Value> =
                    property["choices"].as_array().unwrap().iter().map(|c| &c["value"]).collect();
                assert!(
                    choices.contains(&&property["value"]),
                    "{at}: default {} not a choice",
                    property["value"]
                );
            }
        }
    }
}

/// What `docs/connectors.md` says about one job type: its section, up to the next `### `.
fn section<'a>(docs: &'a str, job: &str) -> &'a str {
    let heading = format!("### `{job}`");
    let start = docs.find(&heading).unwrap_or_else(|| panic!("docs/connectors.md has no section {heading}"));
    let rest = &docs[start + heading.len()..];
    &rest[..rest.find("\n### ").unwrap_or(rest.len())]
}

#[test]
fn the_docs_describe_every_task_type() {
    let docs = std::fs::read_to_string(root().join("../docs/connectors.md")).unwrap();
    for contract in contracts().values() {
        let text = section(&docs, contract.job_type);
        let names = contract.inputs.iter().chain(contract.headers).map(|p| p.name);
        for name in names.chain(contract.outputs.iter().copied()).chain(contract.errors.iter().copied()) {
            assert!(
                text.contains(&format!("`{name}`")),
                "docs/connectors.md, {}: `{name}` is not described",
                contract.job_type
            );
        }
        assert!(text.contains("<bpmn:"), "docs/connectors.md, {}: no XML snippet", contract.job_type);
    }
    assert!(Path::new(&root().join("../docs/connectors.md")).exists());
}
