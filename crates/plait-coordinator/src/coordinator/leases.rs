//! Leases: heartbeats, deadlines and the reaper that hands expired tasks to others; what a lease
//! lets its worker read (the program, a checkpoint, child proofs); failures workers report.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use plait_core::{JobId, TaskId};
use plait_prover::{ProgramImage, ProofBlob};

use crate::job::Job;

use super::Coordinator;
use crate::error::CoordinatorError;

impl Coordinator {
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

    pub(super) fn check_lease_may_read(
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

    /// Extends a lease by a lease period (up to its time limit), for the worker holding it.
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

    /// A worker gives up on a task: the attempt ends, and the task is retried by the retry policy.
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
