//! Results: what each task's proof must prove (its check target), accepting a checked proof, and
//! discarding proofs that the final proof's repair re-proves.

//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::time::{Duration, Instant};

use plait_api::TaskMeta;
use plait_core::{TaskId, TaskKind, TaskState};

use crate::store::StoreOp;

use super::{bounded_meta, CheckTarget, Job, LeaseError, TaskTiming};

impl Job {
    /// What a result for the lease must prove. The lease is kept alive for one more lease
    /// period while the result is checked (the worker has stopped heartbeating and waits for
    /// the verdict): a valid result is not lost because the check outlasted the lease.
    pub fn check_target(
        &mut self,
        task: TaskId,
        attempt: u32,
        secret: &str,
        check_window: Duration,
        now: Instant,
    ) -> Result<CheckTarget, LeaseError> {
        self.current_lease(task, attempt, secret)?;
        if let Some(lease) = self.leases.get_mut(&task) {
            lease.expires = lease.expires.max(now + check_window);
            lease.deadline = lease.deadline.max(lease.expires);
        }
        Ok(self.target_of(task))
    }

    /// What the task's proof must prove.
    pub(super) fn target_of(&self, task: TaskId) -> CheckTarget {
        match self.graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => CheckTarget::Segment {
                segment: self.segments[segment as usize].clone(),
                ending: self
                    .is_last_segment(segment)
                    .then(|| self.public_values.clone())
                    .flatten(),
            },
            TaskKind::Aggregate { layer, .. } => {
                let (from, to) = self.graph.covers(task).expect("task exists");
                let first_child = self.graph.children(task).expect("task exists")[0];
                let child_layer = match self.graph.kind(first_child) {
                    Ok(TaskKind::Aggregate { layer, .. }) => Some(layer),
                    _ => None,
                };
                CheckTarget::Node {
                    layer,
                    child_layer,
                    first: self.segments[from as usize].clone(),
                    last: self.segments[to as usize - 1].clone(),
                    ends_execution: self.is_last_segment(to - 1),
                }
            }
        }
    }

    /// Whether segment `index` is the execution's last (known once execution has ended).
    pub(super) fn is_last_segment(&self, index: u32) -> bool {
        self.graph.is_sealed() && index as usize + 1 == self.segments.len()
    }

    /// The SHA-256 of the task's accepted proof (its name in the blob store).
    pub fn proof(&self, task: TaskId) -> Option<&str> {
        self.proofs.get(&task).map(String::as_str)
    }

    /// Records a verified result. Re-checks the lease: a result whose lease was lost while it
    /// was being checked is dropped. Returns whether the job's root proof is now accepted, and
    /// the task's timing record.
    pub fn accept(
        &mut self,
        task: TaskId,
        attempt: u32,
        secret: &str,
        (proof_sha256, proof_bytes): (String, u64),
        meta: TaskMeta,
        now: Instant,
    ) -> Result<(bool, TaskTiming), LeaseError> {
        let lease = self.current_lease(task, attempt, secret)?;
        let wall_seconds = now.duration_since(lease.started).as_secs_f64();
        // A GPU prover's host memory is not what its task was placed by.
        let placed_by = if lease.worker_device_memory == 0 {
            lease.placed_by
        } else {
            0
        };
        let timing = TaskTiming {
            task,
            phase: self.phase(task),
            worker: lease.worker.clone(),
            attempt,
            queued_seconds: lease.queued.as_secs_f64(),
            wall_seconds,
            proof_bytes,
            predicted_peak_bytes: lease.predicted,
            placed_by_bytes: placed_by,
            predicted_seconds: self.predicted_seconds(task),
            meta: bounded_meta(
                meta,
                wall_seconds,
                lease.worker_memory,
                lease.worker_device_memory,
            ),
        };
        self.remove_lease(task);
        self.failed_by.remove(&task);
        self.last_failure.remove(&task);
        if let Some(parent) = self.graph.complete(task).expect("a leased task is running") {
            self.ready_since.insert(parent, now);
        }
        self.outbox.push(StoreOp::TaskAccepted {
            job: self.id,
            task,
            proof_sha256: proof_sha256.clone(),
            timing_json: serde_json::to_string(&timing).expect("timings serialize"),
        });
        self.proofs.insert(task, proof_sha256);
        self.proof_sizes.insert(task, proof_bytes);
        self.log_attempt(
            now,
            task,
            attempt,
            &timing.worker,
            format!(
                "{task} ({}) accepted from {} after {:.1} s ({} bytes)",
                timing.phase, timing.worker, timing.wall_seconds, timing.proof_bytes
            ),
        );
        self.note_memory_above_prediction(task, &timing, placed_by, now);
        self.timings.push(timing.clone());
        Ok((self.graph.is_complete(), timing))
    }

    /// Logs a task whose measured peak exceeds its prediction by more than the model's 15%
    /// target: a segment's, what its trace size predicts; a node's, the need it was placed by
    /// (`placed_by`). The pool then learns the need from such peaks (see
    /// `Coordinator::record_peak_memory`), and the operator sees the model is off.
    fn note_memory_above_prediction(
        &mut self,
        task: TaskId,
        timing: &TaskTiming,
        placed_by: u64,
        now: Instant,
    ) {
        let (what, predicted, by) = match self.graph.kind(task) {
            Ok(TaskKind::ProveSegment { segment }) => {
                let has_prediction = self.segments[segment as usize].trace_size.is_some()
                    && !self.segment_fits.is_empty();
                if !has_prediction {
                    return;
                }
                (
                    format!("{task} (segment {segment})"),
                    self.segment_floor(segment),
                    "its trace size predicts; the pool learns this program's need from such peaks",
                )
            }
            Ok(TaskKind::Aggregate { layer, .. }) => (
                format!("{task} ({layer})"),
                placed_by,
                "it was placed by; the pool learns this program's need for the layer from such peaks",
            ),
            Err(_) => return,
        };
        let peak = timing.meta.process_peak_rss_bytes;
        if predicted == 0 || (peak as f64) <= 1.15 * predicted as f64 {
            return;
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        self.log(
            now,
            format!(
                "{what} peaked at {:.2} GiB on {}, {:.0}% above the {:.2} GiB {by}",
                gib(peak),
                timing.worker,
                100.0 * (peak as f64 / predicted as f64 - 1.0),
                gib(predicted)
            ),
        );
    }

    /// Discards accepted proofs the job cannot use, and those of every node above them (they
    /// were built on them): the tasks are proven again.
    pub fn discard_proofs(&mut self, tasks: &[TaskId], why: &str, now: Instant) {
        let mut discarded = std::collections::BTreeSet::new();
        for &task in tasks {
            let Ok(changed) = self.graph.discard(task) else {
                continue; // already discarded with another
            };
            for (t, was) in changed {
                match was {
                    TaskState::Done => {
                        self.proofs.remove(&t);
                        self.proof_sizes.remove(&t);
                        self.outbox.push(StoreOp::TaskDiscarded {
                            job: self.id,
                            task: t,
                        });
                        discarded.insert(t);
                    }
                    TaskState::Running => {
                        self.remove_lease(t);
                    }
                    TaskState::Ready | TaskState::Waiting => {}
                }
                if self.graph.state(t) == Ok(TaskState::Ready) {
                    self.ready_since.insert(t, now);
                } else {
                    self.ready_since.remove(&t);
                }
            }
        }
        if discarded.is_empty() {
            return;
        }
        // One pass over the timings, however many proofs went.
        self.timings
            .retain(|timing| !discarded.contains(&timing.task));
        let names: Vec<String> = discarded
            .iter()
            .map(|t| format!("{t} ({})", self.phase(*t)))
            .collect();
        self.log(
            now,
            format!(
                "{why}: discarded the proofs of {}; proving them again",
                names.join(", ")
            ),
        );
    }

    /// The tasks whose proofs finalization uses (the root and the last segment), with what
    /// each must prove, once the root is accepted.
    pub fn final_targets(&self) -> Option<Vec<(TaskId, String, CheckTarget)>> {
        let root = self.graph.root()?;
        let last = self
            .graph
            .segment_task(self.segments.len().checked_sub(1)? as u32)?;
        [root, last]
            .into_iter()
            .map(|t| Some((t, self.proofs.get(&t)?.clone(), self.target_of(t))))
            .collect()
    }
}
