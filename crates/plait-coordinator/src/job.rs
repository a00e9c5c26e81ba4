//! One job's state: its plan, task graph, leases and accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use plait_api::{ClaimTaskRequest, TaskAssignment, TaskMeta, Work};
use plait_core::{JobId, ProgramInput, SegmentPlan, SegmentSpec, TaskGraph, TaskId, TaskKind};
use plait_prover::{ProgramImage, ProofBlob, ProvingParams};
use serde::Serialize;

/// Where a job is.
#[derive(Clone, Debug)]
pub enum JobStatus {
    Running,
    /// The final proof file, verified.
    Succeeded(Vec<u8>),
    Failed(String),
}

/// Something that happened to a job, for its event log.
#[derive(Clone, Debug, Serialize)]
pub struct JobEvent {
    /// Seconds since the job was submitted.
    pub at_seconds: f64,
    pub message: String,
}

/// How long one accepted task took, and where.
#[derive(Clone, Debug, Serialize)]
pub struct TaskTiming {
    pub task: TaskId,
    /// `segments` or the layer name.
    pub phase: String,
    pub worker: String,
    pub attempt: u32,
    /// From lease to accepted result (includes transfer and the coordinator's check).
    pub wall_seconds: f64,
    pub meta: TaskMeta,
}

/// Done/total per phase, and elapsed time.
#[derive(Clone, Debug, Serialize)]
pub struct JobProgress {
    pub phases: Vec<(String, usize, usize)>,
    pub elapsed_seconds: f64,
    pub finished: bool,
}

struct Lease {
    attempt: u32,
    worker: String,
    started: Instant,
    expires: Instant,
}

/// The slow-check inputs for one result, cloned out of the lock.
pub(crate) enum CheckTarget {
    Segment {
        segment: SegmentSpec,
    },
    Node {
        layer: plait_core::AggLayer,
        covered: Vec<SegmentSpec>,
    },
}

pub(crate) struct Job {
    pub id: JobId,
    pub program: ProgramImage,
    pub input: ProgramInput,
    pub params: ProvingParams,
    /// Shared, not copied: every result check reads it.
    pub plan: Arc<SegmentPlan>,
    pub status: JobStatus,
    pub submitted: Instant,
    graph: TaskGraph,
    proofs: HashMap<TaskId, ProofBlob>,
    leases: HashMap<TaskId, Lease>,
    attempts: HashMap<TaskId, u32>,
    failures: HashMap<TaskId, u32>,
    events: Vec<JobEvent>,
    timings: Vec<TaskTiming>,
}

/// Why a worker's call about a task was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeaseError {
    UnknownTask,
    /// The attempt is not the task's current lease (it expired, or the task is done).
    Stale,
}

impl Job {
    pub fn new(
        id: JobId,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        plan: SegmentPlan,
        graph: TaskGraph,
        now: Instant,
    ) -> Self {
        let mut job = Self {
            id,
            program,
            input,
            params,
            plan: Arc::new(plan),
            status: JobStatus::Running,
            submitted: now,
            graph,
            proofs: HashMap::new(),
            leases: HashMap::new(),
            attempts: HashMap::new(),
            failures: HashMap::new(),
            events: Vec::new(),
            timings: Vec::new(),
        };
        let segments = job.plan.segments.len();
        let nodes = job.graph.num_tasks() - segments;
        job.log(
            now,
            format!(
                "planned {segments} segments ({} instructions) and {nodes} aggregation nodes",
                job.plan.total_insns()
            ),
        );
        job
    }

