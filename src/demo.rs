//! `govflow demo`: the four life-event journeys end to end, in under a minute. It opens a fresh store,
//! starts the sandbox building blocks and the HTTP API in this process (as `govflow serve --sandbox`
//! does), deploys `processes/`, and then acts only through the HTTP API, as an agency's portal and its
//! staff would: it starts journeys for sample citizens from the sandbox's population (happy and unhappy
//! paths), publishes messages, and completes the user tasks as registrar, supervisor, inspector and owner.
//! Engine time runs `--time-scale` times faster (default 300,000: a month in about nine seconds, a three-day
//! SLA in under one), so monthly payments and deadlines happen while you watch. It ends with a table of
//! the outcomes and how to inspect them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Datelike, Months, NaiveDate, Utc};
use govflow_connectors::sandbox::Person;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::serve::{self, ServeConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The data directory (default: a fresh one under the system temp dir, kept for inspection).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Engine time runs this many times faster than real time.
    #[arg(long, default_value_t = 300_000.0)]
    pub time_scale: f64,
    /// The journeys to deploy.
    #[arg(long, default_value = "processes")]
    pub processes: PathBuf,
    /// The port of the API (0: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Give up waiting for the journeys after this many seconds.
    #[arg(long, default_value_t = 50)]
    pub timeout: u64,
}

/// One journey run for one sample citizen.
#[derive(Debug, Clone)]
struct Run {
    journey: &'static str,
    label: String,
    instance: u64,
    started: Instant,
}

/// What the task worker does with a user task of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Complete every task favourably, at once.
    Approve,
    /// Leave the first review until its SLA has passed (the supervisor then decides).
    LetSlaPass,
    /// Fail the first inspection; the owner rectifies; the second passes.
    FailFirstInspection,
}

struct Demo {
    http: reqwest::Client,
    base: String,
    token: String,
    runs: Mutex<Vec<Run>>,
    scripts: Mutex<BTreeMap<u64, Script>>,
    inspections: Mutex<BTreeMap<u64, u32>>,
    handled: Mutex<BTreeSet<String>>,
    ended_at: Mutex<BTreeMap<u64, Instant>>,
    overdue: Mutex<BTreeSet<u64>>,
    end_names: BTreeMap<String, String>,
}

impl Demo {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    async fn start(
        &self,
        journey: &'static str,
        label: &str,
        variables: Value,
        script: Script,
    ) -> anyhow::Result<u64> {
        let answer = self
            .call(
                reqwest::Method::POST,
                "/api/v1/instances",
                Some(json!({"processId": journey, "variables": variables})),
            )
            .await?;
        let instance = answer["instance"].as_u64().context("the start answer has no instance")?;
        self.track(journey, label, instance, script);
        Ok(instance)
    }

    fn track(&self, journey: &'static str, label: &str, instance: u64, script: Script) {
        lock(&self.runs).push(Run { journey, label: label.to_owned(), instance, started: Instant::now() });
        lock(&self.scripts).insert(instance, script);
    }

