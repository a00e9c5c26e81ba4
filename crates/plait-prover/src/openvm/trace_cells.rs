//! How big a segment's traces are, chip by chip: what proving memory and time grow with.
//!
//! Execution records each chip's trace height per segment; the proving key knows each chip's
//! width and bus interactions. OpenVM pads every trace to a power of two, so a chip's cells are
//! its padded height times its width.
//!
//! Measured (`bench_segment_memory`), a segment's proof peaks in LogUp's fractional sumcheck,
//! whose input has one entry per interaction of every row, rounded up to a power of two: two
//! segments of different programs with the same rounded count peak alike, whatever their main
//! cells.

use openvm_stark_backend::calculate_n_logup;
use plait_core::TraceSize;
use serde::Serialize;

use super::keys::KeySet;
use crate::BackendError;

/// One chip's trace in one segment.
#[derive(Clone, Debug, Serialize)]
pub struct ChipCells {
    /// The chip's AIR name, as OpenVM calls it.
    pub chip: String,
    /// Trace rows, padded to a power of two as the prover commits them.
    pub rows: u64,
    /// Columns of the main (and preprocessed) trace.
    pub width: u64,
    /// Bus interactions per row.
    pub interactions: u64,
}

impl ChipCells {
    /// Main trace cells: rows × width.
    pub fn main_cells(&self) -> u64 {
        self.rows * self.width
    }
}

/// Every chip's trace in one segment (chips with no rows are left out).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TraceCells {
    /// Per chip, the largest first.
    pub chips: Vec<ChipCells>,
    /// The lookup argument's input size (see [`TraceSize::logup_cells`]).
    pub logup_cells: u64,
    /// Its input before rounding (see [`TraceSize::interaction_cells`]).
    pub lifted_interaction_cells: u64,
}

impl TraceCells {
    /// Main trace cells of all chips.
    pub fn main_cells(&self) -> u64 {
        self.chips.iter().map(ChipCells::main_cells).sum()
    }

    /// Interaction cells (rows × interactions) of all chips, before rounding.
    pub fn interaction_cells(&self) -> u64 {
        self.chips.iter().map(|c| c.rows * c.interactions).sum()
    }

    /// The measures the cost model takes.
    pub fn size(&self) -> TraceSize {
        TraceSize {
            main_cells: self.main_cells(),
            logup_cells: self.logup_cells,
            interaction_cells: self.lifted_interaction_cells,
            memory_cells: self
                .chips
                .iter()
                .filter(|c| is_memory_chip(&c.chip))
                .map(ChipCells::main_cells)
                .sum(),
        }
    }
}

/// Whether a chip is one whose rows the executor bounds by the memory blocks a segment touches
/// (see [`TraceSize::memory_cells`]): the Poseidon2 hasher, the memory Merkle tree, the
/// persistent boundary.
fn is_memory_chip(air_name: &str) -> bool {
    [
        "Poseidon2PeripheryAir",
        "MemoryMerkleAir",
        "PersistentBoundaryAir",
    ]
    .iter()
    .any(|chip| air_name.starts_with(chip))
}

/// The traces of a segment whose per-chip heights (in the proving key's chip order) are
/// `trace_heights`.
pub(crate) fn of_heights(keys: &KeySet, trace_heights: &[u32]) -> Result<TraceCells, BackendError> {
    let pk = &keys.app_pk()?.app_vm_pk.vm_pk;
    if pk.per_air.len() != trace_heights.len() {
        return Err(BackendError::MalformedTask(format!(
            "the segment has {} trace heights, the VM has {} chips",
            trace_heights.len(),
            pk.per_air.len()
        )));
    }
    let mut chips: Vec<ChipCells> = pk
        .per_air
        .iter()
        .zip(trace_heights)
        .filter(|(_, &height)| height > 0)
        .map(|(air, &height)| ChipCells {
            chip: air.air_name.clone(),
            rows: u64::from(height).next_power_of_two(),
            width: air.vk.params.width.total_width() as u64,
            interactions: air.vk.symbolic_constraints.interactions.len() as u64,
        })
        .collect();
    chips.sort_by_key(|c| std::cmp::Reverse(c.main_cells()));
    // As OpenVM's prover sizes the fractional sumcheck's input: every trace at least 2^l_skip
    // rows, then the bit length of the total.
    let l_skip = pk.params.l_skip;
    let interactions: u64 = chips
        .iter()
        .map(|c| c.interactions * c.rows.max(1 << l_skip))
        .sum();
    let logup_cells = match interactions {
        0 => 0,
        n => 1u64 << (l_skip + calculate_n_logup(l_skip, n)),
    };
    Ok(TraceCells {
        chips,
        logup_cells,
        lifted_interaction_cells: interactions,
    })
}
