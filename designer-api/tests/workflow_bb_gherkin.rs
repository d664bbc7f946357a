//! Executes every scenario of every `.feature` file of the GovStack Workflow BB specification
//! (`shared/govstack/workflow/*.feature`, read at test time, never copied) against the app, with step
//! definitions in Rust. A small Gherkin reader is enough for these files; it refuses what it does not
//! know (doc strings, data tables, rules) rather than skipping it. The test fails when a file has no
//! scenario, a step has no definition, or a scenario fails; it never skips one.
//!
//! How the steps read the features (their text does not say everything):
//! - Requests go under the Information Mediator prefix the features' `@endpoint` tags name.
//! - "an existing" process or instance: each scenario runs on a fresh app with the `permit` process
//!   deployed and one instance of it running.
//! - A `@negative` scenario sends the same request with one invalid part (the step says which), since
//!   the feature's text is the same as the positive one's; the Gherkin expects 400 there.
//! - "fields are aligned to api spec" checks, as GovStack's own steps do, that the answer has every
//!   property the swagger names for it; `TestApp::send` has already validated every 2xx body against
//!   the swagger's schema and the generated OpenAPI document.
//! - Where a feature contradicts the swagger, the swagger wins and the deviation is listed in
//!   `DEVIATIONS` (and in docs/api.md): the step then asserts the swagger's status instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{govstack_dir, Answer, TestApp, PERMIT};
use govflow_designer_api::Role::Operator;
use serde_json::{json, Value};

const IM: &str = "/GOV/GOV/1234/WORKFLOW";

/// (feature file, status the feature expects, status the swagger specifies, why).
const DEVIATIONS: &[(&str, u16, u16, &str)] = &[(
    "start-instance.feature",
    200,
    201,
    "swagger.yaml answers POST /processes/{processId}/start with 201 (Created); the feature says 200",
)];

#[derive(Debug, Clone)]
struct Step {
    keyword: String,
    text: String,
    line: usize,
}

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    tags: Vec<String>,
    steps: Vec<Step>,
    line: usize,
}

#[derive(Debug)]
struct Feature {
    file: String,
    name: String,
    tags: Vec<String>,
    scenarios: Vec<Scenario>,
}

const STEP_KEYWORDS: [&str; 6] = ["Given ", "When ", "Then ", "And ", "But ", "* "];

