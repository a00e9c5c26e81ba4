//! The types that cross the wire between a coordinator and its workers. See `docs/api.md`.
//!
//! Every request and response body here is JSON, except proof and program bodies, which are
//! raw bytes (`application/octet-stream`). Routes live under [`API_PREFIX`]; a breaking change
//! bumps it.

#![warn(missing_docs)]

use plait_core::{
    cost::DeviceProfile,
    planner::{Goal, Measured, Prediction},
    AggLayer, Device, DeviceKind, JobId, ProgramInput, SegmentSpec, TaskId,
};
use plait_prover::{KeySetId, ProofMeta, ProvingParams, Verdict};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The prefix every route lives under; a breaking change bumps it.
pub const API_PREFIX: &str = "/v1";

/// HTTP header carrying a result's [`TaskMeta`] as JSON.
pub const TASK_META_HEADER: &str = "plait-task-meta";

/// HTTP header carrying a lease's secret ([`TaskAssignment::lease_secret`]): heartbeats,
/// results, failures and the downloads a task needs (its checkpoint, its children's proofs)
/// must present it.
pub const LEASE_SECRET_HEADER: &str = "plait-lease-secret";

/// Bounds on what a worker sends: a hostile worker must not be able to grow the coordinator's
/// memory, store or logs. Larger inputs get `400 bad-request` (or `413` for bodies).
pub mod limits {
    /// A worker's name or id: ASCII letters, digits and `-_.:@`.
    pub const WORKER_ID_BYTES: usize = 64;
    /// A ban's reason, as an operator gives it.
    pub const BAN_REASON_BYTES: usize = 1024;
    /// Leases a worker may hold at once, whatever it advertises.
    pub const MAX_SLOTS: u32 = 64;
    /// Backend name and version strings.
    pub const NAME_BYTES: usize = 128;
    /// A failure reason (workers cut theirs to this length).
    pub const FAILURE_REASON_BYTES: usize = 4096;
    /// Key sets (VM config, segment height) a worker says it holds.
    pub const KEY_SETS: usize = 64;
    /// A claim's body (with its device profile).
    pub const CLAIM_BODY_BYTES: usize = 256 << 10;
    /// A failure report's body.
    pub const FAILURE_BODY_BYTES: usize = 16 << 10;
    /// A registration's body (a name).
    pub const REGISTER_BODY_BYTES: usize = 4 << 10;
    /// The most memory a worker may advertise (host or device): 64 TiB, beyond any one machine
    /// today, so a worker cannot look larger than every real one by a wide margin.
    pub const MAX_MEMORY_BYTES: u64 = plait_core::Device::MAX_MEMORY_BYTES;
}

/// `reason` cut to [`limits::FAILURE_REASON_BYTES`] (at a character boundary).
pub fn bounded_reason(reason: &str) -> &str {
    let mut end = reason.len().min(limits::FAILURE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Whether `name` may name a worker: 1 to [`limits::WORKER_ID_BYTES`] ASCII letters, digits
/// and `-_.:@` (no spaces or line breaks, so it cannot forge a line of the event log).
pub fn check_worker_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > limits::WORKER_ID_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
    {
        return Err(format!(
            "{field} must be 1 to {} characters of ASCII letters, digits and -_.:@",
            limits::WORKER_ID_BYTES
        ));
    }
    Ok(())
}

/// `POST /v1/worker/register`: a worker joins the pool. With the pool's worker token it gets a
/// new identity and a credential of its own for every later call; with a credential the
/// operator issued it learns its id (and gets no new credential).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegisterWorkerRequest {
    /// What the worker calls itself; the coordinator makes the id unique (a registered
    /// worker's id is this name and a random suffix).
    pub name: String,
}

/// The coordinator's answer to a registration.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegisterWorkerResponse {
    /// The id the coordinator knows this worker by: in its event logs, bans and counts.
    pub worker_id: String,
    /// The worker's own credential (256 bits, hex), to present as its bearer token from now
    /// on; `None` when the worker already presented one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A worker asks for work. The coordinator answers with a task that fits, or none after a
