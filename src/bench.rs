//! `govflow bench`: the durable engine's throughput and latency, measured end to end on sled with flush on
//! (start → N service tasks run by an in-process no-op handler → end), with group commit on or off.
//! `govflow bench-timers`: the timer scheduler — start-up time and memory with many pending timers, and how
//! late timers falling due fire. Both report medians and percentiles and never assert: targets are checked
//! by reading their output. They must never touch a data directory they did not create fresh.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{Event, InstanceKey, VariableMap};
use govflow_engine::shell::{JobOutcome, Shell};
use govflow_engine::store::keys::Tree;
use govflow_engine::store::kv::{CommitConfig, Kv};
use govflow_engine::store::sled::{open_sled, open_sled_with};
use govflow_engine::store::Store;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Process instances to run.
    #[arg(long, default_value_t = 20_000)]
    pub instances: u64,
    /// Service tasks in the linear process.
    #[arg(long, default_value_t = 1)]
    pub tasks: usize,
    /// Instances in flight at once (closed loop), when no --rate is given.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Start instances at this rate per second (open loop) instead, to measure latency under a set load.
    #[arg(long)]
    pub rate: Option<u64>,
    /// One flush per commit (for comparison).
    #[arg(long)]
    pub no_group_commit: bool,
    /// Group-commit window in microseconds (0: flush what queued during the previous flush).
    #[arg(long, default_value_t = 0)]
    pub window_us: u64,
    /// The data directory (default: a fresh directory under the system temp dir, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print progress (throughput, RSS) every this many completed instances.
    #[arg(long, default_value_t = 0)]
    pub progress: u64,
    /// Who runs the jobs: a plain shell handler, an in-process connector (the `Connector` trait through
    /// its shell adapter), or in-process external workers (activate in batches, complete one by one).
    #[arg(long, value_enum, default_value_t = Via::Handler)]
    pub via: Via,
    /// Jobs a worker activates at once (`--via worker`).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Worker tasks polling at once (`--via worker`).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Run on the in-memory backend (same flusher and group commit, no disk): the engine's own ceiling.
    #[arg(long, conflicts_with = "dir")]
    pub memory: bool,
}

/// Who runs the benchmark's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Handler,
    Connector,
    Worker,
}

/// A connector that does nothing: measures the connector adapter and the engine, not a far side.
struct NoopConnector;

impl govflow_connectors::Connector for NoopConnector {
    fn job_types(&self) -> Vec<String> {
        vec!["noop".to_owned()]
    }

    fn invoke(&self, _request: govflow_connectors::ConnectorRequest) -> govflow_connectors::ConnectorFuture {
        Box::pin(async { Ok(govflow_connectors::Outcome::Complete(VariableMap::new())) })
    }
}

fn process(n_tasks: usize) -> String {
    let mut body = String::from(r#"<bpmn:startEvent id="start" />"#);
    let mut previous = "start".to_owned();
    for i in 1..=n_tasks {
        body.push_str(&format!(
            r#"<bpmn:sequenceFlow id="f{i}" sourceRef="{previous}" targetRef="t{i}" /><bpmn:serviceTask id="t{i}"><bpmn:extensionElements><zeebe:taskDefinition type="noop" /></bpmn:extensionElements></bpmn:serviceTask>"#
        ));
        previous = format!("t{i}");
    }
    body.push_str(&format!(
        r#"<bpmn:sequenceFlow id="f-end" sourceRef="{previous}" targetRef="end" /><bpmn:endEvent id="end" />"#
    ));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="bench-definitions" targetNamespace="http://govflow.example/bench"><bpmn:process id="bench" isExecutable="true">{body}</bpmn:process></bpmn:definitions>"#
    )
}

/// Resident and peak memory of this process, in MiB (Linux; zero elsewhere).
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Latencies in log-linear buckets (64 per power of two of microseconds, ≤ 1.1 % error), so memory does
/// not grow with the number of instances measured.
#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    max: Duration,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { counts: vec![0; 64 * 40], max: Duration::ZERO }
    }
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros < 64 {
            return micros as usize;
        }
        let power = 63 - micros.leading_zeros() as usize; // ≥ 6
        let mantissa = (micros >> (power - 6)) as usize & 63;
        (power - 5) * 64 + mantissa
    }

    fn lower_bound(bucket: usize) -> u64 {
        if bucket < 64 {
            return bucket as u64;
        }
        let power = bucket / 64 + 5;
        ((64 + (bucket % 64)) as u64) << (power - 6)
    }

    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = Self::bucket(micros).min(self.counts.len() - 1);
        self.counts[bucket] += 1;
        self.max = self.max.max(latency);
    }

    fn percentile(&self, p: f64) -> Duration {
        let total: u64 = self.counts.iter().sum();
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(Self::lower_bound(bucket));
            }
        }
        self.max
    }
}

/// Start and end times of each instance (either may be recorded first).
type Timings = Mutex<HashMap<InstanceKey, (Option<Instant>, Option<Instant>)>>;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (std::env::temp_dir().join(format!("govflow-bench-{}", std::process::id())), true),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(bench(args, dir.clone()));
    remove_after(runtime, temporary.then_some(dir.as_path()));
    result
}

