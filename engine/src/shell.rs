//! The engine shell on tokio: runs jobs on in-process handlers, fires timers, and rebuilds both from the
//! store on start-up. It drives the [`Engine`]'s async entry points, which decide a command at once and
//! await its batch's flush, so commands on many instances run in parallel and share group commits, while
//! the engine's per-instance locks keep each instance's commands in order. It must never act on
//! anything before the engine has committed it, and never keep state that is not rebuilt from the store.
//!
//! # Contract
//! - A job reaches its handler only after the batch that created it is durable (the engine tells the
//!   shell after `Store::commit` returns). Its outcome is sent back as a command; a job whose handler ran
//!   but whose completion was not committed (a crash in between) is handed to the handler again, after
//!   restart, with the same idempotency key.
//! - A timer never fires before its due time by the engine's clock (the core also refuses it); the shell
//!   keeps only the timers due within `ShellConfig::timer_horizon` in memory, reading the next slice from
//!   the store every eighth of the horizon without stopping the firing loop.
//! - `shutdown` stops taking new work and waits for handlers in flight to finish and commit.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::audit::Actor;
use crate::engine::{Committed, Engine, EngineError, JobHandle, Result};
use crate::runtime::{Command, InstanceKey, InstanceStatus, Key, VariableMap};
use crate::store::Store;
use crate::workers::WorkerQueue;

/// What a job handler decided.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Done; these variables go back to the instance (through the task's output mappings).
    Complete(VariableMap),
    /// A technical failure (timeout, 5xx, connection refused): retried while retries last, not before
    /// `backoff`; then an incident.
    Fail { message: String, backoff: Option<Duration> },
    /// A business outcome modelled in BPMN (e.g. `ID_NOT_VERIFIED`), caught by error events.
    Error { code: String, message: String },
    /// A failure no retry can fix (a misconfigured task, a refused credential): an incident at once, for
    /// an operator to resolve.
    Incident { message: String },
    /// Handed off: the far side answers later (a payment's callback), which completes or fails the job by
    /// its idempotency key. The job stays open; after a restart it is handed to the handler again, with the
    /// same key, so the far side can answer a repeated request from what it already did.
    Pending,
}

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = JobOutcome> + Send + 'static>>;

/// Runs the jobs of one job type in-process (connectors implement this).
pub trait JobHandler: Send + Sync + 'static {
    fn handle(&self, job: JobHandle) -> HandlerFuture;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(JobHandle) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobOutcome> + Send + 'static,
{
    fn handle(&self, job: JobHandle) -> HandlerFuture {
        Box::pin(self(job))
    }
}

/// Shell settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShellConfig {
    /// Jobs of one type running at once (a connector's concurrency limit).
    pub max_concurrent_jobs: usize,
    /// A handler still running after this long has failed (and is retried as any failure).
    pub job_timeout: Duration,
    /// Timers due within this much of now are kept in memory; later ones are read from the store.
    pub timer_horizon: Duration,
}

impl Default for ShellConfig {
    fn default() -> ShellConfig {
        ShellConfig {
            max_concurrent_jobs: 1024,
            job_timeout: Duration::from_secs(60),
            timer_horizon: Duration::from_secs(60),
        }
    }
}

/// Told when an instance ends (after the ending batch is durable).
pub type EndedHook = Arc<dyn Fn(InstanceKey, InstanceStatus) + Send + Sync>;

/// Limits of one job type, overriding [`ShellConfig`]'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobLimits {
    /// Jobs of this type running at once.
    pub max_concurrent: Option<usize>,
    /// A handler still running after this long has failed.
    pub timeout: Option<Duration>,
}

struct Registered {
    handler: Arc<dyn JobHandler>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

/// Builds a [`Shell`]: register handlers, then `start` inside a tokio runtime.
pub struct ShellBuilder<S: Store + 'static> {
    engine: Arc<Engine<S>>,
    handlers: BTreeMap<String, Registered>,
    config: ShellConfig,
    on_ended: Option<EndedHook>,
}

