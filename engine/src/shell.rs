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

struct Registered {
    handler: Arc<dyn JobHandler>,
    permits: Arc<Semaphore>,
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

    /// Runs jobs of `job_type` with `handler`.
    pub fn handler(mut self, job_type: &str, handler: impl JobHandler) -> Self {
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent_jobs.max(1)));
        self.handlers.insert(job_type.to_owned(), Registered { handler: Arc::new(handler), permits });
        self
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

    /// Jobs being handled right now.
    pub fn jobs_in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Stops taking new work and waits for the handlers in flight to finish and their outcomes to commit.
    pub async fn shutdown(self) {
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

    /// Hands every open job of a registered type to its handler again (after a restart: same keys).
    async fn redeliver_jobs(self: &Arc<Self>) -> Result<()> {
        for job_type in self.handlers.keys() {
            let engine = Arc::clone(&self.engine);
            let wanted = job_type.clone();
            let jobs = blocking(move || engine.open_jobs(Some(&wanted), usize::MAX, false)).await?;
            for job in jobs {
                self.run_job(job);
            }
        }
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
        if self.stopping() {
            return;
        }
        let Some(registered) = self.handlers.get(&job.job_type) else { return };
        let handler = Arc::clone(&registered.handler);
        let permits = Arc::clone(&registered.permits);
        let inner = Arc::clone(self);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Some(not_before) = job.not_before {
                tokio::time::sleep(inner.engine.clock().real(until(not_before, inner.engine.now()))).await;
            }
            let outcome = match permits.acquire_owned().await {
                Ok(_permit) if !inner.stopping() => {
                    let timeout = inner.config.job_timeout;
                    match tokio::time::timeout(timeout, handler.handle(job.clone())).await {
                        Ok(outcome) => Some(outcome),
                        Err(_) => Some(JobOutcome::Fail {
                            message: format!("the handler did not finish within {timeout:?}"),
                            backoff: None,
                        }),
                    }
                }
                _ => None,
            };
            if let Some(outcome) = outcome {
                inner.report(&job, outcome).await;
            }
            if inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }

    /// Commits a job's outcome. A rejection means the job ended meanwhile (cancelled, or completed by an
    /// earlier delivery): nothing to do.
    async fn report(&self, job: &JobHandle, outcome: JobOutcome) {
        let command = match outcome {
            JobOutcome::Complete(variables) => Command::CompleteJob { job: job.job, variables },
            JobOutcome::Fail { message, backoff } => Command::FailJob {
                job: job.job,
                retries: job.retries.saturating_sub(1),
                message,
                backoff_ms: backoff.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX)),
            },
            JobOutcome::Error { code, message } => {
                Command::ThrowError { job: job.job, error_code: code, message }
            }
        };
        let instance = job.instance;
        match self.engine.command_async(instance, &command, &Actor::engine()).await {
            Ok(_) | Err(EngineError::Rejected(_)) => {}
            Err(error) => {
                tracing::error!(%instance, job = %job.job, %error, "cannot commit a job's outcome; it runs again after a restart")
            }
        }
    }

    fn committed(self: &Arc<Self>, committed: Committed) {
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