/// Drops `runtime`, then removes `dir`. The store closes when the last reference to the engine goes, and
/// the shell's tasks hold one until their runtime is dropped: a directory removed before that is removed
/// under an open store (its background writer then fails, see `store::sled`).
fn remove_after(runtime: tokio::runtime::Runtime, dir: Option<&std::path::Path>) {
    drop(runtime);
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn bench(args: BenchArgs, dir: PathBuf) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&dir);
    let config = CommitConfig {
        group: !args.no_group_commit,
        window: Duration::from_micros(args.window_us),
        ..CommitConfig::default()
    };
    if args.memory {
        let store = govflow_engine::store::kv::KvStore::open_with(
            govflow_engine::store::memory::MemoryKv::default(),
            "memory",
            config,
        )?;
        return bench_on(args, store, None).await;
    }
    let store = open_sled_with(&dir, config).with_context(|| format!("cannot open {}", dir.display()))?;
    bench_on(args, store, Some(dir)).await
}

/// The benchmark on an opened store; `dir` for a store on disk.
async fn bench_on<K: Kv + 'static>(
    args: BenchArgs,
    store: govflow_engine::store::kv::KvStore<K>,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let engine = Arc::new(Engine::open(store, Arc::new(SystemClock))?);
    engine.deploy("bench.bpmn", process(args.tasks).as_bytes(), &Actor::user("bench", None))?;

    let timings: Arc<Timings> = Arc::default();
    let latencies: Arc<Mutex<Histogram>> = Arc::default();
    let completed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(if args.rate.is_some() { 1_000_000 } else { args.concurrency }));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let shell = {
        let (timings, latencies, completed, in_flight, all_done) =
            (timings.clone(), latencies.clone(), completed.clone(), in_flight.clone(), all_done.clone());
        let n = args.instances;
        let builder = Shell::builder(Arc::clone(&engine));
        let builder = match args.via {
            Via::Handler => {
                builder.handler("noop", |_job| async { JobOutcome::Complete(VariableMap::new()) })
            }
            Via::Connector => {
                let connectors: Vec<Arc<dyn govflow_connectors::Connector>> = vec![Arc::new(NoopConnector)];
                govflow_connectors::connector::register(builder, &connectors)
            }
            Via::Worker => builder,
        };
        builder
            .on_instance_ended(move |key, _| {
                let end = Instant::now();
                let mut timings = timings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = timings.entry(key).or_default();
                entry.1 = Some(end);
                if let (Some(start), Some(end)) = *entry {
                    timings.remove(&key);
                    latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(end - start);
                }
                in_flight.add_permits(1);
                if completed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    all_done.notify_one();
                }
            })
            .start()
            .await?
    };
    let shell = Arc::new(shell);
    if args.via == Via::Worker {
        for _ in 0..args.workers.max(1) {
            let (shell, batch) = (Arc::clone(&shell), args.batch.max(1));
            tokio::spawn(async move {
                loop {
                    let jobs = match shell
                        .activate_jobs("noop", batch, Duration::from_secs(60), Duration::from_millis(100))
                        .await
                    {
                        Ok(jobs) => jobs,
                        Err(error) => {
                            eprintln!("activation failed: {error}");
                            return;
                        }
                    };
                    let completions = jobs.into_iter().map(|job| {
                        let shell = Arc::clone(&shell);
                        tokio::spawn(async move {
                            shell
                                .complete_job(
                                    job.instance,
                                    job.job,
                                    VariableMap::new(),
                                    Actor::user("bench", None),
                                )
                                .await
                        })
                    });
                    for completion in completions.collect::<Vec<_>>() {
                        if let Ok(Err(error)) = completion.await {
                            eprintln!("completion failed: {error}");
                        }
                    }
                }
            });
        }
    }
    let started = Instant::now();
    let mut ticker = args.rate.map(|rate| {
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        (interval, rate)
    });
    let mut last_progress = (Instant::now(), 0u64);
    for i in 0..args.instances {
        if let Some((interval, rate)) = &mut ticker {
            // Open loop: instance i starts at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / *rate as f64);
            while Instant::now() < due {
                interval.tick().await;
            }
        }
        in_flight.acquire().await?.forget();
        let (shell, timings, latencies) = (shell.clone(), timings.clone(), latencies.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            match shell.start_instance("bench", VariableMap::new(), None, Actor::user("bench", None)).await {
                Ok(key) => {
                    let mut timings = timings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let entry = timings.entry(key).or_default();
                    entry.0 = Some(start);
                    if let (Some(start), Some(end)) = *entry {
                        timings.remove(&key);
                        latencies
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .record(end - start);
                    }
                }
                Err(error) => eprintln!("start failed: {error}"),
            }
        });
        if args.progress > 0 {
            let done = completed.load(Ordering::Acquire);
            if done >= last_progress.1 + args.progress {
                let rate = (done - last_progress.1) as f64 / last_progress.0.elapsed().as_secs_f64();
                let (rss, peak) = memory_mib();
                println!(
                    "progress: {done} completed, {rate:.0} instances/s, RSS {rss} MiB (peak {peak} MiB)"
                );
                last_progress = (Instant::now(), done);
            }
        }
    }
    if completed.load(Ordering::Acquire) < args.instances {
        all_done.notified().await;
    }
    let elapsed = started.elapsed();
    let stats = engine.store().commit_stats();
    let (rss, peak) = memory_mib();
    let latencies = latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let bytes = dir.as_ref().map_or(0, |dir| dir_bytes(dir));
    let n = args.instances;
    println!(
        "bench: {n} instances of start → {} service task(s) → end, {}, group commit {}{}",
        args.tasks,
        if dir.is_some() { "durable (flush + fdatasync per commit)" } else { "in memory (no disk)" },
        if args.no_group_commit { "off" } else { "on" },
        match args.rate {
            Some(rate) => format!(", open loop at {rate}/s"),
            None => format!(", {} in flight", args.concurrency),
        }
    );
    println!(
        "throughput: {:.0} instances/s, {:.0} jobs/s via {:?} ({:.2} s)",
        n as f64 / elapsed.as_secs_f64(),
        (n as f64 * args.tasks as f64) / elapsed.as_secs_f64(),
        args.via,
        elapsed.as_secs_f64()
    );
    println!(
        "latency start → end: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.percentile(0.5).as_secs_f64() * 1e3,
        latencies.percentile(0.99).as_secs_f64() * 1e3,
        latencies.max.as_secs_f64() * 1e3
    );
    println!(
        "commits: {} in {} flushes ({:.1} commits per flush, {:.0} flushes/s)",
        stats.n_commits,
        stats.n_flushes,
        stats.n_commits as f64 / stats.n_flushes.max(1) as f64,
        stats.n_flushes as f64 / elapsed.as_secs_f64()
    );
    println!("store: {} bytes on disk, {} bytes per instance", bytes, bytes / n.max(1));
    println!("memory: RSS {rss} MiB, peak {peak} MiB");
    let mut logical = Vec::new();
    for tree in Tree::ALL.into_iter().filter(|_| n <= 100_000) {
        let entries = engine.store().kv().scan(tree, &[], None, usize::MAX)?;
        let bytes: usize = entries.iter().map(|(key, value)| key.len() + value.len()).sum();
        if bytes > 0 {
            logical.push(format!("{} {}", tree.name(), bytes as u64 / n.max(1)));
        }
    }
    if !logical.is_empty() {
        println!("live data per instance (key + value bytes by tree): {}", logical.join(", "));
    }
    shell.shutdown().await;
    Ok(())
}

