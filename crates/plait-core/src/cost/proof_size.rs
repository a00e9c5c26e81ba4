//! Costs that follow proof sizes: a segment's proof size from its chips, and a leaf's cost
//! from the segment proofs it verifies.
//!
//! A leaf verifies its children's segment proofs inside a recursion circuit whose traces grow
//! with what it verifies, so a leaf over four zkML segments (8.8 MB of proofs) costs far more
//! than one over four fib segments (4.9 MB): 126 s against 73 s, 8.7 GiB against 5.2 GiB.
//!
//! A segment's proof size follows its *stacked width*, its main cells over 2^height: OpenVM
//! stacks every trace into one matrix of 2^height rows (the segment height is its
//! `log_stacked_height`), and each query of the proof opens a row of it. A fib segment's proof is
//! 1.2 MB at heights 19 and 20 alike (72 and 68 stacked columns), SHA-256's chips make it 1.8 MB
//! (119 and 115), zkML's 2.1–2.4 MB (174 at height 19).
//! The other node kinds verify proofs of Plait's own recursion circuits; their cost steps with
//! the bytes they verify too (an internal-for-leaf node took 63–67 s over 0.95 to 1.56 MB of
//! child proofs and 88–91 s over 2.2 to 3.3 MB, fib's or zkML's alike), and a line cannot follow
//! steps: they cost what the cheapest measured node of their kind at least as large in children
//! and child bytes cost (`DeviceProfile::node_seconds`).

use super::{nonnegative_least_squares, DeviceProfile};
use crate::TraceSize;

/// `at_zero + per_unit · x`, with neither term negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Line {
    /// The value at x = 0.
    pub at_zero: f64,
    /// The growth per unit of x.
    pub per_unit: f64,
}

impl Line {
    /// The least-squares line through `points` (x, y) with no negative term; `None` with
    /// fewer than two distinct x.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        if xs.len() < 2 {
            return None;
        }
        // The third feature is unused (all zero): the fit leaves it out.
        let x: Vec<[f64; 3]> = points.iter().map(|&(x, _)| [1.0, x, 0.0]).collect();
        let y: Vec<f64> = points.iter().map(|p| p.1).collect();
        let c = nonnegative_least_squares(&x, &y)?;
        Some(Self {
            at_zero: c[0],
            per_unit: c[1],
        })
    }

    /// The line's value at `x` (never below 0).
    pub fn at(&self, x: f64) -> f64 {
        (self.at_zero + self.per_unit * x).max(0.0)
    }
}

/// A leaf's seconds and peak memory (bytes) as lines in the bytes of the proofs it verifies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeafCostFit {
    /// Seconds against child-proof bytes.
    pub seconds: Line,
    /// Peak memory (device memory on a GPU) against child-proof bytes.
    pub memory: Line,
}

impl DeviceProfile {
    /// The leaf's cost against its children's proof bytes, fitted over the profile's leaves
    /// that recorded them (format 3); `None` when fewer than two sizes were measured.
    pub fn leaf_cost_fit(&self) -> Option<LeafCostFit> {
        let leaves: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| n.kind == "leaf" && n.child_proof_bytes > 0)
            .collect();
        let points = |y: &dyn Fn(&super::NodeCost) -> f64| -> Vec<(f64, f64)> {
            leaves
                .iter()
                .map(|n| (n.child_proof_bytes as f64, y(n)))
                .collect()
        };
        Some(LeafCostFit {
            seconds: Line::fit(&points(&|n| n.seconds))?,
            memory: Line::fit(&points(&|n| {
                self.placed_peak(n.peak_rss_bytes, n.peak_device_bytes) as f64
            }))?,
        })
    }

    /// The predicted size of a segment's proof at `height` from its stacked width (main cells
    /// over 2^height), fitted over the profile's measured segments (format 3). Where the
    /// segment's trace size is unknown, or the profile measured segments of one width only,
    /// the mean of the measured proofs; `None` where none was measured.
    ///
    /// Segments whose memory chips are most of their main cells (calibration's memory walk)
    /// are left out of the fit: the executor's bound on those chips is far above what is
    /// committed (a walk segment of 189M cells by the bound made a 0.86 MB proof), so their
    /// width says nothing about their proof, and with them the line came out flat at the
    /// mean. Such a segment is still predicted from all its main cells: high, the safe side
    /// for the node above it.
    pub fn segment_proof_bytes(&self, height: u32, size: Option<TraceSize>) -> Option<u64> {
        let measured: Vec<(Option<f64>, f64)> = self
            .segments
            .iter()
            .filter(|s| s.proof_bytes > 0)
            .filter(|s| {
                s.trace_size
                    .is_none_or(|t| t.memory_cells.saturating_mul(2) <= t.main_cells)
            })
            .map(|s| {
                let width = s.trace_size.map(|t| stacked_width(s.segment_height, t));
                (width, s.proof_bytes as f64)
            })
            .collect();
        if measured.is_empty() {
            return None;
        }
        let sized: Vec<(f64, f64)> = measured
            .iter()
            .filter_map(|&(w, bytes)| Some((w?, bytes)))
            .collect();
        match (Line::fit(&sized), size) {
            (Some(line), Some(size)) => Some(line.at(stacked_width(height, size)) as u64),
            _ => Some((measured.iter().map(|p| p.1).sum::<f64>() / measured.len() as f64) as u64),
        }
    }
}