/// short wait (long poll). Who asks is known from the credential, not from the body.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClaimTaskRequest {
    /// CPU cores the worker proves with.
    pub cores: u32,
    /// The worker's memory (1 byte to [`limits::MAX_MEMORY_BYTES`]): it is given only tasks
    /// that fit it.
    pub memory_bytes: u64,
    /// Backend name and zkVM version the worker proves with; tasks go only to matching workers.
    pub backend: String,
    /// The zkVM version of that backend.
    pub backend_version: String,
    /// The worker's Plait version.
    #[serde(default)]
    pub plait_version: String,
    /// Key sets (VM config and segment height) the worker already holds; it is offered such
    /// tasks first (other tasks cost it a keygen).
    #[serde(default)]
    pub key_sets: Vec<KeySetId>,
    /// GPUs the worker can prove with (none for the CPU backend).
    #[serde(default)]
    pub gpus: u32,
    /// The worker's device profile (`plait calibrate`), if it has one: the coordinator's
    /// planner predicts jobs on the profiles of the workers asking for work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_profile: Option<DeviceProfile>,
    /// The device the worker proves on. A GPU worker is given only tasks whose device memory
    /// need fits its GPU's memory; without it, a worker proves on its CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// Tasks the worker proves at once: the coordinator grants it at most this many leases
    /// (1 to [`limits::MAX_SLOTS`]).
    #[serde(default = "one_slot")]
    pub slots: u32,
}

fn one_slot() -> u32 {
    1
}

impl ClaimTaskRequest {
    /// Checks the request against [`limits`]; says which field is out of bounds.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.slots == 0 || self.slots > limits::MAX_SLOTS {
            return Err(format!("slots must be 1 to {}", limits::MAX_SLOTS));
        }
        if self.memory_bytes == 0 || self.memory_bytes > limits::MAX_MEMORY_BYTES {
            return Err(format!(
                "memory-bytes must state the worker's memory: 1 byte to {} TiB",
                limits::MAX_MEMORY_BYTES >> 40
            ));
        }
        for (field, value) in [
            ("backend", &self.backend),
            ("backend-version", &self.backend_version),
            ("plait-version", &self.plait_version),
        ] {
            if value.len() > limits::NAME_BYTES {
                return Err(format!(
                    "{field} is longer than {} bytes",
                    limits::NAME_BYTES
                ));
            }
        }
        if self.key_sets.len() > limits::KEY_SETS {
            return Err(format!(
                "key-sets lists more than {} key sets",
                limits::KEY_SETS
            ));
        }
        if let Some(device) = &self.device {
            device.check_bounds()?;
        }
        Ok(())
    }

    /// The GPU this worker proves on, if it says it proves on one.
    pub fn gpu(&self) -> Option<&Device> {
        self.device.as_ref().filter(|d| d.kind == DeviceKind::Gpu)
    }
}

/// The coordinator's answer to a claim.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClaimTaskResponse {
    /// The task leased to the worker, or none (nothing fits it now).
    pub task: Option<TaskAssignment>,
}

/// One task, self-contained: with the program (fetched by digest) and the children's proofs
/// (fetched by task id) a worker needs nothing else.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TaskAssignment {
    /// The job the task belongs to.
    pub job_id: JobId,
    /// The task, within its job.
    pub task_id: TaskId,
    /// Attempt number of this lease; results and heartbeats must quote it.
    pub attempt: u32,
    /// A random secret (256 bits, hex) only the lease's holder knows: every call about the
    /// lease presents it in [`LEASE_SECRET_HEADER`], so no one else can act on it.
    pub lease_secret: String,
    /// The job's proving parameters (VM config, segment height, tree shape).
    pub params: ProvingParams,
    /// The program's SHA-256, to fetch it by.
    pub program_sha256: String,
    /// Seconds the lease lasts without a heartbeat.
    pub lease_seconds: u64,
    /// Seconds the lease lasts at most, heartbeats or not (from the worker's device profile's
    /// prediction for this task, or the coordinator's ceiling).
    pub time_limit_seconds: u64,
    /// What to prove.
    pub work: Work,
}

