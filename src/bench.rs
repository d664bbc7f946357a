//! `govflow bench`: the durable engine's throughput and latency, measured end to end on sled with flush on
//! (start → N service tasks run by an in-process no-op handler → end), with group commit on or off. It
//! reports medians and percentiles, never asserts: targets are checked by reading its output.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{InstanceKey, VariableMap};
use govflow_engine::shell::{JobOutcome, Shell};
use govflow_engine::store::keys::Tree;
use govflow_engine::store::kv::{CommitConfig, Kv};
use govflow_engine::store::sled::open_sled_with;
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (std::env::temp_dir().join(format!("govflow-bench-{}", std::process::id())), true),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let config = CommitConfig { group: !args.no_group_commit, window: Duration::from_micros(args.window_us) };
    let store = open_sled_with(&dir, config).with_context(|| format!("cannot open {}", dir.display()))?;
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
        Shell::builder(Arc::clone(&engine))
            .handler("noop", |_job| async { JobOutcome::Complete(VariableMap::new()) })
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
    let bytes = dir_bytes(&dir);
    let n = args.instances;
    println!(
        "bench: {n} instances of start → {} service task(s) → end, durable (flush + fdatasync per commit), group commit {}{}",
        args.tasks,
        if args.no_group_commit { "off" } else { "on" },
        match args.rate {
            Some(rate) => format!(", open loop at {rate}/s"),
            None => format!(", {} in flight", args.concurrency),
        }
    );
    println!(
        "throughput: {:.0} instances/s ({:.2} s)",
        n as f64 / elapsed.as_secs_f64(),
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
    if let Ok(shell) = Arc::try_unwrap(shell) {
        shell.shutdown().await;
    }
    if temporary {
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
