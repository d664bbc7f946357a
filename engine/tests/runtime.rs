//! Runtime scenarios, data-driven: each `engine/test_data/runtime/scenarios/*.scenario` names a model and a
//! script that reads like the journey (`start {..}`, `complete job verify-id {..}`, `advance P3D`,
//! `expect completed`); the event log it produces is compared with the sibling `.txt` (refresh with
//! `UPDATE_EXPECT=1`). Every scenario also replays its events from empty state — directly and after a
//! JSON round trip — and must reach the same state. `check` is the only code here touching the engine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use govflow_engine::dmn::DecisionModel;
use govflow_engine::runtime::{
    decide, Command, Event, Instance, InstanceKey, InstanceStatus, Key, ProcessDefinition, VariableMap,
};
use govflow_engine::timer::IsoDuration;
use std::sync::Arc;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/runtime")
}

#[test]
fn scenarios() {
    let dir = data_dir().join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "scenario"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let result = std::panic::catch_unwind(|| check(&text));
        match result {
            Ok(Ok(log)) => expect_test::expect_file![file.with_extension("txt")].assert_eq(&log),
            Ok(Err(message)) => failures.push(format!("{}: {message}", file.display())),
            Err(_) => failures.push(format!("{}: panicked", file.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Runs one scenario; returns its log or the first failed expectation.
fn check(scenario: &str) -> Result<String, String> {
    let mut model = None;
    let mut process = None;
    let mut decisions = Vec::new();
    let mut tail = None;
    let mut script = Vec::new();
    for line in scenario.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("model:") {
            model = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("process:") {
            process = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("decisions:") {
            decisions.push(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("log: tail") {
            // Long loops: keep only the last N event lines of each command in the golden log.
            tail = rest.trim().parse::<usize>().ok();
        } else {
            script.push(line.to_owned());
        }
    }
    let model = model.ok_or("the scenario names no model")?;
    let bytes = std::fs::read(data_dir().join("models").join(&model)).map_err(|e| format!("{model}: {e}"))?;
    let parsed = govflow_engine::check(&bytes);
    let definitions =
        parsed.definitions.ok_or_else(|| format!("{model} does not parse: {:?}", parsed.diagnostics))?;
    let process = process.unwrap_or_else(|| definitions.processes[0].id.0.clone());
    let mut models = Vec::new();
    for file in &decisions {
        let bytes =
            std::fs::read(data_dir().join("models").join(file)).map_err(|e| format!("{file}: {e}"))?;
        models.push(Arc::new(DecisionModel::parse(&bytes).map_err(|d| format!("{file}: {d:?}"))?));
    }
    let definition = ProcessDefinition::compile(&definitions, &process, 1)
        .map_err(|d| {
            format!("{model}: {}", d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })?
        .with_decisions(models);

    let mut world = World {
        definition,
        instance: Instance::new(InstanceKey(1)),
        events: Vec::new(),
        log: String::new(),
        now: DateTime::parse_from_rfc3339("2027-01-04T09:00:00+00:00").unwrap(),
        tail,
    };
    for line in &script {
        let _ = writeln!(world.log, "> {line}");
        world.step(line)?;
    }
    world.replay_matches()?;
    Ok(world.log)
}

struct World {
    definition: ProcessDefinition,
    instance: Instance,
    events: Vec<Event>,
    log: String,
    now: DateTime<FixedOffset>,
    tail: Option<usize>,
}

impl World {
    fn step(&mut self, line: &str) -> Result<(), String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "start" => {
                let (start_event, json) = match rest.trim_start().strip_prefix("at ") {
                    Some(after) => {
                        let (id, json) = after.split_once(' ').unwrap_or((after, ""));
                        (Some(id.into()), json)
                    }
                    None => (None, rest),
                };
                self.send(Command::Start { variables: vars(json)?, business_key: None, start_event })
            }
            "complete" => {
                let (what, rest) = rest.split_once(' ').ok_or("complete job|task ELEMENT {..}")?;
                let (element, json) = rest.split_once(' ').unwrap_or((rest, ""));
                match what {
                    "job" => {
                        let job = self.job(element)?;
                        self.send(Command::CompleteJob { job, variables: vars(json)? })
                    }
                    "task" => {
                        let task = self.user_task(element)?;
                        self.send(Command::CompleteUserTask { task, variables: vars(json)? })
                    }
                    "call" => {
                        // the child instance of call activity ELEMENT completed with these variables
                        let element_instance = self.call(element)?;
                        self.send(Command::CompleteCallActivity { element_instance, variables: vars(json)? })
                    }
                    _ => Err(format!("complete {what}?")),
                }
            }
            "assign" => {
                // assign task ELEMENT USER|nobody [if USER|nobody]: claim or unclaim, optionally only while
                // the task's assignee is the one named after `if`
                let words: Vec<&str> = rest.split_whitespace().collect();
                let usage = "assign task ELEMENT USER|nobody [if USER|nobody]";
                let task = self.user_task(words.get(1).ok_or(usage)?)?;
                let user = |word: &str| (word != "nobody").then(|| word.to_owned());
                let assignee = user(words.get(2).ok_or(usage)?);
                let expected = match (words.get(3), words.get(4)) {
                    (Some(&"if"), Some(who)) => Some(user(who)),
                    (None, _) => None,
                    _ => return Err(usage.into()),
                };
                self.send(Command::AssignUserTask { task, assignee, expected })
            }
            "fail" => {
                // fail job ELEMENT retries N [backoff MS] "message"
                let words: Vec<&str> = rest.split_whitespace().collect();
                let job = self.job(words.get(1).ok_or("fail job ELEMENT retries N")?)?;
                let retries =
                    words.get(3).and_then(|n| n.parse().ok()).ok_or("fail job ELEMENT retries N")?;
                let backoff_ms = match words.get(4) {
                    Some(&"backoff") => words.get(5).and_then(|n| n.parse().ok()),
                    _ => None,
                };
                let message =
                    rest.split_once('"').map(|(_, m)| m.trim_end_matches('"').to_owned()).unwrap_or_default();
                self.send(Command::FailJob { job, retries, message, backoff_ms })
            }
            "unknown" => {
                // unknown call ELEMENT: the shell found no process to start for the call activity
                let element = rest.trim_start_matches("call ").trim();
                let element_instance = self.call(element)?;
                self.send(Command::CallActivityNotStarted {
                    element_instance,
                    message: "no process 'maternity-benefit' is deployed".into(),
                })
            }
            "throw" if rest.starts_with("error call ") => {
                // throw error call ELEMENT CODE: the child instance ended with an unhandled error
                let words: Vec<&str> = rest.split_whitespace().collect();
                let element_instance = self.call(words.get(2).ok_or("throw error call ELEMENT CODE")?)?;
                let error_code = words.get(3).ok_or("throw error call ELEMENT CODE")?.to_string();
                self.send(Command::CallActivityFailed {
                    element_instance,
                    error_code,
                    message: "child failed".into(),
                })
            }
            "throw" => {
                // throw error job ELEMENT CODE
                let words: Vec<&str> = rest.split_whitespace().collect();
                let job = self.job(words.get(2).ok_or("throw error job ELEMENT CODE")?)?;
                let error_code = words.get(3).ok_or("throw error job ELEMENT CODE")?.to_string();
                self.send(Command::ThrowError { job, error_code, message: "thrown by the scenario".into() })
            }
            "correlate" => {
                // correlate NAME KEY {..}
                let mut parts = rest.splitn(3, ' ');
                let name = parts.next().ok_or("correlate NAME KEY")?.to_owned();
                let correlation_key = parts.next().ok_or("correlate NAME KEY")?.to_owned();
                let variables = vars(parts.next().unwrap_or(""))?;
                self.send(Command::CorrelateMessage { name, correlation_key, variables, message_id: None })
            }
            "signal" => {
                let (name, json) = rest.split_once(' ').unwrap_or((rest, ""));
                self.send(Command::TriggerSignal { name: name.to_owned(), variables: vars(json)? })
            }
            "advance" => {
                let duration = IsoDuration::parse(rest.trim()).map_err(|e| e.to_string())?;
                let until = duration.add_to(&self.now).ok_or("advance overflows")?;
                self.advance_to(until)
            }
            "fire" => {
                // fire timer ELEMENT: jump the clock to its due time (never before) and fire it;
                // fire timer ELEMENT early: fire it at the current time (the engine must refuse)
                let words: Vec<&str> = rest.trim_start_matches("timer ").split_whitespace().collect();
                let element = words.first().copied().unwrap_or("");
                let early = words.get(1) == Some(&"early");
                let timer = self
                    .instance
                    .timers
                    .values()
                    .find(|t| t.element.as_str() == element)
                    .cloned()
                    .ok_or_else(|| format!("no pending timer on '{element}'"))?;
                if !early {
                    self.now = self.now.max(timer.due);
                }
                self.send(Command::FireTimer { timer: timer.key })
            }
            "resolve" => {
                let (element, json) = rest
                    .trim_start_matches("incident ")
                    .split_once(' ')
                    .unwrap_or((rest.trim_start_matches("incident "), ""));
                let incident = self
                    .instance
                    .incidents
                    .values()
                    .find(|i| i.element.as_str() == element)
                    .map(|i| i.key)
                    .ok_or_else(|| format!("no incident on '{element}'"))?;
                self.send(Command::ResolveIncident { incident, variables: vars(json)? })
            }
            "set" => self.send(Command::SetVariables { scope: None, variables: vars(rest)?, local: false }),
            "cancel" => self.send(Command::Cancel),
            "expect" => self.expect(rest),
            _ => Err(format!("unknown script verb '{verb}'")),
        }
    }

    fn send(&mut self, command: Command) -> Result<(), String> {
        match decide(&self.definition, &self.instance, &command, self.now) {
            Ok(events) => {
                let mut broadcasts = Vec::new();
                let skip = self.tail.map_or(0, |tail| events.len().saturating_sub(tail));
                if skip > 0 {
                    let _ = writeln!(self.log, "  ({skip} earlier events not shown)");
                }
                for (i, event) in events.into_iter().enumerate() {
                    if i >= skip {
                        let _ = writeln!(self.log, "  {}", line_of(&event));
                    }
                    if let Event::SignalBroadcast { signal_name, variables, .. } = &event {
                        broadcasts.push((signal_name.clone(), variables.clone()));
                    }
                    self.instance.apply(&event);
                    self.events.push(event);
                }
                // The shell delivers broadcast signals to every subscribed instance, this one included.
                for (name, variables) in broadcasts {
                    if self.instance.signal_subscriptions.values().any(|s| s.signal_name == name) {
                        let _ = writeln!(self.log, "  (signal '{name}' delivered back)");
                        self.send(Command::TriggerSignal { name, variables })?;
                    }
                }
                Ok(())
            }
            Err(rejection) => {
                let _ = writeln!(self.log, "  rejected: {rejection}");
                Ok(())
            }
        }
    }

    /// Moves the clock to `until`, firing every timer that falls due on the way, in due order.
    fn advance_to(&mut self, until: DateTime<FixedOffset>) -> Result<(), String> {
        loop {
            let next = self
                .instance
                .timers
                .values()
                .filter(|t| t.due <= until)
                .min_by_key(|t| (t.due, t.key))
                .cloned();
            let Some(timer) = next else { break };
            self.now = self.now.max(timer.due);
            self.send(Command::FireTimer { timer: timer.key })?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    fn job(&self, element: &str) -> Result<Key, String> {
        // `#KEY` names a job by key, even one that no longer exists (to show the rejection).
        if let Some(key) = element.strip_prefix('#') {
            return key.parse().map(Key).map_err(|_| format!("bad job key '{element}'"));
        }
        // An open job first; else a failed one (so the script can show the rejection).
        let jobs = || self.instance.jobs.values().filter(|job| job.element.as_str() == element);
        jobs()
            .find(|job| !job.failed)
            .or_else(|| jobs().next())
            .map(|job| job.key)
            .ok_or_else(|| format!("no job for '{element}'"))
    }

    fn call(&self, element: &str) -> Result<Key, String> {
        self.instance
            .calls
            .keys()
            .find(|key| self.instance.elements.get(key).is_some_and(|e| e.element.as_str() == element))
            .copied()
            // Not waiting (any more): the element instance itself, so the script can show the rejection.
            .or_else(|| {
                self.instance.elements.values().find(|e| e.element.as_str() == element).map(|e| e.key)
            })
            .ok_or_else(|| format!("no call activity '{element}'"))
    }

    fn user_task(&self, element: &str) -> Result<Key, String> {
        if let Some(key) = element.strip_prefix('#') {
            return key.parse().map(Key).map_err(|_| format!("bad task key '{element}'"));
        }
        self.instance
            .user_tasks
            .values()
            .find(|task| task.element.as_str() == element)
            .map(|task| task.key)
            .ok_or_else(|| format!("no open user task for '{element}'"))
    }

    fn expect(&mut self, what: &str) -> Result<(), String> {
        let instance = &self.instance;
        let ok = match what.split_whitespace().next().unwrap_or("") {
            "completed" => instance.status == InstanceStatus::Completed,
            "cancelled" => instance.status == InstanceStatus::Cancelled,
            "active" => instance.status == InstanceStatus::Active,
            "incident" => {
                let element = what.split_whitespace().nth(1);
                instance.incidents.values().any(|i| element.is_none_or(|e| i.element.as_str() == e))
            }
            "no-incident" => instance.incidents.is_empty(),
            "job" => {
                let element = what.split_whitespace().nth(1).unwrap_or("");
                instance.jobs.values().any(|j| j.element.as_str() == element)
            }
            "no-job" => {
                let element = what.split_whitespace().nth(1).unwrap_or("");
                !instance.jobs.values().any(|j| j.element.as_str() == element)
            }
            "task" => {
                let element = what.split_whitespace().nth(1).unwrap_or("");
                instance.user_tasks.values().any(|t| t.element.as_str() == element)
            }
            "timer" => {
                let element = what.split_whitespace().nth(1).unwrap_or("");
                instance.timers.values().any(|t| t.element.as_str() == element)
            }
            "no-timer" => {
                let element = what.split_whitespace().nth(1).unwrap_or("");
                !instance.timers.values().any(|t| t.element.as_str() == element)
            }
            "variables" => {
                let (_, json) = what.split_once(' ').unwrap_or((what, "{}"));
                let expected = vars(json)?;
                let root =
                    instance.root.and_then(|root| instance.variables.get(&root)).cloned().unwrap_or_default();
                let wrong: Vec<String> = expected
                    .iter()
                    .filter(|(name, value)| root.get(*name) != Some(value))
                    .map(|(name, value)| format!("{name}: expected {value}, got {:?}", root.get(name)))
                    .collect();
                if !wrong.is_empty() {
                    return Err(format!("expect variables: {}", wrong.join(", ")));
                }
                true
            }
            other => return Err(format!("unknown expectation '{other}'")),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expectation failed: expect {what}\nlog so far:\n{}", self.log))
        }
    }

    /// Replaying the events from empty state (directly, and after a JSON round trip) gives the same state.
    fn replay_matches(&self) -> Result<(), String> {
        let replayed = Instance::replay(InstanceKey(1), &self.events);
        if replayed != self.instance {
            return Err("replaying the events does not reproduce the state".to_owned());
        }
        let json = serde_json::to_string(&self.events).map_err(|e| e.to_string())?;
        let decoded: Vec<Event> = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        if decoded != self.events || Instance::replay(InstanceKey(1), &decoded) != self.instance {
            return Err("events do not survive a JSON round trip".to_owned());
        }
        let snapshot = serde_json::to_string(&self.instance).map_err(|e| e.to_string())?;
        let restored: Instance = serde_json::from_str(&snapshot).map_err(|e| e.to_string())?;
        if restored != self.instance {
            return Err("the state does not survive a JSON round trip".to_owned());
        }
        Ok(())
    }
}

fn vars(json: &str) -> Result<VariableMap, String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(VariableMap::new());
    }
    let value: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("variables '{json}': {e}"))?;
    Ok(value)
}

/// One event as a compact line: its name and fields, keys sorted, no noise.
fn line_of(event: &Event) -> String {
    let value = serde_json::to_value(event).unwrap();
    let mut fields = Vec::new();
    if let serde_json::Value::Object(map) = &value {
        for (name, field) in map {
            if name == "type" {
                continue;
            }
            let text = match field {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            fields.push(format!("{name}={text}"));
        }
    }
    format!("{} {}", event.name(), fields.join(" "))
}
