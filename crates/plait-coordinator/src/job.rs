//! One job's state: its segments (growing while the program executes), task graph, leases and
//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use plait_api::{ClaimTaskRequest, TaskAssignment, TaskMeta, Work};
use plait_core::{
    planner::{Measured, Prediction},
    AggLayer, JobId, ProgramInput, ReadyChange, SegmentPlan, SegmentSpec, TaskGraph, TaskId,
    TaskKind, TaskState,
};
use plait_prover::{ProgramImage, ProvingParams};
use serde::{Deserialize, Serialize};

use crate::{
    job_status::JobStatus,
    store::{JobOwner, JobRecord, StoreOp, StoredJob},
};

/// A change its owner asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    Pause,
    Resume,
    Cancel,
    /// Restart a failed job, keeping what was accepted.
    Retry,
}

impl JobAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }
}

/// Something that happened to a job, for its event log.
#[derive(Clone, Debug, Serialize)]
pub struct JobEvent {
    /// Seconds since the job was submitted.
    pub at_seconds: f64,
    pub message: String,
}

/// How long one accepted task took, and where.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskTiming {
    pub task: TaskId,
    /// `segments` or the layer name.
    pub phase: String,
    pub worker: String,
    pub attempt: u32,
    /// From the moment the task could be handed out (its children accepted, or its retry
    /// backoff over) to its lease: the pool's dispatch delay, plus any wait for a free worker.
    #[serde(default)]
    pub queued_seconds: f64,
    /// From lease to accepted result (includes transfer and the coordinator's check).
    pub wall_seconds: f64,
    /// Size of the accepted proof.
    #[serde(default)]
    pub proof_bytes: u64,
    pub meta: TaskMeta,
}

/// What a job's status shows, taken in one read and without copying its final proof.
#[derive(Clone, Debug)]
pub struct JobSummary {
    pub state: &'static str,
    pub failure: Option<String>,
    pub program_sha256: String,
    pub segment_height: u32,
    pub progress: JobProgress,
    pub prediction: Option<Prediction>,
    pub measured: Option<Measured>,
    /// Instructions the program executed.
    pub instructions: u64,
    /// Instructions workers re-executed to reach their segments' starts (accepted segments).
    pub reexecuted_instructions: u64,
    /// Whether the program failed to execute (bad program or input; not a proving failure).
    pub execution_failed: bool,
    /// Ready tasks no live worker has the memory for, if any: which, what they need and why.
    pub waiting_for_memory: Option<String>,
}

/// Done/total per phase, and elapsed time.
#[derive(Clone, Debug, Serialize)]
pub struct JobProgress {
    pub phases: Vec<(String, usize, usize)>,
    pub elapsed_seconds: f64,
    pub finished: bool,
    /// Whether the program is still executing (segments, and so totals, still grow).
    pub executing: bool,
}

struct Lease {
    attempt: u32,
    /// Only the holder knows it (see [`TaskAssignment::lease_secret`]).
    secret: LeaseSecret,
    worker: String,
    /// The memory the holder advertised when it claimed (0: not said).
    worker_memory: u64,
    /// The memory of the GPU the holder said it proves on (0: a CPU).
    worker_device_memory: u64,
    started: Instant,
    /// When the lease ends without a heartbeat; each heartbeat moves it, up to `deadline`.
    expires: Instant,
    /// When the lease ends whatever the heartbeats say: a hung prover, or a worker that only
    /// heartbeats, holds a task this long at most.
    deadline: Instant,
    queued: Duration,
}

/// The slow-check inputs for one result, cloned out of the lock.
pub(crate) enum CheckTarget {
    Segment {
        segment: SegmentSpec,
        /// The public values, when this is the execution's last segment.
        ending: Option<Vec<u8>>,
    },
    Node {
        layer: AggLayer,
        /// The layer of the node's children (`None`: segments).
        child_layer: Option<AggLayer>,
        /// The first and last segments the node covers.
        first: SegmentSpec,
        last: SegmentSpec,
        ends_execution: bool,
    },
}