    pub fn log(&mut self, now: Instant, message: String) {
        tracing::info!(job_id = %self.id, "{message}");
        self.events.push(JobEvent {
            at_seconds: now.duration_since(self.submitted).as_secs_f64(),
            message,
        });
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
            elapsed_seconds: now.duration_since(self.submitted).as_secs_f64(),
            finished: !self.is_running(),
        }
    }

    fn phase(&self, task: TaskId) -> String {
        match self.graph.kind(task) {
            Ok(TaskKind::Aggregate { layer, .. }) => layer.to_string(),
            _ => "segments".into(),
        }
    }

    /// Memory a task needs; aggregation nodes are not yet estimated (0 means unknown).
    fn memory_need(&self, task: TaskId) -> u64 {
        match self.graph.kind(task) {
            Ok(TaskKind::ProveSegment { segment }) => {
                self.plan.segments[segment as usize].memory_estimate_bytes
            }
            _ => 0,
        }
    }

    /// Leases the first ready task that fits the worker, if any.
    pub fn lease_next(
        &mut self,
        worker: &ClaimTaskRequest,
        lease: Duration,
        now: Instant,
    ) -> Option<TaskAssignment> {
        if !self.is_running() {
            return None;
        }
        let task = self
            .graph
            .ready_tasks()
            .find(|t| worker.memory_bytes == 0 || self.memory_need(*t) <= worker.memory_bytes)?;
        self.graph.start(task).expect("a ready task can start");
        let attempt = {
            let n = self.attempts.entry(task).or_insert(0);
            *n += 1;
            *n
        };
        self.leases.insert(
            task,
            Lease {
                attempt,
                worker: worker.worker_id.clone(),
                started: now,
                expires: now + lease,
            },
        );
        let work = match self.graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => Work::ProveSegment {
                segment: self.plan.segments[segment as usize].clone(),
                is_last: segment as usize + 1 == self.plan.segments.len(),
                input: self.input.clone(),
            },
            TaskKind::Aggregate { layer, .. } => Work::Aggregate {
                layer,
                children: self.graph.children(task).expect("task exists").to_vec(),
            },
        };
        let phase = self.phase(task);
        self.log(
            now,
            format!(
                "{task} ({phase}) attempt {attempt} leased to {}",
                worker.worker_id
            ),
        );
        Some(TaskAssignment {
            job_id: self.id,
            task_id: task,
            attempt,
            params: self.params,
            program_sha256: self.program.digest.clone(),
            lease_seconds: lease.as_secs(),
            work,
        })
    }

    fn current_lease(&self, task: TaskId, attempt: u32) -> Result<&Lease, LeaseError> {
        self.graph.kind(task).map_err(|_| LeaseError::UnknownTask)?;
        match self.leases.get(&task) {
            Some(lease) if lease.attempt == attempt => Ok(lease),
            _ => Err(LeaseError::Stale),
        }
    }

    /// The worker holding the task's current lease.
    pub fn lease_holder(&self, task: TaskId) -> Option<String> {
        self.leases.get(&task).map(|l| l.worker.clone())
    }

    pub fn heartbeat(
        &mut self,
        task: TaskId,
        attempt: u32,
        lease: Duration,
        now: Instant,
    ) -> Result<(), LeaseError> {
        self.current_lease(task, attempt)?;
        self.leases.get_mut(&task).expect("lease checked").expires = now + lease;
        Ok(())
    }

    /// What the coordinator must check a result of this lease against.
    pub fn check_target(&self, task: TaskId, attempt: u32) -> Result<CheckTarget, LeaseError> {
        self.current_lease(task, attempt)?;
        Ok(match self.graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => CheckTarget::Segment {
                segment: self.plan.segments[segment as usize].clone(),
            },
            TaskKind::Aggregate { layer, .. } => {
                let (from, to) = self.graph.covers(task).expect("task exists");
                CheckTarget::Node {
                    layer,
                    covered: self.plan.segments[from as usize..to as usize].to_vec(),
                }
            }
        })
    }

    pub fn proof(&self, task: TaskId) -> Option<&ProofBlob> {
        self.proofs.get(&task)
    }

    /// Every accepted proof, by task.
    pub fn proofs(&self) -> &HashMap<TaskId, ProofBlob> {
        &self.proofs
    }

    /// Records a verified result. Re-checks the lease: a result whose lease was lost while it
    /// was being checked is dropped. Returns whether the job's root proof is now accepted.
    pub fn accept(
        &mut self,
        task: TaskId,
        attempt: u32,
        proof: ProofBlob,
        meta: TaskMeta,
        now: Instant,
    ) -> Result<bool, LeaseError> {
        let lease = self.current_lease(task, attempt)?;
        let timing = TaskTiming {
            task,
            phase: self.phase(task),
            worker: lease.worker.clone(),
            attempt,
            wall_seconds: now.duration_since(lease.started).as_secs_f64(),
            meta,
        };
        self.leases.remove(&task);
        self.graph.complete(task).expect("a leased task is running");
        self.proofs.insert(task, proof);
        self.log(
            now,
            format!(
                "{task} ({}) accepted from {} after {:.1} s",
                timing.phase, timing.worker, timing.wall_seconds
            ),
        );
        self.timings.push(timing);
        Ok(self.graph.is_complete())
    }

    /// Records a failed or rejected attempt and puts the task back. With `max_attempts`, the
    /// attempt counts against the task, and the job fails once the task has failed that often.
    pub fn fail_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        reason: &str,
        max_attempts: Option<u32>,
        now: Instant,
    ) -> Result<(), LeaseError> {
        let worker = self.current_lease(task, attempt)?.worker.clone();
        self.leases.remove(&task);
        self.graph.retry(task).expect("a leased task is running");
        self.log(
            now,
            format!("{task} attempt {attempt} from {worker} failed: {reason}"),
        );
        let Some(max_attempts) = max_attempts else {
            return Ok(());
        };
        let failures = {
            let n = self.failures.entry(task).or_insert(0);
            *n += 1;
            *n
        };
        if failures >= max_attempts {
            let message = format!("{task} failed {failures} times; last reason: {reason}");
            self.log(now, format!("job failed: {message}"));
            self.status = JobStatus::Failed(message);
        }
        Ok(())
    }

    /// Requeues every task whose lease ran out. Returns how many.
    pub fn expire_leases(&mut self, max_attempts: u32, now: Instant) -> usize {
        let expired: Vec<(TaskId, u32)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(t, l)| (*t, l.attempt))
            .collect();
        for (task, attempt) in &expired {
            let _ = self.fail_attempt(
                *task,
                *attempt,
                "lease expired (no heartbeat)",
                Some(max_attempts),
                now,
            );
        }
        expired.len()
    }

    /// The root proof and the last segment's proof, once the root is accepted.
    pub fn final_inputs(&self) -> Option<(ProofBlob, ProofBlob)> {
        let root = self.proofs.get(&self.graph.root())?;
        let last = self
            .proofs
            .get(&TaskId(self.plan.segments.len() as u32 - 1))?;
        Some((root.clone(), last.clone()))
    }
}
