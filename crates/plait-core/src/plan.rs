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
    /// The same sum before rounding (0 where unknown): what segments merged at a larger height
    /// add up.
    #[serde(default)]
    pub interaction_cells: u64,
    /// Of the main cells, the memory chips' (Poseidon2 hashing, the memory Merkle tree, the
    /// persistent boundary; 0 where unknown). The executor bounds their rows by the memory
    /// blocks a segment touches, far above what the prover commits for a program that touches
    /// many: a random walk over 4 MiB has 524,288 Poseidon2 rows (85% of its main cells) by
    /// that bound and is proven in 18.7 s at 1.56 GiB, against a fib segment's 52 s and 6 GiB.
    /// The cost fit weighs them apart.
    #[serde(default, skip_serializing_if = "crate::cost::is_zero")]
    pub memory_cells: u64,
}

impl TraceSize {
    /// The trace size of one segment made of `parts`, each a share (0 to 1) of a segment of
    /// the given size: main cells add up, and interaction cells add up and are rounded as the
    /// prover sizes LogUp (LogUp cells stand in where a part's interaction cells are unknown).
    /// It errs high, as the parts' padding to powers of two is counted (by 17% in main cells
    /// for two height-19 zkML segments against the height-20 one they make).
    pub fn merged(parts: impl IntoIterator<Item = (f64, TraceSize)>) -> TraceSize {
        let (mut main, mut memory, mut interactions) = (0f64, 0f64, 0f64);
        for (share, size) in parts {
            main += share * size.main_cells as f64;
            memory += share * size.memory_cells as f64;
            let part = match size.interaction_cells {
                0 => size.logup_cells,
                known => known,
            };
            interactions += share * part as f64;
        }
        let interaction_cells = interactions.round() as u64;
        TraceSize {
            main_cells: main.round() as u64,
            // The bit length of the total, as OpenVM's `calculate_n_logup` takes it.
            logup_cells: match interaction_cells {
                0 => 0,
                n => 1 << (64 - n.leading_zeros()),
            },
            interaction_cells,
            memory_cells: memory.round() as u64,
        }
    }
}

/// All segments of one execution, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlan {
    /// The segments, in execution order.
    pub segments: Vec<SegmentSpec>,
    /// Public values the program revealed, as bytes.
    pub public_values: Vec<u8>,
}

impl SegmentPlan {
    /// Returns the total number of instructions across all segments.
    pub fn total_insns(&self) -> u64 {
        self.segments.iter().map(|s| s.num_insns).sum()
    }

    /// The trace sizes of the segments `instructions` cuts the same execution into (at a
    /// larger segment height): each is made of whole and partial segments of this plan, in
    /// order, and gets their trace sizes merged ([`TraceSize::merged`]). `None` for a
    /// segment made of one without a trace size.
    pub fn regrouped_sizes(&self, instructions: &[u64]) -> Vec<Option<TraceSize>> {
        let mut executed = self.segments.iter().peekable();
        let mut left_of_current = executed.peek().map_or(0, |s| s.num_insns);
        instructions
            .iter()
            .map(|&count| {
                let mut parts = Vec::new();
                let mut known = true;
                let mut needed = count;
                while needed > 0 {
                    let Some(segment) = executed.peek() else {
                        break;
                    };
                    let taken = needed.min(left_of_current);
                    if taken > 0 {
                        let share = taken as f64 / segment.num_insns.max(1) as f64;
                        match segment.trace_size {
                            Some(size) => parts.push((share, size)),
                            None => known = false,
                        }
                    }
                    needed -= taken;
                    left_of_current -= taken;
                    if left_of_current == 0 {
                        executed.next();
                        left_of_current = executed.peek().map_or(0, |s| s.num_insns);
                    }
                }
                (known && !parts.is_empty()).then(|| TraceSize::merged(parts))
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment with `(main cells, interaction cells)`, its LogUp cells as OpenVM rounds them.
    fn segment(index: u32, num_insns: u64, size: Option<(u64, u64)>) -> SegmentSpec {
        SegmentSpec {
            index,
            instret_start: 0,
            num_insns,
            memory_estimate_bytes: 0,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            trace_size: size.map(|(main_cells, interaction_cells)| TraceSize {
                main_cells,
                logup_cells: 1 << (64 - interaction_cells.leading_zeros()),
                interaction_cells,
                memory_cells: 0,
            }),
        }
    }

    /// Regrouped at a larger height, whole and partial segments merge: main cells and
    /// interaction cells add up by share, and LogUp cells follow the merged interactions.
    #[test]
    fn regrouped_segments_merge_their_trace_sizes() {
        let plan = SegmentPlan {
            segments: vec![
                segment(0, 100, Some((1000, 600_000))),
                segment(1, 100, Some((1000, 600_000))),
                // A short last segment: its LogUp cells (2^19) are far above its share.
                segment(2, 100, Some((600, 300_000))),
            ],
            public_values: vec![],
        };
        let sizes = plan.regrouped_sizes(&[200, 100]);
        assert_eq!(
            sizes,
            vec![
                Some(TraceSize {
                    main_cells: 2000,
                    logup_cells: 1 << 21,
                    interaction_cells: 1_200_000,
                    memory_cells: 0,
                }),
                Some(TraceSize {
                    main_cells: 600,
                    logup_cells: 1 << 19,
                    interaction_cells: 300_000,
                    memory_cells: 0,
                }),
            ]
        );
        // Half of segment 1 in each of two new segments.
        let sizes = plan.regrouped_sizes(&[150, 150]);
        assert_eq!(sizes[0].unwrap().main_cells, 1500);
        assert_eq!(
            sizes[0].unwrap().logup_cells,
            1 << 20,
            "900,000 interactions"
        );
        assert_eq!(sizes[1].unwrap().main_cells, 1100);
        assert_eq!(
            sizes[1].unwrap().logup_cells,
            1 << 20,
            "600,000 interactions"
        );
        // A part without a trace size leaves its new segment unsized.
        let mut unsized_plan = plan.clone();
        unsized_plan.segments[2].trace_size = None;
        assert_eq!(unsized_plan.regrouped_sizes(&[200, 100])[1], None);
        assert!(unsized_plan.regrouped_sizes(&[200, 100])[0].is_some());
    }
}