/// What a task asks a worker to prove.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Work {
    /// Prove one segment, from the checkpoint `segment.checkpoint` names (fetched by job and
    /// SHA-256), or, for a segment without one, by re-executing the program on `input`.
    ProveSegment {
        /// The segment (its plan entry: where it starts and how long it runs).
        segment: SegmentSpec,
        /// Whether it is the execution's last segment (its proof also shows the public values).
        is_last: bool,
        /// The program's input, for a segment without a checkpoint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<ProgramInput>,
    },
    /// Join the proofs of `children` into one node proof of `layer`.
    Aggregate {
        /// The node's layer.
        layer: AggLayer,
        /// Tasks whose accepted proofs are the children, in execution order.
        children: Vec<TaskId>,
    },
}

/// The coordinator's answer to a submitted result.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubmitResultResponse {
    /// Accepted, or rejected with the reason.
    pub verdict: Verdict,
}

/// A worker gives up on a task (its proving failed).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReportFailureRequest {
    /// Why proving failed, in words.
    pub reason: String,
}

/// Answer to a program upload (`POST /v1/programs`, the ELF as body).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct UploadProgramResponse {
    /// The SHA-256 the program is stored under.
    pub program_sha256: String,
}

/// `GET /v1/programs`: one of the client's programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProgramRecord {
    /// The program's SHA-256.
    pub program_sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// `POST /v1/jobs`: prove an uploaded program on an input.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubmitJobRequest {
    /// The uploaded program's SHA-256.
    pub program_sha256: String,
    /// The guest's input items.
    pub input: ProgramInput,
    /// Proving parameters; `segment-height` is ignored with `auto-segment-height`.
    pub params: ProvingParams,
    /// `latency`, `cost` or `deadline=SECONDS`: the coordinator chooses the segment height for
    /// this goal from its device profiles, and `params.segment-height` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_segment_height: Option<Goal>,
    /// Within its client's share of the pool, a job of higher priority is served first
    /// (then the older). Default 0.
    #[serde(default)]
    pub priority: i32,
}

/// The coordinator's answer to a submission.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SubmitJobResponse {
    /// The new job's number.
    pub job_id: JobId,
    /// Segments cut when the answer was sent: the job is stored before its program executes,
    /// so this is usually 0 (see the job's status for execution progress).
    pub segments: usize,
    /// The segment height the job is proven at (the planner's choice with `auto-segment-height`).
    #[serde(default)]
    pub segment_height: u32,
}

/// `GET /v1/jobs/{job}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobStatusResponse {
    /// The job.
    pub job_id: JobId,
    /// Its program's SHA-256.
    #[serde(default)]
    pub program_sha256: String,
    /// `running`, `paused`, `cancelled`, `succeeded` or `failed`.
    pub state: String,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// (phase, done, total): `segments`, then each aggregation layer.
    pub phases: Vec<(String, usize, usize)>,
    /// Since submission; for a job that ended, until it ended.
    pub elapsed_seconds: f64,
    /// The segment height it is proven at.
    #[serde(default)]
    pub segment_height: u32,
    /// The planner's prediction at submission (when the coordinator has device profiles).
    #[serde(default)]
    pub prediction: Option<Prediction>,
    /// The same figures measured, once the job succeeded.
    #[serde(default)]
    pub measured: Option<Measured>,
    /// Whether the program is still executing: segments (and the phases' totals) still grow.
    #[serde(default)]
    pub executing: bool,
    /// Instructions the program executed so far (all segments once execution has ended).
    #[serde(default)]
    pub instructions: u64,
    /// Whether the job failed because its program failed to execute (a bad program or input,
    /// as opposed to a proving failure).
    #[serde(default)]
    pub execution_failed: bool,
    /// Instructions workers executed before their segments' starts to rebuild start states,
    /// summed over accepted segment proofs (0 when every segment started from a checkpoint).
    #[serde(default)]
    pub reexecuted_instructions: u64,
    /// Ready tasks that no live worker has the memory for: which, what they need (and where
    /// that figure comes from), and the most any live worker advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for_memory: Option<String>,
}