// -------------------------------------------------------------------------------------------------------
// govflow bench-timers
// -------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, clap::Args)]
pub struct TimerArgs {
    /// Pending mode: start this many instances waiting on timers due about 30 days ahead, close the store,
    /// then measure a cold start in a fresh process (start-up time, RSS). Without --pending and --due,
    /// both modes run with their defaults.
    #[arg(long, num_args = 0..=1, default_missing_value = "1000000")]
    pub pending: Option<u64>,
    /// Due mode: start this many instances whose timers fall due, spread evenly over --within seconds,
    /// and measure how late each fired.
    #[arg(long, num_args = 0..=1, default_missing_value = "100000")]
    pub due: Option<u64>,
    /// Due mode: the seconds over which the timers fall due.
    #[arg(long, default_value_t = 60)]
    pub within: u64,
    /// Due mode: the least seconds from the end of calibration to the first due timer. Raised when the
    /// measured start rate says starting every instance would take longer; every instance must be
    /// started before the first timer is due, so starting does not compete with firing.
    #[arg(long, default_value_t = 10)]
    pub lead: u64,
    /// Instances being started at once (closed loop).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Where the stores go (in `pending/` and `due/`, emptied first and kept afterwards); default: a
    /// fresh directory under the system temp dir, removed afterwards. With --cold-start-only: the store.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Pending mode: before the cold start, drop the store's files from the OS page cache (with `sync`
    /// and GNU `dd iflag=nocache count=0`), so the start-up reads from the disk as after a reboot.
    #[arg(long)]
    pub drop_cache: bool,
    /// Only open the store in --dir, as the engine does at start-up, and print the measurement as JSON
    /// (the pending mode runs this in a fresh process, so the creation phase does not inflate its RSS).
    #[arg(long, hide = true, requires = "dir")]
    pub cold_start_only: bool,
}

/// The BPMN id of the timer benchmark's process.
const TIMER_PROCESS: &str = "timers";

/// start → a timer catch event due at the instance's `dueAt` (an ISO 8601 date-time) → end.
fn timer_process() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="bench-timers" targetNamespace="http://govflow.example/bench"><bpmn:process id="{TIMER_PROCESS}" isExecutable="true"><bpmn:startEvent id="start" /><bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" /><bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDate>=dueAt</bpmn:timeDate></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent><bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="end" /><bpmn:endEvent id="end" /></bpmn:process></bpmn:definitions>"#
    )
}

/// A directory of stores, removed on drop when the benchmark created it (also after an error).
#[derive(Debug)]
struct DataDir {
    root: PathBuf,
    temporary: bool,
}

impl DataDir {
    fn new(dir: Option<&PathBuf>) -> DataDir {
        match dir {
            Some(root) => DataDir { root: root.clone(), temporary: false },
            None => DataDir {
                root: std::env::temp_dir().join(format!("govflow-bench-timers-{}", std::process::id())),
                temporary: true,
            },
        }
    }

