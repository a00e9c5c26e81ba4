//! Where a segment ends: OpenVM's cut (no chip past the segment height), and before the
//! lookup argument's input doubles.
//!
//! A segment's proof peaks, and spends half its time, in LogUp's fractional sumcheck, whose
//! input is the segment's bus interactions (each chip's rows, padded to a power of two, times
//! its interactions) rounded up to a power of two: the LogUp cells ([`super::trace_cells`]).
//! At height h a full fib or SHA-256 segment has at most 2^(h+6) of them. The zkML guest
//! fills the load/store, ALU and multiplication chips at once, and its segments, cut by height
//! alone, had 2^(h+7): at height 20 one of 3.1M instructions peaked at 21.9 GiB, where ended
//! before that step 2.5M instructions peak at 12.2 GiB (docs/benchmarks.md). So a segment is
//! also ended before its LogUp cells would pass [`logup_cell_limit`].
//!
//! OpenVM can end a segment at a number of interactions, but counts them on unpadded rows,
//! and a chip's padded rows step at powers of two. So the cap for each segment is worked out
//! from the one before it (its chips' heights, scaled: the next segment of a program runs
//! much the same code); the first has none. A segment that passes the limit all the same is
//! cut again from its start with the cap its own chips give (`execution::execute`).

use openvm_circuit::arch::{
    execution_mode::metered::{
        ctx::MeteredCtx,
        segment_ctx::{Segment, SegmentationCtx, SegmentationLimits},
    },
    instructions::exe::VmExe,
    VirtualMachine,
};
use openvm_sdk::F;
use openvm_sdk_config::SdkVmCpuBuilder;
use openvm_stark_backend::{
    calculate_n_logup, p3_field::PrimeField32, prover::ProverBackend, StarkEngine,
};

use super::keys::Engine;

/// LogUp cells a segment at `segment_height` may have: 2^(height + 6).
pub(crate) fn logup_cell_limit(segment_height: u32) -> u64 {
    1u64 << (segment_height + 6)
}

/// A predicted segment is kept this far below the limit: a chip near a power of two in one
/// segment may cross it in the next.
pub(crate) const MARGIN: f64 = 0.05;

/// OpenVM's own interaction limit (the field's order): no cap.
pub(crate) fn no_cap() -> u32 {
    F::ORDER_U32
}

/// What the cap of a segment is worked out from: each chip's interactions per row, and
/// whether its height is fixed.
#[derive(Clone, Debug)]
pub(crate) struct InteractionCap {
    interactions: Vec<u64>,
    constant: Vec<bool>,
    l_skip: u32,
    max_height: u64,
    limit: u64,
}

impl InteractionCap {
    pub(crate) fn new(
        interactions: Vec<u64>,
        constant: Vec<bool>,
        l_skip: u32,
        segment_height: u32,
    ) -> Self {
        Self {
            interactions,
            constant,
            l_skip,
            max_height: 1u64 << segment_height,
            limit: logup_cell_limit(segment_height),
        }
    }

    /// The LogUp cells of a segment whose chips have `heights` (as the prover sizes them).
    fn logup_cells(&self, heights: &[f64]) -> u64 {
        let lifted: u64 = heights
            .iter()
            .zip(&self.interactions)
            .filter(|(&h, _)| h > 0.0)
            .map(|(&h, &k)| k * (h.ceil() as u64).next_power_of_two().max(1 << self.l_skip))
            .sum();
        match lifted {
            0 => 0,
            n => 1u64 << (self.l_skip as usize + calculate_n_logup(self.l_skip as usize, n)),
        }
    }

    /// `heights` with every chip whose height is not fixed scaled by `x`.
    fn scaled(&self, heights: &[u32], x: f64) -> Vec<f64> {
        heights
            .iter()
            .zip(&self.constant)
            .map(|(&h, &constant)| if constant { h as f64 } else { h as f64 * x })
            .collect()
    }

