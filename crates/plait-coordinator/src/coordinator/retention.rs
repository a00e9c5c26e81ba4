//! Retention: ended jobs leave memory once stored (their summaries kept), and their blobs are
//! deleted after the retention time.

use std::time::Instant;

use plait_core::JobId;

use crate::{job::JobSummary, store::StoreOp};

use super::Coordinator;
use crate::clock::unix_ms;
use crate::error::CoordinatorError;

/// Ended jobs whose summaries the coordinator keeps (a few hundred bytes each).
pub(super) const ENDED_SUMMARIES: usize = 10_000;

impl Coordinator {
    /// Drops jobs that are over from memory. Their last writes may still be in the outbox:
    /// [`Self::read_job`] flushes before it reads one back.
    pub(super) fn release_ended_jobs(&self) {
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

    pub(super) fn keep_ended_summary(&self, id: JobId, summary: JobSummary) {
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
}
