//! The segment plan: how one execution is cut into independently provable slices.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One slice of an execution, as the zkVM's metered execution reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SegmentSpec {
    /// Position of the segment in execution order, from 0.
    pub index: u32,
    /// Instructions executed before this segment starts.
    pub instret_start: u64,
    /// Instructions in this segment.
    pub num_insns: u64,
    /// The zkVM's estimate of the prover memory this segment needs, in bytes.
    pub memory_estimate_bytes: u64,
    /// Backend-specific facts a worker needs to prove exactly this slice (for OpenVM: the
    /// per-chip trace heights). Opaque to the scheduler.
    pub backend_hint: serde_json::Value,
    /// SHA-256 (hex) of the checkpoint of the segment's start state, when the executor saved
    /// one: a worker downloads it by this name instead of re-executing the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// How big the segment's traces are, where the backend can say: what its proving memory
    /// and time grow with (see [`crate::cost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_size: Option<TraceSize>,
}

/// The size of a segment's traces, in the two measures a STARK prover's memory and time follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct TraceSize {
    /// Main trace cells of all chips (rows padded to a power of two, times columns): what
    /// committing to the traces costs.
    pub main_cells: u64,
    /// Inputs of the lookup argument (LogUp's GKR): every chip's rows times its bus
    /// interactions, summed and rounded up to a power of two. Its fractional sumcheck is where
    /// a segment's proof peaks in memory.
    pub logup_cells: u64,
}

/// All segments of one execution, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlan {
    pub segments: Vec<SegmentSpec>,
    /// Public values the program revealed, as bytes.
    pub public_values: Vec<u8>,
}

impl SegmentPlan {
    /// Returns the total number of instructions across all segments.
    pub fn total_insns(&self) -> u64 {
        self.segments.iter().map(|s| s.num_insns).sum()
    }

    /// Returns the largest per-segment memory estimate, the memory a worker needs to take any
    /// segment of this plan.
    pub fn peak_memory_estimate_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.memory_estimate_bytes)
            .max()
            .unwrap_or(0)
    }
}