    async fn instance(&self, instance: u64) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, &format!("/api/v1/instances/{instance}"), None).await
    }

    /// Completes the open user tasks as the script of their instance says.
    async fn work_user_tasks(&self) -> anyhow::Result<()> {
        let page = self.call(reqwest::Method::GET, "/api/v1/user-tasks?limit=200", None).await?;
        let tasks = page["items"].as_array().cloned().unwrap_or_default();
        // An instance whose stipulated time has passed (its overdue task opened): its inspection may go on.
        for task in &tasks {
            if task["element"] == "Activity_HandleOverdue" {
                lock(&self.overdue).insert(task["instance"].as_u64().unwrap_or_default());
            }
        }
        for task in tasks {
            let id = task["id"].as_str().unwrap_or_default().to_owned();
            if lock(&self.handled).contains(&id) {
                continue;
            }
            let instance = task["instance"].as_u64().unwrap_or_default();
            let script = lock(&self.scripts).get(&instance).copied().unwrap_or(Script::Approve);
            let element = task["element"].as_str().unwrap_or_default();
            let variables = match (element, script) {
                ("Activity_ReviewLate", Script::LetSlaPass) => continue,
                ("Activity_ReviewLate", _) => json!({"approved": true, "remarks": "hospital record checked"}),
                ("Activity_SupervisorReview", _) => {
                    json!({"approved": true, "remarks": "approved after the SLA"})
                }
                ("Activity_Inspect", Script::LetSlaPass) if !lock(&self.overdue).contains(&instance) => {
                    continue
                }
                ("Activity_Inspect", Script::FailFirstInspection) => {
                    let round = {
                        let mut inspections = lock(&self.inspections);
                        let round = inspections.entry(instance).or_default();
                        *round += 1;
                        *round
                    };
                    if round == 1 {
                        json!({"passed": false, "findings": "no fire extinguisher in the kitchen"})
                    } else {
                        json!({"passed": true, "findings": "rectified"})
                    }
                }
                ("Activity_Inspect", _) => json!({"passed": true, "findings": "clean and safe"}),
                ("Activity_Rectify", _) => json!({"resubmit": true, "notes": "extinguisher installed"}),
                ("Activity_HandleOverdue", _) => json!({"action": "inspection booked for tomorrow"}),
                _ => json!({}),
            };
            lock(&self.handled).insert(id.clone());
            if let Err(error) = self
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/user-tasks/{id}/complete"),
                    Some(json!({"variables": variables})),
                )
                .await
            {
                lock(&self.handled).remove(&id);
                tracing::warn!(%error, "completing a user task");
            }
        }
        Ok(())
    }

    /// The names of the end events an instance reached, in order.
    async fn outcomes(&self, instance: u64) -> anyhow::Result<Vec<String>> {
        let mut outcomes = Vec::new();
        let mut from = 1;
        loop {
            let page = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/instances/{instance}/events?from={from}&limit=500"),
                    None,
                )
                .await?;
            for event in page["items"].as_array().cloned().unwrap_or_default() {
                if event["type"] == "ElementCompleted" {
                    if let Some(name) =
                        event["event"]["element"].as_str().and_then(|id| self.end_names.get(id))
                    {
                        outcomes.push(name.clone());
                    }
                }
            }
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => return Ok(outcomes),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// End event ids and their names, read from the journeys (for the outcome column).
fn end_event_names(files: &[(String, Vec<u8>)]) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for (_, bytes) in files {
        let text = String::from_utf8_lossy(bytes);
        for chunk in text.split("<bpmn:endEvent ").skip(1) {
            let attribute = |name: &str| {
                chunk
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .map(str::to_owned)
            };
            if let (Some(id), Some(name)) = (attribute("id"), attribute("name")) {
                names.insert(id, name.replace("&#10;", " "));
            }
        }
    }
    names
}