/// One entry of `GET /v1/jobs/{job}/events`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobEventBody {
    /// Seconds since the job's submission.
    pub at_seconds: f64,
    /// What happened.
    pub message: String,
}

/// The body of every non-2xx answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `unknown-task`, `stale-lease`.
    pub code: String,
    /// What went wrong, in words.
    pub message: String,
}

/// A memory need the coordinator learned from workers' measured peaks, as
/// `GET /v1/admin/memory-needs` lists it: tasks of this phase and key set go only to workers
/// with at least this much memory.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MemoryNeedRecord {
    /// The VM config and segment height.
    pub key_set: KeySetId,
    /// `segments` or an aggregation layer (`leaf`, `internal-for-leaf`, ...), `:` and a
    /// program's SHA-256: needs are learned per program (a zkML segment needs twice a fib
    /// one of its height, and the nodes above it verify proofs twice as large).
    pub phase: String,
    /// What a task of this phase needs, in bytes.
    pub need_bytes: u64,
    /// Workers whose figures count now (0: the need was stored before a restart).
    pub reporters: u32,
}

/// One worker identity, as `GET /v1/admin/workers` lists it for the operator.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerRecord {
    /// The worker's id.
    pub worker_id: String,
    /// `registered` (joined with the pool token) or `issued` (a credential the operator issued).
    pub origin: String,
    /// The name the worker registered with (an issued worker's id).
    pub name: String,
    /// When the identity was created (Unix milliseconds).
    pub created_unix_ms: i64,
    /// Proofs of this worker the coordinator rejected.
    pub rejections: u32,
    /// Its ban, if it is banned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban: Option<BanRecord>,
    /// Whether it asked for work within the last lease period.
    pub live: bool,
    /// Memory it advertised with its last claim (0: none since the coordinator started).
    pub memory_bytes: u64,
    /// Leases it holds now.
    pub leases: u32,
    /// The device name of the profile it sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The device it said it proves on with its last claim, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proves_on: Option<Device>,
    /// The tasks it holds now, as `job-N/task-M`.
    #[serde(default)]
    pub current_tasks: Vec<String>,
    /// Results of it accepted since the coordinator started.
    #[serde(default)]
    pub tasks_done: u64,
}

/// `GET /v1/jobs/{job}/tree`: one task of the job's aggregation tree.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TreeNode {
    /// The task's id.
    pub task: TaskId,
    /// `segments`, `leaf`, `internal-for-leaf`, `internal-recursive.N` or `wrap`.
    pub phase: String,
    /// Its children, in execution order (none for a segment).
    pub children: Vec<TaskId>,
    /// `waiting` (for its children), `ready`, `leased` or `accepted`.
    pub state: String,
    /// Who holds its lease, if leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why its last attempt failed (a rejected proof, a lost lease…), until one is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// `GET /v1/jobs/{job}/tree`: a job's aggregation tree as far as it exists. A small tree
/// comes whole; a large one (more tasks than the call's `limit`) comes counted per layer, with
/// only its notable nodes: those leased now and those whose last attempt failed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TreeView {
    /// Tasks in the tree so far.
    pub tasks: usize,
    /// Each phase's tasks by state: `segments`, then each aggregation layer.
    pub layers: Vec<LayerCounts>,
    /// Whether `nodes` holds every task (else the notable ones, at most `limit`).
    pub complete: bool,
    /// The tasks sent: every one, or the notable ones.
    pub nodes: Vec<TreeNode>,
}

/// How many tasks of one phase are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LayerCounts {
    /// `segments`, `leaf`, `internal-for-leaf`, `internal-recursive.N` or `wrap`.
    pub phase: String,
    /// Waiting for their children.
    pub waiting: usize,
    /// Ready to be leased.
    pub ready: usize,
    /// Leased now.
    pub leased: usize,
    /// Accepted.
    pub accepted: usize,
    /// Tasks not accepted yet whose last attempt failed (rejected, lost or reported).
    pub failing: usize,
}

/// The query of `GET /v1/jobs/{job}/tree`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TreeQuery {
    /// The most nodes to send (default [`TreeQuery::DEFAULT_LIMIT`], at most
    /// [`TreeQuery::MAX_LIMIT`]): a tree of more tasks comes counted, with its notable nodes.
    pub limit: Option<usize>,
}

