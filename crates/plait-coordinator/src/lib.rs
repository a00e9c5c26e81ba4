//! The coordinator: the single writer of job state.
//!
//! It stores a job, then executes its program once in the background, making each segment a
//! ready task (with its start-state checkpoint in the blob store) as soon as it is cut; it hands
//! ready tasks to workers under leases,
//! verifies every returned proof before accepting it (a rejected proof is recorded and its task
//! retried), releases each aggregation node the moment its children are accepted, and finally
//! assembles and verifies the job's proof. Workers reach it over HTTP ([`http::router`]).
//!
//! Every change that must survive a restart is written to the [`store`] (SQLite or
//! PostgreSQL) before the coordinator answers; a restarted coordinator resumes every job from it.
//!
//! Main types: [`Coordinator`] (the shared state, its methods split by responsibility under
//! `coordinator/`: submission, execution, dispatch, leases, the gate, finalization, …),
//! [`CoordinatorConfig`], [`Store`], [`JobStatus`] and [`CoordinatorError`]. Per job, the
//! crate-private `Job` keeps the task graph, leases and accepted proofs. `docs/architecture.md`
//! follows a job through the modules.

#![warn(missing_docs)]

mod blobs;
pub mod clients;
mod clock;
mod coordinator;
mod credentials;
mod error;
mod fair_share;
pub mod http;
mod identities;
mod job;
mod job_status;
mod memory_reports;
pub mod metrics;
pub mod planning;
mod programs;
pub mod serving;
pub mod store;

pub use coordinator::{Coordinator, CoordinatorConfig, WorkerCaller};
pub use error::CoordinatorError;
pub use identities::{Ban, Identity, Origin};
pub use job::{JobAction, JobEvent, JobProgress, JobSummary, TaskTiming};
pub use job_status::JobStatus;
pub use planning::PlannerConfig;
pub use store::Store;
