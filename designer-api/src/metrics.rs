//! Counters and histograms for `/metrics`, in the Prometheus text format (version 0.0.4), written by
//! hand: a handful of series does not need a metrics library. Label values are escaped; label sets are
//! bounded (processes and job types are deployed names, routes are templates, never raw paths).
//!
//! What is counted here is what the API sees: requests, starts made through the API (and by messages
//! published through it), instance endings (from the shell's hook, so every instance), and the
//! latency of external workers' jobs from activation to completion. Gauges (open incidents, open user
//! tasks, definitions) are read from the store at scrape time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use govflow_engine::runtime::InstanceStatus;

use crate::state::lock;

/// Bucket upper bounds in seconds, for HTTP and job latencies.
const BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// Activations remembered for the job latency histogram; older ones are dropped (a worker that never
/// answers must not grow the map without bound).
const MAX_ACTIVATIONS: usize = 100_000;

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Gauges read from the store and the shell when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Open incidents by process.
    pub incidents_open: BTreeMap<String, u64>,
    pub user_tasks_open: u64,
    /// Deployed definitions: (enabled, disabled).
    pub definitions: (u64, u64),
    pub jobs_in_flight: u64,
    pub sync_start_waiters: u64,
    /// True when a gauge scan stopped at its cap (the numbers are lower bounds then).
    pub truncated: bool,
    /// The store's group commit: (flushes, commits, seconds spent flushing), when it counts them.
    pub commits: Option<(u64, u64, f64)>,
    /// Timers fired, their total and greatest lateness in seconds.
    pub timers: (u64, f64, f64),
    /// In-process connector (handler) runs by job type: (count, total seconds).
    pub handled: BTreeMap<String, (u64, f64)>,
}

