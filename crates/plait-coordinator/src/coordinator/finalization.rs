//! Finalization: once a job's root is accepted, its final proof is assembled and verified; a proof
//! that fails is repaired by discarding and re-proving its inputs.

use std::time::Instant;

use plait_core::{JobId, TaskId};
use plait_prover::{BackendError, ProofBlob, Verdict};

use crate::job_status::JobStatus;

use super::gate::check_proof;
use super::{blocking, Coordinator};
use crate::error::CoordinatorError;

/// Rounds of discarding and re-proving a job's final inputs before its finalization failure
/// fails the job.
const MAX_FINAL_REPAIRS: u32 = 2;

impl Coordinator {
    /// Assembles and verifies the job's final proof from its root proof and its last
    /// segment's. If that fails, the job does not stay failed on stored proofs it cannot use:
    /// each input is checked again against what it must prove (and read again from the
    /// store), those found unusable are discarded with every node above them and proven again
    /// (the root and the last segment if both pass, as the check cannot say which is at
    /// fault). After [`MAX_FINAL_REPAIRS`] such rounds the job fails; a retry starts over.
    pub(super) async fn finalize(&self, job: JobId) -> Result<(), CoordinatorError> {
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
}