impl<S: Store + 'static> std::fmt::Debug for ShellBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellBuilder").field("handlers", &self.handlers.keys()).finish_non_exhaustive()
    }
}

impl<S: Store + 'static> ShellBuilder<S> {
    pub fn config(mut self, config: ShellConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs jobs of `job_type` with `handler`, within the shell's default limits.
    pub fn handler(self, job_type: &str, handler: impl JobHandler) -> Self {
        self.handler_with(job_type, handler, JobLimits::default())
    }

    /// Runs jobs of `job_type` with `handler`, within `limits` (a connector's concurrency and timeout).
    pub fn handler_with(mut self, job_type: &str, handler: impl JobHandler, limits: JobLimits) -> Self {
        let max = limits.max_concurrent.unwrap_or(self.config.max_concurrent_jobs).max(1);
        let timeout = limits.timeout.unwrap_or(self.config.job_timeout);
        self.handlers.insert(
            job_type.to_owned(),
            Registered { handler: Arc::new(handler), permits: Arc::new(Semaphore::new(max)), timeout },
        );
        self
    }

    /// Registers the job types the engine serves itself ([`crate::builtin`]: `govflow.message.publish`).
    pub fn with_builtins(self) -> Self {
        let publisher = crate::builtin::MessagePublisher::new(Arc::clone(&self.engine));
        self.handler(crate::builtin::PUBLISH_MESSAGE, publisher)
    }

    pub fn on_instance_ended(
        mut self,
        hook: impl Fn(InstanceKey, InstanceStatus) + Send + Sync + 'static,
    ) -> Self {
        self.on_ended = Some(Arc::new(hook));
        self
    }

    /// Starts the shell: listens to the engine's commits, then rebuilds pending work from the store
    /// (outbox, runnable jobs of registered types, timers). Must be called inside a tokio runtime.
    pub async fn start(self) -> Result<Shell<S>> {
        let inner = Arc::new(Inner {
            engine: self.engine,
            handlers: self.handlers,
            config: self.config,
            on_ended: self.on_ended,
            timers: Mutex::new(TimerWindow::default()),
            timer_changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            stopped: Notify::new(),
            workers: WorkerQueue::default(),
            lateness: Mutex::new(TimerLateness::default()),
            handled: Mutex::new(BTreeMap::new()),
        });
        let (sender, receiver) = mpsc::unbounded_channel();
        inner.engine.set_listener(move |committed| {
            // The shell is gone: the store still has everything, the next start rebuilds it.
            let _ = sender.send(committed);
        });
        let weak = Arc::downgrade(&inner);
        inner.engine.set_schedule_listener(move || {
            if let Some(inner) = weak.upgrade() {
                lock(&inner.timers).schedules_changed = true;
                inner.timer_changed.notify_one();
            }
        });
        tokio::spawn(dispatch(Arc::clone(&inner), receiver));
        tokio::spawn(run_timers(Arc::clone(&inner)));
        let recovering = Arc::clone(&inner);
        blocking(move || recovering.engine.recover()).await?;
        inner.redeliver_jobs().await?;
        inner.reload_timers(true).await?;
        Ok(Shell { inner })
    }
}

/// The nearest timers: (due, instance, timer), and how far the window reaches.
#[derive(Debug, Default)]
struct TimerWindow {
    due: BTreeSet<(DateTime<FixedOffset>, InstanceKey, Key)>,
    /// Timers due before this are all in `due` (those after it are only in the store).
    until: Option<DateTime<FixedOffset>>,
    /// The earliest timer-start schedule (process starts), re-read when the schedules change.
    schedule: Option<DateTime<FixedOffset>>,
    /// The schedules changed (a deployment): re-read `schedule`.
    schedules_changed: bool,
}

struct Inner<S: Store + 'static> {
    engine: Arc<Engine<S>>,
    handlers: BTreeMap<String, Registered>,
    config: ShellConfig,
    on_ended: Option<EndedHook>,
    timers: Mutex<TimerWindow>,
    timer_changed: Notify,
    in_flight: AtomicUsize,
    idle: Notify,
    stopping: AtomicBool,
    stopped: Notify,
    workers: WorkerQueue,
    lateness: Mutex<TimerLateness>,
    /// Per job type: handler runs and the seconds they took.
    handled: Mutex<BTreeMap<String, (u64, f64)>>,
}

