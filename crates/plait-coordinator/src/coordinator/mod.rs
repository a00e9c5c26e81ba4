//! The coordinator: the pool's shared state ([`Coordinator`]) and the operations the HTTP
//! layer and the CLI call. This module owns the state, opens it from the store and writes its
//! changes back (the outbox, flushed in order); each responsibility is a module of its own,
//! all of them methods on [`Coordinator`]:
//!
//! - [`submission`]: jobs in, within their clients' limits; a client's actions on its jobs.
//! - [`uploads`]: programs clients upload, and their quotas.
//! - [`execution`]: running a job's program once and cutting it into segments.
//! - [`dispatch`]: answering a worker's claim with a task it can hold, fairly between clients.
//! - [`memory`]: what each task kind is assumed to need.
//! - [`leases`]: heartbeats, deadlines, the reaper, what a lease may read, reported failures.
//! - [`gate`]: checking every result before it is used; rejections and bans.
//! - [`finalization`]: the final proof, and its repair.
//! - [`membership`]: worker identities and clients.
//! - [`reads`]: status, events, trees and proofs, from memory or the store.
//! - [`retention`]: ended jobs leaving memory, old blobs leaving the store.
//! - [`metrics`]: the Prometheus text.
//!
//! `docs/architecture.md` shows how a job flows through them and which lock guards what.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use plait_api::ClientLimits;
use plait_core::{cost::DeviceProfile, Device, JobId, TaskId};
use plait_prover::{BackendInfo, KeySetId, ProgramImage, ProverBackend, ProvingParams};
use tokio::sync::Notify;

use crate::{
    clients::{Clients, Submitting},
    clock::unix_ms,
    error::CoordinatorError,
    fair_share::FairShare,
    identities::Identities,
    job::{Job, JobSummary, LeaseError},
    job_status::JobStatus,
    memory_reports::NodeMemoryReports,
    metrics::Metrics,
    planning::PlannerConfig,
    programs::{ProgramCache, ProgramOwnership},
    store::{Store, StoreError, StoreOp, WriterLock},
};

mod dispatch;
mod execution;
mod finalization;
mod gate;
mod leases;
mod membership;
mod memory;
mod metrics;
mod reads;
mod retention;
mod submission;
mod uploads;

