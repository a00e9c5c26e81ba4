//! The coordinator's shared state and the operations the HTTP layer and the CLI call.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use plait_api::{ClaimTaskRequest, TaskAssignment, TaskMeta};
use plait_core::{JobId, ProgramInput, TaskGraph, TaskId};
use plait_prover::{
    BackendError, BackendInfo, ProgramImage, ProofBlob, ProverBackend, ProvingParams, Verdict,
};
use tokio::sync::Notify;

use crate::job::{CheckTarget, Job, JobEvent, JobProgress, JobStatus, LeaseError, TaskTiming};

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Token workers must present.
    pub worker_token: String,
    /// Token clients (job submitters) must present.
    pub client_token: String,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Attempts after which a failing task fails its job.
    pub max_attempts: u32,
    /// How long a claim waits for work before answering "none".
    pub claim_wait: Duration,
    /// Rejected proofs after which a worker gets no more work.
    pub max_rejections_per_worker: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            worker_token: String::new(),
            client_token: String::new(),
            lease: Duration::from_secs(60),
            max_attempts: 3,
            claim_wait: Duration::from_secs(10),
            max_rejections_per_worker: 2,
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
    #[error(
        "{task} attempt {attempt} of {job} is not the current lease (expired or already done)"
    )]
    StaleLease {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    #[error("worker proves with {worker}, this coordinator with {coordinator}")]
    IncompatibleWorker { worker: String, coordinator: String },
    #[error("worker {worker} returned {rejections} rejected proofs and gets no more work")]
    WorkerBanned { worker: String, rejections: u32 },
    #[error("the blocking task panicked: {0}")]
    Panicked(String),
}

pub struct Coordinator {
    backend: Arc<dyn ProverBackend>,
    backend_info: BackendInfo,
    config: CoordinatorConfig,
    jobs: Mutex<HashMap<JobId, Job>>,
    programs: Mutex<HashMap<String, ProgramImage>>,
    /// Rejected proofs per worker id.
    rejections: Mutex<HashMap<String, u32>>,
    next_job: AtomicU64,
    /// Woken when tasks may have become ready.
    work_available: Notify,
    /// Woken whenever any job changes.
    job_changed: Notify,
}