pub(crate) struct Job {
    pub id: JobId,
    /// Whose job it is (only that client sees it), and its priority among the client's jobs.
    pub owner: JobOwner,
    pub program: ProgramImage,
    pub input: ProgramInput,
    pub params: ProvingParams,
    /// The segments cut so far, in order.
    pub segments: Vec<SegmentSpec>,
    /// The public values the program revealed, once its execution has ended.
    pub public_values: Option<Vec<u8>>,
    /// Whether the program is still executing (segments are still being cut).
    pub executing: bool,
    pub status: JobStatus,
    pub submitted: Instant,
    pub submitted_unix_ms: i64,
    /// What the planner predicted at submission, if the coordinator has a device profile.
    pub prediction: Option<Prediction>,
    graph: TaskGraph,
    /// The SHA-256 of each accepted task's proof: the proofs themselves live in the blob
    /// store, not in memory.
    proofs: HashMap<TaskId, String>,
    leases: HashMap<TaskId, Lease>,
    /// How many of `leases` each worker holds (a claim checks it against the worker's slots,
    /// so it must not walk every lease).
    held: HashMap<String, usize>,
    /// The task each current lease secret leases (a download names only its secret, and must
    /// not walk every lease either). Hashed with a random key, so the lookup's timing says
    /// nothing useful about a guessed secret.
    by_secret: HashMap<[u8; 32], TaskId>,
    attempts: HashMap<TaskId, u32>,
    failures: HashMap<TaskId, u32>,
    /// A task that failed is not handed out again before this time (backoff).
    not_before: HashMap<TaskId, Instant>,
    /// Ready tasks no live worker has the memory for (see [`Job::check_placeable`]).
    waiting_for_memory: Option<String>,
    /// The worker whose attempt at a task failed last (not stored: a restart forgets it).
    failed_by: HashMap<TaskId, String>,
    /// Why the task's last attempt failed (a rejected proof, a lost lease…), until one is
    /// accepted: what the dashboard shows.
    last_failure: HashMap<TaskId, String>,
    /// Reported failures of each task that count (their workers have a record, see
    /// [`RetryPolicy::counts`]), and the distinct workers they came from (not stored either).
    failed_on: HashMap<TaskId, (u32, std::collections::BTreeSet<String>)>,
    /// Leases of each task lost (expired: the worker died, hung or was cut off) that count,
    /// and the workers that lost them: counted apart from reported failures, as a lost lease
    /// says less about the task (not stored: a restart forgives them).
    lost: HashMap<TaskId, (u32, std::collections::BTreeSet<String>)>,
    /// When each ready task became ready (or will, after its backoff).
    ready_since: HashMap<TaskId, Instant>,
    events: Vec<JobEvent>,
    timings: Vec<TaskTiming>,
    /// Rounds of discarding unusable final inputs since the job started or was retried
    /// (not stored: a restart allows as many again).
    pub final_repairs: u32,
    /// Changes not yet written to the store, in order; the coordinator drains them.
    outbox: Vec<StoreOp>,
    /// The ready tasks in brief, while the ready set has not changed.
    ready_summary: Option<ReadySummary>,
}

/// The ready tasks in brief, kept up to date from the graph's ready changes: enough to tell a
/// worker that fits none of them so without walking them (a claim that takes nothing would
/// otherwise cost a walk of every ready task of every job), and to count them for the metrics.
#[derive(Clone, Debug, Default)]
struct ReadySummary {
    /// Memory estimates of the ready segments (estimate -> how many).
    segment_estimates: std::collections::BTreeMap<u64, usize>,
    /// Aggregation layers with ready tasks, and how many.
    layers: Vec<(AggLayer, usize)>,
    by_kind: std::collections::BTreeMap<&'static str, usize>,
}

/// How failures that count against a task are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Failures after which the task fails its job, if they happened on that many distinct
    /// workers (or on every live worker, when fewer are live): no single worker can fail a job
    /// while others could prove the task.
    pub max_attempts: u32,
    /// Lost leases (see [`Job::expire_leases`]) after which the task fails its job, likewise
    /// on that many distinct workers: a task that kills every worker that takes it (running it
    /// out of memory, say) must not go round forever.
    pub max_lost_leases: u32,
    /// Workers that asked for work within a lease period and whose failures count.
    pub live_workers: usize,
    /// Whether this failure counts toward failing the task: its worker has a record of
    /// accepted results (see `CoordinatorConfig::trusted_after_accepted`). One that does not
    /// count is logged and retried after the backoff all the same.
    pub counts: bool,
    /// Wait before the first retry; doubles with each further failure, up to a minute.
    pub backoff: Duration,
}

/// How a lease ended without a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The worker said the task failed.
    Reported,
    /// The lease expired: the worker died, hung, or was cut off.
    Lost,
}

impl RetryPolicy {
    fn backoff_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        (self.backoff * (1 << doublings)).min(Duration::from_secs(60))
    }
}

/// Why a worker's call about a task was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeaseError {
    UnknownTask,
    /// The attempt is not the task's current lease (it expired, or the task is done).
    Stale,
    /// The call did not present the lease's secret: it does not come from the lease's holder.
    NotHolder,
}

/// A lease's secret: 256 random bits, given to the holder only. Compared in constant time.
#[derive(Clone)]
pub(crate) struct LeaseSecret([u8; 32]);

impl LeaseSecret {
    fn random() -> Self {
        // ThreadRng is a CSPRNG seeded from the operating system.
        Self(rand::random())
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A secret as a worker presents it (hex); `None` if it cannot be one.
    fn parse(presented: &str) -> Option<[u8; 32]> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(presented, &mut bytes).ok()?;
        Some(bytes)
    }

    /// Whether `presented` (already parsed) is this secret.
    fn is(&self, presented: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.ct_eq(presented))
    }

    /// Whether `presented` (hex, as sent by a worker) is this secret.
    fn matches(&self, presented: &str) -> bool {
        Self::parse(presented).is_some_and(|bytes| self.is(&bytes))
    }
}