impl TreeQuery {
    /// Nodes sent when the query names no limit.
    pub const DEFAULT_LIMIT: usize = 4096;
    /// The most nodes a query may ask for.
    pub const MAX_LIMIT: usize = 65536;

    /// The limit asked for, bounded.
    pub fn limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

/// The query of `GET /v1/jobs`: a page of the client's jobs, newest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs older than this job number (the next page: the last page's smallest number).
    pub before: Option<u64>,
    /// The most jobs to send (default [`JobsQuery::DEFAULT_LIMIT`], at most
    /// [`JobsQuery::MAX_LIMIT`]).
    pub limit: Option<usize>,
}

impl JobsQuery {
    /// Jobs sent when the query names no limit.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The most jobs a query may ask for.
    pub const MAX_LIMIT: usize = 1000;

    /// The limit asked for, bounded.
    pub fn limit(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

/// The query of `GET /v1/jobs/{job}/events`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only the last this many events (default: all of them).
    pub last: Option<usize>,
}

/// A ban on a worker identity.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BanRecord {
    /// Why it was banned.
    pub reason: String,
    /// When (Unix milliseconds).
    pub at_unix_ms: i64,
    /// `operator`, or `coordinator` for a ban it imposed after rejected proofs.
    pub by: String,
}

/// `POST /v1/admin/workers`: issue a credential for a new worker of a closed pool.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IssueWorkerRequest {
    /// The new worker's id (its name in logs and bans).
    pub worker_id: String,
}

/// The coordinator's answer to an issued worker credential.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IssueWorkerResponse {
    /// The worker's id.
    pub worker_id: String,
    /// Shown once: the coordinator keeps only its SHA-256.
    pub token: String,
}

/// What one client may use of the pool, set by the operator when it issues the client's
/// credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientLimits {
    /// Jobs not over (executing, running or paused) at once; more are refused (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs_in_flight: Option<u32>,
    /// The most instructions one job may execute: a job asking for more is refused (403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instructions: Option<u64>,
    /// The most bytes of programs it may keep on the coordinator (its uploads, each distinct
    /// program counted once): an upload beyond it is refused (413) until it deletes some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_program_bytes: Option<u64>,
    /// The most bytes of input one of its jobs may carry: a job with more is refused (413).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_bytes: Option<u64>,
    /// The client's share of the pool against other clients' (1 to 1000): when clients
    /// compete, leases go to the one holding the fewest per unit of weight.
    #[serde(default = "ClientLimits::default_weight")]
    pub weight: u32,
}

impl ClientLimits {
    fn default_weight() -> u32 {
        1
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_jobs_in_flight: None,
            max_instructions: None,
            max_program_bytes: None,
            max_input_bytes: None,
            weight: 1,
        }
    }
}

/// `POST /v1/admin/clients`: issue a credential for a new client.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IssueClientRequest {
    /// The new client's id.
    pub client_id: String,
    /// What it may use of the pool (defaults where left out).
    #[serde(default)]
    pub limits: ClientLimits,
}

/// The coordinator's answer to an issued client credential.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IssueClientResponse {
    /// The client's id.
    pub client_id: String,
    /// Shown once: the coordinator keeps only its SHA-256.
    pub token: String,
}

/// `GET /v1/admin/clients`: one client.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientRecord {
    /// The client's id.
    pub client_id: String,
    /// When its credential was issued (Unix milliseconds).
    pub created_unix_ms: i64,
    /// What it may use of the pool.
    pub limits: ClientLimits,
    /// Its jobs that are not over.
    pub jobs_in_flight: u32,
    /// Leases its jobs' tasks hold now.
    pub leases: u32,
    /// Bytes of the programs it keeps (counted against `max-program-bytes`).
    #[serde(default)]
    pub program_bytes: u64,
}

/// `POST /v1/admin/workers/{id}/ban`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BanWorkerRequest {
    /// Why, in words (kept with the ban).
    pub reason: String,
}

/// Measurements attached to a result.
pub type TaskMeta = ProofMeta;
