//! Jobs for external workers: the jobs of types no in-process handler runs wait here until a worker
//! activates them (the HTTP job API), with a lease. An expired lease puts the job back at the front of
//! its queue, marked `redelivered`. Leases live in memory only: after a restart every open job is available again, with the
//! same idempotency key, exactly as if every lease had expired, so nothing is lost.
//!
//! # Contract
//! - While a lease runs, no other activation returns that job (two workers never hold the same job).
//! - A job is queued once, however often it is offered; a new offer (after a failure with retries left)
//!   replaces its lease.
//! - A job waiting for its retry back-off (`not_before` in the future) is not handed out before then.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::engine::JobHandle;
use crate::runtime::{InstanceKey, Key};

type JobId = (InstanceKey, Key);

#[derive(Debug)]
struct Lease {
    job: JobHandle,
    until: Instant,
}

#[derive(Debug, Default)]
struct Queues {
    available: HashMap<String, VecDeque<JobHandle>>,
    queued: HashSet<JobId>,
    leased: HashMap<JobId, Lease>,
}

/// The queues of jobs waiting for external workers, by type, and their leases.
#[derive(Debug, Default)]
pub struct WorkerQueue {
    queues: Mutex<Queues>,
    arrived: Notify,
}

fn id(job: &JobHandle) -> JobId {
    (job.instance, job.job)
}

impl WorkerQueue {
    /// Queues jobs (newly created, or failed with retries left); wakes waiting activations.
    pub fn offer(&self, jobs: Vec<JobHandle>) {
        if jobs.is_empty() {
            return;
        }
        let mut queues = self.lock();
        for job in jobs {
            let key = id(&job);
            queues.leased.remove(&key);
            if queues.queued.insert(key) {
                queues.available.entry(job.job_type.clone()).or_default().push_back(job);
            }
        }
        drop(queues);
        self.arrived.notify_waiters();
    }

    /// Takes up to `max` jobs of `job_type` that may run at `now`, leasing them until `lease` from now.
    /// Expired leases are returned to their queues first.
    pub fn take(
        &self,
        job_type: &str,
        max: usize,
        lease: Duration,
        now: DateTime<FixedOffset>,
    ) -> Vec<JobHandle> {
        let mut queues = self.lock();
        let clock = Instant::now();
        Self::expire(&mut queues, clock);
        let Queues { available, queued, leased } = &mut *queues;
        let Some(queue) = available.get_mut(job_type) else { return Vec::new() };
        let mut taken = Vec::new();
        let mut waiting = Vec::new();
        while taken.len() < max {
            let Some(job) = queue.pop_front() else { break };
            if job.not_before.is_some_and(|at| at > now) {
                waiting.push(job);
                continue;
            }
            let key = id(&job);
            queued.remove(&key);
            leased.insert(key, Lease { job: job.clone(), until: clock + lease });
            taken.push(job);
        }
        // Those still backing off keep their place, ahead of the rest.
        for job in waiting.into_iter().rev() {
            queue.push_front(job);
        }
        taken
    }

    /// Ends a job's lease (completed, failed, errored, or found gone).
    pub fn release(&self, instance: InstanceKey, job: Key) {
        self.lock().leased.remove(&(instance, job));
    }

    /// True while `job` is leased.
    pub fn is_leased(&self, instance: InstanceKey, job: Key) -> bool {
        self.lock().leased.get(&(instance, job)).is_some_and(|lease| lease.until > Instant::now())
    }

    /// Jobs queued (not leased) of `job_type`.
    pub fn queued(&self, job_type: &str) -> usize {
        self.lock().available.get(job_type).map_or(0, VecDeque::len)
    }

    /// Resolves when a job is offered (or spuriously); call before checking, then await.
    pub fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
    }

    /// Puts back the jobs whose lease ran out, at the front of their queues.
    fn expire(queues: &mut Queues, now: Instant) {
        let expired: Vec<JobId> =
            queues.leased.iter().filter(|(_, lease)| lease.until <= now).map(|(key, _)| *key).collect();
        for key in expired {
            let Some(mut lease) = queues.leased.remove(&key) else { continue };
            // The worker that held it may have done its work without reporting back.
            lease.job.redelivered = true;
            if queues.queued.insert(key) {
                queues.available.entry(lease.job.job_type.clone()).or_default().push_front(lease.job);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
