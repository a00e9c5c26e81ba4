//! Plait's zkVM-independent domain: what a proving job is made of and in which order its parts
//! may run.
//!
//! This crate owns the segment plan, the shape of the aggregation tree and the task graph that
//! ties them together. It does no IO, spawns nothing and reads no clock: callers pass every fact
//! in, which keeps the scheduling rules testable in microseconds.
//!
//! Main types: [`SegmentPlan`] and [`SegmentSpec`] (an execution cut into segments, each with
//! its [`TraceSize`]), [`AggTree`] and [`AggTreeShape`] (how segment proofs are joined),
//! [`TaskGraph`] (the job's tasks, their states and the scheduling rule), and, for choosing a
//! segment height, [`cost::DeviceProfile`] (a device's measured costs), [`sim::simulate`] and
//! [`planner::evaluate`].

#![warn(missing_docs)]

mod agg_tree;
pub mod cost;
pub mod device;
mod ids;
mod input;
mod plan;
pub mod planner;
pub mod plot;
pub mod sim;
mod task_graph;
pub mod text;

pub use agg_tree::{AggLayer, AggNode, AggTree, AggTreeShape, ChildRef, TreeShapeError};
pub use device::{Device, DeviceChoice, DeviceKind};
pub use ids::{JobId, TaskId};
pub use input::{InputError, InputItemSource, ProgramInput};
pub use plan::{SegmentPlan, SegmentSpec, TraceSize};
pub use task_graph::{ReadyChange, TaskGraph, TaskGraphError, TaskKind, TaskState};
