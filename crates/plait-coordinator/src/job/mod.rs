//! One job's state: its segments (growing while the program executes), task graph, leases and
//! accepted proofs. Plain data with synchronous methods; the coordinator holds it under a lock
//! and does all slow work (proof checks, finalization) outside it. This module holds the state
//! and its store records; the methods are grouped by concern: [`execution`] (segments as they
//! are cut), [`placement`] (which ready tasks a worker can hold), [`leases`], [`results`]
//! (checking targets, accepting proofs, repair) and [`views`] (progress, summary, tree).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use plait_api::TaskMeta;
use plait_core::{
    cost::{DeviceProfile, TraceCostFit},
    planner::{Measured, Prediction},
    AggLayer, JobId, ProgramInput, SegmentPlan, SegmentSpec, TaskGraph, TaskId,
};
use plait_prover::{ProgramImage, ProvingParams};
use serde::{Deserialize, Serialize};

use crate::{
    job_status::JobStatus,
    store::{JobOwner, JobRecord, StoreOp, StoredJob},
};

mod execution;
mod leases;
mod placement;
mod results;
mod views;

/// A change its owner asks of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Stop handing out its tasks (results in flight are still accepted).
    Pause,
    /// Hand out a paused job's tasks again.
    Resume,
    /// End the job; results in flight are ignored.
    Cancel,
    /// Restart a failed job, keeping what was accepted.
    Retry,
}

impl JobAction {
    /// The action's name in the API: `pause`, `resume`, `cancel` or `retry`.
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
    /// What happened.
    pub message: String,
}

/// How long one accepted task took, and where.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskTiming {
    /// The task.
    pub task: TaskId,
    /// `segments` or the layer name.
    pub phase: String,
    /// The worker whose result was accepted.
    pub worker: String,
    /// The attempt that was accepted.
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
    /// The memory the operator's profiles predicted the task needs when it was leased (see
    /// [`Job::memory_floor`]; 0: none could).
    #[serde(default)]
    pub predicted_peak_bytes: u64,
    /// The memory the task was placed by when leased: the prediction, or more where workers
    /// have measured more (0: unknown, or a GPU worker's task).
    #[serde(default)]
    pub placed_by_bytes: u64,
    /// The seconds the operator's profile predicts the task takes, where the job has exactly
    /// one (see [`Job::predicted_seconds`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_seconds: Option<f64>,
    /// What the worker measured (bounded by what it advertised).
    pub meta: TaskMeta,
}

/// What a job's status shows, taken in one read and without copying its final proof.
#[derive(Clone, Debug)]
pub struct JobSummary {
    /// `running`, `paused`, `cancelled`, `succeeded` or `failed`.
    pub state: &'static str,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Its program's SHA-256.
    pub program_sha256: String,
    /// The segment height it is proven at.
    pub segment_height: u32,
    /// How far it has come.
    pub progress: JobProgress,
    /// The planner's prediction at submission, if there was one.
    pub prediction: Option<Prediction>,
    /// The same figures measured, once it succeeded.
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
    /// (phase, done, total): `segments`, then each aggregation layer.
    pub phases: Vec<(String, usize, usize)>,
    /// Since submission; for a job that ended, until it ended.
    pub elapsed_seconds: f64,
    /// Whether the job is over.
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
    /// The memory the operator's profiles predict the task needs (see [`Job::memory_floor`]).
    predicted: u64,
    /// The memory need the task was placed by (0: none known): a peak well above it is
    /// logged.
    placed_by: u64,
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
    /// The operator's calibrated profiles' fits of segment memory to trace size, for this
    /// job's VM config (see [`Job::segment_floor`]); set by the coordinator, not stored.
    pub segment_fits: Vec<TraceCostFit>,
    /// The same profiles where they can cost a node by its children's proof bytes (see
    /// [`Job::node_floor`]); set by the coordinator, not stored.
    pub node_profiles: Vec<DeviceProfile>,
    graph: TaskGraph,
    /// The SHA-256 of each accepted task's proof: the proofs themselves live in the blob
    /// store, not in memory.
    proofs: HashMap<TaskId, String>,
    /// The size of each accepted task's proof (what a leaf over it costs follows it).
    proof_sizes: HashMap<TaskId, u64>,
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
    /// Ready aggregation nodes by layer and floor ([`Job::node_floor`]), and how many.
    nodes: std::collections::BTreeMap<(AggLayer, u64), usize>,
    /// The floor each ready node was counted with.
    node_floors: HashMap<TaskId, u64>,
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
            segment_fits: Vec::new(),
            node_profiles: Vec::new(),
            graph: TaskGraph::open(params.tree)?,
            proofs: HashMap::new(),
            proof_sizes: HashMap::new(),
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
        // Timings stored before proof sizes were recorded say 0: unknown.
        let proof_sizes = timings
            .iter()
            .filter(|t: &&TaskTiming| t.proof_bytes > 0)
            .map(|t| (t.task, t.proof_bytes))
            .collect();
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
            segment_fits: Vec::new(),
            node_profiles: Vec::new(),
            graph,
            proofs,
            proof_sizes,
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
mod tests;
