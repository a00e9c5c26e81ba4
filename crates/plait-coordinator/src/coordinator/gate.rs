//! The gate: every result a worker sends is checked by the backend before it is used; rejections
//! are counted against the worker and enough of them ban it.

use std::time::Instant;

use plait_api::TaskMeta;
use plait_core::{JobId, TaskId};
use plait_prover::{BackendError, ProgramImage, ProofBlob, ProverBackend, ProvingParams, Verdict};

use crate::{
    identities::Ban,
    job::{CheckTarget, RetryPolicy},
};

use super::{blocking, Coordinator};
use crate::clock::unix_ms;
use crate::error::CoordinatorError;

/// Whether `proof` proves what `target` says, by the backend's gate (an error: the gate
/// could not check).
pub(super) fn check_proof(
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

impl Coordinator {
    /// How a failure of `worker`'s (or a lost lease of its) counts.
    pub(super) fn retry_policy(&self, worker: &str) -> RetryPolicy {
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
    pub(super) fn is_trusted(&self, worker: &str) -> bool {
        self.config.trusted_after_accepted == 0
            || self
                .tasks_done
                .lock()
                .expect("tasks done lock")
                .get(worker)
                .is_some_and(|&n| n >= self.config.trusted_after_accepted)
    }

    /// Counts a rejected proof against `worker`; past the limit, bans it. Returns the ban's
    /// reason if this rejection banned it.
    pub(super) fn count_rejection(&self, worker: &str, reason: &str) -> Option<String> {
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

    pub(super) fn check_not_banned(&self, worker: &str) -> Result<(), CoordinatorError> {
        let identities = self.identities.lock().expect("identities lock");
        match identities.get(worker).and_then(|i| i.ban.as_ref()) {
            Some(ban) => Err(CoordinatorError::WorkerBanned {
                worker: worker.to_string(),
                reason: ban.reason.clone(),
            }),
            None => Ok(()),
        }
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
        let program_digest = program.digest.clone();
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
                self.record_peak_memory(params.key_set(), &program_digest, &timing);
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
}
