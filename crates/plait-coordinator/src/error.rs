//! What can go wrong in the coordinator's operations, each named for the caller (the HTTP layer
//! maps each to a status and a code).

use plait_core::{JobId, TaskId};
use plait_prover::BackendError;

use crate::store::StoreError;

/// An operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("invalid aggregation tree: {0}")]
    Tree(#[from] plait_core::TreeShapeError),
    #[error("{0} does not exist")]
    UnknownJob(JobId),
    #[error("{0} of {1} does not exist")]
    UnknownTask(TaskId, JobId),
    #[error("{0} has no checkpoint {1}")]
    UnknownCheckpoint(JobId, String),
    #[error(
        "{task} attempt {attempt} of {job} is not the current lease (expired or already done)"
    )]
    StaleLease {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    #[error("{task} attempt {attempt} of {job}: the call does not carry the lease's secret (only the worker holding the lease may act on it)")]
    NotLeaseHolder {
        job: JobId,
        task: TaskId,
        attempt: u32,
    },
    #[error("{0}: no current lease of this job has the secret presented; only the holder of a lease may download what its task needs")]
    NotLeased(JobId),
    #[error("worker proves with {worker}, this coordinator with {coordinator}")]
    IncompatibleWorker { worker: String, coordinator: String },
    #[error("worker {worker} is banned: {reason}")]
    WorkerBanned { worker: String, reason: String },
    #[error("missing or wrong {0} token")]
    Unauthorized(&'static str),
    #[error(
        "client {0} exists, or was revoked and its jobs are kept (a name is not issued twice)"
    )]
    ClientExists(String),
    #[error("no client {0}")]
    UnknownClient(String),
    #[error("client {client} may have {limit} jobs in flight; it has {count}")]
    TooManyJobs {
        client: String,
        limit: u32,
        count: u32,
    },
    #[error("client {client} may run jobs of at most {limit} instructions; this one allows {asked} (pass --max-instructions)")]
    OverInstructionLimit {
        client: String,
        limit: u64,
        asked: u64,
    },
    #[error("client {client}'s jobs may carry {limit} bytes of input; this one has {asked}")]
    OverInputLimit {
        client: String,
        limit: u64,
        asked: u64,
    },
    #[error("client {client} may keep {limit} bytes of programs; it keeps {kept} and this one has {asked} (delete some: `plait programs delete`)")]
    OverProgramQuota {
        client: String,
        limit: u64,
        kept: u64,
        asked: u64,
    },
    #[error("no program {0}")]
    UnknownProgram(String),
    #[error("no worker {0}")]
    UnknownWorker(String),
    #[error("worker id {0} is taken")]
    WorkerExists(String),
    #[error("this pool is closed: workers join with a credential the operator issued (`plait workers issue`), not a pool token")]
    RegistrationClosed,
    #[error("the pool holds {limit} worker identities, its limit, and every one is working or was seen in the last {live_secs} s; try again later")]
    PoolFull { limit: usize, live_secs: u64 },
    #[error("the blocking task panicked: {0}")]
    Panicked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidState(String),
    /// A worker's request out of bounds (see `plait_api::limits`).
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot choose a segment height: {0}")]
    CannotPlan(String),
    /// The coordinator could not check a result (its keys or the program would not load):
    /// its own fault, so the worker keeps its lease and nothing counts against it.
    #[error("the coordinator cannot check results now: {0}")]
    CannotCheck(String),
    #[error("the coordinator was halted")]
    Halted,
}