/// How late timers fired (by the engine's clock), since the shell started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimerLateness {
    pub fired: u64,
    pub total_seconds: f64,
    pub max_seconds: f64,
}

/// The running shell.
pub struct Shell<S: Store + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: Store + 'static> std::fmt::Debug for Shell<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell").finish_non_exhaustive()
    }
}

/// Runs blocking engine work (it waits for the disk) off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|error| {
        Err(EngineError::Store(crate::store::StoreError::Backend(format!("an engine task failed: {error}"))))
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long until `at` by `now`, zero if past.
fn until(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

impl<S: Store + 'static> Shell<S> {
    pub fn builder(engine: Arc<Engine<S>>) -> ShellBuilder<S> {
        ShellBuilder { engine, handlers: BTreeMap::new(), config: ShellConfig::default(), on_ended: None }
    }

    pub fn engine(&self) -> &Arc<Engine<S>> {
        &self.inner.engine
    }

    /// Starts an instance; returns once its first batch is durable (its first jobs are then running).
    pub async fn start_instance(
        &self,
        process_id: &str,
        variables: VariableMap,
        business_key: Option<String>,
        actor: Actor,
    ) -> Result<InstanceKey> {
        self.inner.engine.start_async(process_id, variables, business_key, &actor).await
    }

    /// Sends a command; returns once its batch is durable.
    pub async fn command(&self, instance: InstanceKey, command: Command, actor: Actor) -> Result<()> {
        self.inner.engine.command_async(instance, &command, &actor).await.map(|_| ())
    }

    /// Activates up to `max` jobs of `job_type` for an external worker, leased for `lease` (an expired
    /// lease makes a job available again). Waits up to `wait` for one to arrive when none is available
    /// (long polling). Each handle carries the job's current variables and its idempotency key.
    pub async fn activate_jobs(
        &self,
        job_type: &str,
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<JobHandle>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.inner.workers.arrived();
            let taken = self.inner.workers.take(job_type, max, lease, self.inner.engine.now());
            let mut activated = Vec::with_capacity(taken.len());
            if !taken.is_empty() {
                let engine = Arc::clone(&self.inner.engine);
                // Re-read each job: one cancelled (or completed) since it was queued is dropped.
                let fresh = blocking(move || {
                    taken
                        .into_iter()
                        .map(|job| {
                            Ok((job.instance, job.job, job.redelivered, engine.job(job.instance, job.job)?))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .await?;
                for (instance, job, redelivered, handle) in fresh {
                    match handle {
                        Some(handle) => activated.push(JobHandle { redelivered, ..handle }),
                        None => self.inner.workers.release(instance, job),
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if !activated.is_empty() || now >= deadline || self.inner.stopping() {
                return Ok(activated);
            }
            // Also wake now and then: a job backing off becomes available without a new offer.
            let nap = (deadline - now).min(Duration::from_millis(100));
            tokio::select! {
                () = arrived => {}
                () = tokio::time::sleep(nap) => {}
                () = self.inner.stopped.notified() => {}
            }
        }
    }

    /// Completes a job (an external worker's, or a callback's) with variables; the lease ends.
    pub async fn complete_job(
        &self,
        instance: InstanceKey,
        job: Key,
        variables: VariableMap,
        actor: Actor,
    ) -> Result<()> {
        let result = self.command(instance, Command::CompleteJob { job, variables }, actor).await;
        self.inner.workers.release(instance, job);
        result
    }

    /// Fails a job's attempt: `retries` left (default: one fewer), retried after `backoff` (default: the
    /// task's back-off headers); no retries left raises an incident.
    pub async fn fail_job(
        &self,
        instance: InstanceKey,
        job: Key,
        retries: Option<u32>,
        message: String,
        backoff: Option<Duration>,
        actor: Actor,
    ) -> Result<()> {
        let engine = Arc::clone(&self.inner.engine);
        let handle = blocking(move || engine.job(instance, job))
            .await?
            .ok_or(EngineError::Rejected(crate::runtime::Rejection::NoSuchJob(job)))?;
        let mut command = fail_command(&handle, message, backoff);
        if let (Some(retries), Command::FailJob { retries: left, backoff_ms, .. }) = (retries, &mut command) {
            *left = retries;
            if retries == 0 {
                *backoff_ms = None;
            }
        }
        let result = self.command(instance, command, actor).await;
        self.inner.workers.release(instance, job);
        result
    }

    /// Throws a BPMN error from a job (a business outcome, caught by an error event).
    pub async fn throw_job_error(
        &self,
        instance: InstanceKey,
        job: Key,
        code: String,
        message: String,
        actor: Actor,
    ) -> Result<()> {
        let result =
            self.command(instance, Command::ThrowError { job, error_code: code, message }, actor).await;
        self.inner.workers.release(instance, job);
        result
    }

    /// Jobs of `job_type` waiting for an external worker (not leased).
    pub fn queued_jobs(&self, job_type: &str) -> usize {
        self.inner.workers.queued(job_type)
    }

    /// Per job type run in-process: handler runs so far and the seconds they took in total.
    pub fn handler_latency(&self) -> BTreeMap<String, (u64, f64)> {
        lock(&self.inner.handled).clone()
    }

    /// How late the timers fired so far were.
    pub fn timer_lateness(&self) -> TimerLateness {
        *lock(&self.inner.lateness)
    }

    /// Jobs being handled right now.
    pub fn jobs_in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Stops taking new work and waits for the handlers in flight to finish and their outcomes to commit.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.stopped.notify_waiters();
        self.inner.timer_changed.notify_one();
        self.inner.engine.set_listener(|_| {});
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl<S: Store + 'static> Inner<S> {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Hands every open job to its handler again, or queues it for external workers (after a restart:
    /// same keys). Each is marked `redelivered`: it may have run before the restart.
    async fn redeliver_jobs(self: &Arc<Self>) -> Result<()> {
        let engine = Arc::clone(&self.engine);
        let mut jobs = blocking(move || engine.open_jobs(None, usize::MAX, false)).await?;
        for job in &mut jobs {
            job.redelivered = true;
        }
        let (local, external): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|job| self.handlers.contains_key(&job.job_type));
        for job in local {
            self.run_job(job);
        }
        self.workers.offer(external);
        Ok(())
    }

    /// Loads the timers due within the horizon from the store: all of them at start-up (`full`), afterwards
    /// only those beyond what the window already covers, so a reload reads a slice, not the whole window.
    async fn reload_timers(self: &Arc<Self>, full: bool) -> Result<()> {
        let engine = Arc::clone(&self.engine);
        // The horizon is real time; a demo clock running N× faster covers N× as much engine time.
        let scale = engine.clock().scale();
        let horizon = if scale.is_finite() && scale >= 1.0 {
            Duration::try_from_secs_f64(self.config.timer_horizon.as_secs_f64() * scale)
                .unwrap_or(Duration::MAX)
        } else {
            self.config.timer_horizon
        };
        let horizon = chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
        let now = engine.now();
        let until = now.checked_add_signed(horizon).unwrap_or(now);
        // Widen the window before reading, so a timer committed meanwhile is taken by `committed` (or by
        // this read: the set keeps one copy).
        let after = {
            let mut window = lock(&self.timers);
            let before = window.until;
            window.until = Some(before.map_or(until, |before| before.max(until)));
            if full {
                None
            } else {
                before
            }
        };
        let due = blocking(move || Ok(engine.store().timers_between(after, until, usize::MAX)?)).await?;
        let engine = Arc::clone(&self.engine);
        let schedule = blocking(move || engine.next_schedule_due()).await?;
        {
            let mut window = lock(&self.timers);
            window.due.extend(due.into_iter().map(|entry| (entry.due, entry.instance, entry.timer)));
            window.schedule = schedule;
        }
        self.timer_changed.notify_one();
        Ok(())
    }

    fn run_job(self: &Arc<Self>, job: JobHandle) {
        if self.stopping() || !self.handlers.contains_key(&job.job_type) {
            return;
        }
        let inner = Arc::clone(self);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            // The job, then each job of the instance its outcome made runnable next (see `report`): a
            // sequence of service tasks runs in one task rather than a new one per job.
            let mut next = Some(job);
            while let Some(job) = next.take() {
                next = inner.handle(job).await;
            }
            if inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }

    /// Runs `job` on its handler and commits the outcome; returns the job the commit made runnable that
    /// this task may run next.
    async fn handle(&self, job: JobHandle) -> Option<JobHandle> {
        let registered = self.handlers.get(&job.job_type)?;
        if self.stopping() {
            return None;
        }
        if let Some(not_before) = job.not_before {
            tokio::time::sleep(self.engine.clock().real(until(not_before, self.engine.now()))).await;
        }
        let outcome = match Arc::clone(&registered.permits).acquire_owned().await {
            Ok(_permit) if !self.stopping() => {
                let started = std::time::Instant::now();
                let outcome =
                    match tokio::time::timeout(registered.timeout, registered.handler.handle(job.clone()))
                        .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => JobOutcome::Fail {
                            message: format!("the handler did not finish within {:?}", registered.timeout),
                            backoff: None,
                        },
                    };
                let took = started.elapsed().as_secs_f64();
                let mut handled = lock(&self.handled);
                match handled.get_mut(&job.job_type) {
                    Some(entry) => *entry = (entry.0 + 1, entry.1 + took),
                    None => drop(handled.insert(job.job_type.clone(), (1, took))),
                }
                outcome
            }
            _ => return None,
        };
        self.report(&job, outcome).await
    }

    /// Commits a job's outcome. A rejection means the job ended meanwhile (cancelled, or completed by an
    /// earlier delivery): nothing to do. Returns a job the commit made runnable, of a type with a handler
    /// and due at once, for the caller to run next (the others go to the listener as usual).
    async fn report(&self, job: &JobHandle, outcome: JobOutcome) -> Option<JobHandle> {
        let command = match outcome {
            JobOutcome::Complete(variables) => Command::CompleteJob { job: job.job, variables },
            JobOutcome::Fail { message, backoff } => fail_command(job, message, backoff),
            JobOutcome::Error { code, message } => {
                Command::ThrowError { job: job.job, error_code: code, message }
            }
            JobOutcome::Incident { message } => {
                Command::FailJob { job: job.job, retries: 0, message, backoff_ms: None }
            }
            JobOutcome::Pending => return None,
        };
        let instance = job.instance;
        let claim = |next: &JobHandle| {
            next.not_before.is_none() && !self.stopping() && self.handlers.contains_key(&next.job_type)
        };
        match self.engine.command_async_claiming(instance, &command, &Actor::engine(), &claim).await {
            Ok((_, next)) => next,
            Err(EngineError::Rejected(_)) => None,
            Err(error) => {
                tracing::error!(%instance, job = %job.job, %error, "cannot commit a job's outcome; it runs again after a restart");
                None
            }
        }
    }

    fn committed(self: &Arc<Self>, committed: Committed) {
        let (local, external): (Vec<_>, Vec<_>) =
            committed.jobs.into_iter().partition(|job| self.handlers.contains_key(&job.job_type));
        self.workers.offer(external);
        let committed = Committed { jobs: local, ..committed };
        for job in committed.jobs {
            self.run_job(job);
        }
        if !committed.timers.is_empty() {
            let mut window = lock(&self.timers);
            for (due, timer) in committed.timers {
                if window.until.is_none_or(|until| due <= until) {
                    window.due.insert((due, committed.instance, timer));
                }
            }
            drop(window);
            self.timer_changed.notify_one();
        }
        if committed.status != InstanceStatus::Active {
            if let Some(hook) = &self.on_ended {
                hook(committed.instance, committed.status);
            }
        }
    }
}

async fn dispatch<S: Store + 'static>(
    inner: Arc<Inner<S>>,
    mut receiver: mpsc::UnboundedReceiver<Committed>,
) {
    while let Some(committed) = receiver.recv().await {
        inner.committed(committed);
    }
}

/// Fires timers as they fall due, never before: sleeps until the earliest, re-checks the clock, fires.
async fn run_timers<S: Store + 'static>(inner: Arc<Inner<S>>) {
    // Small slices, often: each reload reads only the timers that came within the horizon since the last.
    let reload_every = inner.config.timer_horizon / 8;
    let mut next_reload = tokio::time::Instant::now() + reload_every;
    while !inner.stopping() {
        if std::mem::take(&mut lock(&inner.timers).schedules_changed) {
            let engine = Arc::clone(&inner.engine);
            match blocking(move || engine.next_schedule_due()).await {
                Ok(schedule) => lock(&inner.timers).schedule = schedule,
                Err(error) => tracing::error!(%error, "cannot read the timer-start schedules"),
            }
        }
        let now = inner.engine.now();
        let schedule_due = lock(&inner.timers).schedule.is_some_and(|due| due <= now);
        if schedule_due {
            let engine = Arc::clone(&inner.engine);
            match blocking(move || Ok((engine.fire_due_schedules()?, engine.next_schedule_due()?))).await {
                Ok((_, next)) => lock(&inner.timers).schedule = next,
                Err(error) => {
                    tracing::error!(%error, "cannot start a scheduled process; retrying at the next reload");
                    lock(&inner.timers).schedule = None;
                }
            }
        }
        let (due_now, wait) = {
            let mut window = lock(&inner.timers);
            let mut due_now = Vec::new();
            while let Some(first) = window.due.first().copied() {
                if first.0 > now {
                    break;
                }
                window.due.pop_first();
                due_now.push(first);
            }
            let next = window.due.first().map(|first| first.0).into_iter().chain(window.schedule).min();
            let wait = next.map_or(reload_every, |next| inner.engine.clock().real(until(next, now)));
            (due_now, wait)
        };
        if !due_now.is_empty() {
            let mut lateness = lock(&inner.lateness);
            for (due, _, _) in &due_now {
                let late = (now - *due).to_std().unwrap_or(Duration::ZERO).as_secs_f64();
                lateness.fired += 1;
                lateness.total_seconds += late;
                lateness.max_seconds = lateness.max_seconds.max(late);
            }
        }
        for (_, instance, timer) in due_now {
            let engine = Arc::clone(&inner.engine);
            tokio::spawn(async move {
                if let Err(error) = engine.fire_timer_async(instance, timer).await {
                    tracing::error!(%instance, %timer, %error, "cannot fire a timer; it fires after a restart");
                }
            });
        }
        if tokio::time::Instant::now() >= next_reload {
            next_reload = tokio::time::Instant::now() + reload_every;
            // Off the firing loop: timers keep firing while the next slice is read.
            let reloading = Arc::clone(&inner);
            tokio::spawn(async move {
                if let Err(error) = reloading.reload_timers(false).await {
                    tracing::error!(%error, "cannot reload timers from the store");
                }
            });
        }
        let wait = wait.min(next_reload.saturating_duration_since(tokio::time::Instant::now()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.timer_changed.notified() => {}
            () = inner.stopped.notified() => {}
        }
    }
}

/// The command for a failed attempt: one retry fewer, after the handler's back-off or else the one the
/// task's headers configure (see [`crate::retry`]). A bad back-off header is named in the failure message.
fn fail_command(job: &JobHandle, mut message: String, backoff: Option<Duration>) -> Command {
    let backoff = match backoff {
        Some(backoff) => Some(backoff),
        None => crate::retry::backoff(&job.headers, job.attempt).unwrap_or_else(|error| {
            message = format!("{message} (and no back-off: {error})");
            None
        }),
    };
    Command::FailJob {
        job: job.job,
        retries: job.retries.saturating_sub(1),
        message,
        backoff_ms: backoff.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
    }
}