impl Job {
    /// A job whose program has yet to execute: its segments arrive through
    /// [`Self::add_segment`].
    pub fn new(
        id: JobId,
        owner: JobOwner,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<Self, plait_core::TreeShapeError> {
        let mut job = Self {
            id,
            owner,
            program,
            input,
            params,
            segments: Vec::new(),
            public_values: None,
            executing: true,
            status: JobStatus::Running,
            submitted: now,
            submitted_unix_ms: now_unix_ms,
            prediction: None,
            graph: TaskGraph::open(params.tree)?,
            proofs: HashMap::new(),
            leases: HashMap::new(),
            held: HashMap::new(),
            by_secret: HashMap::new(),
            attempts: HashMap::new(),
            failures: HashMap::new(),
            not_before: HashMap::new(),
            failed_by: HashMap::new(),
            last_failure: HashMap::new(),
            failed_on: HashMap::new(),
            lost: HashMap::new(),
            waiting_for_memory: None,
            ready_since: HashMap::new(),
            events: Vec::new(),
            timings: Vec::new(),
            final_repairs: 0,
            outbox: Vec::new(),
            ready_summary: None,
        };
        let record = job.record();
        job.outbox.push(StoreOp::InsertJob(record));
        job.log(
            now,
            format!(
                "submitted; executing at segment height {}",
                params.segment_height
            ),
        );
        Ok(job)
    }

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

    /// The job as first stored.
    fn record(&self) -> JobRecord {
        let json = |v: serde_json::Result<String>| v.expect("job parts serialize");
        JobRecord {
            id: self.id,
            program_sha256: self.program.digest.clone(),
            input_json: json(serde_json::to_string(&self.input)),
            params_json: json(serde_json::to_string(&self.params)),
            // Segments are stored one by one as execution cuts them.
            plan_json: String::new(),
            submitted_unix_ms: self.submitted_unix_ms,
            state: self.status.clone(),
            prediction_json: self
                .prediction
                .as_ref()
                .map(|p| json(serde_json::to_string(p))),
            execution_ended: !self.executing,
            public_values: self.public_values.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Rebuilds a stored job: accepted tasks stay accepted; tasks that were leased are ready
    /// again (leases are not stored).
    pub fn restore(
        stored: StoredJob,
        program: ProgramImage,
        now: Instant,
        now_unix_ms: i64,
    ) -> Result<Self, String> {
        let r = stored.record;
        let parse_err = |what: &str, e: serde_json::Error| format!("{}: {what}: {e}", r.id);
        let input: ProgramInput =
            serde_json::from_str(&r.input_json).map_err(|e| parse_err("input", e))?;
        let params: ProvingParams =
            serde_json::from_str(&r.params_json).map_err(|e| parse_err("params", e))?;
        let prediction: Option<Prediction> = r
            .prediction_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| parse_err("prediction", e))?;
        // Jobs of schema 2 stored their whole plan at submission; later ones store segments one
        // by one as execution cuts them.
        let (segments, public_values, executing) = if r.plan_json.is_empty() {
            let segments = stored
                .segments
                .iter()
                .map(|json| serde_json::from_str(json))
                .collect::<Result<Vec<SegmentSpec>, _>>()
                .map_err(|e| parse_err("segment", e))?;
            (segments, r.public_values.clone(), !r.execution_ended)
        } else {
            let plan: SegmentPlan =
                serde_json::from_str(&r.plan_json).map_err(|e| parse_err("plan", e))?;
            (plan.segments, Some(plan.public_values), false)
        };
        let mut graph = TaskGraph::open(params.tree).map_err(|e| format!("{}: {e}", r.id))?;
        for _ in &segments {
            graph.add_segment();
        }
        if public_values.is_some() {
            graph.seal().map_err(|e| format!("{}: {e}", r.id))?;
        }
        let age_ms = (now_unix_ms - r.submitted_unix_ms).max(0) as u64;
        let submitted = now
            .checked_sub(Duration::from_millis(age_ms))
            .unwrap_or(now);
        let (mut attempts, mut failures) = (HashMap::new(), HashMap::new());
        let (mut proofs, mut timings) = (HashMap::new(), Vec::new());
        // Task ids put children before parents, so each accepted task is ready in turn.
        for (task, t) in stored.tasks {
            attempts.insert(task, t.attempts);
            failures.insert(task, t.failures);
            let Some((proof, timing)) = t.accepted else {
                continue;
            };
            graph
                .start(task)
                .and_then(|()| graph.complete(task))
                .map_err(|e| format!("{}: stored {task}: {e}", r.id))?;
            proofs.insert(task, proof);
            timings.push(serde_json::from_str(&timing).map_err(|e| parse_err("task timing", e))?);
        }
        let events = stored
            .events
            .into_iter()
            .map(|(at_seconds, message)| JobEvent {
                at_seconds,
                message,
            })
            .collect();
        let ready_since = graph.ready_tasks().map(|t| (t, now)).collect();
        Ok(Self {
            id: r.id,
            owner: r.owner.clone(),
            program,
            input,
            params,
            segments,
            public_values,
            executing,
            status: r.state,
            submitted,
            submitted_unix_ms: r.submitted_unix_ms,
            prediction,
            graph,
            proofs,
            leases: HashMap::new(),
            held: HashMap::new(),
            by_secret: HashMap::new(),
            attempts,
            failures,
            not_before: HashMap::new(),
            failed_by: HashMap::new(),
            last_failure: HashMap::new(),
            failed_on: HashMap::new(),
            lost: HashMap::new(),
            waiting_for_memory: None,
            ready_since,
            events,
            timings,
            final_repairs: 0,
            outbox: Vec::new(),
            ready_summary: None,
        })
    }

    /// Store writes made since the last call.
    pub fn take_outbox(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.outbox)
    }

    pub fn log(&mut self, now: Instant, message: String) {
        let message = plait_core::text::printable(&message).into_owned();
        tracing::info!(job = %self.id, "{message}");
        self.record_event(now, message);
    }

    /// An event about one attempt at a task: logged with its fields for log collectors.
    fn log_attempt(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u32,
        worker: &str,
        message: String,
    ) {
        let message = plait_core::text::printable(&message).into_owned();
        tracing::info!(job = %self.id, task = %task, attempt, worker, "{message}");
        self.record_event(now, message);
    }

    fn record_event(&mut self, now: Instant, message: String) {
        let at_seconds = now.duration_since(self.submitted).as_secs_f64();
        self.outbox.push(StoreOp::Event {
            job: self.id,
            seq: self.events.len() as u32,
            at_seconds,
            message: message.clone(),
        });
        self.events.push(JobEvent {
            at_seconds,
            message,
        });
    }

    pub fn set_status(&mut self, status: JobStatus) {
        let status = match status {
            JobStatus::Failed(reason) => {
                JobStatus::Failed(plait_core::text::printable(&reason).into_owned())
            }
            other => other,
        };
        self.outbox.push(StoreOp::JobState {
            job: self.id,
            state: status.clone(),
            ended_unix_ms: (!status.is_live()).then(crate::clock::unix_ms),
        });
        self.status = status;
    }

    /// Applies an owner's request, or says why it does not apply in the current state.
    pub fn apply(&mut self, action: JobAction, now: Instant) -> Result<(), String> {
        let next = match (action, &self.status) {
            (JobAction::Pause, JobStatus::Running) => JobStatus::Paused,
            (JobAction::Resume, JobStatus::Paused) => JobStatus::Running,
            (JobAction::Cancel, s) if s.is_live() || matches!(s, JobStatus::Failed(_)) => {
                // Results in flight are refused from now on.
                self.clear_leases();
                JobStatus::Cancelled
            }
            (JobAction::Retry, JobStatus::Failed(reason)) if self.execution_failed_before_end() => {
                return Err(format!(
                    "cannot retry {}: its execution failed ({reason}); fix the program or its \
                     input and submit it again",
                    self.id
                ))
            }
            (JobAction::Retry, JobStatus::Failed(_)) => {
                self.final_repairs = 0;
                self.lost.clear();
                self.failed_on.clear();
                for (task, n) in self.failures.iter_mut() {
                    if *n > 0 {
                        *n = 0;
                        self.outbox.push(StoreOp::TaskCounters {
                            job: self.id,
                            task: *task,
                            attempts: self.attempts.get(task).copied().unwrap_or(0),
                            failures: 0,
                        });
                    }
                }
                JobStatus::Running
            }
            (action, status) => {
                return Err(format!(
                    "cannot {} {}: it is {}",
                    action.name(),
                    self.id,
                    status.name()
                ))
            }
        };
        let kept = self.proofs.len();
        self.set_status(next);
        let message = match action {
            JobAction::Retry => format!("retried by its owner; {kept} accepted proofs kept"),
            _ => format!("{} by its owner", self.status.name()),
        };
        self.log(now, message);
        Ok(())
    }

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

    /// Looks for ready tasks that no live worker has the memory for (`largest`: the most any
    /// live worker advertised; `None` when one advertised no limit or none is live), and says
    /// so in the status and, when it starts, in the event log, instead of letting them wait
    /// silently. `source` says where a phase's need comes from.
    pub fn check_placeable(
        &mut self,
        largest: Option<u64>,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
        source: &dyn Fn(&ProvingParams, Option<AggLayer>) -> String,
        now: Instant,
    ) {
        let mut stuck: Vec<(String, u64, String)> = Vec::new();
        if let (Some(largest), true) = (largest, self.is_running()) {
            for task in self.graph.ready_tasks() {
                let layer = match self.graph.kind(task) {
                    Ok(TaskKind::Aggregate { layer, .. }) => Some(layer),
                    _ => None,
                };
                let phase = self.phase(task);
                if stuck.iter().any(|(p, ..)| *p == phase) {
                    continue;
                }
                let required = self.memory_need(task, need);
                if required > largest {
                    stuck.push((phase, required, source(&self.params, layer)));
                }
            }
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let report = (!stuck.is_empty()).then(|| {
            let what: Vec<String> = stuck
                .iter()
                .map(|(phase, required, source)| {
                    format!("{phase} tasks need {:.1} GiB ({source})", gib(*required))
                })
                .collect();
            format!(
                "{}; the largest live worker advertises {:.1} GiB, so they wait",
                what.join(", "),
                gib(largest.unwrap_or(0))
            )
        });
        if report.is_some() && report != self.waiting_for_memory {
            self.log(
                now,
                format!(
                    "no live worker can take ready tasks: {}",
                    report.clone().unwrap_or_default()
                ),
            );
        }
        self.waiting_for_memory = report;
    }

    /// Instructions workers say they executed before their segments to rebuild start states,
    /// over accepted segment proofs; each report is capped at its segment's start (no worker
    /// can need more), so one report cannot skew the figure.
    fn reexecuted_instructions(&self) -> u64 {
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
    fn elapsed_seconds(&self, now: Instant) -> f64 {
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

    /// The task's kind, as metrics label it (`segment`, `leaf`, … `wrap`).
    pub fn task_kind(&self, task: TaskId) -> &'static str {
        match self.graph.kind(task) {
            Ok(TaskKind::Aggregate { layer, .. }) => plait_core::cost::node_kind(layer),
            _ => "segment",
        }
    }

    /// How many ready tasks of each kind the job has.
    pub fn ready_by_kind(&mut self) -> std::collections::BTreeMap<&'static str, i64> {
        if !self.is_running() {
            return Default::default();
        }
        let summary = self.ready_summary();
        summary
            .by_kind
            .iter()
            .map(|(&k, &n)| (k, n as i64))
            .collect()
    }

    /// The ready tasks in brief, brought up to date with the graph's changes since last asked.
    fn ready_summary(&mut self) -> &ReadySummary {
        let logged = self.graph.take_ready_changes();
        let changes: Vec<(TaskId, bool)> = match self.ready_summary {
            Some(_) => logged
                .into_iter()
                .map(|change| match change {
                    ReadyChange::Ready(task) => (task, true),
                    ReadyChange::NotReady(task) => (task, false),
                })
                .collect(),
            // The graph's log starts with the first call: begin from the ready set itself.
            None => self.graph.ready_tasks().map(|task| (task, true)).collect(),
        };
        let mut summary = self.ready_summary.take().unwrap_or_default();
        for (task, ready) in changes {
            // Counts that reach 0 leave their map at once: a claim costs no sweep of them.
            fn step<K: Ord>(counts: &mut std::collections::BTreeMap<K, usize>, key: K, up: bool) {
                use std::collections::btree_map::Entry;
                match (counts.entry(key), up) {
                    (Entry::Occupied(mut n), true) => *n.get_mut() += 1,
                    (Entry::Vacant(n), true) => {
                        n.insert(1);
                    }
                    (Entry::Occupied(n), false) if *n.get() <= 1 => {
                        n.remove();
                    }
                    (Entry::Occupied(mut n), false) => *n.get_mut() -= 1,
                    (Entry::Vacant(_), false) => {}
                }
            }
            step(&mut summary.by_kind, self.task_kind(task), ready);
            match self.graph.kind(task) {
                Ok(TaskKind::ProveSegment { segment }) => {
                    let estimate = self.segments[segment as usize].memory_estimate_bytes;
                    step(&mut summary.segment_estimates, estimate, ready);
                }
                Ok(TaskKind::Aggregate { layer, .. }) => {
                    match summary.layers.iter().position(|(l, _)| *l == layer) {
                        Some(i) if ready => summary.layers[i].1 += 1,
                        Some(i) => {
                            summary.layers[i].1 -= 1;
                            if summary.layers[i].1 == 0 {
                                summary.layers.swap_remove(i);
                            }
                        }
                        None if ready => summary.layers.push((layer, 1)),
                        None => {}
                    }
                }
                Err(_) => {}
            }
        }
        self.ready_summary.insert(summary)
    }

    /// Whether some ready task needs no more than `capacity` bytes ([`Self::memory_need`]),
    /// from the summary: the smallest segment estimate and each ready layer's need.
    fn fits_a_ready_task(
        &mut self,
        capacity: u64,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
    ) -> bool {
        let params = self.params;
        let summary = self.ready_summary();
        let smallest_segment = summary.segment_estimates.keys().next();
        smallest_segment
            .map(|&estimate| estimate.max(need(&params, None)))
            .into_iter()
            .chain(
                summary
                    .layers
                    .iter()
                    .map(|&(layer, _)| need(&params, Some(layer))),
            )
            .any(|n| n <= capacity)
    }

    fn phase(&self, task: TaskId) -> String {
        match self.graph.kind(task) {
            Ok(TaskKind::Aggregate { layer, .. }) => layer.to_string(),
            _ => "segments".into(),
        }
    }

    /// Memory a task needs (0: unknown), from what `need` says for its phase (peaks workers
    /// measured, or the backend's figure for a node); for a segment, at least the backend's
    /// estimate of it.
    fn memory_need(
        &self,
        task: TaskId,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
    ) -> u64 {
        match self.graph.kind(task) {
            Ok(TaskKind::ProveSegment { segment }) => self.segments[segment as usize]
                .memory_estimate_bytes
                .max(need(&self.params, None)),
            Ok(TaskKind::Aggregate { layer, .. }) => need(&self.params, Some(layer)),
            Err(_) => 0,
        }
    }

    /// What the tasks leased now need together (see [`Self::memory_need`]).
    pub fn leased_memory_need(
        &self,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
    ) -> u64 {
        self.leases
            .keys()
            .map(|&task| self.memory_need(task, need))
            .sum()
    }

    /// Leases the first ready task that fits the worker and `memory_left` (the machine's
    /// memory not leased yet, for workers sharing one), if any. A task the worker failed
    /// last is left to another worker while `another_fits` its memory need. The lease lasts
    /// `lease` past each heartbeat, and `time_limit(work)` at most.
    #[allow(clippy::too_many_arguments)]
    pub fn lease_next(
        &mut self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
        memory_left: u64,
        lease: Duration,
        now: Instant,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
        leave_to_others: &dyn Fn(&str, u64) -> bool,
        time_limit: &dyn Fn(&ProvingParams, &Work) -> Duration,
    ) -> Option<TaskAssignment> {
        if !self.is_running() {
            return None;
        }
        let capacity = match worker.gpu() {
            Some(gpu) => gpu.memory_bytes,
            None => worker.memory_bytes.min(memory_left),
        };
        if !self.fits_a_ready_task(capacity, need) {
            return None;
        }
        let task = self.graph.next_ready(|t| {
            if self.not_before.get(&t).is_some_and(|at| *at > now) {
                return false;
            }
            let need = self.memory_need(t, need);
            // A GPU worker proves in its device memory: that is what must hold the task (its
            // host memory holds little more than the inputs).
            let fits = match worker.gpu() {
                Some(gpu) => need <= gpu.memory_bytes,
                None => need <= worker.memory_bytes && need <= memory_left,
            };
            fits && !self
                .failed_by
                .get(&t)
                .is_some_and(|failed_by| leave_to_others(failed_by, need))
        })?;
        self.not_before.remove(&task);
        let queued = self
            .ready_since
            .remove(&task)
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.graph.start(task).expect("a ready task can start");
        let attempt = {
            let n = self.attempts.entry(task).or_insert(0);
            *n += 1;
            *n
        };
        self.outbox.push(StoreOp::TaskCounters {
            job: self.id,
            task,
            attempts: attempt,
            failures: self.failures.get(&task).copied().unwrap_or(0),
        });
        let work = match self.graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => {
                let segment = self.segments[segment as usize].clone();
                Work::ProveSegment {
                    is_last: self.is_last_segment(segment.index),
                    // A segment with a checkpoint needs no input: the checkpoint holds what is
                    // left of it.
                    input: segment.checkpoint.is_none().then(|| self.input.clone()),
                    segment,
                }
            }
            TaskKind::Aggregate { layer, .. } => Work::Aggregate {
                layer,
                children: self.graph.children(task).expect("task exists").to_vec(),
            },
        };
        let secret = LeaseSecret::random();
        let lease_secret = secret.hex();
        let limit = time_limit(&self.params, &work).max(lease);
        self.insert_lease(
            task,
            Lease {
                attempt,
                secret,
                worker: worker_id.to_string(),
                worker_memory: worker.memory_bytes,
                worker_device_memory: worker.gpu().map_or(0, |g| g.memory_bytes),
                started: now,
                expires: now + lease,
                deadline: now + limit,
                queued,
            },
        );
        let phase = self.phase(task);
        self.log_attempt(
            now,
            task,
            attempt,
            worker_id,
            format!("{task} ({phase}) attempt {attempt} leased to {worker_id}"),
        );
        Some(TaskAssignment {
            job_id: self.id,
            task_id: task,
            attempt,
            lease_secret,
            params: self.params,
            program_sha256: self.program.digest.clone(),
            lease_seconds: lease.as_secs(),
            time_limit_seconds: limit.as_secs(),
            work,
        })
    }

    /// The task's current lease, if `attempt` is its attempt and `secret` its secret.
    fn current_lease(
        &self,
        task: TaskId,
        attempt: u32,
        secret: &str,
    ) -> Result<&Lease, LeaseError> {
        self.graph.kind(task).map_err(|_| LeaseError::UnknownTask)?;
        match self.leases.get(&task) {
            Some(lease) if lease.attempt == attempt => {
                if lease.secret.matches(secret) {
                    Ok(lease)
                } else {
                    Err(LeaseError::NotHolder)
                }
            }
            _ => Err(LeaseError::Stale),
        }
    }

    /// The task leased under `secret`, if a current lease of this job has it.
    pub fn leased_task(&self, secret: &str) -> Option<TaskId> {
        let secret = LeaseSecret::parse(secret)?;
        let task = *self.by_secret.get(&secret)?;
        // Found by hash; confirmed in constant time.
        self.leases
            .get(&task)
            .filter(|lease| lease.secret.is(&secret))
            .map(|_| task)
    }

    /// Whether the holder of `secret` may download the accepted proof of `child`: it leases
    /// `child`'s parent.
    pub fn may_read_child_proof(&self, secret: &str, child: TaskId) -> bool {
        self.leased_task(secret).is_some_and(|task| {
            self.graph
                .children(task)
                .is_ok_and(|children| children.contains(&child))
        })
    }

    /// Whether the holder of `secret` may download checkpoint `sha256`: it leases the segment
    /// that starts from it.
    pub fn may_read_checkpoint(&self, secret: &str, sha256: &str) -> bool {
        self.leased_task(secret).is_some_and(|task| {
            matches!(self.graph.kind(task), Ok(TaskKind::ProveSegment { segment })
                if self.segments[segment as usize].checkpoint.as_deref() == Some(sha256))
        })
    }

    /// How many of this job's leases `worker` holds.
    pub fn leases_held_by(&self, worker: &str) -> usize {
        self.held.get(worker).copied().unwrap_or(0)
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

    fn tree_node(&self, task: TaskId) -> Option<plait_api::TreeNode> {
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

    /// Each task leased now, with its holder.
    pub fn leased_tasks(&self) -> impl Iterator<Item = (&str, TaskId)> + '_ {
        self.leases
            .iter()
            .map(|(task, lease)| (lease.worker.as_str(), *task))
    }

    /// Each worker holding leases of this job, and how many.
    pub fn lease_holders(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.held.iter().map(|(worker, &n)| (worker.as_str(), n))
    }

    fn insert_lease(&mut self, task: TaskId, lease: Lease) {
        *self.held.entry(lease.worker.clone()).or_insert(0) += 1;
        self.by_secret.insert(lease.secret.0, task);
        if let Some(replaced) = self.leases.insert(task, lease) {
            self.forget_lease(&replaced);
        }
    }

    fn remove_lease(&mut self, task: TaskId) -> Option<Lease> {
        let lease = self.leases.remove(&task)?;
        self.forget_lease(&lease);
        Some(lease)
    }

    fn clear_leases(&mut self) {
        self.leases.clear();
        self.held.clear();
        self.by_secret.clear();
    }

    /// Drops a lease that left `leases` from the indexes over it.
    fn forget_lease(&mut self, lease: &Lease) {
        self.by_secret.remove(&lease.secret.0);
        self.release_held(&lease.worker);
    }

    fn release_held(&mut self, worker: &str) {
        if let Some(n) = self.held.get_mut(worker) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(worker);
            }
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
        secret: &str,
        lease: Duration,
        now: Instant,
    ) -> Result<(), LeaseError> {
        self.current_lease(task, attempt, secret)?;
        let held = self.leases.get_mut(&task).expect("lease checked");
        held.expires = (now + lease).min(held.deadline);
        Ok(())
    }

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
    fn target_of(&self, task: TaskId) -> CheckTarget {
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
    fn is_last_segment(&self, index: u32) -> bool {
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
        let timing = TaskTiming {
            task,
            phase: self.phase(task),
            worker: lease.worker.clone(),
            attempt,
            queued_seconds: lease.queued.as_secs_f64(),
            wall_seconds,
            proof_bytes,
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
        self.timings.push(timing.clone());
        Ok((self.graph.is_complete(), timing))
    }

    /// Records a failed or rejected attempt and puts the task back. With a retry policy, the
    /// attempt counts against the task: it waits out a backoff that doubles with each failure,
    /// and the job fails once the task has failed `max_attempts` times.
    pub fn fail_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        secret: &str,
        reason: &str,
        policy: Option<RetryPolicy>,
        now: Instant,
    ) -> Result<(), LeaseError> {
        self.current_lease(task, attempt, secret)?;
        self.fail_lease(task, reason, policy.map(|p| (p, Failure::Reported)), now);
        Ok(())
    }

    /// Ends the task's current lease as failed (see [`Self::fail_attempt`]).
    fn fail_lease(
        &mut self,
        task: TaskId,
        reason: &str,
        policy: Option<(RetryPolicy, Failure)>,
        now: Instant,
    ) {
        let Some(lease) = self.remove_lease(task) else {
            return;
        };
        let (attempt, worker) = (lease.attempt, lease.worker);
        self.failed_by.insert(task, worker.clone());
        self.last_failure.insert(task, reason.to_string());
        self.graph.retry(task).expect("a leased task is running");
        self.ready_since.insert(task, now);
        self.log_attempt(
            now,
            task,
            attempt,
            &worker,
            format!("{task} attempt {attempt} from {worker} failed: {reason}"),
        );
        let Some((policy, failure)) = policy else {
            return;
        };
        if failure == Failure::Reported {
            let failures = {
                let n = self.failures.entry(task).or_insert(0);
                *n += 1;
                *n
            };
            self.outbox.push(StoreOp::TaskCounters {
                job: self.id,
                task,
                attempts: self.attempts.get(&task).copied().unwrap_or(0),
                failures,
            });
        }
        let retries = self.failures.get(&task).copied().unwrap_or(0)
            + self.lost.get(&task).map_or(0, |(n, _)| *n);
        let ready_at = now + policy.backoff_after(retries);
        self.not_before.insert(task, ready_at);
        self.ready_since.insert(task, ready_at);
        if !policy.counts {
            return;
        }
        // Only failures of workers with a record count toward failing the job.
        let (counted, workers) = match failure {
            Failure::Reported => self.failed_on.entry(task).or_default(),
            Failure::Lost => self.lost.entry(task).or_default(),
        };
        *counted += 1;
        workers.insert(worker.clone());
        let (failures, failed_on) = (*counted, workers.len());
        let (limit, what) = match failure {
            Failure::Reported => (policy.max_attempts, "failed"),
            Failure::Lost => (policy.max_lost_leases, "lost its lease"),
        };
        let enough_workers = limit.min(policy.live_workers.max(1) as u32) as usize;
        if failures >= limit && failed_on >= enough_workers && self.is_running() {
            let message = format!(
                "{task} {what} {failures} times on {failed_on} workers; last reason: {reason}"
            );
            self.log(now, format!("job failed: {message}"));
            self.set_status(JobStatus::Failed(message));
        }
    }

    /// Requeues every task whose lease ran out; a lost lease counts toward failing its task
    /// if its worker is `trusted`. Returns their kinds.
    pub fn expire_leases(
        &mut self,
        policy: RetryPolicy,
        trusted: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<&'static str> {
        let expired: Vec<(TaskId, &'static str, bool)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(t, l)| {
                let why = if l.expires >= l.deadline {
                    "lease reached its time limit (heartbeats do not extend a lease past it)"
                } else {
                    "lease expired (no heartbeat)"
                };
                (*t, why, trusted(&l.worker))
            })
            .collect();
        let kinds = expired.iter().map(|(t, ..)| self.task_kind(*t)).collect();
        for &(task, why, counts) in &expired {
            let policy = RetryPolicy { counts, ..policy };
            self.fail_lease(task, why, Some((policy, Failure::Lost)), now);
        }
        kinds
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

/// A worker's measurements, bounded by what the coordinator knows: time spent within the
/// lease is at most the lease's wall time, and the peak memory at most what the worker
/// advertised (0, so never learned from, when it advertised none), its device peak at most its
/// GPU's memory (0 on a CPU). Nothing a worker reports can then stall scheduling or skew the
/// measured figures beyond its own lease.
fn bounded_meta(
    meta: TaskMeta,
    wall_seconds: f64,
    worker_memory: u64,
    worker_device_memory: u64,
) -> TaskMeta {
    let within = |x: f64| {
        if x.is_finite() {
            x.clamp(0.0, wall_seconds)
        } else {
            0.0
        }
    };
    TaskMeta {
        reexecution_seconds: within(meta.reexecution_seconds),
        proving_seconds: within(meta.proving_seconds),
        process_peak_rss_bytes: meta.process_peak_rss_bytes.min(worker_memory),
        device_peak_bytes: meta.device_peak_bytes.min(worker_device_memory),
        process_cpu_seconds: if meta.process_cpu_seconds.is_finite() {
            meta.process_cpu_seconds.max(0.0)
        } else {
            0.0
        },
        ..meta
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use plait_api::ClaimTaskRequest;
    use plait_core::{AggLayer, JobId, ProgramInput, SegmentSpec};
    use plait_prover::{ProgramImage, ProvingParams};

    use super::{Job, RetryPolicy};
    use crate::store::JobOwner;

    fn worker(memory_bytes: u64) -> ClaimTaskRequest {
        ClaimTaskRequest {
            cores: 1,
            memory_bytes,
            backend: "dev".into(),
            backend_version: "0".into(),
            plait_version: String::new(),
            key_sets: Vec::new(),
            gpus: 0,
            device_profile: None,
            device: None,
            slots: 1,
        }
    }

    /// Whether a ready task fits `capacity`, by walking every ready task (what the summary
    /// saves a claim from doing).
    fn fits_by_walk(
        job: &Job,
        capacity: u64,
        need: &dyn Fn(&ProvingParams, Option<AggLayer>) -> u64,
    ) -> bool {
        job.graph
            .ready_tasks()
            .any(|task| job.memory_need(task, need) <= capacity)
    }

    /// The brief of the ready tasks a claim reads instead of walking them agrees with a walk
    /// after every lease, failure, acceptance and new segment.
    #[test]
    fn the_ready_summary_follows_every_change() {
        let now = Instant::now();
        let mut job = Job::new(
            JobId(1),
            JobOwner::default(),
            ProgramImage::new(b"program".to_vec()),
            ProgramInput::default(),
            ProvingParams::default(),
            now,
            0,
        )
        .unwrap();
        // Segments need 10..=80 bytes by their estimates; nodes of the leaf layer 50, others 5.
        let need = |_: &ProvingParams, layer: Option<AggLayer>| match layer {
            None => 0,
            Some(AggLayer::Leaf) => 50,
            Some(_) => 5,
        };
        let estimates = [40u64, 80, 10, 60, 30, 70, 20, 50, 90, 10, 40, 60];
        let policy = RetryPolicy {
            max_attempts: 100,
            max_lost_leases: 100,
            live_workers: 1,
            counts: true,
            backoff: Duration::from_secs(1),
        };
        let check = |job: &mut Job| {
            for capacity in [0, 5, 9, 10, 25, 50, 79, 1000] {
                assert_eq!(
                    job.fits_a_ready_task(capacity, &need),
                    fits_by_walk(job, capacity, &need),
                    "capacity {capacity}"
                );
            }
            let mut walked = std::collections::BTreeMap::new();
            for task in job.graph.ready_tasks().collect::<Vec<_>>() {
                *walked.entry(job.task_kind(task)).or_insert(0i64) += 1;
            }
            assert_eq!(job.ready_by_kind(), walked);
        };
        let mut leased = Vec::new();
        for (index, &memory) in estimates.iter().enumerate() {
            let spec = SegmentSpec {
                index: index as u32,
                instret_start: index as u64 * 8,
                num_insns: 8,
                memory_estimate_bytes: memory,
                backend_hint: serde_json::Value::Null,
                checkpoint: None,
            };
            let last = index + 1 == estimates.len();
            job.add_segment(spec, last.then(Vec::new), now).unwrap();
            check(&mut job);
            // Lease to workers of growing memory as segments arrive; fail every third lease.
            let lease = |job: &mut Job, memory: u64| {
                job.lease_next(
                    "w",
                    &worker(memory),
                    u64::MAX,
                    Duration::from_secs(60),
                    now,
                    &need,
                    &|_, _| false,
                    &|_, _| Duration::from_secs(60),
                )
            };
            if let Some(a) = lease(&mut job, 10 * index as u64) {
                leased.push(a);
            }
            check(&mut job);
            if index % 3 == 2 {
                let a = leased.remove(0);
                job.fail_attempt(
                    a.task_id,
                    a.attempt,
                    &a.lease_secret,
                    "test",
                    Some(policy),
                    now,
                )
                .unwrap();
                check(&mut job);
            }
        }
        // Prove everything: accept each lease, lease again, until the job is done.
        let mut later = now;
        loop {
            later += Duration::from_secs(3600); // past every backoff
            for a in std::mem::take(&mut leased) {
                job.accept(
                    a.task_id,
                    a.attempt,
                    &a.lease_secret,
                    (String::new(), 0),
                    Default::default(),
                    later,
                )
                .unwrap();
                check(&mut job);
            }
            while let Some(a) = job.lease_next(
                "w",
                &worker(1000),
                u64::MAX,
                Duration::from_secs(60),
                later,
                &need,
                &|_, _| false,
                &|_, _| Duration::from_secs(60),
            ) {
                leased.push(a);
                check(&mut job);
            }
            if leased.is_empty() {
                break;
            }
        }
        assert!(job.graph.is_complete(), "every task was proven");
    }
}