    /// OpenVM's interaction limit for the segment after one whose chips had `heights`: none
    /// where that segment, grown until a chip reaches the segment height, stays within the
    /// LogUp limit; else the interactions (as OpenVM counts them, unpadded) of that segment
    /// scaled to where its LogUp cells would pass the limit, less the margin.
    pub(crate) fn after(&self, heights: &[u32]) -> u32 {
        let tallest = heights
            .iter()
            .zip(&self.constant)
            .filter(|(_, &constant)| !constant)
            .map(|(&h, _)| h)
            .max()
            .unwrap_or(0);
        if tallest == 0 {
            return no_cap();
        }
        let within = |x: f64| self.logup_cells(&self.scaled(heights, x)) <= self.limit;
        // The scale at which OpenVM ends the segment by height.
        let full = self.max_height as f64 / tallest as f64;
        if within(full) {
            return no_cap();
        }
        // The largest scale within the limit (LogUp cells grow with the scale).
        let (mut low, mut high) = (0.0, full);
        if !within(low) {
            return no_cap();
        }
        for _ in 0..40 {
            let mid = (low + high) / 2.0;
            if within(mid) {
                low = mid;
            } else {
                high = mid;
            }
        }
        // OpenVM counts (height + 1) × interactions for every chip with rows.
        let unpadded: f64 = self
            .scaled(heights, low / (1.0 + MARGIN))
            .iter()
            .zip(&self.interactions)
            .filter(|(&h, _)| h > 0.0)
            .map(|(&h, &k)| (h.floor() + 1.0) * k as f64)
            .sum();
        (unpadded as u64).clamp(1, u64::from(no_cap())) as u32
    }
}

/// Builds the metered contexts of a VM, with an interaction limit.
pub(crate) struct Segmentation<'a> {
    vm: &'a VirtualMachine<Engine, SdkVmCpuBuilder>,
    cap: InteractionCap,
    /// Per chip, what OpenVM's segmentation context is made from (read once from the key).
    air_names: Vec<String>,
    widths: Vec<usize>,
    interactions: Vec<usize>,
    need_rot: Vec<bool>,
    constraint_eval_buffers: Vec<usize>,
}

impl<'a> Segmentation<'a> {
    pub(crate) fn new(vm: &'a VirtualMachine<Engine, SdkVmCpuBuilder>, exe: &VmExe<F>) -> Self {
        let per_air = &vm.pk().per_air;
        let interactions: Vec<usize> = per_air
            .iter()
            .map(|pk| pk.vk.symbolic_constraints.interactions.len())
            .collect();
        let params = vm.engine.params();
        let cap = InteractionCap::new(
            interactions.iter().map(|&k| k as u64).collect(),
            vm.build_metered_ctx(exe).is_trace_height_constant,
            params.l_skip as u32,
            params.log_stacked_height() as u32,
        );
        Self {
            vm,
            cap,
            air_names: per_air.iter().map(|pk| pk.air_name.clone()).collect(),
            widths: per_air
                .iter()
                .map(|pk| pk.vk.params.width.total_width())
                .collect(),
            interactions,
            need_rot: per_air.iter().map(|pk| pk.vk.params.need_rot).collect(),
            constraint_eval_buffers: per_air
                .iter()
                .map(<Engine as StarkEngine>::PB::constraint_eval_buffer_size)
                .collect(),
        }
    }

    /// Whether a segment whose chips have `heights` has more LogUp cells than the limit.
    pub(crate) fn past_limit(&self, heights: &[u32]) -> bool {
        let heights: Vec<f64> = heights.iter().map(|&h| h as f64).collect();
        self.cap.logup_cells(&heights) > self.cap.limit
    }

    /// The limit for the segment after one whose chips had `heights`.
    pub(crate) fn cap_after(&self, heights: &[u32]) -> u32 {
        self.cap.after(heights)
    }

    /// OpenVM's metered context for a run of `exe` from the end of the segments `cut_before`
    /// (all of them, so that segment indices go on; none for a run from the start), with
    /// `max_interactions` as its interaction limit. As OpenVM's own context is when a segment
    /// starts there: no page touched yet, the registers' Merkle paths counted.
    pub(crate) fn ctx_from(
        &self,
        exe: &VmExe<F>,
        max_interactions: u32,
        cut_before: Vec<Segment>,
    ) -> MeteredCtx {
        let mut ctx = self.vm.build_metered_ctx(exe);
        ctx.segmentation_ctx = self.segmentation_ctx(max_interactions);
        ctx.segmentation_ctx.instret = cut_before
            .last()
            .map_or(0, |s| s.instret_start + s.num_insns);
        ctx.segmentation_ctx.segments = cut_before;
        ctx
    }