impl Coordinator {
    pub fn new(backend: Arc<dyn ProverBackend>, config: CoordinatorConfig) -> Arc<Self> {
        let backend_info = backend.info();
        Arc::new(Self {
            backend,
            backend_info,
            config,
            jobs: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            rejections: Mutex::new(HashMap::new()),
            next_job: AtomicU64::new(1),
            work_available: Notify::new(),
            job_changed: Notify::new(),
        })
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
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

    /// Executes the program, plans its segments and aggregation tree, and queues the job.
    pub async fn submit_job(
        &self,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
    ) -> Result<JobId, CoordinatorError> {
        let backend = self.backend.clone();
        let (p, i) = (program.clone(), input.clone());
        let plan = blocking(move || backend.execute(&p, &i, &params)).await??;
        let graph = TaskGraph::new(plan.segments.len() as u32, params.tree)?;
        let id = JobId(self.next_job.fetch_add(1, Ordering::Relaxed));
        self.programs
            .lock()
            .expect("programs lock")
            .insert(program.digest.clone(), program.clone());
        let job = Job::new(id, program, input, params, plan, graph, Instant::now());
        self.jobs.lock().expect("jobs lock").insert(id, job);
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(id)
    }

    /// Hands the worker a task that fits it, waiting up to the claim wait for one to appear.
    pub async fn claim(
        &self,
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
        let rejections = self.rejections_of(&worker.worker_id);
        if rejections >= self.config.max_rejections_per_worker {
            return Err(CoordinatorError::WorkerBanned {
                worker: worker.worker_id.clone(),
                rejections,
            });
        }
        let deadline = tokio::time::Instant::now() + self.config.claim_wait;
        loop {
            // Register interest before looking, so a notification between the look and the
            // wait is not lost.
            let notified = self.work_available.notified();
            if let Some(task) = self.try_lease(worker) {
                self.job_changed.notify_waiters();
                return Ok(Some(task));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    fn rejections_of(&self, worker: &str) -> u32 {
        let rejections = self.rejections.lock().expect("rejections lock");
        rejections.get(worker).copied().unwrap_or(0)
    }

    fn try_lease(&self, worker: &ClaimTaskRequest) -> Option<TaskAssignment> {
        let now = Instant::now();
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let mut ids: Vec<JobId> = jobs.keys().copied().collect();
        ids.sort();
        ids.into_iter().find_map(|id| {
            jobs.get_mut(&id)?
                .lease_next(worker, self.config.lease, now)
        })
    }

    /// Checks a program and stores it under its content hash (idempotent). A program the
    /// backend cannot run is refused and nothing is stored.
    pub fn add_program(&self, bytes: Vec<u8>) -> Result<ProgramImage, CoordinatorError> {
        let program = ProgramImage::new(bytes);
        self.backend.check_program(&program)?;
        Ok(self
            .programs
            .lock()
            .expect("programs lock")
            .entry(program.digest.clone())
            .or_insert(program)
            .clone())
    }

    pub fn program(&self, sha256: &str) -> Option<ProgramImage> {
        self.programs
            .lock()
            .expect("programs lock")
            .get(sha256)
            .cloned()
    }

    pub fn accepted_proof(&self, job: JobId, task: TaskId) -> Result<ProofBlob, CoordinatorError> {
        self.read_job(job, |j| j.proof(task).cloned())?
            .ok_or(CoordinatorError::UnknownTask(task, job))
    }

    /// Every proof accepted for the job so far, by task.
    pub fn accepted_proofs(
        &self,
        job: JobId,
    ) -> Result<HashMap<TaskId, ProofBlob>, CoordinatorError> {
        self.read_job(job, |j| j.proofs().clone())
    }

    fn with_job<T>(
        &self,
        job: JobId,
        f: impl FnOnce(&mut Job) -> Result<T, LeaseError>,
        task: TaskId,
        attempt: u32,
    ) -> Result<T, CoordinatorError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let state = jobs
            .get_mut(&job)
            .ok_or(CoordinatorError::UnknownJob(job))?;
        f(state).map_err(|e| match e {
            LeaseError::UnknownTask => CoordinatorError::UnknownTask(task, job),
            LeaseError::Stale => CoordinatorError::StaleLease { job, task, attempt },
        })
    }

    pub fn heartbeat(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
    ) -> Result<(), CoordinatorError> {
        let lease = self.config.lease;
        self.with_job(
            job,
            |j| j.heartbeat(task, attempt, lease, Instant::now()),
            task,
            attempt,
        )
    }

    pub fn report_failure(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        reason: &str,
    ) -> Result<(), CoordinatorError> {
        let max = self.config.max_attempts;
        self.with_job(
            job,
            |j| {
                j.fail_attempt(
                    task,
                    attempt,
                    &format!("worker reports: {reason}"),
                    Some(max),
                    Instant::now(),
                )
            },
            task,
            attempt,
        )?;
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(())
    }

    /// Verifies a returned proof and, if it is the right one, accepts it. Rejection is a
    /// verdict, not an error; errors are for calls that name no current lease.
    pub async fn submit_result(
        &self,
        job: JobId,
        task: TaskId,
        attempt: u32,
        proof: ProofBlob,
        meta: TaskMeta,
    ) -> Result<Verdict, CoordinatorError> {
        let (target, program, params, plan, worker) = self.with_job(
            job,
            |j| {
                let target = j.check_target(task, attempt)?;
                let worker = j.lease_holder(task).unwrap_or_default();
                Ok((
                    target,
                    j.program.clone(),
                    j.params,
                    Arc::clone(&j.plan),
                    worker,
                ))
            },
            task,
            attempt,
        )?;
        let backend = self.backend.clone();
        let checked = proof.clone();
        let verdict = blocking(move || match &target {
            CheckTarget::Segment { segment } => {
                backend.check_segment_proof(&program, &params, &plan, segment, &checked)
            }
            CheckTarget::Node { layer, covered } => {
                backend.check_aggregate_proof(&program, &params, &plan, *layer, covered, &checked)
            }
        })
        .await?;
        let root_done = match &verdict {
            Verdict::Accepted => self.with_job(
                job,
                |j| j.accept(task, attempt, proof, meta, Instant::now()),
                task,
                attempt,
            )?,
            Verdict::Rejected { reason } => {
                *self
                    .rejections
                    .lock()
                    .expect("rejections lock")
                    .entry(worker)
                    .or_insert(0) += 1;
                // A rejection counts against the worker (which is banned past a threshold),
                // not against the task: bad workers must not be able to fail a job.
                self.with_job(
                    job,
                    |j| {
                        j.fail_attempt(
                            task,
                            attempt,
                            &format!("proof rejected: {reason}"),
                            None,
                            Instant::now(),
                        )
                    },
                    task,
                    attempt,
                )?;
                false
            }
        };
        if root_done {
            self.finalize(job).await;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(verdict)
    }

    async fn finalize(&self, job: JobId) {
        let Some((program, params, root, last)) = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(&job)
            .and_then(|j| {
                let (root, last) = j.final_inputs()?;
                Some((j.program.clone(), j.params, root, last))
            })
        else {
            return;
        };
        let backend = self.backend.clone();
        let result = blocking(move || backend.finalize(&program, &params, &root, &last)).await;
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let Some(state) = jobs.get_mut(&job) else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(Ok(bytes)) => {
                state.log(
                    now,
                    format!("final proof assembled and verified ({} bytes)", bytes.len()),
                );
                state.status = JobStatus::Succeeded(bytes);
            }
            Ok(Err(e)) => {
                state.log(now, format!("job failed: final proof: {e}"));
                state.status = JobStatus::Failed(format!("final proof: {e}"));
            }
            Err(e) => state.status = JobStatus::Failed(e.to_string()),
        }
    }

    fn read_job<T>(&self, job: JobId, f: impl FnOnce(&Job) -> T) -> Result<T, CoordinatorError> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.get(&job)
            .map(f)
            .ok_or(CoordinatorError::UnknownJob(job))
    }

    pub fn status(&self, job: JobId) -> Result<JobStatus, CoordinatorError> {
        self.read_job(job, |j| j.status.clone())
    }

    pub fn progress(&self, job: JobId) -> Result<JobProgress, CoordinatorError> {
        self.read_job(job, |j| j.progress(Instant::now()))
    }

    pub fn plan(&self, job: JobId) -> Result<plait_core::SegmentPlan, CoordinatorError> {
        self.read_job(job, |j| j.plan.as_ref().clone())
    }

    pub fn events(&self, job: JobId) -> Result<Vec<JobEvent>, CoordinatorError> {
        self.read_job(job, |j| j.events().to_vec())
    }

    pub fn timings(&self, job: JobId) -> Result<Vec<TaskTiming>, CoordinatorError> {
        self.read_job(job, |j| j.timings().to_vec())
    }

    /// Waits until any job changes, or the timeout passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.job_changed.notified()).await;
    }

    /// Requeues tasks whose lease expired, every second, for as long as the coordinator lives.
    pub fn spawn_lease_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let now = Instant::now();
                let max = this.config.max_attempts;
                let expired: usize = this
                    .jobs
                    .lock()
                    .expect("jobs lock")
                    .values_mut()
                    .map(|j| j.expire_leases(max, now))
                    .sum();
                if expired > 0 {
                    this.work_available.notify_waiters();
                    this.job_changed.notify_waiters();
                }
            }
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoordinatorError::Panicked(e.to_string()))
}