    /// An empty directory `name` under the root, for one mode's store.
    fn fresh(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.root.join(name);
        match std::fs::remove_dir_all(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot empty {}", path.display()));
            }
            _ => {}
        }
        Ok(path)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

type SledStore = govflow_engine::store::kv::KvStore<govflow_engine::store::sled::SledKv>;

/// Microseconds in a second, and in a day.
const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

/// `unix_micros` (microseconds since 1970-01-01T00:00:00Z) as an RFC 3339 date-time in UTC with
/// microseconds: `2027-01-04T09:00:00.000000Z`. (The CLI does not depend on chrono.)
fn rfc3339_utc(unix_micros: i64) -> String {
    let (seconds, micros) = (unix_micros.div_euclid(SECOND), unix_micros.rem_euclid(SECOND));
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day number.
    let z = days + 719_468;
    let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z")
}

/// The variables of an instance due at `due_micros` (microseconds since the Unix epoch).
fn due_variables(due_micros: i64) -> VariableMap {
    VariableMap::from([("dueAt".to_owned(), serde_json::Value::String(rfc3339_utc(due_micros)))])
}

/// Starts `n` instances of the timer process, `concurrency` at a time, instance i due at `due_of(i)`;
/// returns once every start is durable. Prints progress every `progress` starts (0: never).
async fn start_instances(
    shell: &Arc<Shell<SledStore>>,
    n: u64,
    concurrency: usize,
    progress: u64,
    due_of: impl Fn(u64) -> i64,
) -> anyhow::Result<Duration> {
    let concurrency = concurrency.max(1);
    let in_flight = Arc::new(Semaphore::new(concurrency));
    let started = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let begin = Instant::now();
    let mut last_progress = (Instant::now(), 0u64);
    for i in 0..n {
        let permit = in_flight.clone().acquire_owned().await?;
        let (shell, n_started, first_error) = (shell.clone(), started.clone(), first_error.clone());
        let variables = due_variables(due_of(i));
        tokio::spawn(async move {
            let actor = Actor::user("bench", None);
            match shell.start_instance(TIMER_PROCESS, variables, None, actor).await {
                Ok(_) => {
                    n_started.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => {
                    let mut first = first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    first.get_or_insert_with(|| error.to_string());
                }
            }
            // The shell handle goes before the permit: once every permit is back, the caller holds the
            // only handle and can shut the shell down.
            drop(shell);
            drop(permit);
        });
        let done = started.load(Ordering::Acquire);
        if progress > 0 && done >= last_progress.1 + progress {
            let rate = (done - last_progress.1) as f64 / last_progress.0.elapsed().as_secs_f64();
            let (rss, peak) = memory_mib();
            println!("progress: {done} started, {rate:.0} instances/s, RSS {rss} MiB (peak {peak} MiB)");
            last_progress = (Instant::now(), done);
        }
    }
    // Every permit back: every start has finished.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    drop(in_flight.acquire_many(all).await?);
    if let Some(error) = first_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        anyhow::bail!("{} of {n} starts failed; the first: {error}", n - started.load(Ordering::Acquire));
    }
    Ok(begin.elapsed())
}

/// The `i`-th of `n` points spread evenly over `width` microseconds, from 0.
fn spread(width: i64, i: u64, n: u64) -> i64 {
    let point = i128::from(width) * i128::from(i) / i128::from(n.max(1));
    i64::try_from(point).unwrap_or(i64::MAX)
}

/// Opens a fresh store in `dir` with the timer process deployed.
fn open_fresh(dir: &std::path::Path) -> anyhow::Result<Arc<Engine<SledStore>>> {
    let store = open_sled(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let engine = Arc::new(Engine::open(store, Arc::new(SystemClock))?);
    engine.deploy("timers.bpmn", timer_process().as_bytes(), &Actor::user("bench", None))?;
    Ok(engine)
}

pub fn run_timers(args: TimerArgs) -> anyhow::Result<()> {
    if args.cold_start_only {
        let dir = args.dir.context("--cold-start-only needs --dir")?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let measured = runtime.block_on(cold_start(&dir))?;
        println!("{}", serde_json::to_string(&measured)?);
        return Ok(());
    }
    let (pending, due) = match (args.pending, args.due) {
        (None, None) => (Some(1_000_000), Some(100_000)),
        chosen => chosen,
    };
    anyhow::ensure!(pending != Some(0) && due != Some(0), "give at least one instance");
    let data = DataDir::new(args.dir.as_ref());
    if let Some(n) = pending {
        let dir = data.fresh("pending")?;
        bench_pending(n, &args, &dir)?;
        if data.temporary {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if let Some(n) = due {
        let dir = data.fresh("due")?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(bench_due(n, &args, &dir))?;
    }
    Ok(())
}

/// What a cold start measured (printed as JSON by the child process, read by the parent).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ColdStart {
    /// `open_sled`: sled's recovery and the store's counters.
    open_store_ms: f64,
    /// `Engine::open`: compiling the deployed processes.
    open_engine_ms: f64,
    /// `Shell::start`: recovery of the outbox, open jobs and the timer window.
    start_shell_ms: f64,
    /// VmRSS and VmHWM right after the shell started.
    rss_mib: u64,
    peak_mib: u64,
    /// VmRSS once the shell has run for `SETTLE` with nothing to do: the allocator returns the memory
    /// sled's recovery freed only after its purge delay (mimalloc: 1 s), so the first reading counts it.
    #[serde(default)]
    settled_rss_mib: u64,
    /// VmRSS after the shell then started `LIGHT_LOAD` more instances (the engine at work, which lets the
    /// allocator return what it still held), and VmHWM then.
    #[serde(default)]
    loaded_rss_mib: u64,
    #[serde(default)]
    loaded_peak_mib: u64,
    /// Entries in the store's timer index (counted after the measurement).
    n_timers: u64,
}

/// How long the cold start lets the running shell settle before reading its memory again.
const SETTLE: Duration = Duration::from_secs(3);

/// Instances the cold start then starts (due 30 days ahead too) before reading its memory a third time.
const LIGHT_LOAD: u64 = 1_000;

/// Opens the store in `dir` as the engine starts up: store, engine, shell (which loads the timer window).
async fn cold_start(dir: &std::path::Path) -> anyhow::Result<ColdStart> {
    let begin = Instant::now();
    let store = open_sled(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let open_store = begin.elapsed();
    let engine = Arc::new(Engine::open(store, Arc::new(SystemClock))?);
    let open_engine = begin.elapsed();
    let shell = Arc::new(Shell::builder(Arc::clone(&engine)).start().await?);
    let start_shell = begin.elapsed();
    let (rss_mib, peak_mib) = memory_mib();
    tokio::time::sleep(SETTLE).await;
    let (settled_rss_mib, _) = memory_mib();
    let base = engine.now().timestamp_micros() + 30 * DAY;
    start_instances(&shell, LIGHT_LOAD, 64, 0, |i| base + spread(DAY, i, LIGHT_LOAD)).await?;
    let (loaded_rss_mib, loaded_peak_mib) = memory_mib();
    let mut n_timers = 0u64;
    let mut from = Vec::new();
    loop {
        let page = engine.store().kv().scan(Tree::Timers, &from, None, 10_000)?;
        n_timers += page.len() as u64;
        match page.last() {
            Some((key, _)) if page.len() == 10_000 => {
                from = key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    shell.shutdown().await;
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    Ok(ColdStart {
        open_store_ms: ms(open_store),
        open_engine_ms: ms(open_engine - open_store),
        start_shell_ms: ms(start_shell - open_engine),
        rss_mib,
        peak_mib,
        settled_rss_mib,
        loaded_rss_mib,
        loaded_peak_mib,
        n_timers,
    })
}

/// Writes the files under `dir` to disk and drops them from the OS page cache (`sync FILE`, then GNU
/// `dd if=FILE iflag=nocache count=0`, which advises the kernel to drop the whole file), so that the next
/// open reads from the disk. Other files' cache is left alone.
fn drop_from_page_cache(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            drop_from_page_cache(&path)?;
            continue;
        }
        let synced = std::process::Command::new("sync").arg(&path).status().context("cannot run sync")?;
        let mut input = std::ffi::OsString::from("if=");
        input.push(&path);
        let dropped = std::process::Command::new("dd")
            .args([input.as_os_str(), "iflag=nocache".as_ref(), "count=0".as_ref(), "status=none".as_ref()])
            .status()
            .context("cannot run dd")?;
        anyhow::ensure!(
            synced.success() && dropped.success(),
            "cannot drop {} from the page cache",
            path.display()
        );
    }
    Ok(())
}

/// Runs `govflow bench-timers --cold-start-only --dir DIR` in a fresh process; its measurement and how
/// long the whole process took.
fn cold_start_in_child(dir: &std::path::Path) -> anyhow::Result<(ColdStart, Duration)> {
    let exe = std::env::current_exe().context("cannot find the govflow binary to run the cold start")?;
    let begin = Instant::now();
    let output = std::process::Command::new(&exe)
        .arg("bench-timers")
        .arg("--cold-start-only")
        .arg("--dir")
        .arg(dir)
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let wall = begin.elapsed();
    if !output.status.success() {
        anyhow::bail!(
            "the cold start failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("the cold start printed nothing")?;
    let cold: ColdStart =
        serde_json::from_str(line).with_context(|| format!("cannot read the cold start's output: {line}"))?;
    Ok((cold, wall))
}

/// Pending mode: `n` timers ~30 days ahead, then a cold start in a fresh process.
fn bench_pending(n: u64, args: &TimerArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    // Creation, in a runtime of its own: dropping it ends the shell's tasks, so the last engine handle
    // goes and sled closes the directory before the child opens it.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (took, rss, peak, stats) = runtime.block_on(async {
        let engine = open_fresh(dir)?;
        let shell = Arc::new(Shell::builder(Arc::clone(&engine)).start().await?);
        // Due 30 days from now, spread evenly over one day.
        let base = engine.now().timestamp_micros() + 30 * DAY;
        let due_of = |i: u64| base + spread(DAY, i, n);
        let took = start_instances(&shell, n, args.concurrency, (n / 10).max(1), due_of).await?;
        let (rss, peak) = memory_mib();
        let stats = engine.store().commit_stats();
        shell.shutdown().await;
        anyhow::Ok((took, rss, peak, stats))
    })?;
    // The store closes here: it writes what sled lacks and has sled write a fresh snapshot.
    let closing = Instant::now();
    drop(runtime);
    let close = closing.elapsed();
    let bytes = dir_bytes(dir);
    println!("bench-timers, pending: {n} instances of start → timer catch event (timeDate = dueAt, 30 days ahead) → end, durable, group commit, {} in flight", args.concurrency);
    println!(
        "creation: {:.0} instances/s ({:.1} s, {:.1} commits per flush); store {:.2} GB on disk, {} bytes per instance",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        stats.n_commits as f64 / stats.n_flushes.max(1) as f64,
        bytes as f64 / 1e9,
        bytes / n.max(1)
    );
    println!("memory after creating the timers (same process): RSS {rss} MiB, peak {peak} MiB");
    println!(
        "close after creating them (shell, engine, store with sled's snapshot): {:.2} s",
        close.as_secs_f64()
    );

    if args.drop_cache {
        drop_from_page_cache(dir)?;
    }
    let (cold, wall) = cold_start_in_child(dir)?;
    println!(
        "cold start (fresh process{}): {:.2} s = open store {:.2} s + open engine {:.3} s + start shell {:.3} s ({:.2} s wall for the whole process)",
        if args.drop_cache { ", store files dropped from the page cache" } else { "" },
        (cold.open_store_ms + cold.open_engine_ms + cold.start_shell_ms) / 1e3,
        cold.open_store_ms / 1e3,
        cold.open_engine_ms / 1e3,
        cold.start_shell_ms / 1e3,
        wall.as_secs_f64()
    );
    println!(
        "memory after the cold start: RSS {} MiB, peak {} MiB; RSS {} MiB once the running shell settled ({} s); RSS {} MiB, peak {} MiB after it started {} more instances; {} timers in the store",
        cold.rss_mib,
        cold.peak_mib,
        cold.settled_rss_mib,
        SETTLE.as_secs(),
        cold.loaded_rss_mib,
        cold.loaded_peak_mib,
        LIGHT_LOAD,
        cold.n_timers
    );
    Ok(())
}

/// Due mode: `n` timers falling due over `args.within` seconds, fired by a running shell; lateness from
/// the audit records (`TimerFired.at` − `TimerScheduled.due`).
async fn bench_due(n: u64, args: &TimerArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let engine = open_fresh(dir)?;
    let clock = engine.clock();
    // Each ended instance, with when the shell heard of its durable end (µs since the epoch).
    let ended: Arc<Mutex<Vec<(InstanceKey, i64)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(usize::try_from(n).unwrap_or(0))));
    let n_ended = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let shell = {
        let (ended, n_ended, all_done) = (ended.clone(), n_ended.clone(), all_done.clone());
        Shell::builder(Arc::clone(&engine))
            .on_instance_ended(move |key, _| {
                let at = clock.now().timestamp_micros();
                ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((key, at));
                if n_ended.fetch_add(1, Ordering::AcqRel) + 1 == n {
                    all_done.notify_one();
                }
            })
            .start()
            .await?
    };
    let shell = Arc::new(shell);

    // Calibration: the start rate decides the lead time. These instances wait 30 days and never end.
    let n_probe = (n / 20).clamp(1, 5_000);
    let far = engine.now().timestamp_micros() + 30 * DAY;
    let probe = start_instances(&shell, n_probe, args.concurrency, 0, |_| far).await?;
    let probe_rate = n_probe as f64 / probe.as_secs_f64();
    let needed = (1.5 * n as f64 / probe_rate).ceil() as u64 + 1;
    let lead = args.lead.max(needed);
    let within = i64::try_from(args.within).unwrap_or(i64::MAX / SECOND) * SECOND;
    let first_due = engine.now().timestamp_micros() + i64::try_from(lead).unwrap_or(0) * SECOND;
    let due_of = |i: u64| first_due + spread(within, i, n);
    println!(
        "bench-timers, due: {n} instances of start → timer catch event (timeDate = dueAt) → end, due evenly over {} s starting {lead} s from now (start rate {probe_rate:.0}/s measured on {n_probe} instances{}), {} in flight",
        args.within,
        if lead > args.lead { format!("; --lead {} raised to {lead}", args.lead) } else { String::new() },
        args.concurrency
    );
    let took = start_instances(&shell, n, args.concurrency, 0, due_of).await?;
    let margin = (first_due - engine.now().timestamp_micros()) as f64 / 1e6;
    println!(
        "starting: {:.0} instances/s ({:.1} s); the first timer was due {margin:.1} s after the last start{}",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        if margin < 0.0 { " — starting overlapped firing: raise --lead" } else { "" }
    );
    // What the shell's periodic reload of its timer window costs at most: every timer of the run is due
    // within the horizon now. Timed here, before the first is due, so it delays nothing.
    let begin = Instant::now();
    let until = engine.now() + Duration::from_secs(lead + args.within + 1);
    let n_loaded = engine.store().due_timers(until, usize::MAX)?.len();
    println!(
        "reading every due timer from the store (what a window reload reads): {n_loaded} in {:.0} ms",
        begin.elapsed().as_secs_f64() * 1e3
    );
    let deadline = Duration::from_secs(lead + args.within + 120);
    if n_ended.load(Ordering::Acquire) < n
        && tokio::time::timeout(deadline, all_done.notified()).await.is_err()
    {
        println!(
            "warning: only {} of {n} instances ended within {deadline:?}",
            n_ended.load(Ordering::Acquire)
        );
    }
    let ended = std::mem::take(&mut *ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let stats = engine.store().commit_stats();
    let (rss, peak) = memory_mib();

    let Lateness { fired: fired_late, durable: durable_late, fired_span, slow_by_second, n_unmatched } =
        lateness(&engine, &ended, first_due)?;
    let n_early = fired_late.iter().filter(|micros| **micros < 0).count();
    let span = fired_span.map_or(0.0, |(first, last)| (last - first) as f64 / 1e6);
    println!(
        "fired: {} timers in {span:.1} s ({:.0}/s); {} ended instances without a TimerScheduled/TimerFired pair",
        fired_late.len(),
        fired_late.len() as f64 / span.max(1e-3),
        n_unmatched
    );
    println!("lateness, TimerFired.at − due: {}; early: {n_early}", lateness_summary(&fired_late));
    println!("lateness, durable end (hook) − due: {}", lateness_summary(&durable_late));
    if !slow_by_second.is_empty() {
        let seconds: Vec<String> =
            slow_by_second.iter().map(|(second, count)| format!("{second} s: {count}")).collect();
        println!(
            "fired more than {} ms late: {} timers; by the second of the window they were due in: {}",
            SLOW_MICROS / 1000,
            slow_by_second.values().sum::<u64>(),
            seconds.join(", ")
        );
    }
    println!(
        "commits: {} in {} flushes ({:.1} commits per flush)",
        stats.n_commits,
        stats.n_flushes,
        stats.n_commits as f64 / stats.n_flushes.max(1) as f64
    );
    println!("memory: RSS {rss} MiB, peak {peak} MiB");
    shell.shutdown().await;
    Ok(())
}

/// Timers fired more than this many microseconds late are counted by the second they were due in.
const SLOW_MICROS: i64 = 10_000;

/// How late the timers fired, in microseconds, each list sorted.
#[derive(Debug)]
struct Lateness {
    /// `TimerFired.at` − `TimerScheduled.due`: when the engine decided to fire (never negative, unless
    /// a timer fired early).
    fired: Vec<i64>,
    /// When the shell heard of the instance's durable end − due: what a user of the instance sees.
    durable: Vec<i64>,
    /// The first and last `TimerFired.at`.
    fired_span: Option<(i64, i64)>,
    /// Timers fired more than `SLOW_MICROS` late, by the second of the window (from `first_due`) they
    /// were due in: clusters point at pauses of the scheduler.
    slow_by_second: BTreeMap<i64, u64>,
    /// Ended instances whose records lack a TimerScheduled or a TimerFired.
    n_unmatched: u64,
}

/// Reads each ended instance's audit records (`ended`: instance and when its durable end was heard, µs
/// since the epoch) and measures its timer's lateness.
fn lateness(
    engine: &Engine<SledStore>,
    ended: &[(InstanceKey, i64)],
    first_due: i64,
) -> anyhow::Result<Lateness> {
    let mut lateness = Lateness {
        fired: Vec::with_capacity(ended.len()),
        durable: Vec::with_capacity(ended.len()),
        fired_span: None,
        slow_by_second: BTreeMap::new(),
        n_unmatched: 0,
    };
    for (key, ended_at) in ended {
        let records = engine.store().records(*key, 1, usize::MAX)?;
        let due = records.iter().find_map(|record| match &record.event {
            Event::TimerScheduled { due, .. } => Some(due.timestamp_micros()),
            _ => None,
        });
        let fired = records.iter().find_map(|record| match &record.event {
            Event::TimerFired { .. } => Some(record.at.timestamp_micros()),
            _ => None,
        });
        let (Some(due), Some(fired)) = (due, fired) else {
            lateness.n_unmatched += 1;
            continue;
        };
        if fired - due > SLOW_MICROS {
            *lateness.slow_by_second.entry((due - first_due).div_euclid(SECOND)).or_default() += 1;
        }
        lateness.fired.push(fired - due);
        lateness.durable.push(ended_at - due);
        lateness.fired_span = Some(match lateness.fired_span {
            None => (fired, fired),
            Some((first, last)) => (first.min(fired), last.max(fired)),
        });
    }
    lateness.fired.sort_unstable();
    lateness.durable.sort_unstable();
    Ok(lateness)
}

/// p50, p99, p99.9, max and min of sorted microsecond values, in milliseconds.
fn lateness_summary(sorted_micros: &[i64]) -> String {
    let at = |p: f64| {
        let rank = ((sorted_micros.len() as f64) * p).ceil().max(1.0) as usize;
        sorted_micros.get(rank - 1).map_or(f64::NAN, |micros| *micros as f64 / 1e3)
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, min {:.2} ms",
        at(0.5),
        at(0.99),
        at(0.999),
        sorted_micros.last().map_or(f64::NAN, |micros| *micros as f64 / 1e3),
        sorted_micros.first().map_or(f64::NAN, |micros| *micros as f64 / 1e3)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_match_chrono() {
        for micros in
            [0, 1, -1, 951_782_400_000_000, 1_798_761_599_999_999, 4_107_542_400_123_456, -86_400 * SECOND]
        {
            let expected = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(rfc3339_utc(micros), expected, "{micros}");
        }
        let mut day = -800 * 365 * DAY;
        while day < 800 * 365 * DAY {
            let expected = chrono::DateTime::from_timestamp_micros(day)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(rfc3339_utc(day), expected);
            day += 7 * DAY + 3_723 * SECOND + 17;
        }
    }

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for micros in [0, 1, 63, 64, 65, 127, 128, 1_000, 33_333, 1_000_000, 60_000_000] {
            let bucket = Histogram::bucket(micros);
            assert!(bucket >= last, "{micros}");
            last = bucket;
            let low = Histogram::lower_bound(bucket);
            assert!(low <= micros && micros - low <= micros / 64, "{micros}: bucket starts at {low}");
        }
        let mut histogram = Histogram::default();
        for millis in 1..=100 {
            histogram.record(Duration::from_millis(millis));
        }
        let p99 = histogram.percentile(0.99).as_secs_f64() * 1e3;
        assert!((98.0..=99.0).contains(&p99), "{p99}");
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerBenchArgs {
    /// Process instances to run (each with --tasks jobs for the workers).
    #[arg(long, default_value_t = 20_000)]
    pub instances: u64,
    /// Service tasks in the linear process.
    #[arg(long, default_value_t = 1)]
    pub tasks: usize,
    /// Worker loops polling the HTTP API at once.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Jobs one activation asks for.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Instances in flight at once (started through the library, so the HTTP figure is the workers').
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
}

/// `govflow bench-workers`: jobs through the HTTP external-worker API — the engine on sled with the API
/// on a loopback socket in this process, instances started through the library, and worker loops that
/// activate jobs in batches (`POST /api/v1/jobs/activate`) and complete each (`POST .../complete`) over
/// keep-alive HTTP/1.1 connections.
pub fn run_workers(args: WorkerBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("govflow-bench-workers-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(workers_bench(args, &dir));
    remove_after(runtime, Some(&dir));
    result
}

async fn workers_bench(args: WorkerBenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let engine = Arc::new(Engine::open(open_sled(dir)?, Arc::new(SystemClock))?);
    engine.deploy("bench.bpmn", process(args.tasks).as_bytes(), &Actor::user("bench", None))?;
    let completed = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let in_flight = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let shell = {
        let (completed, all_done, in_flight, n) =
            (completed.clone(), all_done.clone(), in_flight.clone(), args.instances);
        Arc::new(
            Shell::builder(Arc::clone(&engine))
                .on_instance_ended(move |_, _| {
                    in_flight.add_permits(1);
                    if completed.fetch_add(1, Ordering::AcqRel) + 1 == n {
                        all_done.notify_one();
                    }
                })
                .start()
                .await?,
        )
    };
    let token = govflow_designer_api::new_token();
    let mut config = govflow_designer_api::ApiConfig::default();
    config.auth.tokens.push(govflow_designer_api::TokenEntry {
        sha256: govflow_designer_api::hash_token(&token),
        role: govflow_designer_api::Role::Worker,
        user: "bench-worker".to_owned(),
        affiliation: None,
    });
    let state = govflow_designer_api::AppState::new(Arc::clone(&engine), Arc::clone(&shell), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, govflow_designer_api::app(state)).await;
    });
    let requests = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build()?;
    for _ in 0..args.workers.max(1) {
        let (client, base, token, requests, batch) =
            (client.clone(), base.clone(), token.clone(), requests.clone(), args.batch.max(1));
        tokio::spawn(async move {
            loop {
                let activated = client
                    .post(format!("{base}/api/v1/jobs/activate"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"type": "noop", "maxJobs": batch, "lease": 60_000, "requestTimeout": 1_000}))
                    .send()
                    .await;
                requests.fetch_add(1, Ordering::Relaxed);
                let jobs: Vec<String> = match activated {
                    Ok(response) => match response.json::<serde_json::Value>().await {
                        Ok(body) => body["jobs"]
                            .as_array()
                            .map(|jobs| {
                                jobs.iter().filter_map(|job| job["id"].as_str().map(str::to_owned)).collect()
                            })
                            .unwrap_or_default(),
                        Err(error) => {
                            eprintln!("activation answer unreadable: {error}");
                            continue;
                        }
                    },
                    Err(error) => {
                        eprintln!("activation failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let completions: Vec<_> = jobs
                    .into_iter()
                    .map(|id| {
                        let (client, base, token, requests) =
                            (client.clone(), base.clone(), token.clone(), requests.clone());
                        tokio::spawn(async move {
                            let answer = client
                                .post(format!("{base}/api/v1/jobs/{id}/complete"))
                                .bearer_auth(&token)
                                .json(&serde_json::json!({"variables": {}}))
                                .send()
                                .await;
                            requests.fetch_add(1, Ordering::Relaxed);
                            match answer {
                                Ok(response) if response.status().is_success() => {}
                                Ok(response) => eprintln!("completion of {id}: HTTP {}", response.status()),
                                Err(error) => eprintln!("completion of {id} failed: {error}"),
                            }
                        })
                    })
                    .collect();
                for completion in completions {
                    let _ = completion.await;
                }
            }
        });
    }
    let started = Instant::now();
    for _ in 0..args.instances {
        in_flight.acquire().await?.forget();
        let shell = Arc::clone(&shell);
        tokio::spawn(async move {
            if let Err(error) =
                shell.start_instance("bench", VariableMap::new(), None, Actor::user("bench", None)).await
            {
                eprintln!("start failed: {error}");
            }
        });
    }
    if completed.load(Ordering::Acquire) < args.instances {
        all_done.notified().await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = args.instances as f64 * args.tasks as f64;
    println!(
        "bench-workers: {} instances × {} task(s) through the HTTP worker API, {} workers, batches of {}, durable on sled",
        args.instances, args.tasks, args.workers, args.batch
    );
    println!(
        "throughput: {:.0} jobs/s, {:.0} HTTP requests/s ({:.2} s)",
        jobs / elapsed,
        requests.load(Ordering::Relaxed) as f64 / elapsed,
        elapsed
    );
    shell.shutdown().await;
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeBenchArgs {
    /// The port to listen on.
    #[arg(long, default_value_t = 8088)]
    pub port: u16,
    /// Service tasks in the linear process `bench` (run by an in-process no-op connector).
    #[arg(long, default_value_t = 1)]
    pub tasks: usize,
}

/// `govflow bench-serve`: the HTTP API on a fresh sled store with process `bench` deployed and its jobs
/// run by an in-process no-op connector, for a load tool outside this process (`scripts/bench-http`
/// drives it with wrk). Prints an operator token; stops on Ctrl-C or SIGTERM and removes its store.
pub fn run_serve(args: ServeBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("govflow-bench-serve-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Arc::new(Engine::open(open_sled(&dir)?, Arc::new(SystemClock))?);
        engine.deploy("bench.bpmn", process(args.tasks).as_bytes(), &Actor::user("bench", None))?;
        let waiters = govflow_designer_api::Waiters::new();
        let connectors: Vec<Arc<dyn govflow_connectors::Connector>> = vec![Arc::new(NoopConnector)];
        let builder = Shell::builder(Arc::clone(&engine)).on_instance_ended(waiters.hook());
        let shell = Arc::new(govflow_connectors::connector::register(builder, &connectors).start().await?);
        let token = govflow_designer_api::new_token();
        let mut config = govflow_designer_api::ApiConfig::default();
        config.auth.tokens.push(govflow_designer_api::TokenEntry {
            sha256: govflow_designer_api::hash_token(&token),
            role: govflow_designer_api::Role::Operator,
            user: "bench".to_owned(),
            affiliation: None,
        });
        let state = govflow_designer_api::AppState::with_waiters(
            Arc::clone(&engine),
            Arc::clone(&shell),
            config,
            waiters,
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        println!("token: {token}");
        println!("listening: http://{}", listener.local_addr()?);
        axum::serve(listener, govflow_designer_api::app(state))
            .with_graceful_shutdown(crate::serve::shutdown_signal())
            .await?;
        shell.shutdown().await;
        let started =
            engine.instances(&govflow_engine::store::InstanceFilter::default(), None, usize::MAX)?.len();
        println!("instances started: {started}");
        Ok(())
    });
    remove_after(runtime, Some(&dir));
    result
}