    /// Changes the interaction limit of a run suspended at a segment's end. The new context
    /// keeps the segments cut so far and the instruction count; its checkpoint is taken at the
    /// next check, as OpenVM's is after a cut.
    pub(crate) fn set_cap(&self, ctx: &mut MeteredCtx, max_interactions: u32) {
        let mut fresh = self.segmentation_ctx(max_interactions);
        let old = &mut ctx.segmentation_ctx;
        fresh.segments = std::mem::take(&mut old.segments);
        fresh.instret = old.instret;
        fresh.instrets_until_check = old.instrets_until_check;
        ctx.segmentation_ctx = fresh;
    }

    fn segmentation_ctx(&self, max_interactions: u32) -> SegmentationCtx {
        let params = self.vm.engine.params();
        SegmentationCtx::new(
            self.air_names.clone(),
            self.widths.clone(),
            self.interactions.clone(),
            self.need_rot.clone(),
            self.constraint_eval_buffers.clone(),
            SegmentationLimits {
                max_trace_height_bits: params.log_stacked_height() as u8,
                max_memory: self.vm.config().as_ref().segmentation_max_memory,
                max_interactions,
            },
            self.vm.engine.proving_memory_config(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zkML guest's second segment at height 19 as OpenVM cut it (by height; the chips with
    /// interactions, from `plait execute` at 2eb491d): 34.8M interactions as the prover pads
    /// them, so 2^26 LogUp cells.
    fn zkml_segment() -> (InteractionCap, Vec<u32>) {
        let chips: [(u32, u64, bool); 15] = [
            (17_641, 1, true),    // program
            (2, 5, true),         // connector
            (6_536, 4, false),    // memory Merkle tree
            (524_288, 1, true),   // range tuple checker
            (262_144, 1, true),   // variable range checker
            (4_864, 4, false),    // persistent boundary
            (65_536, 2, true),    // bitwise lookup
            (11_400, 1, false),   // Poseidon2
            (216, 24, false),     // shift
            (495_626, 20, false), // base ALU
            (16_845, 11, false),  // branch equal
            (524_235, 17, false), // load/store
            (69_445, 13, false),  // branch less than
            (327_706, 19, false), // multiplication
            (81_927, 18, false),  // load sign-extend
        ];
        let cap = InteractionCap::new(
            chips.iter().map(|c| c.1).collect(),
            chips.iter().map(|c| c.2).collect(),
            4,
            19,
        );
        (cap, chips.iter().map(|c| c.0).collect())
    }

    #[test]
    fn a_segment_past_the_logup_limit_caps_the_next() {
        let (cap, heights) = zkml_segment();
        let as_is: Vec<f64> = heights.iter().map(|&h| h as f64).collect();
        assert_eq!(
            cap.logup_cells(&as_is),
            1 << 26,
            "the segment as OpenVM cut it"
        );
        let limit = cap.after(&heights);
        assert!(limit < no_cap());
        // The segment that limit allows: scaled until OpenVM's count reaches it.
        let unpadded = |x: f64| -> f64 {
            cap.scaled(&heights, x)
                .iter()
                .zip(&cap.interactions)
                .filter(|(&h, _)| h > 0.0)
                .map(|(&h, &k)| (h.floor() + 1.0) * k as f64)
                .sum()
        };
        let (mut low, mut high) = (0.0, 1.0);
        for _ in 0..40 {
            let mid = (low + high) / 2.0;
            if unpadded(mid) <= limit as f64 {
                low = mid;
            } else {
                high = mid;
            }
        }
        assert_eq!(cap.logup_cells(&cap.scaled(&heights, low)), 1 << 25);
        // Its multiplication chip (327,706 rows, padded to 2^19) must fall to 2^18: the
        // segment keeps about three quarters of its instructions.
        assert!((0.70..0.80).contains(&low), "{low}");
        // Even a little longer would double its LogUp cells again.
        assert_eq!(cap.logup_cells(&cap.scaled(&heights, low * 1.1)), 1 << 26);
    }

    #[test]
    fn segments_within_the_limit_are_cut_by_height_alone() {
        let (cap, mut heights) = zkml_segment();
        // Without the multiplication chip the same segment has 24.9M interactions: 2^25.
        heights[13] = 0;
        assert_eq!(cap.after(&heights), no_cap());
        // Nothing but fixed tables: nothing to scale.
        let fixed: Vec<u32> = heights
            .iter()
            .zip(&cap.constant)
            .map(|(&h, &c)| if c { h } else { 0 })
            .collect();
        assert_eq!(cap.after(&fixed), no_cap());
    }
}