/// How a coordinator runs: tokens, leases, limits, retention, the planner.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The pool's worker token: a worker presenting it registers and gets an identity and a
    /// credential of its own. Empty: a closed pool, which only workers holding a credential
    /// the operator issued can join.
    pub worker_token: String,
    /// Token clients (job submitters) must present.
    pub client_token: String,
    /// The limits of the client `default` (the shared client token's).
    pub default_client_limits: ClientLimits,
    /// Token the operator presents to list, issue, revoke, ban and unban workers. Empty: the
    /// operator routes are closed.
    pub operator_token: String,
    /// Token a scraper presents for `GET /metrics`; `None`: the metrics are open.
    pub metrics_token: Option<String>,
    /// How long a registered worker's identity outlives its last claim.
    pub worker_idle: Duration,
    /// Worker identities the coordinator keeps at most. Past it, a registration displaces the
    /// registered identity seen least recently if that one is idle (unseen for a lease period
    /// and a claim wait, holding no lease), and is refused (`pool-full`) if none is.
    pub max_workers: usize,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// The most a lease lasts, heartbeats or not, when the worker's device profile predicts
    /// nothing for the task (with a prediction: four times it plus slack, up to this).
    pub max_lease: Duration,
    /// Reported failures after which a failing task fails its job (on as many workers).
    pub max_attempts: u32,
    /// Lost leases (expired: the worker died, hung or was cut off) after which a task fails
    /// its job (on as many workers): counted apart, as they say less about the task.
    pub max_lost_leases: u32,
    /// Wait before a failed task is handed out again; doubles with each failure.
    pub retry_backoff: Duration,
    /// How long a claim waits for work before answering "none".
    pub claim_wait: Duration,
    /// Rejected proofs after which a worker gets no more work.
    pub max_rejections_per_worker: u32,
    /// Results of a worker the pool must have accepted before its failure reports and lost
    /// leases count toward failing a job. New identities (anyone with an open pool's token can
    /// register many) cannot fail a job by reporting failures; a task one of them failed goes
    /// next to a worker with a record, if one is live. 0 counts every worker.
    pub trusted_after_accepted: u64,
    /// How long a succeeded or cancelled job keeps its blobs (checkpoints and task proofs)
    /// after it ended; its final proof is kept for good.
    pub blob_retention: Duration,
    /// Device profiles to predict each job's latency and work with, and to choose segment
    /// heights for jobs that ask (`auto`). Without them, jobs get no prediction and `auto`
    /// is refused.
    pub planner: Option<PlannerConfig>,
    /// `Some(memory)`: every worker is a process of one machine with this much memory, started
    /// by whoever runs this coordinator (`plait prove`, `plait demo`). The tasks leased at
    /// once may then need at most that much together (each worker advertises the whole
    /// machine), and one worker's measured peak is enough to learn a need from.
    pub local_machine_memory: Option<u64>,
    /// How long every write to the store may keep failing before the coordinator stops (see
    /// [`Coordinator::stopped`]): past it, the store is taken to be gone for good, and a
    /// coordinator that cannot record anything stops loudly rather than answer `503` forever.
    pub store_outage_limit: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            worker_token: String::new(),
            client_token: String::new(),
            default_client_limits: ClientLimits::default(),
            operator_token: String::new(),
            metrics_token: None,
            worker_idle: Duration::from_secs(24 * 3600),
            max_workers: 100_000,
            lease: Duration::from_secs(60),
            max_lease: Duration::from_secs(2 * 3600),
            max_attempts: 3,
            max_lost_leases: 6,
            retry_backoff: Duration::from_secs(2),
            claim_wait: Duration::from_secs(10),
            max_rejections_per_worker: 2,
            trusted_after_accepted: 2,
            blob_retention: Duration::from_secs(3600),
            planner: None,
            local_machine_memory: None,
            store_outage_limit: Duration::from_secs(600),
        }
    }
}

/// The coordinator: owns the jobs, the workers' and clients' state and the store, and hands out, checks and joins tasks (see the crate's documentation).
pub struct Coordinator {
    backend: Arc<dyn ProverBackend>,
    backend_info: BackendInfo,
    config: CoordinatorConfig,
    store: Store,
    /// Store writes not yet applied, in the order the changes were made (appended under the
    /// jobs lock, so the order is the order of the changes).
    outbox: Mutex<Vec<StoreOp>>,
    /// Serializes writes to the store, so they land in outbox order.
    writer: tokio::sync::Mutex<()>,
    /// The jobs that are not over (live, or still executing), by id: what leases, heartbeats
    /// and results act on. A job leaves once it ended and its writes are stored; asking for it
    /// then reads it from the store ([`Self::read_job`]).
    jobs: Mutex<BTreeMap<JobId, Job>>,
    /// The summaries of ended jobs, taken as they leave memory (an ended job's summary no longer
    /// changes): listing a client's jobs would otherwise read each one whole from the store, on
    /// every poll. A job in `jobs` is summarized from there, so a retried job's kept summary is
    /// never read, and is replaced when the job leaves memory again. At most
    /// [`retention::ENDED_SUMMARIES`].
    ended_summaries: Mutex<HashMap<JobId, JobSummary>>,
    /// Recently used programs (the store holds every one, with who uploaded it).
    programs: Mutex<ProgramCache>,
    /// Which client keeps which program: its quota is counted from this.
    program_owners: Mutex<ProgramOwnership>,
    /// Worker identities, with their rejection counts and bans.
    identities: Mutex<Identities>,
    /// Client credentials and limits.
    clients: Mutex<Clients>,
    /// Submissions under way, counted against their clients' limits until their jobs are
    /// stored (taken under the jobs lock).
    submitting: Submitting,
    /// How much of the pool each client has had, for sharing it between them.
    fair_share: Mutex<FairShare>,
    /// Results accepted per worker since the start (for the operator's view).
    tasks_done: Mutex<HashMap<String, u64>>,
    /// Peak memory workers reported per (key set: VM config and segment height; phase:
    /// `segments` or the aggregation layer): what a task is assumed to need once workers
    /// measured it. Each VM config has its own chips, so its own needs.
    node_memory: Mutex<HashMap<(KeySetId, String), NodeMemoryReports>>,
    /// When each worker last asked for work, and its device profile if it sent a usable one:
    /// the live pool the planner predicts on.
    workers_seen: Mutex<HashMap<String, SeenWorker>>,
    next_job: AtomicU64,
    /// Woken when tasks may have become ready.
    work_available: Notify,
    /// Woken whenever any job changes.
    job_changed: Notify,
    /// Set by [`Self::halt`]: nothing more is written, and executions stop.
    halted: std::sync::atomic::AtomicBool,
    /// Since when every write to the store has failed (none while writes succeed).
    store_failing_since: Mutex<Option<Instant>>,
    /// Why the coordinator stopped by itself, once it has ([`Self::stopped`]).
    stopped: tokio::sync::watch::Sender<Option<String>>,
    metrics: Metrics,
    /// This coordinator is the store's only writer while it lives; `None` once halted or
    /// stopped (it writes nothing more, so another may).
    store_lock: Mutex<Option<WriterLock>>,
}