/// A segment's main cells over the rows of its stacked matrix.
fn stacked_width(height: u32, size: TraceSize) -> f64 {
    size.main_cells as f64 / 2f64.powi(height as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{tests::profile, NodeCost, SegmentCost};
    use crate::AggLayer;

    #[test]
    fn a_line_is_fitted_without_negative_terms() {
        let line = Line::fit(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((line.at_zero - 1.0).abs() < 1e-9 && (line.per_unit - 2.0).abs() < 1e-9);
        // Falling points get a flat line at their mean, not a negative slope.
        let flat = Line::fit(&[(1.0, 4.0), (2.0, 2.0)]).unwrap();
        assert_eq!(flat.per_unit, 0.0);
        assert!((flat.at_zero - 3.0).abs() < 1e-9);
        assert_eq!(
            Line::fit(&[(1.0, 4.0), (1.0, 5.0)]),
            None,
            "one x fits no line"
        );
    }

    /// Measured: fib leaves of 1 to 4 children (1.25 to 4.86 MB of child proofs); the leaf
    /// over four zkML segments (8.8 MB) took 126.3 s and 8.7 GiB, which the children count
    /// alone put at 73 s and 5.2 GiB.
    #[test]
    fn a_leaf_is_costed_by_the_proofs_it_verifies() {
        let mut p = profile();
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        p.nodes.retain(|n| n.kind != "leaf");
        for (children, mb, seconds, peak) in [
            (1, 1.25, 47.1, 2.15),
            (2, 2.49, 47.9, 2.80),
            (3, 3.73, 70.3, 4.78),
            (4, 4.86, 73.2, 5.23),
        ] {
            p.nodes.push(NodeCost {
                kind: "leaf".into(),
                children,
                seconds,
                peak_rss_bytes: gib(peak),
                child_proof_bytes: (mb * 1e6) as u64,
                ..Default::default()
            });
        }
        let zkml = Some(8_800_000);
        let seconds = p.node_seconds(AggLayer::Leaf, 4, zkml);
        assert!((seconds / 126.3 - 1.0).abs() < 0.15, "{seconds}");
        let memory = p.node_memory(AggLayer::Leaf, 4, zkml) as f64 / gib(8.7) as f64;
        assert!((memory - 1.0).abs() < 0.15, "{memory}");
        // Without the child bytes, the children count decides, as before format 3.
        assert_eq!(p.node_seconds(AggLayer::Leaf, 4, None), 73.2);
        // Other kinds go by their children count whatever the bytes.
        assert_eq!(
            p.node_seconds(AggLayer::Wrap, 1, Some(1 << 30)),
            p.node_seconds(AggLayer::Wrap, 1, None)
        );
    }

    /// A fib job's leaves over four segments were predicted at 5.04 MB of child proofs, 1.4%
    /// above the calibrated fib leaf's 4.97 MB: they are costed as that leaf (they peaked at
    /// 5.21 GiB), not as the next measurement up, a SHA-256 leaf over 7.31 MB (8.66 GiB).
    #[test]
    fn predicted_bytes_just_above_a_measurement_are_costed_as_it() {
        let mut p = profile();
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        p.nodes.retain(|n| n.kind != "leaf");
        for (mb, seconds, peak) in [(4.970644, 108.1, 5.29), (7.30578, 173.2, 8.66)] {
            p.nodes.push(NodeCost {
                kind: "leaf".into(),
                children: 4,
                seconds,
                peak_rss_bytes: gib(peak),
                child_proof_bytes: (mb * 1e6) as u64,
                ..Default::default()
            });
        }
        assert_eq!(p.node_memory(AggLayer::Leaf, 4, Some(5_039_000)), gib(5.29));
        assert_eq!(p.node_seconds(AggLayer::Leaf, 4, Some(5_039_000)), 108.1);
        // 5% above is past the tolerance: the next measurement up.
        assert_eq!(p.node_memory(AggLayer::Leaf, 4, Some(5_220_000)), gib(8.66));
    }

    /// Internal-for-leaf nodes as calibrated (64ef42f) and as measured in a fib job (over
    /// three full leaves, 2.34 MB: 88.3 s, 5.49 GiB), with one made-up point (one child over
    /// 1 MB, a 1-child node's cost) to tell children from bytes. The step between 1.56 and
    /// 2.34 MB lies where no measurement shows it, so a node between them is costed as the
    /// larger.
    #[test]
    fn an_internal_node_is_costed_as_the_cheapest_measured_at_least_as_large() {
        let mut p = profile();
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        p.nodes.retain(|n| n.kind != "internal-for-leaf");
        for (children, child_proof_bytes, seconds, peak, proof_bytes) in [
            (1, 470_000, 38.5, 2.05, 416_000),
            (2, 950_000, 63.4, 3.81, 600_000),
            (1, 1_000_000, 44.6, 2.11, 590_000),
            (2, 1_560_000, 63.8, 3.92, 845_000),
            (3, 2_340_000, 88.3, 5.49, 1_000_000),
        ] {
            p.nodes.push(NodeCost {
                kind: "internal-for-leaf".into(),
                children,
                seconds,
                peak_rss_bytes: gib(peak),
                child_proof_bytes,
                proof_bytes,
                ..Default::default()
            });
        }
        let ifl = AggLayer::InternalForLeaf;
        assert_eq!(p.node_seconds(ifl, 1, Some(470_000)), 38.5);
        // One child over 0.5 MB: the 1-child node over 1 MB, not the dearer 2-child ones.
        assert_eq!(p.node_seconds(ifl, 1, Some(500_000)), 44.6);
        assert_eq!(p.node_memory(ifl, 1, Some(500_000)), gib(2.11));
        // Two children over 1 MB: the 2-child node over 1.56 MB.
        assert_eq!(p.node_seconds(ifl, 2, Some(1_000_000)), 63.8);
        assert_eq!(p.node_memory(ifl, 2, Some(1_000_000)), gib(3.92));
        // Between 1.56 and 2.34 MB: the larger.
        assert_eq!(p.node_seconds(ifl, 2, Some(2_000_000)), 88.3);
        assert_eq!(p.node_memory(ifl, 2, Some(2_000_000)), gib(5.49));
        // A proof's size: the measured node of as many children nearest in child bytes.
        assert_eq!(p.node_proof_bytes(ifl, 3, Some(2_000_000)), Some(1_000_000));
        assert_eq!(p.node_proof_bytes(ifl, 2, Some(2_000_000)), Some(845_000));
        assert_eq!(p.node_proof_bytes(ifl, 1, Some(900_000)), Some(590_000));
        // Beyond the largest measured: the kind's line where it is higher than the largest.
        let line = Line::fit(&[
            (470_000.0, 38.5),
            (950_000.0, 63.4),
            (1_000_000.0, 44.6),
            (1_560_000.0, 63.8),
            (2_340_000.0, 88.3),
        ])
        .unwrap();
        let far = p.node_seconds(ifl, 3, Some(4_680_000));
        assert!(
            far > 88.3 && (far - line.at(4_680_000.0)).abs() < 1e-9,
            "{far}"
        );
        assert_eq!(
            p.node_seconds(ifl, 3, Some(2_500_000)),
            line.at(2_500_000.0).max(88.3)
        );
        // Within the tolerance of the largest (2.4 MB against 2.34): costed as it.
        assert_eq!(p.node_seconds(ifl, 3, Some(2_400_000)), 88.3);
        assert!(p.node_memory(ifl, 3, Some(4_680_000)) > gib(5.49));
        // A kind measured once (the wrap) stays flat in time; its memory grows with the
        // bytes (in the CNN batch of 16: 1.32 GiB over a 0.43 MB child, calibrated at
        // 1.02 GiB over 0.31 MB).
        p.nodes.push(NodeCost {
            kind: "wrap".into(),
            children: 1,
            seconds: 33.8,
            peak_rss_bytes: 1_097_048_064,
            child_proof_bytes: 314_295,
            ..Default::default()
        });
        p.nodes
            .retain(|n| n.kind != "wrap" || n.child_proof_bytes > 0);
        assert_eq!(p.node_seconds(AggLayer::Wrap, 1, Some(429_015)), 33.8);
        let wrap = p.node_memory(AggLayer::Wrap, 1, Some(429_015));
        assert!(wrap >= 1_417_551_872, "{wrap}: below the 1.32 GiB measured");
        assert_eq!(
            p.node_memory(AggLayer::Wrap, 1, Some(314_295)),
            1_097_048_064
        );
        // Without the bytes: the measurement of these children, or the kind's largest peak.
        assert_eq!(p.node_seconds(ifl, 1, None), 38.5);
        assert_eq!(p.node_memory(ifl, 3, None), gib(5.49));
        assert_eq!(p.node_memory(ifl, 2, None), gib(3.92));
    }

    /// Internal-recursive nodes as calibrated on the 2-core machine (`plait calibrate
    /// --vm-config rv32im-sha2 --heights 19,20`), and one measured in the CNN batch of 16 past
    /// them all: three children of 0.89 MB (internal-for-leaf nodes over three full leaves)
    /// peaked at 4.61 GiB. The kind's line puts it at 4.25 GiB; the largest measured node
    /// scaled to the bytes does not fall short.
    #[test]
    fn memory_past_every_measurement_does_not_fall_short() {
        let mut p = profile();
        let gib = |g: f64| (g * (1u64 << 30) as f64) as u64;
        p.nodes.retain(|n| n.kind != "internal-recursive");
        for (children, child_proof_bytes, seconds, peak) in [
            (1, 416_071, 36.8, 1.33),
            (2, 823_406, 52.2, 2.37),
            (3, 1_230_741, 55.7, 2.66),
            (1, 893_383, 36.0, 1.60),
            (2, 1_326_926, 52.9, 2.36),
        ] {
            p.nodes.push(NodeCost {
                kind: "internal-recursive".into(),
                children,
                seconds,
                peak_rss_bytes: gib(peak),
                child_proof_bytes,
                ..Default::default()
            });
        }
        let ir = AggLayer::InternalRecursive(0);
        let memory = p.node_memory(ir, 3, Some(3 * 893_383)) as f64 / gib(4.61) as f64;
        assert!((1.0..1.15).contains(&memory), "{memory}");
        // Seconds keep the most a smaller node took, or the line (80 s; the node took 61 s):
        // scaled to the bytes they would be 107.
        let seconds = p.node_seconds(ir, 3, Some(3 * 893_383));
        assert!((55.7..81.0).contains(&seconds), "{seconds}");
    }

    /// The calibrated leaves (`plait calibrate --vm-config rv32im-sha2 --heights 19,20` on the
    /// 2-core machine: child bytes, proof bytes) and the CNN batch of 16's leaves, over four
    /// zkML segments predicted at 10.1 MB, which made 1.11 MB proofs. The line through every
    /// leaf put them at 1.29 MB (+16%), and so the internal-for-leaf nodes above them past
    /// every measurement of their kind (7.2 GiB predicted, 6.1–6.2 measured).
    #[test]
    fn a_leafs_proof_is_sized_as_the_measured_leaf_its_cost_is_taken_from() {
        let mut p = profile();
        p.nodes.retain(|n| n.kind != "leaf");
        for (children, child_proof_bytes, proof_bytes) in [
            (1, 1_241_601, 474_743),
            (1, 1_828_305, 558_071),
            (2, 2_487_442, 580_775),
            (3, 3_729_043, 770_055),
            (4, 4_970_644, 778_791),
            (4, 7_305_780, 1_111_863),
            (4, 10_502_660, 1_195_111),
        ] {
            p.nodes.push(NodeCost {
                kind: "leaf".into(),
                children,
                child_proof_bytes,
                proof_bytes,
                ..Default::default()
            });
        }
        let leaf = |bytes| p.node_proof_bytes(AggLayer::Leaf, 4, Some(bytes)).unwrap();
        let cnn = leaf(10_120_000);
        assert_eq!(cnn, 1_195_111);
        assert!((cnn as f64 / 1_111_863.0 - 1.0) < 0.08, "{cnn}");
        assert_eq!(leaf(5_039_000), 778_791, "a fib job's leaf");
        // One child over 1.3 MB: the smallest proof of the leaves at least as large.
        assert_eq!(
            p.node_proof_bytes(AggLayer::Leaf, 1, Some(1_300_000)),
            Some(558_071)
        );
        // Past every measurement, the line where it is larger: not put below the largest
        // measured proof's growth.
        let far = leaf(20_000_000);
        assert!(far > 1_195_111, "{far}");
        assert_eq!(p.node_proof_bytes(AggLayer::Leaf, 4, None), None);
    }

    /// Measured by calibration (`plait calibrate --vm-config rv32im-sha2 --heights 19,20`):
    /// fib and sha-chain segments at heights 19 and 20; the zkML guest's height-19 segments'
    /// proofs were 2.06–2.40 MB.
    #[test]
    fn a_segment_proof_is_sized_by_its_stacked_width() {
        let mut p = profile();
        assert_eq!(p.segment_proof_bytes(19, None), None, "nothing measured");
        let size = |main_cells| {
            Some(TraceSize {
                main_cells,
                ..Default::default()
            })
        };
        p.segments.clear();
        for (height, main_cells, proof_bytes) in [
            (19, 37_706_002, 1_245_841),
            (19, 62_478_988, 1_828_305),
            (20, 70_867_218, 1_217_537),
            (20, 120_322_444, 1_812_369),
        ] {
            p.segments.push(SegmentCost {
                segment_height: height,
                instructions: 1,
                trace_size: size(main_cells),
                proof_bytes,
                ..Default::default()
            });
        }
        // Each measured segment within 3%, whatever its height.
        for s in &p.segments {
            let predicted = p
                .segment_proof_bytes(s.segment_height, s.trace_size)
                .unwrap();
            assert!((predicted as f64 / s.proof_bytes as f64 - 1.0).abs() < 0.03);
        }
        let zkml = p.segment_proof_bytes(19, size(91_252_776)).unwrap() as f64;
        assert!((2.06e6..2.40e6 * 1.1).contains(&zkml), "{zkml}");
        let without_size = p.segment_proof_bytes(19, None).unwrap();
        assert_eq!(
            without_size,
            (1_245_841 + 1_828_305 + 1_217_537 + 1_812_369) / 4
        );

        // The memory walk's segments (mostly memory chips by the executor's bound, small
        // proofs) change none of it.
        for (height, main_cells, memory_cells, proof_bytes) in [
            (19, 188_731_496, 180_092_928, 861_761),
            (20, 376_722_536, 360_185_856, 845_617),
        ] {
            p.segments.push(SegmentCost {
                segment_height: height,
                instructions: 1,
                trace_size: Some(TraceSize {
                    main_cells,
                    memory_cells,
                    ..Default::default()
                }),
                proof_bytes,
                ..Default::default()
            });
        }
        assert_eq!(
            p.segment_proof_bytes(19, size(91_252_776)).unwrap(),
            zkml as u64
        );
        // A walk over a smaller table (143M main cells, 86M of them memory chips by the bound)
        // made 2.74 MB proofs: predicted from all its cells, it is not put below that.
        let walk = Some(TraceSize {
            main_cells: 143_082_600,
            memory_cells: 85_721_088,
            ..Default::default()
        });
        assert!(p.segment_proof_bytes(19, walk).unwrap() >= 2_742_481);
    }
}