/// Reads a feature file: tags, Feature, Background, Scenario, Scenario Outline with Examples, steps.
fn parse(file: &str, text: &str) -> Result<Feature, String> {
    let mut feature =
        Feature { file: file.to_owned(), name: String::new(), tags: Vec::new(), scenarios: Vec::new() };
    let mut background: Vec<Step> = Vec::new();
    let mut pending_tags: Vec<String> = Vec::new();
    let mut in_background = false;
    let mut outline: Option<Scenario> = None;
    let mut examples_header: Option<Vec<String>> = None;
    let mut description_allowed = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            pending_tags.extend(line.split_whitespace().map(str::to_owned));
            continue;
        }
        if let Some(name) = line.strip_prefix("Feature:") {
            feature.name = name.trim().to_owned();
            feature.tags = std::mem::take(&mut pending_tags);
            description_allowed = true;
            continue;
        }
        if line.starts_with("Background:") {
            in_background = true;
            description_allowed = true;
            continue;
        }
        let outline_name =
            line.strip_prefix("Scenario Outline:").or_else(|| line.strip_prefix("Scenario Template:"));
        if let Some(name) = outline_name {
            in_background = false;
            examples_header = None;
            outline = Some(Scenario {
                name: name.trim().to_owned(),
                tags: std::mem::take(&mut pending_tags),
                steps: Vec::new(),
                line: n,
            });
            description_allowed = true;
            continue;
        }
        if let Some(name) = line.strip_prefix("Scenario:").or_else(|| line.strip_prefix("Example:")) {
            in_background = false;
            outline = None;
            let steps = background.clone();
            feature.scenarios.push(Scenario {
                name: name.trim().to_owned(),
                tags: std::mem::take(&mut pending_tags),
                steps,
                line: n,
            });
            description_allowed = true;
            continue;
        }
        if line.starts_with("Examples:") || line.starts_with("Scenarios:") {
            if outline.is_none() {
                return Err(format!("{file}:{n}: Examples outside a Scenario Outline"));
            }
            examples_header = None;
            pending_tags.clear();
            continue;
        }
        if line.starts_with('|') {
            let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect();
            let Some(template) = &outline else {
                return Err(format!("{file}:{n}: data tables on steps are not supported by this runner"));
            };
            match &examples_header {
                None => examples_header = Some(cells),
                Some(header) => {
                    let mut scenario = template.clone();
                    scenario.name = format!("{} ({})", template.name, cells.join(", "));
                    scenario.line = n;
                    let mut steps = background.clone();
                    steps.extend(template.steps.iter().map(|step| {
                        let mut text = step.text.clone();
                        for (name, value) in header.iter().zip(&cells) {
                            text = text.replace(&format!("<{name}>"), value);
                        }
                        Step { text, ..step.clone() }
                    }));
                    scenario.steps = steps;
                    feature.scenarios.push(scenario);
                }
            }
            continue;
        }
        if line.starts_with("\"\"\"") || line.starts_with("```") || line.starts_with("Rule:") {
            return Err(format!("{file}:{n}: '{line}' is not supported by this runner"));
        }
        if let Some(keyword) = STEP_KEYWORDS.iter().find(|k| line.starts_with(**k)) {
            description_allowed = false;
            let step = Step {
                keyword: keyword.trim().to_owned(),
                text: line[keyword.len()..].trim().to_owned(),
                line: n,
            };
            if in_background {
                background.push(step);
            } else if let Some(template) = outline.as_mut().filter(|_| examples_header.is_none()) {
                template.steps.push(step);
            } else if let Some(scenario) = feature.scenarios.last_mut() {
                scenario.steps.push(step);
            } else {
                return Err(format!("{file}:{n}: a step outside any scenario"));
            }
            continue;
        }
        if description_allowed {
            continue; // free text describing a feature or scenario
        }
        return Err(format!("{file}:{n}: cannot read '{line}'"));
    }
    Ok(feature)
}

/// What a scenario carries from step to step.
struct World {
    app: TestApp,
    file: String,
    negative: bool,
    answer: Option<Answer>,
    swagger: Value,
}

impl World {
    fn answer(&self) -> Result<&Answer, String> {
        self.answer.as_ref().ok_or_else(|| "no request was sent before this step".to_owned())
    }