impl Coordinator {
    /// Opens a coordinator on `store`, resuming every job stored there: accepted proofs are
    /// kept, tasks that were in flight are handed out again, and a job whose root was accepted
    /// but not yet finalized is finalized now.
    pub async fn open(
        backend: Arc<dyn ProverBackend>,
        config: CoordinatorConfig,
        store: Store,
    ) -> Result<Arc<Self>, CoordinatorError> {
        let writer = store.claim_writer().await?;
        store.claim_backend(&backend.info().name).await?;
        let snapshot = store.load().await?;
        let program_owners = ProgramOwnership::load(store.program_ownership().await?);
        let backend_info = backend.info();
        let programs: HashMap<String, ProgramImage> = snapshot
            .programs
            .into_iter()
            .map(|(_, bytes)| {
                let image = ProgramImage::new(bytes);
                (image.digest.clone(), image)
            })
            .collect();
        let (now, now_unix_ms) = (Instant::now(), unix_ms());
        let mut jobs = BTreeMap::new();
        for stored in snapshot.jobs {
            let id = stored.record.id;
            let program = programs
                .get(&stored.record.program_sha256)
                .cloned()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("{id}: its program is not in the store"))
                })?;
            let mut job =
                Job::restore(stored, program, now, now_unix_ms).map_err(StoreError::Corrupt)?;
            job.segment_fits = memory::segment_memory_fits(&config, &job.params);
            job.node_profiles = memory::node_profiles(&config, &job.params);
            if job.status.is_live() {
                let (accepted, total) = job.accepted_count();
                job.log(
                    now,
                    format!(
                        "coordinator restarted: {accepted} of {total} tasks already accepted \
                         and kept; tasks in flight are handed out again"
                    ),
                );
            }
            jobs.insert(id, job);
        }
        let mut cache = ProgramCache::default();
        for program in programs.values() {
            cache.insert(program);
        }
        let next_job = snapshot.last_job_id + 1;
        let node_memory = snapshot
            .node_memory
            .into_iter()
            .map(|(keys, layer, peak)| {
                (
                    (keys, layer),
                    NodeMemoryReports::stored(peak, Instant::now()),
                )
            })
            .collect();
        let mut outbox = Vec::new();
        for job in jobs.values_mut() {
            outbox.extend(job.take_outbox());
        }
        let to_finalize: Vec<JobId> = jobs
            .values()
            .filter(|j| j.awaits_finalization())
            .map(|j| j.id)
            .collect();
        let default_limits = config.default_client_limits;
        let this = Arc::new(Self {
            backend,
            backend_info,
            config,
            store,
            outbox: Mutex::new(outbox),
            writer: tokio::sync::Mutex::new(()),
            jobs: Mutex::new(jobs),
            ended_summaries: Mutex::new(HashMap::new()),
            programs: Mutex::new(cache),
            program_owners: Mutex::new(program_owners),
            identities: Mutex::new(Identities::load(snapshot.worker_identities)),
            clients: Mutex::new(
                Clients::load(snapshot.clients).with_default_limits(default_limits),
            ),
            submitting: Submitting::default(),
            fair_share: Mutex::new(FairShare::default()),
            tasks_done: Mutex::new(HashMap::new()),
            node_memory: Mutex::new(node_memory),
            workers_seen: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(next_job),
            work_available: Notify::new(),
            job_changed: Notify::new(),
            halted: false.into(),
            store_failing_since: Mutex::new(None),
            stopped: tokio::sync::watch::channel(None).0,
            metrics: Metrics::new(),
            store_lock: Mutex::new(Some(writer)),
        });
        this.flush().await?;
        // Jobs whose execution a restart interrupted execute again; the segments stored before
        // are checked, not added twice.
        let interrupted: Vec<_> = this
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .filter(|j| j.executing && j.status != JobStatus::Cancelled)
            .map(|j| {
                (
                    j.id,
                    j.program.clone(),
                    j.input.clone(),
                    j.params,
                    j.segments.len(),
                )
            })
            .collect();
        for (id, program, input, params, done) in interrupted {
            this.log_event(
                id,
                format!(
                    "execution was interrupted by the restart after {done} segments; executing \
                     again, checking those against the stored ones"
                ),
            );
            this.flush().await?;
            this.spawn_execution(id, program, input, params, done);
        }
        for job in to_finalize {
            let this = this.clone();
            tokio::spawn(async move {
                if let Err(e) = this.finalize(job).await {
                    tracing::error!("{job}: finalizing after restart: {e}");
                }
            });
        }
        Ok(this)
    }

    /// Writes pending changes to the store. On failure they stay pending (and are retried by
    /// the next flush) and the caller gets the error, so nothing is reported as durable that
    /// is not.
    async fn flush(&self) -> Result<(), CoordinatorError> {
        let _writer = self.writer.lock().await;
        if self.halted.load(Ordering::SeqCst) {
            return Err(CoordinatorError::Halted);
        }
        let ops = std::mem::take(&mut *self.outbox.lock().expect("outbox lock"));
        if let Err(e) = self.store.apply(&ops).await {
            {
                let mut outbox = self.outbox.lock().expect("outbox lock");
                let newer = std::mem::replace(&mut *outbox, ops);
                outbox.extend(newer);
            }
            self.note_store_failure(&e);
            return Err(e.into());
        }
        *self.store_failing_since.lock().expect("store failure lock") = None;
        self.release_ended_jobs();
        Ok(())
    }

    /// Counts a failed write (in the metrics, and toward the store outage: one that has lasted
    /// [`CoordinatorConfig::store_outage_limit`] stops the coordinator).
    fn note_store_failure(&self, e: &StoreError) {
        self.metrics.store_errors.inc();
        let since = *self
            .store_failing_since
            .lock()
            .expect("store failure lock")
            .get_or_insert_with(Instant::now);
        if since.elapsed() >= self.config.store_outage_limit {
            self.stop(format!(
                "every write to the store {} has failed for {:.0} s; the last: {e}",
                self.store,
                since.elapsed().as_secs_f64()
            ));
        }
    }

    /// Waits before a failed write is tried again (50 ms, doubling to 5 s); `Err` once the
    /// coordinator has halted or stopped, when there is nothing to wait for.
    async fn wait_out_store_failure(&self, failures: &mut u32) -> Result<(), String> {
        if self.halted.load(Ordering::SeqCst) {
            return Err("the coordinator has stopped".into());
        }
        let delay = Duration::from_millis(50 << (*failures).min(7)).min(Duration::from_secs(5));
        *failures += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Stops the coordinator for good: nothing more is written (the store keeps the last
    /// state it recorded, which a coordinator started again resumes from), and
    /// [`Self::stopped`] resolves with the reason.
    fn stop(&self, reason: String) {
        tracing::error!("the coordinator stops: {reason}");
        self.halt();
        self.stopped.send_replace(Some(reason));
    }

    /// Resolves when the coordinator stopped by itself (its store failed for longer than
    /// [`CoordinatorConfig::store_outage_limit`]), with the reason: `plait serve` then exits
    /// with an error for its supervisor to see.
    pub async fn stopped(&self) -> String {
        let mut stopped = self.stopped.subscribe();
        let reason = stopped
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives as long as the coordinator");
        reason.clone().unwrap_or_default()
    }

    /// Moves a job's pending store writes to the coordinator's outbox. Called with the jobs
    /// lock held, so changes enter the outbox in the order they were made.
    fn collect_writes(&self, job: &mut Job) {
        let ops = job.take_outbox();
        if !ops.is_empty() {
            self.outbox.lock().expect("outbox lock").extend(ops);
        }
    }

    /// Stops this coordinator as abruptly as `kill -9` would, for tests of restarts: it writes
    /// nothing more to its store, and its executions stop at their next segment.
    pub fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        self.store_lock.lock().expect("store lock").take();
    }

    /// The store it writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How it was configured.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// A worker is live while it asked for work within a lease period (and one claim's wait,
    /// which a long-polling worker spends inside its claim).
    fn live_window(&self) -> Duration {
        self.config.lease + self.config.claim_wait
    }

    /// The largest result body to read: the backend's largest proof, if it can say.
    pub fn max_proof_bytes(&self) -> Option<usize> {
        self.backend.max_proof_bytes()
    }

    /// The backend it checks proofs with.
    pub fn backend_info(&self) -> &BackendInfo {
        &self.backend_info
    }

    /// Makes sure the keys for `params` exist; returns the backend's report.
    pub async fn prepare_keys(&self, params: ProvingParams) -> Result<String, CoordinatorError> {
        let backend = self.backend.clone();
        blocking(move || backend.prepare_keys(&params))
            .await?
            .map_err(Into::into)
    }

    /// Adds a line to a job's event log (to be stored with the next flush).
    fn log_event(&self, job: JobId, message: String) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(state) = jobs.get_mut(&job) {
            state.log(Instant::now(), message);
            self.collect_writes(state);
        }
    }

    /// Runs `f` on a job for a call about one of its leases by `worker`: a worker that does
    /// not hold the task's lease is refused before `f` runs (as is a call without the lease's
    /// secret, by `f`).
    fn with_lease<T>(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        worker: &str,
        f: impl FnOnce(&mut Job) -> Result<T, LeaseError>,
    ) -> Result<T, CoordinatorError> {
        self.with_job(
            job,
            |j| {
                if j.lease_holder(task).is_some_and(|holder| holder != worker) {
                    return Err(LeaseError::NotHolder);
                }
                f(j)
            },
            task,
            attempt,
        )
    }

    fn with_job<T>(
        &self,
        job: JobId,
        f: impl FnOnce(&mut Job) -> Result<T, LeaseError>,
        task: TaskId,
        attempt: u32,
    ) -> Result<T, CoordinatorError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let Some(state) = jobs.get_mut(&job) else {
            // A job that is not in memory has ended: no lease of it is current.
            return Err(if self.was_submitted(job) {
                CoordinatorError::StaleLease { job, task, attempt }
            } else {
                CoordinatorError::UnknownJob(job)
            });
        };
        let result = f(state).map_err(|e| match e {
            LeaseError::UnknownTask => CoordinatorError::UnknownTask(task, job),
            LeaseError::Stale => CoordinatorError::StaleLease { job, task, attempt },
            LeaseError::NotHolder => CoordinatorError::NotLeaseHolder { job, task, attempt },
        });
        self.collect_writes(state);
        result
    }
}

/// Who called a worker route, by the token it presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerCaller {
    /// The pool's worker token: it may only register.
    Pool,
    /// A worker's own credential (registered or issued): its id.
    Worker(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::Panicked(e.to_string()))
}

/// A worker that asked for work: when, with how much memory, and its device profile if it
/// sent a usable one.
struct SeenWorker {
    at: Instant,
    memory_bytes: u64,
    profile: Option<DeviceProfile>,
    /// What it said it proves on.
    proves_on: Option<Device>,
}
