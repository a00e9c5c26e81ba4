//! Segments as execution cuts them: each adds its task (and the aggregation nodes it completes) to
//! the graph; execution's end seals it, a failure fails the job.

//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::time::Instant;

use plait_core::{planner::Prediction, SegmentSpec};

use crate::{job_status::JobStatus, store::StoreOp};

use super::Job;

impl Job {
    /// Adds the next segment execution has cut (its task is ready at once), and, with
    /// `ending` (the public values), ends the execution: the tree's last nodes then exist.
    pub fn add_segment(
        &mut self,
        spec: SegmentSpec,
        ending: Option<Vec<u8>>,
        now: Instant,
    ) -> Result<(), String> {
        if !self.executing || spec.index as usize != self.segments.len() {
            return Err(format!(
                "{}: segment {} arrived, expected {}",
                self.id,
                spec.index,
                if self.executing {
                    self.segments.len().to_string()
                } else {
                    "none (execution has ended)".to_string()
                }
            ));
        }
        for task in self.graph.add_segment() {
            self.ready_since.insert(task, now);
        }
        self.outbox.push(StoreOp::Segment {
            job: self.id,
            index: spec.index,
            spec_json: serde_json::to_string(&spec).expect("segments serialize"),
        });
        self.segments.push(spec);
        if let Some(public_values) = ending {
            self.executing = false;
            for task in self.graph.seal().map_err(|e| e.to_string())? {
                self.ready_since.insert(task, now);
            }
            self.outbox.push(StoreOp::ExecutionEnded {
                job: self.id,
                public_values: Some(public_values.clone()),
            });
            self.public_values = Some(public_values);
            let nodes = self.graph.num_tasks() - self.segments.len();
            self.log(
                now,
                format!(
                    "execution done: {} segments ({} instructions) and {nodes} aggregation nodes",
                    self.segments.len(),
                    self.instructions()
                ),
            );
        }
        Ok(())
    }

    /// Records that execution failed: the job fails with the reason (proofs already accepted
    /// are kept, but it cannot be retried: the same program fails the same way).
    pub fn execution_failed(&mut self, reason: &str, now: Instant) {
        self.executing = false;
        // No public values: a restarted coordinator must not take the job's segments for a
        // whole execution.
        self.outbox.push(StoreOp::ExecutionEnded {
            job: self.id,
            public_values: None,
        });
        let message = format!(
            "execution failed after {} segments: {reason}",
            self.segments.len()
        );
        self.log(now, format!("job failed: {message}"));
        if self.status.is_live() {
            self.set_status(JobStatus::Failed(message));
        }
    }

    /// Records that execution stopped because the job was cancelled.
    pub fn execution_stopped(&mut self, now: Instant) {
        self.executing = false;
        // No public values: a restarted coordinator must not take the job's segments for a
        // whole execution.
        self.outbox.push(StoreOp::ExecutionEnded {
            job: self.id,
            public_values: None,
        });
        self.log(
            now,
            format!("execution stopped after {} segments", self.segments.len()),
        );
    }

    /// Sets the planner's prediction (made once execution has ended) and logs it.
    pub fn set_prediction(&mut self, prediction: Prediction, now: Instant) {
        if let (Some(goal), Some(reason)) = (prediction.goal, &prediction.reason) {
            self.log(now, format!("segment height chosen for {goal}: {reason}"));
        }
        self.log(
            now,
            format!(
                "predicted on {} worker(s): T {:.0} s, L {:.0} s of proving",
                prediction.workers, prediction.latency_seconds, prediction.work_seconds
            ),
        );
        self.outbox.push(StoreOp::Prediction {
            job: self.id,
            prediction_json: serde_json::to_string(&prediction).expect("predictions serialize"),
        });
        self.prediction = Some(prediction);
    }

    /// Instructions in the segments cut so far.
    pub fn instructions(&self) -> u64 {
        self.segments.iter().map(|s| s.num_insns).sum()
    }

    /// Whether execution ended without finishing the segment plan (the job cannot go on).
    pub fn execution_failed_before_end(&self) -> bool {
        !self.executing && !self.graph.is_sealed()
    }
}
