//! What can go wrong in the coordinator's operations, each named for the caller (the HTTP layer
//! maps each to a status and a code).

use plait_core::{JobId, TaskId};
use plait_prover::BackendError;

use crate::store::StoreError;

/// An operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The backend failed (executing, proving or checking).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The job's tree shape cannot make a tree.
    #[error("invalid aggregation tree: {0}")]
    Tree(#[from] plait_core::TreeShapeError),
    /// No such job.
    #[error("{0} does not exist")]
    UnknownJob(JobId),
    /// No such task in the job.
    #[error("{0} of {1} does not exist")]
    UnknownTask(TaskId, JobId),
    /// The job has no checkpoint of that name.
    #[error("{0} has no checkpoint {1}")]
    UnknownCheckpoint(JobId, String),
    /// A call about a lease that ended (expired, or its result already came).
    #[error(
        "{task} attempt {attempt} of {job} is not the current lease (expired or already done)"
    )]
    StaleLease {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// The attempt named.
        attempt: u32,
    },
    /// A call about a lease without the lease's secret.
    #[error("{task} attempt {attempt} of {job}: the call does not carry the lease's secret (only the worker holding the lease may act on it)")]
    NotLeaseHolder {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// The attempt named.
        attempt: u32,
    },
    /// A download with a secret no current lease of the job has.
    #[error("{0}: no current lease of this job has the secret presented; only the holder of a lease may download what its task needs")]
    NotLeased(JobId),
    /// The worker's backend or version is not the coordinator's.
    #[error("worker proves with {worker}, this coordinator with {coordinator}")]
    IncompatibleWorker {
        /// The worker's backend and version.
        worker: String,
        /// The coordinator's.
        coordinator: String,
    },
    /// The worker is banned.
    #[error("worker {worker} is banned: {reason}")]
    WorkerBanned {
        /// The worker.
        worker: String,
        /// Why it was banned.
        reason: String,
    },
    /// The credential is missing or wrong for this route.
    #[error("missing or wrong {0} token")]
    Unauthorized(&'static str),
    /// A client of that name exists or existed.
    #[error(
        "client {0} exists, or was revoked and its jobs are kept (a name is not issued twice)"
    )]
    ClientExists(String),
    /// No such client.
    #[error("no client {0}")]
    UnknownClient(String),
    /// The client has as many jobs in flight as it may.
    #[error("client {client} may have {limit} jobs in flight; it has {count}")]
    TooManyJobs {
        /// The client.
        client: String,
        /// Jobs it may have in flight.
        limit: u32,
        /// Jobs it has in flight.
        count: u32,
    },
    /// The job allows more instructions than its client may run.
    #[error("client {client} may run jobs of at most {limit} instructions; this one allows {asked} (pass --max-instructions)")]
    OverInstructionLimit {
        /// The client.
        client: String,
        /// Its limit.
        limit: u64,
        /// What the job allows.
        asked: u64,
    },
    /// The job's input is over its client's limit.
    #[error("client {client}'s jobs may carry {limit} bytes of input; this one has {asked}")]
    OverInputLimit {
        /// The client.
        client: String,
        /// Its limit, in bytes.
        limit: u64,
        /// The job's input, in bytes.
        asked: u64,
    },
    /// The program would put its client over its program quota.
    #[error("client {client} may keep {limit} bytes of programs; it keeps {kept} and this one has {asked} (delete some: `plait programs delete`)")]
    OverProgramQuota {
        /// The client.
        client: String,
        /// Its quota, in bytes.
        limit: u64,
        /// Bytes of programs it keeps.
        kept: u64,
        /// The new program's bytes.
        asked: u64,
    },
    /// No such program (for this client).
    #[error("no program {0}")]
    UnknownProgram(String),
    /// No such worker identity.
    #[error("no worker {0}")]
    UnknownWorker(String),
    /// A worker identity of that id exists.
    #[error("worker id {0} is taken")]
    WorkerExists(String),
    /// The pool admits only issued worker credentials.
    #[error("this pool is closed: workers join with a credential the operator issued (`plait workers issue`), not a pool token")]
    RegistrationClosed,
    /// The pool holds as many worker identities as it may, all of them active.
    #[error("the pool holds {limit} worker identities, its limit, and every one is working or was seen in the last {live_secs} s; try again later")]
    PoolFull {
        /// The most identities the pool holds.
        limit: usize,
        /// How recently an identity counts as active.
        live_secs: u64,
    },
    /// Work on a blocking thread panicked.
    #[error("the blocking task panicked: {0}")]
    Panicked(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job is not in a state that allows the operation.
    #[error("{0}")]
    InvalidState(String),
    /// A worker's request out of bounds (see `plait_api::limits`).
    #[error("{0}")]
    BadRequest(String),
    /// The planner could not choose a segment height.
    #[error("cannot choose a segment height: {0}")]
    CannotPlan(String),
    /// The coordinator could not check a result (its keys or the program would not load):
    /// its own fault, so the worker keeps its lease and nothing counts against it.
    #[error("the coordinator cannot check results now: {0}")]
    CannotCheck(String),
    /// The coordinator was halted (its store failed for too long).
    #[error("the coordinator was halted")]
    Halted,
}