/// The API's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    http_requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    http_latency: Mutex<BTreeMap<String, Histogram>>,
    started: Mutex<BTreeMap<String, u64>>,
    ended: Mutex<BTreeMap<(String, &'static str), u64>>,
    jobs_activated: Mutex<BTreeMap<String, u64>>,
    jobs_finished: Mutex<BTreeMap<(String, &'static str), u64>>,
    job_latency: Mutex<BTreeMap<String, Histogram>>,
    activations: Mutex<HashMap<String, (String, Instant)>>,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.http_requests).entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        lock(&self.http_latency).entry(route.to_owned()).or_default().observe(elapsed.as_secs_f64());
    }

    pub fn instance_started(&self, process_id: &str) {
        *lock(&self.started).entry(process_id.to_owned()).or_default() += 1;
    }

    pub fn instance_ended(&self, process_id: &str, status: InstanceStatus) {
        let status = match status {
            InstanceStatus::Completed => "completed",
            InstanceStatus::Cancelled => "cancelled",
            InstanceStatus::Active | InstanceStatus::NotStarted => return,
        };
        *lock(&self.ended).entry((process_id.to_owned(), status)).or_default() += 1;
    }

    /// A job handed to an external worker (`id` is its idempotency key).
    pub fn job_activated(&self, id: &str, job_type: &str) {
        *lock(&self.jobs_activated).entry(job_type.to_owned()).or_default() += 1;
        let mut activations = lock(&self.activations);
        if activations.len() >= MAX_ACTIVATIONS {
            let cutoff = Instant::now().checked_sub(Duration::from_secs(3600));
            activations.retain(|_, (_, at)| cutoff.is_none_or(|cutoff| *at > cutoff));
            if activations.len() >= MAX_ACTIVATIONS {
                activations.clear();
            }
        }
        activations.insert(id.to_owned(), (job_type.to_owned(), Instant::now()));
    }

    /// A worker's answer for job `id`: `completed`, `failed` or `error`.
    pub fn job_finished(&self, id: &str, outcome: &'static str) {
        let Some((job_type, at)) = lock(&self.activations).remove(id) else { return };
        *lock(&self.jobs_finished).entry((job_type.clone(), outcome)).or_default() += 1;
        lock(&self.job_latency).entry(job_type).or_default().observe(at.elapsed().as_secs_f64());
    }

    /// The whole exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "govflow_http_requests_total",
            "counter",
            "HTTP requests answered, by route template and status.",
        );
        for ((method, route, status), n) in lock(&self.http_requests).iter() {
            let labels =
                format!("method=\"{}\",route=\"{}\",status=\"{status}\"", escape(method), escape(route));
            let _ = writeln!(out, "govflow_http_requests_total{{{labels}}} {n}");
        }
        header(
            &mut out,
            "govflow_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route template.",
        );
        for (route, histogram) in lock(&self.http_latency).iter() {
            histogram.render(
                &mut out,
                "govflow_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
            );
        }
        header(
            &mut out,
            "govflow_instances_started_total",
            "counter",
            "Instances started through this API (and by messages published through it), by process.",
        );
        for (process, n) in lock(&self.started).iter() {
            let _ = writeln!(out, "govflow_instances_started_total{{process=\"{}\"}} {n}", escape(process));
        }
        header(
            &mut out,
            "govflow_instances_ended_total",
            "counter",
            "Instances that completed or were cancelled, by process.",
        );
        for ((process, status), n) in lock(&self.ended).iter() {
            let _ = writeln!(
                out,
                "govflow_instances_ended_total{{process=\"{}\",status=\"{status}\"}} {n}",
                escape(process)
            );
        }
        header(
            &mut out,
            "govflow_incidents_open",
            "gauge",
            "Open incidents (instances that failed and wait for an operator), by process.",
        );
        for (process, n) in &gauges.incidents_open {
            let _ = writeln!(out, "govflow_incidents_open{{process=\"{}\"}} {n}", escape(process));
        }
        header(&mut out, "govflow_user_tasks_open", "gauge", "Open user tasks.");
        let _ = writeln!(out, "govflow_user_tasks_open {}", gauges.user_tasks_open);
        header(
            &mut out,
            "govflow_definitions",
            "gauge",
            "Deployed process and decision versions, by whether they are enabled.",
        );
        let _ = writeln!(out, "govflow_definitions{{enabled=\"true\"}} {}", gauges.definitions.0);
        let _ = writeln!(out, "govflow_definitions{{enabled=\"false\"}} {}", gauges.definitions.1);
        header(
            &mut out,
            "govflow_jobs_activated_total",
            "counter",
            "Jobs handed to external workers, by job type.",
        );
        for (job_type, n) in lock(&self.jobs_activated).iter() {
            let _ = writeln!(out, "govflow_jobs_activated_total{{type=\"{}\"}} {n}", escape(job_type));
        }
        header(
            &mut out,
            "govflow_jobs_finished_total",
            "counter",
            "External workers' answers, by job type and outcome.",
        );
        for ((job_type, outcome), n) in lock(&self.jobs_finished).iter() {
            let _ = writeln!(
                out,
                "govflow_jobs_finished_total{{type=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(job_type)
            );
        }
        header(
            &mut out,
            "govflow_job_duration_seconds",
            "histogram",
            "External workers' jobs from activation to answer, by job type.",
        );
        for (job_type, histogram) in lock(&self.job_latency).iter() {
            histogram.render(
                &mut out,
                "govflow_job_duration_seconds",
                &format!("type=\"{}\"", escape(job_type)),
            );
        }
        header(
            &mut out,
            "govflow_jobs_in_flight",
            "gauge",
            "Jobs running on in-process handlers (connectors) now.",
        );
        let _ = writeln!(out, "govflow_jobs_in_flight {}", gauges.jobs_in_flight);
        header(
            &mut out,
            "govflow_sync_start_waiters",
            "gauge",
            "Synchronous starts waiting for their instance to end.",
        );
        let _ = writeln!(out, "govflow_sync_start_waiters {}", gauges.sync_start_waiters);
        header(
            &mut out,
            "govflow_metrics_scan_truncated",
            "gauge",
            "1 when a gauge scan stopped at its cap (gauges are lower bounds).",
        );
        let _ = writeln!(out, "govflow_metrics_scan_truncated {}", u8::from(gauges.truncated));
        header(
            &mut out,
            "govflow_connector_job_seconds",
            "summary",
            "Time in-process connectors took per job, by job type (sum and count).",
        );
        for (job_type, (count, seconds)) in &gauges.handled {
            let _ =
                writeln!(out, "govflow_connector_job_seconds_sum{{type=\"{}\"}} {seconds}", escape(job_type));
            let _ =
                writeln!(out, "govflow_connector_job_seconds_count{{type=\"{}\"}} {count}", escape(job_type));
        }
        let (fired, late_total, late_max) = gauges.timers;
        header(&mut out, "govflow_timers_fired_total", "counter", "Timers fired since start.");
        let _ = writeln!(out, "govflow_timers_fired_total {fired}");
        header(
            &mut out,
            "govflow_timer_lateness_seconds_total",
            "counter",
            "Sum of how late timers fired after their due time; divided by timers fired, the mean.",
        );
        let _ = writeln!(out, "govflow_timer_lateness_seconds_total {late_total}");
        header(
            &mut out,
            "govflow_timer_lateness_seconds_max",
            "gauge",
            "The latest any timer fired, in seconds.",
        );
        let _ = writeln!(out, "govflow_timer_lateness_seconds_max {late_max}");
        if let Some((flushes, commits, seconds)) = gauges.commits {
            header(
                &mut out,
                "govflow_store_flushes_total",
                "counter",
                "Durable flushes (write + fdatasync) of the store.",
            );
            let _ = writeln!(out, "govflow_store_flushes_total {flushes}");
            header(
                &mut out,
                "govflow_store_commits_total",
                "counter",
                "Commands committed; commits / flushes is the mean group-commit batch size.",
            );
            let _ = writeln!(out, "govflow_store_commits_total {commits}");
            header(
                &mut out,
                "govflow_store_flush_seconds_total",
                "counter",
                "Time spent flushing; divided by flushes, the mean commit latency at the disk.",
            );
            let _ = writeln!(out, "govflow_store_flush_seconds_total {seconds}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_escaped_labels() {
        let metrics = Metrics::default();
        metrics.instance_started("birth \"reg\"");
        metrics.instance_ended("birth \"reg\"", InstanceStatus::Completed);
        metrics.job_activated("1-2", "verify");
        metrics.job_finished("1-2", "completed");
        metrics.job_finished("1-2", "completed");
        let text = metrics.render(&Gauges::default());
        assert!(text.contains("govflow_instances_started_total{process=\"birth \\\"reg\\\"\"} 1"), "{text}");
        assert!(text
            .contains("govflow_instances_ended_total{process=\"birth \\\"reg\\\"\",status=\"completed\"} 1"));
        assert!(
            text.contains("govflow_job_duration_seconds_count{type=\"verify\"} 1"),
            "counted once: {text}"
        );
        assert!(text.contains("govflow_job_duration_seconds_bucket{type=\"verify\",le=\"+Inf\"} 1"));
    }
}
