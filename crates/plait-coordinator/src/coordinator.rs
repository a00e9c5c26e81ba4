//! The coordinator's shared state and the operations the HTTP layer and the CLI call.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use plait_api::{ClaimTaskRequest, ClientLimits, TaskAssignment, TaskMeta, Work};
use plait_core::{
    cost::DeviceProfile,
    planner::{evaluate, recommend, Goal, Measured, Pool, Prediction},
    sim::SimConfig,
    AggLayer, Device, DeviceKind, JobId, ProgramInput, SegmentPlan, TaskId,
};
use plait_prover::{
    BackendError, BackendInfo, CutSegment, KeySetId, ProgramImage, ProofBlob, ProverBackend,
    ProvingParams, Verdict, VmConfig,
};
use tokio::sync::Notify;

use crate::{
    clients::{Client, Clients, Reservation, Submitting, DEFAULT_CLIENT, MAX_PRIORITY, MAX_WEIGHT},
    identities::{Ban, Identities, Identity},
    job::{
        CheckTarget, Job, JobAction, JobEvent, JobProgress, JobStatus, JobSummary, LeaseError,
        RetryPolicy, TaskTiming,
    },
    metrics::{Gauges, Metrics},
    planning::{self, PlannerConfig},
    programs::{OverQuota, ProgramCache, ProgramOwnership},
    store::{JobOwner, Store, StoreError, StoreOp, WriterLock},
};

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

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("invalid aggregation tree: {0}")]
    Tree(#[from] plait_core::TreeShapeError),
    #[error("{0} does not exist")]
    UnknownJob(JobId),
    #[error("{0} of {1} does not exist")]
    UnknownTask(TaskId, JobId),
    #[error("{0} has no checkpoint {1}")]
    UnknownCheckpoint(JobId, String),
    #[error(
        "{task} attempt {attempt} of {job} is not the current lease (expired or already done)"
    )]
    StaleLease {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    #[error("{task} attempt {attempt} of {job}: the call does not carry the lease's secret (only the worker holding the lease may act on it)")]
    NotLeaseHolder {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    #[error("{0}: no current lease of this job has the secret presented; only the holder of a lease may download what its task needs")]
    NotLeased(JobId),
    #[error("worker proves with {worker}, this coordinator with {coordinator}")]
    IncompatibleWorker { worker: String, coordinator: String },
    #[error("worker {worker} is banned: {reason}")]
    WorkerBanned { worker: String, reason: String },
    #[error("missing or wrong {0} token")]
    Unauthorized(&'static str),
    #[error(
        "client {0} exists, or was revoked and its jobs are kept (a name is not issued twice)"
    )]
    ClientExists(String),
    #[error("no client {0}")]
    UnknownClient(String),
    #[error("client {client} may have {limit} jobs in flight; it has {count}")]
    TooManyJobs {
        client: String,
        limit: u32,
        count: u32,
    },
    #[error("client {client} may run jobs of at most {limit} instructions; this one allows {asked} (pass --max-instructions)")]
    OverInstructionLimit {
        client: String,
        limit: u64,
        asked: u64,
    },
    #[error("client {client}'s jobs may carry {limit} bytes of input; this one has {asked}")]
    OverInputLimit {
        client: String,
        limit: u64,
        asked: u64,
    },
    #[error("client {client} may keep {limit} bytes of programs; it keeps {kept} and this one has {asked} (delete some: `plait programs delete`)")]
    OverProgramQuota {
        client: String,
        limit: u64,
        kept: u64,
        asked: u64,
    },
    #[error("no program {0}")]
    UnknownProgram(String),
    #[error("no worker {0}")]
    UnknownWorker(String),
    #[error("worker id {0} is taken")]
    WorkerExists(String),
    #[error("this pool is closed: workers join with a credential the operator issued (`plait workers issue`), not a pool token")]
    RegistrationClosed,
    #[error("the pool holds {limit} worker identities, its limit, and every one is working or was seen in the last {live_secs} s; try again later")]
    PoolFull { limit: usize, live_secs: u64 },
    #[error("the blocking task panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidState(String),
    /// A worker's request out of bounds (see `plait_api::limits`).
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot choose a segment height: {0}")]
    CannotPlan(String),
    /// The coordinator could not check a result (its keys or the program would not load):
    /// its own fault, so the worker keeps its lease and nothing counts against it.
    #[error("the coordinator cannot check results now: {0}")]
    CannotCheck(String),
    #[error("the coordinator was halted")]
    Halted,
}

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
    /// [`ENDED_SUMMARIES`].
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

    /// Drops jobs that are over from memory. Their last writes may still be in the outbox:
    /// [`Self::read_job`] flushes before it reads one back.
    fn release_ended_jobs(&self) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let ended: Vec<JobId> = jobs
            .values()
            .filter(|j| !j.status.is_live() && !j.executing)
            .map(|j| j.id)
            .collect();
        for id in ended {
            if let Some(mut job) = jobs.remove(&id) {
                self.collect_writes(&mut job);
                self.keep_ended_summary(id, job.summary(Instant::now()));
                self.metrics
                    .jobs_ended
                    .with_label_values(&[job.status.name()])
                    .inc();
            }
        }
    }

    fn keep_ended_summary(&self, id: JobId, summary: JobSummary) {
        let mut summaries = self.ended_summaries.lock().expect("summaries lock");
        if summaries.len() >= ENDED_SUMMARIES && !summaries.contains_key(&id) {
            // Any one makes room: a summary not kept is read from the store when asked for.
            let evicted = *summaries.keys().next().expect("the map is full");
            summaries.remove(&evicted);
        }
        summaries.insert(id, summary);
    }

    /// How many jobs the coordinator holds in memory (those not over).
    pub fn resident_jobs(&self) -> usize {
        self.jobs.lock().expect("jobs lock").len()
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

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// A worker is live while it asked for work within a lease period (and one claim's wait,
    /// which a long-polling worker spends inside its claim).
    fn live_window(&self) -> Duration {
        self.config.lease + self.config.claim_wait
    }

    /// How a failure of `worker`'s (or a lost lease of its) counts.
    fn retry_policy(&self, worker: &str) -> RetryPolicy {
        let recent = self.live_window();
        let live: Vec<String> = self
            .workers_seen
            .lock()
            .expect("workers lock")
            .iter()
            .filter(|(_, w)| w.at.elapsed() <= recent)
            .map(|(id, _)| id.clone())
            .collect();
        let done = self.tasks_done.lock().expect("tasks done lock");
        let trusted =
            |id: &str| done.get(id).copied().unwrap_or(0) >= self.config.trusted_after_accepted;
        RetryPolicy {
            max_attempts: self.config.max_attempts,
            max_lost_leases: self.config.max_lost_leases,
            live_workers: live.iter().filter(|id| trusted(id)).count(),
            counts: trusted(worker),
            backoff: self.config.retry_backoff,
        }
    }

    /// Whether `worker` has the record of accepted results its failures need to count.
    fn is_trusted(&self, worker: &str) -> bool {
        self.config.trusted_after_accepted == 0
            || self
                .tasks_done
                .lock()
                .expect("tasks done lock")
                .get(worker)
                .is_some_and(|&n| n >= self.config.trusted_after_accepted)
    }

    /// The largest result body to read: the backend's largest proof, if it can say.
    pub fn max_proof_bytes(&self) -> Option<usize> {
        self.backend.max_proof_bytes()
    }

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

    /// Stores the job and starts executing its program; answers once the job is stored, while
    /// execution goes on (see [`Self::submit`]).
    pub async fn submit_job(
        self: &Arc<Self>,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
    ) -> Result<JobId, CoordinatorError> {
        self.submit(program, input, params, None).await
    }

    /// Stores the job and answers; its program then executes in the background, and each
    /// segment becomes a ready task (with its start-state checkpoint stored) as soon as
    /// execution has passed its end. A guest that fails fails its job with the reason.
    ///
    /// With `auto`, the planner first chooses the segment height for that goal (ignoring
    /// `params.segment_height`) by planning each candidate height from one execution
    /// ([`planning::candidates`]) and simulating each on the pool; the job is stored after
    /// that choice.
    pub async fn submit(
        self: &Arc<Self>,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        auto: Option<Goal>,
    ) -> Result<JobId, CoordinatorError> {
        self.submit_for(JobOwner::default(), program, input, params, auto)
            .await
    }

    /// [`Self::submit`] for a client, within its limits: jobs in flight, and instructions
    /// per job.
    pub async fn submit_for(
        self: &Arc<Self>,
        owner: JobOwner,
        program: ProgramImage,
        input: ProgramInput,
        mut params: ProvingParams,
        auto: Option<Goal>,
    ) -> Result<JobId, CoordinatorError> {
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&owner.priority) {
            return Err(CoordinatorError::BadRequest(format!(
                "a job's priority is -{MAX_PRIORITY} to {MAX_PRIORITY}, not {}",
                owner.priority
            )));
        }
        // Held until the job is stored, across the awaits below.
        let reservation = self.check_client_limits(&owner.client, &params, &input)?;
        let chosen = match auto {
            None => None,
            Some(goal) => {
                let started = Instant::now();
                let (height, prediction) =
                    self.choose_height(&program, &input, params, goal).await?;
                self.metrics
                    .planning_seconds
                    .with_label_values(&["choose-height"])
                    .observe(started.elapsed().as_secs_f64());
                params.segment_height = height;
                prediction
            }
        };
        // Keys and the loaded program first (for `auto`, at the chosen height), so that a
        // keygen (minutes, once) or loading the program (seconds, once per height) is not
        // timed as part of the job.
        self.prepare_keys(params).await?;
        let (backend, p) = (self.backend.clone(), program.clone());
        blocking(move || backend.prepare_program(&p, &params)).await??;
        let id = JobId(self.next_job.fetch_add(1, Ordering::Relaxed));
        let now = Instant::now();
        let owner_client = owner.client.clone();
        let mut job = Job::new(
            id,
            owner,
            program.clone(),
            input.clone(),
            params,
            now,
            unix_ms(),
        )?;
        if let Some(prediction) = chosen {
            job.set_prediction(prediction, now);
        }
        // In-process submissions (the library's callers) bring their own program; a client
        // over the API names one it keeps already, which costs nothing here.
        self.remember_program(&owner_client, &program, None)
            .expect("no limit refuses nothing");
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            self.collect_writes(&mut job);
            jobs.insert(id, job);
            // The job counts itself now.
            drop(reservation);
        }
        if let Err(e) = self.flush().await {
            if self.withdraw_unstored_job(id).await {
                return Err(e);
            }
        }
        self.metrics.jobs_submitted.inc();
        self.spawn_execution(id, program, input, params, 0);
        self.job_changed.notify_waiters();
        Ok(id)
    }

    /// Forgets a job whose submission could not be stored, so that the client, told so,
    /// can submit it again without making two (left in memory it would also never execute).
    /// Returns `false` if another write stored it meanwhile: then it stands.
    async fn withdraw_unstored_job(&self, id: JobId) -> bool {
        // Under the writer lock no flush is under way: what the outbox holds is not stored.
        let _writer = self.writer.lock().await;
        // The jobs lock first, then the outbox's, as `collect_writes` takes them.
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let mut outbox = self.outbox.lock().expect("outbox lock");
        let unstored = outbox
            .iter()
            .any(|op| matches!(op, StoreOp::InsertJob(record) if record.id == id));
        if unstored {
            outbox.retain(|op| op.job() != Some(id));
            jobs.remove(&id);
        }
        unstored
    }

    /// Chooses the segment height for `goal` by planning each candidate height and simulating
    /// each plan on the pool; returns it with its prediction.
    async fn choose_height(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: ProvingParams,
        goal: Goal,
    ) -> Result<(u32, Option<Prediction>), CoordinatorError> {
        let no_profile = || {
            CoordinatorError::CannotPlan(
                "no device profile: neither this coordinator nor its live workers have one \
                 (run `plait calibrate`, then start the coordinator or the workers with it), or \
                 give a segment height"
                    .into(),
            )
        };
        let planner = self.config.planner.as_ref().ok_or_else(no_profile)?;
        let pool = self
            .planning_pool(planner, params.vm_config)
            .ok_or_else(no_profile)?;
        // Keys for the executed height (the lowest) come first, so that keygen is not timed as
        // execution; the chosen height's keys are made before the job starts.
        if let Some(&lowest) = planner.heights.iter().min() {
            self.prepare_keys(ProvingParams {
                segment_height: lowest,
                ..params
            })
            .await?;
        }
        let candidates: Vec<_> = planning::candidates(
            self.backend.clone(),
            program,
            input,
            params,
            &planner.heights,
            &pool,
            SimConfig::default(),
        )
        .await?
        .into_iter()
        .map(|(candidate, _plan)| candidate)
        .collect();
        let (best, reason) = recommend(&candidates, goal)
            .map_err(|e| CoordinatorError::CannotPlan(e.to_string()))?;
        // The job waits for the planning executions (one, at the lowest height, when the
        // backend predicts the others), then executes at its own height.
        let executions: f64 = candidates.iter().map(|c| c.execution_seconds).sum();
        let prediction = Prediction::of(&candidates[best], &pool).map(|p| Prediction {
            goal: Some(goal),
            reason: Some(reason),
            latency_seconds: p.latency_seconds + executions - candidates[best].execution_seconds,
            ..p
        });
        Ok((candidates[best].segment_height, prediction))
    }

    /// Executes job `id`'s program in the background, skipping the first `skip` segments
    /// (already stored before a restart).
    fn spawn_execution(
        self: &Arc<Self>,
        id: JobId,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        skip: usize,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = this.execute_job(id, program, input, params, skip).await;
            if outcome.is_ok() {
                this.metrics
                    .execution_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            // With the whole plan known, predict the job on the pool it has: a simulation of
            // every task, so on a blocking thread and outside the jobs lock.
            let predicting = Instant::now();
            let prediction = match &outcome {
                Ok(plan) => this.predict(id, plan, params, started.elapsed()).await,
                Err(_) => None,
            };
            if prediction.is_some() {
                this.metrics
                    .planning_seconds
                    .with_label_values(&["predict"])
                    .observe(predicting.elapsed().as_secs_f64());
            }
            let now = Instant::now();
            {
                let mut jobs = this.jobs.lock().expect("jobs lock");
                let Some(job) = jobs.get_mut(&id) else { return };
                match &outcome {
                    Ok(_) => match prediction {
                        Some(Ok(p)) => job.set_prediction(p, now),
                        Some(Err(e)) => job.log(now, format!("no prediction: {e}")),
                        None => {}
                    },
                    // A job cancelled while executing stops its execution; that is not a
                    // failure.
                    Err(_) if job.status == JobStatus::Cancelled => job.execution_stopped(now),
                    Err(e) => job.execution_failed(&e.to_string(), now),
                }
                this.collect_writes(job);
            }
            if let Err(e) = this.flush().await {
                tracing::error!(job = %id, "storing the end of execution: {e}");
            }
            this.work_available.notify_waiters();
            this.job_changed.notify_waiters();
        });
    }

    /// The prediction for a job that has none yet, from its whole plan, if the coordinator has
    /// device profiles.
    async fn predict(
        &self,
        id: JobId,
        plan: &SegmentPlan,
        params: ProvingParams,
        execution: Duration,
    ) -> Option<Result<Prediction, String>> {
        if self
            .read_job(id, |j| j.prediction.is_some())
            .await
            .unwrap_or(true)
        {
            return None;
        }
        let pool = self.planning_pool(self.config.planner.as_ref()?, params.vm_config)?;
        let instructions = plan.clone();
        let sim = SimConfig {
            execution_seconds: execution.as_secs_f64(),
            ..SimConfig::default()
        };
        let evaluated = blocking(move || {
            evaluate(
                &instructions,
                params.segment_height,
                params.tree,
                &pool,
                sim,
            )
            .map(|candidate| Prediction::of(&candidate, &pool))
        })
        .await;
        match evaluated {
            Ok(Ok(prediction)) => prediction.map(Ok),
            Ok(Err(e)) => Some(Err(e.to_string())),
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Executes the program for job `id`: stores each segment's checkpoint, then adds the
    /// segment to the job, as execution cuts it.
    async fn execute_job(
        self: &Arc<Self>,
        id: JobId,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        skip: usize,
    ) -> Result<SegmentPlan, CoordinatorError> {
        let backend = self.backend.clone();
        let this = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let plan = blocking(move || {
            backend.execute_streaming(&program, &input, &params, Some(id), &mut |cut| {
                runtime.block_on(this.segment_cut(id, cut, skip))
            })
        })
        .await??;
        Ok(plan)
    }

    /// Takes one segment from execution: stores its checkpoint, then adds it to the job (its
    /// task is then ready). An error stops execution: the job is gone or no longer live, or a
    /// segment re-cut after a restart differs from the one stored.
    async fn segment_cut(
        &self,
        id: JobId,
        cut: CutSegment,
        skip: usize,
    ) -> Result<(), BackendError> {
        let index = cut.spec.index as usize;
        let stop = |why: String| BackendError::Stopped(why);
        if self.halted.load(Ordering::SeqCst) {
            return Err(stop("the coordinator was halted".into()));
        }
        if index < skip {
            // Cut before the restart: it must be the segment stored then.
            let same = self
                .read_job(id, |j| j.segments.get(index) == Some(&cut.spec))
                .await
                .map_err(|e| stop(e.to_string()))?;
            return if same {
                Ok(())
            } else {
                Err(stop(format!(
                    "after the restart, execution cut segment {index} differently from before"
                )))
            };
        }
        if let Some(bytes) = &cut.checkpoint {
            // A store that fails for a while is waited out: a long execution must not fail its
            // job (for good: execution failures are not retried) on a passing outage.
            let mut failures = 0;
            let stored = loop {
                match self.store.put_blob(id, bytes).await {
                    Ok(stored) => break stored,
                    Err(e) => {
                        self.note_store_failure(&e);
                        self.wait_out_store_failure(&mut failures)
                            .await
                            .map_err(|halted| {
                                stop(format!(
                                    "storing the checkpoint of segment {index}: {e}; {halted}"
                                ))
                            })?;
                    }
                }
            };
            // Workers fetch it by the name the segment carries.
            if cut.spec.checkpoint.as_deref() != Some(stored.as_str()) {
                return Err(stop(format!(
                    "segment {index} names checkpoint {:?}, its bytes hash to {stored}",
                    cut.spec.checkpoint
                )));
            }
        }
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let job = jobs
                .get_mut(&id)
                .ok_or_else(|| stop(format!("{id} no longer exists")))?;
            // A failed job keeps executing: it can be retried, and then needs every segment.
            if job.status == JobStatus::Cancelled {
                return Err(stop(format!("{id} is {}", job.status.name())));
            }
            let added = job.add_segment(cut.spec, cut.ending, Instant::now());
            self.collect_writes(job);
            added.map_err(stop)?;
        }
        // The segment is durable before any worker can be handed it (a claim flushes before it
        // answers, so none is while this waits out a failing store).
        let mut failures = 0;
        while let Err(e) = self.flush().await {
            self.wait_out_store_failure(&mut failures)
                .await
                .map_err(|halted| stop(format!("storing segment {index}: {e}; {halted}")))?;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(())
    }

    /// The pool to plan a job of `vm` for: the configured one if it is fixed; otherwise one
    /// worker per live worker, each with its own profile or else the next of the configured mix
    /// (at least one worker). Only profiles measured under `vm` count. `None` when no profile
    /// is known.
    fn planning_pool(&self, planner: &PlannerConfig, vm: VmConfig) -> Option<Pool> {
        let configured = &planner.pool.of_vm_config(vm.name());
        if planner.fixed_size {
            return (!configured.workers.is_empty()).then(|| configured.clone());
        }
        let recent = self.live_window();
        let mut seen = self.workers_seen.lock().expect("workers lock");
        // Workers gone for a lease period are forgotten (ids of restarted workers differ).
        seen.retain(|_, w| w.at.elapsed() <= recent);
        let mut live: Vec<(&String, &Option<DeviceProfile>)> =
            seen.iter().map(|(id, w)| (id, &w.profile)).collect();
        live.sort_by_key(|(id, _)| *id);
        let mut pool = Pool {
            profiles: configured.profiles.clone(),
            workers: Vec::new(),
        };
        let mut defaults = configured.workers.iter().cycle();
        for (_, profile) in live {
            match profile.as_ref().filter(|p| p.vm_config == vm.name()) {
                Some(own) => {
                    let index = match pool.profiles.iter().position(|p| p == own) {
                        Some(i) => i,
                        None => {
                            pool.profiles.push(own.clone());
                            pool.profiles.len() - 1
                        }
                    };
                    pool.workers.push(index);
                }
                None => pool.workers.extend(defaults.next()),
            }
        }
        if pool.workers.is_empty() {
            pool.workers.extend(configured.workers.first());
        }
        (!pool.workers.is_empty()).then_some(pool)
    }

    /// Hands the worker a task that fits it, waiting up to the claim wait for one to appear.
    pub async fn claim(
        &self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
    ) -> Result<Option<TaskAssignment>, CoordinatorError> {
        if worker.backend != self.backend_info.name
            || worker.backend_version != self.backend_info.version
        {
            return Err(CoordinatorError::IncompatibleWorker {
                worker: format!("{} {}", worker.backend, worker.backend_version),
                coordinator: format!("{} {}", self.backend_info.name, self.backend_info.version),
            });
        }
        worker
            .check_bounds()
            .map_err(CoordinatorError::BadRequest)?;
        self.check_not_banned(worker_id)?;
        self.note_worker(worker_id, worker);
        let deadline = tokio::time::Instant::now() + self.config.claim_wait;
        loop {
            // Register interest before looking, so a notification between the look and the
            // wait is not lost.
            let notified = self.work_available.notified();
            if let Some(task) = self.try_lease(worker_id, worker) {
                // The lease's attempt number must be durable before the worker uses it, so
                // that a restarted coordinator never reissues it.
                if let Err(e) = self.flush().await {
                    self.withdraw_lease(worker_id, &task, &e);
                    return Err(e);
                }
                self.job_changed.notify_waiters();
                return Ok(Some(task));
            }
            // Look again at least every second: a task's retry backoff ends without a
            // notification.
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(None);
            }
        }
    }

    /// Takes back a lease whose grant could not be stored (the worker is told so and never
    /// gets it): the task is ready again at once, and this does not count against it or the
    /// worker as a lost lease would. The attempt number stays used (its write is retried with
    /// the next flush), so a later lease of the task gets a higher one.
    fn withdraw_lease(&self, worker: &str, task: &TaskAssignment, error: &CoordinatorError) {
        let reason = format!("its lease could not be stored ({error}); it was never handed out");
        let withdrawn = self.with_lease(task.job_id, task.task_id, task.attempt, worker, |j| {
            j.fail_attempt(
                task.task_id,
                task.attempt,
                &task.lease_secret,
                &reason,
                None,
                Instant::now(),
            )
        });
        if let Err(e) = withdrawn {
            tracing::warn!(job = %task.job_id, task = %task.task_id, "withdrawing a lease: {e}");
        }
        self.work_available.notify_waiters();
    }

    /// Records that the worker is live, with its device profile if that fits this coordinator.
    fn note_worker(&self, worker_id: &str, worker: &ClaimTaskRequest) {
        self.identities
            .lock()
            .expect("identities lock")
            .saw(worker_id);
        let mut seen = self.workers_seen.lock().expect("workers lock");
        let first_claim = !seen.contains_key(worker_id);
        let profile = worker.device_profile.clone().filter(|p| {
            let info = &self.backend_info;
            let tree = ProvingParams::default().tree;
            match p.check(env!("CARGO_PKG_VERSION"), &info.name, &info.version, tree) {
                Ok(()) => true,
                Err(e) => {
                    if first_claim {
                        tracing::warn!(worker = %worker_id, "device profile ignored: {e}");
                    }
                    false
                }
            }
        });
        seen.insert(
            worker_id.to_string(),
            SeenWorker {
                at: Instant::now(),
                memory_bytes: worker.memory_bytes,
                profile,
                proves_on: worker.device.clone(),
            },
        );
    }

    /// Forgets workers that have not asked for work for a lease period, and the identities of
    /// registered workers idle for [`CoordinatorConfig::worker_idle`]: neither
    /// table grows with every worker that ever joined.
    fn forget_gone_workers(&self) {
        let recent = self.live_window();
        self.workers_seen
            .lock()
            .expect("workers lock")
            .retain(|_, w| w.at.elapsed() <= recent);
        let holding = self.leases_held();
        let gone = self
            .identities
            .lock()
            .expect("identities lock")
            .prune(self.config.worker_idle, |id| holding.contains_key(id));
        if !gone.is_empty() {
            tracing::info!(count = gone.len(), "forgot idle registered workers");
            self.forget_identities(gone);
        }
    }

    /// Drops what is kept about forgotten identities, and records that they are gone.
    fn forget_identities(&self, gone: Vec<String>) {
        let mut done = self.tasks_done.lock().expect("tasks done lock");
        for id in &gone {
            done.remove(id);
        }
        drop(done);
        self.outbox
            .lock()
            .expect("outbox lock")
            .extend(gone.into_iter().map(|id| StoreOp::ForgetWorker { id }));
    }

    /// How long a lease of `work` may last at most: four times what the worker's profile
    /// predicts, plus two minutes (and ten for a keygen if it holds no keys for the height),
    /// never more than the configured ceiling, which also serves without a prediction.
    /// (Called once per lease granted, with the jobs lock held: it takes the workers lock
    /// after it, as no other path takes them the other way round.)
    fn time_limit(
        &self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
        params: &ProvingParams,
        work: &Work,
    ) -> Duration {
        let ceiling = self.config.max_lease;
        let seen = self.workers_seen.lock().expect("workers lock");
        // The profile note_worker kept, if it fits this coordinator.
        let Some(profile) = seen.get(worker_id).and_then(|w| w.profile.as_ref()) else {
            return ceiling;
        };
        let predicted = match work {
            Work::ProveSegment { segment, .. } => {
                profile.segment_seconds(params.segment_height, segment.num_insns)
            }
            Work::Aggregate { layer, children } => {
                profile.node_seconds(*layer, children.len() as u32)
            }
        };
        let keygen = if worker.key_sets.contains(&params.key_set()) {
            0.0
        } else {
            600.0
        };
        let seconds = 4.0 * predicted + 120.0 + keygen;
        if seconds.is_finite() && seconds > 0.0 {
            Duration::from_secs_f64(seconds).min(ceiling)
        } else {
            ceiling
        }
    }

    /// The metrics in Prometheus' text format, the gauges read now.
    pub fn metrics_text(&self) -> String {
        let mut gauges = Gauges::default();
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let mut ready = std::collections::BTreeMap::new();
            let mut states = std::collections::BTreeMap::new();
            for job in jobs.values_mut() {
                for (kind, n) in job.ready_by_kind() {
                    *ready.entry(kind).or_insert(0) += n;
                }
                // An ended job is only waiting to leave memory.
                if !job.status.is_live() {
                    continue;
                }
                let state = if job.executing && job.status == JobStatus::Running {
                    "executing"
                } else {
                    job.status.name()
                };
                *states.entry(state).or_insert(0) += 1;
            }
            gauges.ready_tasks = ready.into_iter().collect();
            gauges.jobs = states.into_iter().collect();
        }
        {
            let recent = self.live_window();
            let seen = self.workers_seen.lock().expect("workers lock");
            for worker in seen.values().filter(|w| w.at.elapsed() <= recent) {
                gauges.live_workers += 1;
                gauges.live_workers_memory_bytes = gauges
                    .live_workers_memory_bytes
                    .saturating_add(worker.memory_bytes.min(i64::MAX as u64) as i64);
            }
        }
        self.metrics.render(gauges)
    }

    /// The most memory any live worker advertised; `None` if none is live or one advertised no
    /// limit (it takes any task).
    fn largest_live_worker_memory(&self) -> Option<u64> {
        let recent = self.live_window();
        let seen = self.workers_seen.lock().expect("workers lock");
        let live: Vec<u64> = seen
            .values()
            .filter(|w| w.at.elapsed() <= recent)
            .map(|w| w.memory_bytes)
            .collect();
        if live.is_empty() || live.contains(&0) {
            return None;
        }
        live.into_iter().max()
    }

    /// The memory needs learned from workers' peaks, for the operator.
    pub fn memory_needs(&self) -> Vec<plait_api::MemoryNeedRecord> {
        let now = Instant::now();
        let min_reports = self.min_memory_reports();
        let known = self.node_memory.lock().expect("node memory lock");
        let mut needs: Vec<plait_api::MemoryNeedRecord> = known
            .iter()
            .filter_map(|((key_set, phase), reports)| {
                let need_bytes = reports.need(min_reports, now)?;
                let reporters = reports.reporters(now);
                Some(plait_api::MemoryNeedRecord {
                    key_set: *key_set,
                    phase: phase.clone(),
                    need_bytes,
                    reporters: if reporters >= min_reports {
                        reporters as u32
                    } else {
                        0
                    },
                })
            })
            .collect();
        needs.sort_by(|a, b| {
            (
                a.key_set.vm_config.name(),
                a.key_set.segment_height,
                &a.phase,
            )
                .cmp(&(
                    b.key_set.vm_config.name(),
                    b.key_set.segment_height,
                    &b.phase,
                ))
        });
        needs
    }

    /// Forgets every learned memory need, in memory and in the store: tasks go by the
    /// operator's profiles or the backend's estimate again until workers report anew.
    pub async fn forget_memory_needs(&self) -> Result<(), CoordinatorError> {
        self.node_memory.lock().expect("node memory lock").clear();
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetMemoryNeeds);
        self.flush().await?;
        self.work_available.notify_waiters();
        Ok(())
    }

    /// Where a phase's memory need comes from, for messages.
    fn memory_need_source(&self, params: &ProvingParams, layer: Option<AggLayer>) -> String {
        let phase = layer.map_or_else(|| "segments".to_string(), |l| l.to_string());
        let measured = self.node_memory.lock().expect("node memory lock");
        let min_reports = self.min_memory_reports();
        let now = Instant::now();
        match measured.get(&(params.key_set(), phase)) {
            Some(reports) if reports.reporters(now) >= min_reports => format!(
                "the median of the peaks {} workers measured, weighted by their accepted \
                 results; `plait workers reset-needs` forgets it",
                reports.reporters(now)
            ),
            Some(reports) if reports.need(min_reports, now).is_some() => {
                "as workers measured it before a restart; `plait workers reset-needs` \
                 forgets it"
                    .into()
            }
            _ if self.profile_peak(params, layer).is_some() => {
                "the peak measured when this machine was calibrated".into()
            }
            _ if layer.is_some() => "the backend's estimate".into(),
            _ => "the backend's estimate of each segment".into(),
        }
    }

    /// Reports, in each running job's status and event log, ready tasks that no live worker
    /// has the memory for (the reaper calls it every 10 s).
    pub async fn report_unplaceable_tasks(&self) -> Result<(), CoordinatorError> {
        let largest = self.largest_live_worker_memory();
        let need = |p: &ProvingParams, layer: Option<AggLayer>| self.memory_need(p, layer);
        let source = |p: &ProvingParams, layer: Option<AggLayer>| self.memory_need_source(p, layer);
        let now = Instant::now();
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            for job in jobs.values_mut() {
                job.check_placeable(largest, &need, &source, now);
                self.collect_writes(job);
            }
        }
        self.flush().await
    }

    /// The memory each other worker that asked for work within a lease period advertised.
    /// The memory of every other live worker, and whether it is trusted (see
    /// [`CoordinatorConfig::trusted_after_accepted`]).
    fn other_live_workers(&self, except: &str) -> Vec<(u64, bool)> {
        let recent = self.live_window();
        let live: Vec<(String, u64)> = {
            let seen = self.workers_seen.lock().expect("workers lock");
            seen.iter()
                .filter(|(id, w)| id.as_str() != except && w.at.elapsed() <= recent)
                .map(|(id, w)| (id.clone(), w.memory_bytes))
                .collect()
        };
        live.into_iter()
            .map(|(id, memory)| (memory, self.is_trusted(&id)))
            .collect()
    }

    /// Counts a rejected proof against `worker`; past the limit, bans it. Returns the ban's
    /// reason if this rejection banned it.
    fn count_rejection(&self, worker: &str, reason: &str) -> Option<String> {
        let limit = self.config.max_rejections_per_worker;
        let mut banned = None;
        let changed = self
            .identities
            .lock()
            .expect("identities lock")
            .update(worker, |identity| {
                identity.rejections += 1;
                if identity.rejections >= limit && identity.ban.is_none() {
                    let why = format!(
                        "{} of its proofs were rejected, the last one: {reason}",
                        identity.rejections
                    );
                    banned = Some(why.clone());
                    identity.ban = Some(Ban {
                        reason: why,
                        at_unix_ms: unix_ms(),
                        by_operator: false,
                    });
                }
            });
        self.store_identity(changed);
        banned
    }

    fn store_identity(&self, identity: Option<Identity>) {
        if let Some(identity) = identity {
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::WorkerIdentity(identity));
        }
    }

    /// Who presents `token` on a worker route: the pool (its worker token, which only
    /// registers) or a worker (its own credential). Anything else, and a banned worker, is
    /// refused.
    pub fn authenticate_worker(&self, token: &str) -> Result<WorkerCaller, CoordinatorError> {
        use subtle::ConstantTimeEq;
        let pool = &self.config.worker_token;
        if !pool.is_empty() && bool::from(token.as_bytes().ct_eq(pool.as_bytes())) {
            return Ok(WorkerCaller::Pool);
        }
        // Bound first: the identities lock must be released before the ban check takes it.
        let id = self
            .identities
            .lock()
            .expect("identities lock")
            .identify(token)
            .ok_or(CoordinatorError::Unauthorized("worker"))?;
        self.check_not_banned(&id)?;
        Ok(WorkerCaller::Worker(id))
    }

    /// A new identity for a worker that presented the pool token: its id and credential.
    pub async fn register_worker(&self, name: &str) -> Result<(String, String), CoordinatorError> {
        plait_api::check_worker_name("name", name).map_err(CoordinatorError::BadRequest)?;
        if self.config.worker_token.is_empty() {
            return Err(CoordinatorError::RegistrationClosed);
        }
        // The table is bounded, so that a flood of registrations cannot exhaust memory. When
        // it is full, a registered identity that is not working (unseen for longer than a
        // live worker's silence, holding no lease) makes room: a flood of registrations
        // that are never used cannot keep later workers out.
        let known = self.identities.lock().expect("identities lock").len();
        // Taken before the identities lock (the lock order elsewhere is jobs, then identities).
        let holding = (known >= self.config.max_workers).then(|| self.leases_held());
        let (identity, credential, displaced) = {
            let mut identities = self.identities.lock().expect("identities lock");
            let mut displaced = None;
            if identities.len() >= self.config.max_workers {
                // No lease holders read: the table filled since `known` was read. Refusing
                // (the worker retries) is safe; displacing without knowing who works is not.
                displaced = holding.as_ref().and_then(|holding| {
                    identities.displace_stalest(self.live_window(), |id| holding.contains_key(id))
                });
                if displaced.is_none() {
                    return Err(CoordinatorError::PoolFull {
                        limit: self.config.max_workers,
                        live_secs: self.live_window().as_secs(),
                    });
                }
            }
            let (identity, credential) = identities.register(name, unix_ms());
            (identity, credential, displaced)
        };
        if let Some(displaced) = displaced {
            tracing::info!(worker = %displaced, "forgot an idle registered worker to make room for a new one");
            self.forget_identities(vec![displaced]);
        }
        let id = identity.id.clone();
        self.store_identity(Some(identity));
        // A worker uses its credential only once it is stored.
        self.flush().await?;
        tracing::info!(worker = %id, "worker registered");
        Ok((id, credential))
    }

    /// Issues a credential for a worker of the operator's naming (a closed pool's way in).
    /// The client a bearer token names: the shared client token is the client `default`,
    /// any other must be a credential the operator issued.
    pub fn authenticate_client(&self, token: &str) -> Result<String, CoordinatorError> {
        use subtle::ConstantTimeEq;
        let shared = &self.config.client_token;
        if !shared.is_empty() && bool::from(token.as_bytes().ct_eq(shared.as_bytes())) {
            return Ok(DEFAULT_CLIENT.into());
        }
        self.clients
            .lock()
            .expect("clients lock")
            .identify(token)
            .ok_or(CoordinatorError::Unauthorized("client"))
    }

    /// Issues a credential for a new client with `limits`.
    pub async fn issue_client(
        &self,
        id: &str,
        limits: plait_api::ClientLimits,
    ) -> Result<String, CoordinatorError> {
        plait_api::check_worker_name("client-id", id).map_err(CoordinatorError::BadRequest)?;
        if !(1..=MAX_WEIGHT).contains(&limits.weight) {
            return Err(CoordinatorError::BadRequest(format!(
                "a client's weight is 1 to {MAX_WEIGHT}"
            )));
        }
        // A revoked client's name is not issued again while its jobs are kept: the new
        // holder would see and act on them.
        self.flush().await?;
        if self.store.client_has_jobs(id).await? {
            return Err(CoordinatorError::ClientExists(id.to_string()));
        }
        let (client, credential) = self
            .clients
            .lock()
            .expect("clients lock")
            .issue(id, limits, unix_ms())
            .ok_or_else(|| CoordinatorError::ClientExists(id.to_string()))?;
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::Client(client));
        self.flush().await?;
        Ok(credential)
    }

    /// Revokes a client's credential; its jobs run on, out of its reach.
    pub async fn revoke_client(&self, id: &str) -> Result<(), CoordinatorError> {
        if !self.clients.lock().expect("clients lock").revoke(id) {
            return Err(CoordinatorError::UnknownClient(id.to_string()));
        }
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetClient { id: id.to_string() });
        self.flush().await
    }

    /// The operator's view of the clients, sorted by id.
    pub fn clients(&self) -> Vec<plait_api::ClientRecord> {
        let (mut in_flight, mut leases) = (HashMap::new(), HashMap::new());
        for job in self.jobs.lock().expect("jobs lock").values() {
            if job.status.is_live() {
                *in_flight.entry(job.owner.client.clone()).or_insert(0u32) += 1;
                *leases.entry(job.owner.client.clone()).or_insert(0u32) +=
                    job.lease_holders().map(|(_, n)| n as u32).sum::<u32>();
            }
        }
        let clients = self.clients.lock().expect("clients lock");
        let owners = self.program_owners.lock().expect("program owners lock");
        let mut records: Vec<_> = clients
            .all()
            .map(|c: &Client| plait_api::ClientRecord {
                client_id: c.id.clone(),
                created_unix_ms: c.created_unix_ms,
                limits: c.limits,
                jobs_in_flight: in_flight.get(&c.id).copied().unwrap_or(0),
                leases: leases.get(&c.id).copied().unwrap_or(0),
                program_bytes: owners.bytes_of(&c.id),
            })
            .collect();
        if !self.config.client_token.is_empty() {
            records.push(plait_api::ClientRecord {
                client_id: DEFAULT_CLIENT.into(),
                created_unix_ms: 0,
                limits: clients.limits(DEFAULT_CLIENT),
                jobs_in_flight: in_flight.get(DEFAULT_CLIENT).copied().unwrap_or(0),
                leases: leases.get(DEFAULT_CLIENT).copied().unwrap_or(0),
                program_bytes: owners.bytes_of(DEFAULT_CLIENT),
            });
        }
        records.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        records
    }

    /// Checks a submission against its client's limits and takes its place among the
    /// client's jobs in flight.
    fn check_client_limits(
        &self,
        client: &str,
        params: &ProvingParams,
        input: &ProgramInput,
    ) -> Result<Reservation, CoordinatorError> {
        let limits = self.clients.lock().expect("clients lock").limits(client);
        if let Some(limit) = limits.max_input_bytes {
            let asked = input.total_bytes();
            if asked > limit {
                return Err(CoordinatorError::OverInputLimit {
                    client: client.into(),
                    limit,
                    asked,
                });
            }
        }
        if let Some(limit) = limits.max_instructions {
            if params.max_instructions > limit {
                return Err(CoordinatorError::OverInstructionLimit {
                    client: client.into(),
                    limit,
                    asked: params.max_instructions,
                });
            }
        }
        // Counted and reserved under the jobs lock, which a submission's job is inserted
        // under: no two submissions can both see room for one.
        let jobs = self.jobs.lock().expect("jobs lock");
        if let Some(limit) = limits.max_jobs_in_flight {
            let count = jobs
                .values()
                .filter(|j| j.owner.client == client && (j.status.is_live() || j.executing))
                .count() as u32
                + self.submitting.count(client);
            if count >= limit {
                return Err(CoordinatorError::TooManyJobs {
                    client: client.into(),
                    limit,
                    count,
                });
            }
        }
        Ok(self.submitting.reserve(client))
    }

    /// Refuses a client's call about a job that is not its own as if the job did not exist:
    /// a client learns nothing of another's jobs.
    pub async fn check_owner(&self, job: JobId, client: &str) -> Result<(), CoordinatorError> {
        let in_memory = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(&job)
            .map(|j| j.owner.client.clone());
        // An ended job is not read back whole for this: its owner is one column.
        let owner = match in_memory {
            Some(owner) => Some(owner),
            None if self.was_submitted(job) => {
                self.flush().await?;
                self.store.job_client(job).await?
            }
            None => None,
        };
        match owner {
            Some(owner) if owner == client => Ok(()),
            _ => Err(CoordinatorError::UnknownJob(job)),
        }
    }

    /// `client`'s job ids below `before`, newest first, at most `limit`.
    pub async fn job_ids_of(
        &self,
        client: &str,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, CoordinatorError> {
        self.flush().await?;
        Ok(self.store.job_ids_of(client, before, limit).await?)
    }

    pub async fn issue_worker(&self, id: &str) -> Result<String, CoordinatorError> {
        plait_api::check_worker_name("worker-id", id).map_err(CoordinatorError::BadRequest)?;
        let (identity, credential) = self
            .identities
            .lock()
            .expect("identities lock")
            .issue(id, unix_ms())
            .ok_or_else(|| CoordinatorError::WorkerExists(id.to_string()))?;
        self.store_identity(Some(identity));
        self.flush().await?;
        Ok(credential)
    }

    /// Revokes a worker's credential: its next call is refused, and its leases lapse.
    pub async fn revoke_worker(&self, id: &str) -> Result<(), CoordinatorError> {
        if !self.identities.lock().expect("identities lock").revoke(id) {
            return Err(CoordinatorError::UnknownWorker(id.to_string()));
        }
        self.tasks_done.lock().expect("tasks done lock").remove(id);
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetWorker { id: id.to_string() });
        self.flush().await
    }

    /// Bans a worker (`Some(reason)`) or lifts its ban (`None`, which also clears its
    /// rejection count). A banned worker gets no work and its calls are refused, so its
    /// leases lapse at their next missed heartbeat.
    pub async fn set_worker_ban(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        if let Some(reason) = reason {
            if reason.is_empty() || reason.len() > plait_api::limits::BAN_REASON_BYTES {
                return Err(CoordinatorError::BadRequest(format!(
                    "a ban's reason must be 1 to {} bytes",
                    plait_api::limits::BAN_REASON_BYTES
                )));
            }
        }
        let changed = self
            .identities
            .lock()
            .expect("identities lock")
            .update(id, |identity| match reason {
                Some(reason) => {
                    identity.ban = Some(Ban {
                        reason: reason.to_string(),
                        at_unix_ms: unix_ms(),
                        by_operator: true,
                    })
                }
                None => {
                    identity.ban = None;
                    identity.rejections = 0;
                }
            })
            .ok_or_else(|| CoordinatorError::UnknownWorker(id.to_string()))?;
        tracing::info!(worker = %id, banned = reason.is_some(), "operator changed a worker's ban");
        self.store_identity(Some(changed));
        self.flush().await
    }

    /// Every worker identity, for the operator: with whether it is live, the memory it
    /// advertised and the leases it holds.
    pub fn workers(&self) -> Vec<plait_api::WorkerRecord> {
        let recent = self.live_window();
        // The jobs lock is released before the workers lock is taken (lease grants take them
        // the other way round).
        let leases = self.leases_held();
        let mut current: HashMap<String, Vec<String>> = HashMap::new();
        for job in self.jobs.lock().expect("jobs lock").values() {
            for (worker, task) in job.leased_tasks() {
                current
                    .entry(worker.to_string())
                    .or_default()
                    .push(format!("{}/{task}", job.id));
            }
        }
        let done = self.tasks_done.lock().expect("tasks done lock").clone();
        let seen = self.workers_seen.lock().expect("workers lock");
        self.identities.lock().expect("identities lock").records(
            |id| {
                let worker = seen.get(id);
                (
                    worker.is_some_and(|w| w.at.elapsed() <= recent),
                    worker.map_or(0, |w| w.memory_bytes),
                    leases.get(id).copied().unwrap_or(0) as u32,
                )
            },
            |record| {
                let id = &record.worker_id;
                record.device = seen
                    .get(id)
                    .and_then(|w| w.profile.as_ref())
                    .map(|p| p.device.clone());
                record.proves_on = seen.get(id).and_then(|w| w.proves_on.clone());
                record.current_tasks = current.get(id).cloned().unwrap_or_default();
                record.tasks_done = done.get(id).copied().unwrap_or(0);
            },
        )
    }

    /// The job's aggregation tree with each task's state, for its client's dashboard.
    pub async fn tree(&self, job: JobId) -> Result<Vec<plait_api::TreeNode>, CoordinatorError> {
        self.read_job(job, Job::tree).await
    }

    /// The job's tree, whole up to `limit` tasks, else counted (see [`Job::tree_view`]).
    pub async fn tree_view(
        &self,
        job: JobId,
        limit: usize,
    ) -> Result<plait_api::TreeView, CoordinatorError> {
        self.read_job(job, |j| j.tree_view(limit)).await
    }

    /// How many leases each worker holds, over every live job.
    fn leases_held(&self) -> HashMap<String, usize> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let mut held = HashMap::new();
        for (worker, n) in jobs.values().flat_map(|j| j.lease_holders()) {
            *held.entry(worker.to_string()).or_insert(0) += n;
        }
        held
    }

    fn check_not_banned(&self, worker: &str) -> Result<(), CoordinatorError> {
        let identities = self.identities.lock().expect("identities lock");
        match identities.get(worker).and_then(|i| i.ban.as_ref()) {
            Some(ban) => Err(CoordinatorError::WorkerBanned {
                worker: worker.to_string(),
                reason: ban.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Learns from a task's measured peak memory (already bounded by what its worker
    /// advertised), per key set and phase (`segments` or the layer); a changed need is stored
    /// with the result's next flush.
    fn record_peak_memory(&self, keys: KeySetId, t: &TaskTiming) {
        let peak = t.meta.process_peak_rss_bytes;
        // A GPU prover's host memory says nothing of what a CPU prover needs.
        if peak == 0 || t.meta.device_peak_bytes > 0 {
            return;
        }
        // Weighted by the worker's accepted results, this one included.
        let weight = self
            .tasks_done
            .lock()
            .expect("tasks done lock")
            .get(&t.worker)
            .copied()
            .unwrap_or(0)
            + 1;
        let now = Instant::now();
        let mut known = self.node_memory.lock().expect("node memory lock");
        let reports = known
            .entry((keys, t.phase.clone()))
            .or_insert_with(NodeMemoryReports::new);
        let min_reports = self.min_memory_reports();
        let before = reports.need(min_reports, now);
        reports.add(&t.worker, peak, weight, now);
        let need = reports.need(min_reports, now);
        if let Some(need) = need.filter(|_| need != before) {
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::NodeMemory {
                    keys,
                    layer: t.phase.clone(),
                    peak_bytes: need,
                });
        }
    }

    /// What a task of `layer` (`None`: a segment) is assumed to need: what workers measured
    /// for that phase and key set ([`NodeMemoryReports`]), else for a node the
    /// backend's figure (segments then go by the backend's estimate of each, which OpenVM
    /// puts far below the measured peak: 1.5 GiB against 5.96 GiB at height 19).
    /// Before any is learned, the peak the planner's own profiles (the operator's, never a
    /// worker's) measured for the phase at that height; then the backend's figure.
    fn memory_need(&self, params: &ProvingParams, layer: Option<AggLayer>) -> u64 {
        let phase = layer.map_or_else(|| "segments".to_string(), |l| l.to_string());
        let learned = {
            let measured = self.node_memory.lock().expect("node memory lock");
            measured
                .get(&(params.key_set(), phase))
                .and_then(|r| r.need(self.min_memory_reports(), Instant::now()))
        };
        match (learned.or_else(|| self.profile_peak(params, layer)), layer) {
            (Some(need), _) => need,
            (None, Some(layer)) => self.backend.aggregation_memory_estimate(params, layer),
            (None, None) => 0,
        }
    }

    /// How many workers must have measured a phase before their figures set its need: two
    /// (one worker's figure, perhaps a hostile one, must not), or one in a local pool.
    fn min_memory_reports(&self) -> usize {
        if self.config.local_machine_memory.is_some() {
            1
        } else {
            2
        }
    }

    /// The largest peak the planner's configured profiles of the job's VM config and of
    /// devices of `kind` measured for a phase at the job's height (device memory for GPUs).
    /// Profiles workers send are not used: a worker must not set what others' tasks need.
    fn profile_peak_on(
        &self,
        kind: DeviceKind,
        params: &ProvingParams,
        layer: Option<AggLayer>,
    ) -> Option<u64> {
        let planner = self.config.planner.as_ref()?;
        let config = params.vm_config.name();
        let profiles = planner
            .pool
            .profiles
            .iter()
            .filter(|p| p.vm_config == config && p.device_kind == kind);
        let peaks: Vec<u64> = match layer {
            None => profiles
                .filter(|p| {
                    p.segments
                        .iter()
                        .any(|s| s.segment_height == params.segment_height)
                })
                .map(|p| p.segment_memory(params.segment_height))
                .collect(),
            // Aggregation proofs are of the same size at every segment height.
            Some(layer) => profiles.map(|p| p.node_memory(layer)).collect(),
        };
        peaks.into_iter().filter(|&p| p > 0).max()
    }

    fn profile_peak(&self, params: &ProvingParams, layer: Option<AggLayer>) -> Option<u64> {
        self.profile_peak_on(DeviceKind::Cpu, params, layer)
    }

    /// What a task of `layer` (`None`: a segment) needs of a GPU's memory: the device peak the
    /// planner's GPU profiles measured, else for a node the backend's figure; a segment
    /// needs at least the backend's estimate of it (see [`Job::lease_next`]). Workers'
    /// host-memory reports say nothing of it and are not used.
    fn device_memory_need(&self, params: &ProvingParams, layer: Option<AggLayer>) -> u64 {
        match (self.profile_peak_on(DeviceKind::Gpu, params, layer), layer) {
            (Some(need), _) => need,
            (None, Some(layer)) => self.backend.aggregation_memory_estimate(params, layer),
            (None, None) => 0,
        }
    }

    fn try_lease(&self, worker_id: &str, worker: &ClaimTaskRequest) -> Option<TaskAssignment> {
        let now = Instant::now();
        // Each phase's need is looked up once per claim, and the other live workers only if a
        // task this worker failed comes up; a job none of whose ready tasks fits the worker
        // says so from its ready summary, without a walk of its tasks.
        let needs = std::cell::RefCell::new(HashMap::new());
        let on_gpu = worker.gpu().is_some();
        let need = |p: &ProvingParams, layer: Option<AggLayer>| {
            *needs
                .borrow_mut()
                .entry((p.key_set(), layer))
                .or_insert_with(|| match on_gpu {
                    true => self.device_memory_need(p, layer),
                    false => self.memory_need(p, layer),
                })
        };
        // A task this worker just failed goes to another worker, if one that fits is live; a
        // task a worker without a record failed goes to a worker with one, if one that fits is
        // live, so that new identities taking turns cannot keep it from the proven workers.
        let others = std::cell::OnceCell::new();
        let claimant_trusted = std::cell::OnceCell::new();
        let leave_to_others = |failed_by: &str, need: u64| {
            let others = others.get_or_init(|| self.other_live_workers(worker_id));
            if failed_by == worker_id {
                return others.iter().any(|&(m, _)| need <= m);
            }
            !*claimant_trusted.get_or_init(|| self.is_trusted(worker_id))
                && !self.is_trusted(failed_by)
                && others.iter().any(|&(m, trusted)| trusted && need <= m)
        };
        let time_limit =
            |params: &ProvingParams, work: &Work| self.time_limit(worker_id, worker, params, work);
        // Read before the jobs lock is taken: the two locks are never held together.
        let weights: HashMap<String, u32> = self
            .clients
            .lock()
            .expect("clients lock")
            .all()
            .map(|c| (c.id.clone(), c.limits.weight))
            .collect();
        let mut jobs = self.jobs.lock().expect("jobs lock");
        // A worker holds at most as many leases as it has slots: one that claims everything
        // cannot hold more than its share.
        let held: usize = jobs.values().map(|j| j.leases_held_by(worker_id)).sum();
        if held >= worker.slots as usize {
            return None;
        }
        // Local workers share one machine's memory: what the tasks already leased need is
        // not there for another.
        let memory_left = match self.config.local_machine_memory {
            None => u64::MAX,
            Some(machine) => {
                let leased: u64 = jobs.values().map(|j| j.leased_memory_need(&need)).sum();
                match machine.saturating_sub(leased) {
                    0 => return None,
                    left => left,
                }
            }
        };
        // Clients share the pool by weighted fair queueing on leases: each lease costs its
        // client 1/weight, and the client that has been served least goes first; a client
        // that (re)joins starts at the current virtual time, so idling earns no credit.
        // Within a client: a job whose keys the worker holds before one that would cost it a
        // keygen, then the higher priority, then the older.
        let mut fair = self.fair_share.lock().expect("fair share lock");
        let now_virtual = fair.now;
        for job in jobs.values().filter(|j| j.is_running()) {
            let served = fair.served.entry(job.owner.client.clone()).or_default();
            *served = (*served).max(now_virtual);
        }
        let holds_keys = |job: &Job| worker.key_sets.contains(&job.params.key_set());
        let mut order: Vec<(u64, bool, std::cmp::Reverse<i32>, JobId)> = jobs
            .values()
            .filter(|job| job.is_running())
            .map(|job| {
                (
                    fair.served[&job.owner.client],
                    !holds_keys(job),
                    std::cmp::Reverse(job.owner.priority),
                    job.id,
                )
            })
            .collect();
        order.sort_unstable();
        let leased = order.into_iter().find_map(|(.., id)| {
            let job = jobs.get_mut(&id)?;
            let task = job.lease_next(
                worker_id,
                worker,
                memory_left,
                self.config.lease,
                now,
                &need,
                &leave_to_others,
                &time_limit,
            )?;
            self.collect_writes(job);
            self.metrics
                .leases_granted
                .with_label_values(&[job.task_kind(task.task_id)])
                .inc();
            let weight = weights.get(&job.owner.client).copied().unwrap_or(1).max(1);
            let fair = &mut *fair;
            let served = fair.served.entry(job.owner.client.clone()).or_default();
            fair.now = *served;
            *served += FairShare::LEASE_COST / weight as u64;
            Some(task)
        });
        leased
    }

    /// [`Self::add_program_for`] the client of the shared token.
    pub async fn add_program(&self, bytes: Vec<u8>) -> Result<ProgramImage, CoordinatorError> {
        self.add_program_for(DEFAULT_CLIENT, bytes).await
    }

    /// Checks a program and stores it under its content hash, as one `client` uploaded
    /// (idempotent). A program the backend cannot run is refused and nothing is stored.
    pub async fn add_program_for(
        &self,
        client: &str,
        bytes: Vec<u8>,
    ) -> Result<ProgramImage, CoordinatorError> {
        let program = ProgramImage::new(bytes);
        self.backend.check_program(&program)?;
        let limit = self
            .clients
            .lock()
            .expect("clients lock")
            .limits(client)
            .max_program_bytes;
        self.remember_program(client, &program, limit)
            .map_err(
                |OverQuota { kept, limit }| CoordinatorError::OverProgramQuota {
                    client: client.into(),
                    limit,
                    kept,
                    asked: program.bytes.len() as u64,
                },
            )?;
        self.flush().await?;
        Ok(program)
    }

    /// Stores `program` as `client`'s, unless that takes the client over `limit` bytes of
    /// programs. Counted before any await, so that uploads sent at once cannot all pass.
    fn remember_program(
        &self,
        client: &str,
        program: &ProgramImage,
        limit: Option<u64>,
    ) -> Result<(), OverQuota> {
        // The programs lock, then the owners', then the outbox's, as `delete_program_for`.
        let mut programs = self.programs.lock().expect("programs lock");
        let mut owners = self.program_owners.lock().expect("program owners lock");
        let newly_owned = owners.take(client, program, limit)?;
        let mut outbox = self.outbox.lock().expect("outbox lock");
        // A program new to its client is written again (a no-op if stored): another client's
        // deletion queued before may have removed it from the store.
        if programs.get(&program.digest).is_none() || newly_owned {
            programs.insert(program);
            outbox.push(StoreOp::Program {
                sha256: program.digest.clone(),
                bytes: program.bytes.clone(),
            });
        }
        if newly_owned {
            outbox.push(StoreOp::ProgramOwner {
                sha256: program.digest.clone(),
                client: client.to_string(),
            });
        }
        Ok(())
    }

    /// The programs `client` keeps, with their sizes.
    pub fn programs_of(&self, client: &str) -> Vec<plait_api::ProgramRecord> {
        self.program_owners
            .lock()
            .expect("program owners lock")
            .programs_of(client)
            .into_iter()
            .map(|(program_sha256, bytes)| plait_api::ProgramRecord {
                program_sha256,
                bytes,
            })
            .collect()
    }

    /// `client` no longer keeps the program `sha256`: its bytes leave the client's quota, and
    /// the program leaves the store once no client keeps it and no job names it.
    pub async fn delete_program_for(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<(), CoordinatorError> {
        {
            let mut programs = self.programs.lock().expect("programs lock");
            let mut owners = self.program_owners.lock().expect("program owners lock");
            if !owners.release(client, sha256) {
                return Err(CoordinatorError::UnknownProgram(sha256.into()));
            }
            // Read back from the store if still wanted (it may be gone from there).
            programs.remove(sha256);
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::DropProgramOwner {
                    sha256: sha256.into(),
                    client: client.into(),
                });
        }
        self.flush().await
    }

    /// The program `sha256`, if `client` uploaded it: a client cannot run or probe a program
    /// by its hash alone.
    pub async fn program_of(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<Option<ProgramImage>, CoordinatorError> {
        self.flush().await?;
        let Some(bytes) = self.store.program_of(client, sha256).await? else {
            return Ok(None);
        };
        let program = ProgramImage::new(bytes);
        self.programs
            .lock()
            .expect("programs lock")
            .insert(&program);
        Ok(Some(program))
    }

    /// The program `sha256`, from the cache or the store.
    async fn stored_program(&self, sha256: &str) -> Result<Option<ProgramImage>, CoordinatorError> {
        if let Some(program) = self.programs.lock().expect("programs lock").get(sha256) {
            return Ok(Some(program));
        }
        Ok(self.store.program(sha256).await?.map(ProgramImage::new))
    }

    /// The start-state checkpoint `sha256` of one of the job's segments, for the worker
    /// holding that segment's lease (`secret`).
    pub async fn checkpoint_for_lease(
        &self,
        job: JobId,
        sha256: &str,
        secret: &str,
    ) -> Result<Vec<u8>, CoordinatorError> {
        self.check_lease_may_read(job, |j| j.may_read_checkpoint(secret, sha256))?;
        self.checkpoint(job, sha256).await
    }

    /// The job's program, for a worker holding one of its leases (`secret`).
    pub fn program_for_lease(
        &self,
        job: JobId,
        secret: &str,
    ) -> Result<ProgramImage, CoordinatorError> {
        self.check_lease_may_read(job, |j| j.leased_task(secret).is_some())?;
        let jobs = self.jobs.lock().expect("jobs lock");
        // Leased, so live and in memory (a lease that ended meanwhile is no longer one).
        jobs.get(&job)
            .map(|j| j.program.clone())
            .ok_or(CoordinatorError::NotLeased(job))
    }

    /// The accepted proof of `task`, for the worker holding the lease of its parent
    /// (`secret`).
    pub async fn child_proof_for_lease(
        &self,
        job: JobId,
        task: TaskId,
        secret: &str,
    ) -> Result<ProofBlob, CoordinatorError> {
        self.check_lease_may_read(job, |j| j.may_read_child_proof(secret, task))?;
        self.accepted_proof(job, task).await
    }

    fn check_lease_may_read(
        &self,
        job: JobId,
        may: impl FnOnce(&Job) -> bool,
    ) -> Result<(), CoordinatorError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        match jobs.get(&job) {
            Some(state) if may(state) => Ok(()),
            Some(_) => Err(CoordinatorError::NotLeased(job)),
            None if self.was_submitted(job) => Err(CoordinatorError::NotLeased(job)),
            None => Err(CoordinatorError::UnknownJob(job)),
        }
    }

    /// The start-state checkpoint of one of the job's segments, by its SHA-256.
    pub async fn checkpoint(&self, job: JobId, sha256: &str) -> Result<Vec<u8>, CoordinatorError> {
        if !self.was_submitted(job) {
            return Err(CoordinatorError::UnknownJob(job));
        }
        self.store.blob(job, sha256).await?.ok_or_else(|| {
            CoordinatorError::UnknownCheckpoint(job, sha256.chars().take(64).collect())
        })
    }

    /// A task's accepted proof, read from the blob store.
    pub async fn accepted_proof(
        &self,
        job: JobId,
        task: TaskId,
    ) -> Result<ProofBlob, CoordinatorError> {
        let sha256 = self
            .read_job(job, |j| j.proof(task).map(str::to_string))
            .await?
            .ok_or(CoordinatorError::UnknownTask(task, job))?;
        self.store
            .blob(job, &sha256)
            .await?
            .map(ProofBlob)
            .ok_or(CoordinatorError::UnknownTask(task, job))
    }

    /// Every proof accepted for the job so far, by task; read from the store (a job that
    /// ended keeps none in memory).
    pub async fn accepted_proofs(
        &self,
        job: JobId,
    ) -> Result<BTreeMap<TaskId, ProofBlob>, CoordinatorError> {
        if !self.was_submitted(job) {
            return Err(CoordinatorError::UnknownJob(job));
        }
        self.flush().await?;
        Ok(self
            .store
            .task_proofs(job)
            .await?
            .into_iter()
            .map(|(task, proof)| (task, ProofBlob(proof)))
            .collect())
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

    pub fn heartbeat(
        &self,
        worker: &str,
        job: JobId,
        task: TaskId,
        attempt: u32,
        secret: &str,
    ) -> Result<(), CoordinatorError> {
        let lease = self.config.lease;
        let result = self.with_lease(job, task, attempt, worker, |j| {
            j.heartbeat(task, attempt, secret, lease, Instant::now())
        });
        if matches!(result, Err(CoordinatorError::StaleLease { .. })) {
            self.metrics
                .stale_requests
                .with_label_values(&["heartbeat"])
                .inc();
        }
        result
    }

    pub async fn report_failure(
        &self,
        worker: &str,
        job: JobId,
        task: TaskId,
        attempt: u32,
        secret: &str,
        reason: &str,
    ) -> Result<(), CoordinatorError> {
        if reason.len() > plait_api::limits::FAILURE_REASON_BYTES {
            return Err(CoordinatorError::BadRequest(format!(
                "a failure reason may hold {} bytes, this one holds {}",
                plait_api::limits::FAILURE_REASON_BYTES,
                reason.len()
            )));
        }
        let policy = self.retry_policy(worker);
        self.with_lease(job, task, attempt, worker, |j| {
            j.fail_attempt(
                task,
                attempt,
                secret,
                &format!("worker reports: {reason}"),
                Some(policy),
                Instant::now(),
            )
        })?;
        self.flush().await?;
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(())
    }

    /// Verifies a returned proof and, if it is the right one, accepts it. Rejection is a
    /// verdict, not an error; errors are for calls that name no current lease.
    pub async fn submit_result(
        &self,
        worker: &str,
        job: JobId,
        task: TaskId,
        attempt: u32,
        secret: &str,
        proof: ProofBlob,
        meta: TaskMeta,
    ) -> Result<Verdict, CoordinatorError> {
        let window = self.config.lease;
        let looked_up = self.with_lease(job, task, attempt, worker, |j| {
            let target = j.check_target(task, attempt, secret, window, Instant::now())?;
            Ok((target, j.program.clone(), j.params, j.task_kind(task)))
        });
        if matches!(looked_up, Err(CoordinatorError::StaleLease { .. })) {
            self.metrics
                .stale_requests
                .with_label_values(&["result"])
                .inc();
        }
        let (target, program, params, kind) = looked_up?;
        let backend = self.backend.clone();
        let checked = proof.clone();
        let verdict =
            match blocking(move || check_proof(&*backend, &program, &params, &target, &checked))
                .await?
            {
                Ok(verdict) => verdict,
                Err(e) => {
                    tracing::error!(%job, %task, worker, error = %e, "cannot check a result");
                    self.metrics
                        .results
                        .with_label_values(&[kind, "cannot-check"])
                        .inc();
                    return Err(CoordinatorError::CannotCheck(e.to_string()));
                }
            };
        let root_done = match &verdict {
            Verdict::Accepted => {
                // Stored before it is recorded as accepted; if the lease was lost meanwhile,
                // the blob is unused and goes with the job's other blobs.
                let sha256 = self.store.put_blob(job, &proof.0).await?;
                let stored = (sha256, proof.0.len() as u64);
                let (root_done, timing) = self.with_lease(job, task, attempt, worker, |j| {
                    j.accept(task, attempt, secret, stored, meta, Instant::now())
                })?;
                self.record_peak_memory(params.key_set(), &timing);
                *self
                    .tasks_done
                    .lock()
                    .expect("tasks done lock")
                    .entry(worker.to_string())
                    .or_default() += 1;
                self.metrics
                    .task_seconds
                    .with_label_values(&[kind])
                    .observe(timing.wall_seconds);
                root_done
            }
            Verdict::Rejected { reason } => {
                // A rejection counts against the worker (which is banned past a threshold),
                // not against the task: bad workers must not be able to fail a job.
                self.with_lease(job, task, attempt, worker, |j| {
                    j.fail_attempt(
                        task,
                        attempt,
                        secret,
                        &format!("proof rejected: {reason}"),
                        None,
                        Instant::now(),
                    )
                })?;
                if let Some(banned) = self.count_rejection(worker, reason) {
                    self.log_event(job, format!("worker {worker} banned: {banned}"));
                }
                false
            }
        };
        let verdict_label = match &verdict {
            Verdict::Accepted => "accepted",
            Verdict::Rejected { .. } => "rejected",
        };
        self.metrics
            .results
            .with_label_values(&[kind, verdict_label])
            .inc();
        // Accepted means stored: the answer waits for the write.
        self.flush().await?;
        if root_done {
            self.finalize(job).await?;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(verdict)
    }

    /// Assembles and verifies the job's final proof from its root proof and its last
    /// segment's. If that fails, the job does not stay failed on stored proofs it cannot use:
    /// each input is checked again against what it must prove (and read again from the
    /// store), those found unusable are discarded with every node above them and proven again
    /// (the root and the last segment if both pass, as the check cannot say which is at
    /// fault). After [`MAX_FINAL_REPAIRS`] such rounds the job fails; a retry starts over.
    async fn finalize(&self, job: JobId) -> Result<(), CoordinatorError> {
        let Some((program, params, targets)) = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(&job)
            .and_then(|j| Some((j.program.clone(), j.params, j.final_targets()?)))
        else {
            return Ok(());
        };
        // A missing blob is an unusable proof; a store that does not answer is an error.
        let mut inputs = Vec::new();
        for (task, sha256, target) in targets {
            let proof = self.store.blob(job, &sha256).await?.map(ProofBlob);
            inputs.push((task, target, proof));
        }
        let backend = self.backend.clone();
        let result = blocking(move || {
            let outcome = match (&inputs[0].2, &inputs[1].2) {
                (Some(root), Some(last)) => backend.finalize(&program, &params, root, last),
                _ => Err(BackendError::ProofRejected(
                    "a proof is missing from the store".into(),
                )),
            };
            let unusable: Vec<TaskId> = match &outcome {
                Ok(_) => Vec::new(),
                Err(_) => inputs
                    .iter()
                    .filter(|(_, target, proof)| {
                        proof.as_ref().is_none_or(|p| {
                            !matches!(
                                check_proof(&*backend, &program, &params, target, p),
                                Ok(Verdict::Accepted)
                            )
                        })
                    })
                    .map(|(task, ..)| *task)
                    .collect(),
            };
            let all = inputs.iter().map(|(task, ..)| *task).collect::<Vec<_>>();
            (outcome, if unusable.is_empty() { all } else { unusable })
        })
        .await;
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let Some(state) = jobs.get_mut(&job) else {
                return Ok(());
            };
            let now = Instant::now();
            // The owner may have cancelled the job while its final proof was being made: the
            // cancel stands.
            match result {
                _ if state.status == JobStatus::Cancelled => {
                    state.log(
                        now,
                        "final proof not kept: the job was cancelled meanwhile".into(),
                    );
                }
                Ok((Ok(bytes), _)) => {
                    state.log(
                        now,
                        format!("final proof assembled and verified ({} bytes)", bytes.len()),
                    );
                    state.set_status(JobStatus::Succeeded(bytes));
                }
                Ok((Err(e), unusable)) if state.final_repairs < MAX_FINAL_REPAIRS => {
                    state.final_repairs += 1;
                    state.discard_proofs(&unusable, &format!("final proof failed ({e})"), now);
                }
                Ok((Err(e), _)) => {
                    let why = format!(
                        "final proof: {e} (after proving its inputs again {MAX_FINAL_REPAIRS} times)"
                    );
                    state.log(now, format!("job failed: {why}"));
                    state.set_status(JobStatus::Failed(why));
                }
                Err(e) => {
                    state.log(now, format!("job failed: final proof: {e}"));
                    state.set_status(JobStatus::Failed(e.to_string()));
                }
            }
            self.collect_writes(state);
        }
        self.flush().await?;
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(())
    }

    /// Pauses, resumes, cancels or retries a job.
    pub async fn act(&self, job: JobId, action: JobAction) -> Result<JobStatus, CoordinatorError> {
        let ended = if self.jobs.lock().expect("jobs lock").contains_key(&job) {
            None
        } else {
            Some(self.load_ended_job(job).await?)
        };
        let (status, finalize) = {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            // A job read back from the store comes back into memory (a retry makes it live; the
            // next flush releases it otherwise). Another call may have brought it back first.
            if let Some(ended) = ended {
                jobs.entry(job).or_insert(ended);
            }
            let state = jobs
                .get_mut(&job)
                .ok_or(CoordinatorError::UnknownJob(job))?;
            let applied = state.apply(action, Instant::now());
            self.collect_writes(state);
            applied.map_err(CoordinatorError::InvalidState)?;
            (state.status.clone(), state.awaits_finalization())
        };
        self.flush().await?;
        // A job can fail in finalization with every task accepted; retrying it finalizes again.
        if finalize {
            self.finalize(job).await?;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(status)
    }

    /// Reads a job: from memory if it is not over, else from the store.
    async fn read_job<T>(
        &self,
        job: JobId,
        f: impl FnOnce(&Job) -> T,
    ) -> Result<T, CoordinatorError> {
        if let Some(state) = self.jobs.lock().expect("jobs lock").get(&job) {
            return Ok(f(state));
        }
        Ok(f(&self.load_ended_job(job).await?))
    }

    /// Whether `job` is an id this coordinator (or one before it on the same store) handed out.
    fn was_submitted(&self, job: JobId) -> bool {
        job.0 > 0 && job.0 < self.next_job.load(Ordering::SeqCst)
    }

    /// Reads a job that is not in memory back from the store, after storing pending writes
    /// (the job's last ones may be among them).
    async fn load_ended_job(&self, job: JobId) -> Result<Job, CoordinatorError> {
        if !self.was_submitted(job) {
            return Err(CoordinatorError::UnknownJob(job));
        }
        self.flush().await?;
        let stored = self
            .store
            .load_job(job)
            .await?
            .ok_or(CoordinatorError::UnknownJob(job))?;
        let program = self
            .stored_program(&stored.record.program_sha256)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("{job}: its program is not in the store"))
            })?;
        Ok(
            Job::restore(stored, program, Instant::now(), unix_ms())
                .map_err(StoreError::Corrupt)?,
        )
    }

    /// Every job's id, oldest first.
    pub async fn job_ids(&self) -> Result<Vec<JobId>, CoordinatorError> {
        self.flush().await?;
        Ok(self.store.job_ids().await?)
    }

    pub async fn status(&self, job: JobId) -> Result<JobStatus, CoordinatorError> {
        self.read_job(job, |j| j.status.clone()).await
    }

    pub async fn summary(&self, job: JobId) -> Result<JobSummary, CoordinatorError> {
        if let Some(state) = self.jobs.lock().expect("jobs lock").get(&job) {
            return Ok(state.summary(Instant::now()));
        }
        if let Some(kept) = self
            .ended_summaries
            .lock()
            .expect("summaries lock")
            .get(&job)
        {
            return Ok(kept.clone());
        }
        let summary = self.load_ended_job(job).await?.summary(Instant::now());
        // Unless a retry brought the job back meanwhile (under the jobs lock, which a retry
        // holds while it takes the job back), and never over a summary kept as the job left
        // memory, which is newer than this read.
        let jobs = self.jobs.lock().expect("jobs lock");
        if !jobs.contains_key(&job) {
            let mut summaries = self.ended_summaries.lock().expect("summaries lock");
            if summaries.len() < ENDED_SUMMARIES {
                summaries.entry(job).or_insert_with(|| summary.clone());
            }
        }
        Ok(summary)
    }

    pub async fn progress(&self, job: JobId) -> Result<JobProgress, CoordinatorError> {
        self.read_job(job, |j| j.progress(Instant::now())).await
    }

    /// What the planner predicted for the job, and what it measured once it succeeded.
    pub async fn prediction(
        &self,
        job: JobId,
    ) -> Result<(Option<Prediction>, Option<Measured>), CoordinatorError> {
        self.read_job(job, |j| (j.prediction.clone(), j.measured(Instant::now())))
            .await
    }

    pub async fn params(&self, job: JobId) -> Result<ProvingParams, CoordinatorError> {
        self.read_job(job, |j| j.params).await
    }

    /// The segments cut so far, and the public values once execution has ended.
    pub async fn plan(&self, job: JobId) -> Result<plait_core::SegmentPlan, CoordinatorError> {
        self.read_job(job, |j| plait_core::SegmentPlan {
            segments: j.segments.clone(),
            public_values: j.public_values.clone().unwrap_or_default(),
        })
        .await
    }

    pub async fn events(&self, job: JobId) -> Result<Vec<JobEvent>, CoordinatorError> {
        self.read_job(job, |j| j.events().to_vec()).await
    }

    /// The job's last `last` events (copied under the lock: not the whole log of a large job).
    pub async fn last_events(
        &self,
        job: JobId,
        last: usize,
    ) -> Result<Vec<JobEvent>, CoordinatorError> {
        self.read_job(job, |j| {
            let events = j.events();
            events[events.len().saturating_sub(last)..].to_vec()
        })
        .await
    }

    pub async fn timings(&self, job: JobId) -> Result<Vec<TaskTiming>, CoordinatorError> {
        self.read_job(job, |j| j.timings().to_vec()).await
    }

    /// Waits until any job changes, or the timeout passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.job_changed.notified()).await;
    }

    /// Deletes the blobs of succeeded and cancelled jobs that ended more than the retention
    /// time ago, and records that (in the store, and in each job's event log). Called once a
    /// minute by the reaper.
    pub async fn collect_expired_blobs(&self) -> Result<(), CoordinatorError> {
        let retention = i64::try_from(self.config.blob_retention.as_millis()).unwrap_or(i64::MAX);
        let ended_by = unix_ms().saturating_sub(retention);
        for id in self.store.jobs_due_for_blob_deletion(ended_by).await? {
            // A job still in memory (a cancelled one whose execution is stopping) writes its
            // own events; it is collected on a later round.
            if self.jobs.lock().expect("jobs lock").contains_key(&id) {
                continue;
            }
            let bytes = self.store.delete_blobs(id).await?;
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::BlobsDeleted {
                    job: id,
                    at_unix_ms: unix_ms(),
                    message: format!(
                        "blobs deleted after the retention time: {bytes} bytes of checkpoints \
                         and task proofs (the final proof is kept)"
                    ),
                });
        }
        self.flush().await
    }

    /// Requeues tasks whose lease expired, every second; once a minute deletes the blobs of
    /// jobs past their retention and forgets workers that are gone; for as long as the
    /// coordinator lives.
    pub fn spawn_lease_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for second in 0u64.. {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                // Retention is counted in minutes to hours: looking once a minute is enough.
                if second % 60 == 0 {
                    if let Err(e) = this.collect_expired_blobs().await {
                        tracing::error!("deleting the blobs of ended jobs: {e}");
                    }
                    this.forget_gone_workers();
                }
                // Each look walks every running job's ready tasks: every 10 s is enough.
                if second % 10 == 5 {
                    if let Err(e) = this.report_unplaceable_tasks().await {
                        tracing::error!("reporting tasks no worker can take: {e}");
                    }
                }
                let now = Instant::now();
                // The policy's live count; whose lost lease counts is asked per lease.
                let policy = this.retry_policy("");
                let trusted = |worker: &str| this.is_trusted(worker);
                let expired: usize = {
                    let mut jobs = this.jobs.lock().expect("jobs lock");
                    jobs.values_mut()
                        .map(|j| {
                            let kinds = j.expire_leases(policy, &trusted, now);
                            this.collect_writes(j);
                            for kind in &kinds {
                                this.metrics.leases_expired.with_label_values(&[kind]).inc();
                            }
                            kinds.len()
                        })
                        .sum()
                };
                if expired > 0 {
                    if let Err(e) = this.flush().await {
                        tracing::error!("writing expired leases: {e}");
                    }
                    this.work_available.notify_waiters();
                    this.job_changed.notify_waiters();
                }
            }
        })
    }
}