fn person_json(person: &Person) -> Value {
    json!({"nationalId": person.national_id, "firstName": person.first_name, "lastName": person.last_name,
           "phone": person.phone})
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_none() {
        // The progress display and the table are the demo's output; the logs only when asked for.
        std::env::set_var("RUST_LOG", "warn");
    }
    serve::init_logging(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let data = args.data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("govflow-demo-{}", Utc::now().format("%Y%m%d-%H%M%S")))
    });
    if data.exists() && std::fs::read_dir(&data).map(|mut entries| entries.next().is_some()).unwrap_or(false)
    {
        bail!("{} is not empty; the demo needs a fresh data directory", data.display());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&args.processes)
        .with_context(|| format!("cannot read {}", args.processes.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "bpmn" || ext == "dmn") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((name, std::fs::read(&path)?));
        }
    }
    // Decisions first: a process that calls one is checked against it.
    files.sort_by_key(|(name, _)| (!name.ends_with(".dmn"), name.clone()));
    let config = ServeConfig {
        data: data.clone(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], args.port)),
        sandbox: true,
        time_scale: args.time_scale,
        log_json: false,
        connectors: Default::default(),
        api: Default::default(),
    };
    let clock = Instant::now();
    let running = serve::start(config, false).await?;
    let sandbox = running.sandbox.as_ref().context("the demo runs with the sandbox")?;
    let demo = Arc::new(Demo {
        http: reqwest::Client::new(),
        base: running.base.clone(),
        token: running.token.clone().context("the sandbox server has a token")?,
        runs: Mutex::new(Vec::new()),
        scripts: Mutex::new(BTreeMap::new()),
        inspections: Mutex::new(BTreeMap::new()),
        handled: Mutex::new(BTreeSet::new()),
        ended_at: Mutex::new(BTreeMap::new()),
        overdue: Mutex::new(BTreeSet::new()),
        end_names: end_event_names(&files),
    });
    println!(
        "govflow demo: API {} · sandbox http://{} · data {} · time ×{}",
        demo.base,
        sandbox.addr(),
        data.display(),
        args.time_scale
    );
    for (name, bytes) in &files {
        let answer = demo
            .http
            .post(format!("{}/api/v1/deployments?name={name}", demo.base))
            .bearer_auth(&demo.token)
            .header("content-type", "application/xml")
            .body(bytes.clone())
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("deploying {name}: HTTP {}: {}", answer.status(), answer.text().await?);
        }
    }
    println!("deployed {} files from {}", files.len(), args.processes.display());

    let seed = sandbox.seed_data();
    let today = Utc::now().date_naive();
    let mothers: Vec<&Person> = seed
        .persons()
        .iter()
        .filter(|p| p.gender == "female" && !p.deceased && p.phone.is_some() && (20..=40).contains(&p.age()))
        .take(4)
        .collect();
    let fathers: Vec<&Person> = seed
        .persons()
        .iter()
        .filter(|p| p.gender == "male" && !p.deceased && p.phone.is_some() && (20..=45).contains(&p.age()))
        .take(4)
        .collect();
    if mothers.len() < 4 || fathers.len() < 4 {
        bail!("the sandbox population has too few parents for the demo");
    }
    let child = |first: &str, last: &str, born: NaiveDate| json!({"firstName": first, "lastName": last, "birthDate": born.to_string(), "gender": "female", "placeOfBirth": "District Hospital"});
    // 1. Birth registration.
    let br = "birth-registration";
    for (i, (label, born)) in
        [("on time", today), ("on time", today - chrono::Days::new(3))].into_iter().enumerate()
    {
        let (mother, father) = (mothers[i], fathers[i]);
        let name = ["Amani", "Zuri"][i];
        let variables = json!({"child": child(name, &father.last_name, born), "mother": person_json(mother), "father": person_json(father)});
        demo.start(br, label, variables, Script::Approve).await?;
    }
    let late = json!({"child": child("Baraka", &fathers[2].last_name, today - chrono::Days::new(40)), "mother": person_json(mothers[2]), "father": person_json(fathers[2])});
    demo.start(br, "late: registrar approves", late, Script::Approve).await?;
    let late_sla = json!({"child": child("Neema", &fathers[3].last_name, today - chrono::Days::new(45)), "mother": person_json(mothers[3]), "father": null});
    demo.start(br, "late: SLA passes, supervisor", late_sla, Script::LetSlaPass).await?;
    let (dup_mother, dup_birth) = seed.registered_birth();
    let duplicate = json!({"child": {"firstName": dup_birth.child_first_name, "lastName": dup_birth.child_last_name, "birthDate": dup_birth.birth_date, "gender": dup_birth.gender, "placeOfBirth": dup_birth.place_of_birth}, "mother": person_json(dup_mother), "father": null});
    demo.start(br, "duplicate birth", duplicate, Script::Approve).await?;
    let deceased = seed.deceased_person();
    let rejected = json!({"child": child("Imani", &deceased.last_name, today), "mother": person_json(deceased), "father": null});
    demo.start(br, "mother not verified", rejected, Script::Approve).await?;

    // 2. Maternity benefit for a child about to turn five (the births above start theirs by message).
    let mb = "maternity-benefit";
    let nearly_five = today.checked_sub_months(Months::new(59)).unwrap_or(today) - chrono::Days::new(15);
    let older = json!({"birth": {"certificateNumber": format!("BC-DEMO-{}", nearly_five.year()), "birthDate": nearly_five.to_string(), "childFirstName": "Tumaini"},
                       "mother": person_json(seed.verified_mother())});
    demo.start(mb, "child nearly five", older, Script::Approve).await?;

    // 3. Farmer relief for the district of a farmer with a bank account.
    let district = seed.farmer_with_bank_account().district.clone();
    let fr = "farmer-relief";
    let disaster = json!({"disasterId": "FLOOD-2026-11", "district": district, "damageLevel": "severe"});
    demo.start(fr, &format!("{district}: first run"), disaster.clone(), Script::Approve).await?;

    // 4. Trade licence.
    let tl = "trade-licence";
    for (i, (label, script)) in [
        ("passes inspection", Script::Approve),
        ("fails, rectifies, passes", Script::FailFirstInspection),
        ("inspection late: SLA path", Script::LetSlaPass),
    ]
    .into_iter()
    .enumerate()
    {
        let owner = fathers[i];
        let business = ["Spice Route Kitchen", "Lakeside Grill", "Maple Bakery"][i];
        let variables = json!({"applicationId": format!("TL-DEMO-{}", i + 1), "applicant": person_json(owner),
            "business": {"name": business, "activity": "restaurant", "address": format!("{} Market Street", 10 + i), "district": owner.district},
            "serviceLevel": "P7D"});
        demo.start(tl, label, variables, script).await?;
    }

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<20} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let journeys = [br, mb, fr, tl];
    let progress: BTreeMap<&str, ProgressBar> = journeys
        .iter()
        .map(|journey| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(journey.to_string());
            (*journey, bar)
        })
        .collect();
    let deadline = clock + Duration::from_secs(args.timeout);
    let mut stopped_one = false;
    let mut second_relief = false;
    let mut maternity_seen = BTreeSet::new();
    loop {
        demo.work_user_tasks().await?;
        // Maternity benefits started by the registered births (message birthRegistered).
        let started = demo
            .call(reqwest::Method::GET, "/api/v1/instances?processId=maternity-benefit&limit=100", None)
            .await?;
        for item in started["items"].as_array().cloned().unwrap_or_default() {
            let instance = item["instance"].as_u64().unwrap_or_default();
            if !lock(&demo.scripts).contains_key(&instance) && maternity_seen.insert(instance) {
                demo.track(mb, "newborn (from the birth)", instance, Script::Approve);
            }
        }
        let runs = lock(&demo.runs).clone();
        let mut states = BTreeMap::new();
        for run in &runs {
            let detail = demo.instance(run.instance).await?;
            states.insert(run.instance, detail);
        }
        // After its first payment, stop one newborn's benefit (e.g. the family moved abroad).
        if !stopped_one {
            for run in runs.iter().filter(|run| run.label.starts_with("newborn")) {
                let benefit = &states[&run.instance]["variables"]["benefit"];
                if benefit["paymentsMade"].as_u64().unwrap_or(0) >= 1 {
                    let certificate =
                        states[&run.instance]["variables"]["birth"]["certificateNumber"].clone();
                    demo.call(reqwest::Method::POST, "/api/v1/messages", Some(json!({"name": "benefitStopped", "correlationKey": certificate, "variables": {"stopReason": "family moved abroad"}, "timeToLive": 86_400_000u64}))).await?;
                    if let Some(run) = lock(&demo.runs).iter_mut().find(|r| r.instance == run.instance) {
                        run.label = "newborn: benefit stopped".to_owned();
                    }
                    stopped_one = true;
                    break;
                }
            }
        }
        let ended = |run: &Run| states[&run.instance]["state"].as_str() != Some("active");
        for run in &runs {
            if ended(run) {
                lock(&demo.ended_at).entry(run.instance).or_insert_with(Instant::now);
            }
        }
        // When the first relief run ended, run it again for the same disaster: every credential exists,
        // so each payment is reversed (compensation).
        if !second_relief && runs.iter().any(|run| run.journey == fr && ended(run)) {
            demo.start(fr, &format!("{district}: repeated run"), disaster.clone(), Script::Approve).await?;
            second_relief = true;
            continue;
        }
        for journey in journeys {
            let mine: Vec<&Run> = runs.iter().filter(|run| run.journey == journey).collect();
            let done = mine.iter().filter(|run| ended(run)).count();
            if let Some(bar) = progress.get(journey) {
                bar.set_message(format!("{done}/{} ended", mine.len()));
                bar.tick();
            }
        }
        // Done when every run has ended but the newborns' benefits, which pay until the child is five.
        let waiting = runs.iter().filter(|run| !ended(run) && !run.label.starts_with("newborn (")).count();
        // ...and the running benefits have paid a second month, to show the monthly cycle.
        let second_month =
            runs.iter().filter(|run| run.label.starts_with("newborn (") && !ended(run)).all(|run| {
                states[&run.instance]["variables"]["benefit"]["paymentsMade"].as_u64().unwrap_or(0) >= 2
            });
        if (waiting == 0 && stopped_one && second_relief && second_month) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for bar in progress.values() {
        bar.finish();
    }

    // The table.
    println!();
    println!(
        "{:<20} {:<30} {:>8} {:<56} {:>6} {:>7}",
        "journey", "case", "instance", "outcome", "steps", "time"
    );
    println!("{}", "-".repeat(134));
    let runs = lock(&demo.runs).clone();
    for run in &runs {
        let detail = demo.instance(run.instance).await?;
        let state = detail["state"].as_str().unwrap_or("?").to_owned();
        let steps = detail["nEvents"].as_u64().unwrap_or(0);
        let outcomes = demo.outcomes(run.instance).await?;
        let mut outcome = match (state.as_str(), outcomes.last()) {
            ("active", _) => {
                let benefit = &detail["variables"]["benefit"];
                match benefit["paymentsMade"].as_u64() {
                    Some(n) => format!(
                        "active: {n} payment(s), next {}",
                        benefit["nextPaymentDate"].as_str().unwrap_or("?")
                    ),
                    None => "active".to_owned(),
                }
            }
            (_, Some(last)) => {
                // A path that ran beside the main flow (an escalation) is worth naming too.
                let beside: Vec<&String> = outcomes
                    .iter()
                    .filter(|o| *o != last && o.to_lowercase().contains("escalated"))
                    .collect();
                match beside.first() {
                    Some(other) => format!("{last} (+ {other})"),
                    None => last.clone(),
                }
            }
            (state, None) => state.to_owned(),
        };
        if let Some(summary) = detail["variables"].get("summary").filter(|s| s.is_object()) {
            outcome = format!(
                "{outcome}: paid {}, refused {}, failed {}",
                summary["paid"], summary["refused"], summary["failed"]
            );
        }
        let ended_at = lock(&demo.ended_at).get(&run.instance).copied().unwrap_or_else(Instant::now);
        let elapsed = ended_at.saturating_duration_since(run.started);
        println!(
            "{:<20} {:<30} {:>8} {:<56} {:>6} {:>6.1}s",
            run.journey,
            truncate(&run.label, 30),
            run.instance,
            truncate(&outcome, 56),
            steps,
            elapsed.as_secs_f64()
        );
    }
    let paid: BTreeMap<String, usize> = sandbox.disbursements().iter().fold(BTreeMap::new(), |mut map, d| {
        *map.entry(d.request_id.clone()).or_default() += 1;
        map
    });
    let twice = paid.values().filter(|n| **n > 1).count();
    println!("{}", "-".repeat(134));
    println!(
        "sandbox: {} payment(s) ({} paid twice), {} message(s) sent, {} civil-register record(s) · {:.1} s in all",
        paid.len(),
        twice,
        sandbox.messages().len(),
        sandbox.registry("civil-register").len(),
        clock.elapsed().as_secs_f64()
    );
    let first = runs.first().map_or(1, |run| run.instance);
    println!();
    println!("Inspect the results (the store is kept in {}):", data.display());
    println!("  govflow audit verify --data {}", data.display());
    println!("  govflow audit replay --data {} {first}", data.display());
    println!("  govflow audit operations --data {}", data.display());
    println!(
        "  or run `govflow serve --sandbox --data {} --time-scale {}` and browse",
        data.display(),
        args.time_scale
    );
    println!("  GET /api/v1/instances, /api/v1/instances/{first}, /api/v1/instances/{first}/events, /processes (Workflow BB API)");
    running.stop().await?;
    if Instant::now() > deadline {
        bail!("some journeys had not ended after {} s (see the table)", args.timeout);
    }
    Ok(())
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
