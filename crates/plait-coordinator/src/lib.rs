//! The coordinator: the single writer of job state.
//!
//! It executes a program once to plan its segments, hands ready tasks to workers under leases,
//! verifies every returned proof before accepting it (a rejected proof is recorded and its task
//! retried), releases each aggregation node the moment its children are accepted, and finally
//! assembles and verifies the job's proof. Workers reach it over HTTP ([`http::router`]).
//!
//! Job state lives in memory in this version; a coordinator restart loses running jobs.

mod coordinator;
pub mod http;
mod job;

pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError};
pub use job::{JobEvent, JobProgress, JobStatus, TaskTiming};