/// Rounds of discarding and re-proving a job's final inputs before its finalization failure
/// fails the job.
const MAX_FINAL_REPAIRS: u32 = 2;

/// Ended jobs whose summaries the coordinator keeps (a few hundred bytes each).
const ENDED_SUMMARIES: usize = 10_000;

/// Whether `proof` proves what `target` says, by the backend's gate (an error: the gate
/// could not check).
fn check_proof(
    backend: &dyn ProverBackend,
    program: &ProgramImage,
    params: &ProvingParams,
    target: &CheckTarget,
    proof: &ProofBlob,
) -> Result<Verdict, BackendError> {
    match target {
        CheckTarget::Segment { segment, ending } => {
            backend.check_segment_proof(program, params, segment, ending.as_deref(), proof)
        }
        CheckTarget::Node {
            layer,
            child_layer,
            first,
            last,
            ends_execution,
        } => backend.check_aggregate_proof(
            program,
            params,
            *layer,
            *child_layer,
            first,
            last,
            *ends_execution,
            proof,
        ),
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

/// A worker that asked for work: when, with how much memory, and its device profile if it
/// sent a usable one.
struct SeenWorker {
    at: Instant,
    memory_bytes: u64,
    profile: Option<DeviceProfile>,
    /// What it said it proves on.
    proves_on: Option<Device>,
}

/// Weighted fair queueing of leases between clients: each client's virtual time advances by
/// [`Self::LEASE_COST`]/weight per lease it gets; `now` is the virtual time of the last lease
/// granted. Not stored: after a restart every client starts even.
#[derive(Default)]
struct FairShare {
    now: u64,
    served: HashMap<String, u64>,
}

impl FairShare {
    const LEASE_COST: u64 = 1_000_000;
}

/// What workers measured for one phase (segments, or an aggregation layer) at one key set:
/// one figure per worker, each already bounded by the memory its worker advertised.
///
/// The need is the lower of two lower medians: of the figures, and of the figures weighted
/// by the results of each worker the pool accepted. Raising it takes a majority of reporters
/// and of their work: identities that did little work cannot outvote one that did much (two
/// hostile registrations reporting 2^64 - 1 beside an honest worker that proved more do not
/// move the need), one worker that did much cannot outvote the others, and one worker's
/// figure alone never sets it. A figure too high would leave the phase
/// to no worker, forever; one too low costs a failed attempt on a machine too small. Figures
/// older than [`Self::LIFETIME`] stop counting, so a need nobody confirms goes back to the
/// operator's profiles or the backend's estimate; the operator can also forget it at once
/// (`plait workers reset-needs`). Until enough workers reported, the figure stored before a
/// restart holds (for a lifetime too).
#[derive(Debug)]
struct NodeMemoryReports {
    stored: Option<(u64, Instant)>,
    reports: std::collections::VecDeque<PeakReport>,
}

#[derive(Debug)]
struct PeakReport {
    worker: String,
    peak: u64,
    /// The worker's accepted results when it reported (this one included).
    weight: u64,
    at: Instant,
}

impl NodeMemoryReports {
    /// Workers whose figures are kept (the most recent reporters).
    const KEPT: usize = 32;
    /// How long a figure counts.
    const LIFETIME: Duration = Duration::from_secs(24 * 3600);

    fn new() -> Self {
        Self {
            stored: None,
            reports: Default::default(),
        }
    }

    /// The need stored before a restart.
    fn stored(need: u64, now: Instant) -> Self {
        Self {
            stored: Some((need, now)),
            reports: Default::default(),
        }
    }

    fn add(&mut self, worker: &str, peak: u64, weight: u64, now: Instant) {
        self.reports.retain(|r| r.worker != worker);
        self.reports.push_back(PeakReport {
            worker: worker.to_string(),
            peak,
            weight: weight.max(1),
            at: now,
        });
        if self.reports.len() > Self::KEPT {
            self.reports.pop_front();
        }
    }

    /// Figures still counting at `now`.
    fn fresh(&self, now: Instant) -> impl Iterator<Item = &PeakReport> {
        self.reports
            .iter()
            .filter(move |r| now.saturating_duration_since(r.at) <= Self::LIFETIME)
    }

    /// Workers whose figures count at `now`.
    fn reporters(&self, now: Instant) -> usize {
        self.fresh(now).count()
    }

    /// The need learned so far (from at least `min_reports` workers), if any.
    fn need(&self, min_reports: usize, now: Instant) -> Option<u64> {
        let mut fresh: Vec<&PeakReport> = self.fresh(now).collect();
        if fresh.len() < min_reports.max(1) {
            return self
                .stored
                .filter(|(_, at)| now.saturating_duration_since(*at) <= Self::LIFETIME)
                .map(|(need, _)| need);
        }
        fresh.sort_unstable_by_key(|r| r.peak);
        let by_count = fresh[(fresh.len() - 1) / 2].peak;
        let total: u128 = fresh.iter().map(|r| u128::from(r.weight)).sum();
        let mut below = 0u128;
        let by_work = fresh
            .iter()
            .find(|r| {
                below += u128::from(r.weight);
                2 * below >= total
            })
            .map_or(by_count, |r| r.peak);
        // A need too high is the worse error: raising it takes a majority of the reporters
        // and of their accepted work both.
        Some(by_count.min(by_work))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::NodeMemoryReports;

    #[test]
    fn one_worker_cannot_set_or_raise_a_layers_memory_need() {
        let now = Instant::now();
        let mut reports = NodeMemoryReports::new();
        reports.add("hostile", u64::MAX, 1, now);
        assert_eq!(
            reports.need(2, now),
            None,
            "one worker's figure alone is not used"
        );
        reports.add("honest", 6 << 30, 1, now);
        assert_eq!(reports.need(2, now), Some(6 << 30));
        reports.add("hostile", u64::MAX, 1, now);
        reports.add("other", 5 << 30, 1, now);
        assert_eq!(
            reports.need(2, now),
            Some(6 << 30),
            "the lower median of 5, 6, max"
        );
        // A worker's new figure replaces its old one.
        reports.add("honest", 7 << 30, 1, now);
        assert_eq!(reports.need(2, now), Some(7 << 30));
        // After a restart, the stored need holds until two workers reported again.
        let mut restarted = NodeMemoryReports::stored(6 << 30, now);
        restarted.add("hostile", u64::MAX, 1, now);
        assert_eq!(restarted.need(2, now), Some(6 << 30));
        // Only the latest reporters count.
        for i in 0..NodeMemoryReports::KEPT {
            reports.add(&format!("w{i}"), 1 << 30, 1, now);
        }
        assert_eq!(reports.need(2, now), Some(1 << 30));
    }

    /// Row 2 of the hostile-pool review: two identities that each had one proof accepted
    /// cannot outvote a worker that proved more.
    #[test]
    fn figures_count_by_the_work_their_workers_did() {
        let now = Instant::now();
        let mut reports = NodeMemoryReports::new();
        reports.add("honest", 6 << 30, 3, now);
        reports.add("sybil-1", u64::MAX, 1, now);
        reports.add("sybil-2", u64::MAX, 1, now);
        assert_eq!(reports.need(2, now), Some(6 << 30));
        // One worker that did the most work does not outvote the others either.
        let mut busy = NodeMemoryReports::new();
        busy.add("busy", u64::MAX, 10, now);
        busy.add("honest", 6 << 30, 1, now);
        assert_eq!(busy.need(2, now), Some(6 << 30));
        // They win only with more reporters and more work than the honest worker's.
        reports.add("sybil-1", u64::MAX, 3, now);
        assert_eq!(reports.need(2, now), Some(u64::MAX));
    }

    #[test]
    fn figures_nobody_confirms_stop_counting() {
        let then = Instant::now();
        let later = then + NodeMemoryReports::LIFETIME + Duration::from_secs(1);
        let mut reports = NodeMemoryReports::stored(u64::MAX, then);
        assert_eq!(reports.need(2, then), Some(u64::MAX));
        assert_eq!(reports.need(2, later), None);
        reports.add("a", 5 << 30, 1, then);
        reports.add("b", 6 << 30, 1, then);
        assert_eq!(reports.need(2, then), Some(5 << 30));
        assert_eq!(reports.need(2, later), None);
        reports.add("c", 7 << 30, 1, later);
        reports.add("d", 8 << 30, 1, later);
        assert_eq!(reports.need(2, later), Some(7 << 30));
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::Panicked(e.to_string()))
}
