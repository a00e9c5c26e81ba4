//! Costs that follow proof sizes: a segment's proof size from its chips, and a leaf's cost
//! from the segment proofs it verifies.
//!
//! A leaf verifies its children's segment proofs inside a recursion circuit whose traces grow
//! with what it verifies, so a leaf over four zkML segments (8.8 MB of proofs) costs far more
//! than one over four fib segments (4.9 MB): 126 s against 73 s, 8.7 GiB against 5.2 GiB. A
//! segment's proof size follows the columns of the chips it uses, not its height (a fib segment's
//! proof is 1.2 MB at heights 19 and 20 alike; SHA-256's chips make it 1.8 MB, zkML's 2.1–2.4).
//! The other node kinds verify proofs of Plait's fixed recursion circuits and cost the same
//! whatever the program (an internal-for-leaf node over three fib leaves and over three zkML
//! leaves: 91.0 s and 91.1 s); they go by their children count.

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

    /// The predicted size of a segment's proof from the columns of the chips it uses (see
    /// [`TraceSize::present_columns`]), fitted over the profile's measured segments (format
    /// 3). Where the segment's columns are unknown, or the profile measured segments of only
    /// one chip mix, the mean of the measured proofs; `None` where none was measured.
    pub fn segment_proof_bytes(&self, size: Option<TraceSize>) -> Option<u64> {
        let measured: Vec<(f64, f64)> = self
            .segments
            .iter()
            .filter(|s| s.proof_bytes > 0)
            .map(|s| {
                let columns = s.trace_size.map_or(0, |t| t.present_columns);
                (columns as f64, s.proof_bytes as f64)
            })
            .collect();
        if measured.is_empty() {
            return None;
        }
        let with_columns: Vec<(f64, f64)> =
            measured.iter().copied().filter(|p| p.0 > 0.0).collect();
        let columns = size.map_or(0, |s| s.present_columns);
        match Line::fit(&with_columns) {
            Some(line) if columns > 0 => Some(line.at(columns as f64) as u64),
            _ => Some((measured.iter().map(|p| p.1).sum::<f64>() / measured.len() as f64) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{tests::profile, NodeCost};
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

    #[test]
    fn a_segment_proof_is_sized_by_its_chips() {
        let mut p = profile();
        assert_eq!(p.segment_proof_bytes(None), None, "nothing measured");
        let size = |columns| TraceSize {
            present_columns: columns,
            ..Default::default()
        };
        p.segments[0].proof_bytes = 1_200_000;
        p.segments[0].trace_size = Some(size(1_000));
        assert_eq!(p.segment_proof_bytes(Some(size(3_000))), Some(1_200_000));
        p.segments[1].proof_bytes = 1_800_000;
        p.segments[1].trace_size = Some(size(2_000));
        assert_eq!(p.segment_proof_bytes(Some(size(3_000))), Some(2_400_000));
        assert_eq!(p.segment_proof_bytes(None), Some(1_500_000));
    }
}
