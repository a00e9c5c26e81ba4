//! Reads: a job's status, summary, events, timings, tree and proofs, from memory while the job is
//! in it, else from the store.

use std::{
    collections::BTreeMap,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use plait_core::{
    planner::{Measured, Prediction},
    JobId, TaskId,
};
use plait_prover::{ProofBlob, ProvingParams};

use crate::{
    job::{Job, JobEvent, JobProgress, JobSummary, TaskTiming},
    job_status::JobStatus,
    store::StoreError,
};

use super::retention::ENDED_SUMMARIES;
use super::Coordinator;
use crate::clock::unix_ms;
use crate::error::CoordinatorError;

impl Coordinator {
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

    /// The job's aggregation tree with each task's state, for its client's dashboard.
    pub async fn tree(&self, job: JobId) -> Result<Vec<plait_api::TreeNode>, CoordinatorError> {
        self.read_job(job, Job::tree).await
    }

    /// The job's tree, whole up to `limit` tasks, else counted (see `Job::tree_view`).
    pub async fn tree_view(
        &self,
        job: JobId,
        limit: usize,
    ) -> Result<plait_api::TreeView, CoordinatorError> {
        self.read_job(job, |j| j.tree_view(limit)).await
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

    /// Reads a job: from memory if it is not over, else from the store.
    pub(super) async fn read_job<T>(
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
    pub(super) fn was_submitted(&self, job: JobId) -> bool {
        job.0 > 0 && job.0 < self.next_job.load(Ordering::SeqCst)
    }

    /// Reads a job that is not in memory back from the store, after storing pending writes
    /// (the job's last ones may be among them).
    pub(super) async fn load_ended_job(&self, job: JobId) -> Result<Job, CoordinatorError> {
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

    /// The job's state.
    pub async fn status(&self, job: JobId) -> Result<JobStatus, CoordinatorError> {
        self.read_job(job, |j| j.status.clone()).await
    }

    /// The job's status, as its status page shows it.
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

    /// How far the job has come, per phase.
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

    /// The job's proving parameters.
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

    /// The job's event log.
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

    /// Each accepted task's timing and measurements.
    pub async fn timings(&self, job: JobId) -> Result<Vec<TaskTiming>, CoordinatorError> {
        self.read_job(job, |j| j.timings().to_vec()).await
    }

    /// Waits until any job changes, or the timeout passes.
    pub async fn changed(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.job_changed.notified()).await;
    }
}
