//! What a job shows: its progress, summary, measured outcome, events, timings and tree.

//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::time::Instant;

use plait_core::{planner::Measured, AggLayer, TaskId, TaskKind, TaskState};

use crate::job_status::JobStatus;

use super::{Job, JobEvent, JobProgress, JobSummary, TaskTiming};

impl Job {
    /// Whether the root is accepted but no final proof exists yet (a restart can leave a job so).
    pub fn awaits_finalization(&self) -> bool {
        self.is_running() && self.graph.is_complete()
    }

    pub fn accepted_count(&self) -> (usize, usize) {
        // One timing per accepted task (proofs of ended jobs are not kept in memory).
        (self.timings.len(), self.graph.num_tasks())
    }

    pub fn events(&self) -> &[JobEvent] {
        &self.events
    }

    pub fn timings(&self) -> &[TaskTiming] {
        &self.timings
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status, JobStatus::Running)
    }

    pub fn progress(&self, now: Instant) -> JobProgress {
        JobProgress {
            phases: self.graph.progress(),
            elapsed_seconds: self.elapsed_seconds(now),
            finished: !self.status.is_live(),
            executing: self.executing,
        }
    }

    pub fn summary(&self, now: Instant) -> JobSummary {
        JobSummary {
            state: self.status.name(),
            failure: match &self.status {
                JobStatus::Failed(reason) => Some(reason.clone()),
                _ => None,
            },
            program_sha256: self.program.digest.clone(),
            segment_height: self.params.segment_height,
            progress: self.progress(now),
            prediction: self.prediction.clone(),
            measured: self.measured(now),
            instructions: self.instructions(),
            reexecuted_instructions: self.reexecuted_instructions(),
            execution_failed: self.execution_failed_before_end(),
            waiting_for_memory: self.waiting_for_memory.clone(),
        }
    }

    /// Instructions workers say they executed before their segments to rebuild start states,
    /// over accepted segment proofs; each report is capped at its segment's start (no worker
    /// can need more), so one report cannot skew the figure.
    pub(super) fn reexecuted_instructions(&self) -> u64 {
        self.timings
            .iter()
            .filter_map(|t| match self.graph.kind(t.task) {
                Ok(TaskKind::ProveSegment { segment }) => {
                    let start = self.segments.get(segment as usize)?.instret_start;
                    Some(t.meta.reexecuted_instructions.min(start))
                }
                _ => None,
            })
            .sum()
    }

    /// Seconds since submission; for a job that ended, until it ended (every ending is
    /// logged as it happens).
    pub(super) fn elapsed_seconds(&self, now: Instant) -> f64 {
        match self.events.last() {
            Some(last) if !self.status.is_live() => last.at_seconds,
            _ => now.duration_since(self.submitted).as_secs_f64(),
        }
    }

    /// The measured counterpart of the prediction, once the job succeeded: its latency and
    /// the proving work of its accepted tasks, per phase.
    pub fn measured(&self, now: Instant) -> Option<Measured> {
        if !matches!(self.status, JobStatus::Succeeded(_)) {
            return None;
        }
        let mut work_by_phase: Vec<(String, f64)> = Vec::new();
        for t in &self.timings {
            let work = t.meta.proving_seconds + t.meta.reexecution_seconds;
            match work_by_phase.iter_mut().find(|(p, _)| *p == t.phase) {
                Some((_, sum)) => *sum += work,
                None => work_by_phase.push((t.phase.clone(), work)),
            }
        }
        Some(Measured {
            latency_seconds: self.elapsed_seconds(now),
            work_seconds: work_by_phase.iter().map(|(_, w)| w).sum(),
            work_by_phase,
        })
    }

    /// The job's aggregation tree as far as it exists, each task with its state, for the
    /// dashboard.
    /// The tree whole if it has at most `limit` tasks; else counted per layer, with its
    /// leased tasks and those whose last attempt failed (at most `limit`). One pass over the
    /// tasks, without copying those it leaves out.
    pub fn tree_view(&self, limit: usize) -> plait_api::TreeView {
        let tasks = self.graph.num_tasks();
        let mut layers: Vec<(Option<AggLayer>, plait_api::LayerCounts)> = Vec::new();
        let mut notable = Vec::new();
        for task in (0..tasks as u32).map(TaskId) {
            let (Ok(state), Ok(kind)) = (self.graph.state(task), self.graph.kind(task)) else {
                continue;
            };
            let layer = match kind {
                TaskKind::Aggregate { layer, .. } => Some(layer),
                _ => None,
            };
            let counts = match layers.iter().position(|(l, _)| *l == layer) {
                Some(i) => &mut layers[i].1,
                None => {
                    layers.push((layer, plait_api::LayerCounts::default()));
                    &mut layers.last_mut().expect("just pushed").1
                }
            };
            let failing = state != TaskState::Done && self.last_failure.contains_key(&task);
            match state {
                TaskState::Waiting => counts.waiting += 1,
                TaskState::Ready => counts.ready += 1,
                TaskState::Running => counts.leased += 1,
                TaskState::Done => counts.accepted += 1,
            }
            counts.failing += usize::from(failing);
            if tasks > limit && notable.len() < limit && (state == TaskState::Running || failing) {
                notable.push(task);
            }
        }
        let complete = tasks <= limit;
        let nodes = if complete {
            self.tree()
        } else {
            notable
                .into_iter()
                .filter_map(|t| self.tree_node(t))
                .collect()
        };
        plait_api::TreeView {
            tasks,
            layers: layers
                .into_iter()
                .map(|(layer, counts)| plait_api::LayerCounts {
                    phase: layer.map_or_else(|| "segments".into(), |l| l.to_string()),
                    ..counts
                })
                .collect(),
            complete,
            nodes,
        }
    }

    pub fn tree(&self) -> Vec<plait_api::TreeNode> {
        (0..self.graph.num_tasks() as u32)
            .map(TaskId)
            .filter_map(|task| self.tree_node(task))
            .collect()
    }

    pub(super) fn tree_node(&self, task: TaskId) -> Option<plait_api::TreeNode> {
        let state = self.graph.state(task).ok()?;
        let lease = self.leases.get(&task);
        Some(plait_api::TreeNode {
            task,
            phase: self.phase(task),
            children: self.graph.children(task).ok()?.to_vec(),
            state: match state {
                TaskState::Waiting => "waiting",
                TaskState::Ready => "ready",
                TaskState::Running => "leased",
                TaskState::Done => "accepted",
            }
            .into(),
            worker: lease.map(|l| l.worker.clone()),
            attempts: self.attempts.get(&task).copied().unwrap_or(0),
            last_failure: self.last_failure.get(&task).cloned(),
        })
    }
}