    /// The first process the list shows (as GovStack's steps pick one).
    async fn first_process(&self) -> Result<String, String> {
        let list = self.app.get(Operator, &format!("{IM}/processes")).await;
        list.json[0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no process is listed: {}", list.text()))
    }

    /// The first running instance the list shows.
    async fn first_instance(&self) -> Result<u64, String> {
        let list = self.app.get(Operator, &format!("{IM}/instances")).await;
        list.json
            .as_array()
            .and_then(|items| items.iter().find(|i| i["state"] == "running"))
            .and_then(|i| i["id"].as_u64())
            .ok_or_else(|| format!("no running instance is listed: {}", list.text()))
    }

    /// `expected` from the feature, or the swagger's status where the two disagree.
    fn expected_status(&self, expected: u16) -> u16 {
        DEVIATIONS.iter().find(|(file, feature, _, _)| *file == self.file && *feature == expected).map_or(
            expected,
            |(_, _, swagger, why)| {
                eprintln!("  deviation ({}): expecting {swagger} instead of {expected}: {why}", self.file);
                *swagger
            },
        )
    }

    fn check_status(&self, expected: u16) -> Result<(), String> {
        let expected = self.expected_status(expected);
        let answer = self.answer()?;
        if answer.status.as_u16() == expected {
            Ok(())
        } else {
            Err(format!("expected status {expected}, got {}: {}", answer.status, answer.text()))
        }
    }

    /// Every property the swagger schema at `pointer` names is in `object`.
    fn aligned(&self, object: &Value, pointer: &str) -> Result<(), String> {
        let properties = self
            .swagger
            .pointer(pointer)
            .and_then(Value::as_object)
            .ok_or_else(|| format!("the swagger has no properties at {pointer}"))?;
        let missing: Vec<&String> =
            properties.keys().filter(|name| object.get(name.as_str()).is_none()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing fields {missing:?} in {object}"))
        }
    }
}

/// Runs one step; `Err` says why it failed, `Ok(false)` that no definition matches.
async fn run_step(world: &mut World, text: &str) -> Result<bool, String> {
    let app = &world.app;
    let status_for = |suffix: &str| -> Option<u16> {
        text.strip_prefix("we receive status code ")?.strip_suffix(suffix)?.trim().parse().ok()
    };
    for suffix in [
        " for the processes",
        " for the instances",
        " for the workflow process",
        " for the workflow process instance",
        " for the request",
    ] {
        if let Some(expected) = status_for(suffix) {
            world.check_status(expected)?;
            return Ok(true);
        }
    }
    let negative = world.negative;
    let answer = match text {
        "we request a list of processes from the api" => {
            // Negative: a page size of 0 is invalid.
            let query = if negative { "?limit=0" } else { "" };
            app.get(Operator, &format!("{IM}/processes{query}")).await
        }
        "we request a list of instances from the api" => {
            // Negative: a process id that cannot be one.
            let query = if negative { "?processId=not%20a%20process%20id!" } else { "" };
            app.get(Operator, &format!("{IM}/instances{query}")).await
        }
        "we request the details of an existing workflow process from the api" => {
            let id =
                if negative { "not%20a%20process%20id!".to_owned() } else { world.first_process().await? };
            app.get(Operator, &format!("{IM}/processes/{id}")).await
        }
        "we request the details of an existing workflow instance from the api" => {
            let id = if negative {
                "not-an-instance-id".to_owned()
            } else {
                world.first_instance().await?.to_string()
            };
            app.get(Operator, &format!("{IM}/instances/{id}")).await
        }
        "We request to start a workflow process from the api" => {
            let id = world.first_process().await?;
            // Negative: the swagger's required `processStartedBy` is missing.
            let body = if negative {
                json!({"InstanceValues": [{"code": "applicationId", "value": "G-1"}]})
            } else {
                json!({"processStartedBy": "gherkin", "InstanceValues": [{"code": "applicationId", "value": "G-1"}]})
            };
            app.post(Operator, &format!("{IM}/processes/{id}/start"), body).await
        }
        "We request to stop a workflow process from the api" => {
            let id = if negative {
                "not-an-instance-id".to_owned()
            } else {
                world.first_instance().await?.to_string()
            };
            app.post(Operator, &format!("{IM}/instances/{id}/stop"), json!({})).await
        }
        "process fields are aligned to api spec" => {
            let body = &world.answer()?.json;
            let sample = body
                .as_array()
                .and_then(|items| items.iter().find(|p| !p["id"].is_null()))
                .ok_or("no process listed")?;
            world.aligned(sample, "/components/schemas/ProcessDefinition/properties")?;
            world
                .aligned(&sample["processDefinition"], "/components/schemas/ProcessDefinition/properties")?;
            return Ok(true);
        }
        "instance fields are aligned to api spec" => {
            let body = &world.answer()?.json;
            let sample = body
                .as_array()
                .and_then(|items| items.iter().find(|i| !i["id"].is_null()))
                .ok_or("no instance listed")?;
            world.aligned(sample, "/components/schemas/ProcessInstance/properties")?;
            return Ok(true);
        }
        "workflow process fields are aligned to api spec" => {
            let body = world.answer()?.json.clone();
            world.aligned(&body, "/components/schemas/ProcessDefinition/properties")?;
            world.aligned(&body, "/components/schemas/Process/properties")?;
            return Ok(true);
        }
        "workflow process instance fields are aligned to api spec" => {
            let body = world.answer()?.json.clone();
            world.aligned(&body, "/components/schemas/ProcessInstance/properties")?;
            return Ok(true);
        }
        "started workflow process fields are aligned to api spec" => {
            let body = world.answer()?.json.clone();
            let pointer = "/paths/~1processes~1{processId}~1start/post/responses/201/content/application~1json/schema/properties";
            world.aligned(&body, pointer)?;
            return Ok(true);
        }
        "stopped workflow process fields are aligned to api spec" => {
            let body = world.answer()?.json.clone();
            let pointer = "/paths/~1instances~1{instanceId}~1stop/post/responses/201/content/application~1json/schema/properties";
            world.aligned(&body, pointer)?;
            if body["ended"] != true || body["state"] != "stopped" {
                return Err(format!("a stopped instance must say ended and stopped: {body}"));
            }
            return Ok(true);
        }
        _ => return Ok(false),
    };
    world.answer = Some(answer);
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workflow_bb_scenario_passes() {
    let dir = govstack_dir();
    let swagger: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("swagger.yaml"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap();
    let swagger = serde_json::to_value(swagger).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the GovStack features are read from {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "feature"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .feature file in {}", dir.display());

    let (mut passed, mut failures) = (0, Vec::new());
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let feature = parse(&file, &std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!feature.scenarios.is_empty(), "{file} has no scenario");
        assert!(
            feature.tags.iter().any(|t| t.starts_with("@endpoint=/{GovStackInstance}")),
            "{file}: endpoint tag"
        );
        for scenario in &feature.scenarios {
            let outcome = run_scenario(&feature, scenario, &swagger).await;
            match outcome {
                Ok(()) => {
                    passed += 1;
                    eprintln!("ok   {file}:{} {} / {}", scenario.line, feature.name, scenario.name);
                }
                Err(why) => {
                    eprintln!("FAIL {file}:{} {}: {why}", scenario.line, scenario.name);
                    failures.push(format!("{file}:{} {}: {why}", scenario.line, scenario.name));
                }
            }
        }
    }
    eprintln!("gherkin scenarios: {passed} ok, {} failing", failures.len());
    assert!(failures.is_empty(), "failed or undefined scenarios:\n{}", failures.join("\n"));
    assert!(passed >= files.len(), "every feature file ran at least one scenario");
}

async fn run_scenario(feature: &Feature, scenario: &Scenario, swagger: &Value) -> Result<(), String> {
    if scenario.steps.is_empty() {
        return Err("the scenario has no steps".to_owned());
    }
    let app = TestApp::new().await;
    app.deploy("permit.bpmn", PERMIT).await;
    app.start("permit", json!({"applicationId": "E-1"})).await;
    let mut world = World {
        app,
        file: feature.file.clone(),
        negative: scenario.tags.iter().chain(&feature.tags).any(|t| t == "@negative"),
        answer: None,
        swagger: swagger.clone(),
    };
    for step in &scenario.steps {
        match run_step(&mut world, &step.text).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!("line {}: undefined step: {} {}", step.line, step.keyword, step.text))
            }
            Err(why) => return Err(format!("line {}: {} {}: {why}", step.line, step.keyword, step.text)),
        }
    }
    Ok(())
}

#[test]
fn the_reader_refuses_what_it_does_not_know_and_expands_outlines() {
    let outline = "Feature: f\n  Scenario Outline: o\n    When we ask <n>\n    Examples:\n      | n |\n      | 1 |\n      | 2 |\n";
    let feature = parse("o.feature", outline).unwrap();
    assert_eq!(feature.scenarios.len(), 2);
    assert_eq!(feature.scenarios[1].steps[0].text, "we ask 2");
    let doc_string = "Feature: f\n  Scenario: s\n    When we send\n      \"\"\"\n      x\n      \"\"\"\n";
    assert!(parse("d.feature", doc_string).is_err());
    let table = "Feature: f\n  Scenario: s\n    When we send\n      | a |\n";
    assert!(parse("t.feature", table).is_err());
    let background = "Feature: f\n  Background:\n    Given a thing\n  Scenario: s\n    When we send\n";
    assert_eq!(parse("b.feature", background).unwrap().scenarios[0].steps.len(), 2);
}
