//! The cost model: what a task costs on a device, from that device's measured profile.
//!
//! A profile (`plait calibrate` writes it) holds measured proving seconds and peak memory for
//! full segments at several segment heights and for each aggregation node kind. The model
//! interpolates between them:
//! - a segment costs its height's full-segment time scaled by how full it is (never below an
//!   eighth: small traces still pay fixed costs); a height between or beyond the measured ones
//!   doubles per height step from the nearest measured one;
//! - a node whose children's proof sizes are known (format 3) costs by them, as the cheapest
//!   measured node of its kind at least as large in children and child bytes, else by
//!   extrapolating from the measured ones (see `DeviceProfile::measured_at_least`); without
//!   them, what was measured for its kind and number of children, other counts
//!   `fixed + per_child · children`, fitted from the leaf's fewest- and most-children
//!   measurements, with the leaf's fixed fraction for other kinds.
//!
//! Where the profile measured segments of several programs with their trace sizes (format 2),
//! a segment whose own trace size is known is costed from it instead: peak memory and seconds
//! are each fitted as `base + a · main cells + b · LogUp cells` over the measured segments
//! ([`TraceCostFit`]). Two segments of one height can differ twofold in memory when their chip
//! mixes differ (a zkML segment against a fib one), which a per-height figure cannot see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AggLayer, AggTreeShape, DeviceKind, TraceSize};

mod proof_size;
pub use proof_size::{LeafCostFit, Line};

/// The `format` every profile names.
pub const PROFILE_FORMAT: &str = "plait-device-profile";
/// The profile format this Plait writes. Version 2 added each measured segment's program and
/// trace size; version 3 each measured proof's size and each node's children's proof sizes;
/// version 4 the memory chips' cells in each trace size. Older profiles are read as they are
/// (costed per height, nodes per children count, memory chips' cells as main cells), and a
/// calibration resumes a version-3 one.
pub const PROFILE_FORMAT_VERSION: u32 = 4;
/// How far a node's child proof bytes may exceed a measured node's and still be costed as it:
/// the bytes placement uses are predicted (within about 1.5% for calibrated programs), and a
/// fib job's leaves, predicted 1.4% above the calibrated leaf over four fib segments, were
/// otherwise costed as the next larger measurement, a SHA-256 leaf of 8.7 GiB (they peaked at
/// 5.2). A node's cost steps far apart (5.2 GiB at 5.0 MB, 8.7 GiB from 7.3 MB), not within 3%.
const CHILD_BYTES_TOLERANCE: f64 = 0.03;
/// The oldest profile format this Plait still reads.
pub const OLDEST_PROFILE_FORMAT_VERSION: u32 = 1;

pub(crate) fn rv32im() -> String {
    "rv32im".into()
}

/// One device's measured costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceProfile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// The format version it was written in (see [`PROFILE_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The Plait that measured it.
    pub plait_version: String,
    /// The proving backend measured (`openvm`).
    pub backend: String,
    /// The backend's version.
    pub backend_version: String,
    /// A name for the device (host name by default).
    pub device: String,
    /// What proved: the CPU, or a GPU. Profiles written before GPUs measured a CPU.
    #[serde(default)]
    pub device_kind: DeviceKind,
    /// CPU cores of the machine.
    pub cores: u32,
    /// The memory tasks are placed by: the machine's for a CPU, the GPU's own for a GPU.
    pub memory_bytes: u64,
    /// The aggregation tree shape the nodes were measured with.
    pub tree: AggTreeShape,
    /// The VM config the measurements were made under (`rv32im`, `rv32im-sha2`): a config with
    /// more chips proves each segment more slowly. Profiles written before configs existed
    /// measured `rv32im`.
    #[serde(default = "rv32im")]
    pub vm_config: String,
    /// The segments measured.
    pub segments: Vec<SegmentCost>,
    /// The aggregation nodes measured.
    pub nodes: Vec<NodeCost>,
    /// Seconds a worker spends loading a node kind's prover before its first node of that
    /// kind (measured apart from the nodes; none in profiles before format 4).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prover_load_seconds: BTreeMap<String, f64>,
}

/// A profile of the current format with nothing measured: a CPU's, under RV32IM, with the
/// default tree (what a calibration fills in).
impl Default for DeviceProfile {
    fn default() -> Self {
        Self {
            format: PROFILE_FORMAT.into(),
            format_version: PROFILE_FORMAT_VERSION,
            plait_version: String::new(),
            backend: String::new(),
            backend_version: String::new(),
            device: String::new(),
            device_kind: DeviceKind::Cpu,
            cores: 1,
            memory_bytes: 0,
            tree: AggTreeShape::default(),
            vm_config: rv32im(),
            segments: Vec::new(),
            nodes: Vec::new(),
            prover_load_seconds: BTreeMap::new(),
        }
    }
}

/// A segment proven at one segment height.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SegmentCost {
    /// The segment height it was cut at.
    pub segment_height: u32,
    /// Its instructions.
    pub instructions: u64,
    /// Seconds to prove it.
    pub seconds: f64,
    /// The worker process's peak resident memory while proving it.
    pub peak_rss_bytes: u64,
    /// On a GPU: the most device memory in use while it was proven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak_device_bytes: u64,
    /// The calibration program it belongs to (`fib`, `sha-chain`, …); format-1 profiles
    /// measured fib only and leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Its trace size, which the cost fit takes; format-1 profiles leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_size: Option<TraceSize>,
    /// The size of its proof (0 in profiles before format 3): what a leaf over it verifies.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proof_bytes: u64,
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One aggregation node proven: its kind (`leaf`, `internal-for-leaf`, `internal-recursive`,
/// `wrap`) and how many children it joined.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeCost {
    /// The node kind: `leaf`, `internal-for-leaf`, `internal-recursive` or `wrap`.
    pub kind: String,
    /// Proofs it joined.
    pub children: u32,
    /// Seconds to prove it.
    pub seconds: f64,
    /// The worker process's peak resident memory while proving it.
    pub peak_rss_bytes: u64,
    /// On a GPU: the most device memory in use while it was proven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak_device_bytes: u64,
    /// The summed size of the proofs it joined (0 in profiles before format 3): a leaf's cost
    /// follows it (see [`LeafCostFit`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub child_proof_bytes: u64,
    /// The size of the proof it made (0 in profiles before format 3).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proof_bytes: u64,
}

/// The kind name of a layer, as profiles record it (all internal-recursive depths share one).
pub fn node_kind(layer: AggLayer) -> &'static str {
    match layer {
        AggLayer::Leaf => "leaf",
        AggLayer::InternalForLeaf => "internal-for-leaf",
        AggLayer::InternalRecursive(_) => "internal-recursive",
        AggLayer::Wrap => "wrap",
    }
}

/// What a node is predicted to cost (see [`DeviceProfile::measured_at_least`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct NodeEstimate {
    seconds: f64,
    /// Peak memory it is placed by (device memory on a GPU).
    peak_bytes: u64,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    /// The file is not a device profile.
    #[error("not a device profile (format {0:?}); `plait calibrate` writes them")]
    NotAProfile(String),
    /// The profile was made for another Plait, backend, tree shape or format.
    #[error(
        "profile {what} is {found}, this Plait needs {expected}: run `plait calibrate` again \
         on that device"
    )]
    Mismatch {
        /// What differs.
        what: &'static str,
        /// The profile's.
        found: String,
        /// This Plait's.
        expected: String,
    },
    /// A measurement the model needs is missing.
    #[error("profile has no {0} measurement; run `plait calibrate` to finish it")]
    Missing(String),
    /// A figure is out of bounds.
    #[error(
        "profile out of bounds: a device name over 128 bytes, a VM config name over 32, over 64 \
         segment or 256 node measurements, seconds that are negative or not finite, or a segment of no instructions"
    )]
    OutOfBounds,
}

impl DeviceProfile {
    /// Checks the profile was made for this Plait, backend and tree shape.
    pub fn check(
        &self,
        plait_version: &str,
        backend: &str,
        backend_version: &str,
        tree: AggTreeShape,
    ) -> Result<(), ProfileError> {
        if self.format != PROFILE_FORMAT {
            return Err(ProfileError::NotAProfile(self.format.clone()));
        }
        let mismatch = |what, found: String, expected: String| {
            (found != expected).then_some(ProfileError::Mismatch {
                what,
                found,
                expected,
            })
        };
        let version_known =
            (OLDEST_PROFILE_FORMAT_VERSION..=PROFILE_FORMAT_VERSION).contains(&self.format_version);
        let checks = [
            (!version_known).then(|| ProfileError::Mismatch {
                what: "format version",
                found: self.format_version.to_string(),
                expected: format!("{OLDEST_PROFILE_FORMAT_VERSION} to {PROFILE_FORMAT_VERSION}"),
            }),
            mismatch(
                "Plait version",
                self.plait_version.clone(),
                plait_version.into(),
            ),
            mismatch(
                "backend",
                format!("{} {}", self.backend, self.backend_version),
                format!("{backend} {backend_version}"),
            ),
            mismatch(
                "aggregation tree",
                format!("{:?}", self.tree),
                format!("{tree:?}"),
            ),
        ];
        if let Some(e) = checks.into_iter().flatten().next() {
            return Err(e);
        }
        // Profiles come from workers: bound them before the planner uses them.
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if self.device.len() > 128
            || !crate::text::is_printable(&self.device)
            || self.vm_config.len() > 32
            || self.segments.len() > 64
            || self.nodes.len() > 256
            || !self.segments.iter().all(|s| {
                finite(s.seconds)
                    && s.instructions > 0
                    && s.program
                        .as_ref()
                        .is_none_or(|p| p.len() <= 32 && crate::text::is_printable(p))
            })
            || !self.nodes.iter().all(|n| {
                finite(n.seconds) && n.kind.len() <= 32 && crate::text::is_printable(&n.kind)
            })
            || self.prover_load_seconds.len() > 8
            || !self
                .prover_load_seconds
                .iter()
                .all(|(kind, &s)| finite(s) && kind.len() <= 32 && crate::text::is_printable(kind))
        {
            return Err(ProfileError::OutOfBounds);
        }
        if self.segments.is_empty() {
            return Err(ProfileError::Missing("segment".into()));
        }
        for kind in ["leaf", "internal-for-leaf", "internal-recursive", "wrap"] {
            if !self.nodes.iter().any(|n| n.kind == kind) {
                return Err(ProfileError::Missing(format!("{kind} node")));
            }
        }
        Ok(())
    }

    /// The measured full fib segment nearest to `height` (the per-height figures are fib's;
    /// any program's where the profile has no fib segment).
    fn nearest_segment(&self, height: u32) -> &SegmentCost {
        let is_fib = |s: &&SegmentCost| s.program.as_deref().is_none_or(|p| p == "fib");
        let nearest = |fib_only: bool| {
            self.segments
                .iter()
                .filter(|s| !fib_only || is_fib(s))
                .min_by_key(|s| s.segment_height.abs_diff(height))
        };
        nearest(true)
            .or_else(|| nearest(false))
            .expect("checked profiles have segments")
    }

    /// Instructions a full segment holds at `height` (measured, or doubled per step).
    pub fn full_segment_instructions(&self, height: u32) -> u64 {
        let s = self.nearest_segment(height);
        scale_pow2(s.instructions as f64, height, s.segment_height) as u64
    }

    /// Seconds to prove a segment of `instructions` at `height`.
    pub fn segment_seconds(&self, height: u32, instructions: u64) -> f64 {
        let s = self.nearest_segment(height);
        let full_seconds = scale_pow2(s.seconds, height, s.segment_height);
        let fill = instructions as f64 / self.full_segment_instructions(height) as f64;
        full_seconds * fill.clamp(0.125, 1.0)
    }

    /// Seconds to prove a segment of `instructions` at `height`, from its trace size where
    /// both it and the profile's fit are known (see [`TraceCostFit`]), else from the height.
    pub fn segment_seconds_sized(
        &self,
        height: u32,
        instructions: u64,
        size: Option<TraceSize>,
    ) -> f64 {
        match (size, self.trace_fit()) {
            (Some(size), Some(fit)) => fit.seconds(size),
            _ => self.segment_seconds(height, instructions),
        }
    }

    /// Peak memory of a segment task at `height`, from its trace size where both it and the
    /// profile's fit are known, else from the height (device memory on a GPU).
    pub fn segment_memory_sized(&self, height: u32, size: Option<TraceSize>) -> u64 {
        match (size, self.trace_fit()) {
            (Some(size), Some(fit)) => fit.memory_bytes(size),
            _ => self.segment_memory(height),
        }
    }

    /// The fit of segment cost to trace size over the measured segments that have one, if
    /// they are enough to fit (see [`TraceCostFit::fit`]).
    pub fn trace_fit(&self) -> Option<TraceCostFit> {
        let measured: Vec<(TraceSize, f64, f64)> = self
            .segments
            .iter()
            .filter_map(|s| {
                let peak = self.placed_peak(s.peak_rss_bytes, s.peak_device_bytes);
                Some((s.trace_size?, peak as f64, s.seconds))
            })
            .collect();
        TraceCostFit::fit(&measured)
    }

    /// The memory the planner lets one task take: nine tenths of [`Self::memory_bytes`]. The
    /// rest is the operating system's, the page cache's and the coordinator's (a height-20
    /// zkML segment at 93% of a 24 GiB machine ran at half speed, the kernel reclaiming
    /// pages).
    pub fn usable_memory_bytes(&self) -> u64 {
        self.memory_bytes / 10 * 9
    }

    /// The memory a measurement counts against [`Self::memory_bytes`]: device memory on a
    /// GPU, the process's on a CPU.
    pub(crate) fn placed_peak(&self, peak_rss_bytes: u64, peak_device_bytes: u64) -> u64 {
        match self.device_kind {
            DeviceKind::Cpu => peak_rss_bytes,
            DeviceKind::Gpu => peak_device_bytes,
        }
    }

    /// Peak memory of a segment task at `height` (device memory on a GPU).
    pub fn segment_memory(&self, height: u32) -> u64 {
        let s = self.nearest_segment(height);
        let peak = self.placed_peak(s.peak_rss_bytes, s.peak_device_bytes);
        scale_pow2(peak as f64, height, s.segment_height) as u64
    }

    /// The leaf's (fixed, per child) seconds, fitted from its measurements.
    fn leaf_fit(&self) -> (f64, f64) {
        let mut leaves: Vec<&NodeCost> = self.nodes.iter().filter(|n| n.kind == "leaf").collect();
        leaves.sort_by_key(|n| n.children);
        match (leaves.first(), leaves.last()) {
            (Some(a), Some(b)) if b.children > a.children => {
                let per_child =
                    ((b.seconds - a.seconds) / (b.children - a.children) as f64).max(0.0);
                (
                    (a.seconds - per_child * a.children as f64).max(0.0),
                    per_child,
                )
            }
            (Some(a), _) => (a.seconds / 2.0, a.seconds / 2.0 / a.children.max(1) as f64),
            _ => (0.0, 0.0),
        }
    }

    /// Seconds to prove an aggregation node of `layer` with `children` children. Where its
    /// children's proof bytes are known and the profile measured them, a leaf is costed by its
    /// line ([`LeafCostFit`]) and another node as the cheapest measured node of its kind at
    /// least as large in children and child bytes (see [`Self::measured_at_least`]).
    pub fn node_seconds(
        &self,
        layer: AggLayer,
        children: u32,
        child_proof_bytes: Option<u64>,
    ) -> f64 {
        if let Some(n) = self.measured_at_least(layer, children, child_proof_bytes) {
            return n.seconds;
        }
        let kind = node_kind(layer);
        let Some(measured) = self
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .min_by_key(|n| n.children.abs_diff(children))
        else {
            return 0.0;
        };
        // Circuits grow in power-of-two steps, so a measurement with exactly these children
        // beats any fit.
        if measured.children == children {
            return measured.seconds;
        }
        let (fixed, per_child) = self.leaf_fit();
        if kind == "leaf" {
            return fixed + per_child * children as f64;
        }
        // Other kinds: the leaf's split between fixed and per-child cost, scaled.
        let at = |k: u32| fixed + per_child * k as f64;
        if at(measured.children) <= 0.0 {
            return measured.seconds;
        }
        measured.seconds * at(children) / at(measured.children)
    }

    /// Peak memory of a node of `layer` with `children` children (device memory on a GPU):
    /// where its children's proof bytes are known, from them as [`Self::node_seconds`] does;
    /// else what was measured with exactly these children, or the kind's largest measured peak.
    pub fn node_memory(
        &self,
        layer: AggLayer,
        children: u32,
        child_proof_bytes: Option<u64>,
    ) -> u64 {
        let peak = |n: &NodeCost| self.placed_peak(n.peak_rss_bytes, n.peak_device_bytes);
        if let Some(n) = self.measured_at_least(layer, children, child_proof_bytes) {
            return n.peak_bytes;
        }
        let kind = node_kind(layer);
        let of_kind = || self.nodes.iter().filter(|n| n.kind == kind);
        of_kind()
            .filter(|n| n.children == children)
            .map(peak)
            .max()
            .or_else(|| of_kind().map(peak).max())
            .unwrap_or(0)
    }

    /// The size of the proof a node of `layer` makes, where its children's proof bytes are
    /// known: see [`Self::measured_proof_bytes`].
    pub fn node_proof_bytes(
        &self,
        layer: AggLayer,
        children: u32,
        child_proof_bytes: Option<u64>,
    ) -> Option<u64> {
        self.measured_proof_bytes(layer, children, child_proof_bytes?)
    }

    /// A node of `layer`'s kind with `children` children over `child_proof_bytes` of child
    /// proofs, costed from the measured nodes of its kind: as the cheapest one at least as
    /// large in both (as many children or more, as many child bytes or more). Where none is,
    /// the most any measured node no larger cost, or the kind's line in child bytes where that
    /// is higher, and for memory the largest smaller node's scaled to the bytes where that is
    /// higher still. `None` where the bytes or such measurements are unknown.
    ///
    /// A recursion node's cost steps as its verifier's traces cross powers of two, and what
    /// crosses them is the bytes and the number of proofs it verifies: an internal-for-leaf node
    /// took 52–58 s over 0.5 MB of child proofs, 86–88 s over 0.95 to 1.42 MB, 109–127 s over
    /// 2.2 to 3.3 MB; an internal-recursive node over one child peaked at 1.3–1.6 GiB, over two
    /// or three at 2.4–2.7 GiB. Between two measurements a step may lie anywhere, so the
    /// larger one is taken: a node is not placed below what it may need.
    fn measured_at_least(
        &self,
        layer: AggLayer,
        children: u32,
        child_proof_bytes: Option<u64>,
    ) -> Option<NodeEstimate> {
        let bytes = child_proof_bytes?;
        let kind = node_kind(layer);
        let measured: Vec<&NodeCost> = self
            .nodes
            .iter()
            .filter(|n| n.kind == kind && n.child_proof_bytes > 0)
            .collect();
        if measured.is_empty() {
            return None;
        }
        let peak = |n: &NodeCost| self.placed_peak(n.peak_rss_bytes, n.peak_device_bytes);
        let cheapest = |of: &[&NodeCost]| NodeEstimate {
            seconds: of.iter().map(|n| n.seconds).fold(f64::INFINITY, f64::min),
            peak_bytes: of.iter().map(|n| peak(n)).min().unwrap_or(0),
        };
        let larger: Vec<&NodeCost> = measured
            .iter()
            .copied()
            .filter(|n| {
                n.children >= children
                    && n.child_proof_bytes as f64 >= bytes as f64 * (1.0 - CHILD_BYTES_TOLERANCE)
            })
            .collect();
        if !larger.is_empty() {
            return Some(cheapest(&larger));
        }
        // Larger than every measurement: the most a smaller one cost, or the kind's line (a
        // kind measured at one size, the wrap, has none: its time stays flat, as a node's time
        // is not proportional to its children's bytes; its memory is scaled below).
        let line = |y: &dyn Fn(&NodeCost) -> f64| -> f64 {
            let points: Vec<(f64, f64)> = measured
                .iter()
                .map(|n| (n.child_proof_bytes as f64, y(n)))
                .collect();
            Line::fit(&points).map_or(0.0, |line| line.at(bytes as f64))
        };
        let smaller = measured
            .iter()
            .filter(|n| n.children <= children && n.child_proof_bytes <= bytes);
        let most_seconds = smaller.clone().map(|n| n.seconds).fold(0.0, f64::max);
        let most_peak = smaller.clone().map(|n| peak(n)).max().unwrap_or(0);
        // Memory, which must not fall short, also as the largest smaller node's in proportion
        // to the bytes: the line, fitted across steps, fell 8% short of an internal-recursive
        // node over three full children (4.25 GiB against 4.61 measured), the proportion 3%
        // over. Also for a kind measured at one size (the wrap): its time stays flat, but its
        // memory does not (calibrated at 1.02 GiB over a 0.31 MB child, it peaked at 1.32 GiB
        // over a 0.43 MB one in the CNN batch of 16; in proportion, 1.40).
        let proportional = smaller.max_by_key(|n| n.child_proof_bytes).map_or(0, |n| {
            (peak(n) as f64 * bytes as f64 / n.child_proof_bytes as f64) as u64
        });
        Some(NodeEstimate {
            seconds: most_seconds.max(line(&|n| n.seconds)),
            peak_bytes: most_peak
                .max(line(&|n| peak(n) as f64) as u64)
                .max(proportional),
        })
    }

    /// The size of the proof a node of `layer` with `children` children over
    /// `child_proof_bytes` makes.
    ///
    /// A leaf's: the smallest proof of the measured leaves at least as large in children and
    /// child bytes, as its cost is taken ([`Self::measured_at_least`]); past every one, the
    /// largest's, or the leaves' line in child bytes where that is larger. A leaf's proof steps
    /// with the bytes it verifies as its circuit's traces cross powers of two, so a line through
    /// all of them misses most: it put a CNN leaf (four segments, 10.1 MB predicted) at
    /// 1.29 MB where it made 1.11 MB, past every measured internal-for-leaf node's children.
    ///
    /// Another node's: its kind's measured node with as many children (else any) nearest in
    /// child bytes. Its proof grows with its children count more than with their bytes
    /// (internal-recursive: 0.31–0.33 MB over one child, 0.43 MB over two).
    fn measured_proof_bytes(&self, layer: AggLayer, children: u32, bytes: u64) -> Option<u64> {
        let kind = node_kind(layer);
        let measured: Vec<&NodeCost> = self
            .nodes
            .iter()
            .filter(|n| n.kind == kind && n.child_proof_bytes > 0 && n.proof_bytes > 0)
            .collect();
        if layer != AggLayer::Leaf {
            return measured
                .iter()
                .min_by_key(|n| {
                    (
                        n.children.abs_diff(children),
                        n.child_proof_bytes.abs_diff(bytes),
                    )
                })
                .map(|n| n.proof_bytes);
        }
        let at_least = measured
            .iter()
            .filter(|n| {
                n.children >= children
                    && n.child_proof_bytes as f64 >= bytes as f64 * (1.0 - CHILD_BYTES_TOLERANCE)
            })
            .map(|n| n.proof_bytes)
            .min();
        if at_least.is_some() {
            return at_least;
        }
        let largest = measured.iter().max_by_key(|n| n.child_proof_bytes)?;
        let points: Vec<(f64, f64)> = measured
            .iter()
            .map(|n| (n.child_proof_bytes as f64, n.proof_bytes as f64))
            .collect();
        let line = Line::fit(&points).map_or(0, |line| line.at(bytes as f64) as u64);
        Some(largest.proof_bytes.max(line))
    }

    /// Seconds a worker spends loading `layer`'s prover before its first node of that kind
    /// (0 where not measured).
    pub fn prover_load_seconds(&self, layer: AggLayer) -> f64 {
        self.prover_load_seconds
            .get(node_kind(layer))
            .copied()
            .unwrap_or(0.0)
    }

    /// The most memory any node of `layer` was measured to need, whatever its children
    /// (device memory on a GPU): what a node is placed by before its children are known.
    pub fn node_memory_ceiling(&self, layer: AggLayer) -> u64 {
        let kind = node_kind(layer);
        self.nodes
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| self.placed_peak(n.peak_rss_bytes, n.peak_device_bytes))
            .max()
            .unwrap_or(0)
    }
}

/// A segment's peak memory and proving seconds as
/// `base + a · other main cells + b · LogUp cells + c · memory chips' main cells`, each fitted
/// by least squares over measured segments.
///
/// Measured on OpenVM, a segment's proof peaks in LogUp's fractional sumcheck, whose size is
/// the LogUp cells, on top of the committed main traces; its time splits between committing
/// (main cells) and the sumchecks (LogUp cells). See `docs/benchmarks.md`, "Where a segment's
/// memory and time go". The memory chips' cells are the executor's bound, not what is
/// committed ([`TraceSize::memory_cells`]), so they get their own coefficient where the
/// measured segments tell it apart (a memory-heavy program among them), else the main cells'.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceCostFit {
    /// Peak memory: bytes, then bytes per other main cell, per LogUp cell, per memory chip cell.
    pub memory: [f64; 4],
    /// Proving time: seconds, then seconds per other main cell, per LogUp cell, per memory
    /// chip cell.
    pub seconds: [f64; 4],
    /// The least peak any measured segment had: no segment is predicted below it. The fit is
    /// made by full segments and its constant comes out small (0.13 GB), where a worker holds
    /// its keys and program whatever it proves: a CNN job's last, partial segment was
    /// predicted at 1.00 GiB and peaked at 1.71, above calibration's smallest (1.60).
    pub least_memory: f64,
}

impl TraceCostFit {
    /// Fits both costs to `measured` (trace size, peak bytes, seconds). Coefficients are
    /// never negative (a feature that would get a negative one is left out). `None` with fewer
    /// than three measurements of different sizes, which cannot separate the two measures.
    /// Where no measured segment's memory chips are known, or fewer than four sizes were
    /// measured, their cells count as main cells.
    pub fn fit(measured: &[(TraceSize, f64, f64)]) -> Option<Self> {
        let mut sizes: Vec<TraceSize> = measured.iter().map(|m| m.0).collect();
        sizes.sort_by_key(|s| (s.main_cells, s.logup_cells, s.memory_cells));
        sizes.dedup();
        if sizes.len() < 3 {
            return None;
        }
        let memory: Vec<f64> = measured.iter().map(|m| m.1).collect();
        let seconds: Vec<f64> = measured.iter().map(|m| m.2).collect();
        let least_memory = memory.iter().copied().fold(f64::INFINITY, f64::min);
        let split = sizes.len() >= 4 && sizes.iter().any(|s| s.memory_cells > 0);
        if split {
            let x: Vec<[f64; 4]> = measured.iter().map(|(size, ..)| features(*size)).collect();
            return Some(Self {
                memory: nonnegative_least_squares(&x, &memory)?,
                seconds: nonnegative_least_squares(&x, &seconds)?,
                least_memory,
            });
        }
        let x: Vec<[f64; 3]> = measured
            .iter()
            .map(|(size, ..)| [1.0, size.main_cells as f64, size.logup_cells as f64])
            .collect();
        let joint = |[base, main, logup]: [f64; 3]| [base, main, logup, main];
        Some(Self {
            memory: joint(nonnegative_least_squares(&x, &memory)?),
            seconds: joint(nonnegative_least_squares(&x, &seconds)?),
            least_memory,
        })
    }

    /// Predicted peak memory of a segment of this size, in bytes.
    pub fn memory_bytes(&self, size: TraceSize) -> u64 {
        apply(&self.memory, size).max(self.least_memory) as u64
    }

    /// Predicted seconds to prove a segment of this size.
    pub fn seconds(&self, size: TraceSize) -> f64 {
        apply(&self.seconds, size).max(0.0)
    }
}

/// The fit's features of a segment: 1, its main cells other than the memory chips', its LogUp
/// cells, the memory chips' main cells.
fn features(size: TraceSize) -> [f64; 4] {
    let memory = size.memory_cells.min(size.main_cells);
    [
        1.0,
        (size.main_cells - memory) as f64,
        size.logup_cells as f64,
        memory as f64,
    ]
}

fn apply(c: &[f64; 4], size: TraceSize) -> f64 {
    features(size).iter().zip(c).map(|(x, c)| x * c).sum()
}

/// Least squares `y ≈ x · c` with every `c[i] >= 0`: the best of the fits over each subset of
/// the `N` features whose coefficients all come out non-negative (at most four features make
/// fifteen subsets, so trying them all is exact and cheap).
pub(crate) fn nonnegative_least_squares<const N: usize>(
    x: &[[f64; N]],
    y: &[f64],
) -> Option<[f64; N]> {
    let mut best: Option<([f64; N], f64)> = None;
    for subset in 1u32..(1 << N) {
        let used: Vec<usize> = (0..N).filter(|i| subset & (1 << i) != 0).collect();
        let Some(solution) = least_squares(x, y, &used) else {
            continue;
        };
        if solution.iter().any(|&c| c < 0.0) {
            continue;
        }
        let mut c = [0.0; N];
        for (&i, &value) in used.iter().zip(&solution) {
            c[i] = value;
        }
        let residual: f64 = x
            .iter()
            .zip(y)
            .map(|(row, &y)| (row.iter().zip(&c).map(|(a, b)| a * b).sum::<f64>() - y).powi(2))
            .sum();
        if best.is_none_or(|(_, r)| residual < r) {
            best = Some((c, residual));
        }
    }
    best.map(|(c, _)| c)
}

/// Ordinary least squares over the features `used`, through the normal equations (columns
/// scaled to 1 first: cells run to 10^8, the constant is 1). `None` if they are singular.
fn least_squares<const N: usize>(x: &[[f64; N]], y: &[f64], used: &[usize]) -> Option<Vec<f64>> {
    let n = used.len();
    let scale: Vec<f64> = used
        .iter()
        .map(|&j| x.iter().map(|row| row[j].abs()).fold(0.0, f64::max))
        .collect();
    if scale.iter().any(|&s| s == 0.0) {
        return None;
    }
    // Augmented normal equations [XᵀX | Xᵀy] in the scaled columns.
    let mut a = vec![vec![0.0; n + 1]; n];
    for (row, &target) in x.iter().zip(y) {
        let v: Vec<f64> = used.iter().zip(&scale).map(|(&j, s)| row[j] / s).collect();
        for i in 0..n {
            for k in 0..n {
                a[i][k] += v[i] * v[k];
            }
            a[i][n] += v[i] * target;
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..n {
        let pivot = (col..n).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        for r in 0..n {
            if r != col {
                let f = a[r][col] / a[col][col];
                for k in col..=n {
                    a[r][k] -= f * a[col][k];
                }
            }
        }
    }
    Some((0..n).map(|i| a[i][n] / a[i][i] / scale[i]).collect())
}

/// `value` measured at height `from`, doubled (or halved) per step to height `to`.
fn scale_pow2(value: f64, to: u32, from: u32) -> f64 {
    value * 2f64.powi(to as i32 - from as i32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn profile() -> DeviceProfile {
        DeviceProfile {
            format: PROFILE_FORMAT.into(),
            format_version: PROFILE_FORMAT_VERSION,
            plait_version: "0.1.0".into(),
            backend: "openvm".into(),
            backend_version: "2.0".into(),
            device: "test".into(),
            device_kind: DeviceKind::Cpu,
            cores: 2,
            memory_bytes: 24 << 30,
            tree: AggTreeShape::default(),
            vm_config: "rv32im".into(),
            segments: vec![
                SegmentCost {
                    segment_height: 19,
                    instructions: 800_000,
                    seconds: 50.0,
                    peak_rss_bytes: 2 << 30,
                    peak_device_bytes: 0,
                    program: None,
                    trace_size: None,
                    ..Default::default()
                },
                SegmentCost {
                    segment_height: 20,
                    instructions: 1_700_000,
                    seconds: 110.0,
                    peak_rss_bytes: 4 << 30,
                    peak_device_bytes: 0,
                    program: None,
                    trace_size: None,
                    ..Default::default()
                },
            ],
            nodes: vec![
                NodeCost {
                    kind: "leaf".into(),
                    children: 1,
                    seconds: 60.0,
                    peak_rss_bytes: 5 << 30,
                    peak_device_bytes: 0,
                    ..Default::default()
                },
                NodeCost {
                    kind: "leaf".into(),
                    children: 2,
                    seconds: 80.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                    ..Default::default()
                },
                NodeCost {
                    kind: "internal-for-leaf".into(),
                    children: 1,
                    seconds: 70.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                    ..Default::default()
                },
                NodeCost {
                    kind: "internal-recursive".into(),
                    children: 1,
                    seconds: 60.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                    ..Default::default()
                },
                NodeCost {
                    kind: "wrap".into(),
                    children: 1,
                    seconds: 36.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                    ..Default::default()
                },
            ],
            prover_load_seconds: Default::default(),
        }
    }

    /// A synthetic GPU: `profile()`'s costs a hundred times faster, placed by 80 GiB of
    /// device memory, each task needing a third of its host peak on the device.
    pub fn gpu_profile() -> DeviceProfile {
        let mut p = profile();
        p.device = "synthetic GPU".into();
        p.device_kind = DeviceKind::Gpu;
        p.memory_bytes = 80 << 30;
        for s in &mut p.segments {
            s.seconds /= 100.0;
            s.peak_device_bytes = s.peak_rss_bytes / 3;
        }
        for n in &mut p.nodes {
            n.seconds /= 100.0;
            n.peak_device_bytes = n.peak_rss_bytes / 3;
        }
        p
    }

    #[test]
    fn a_gpu_profile_is_placed_by_device_memory() {
        let gpu = gpu_profile();
        assert_eq!(gpu.segment_memory(19), (2 << 30) / 3);
        assert_eq!(gpu.node_memory_ceiling(AggLayer::Wrap), (6 << 30) / 3);
        assert_eq!(profile().segment_memory(19), 2 << 30);
        // Profiles written before devices had kinds are a CPU's.
        let mut json = serde_json::to_value(profile()).unwrap();
        json.as_object_mut().unwrap().remove("device-kind");
        let old: DeviceProfile = serde_json::from_value(json).unwrap();
        assert_eq!(old.device_kind, DeviceKind::Cpu);
        assert!(serde_json::to_string(&gpu)
            .unwrap()
            .contains("\"device-kind\":\"gpu\""));
    }

    #[test]
    fn interpolates_segments_and_fits_nodes() {
        let p = profile();
        assert_eq!(p.segment_seconds(19, 800_000), 50.0);
        assert_eq!(p.segment_seconds(19, 400_000), 25.0);
        assert_eq!(p.segment_seconds(19, 1), 50.0 / 8.0);
        assert_eq!(p.segment_seconds(21, 3_400_000), 220.0); // doubled from 20
        assert_eq!(p.full_segment_instructions(18), 400_000);
        // leaf: 40 s fixed + 20 s per child.
        assert_eq!(p.node_seconds(AggLayer::Leaf, 4, None), 120.0);
        // internal-for-leaf measured 70 s with 1 child: × (40 + 60) / (40 + 20).
        assert!(
            (p.node_seconds(AggLayer::InternalForLeaf, 3, None) - 70.0 * 100.0 / 60.0).abs() < 1e-9
        );
        assert_eq!(p.node_seconds(AggLayer::Wrap, 1, None), 36.0);
    }

    #[test]
    fn refuses_profiles_of_other_versions() {
        let p = profile();
        let tree = AggTreeShape::default();
        assert_eq!(p.check("0.1.0", "openvm", "2.0", tree), Ok(()));
        let err = p.check("0.2.0", "openvm", "2.0", tree).unwrap_err();
        assert!(err
            .to_string()
            .contains("Plait version is 0.1.0, this Plait needs 0.2.0"));
        let err = p.check("0.1.0", "openvm", "2.1", tree).unwrap_err();
        assert!(err.to_string().contains("run `plait calibrate` again"));
        let mut partial = p.clone();
        partial.nodes.retain(|n| n.kind != "wrap");
        let err = partial.check("0.1.0", "openvm", "2.0", tree).unwrap_err();
        assert_eq!(err, ProfileError::Missing("wrap node".into()));
        // Profiles come from workers: their names are bounded.
        let mut long = p.clone();
        long.vm_config = "x".repeat(33);
        assert_eq!(
            long.check("0.1.0", "openvm", "2.0", tree),
            Err(ProfileError::OutOfBounds)
        );
        long.vm_config = "rv32im".into();
        long.device = "x".repeat(129);
        assert_eq!(
            long.check("0.1.0", "openvm", "2.0", tree),
            Err(ProfileError::OutOfBounds)
        );
    }

    fn sized(main_cells: u64, logup_cells: u64) -> TraceSize {
        TraceSize {
            main_cells,
            logup_cells,
            interaction_cells: 0,
            memory_cells: 0,
        }
    }

    #[test]
    fn the_trace_fit_recovers_a_linear_cost_and_never_goes_negative() {
        let truth = |size: TraceSize| {
            let memory = 0.75e9 + 16.0 * size.main_cells as f64 + 150.0 * size.logup_cells as f64;
            let seconds = 0.4e-6 * size.main_cells as f64 + 0.9e-6 * size.logup_cells as f64;
            (size, memory, seconds)
        };
        let measured: Vec<_> = [(37, 25), (62, 25), (70, 26), (124, 26)]
            .into_iter()
            .map(|(main, log)| truth(sized(main * 1_000_000, 1 << log)))
            .collect();
        let fit = TraceCostFit::fit(&measured).unwrap();
        let unseen = sized(155_000_000, 1 << 27);
        let (_, memory, seconds) = truth(unseen);
        assert!(
            (fit.memory_bytes(unseen) as f64 / memory - 1.0).abs() < 1e-6,
            "{fit:?}"
        );
        assert!(
            (fit.seconds(unseen) / seconds - 1.0).abs() < 1e-6,
            "{fit:?}"
        );
        assert!(
            fit.seconds[0].abs() < 1e-6,
            "a zero base stays zero: {fit:?}"
        );
        // Two sizes cannot separate three coefficients.
        assert_eq!(
            TraceCostFit::fit(&[measured[0], measured[1], measured[0]]),
            None
        );
        // Costs that fall as cells grow would need negative coefficients: the fit drops them.
        let odd: Vec<_> = measured
            .iter()
            .map(|&(size, m, t)| (size, 1e10 - m, t))
            .collect();
        let fit = TraceCostFit::fit(&odd).unwrap();
        assert!(fit.memory.iter().all(|&c| c >= 0.0), "{fit:?}");
    }

    /// A segment far smaller than calibration's (a job's last, partial one) is not predicted
    /// below the least any measured segment needed: the fit's constant is small, and a worker
    /// holds its keys and program whatever it proves.
    #[test]
    fn no_segment_is_predicted_below_the_smallest_measured() {
        let measured = [
            (sized(37_700_000, 1 << 25), 6.0e9, 45.0),
            (sized(62_500_000, 1 << 25), 6.3e9, 58.0),
            (sized(70_900_000, 1 << 26), 11.2e9, 101.0),
            (sized(8_000_000, 1 << 23), 1.6e9, 21.0),
        ];
        let fit = TraceCostFit::fit(&measured).unwrap();
        assert_eq!(fit.least_memory, 1.6e9);
        assert_eq!(fit.memory_bytes(sized(1_000, 1 << 10)), 1_600_000_000);
        assert!(fit.memory_bytes(sized(70_900_000, 1 << 26)) > 11_000_000_000);
    }

    /// The executor bounds the memory chips' rows far above what is committed where a program
    /// touches many memory blocks; with such a program among the measured segments the fit
    /// gives their cells a coefficient of their own, else it counts them as main cells.
    #[test]
    fn memory_chips_get_their_own_coefficient_where_measured_apart() {
        let truth = |main: u64, logup: u64, memory: u64| {
            let size = TraceSize {
                main_cells: main,
                logup_cells: logup,
                interaction_cells: 0,
                memory_cells: memory,
            };
            let other = (main - memory) as f64;
            let memory_bytes = 0.7e9 + 16.0 * other + 150.0 * logup as f64 + 1.0 * memory as f64;
            let seconds = 0.5e-6 * other + 1e-6 * logup as f64 + 0.02e-6 * memory as f64;
            (size, memory_bytes, seconds)
        };
        let fib_19 = truth(37_700_000, 1 << 25, 5_000_000);
        let sha_19 = truth(62_500_000, 1 << 25, 5_000_000);
        let fib_20 = truth(70_900_000, 1 << 26, 10_000_000);
        let walk_19 = truth(188_700_000, 1 << 23, 180_000_000);
        let fit = TraceCostFit::fit(&[fib_19, sha_19, fib_20, walk_19]).unwrap();
        let (walk_20, memory, seconds) = truth(377_000_000, 1 << 24, 360_000_000);
        assert!(
            (fit.memory_bytes(walk_20) as f64 / memory - 1.0).abs() < 1e-6,
            "{fit:?}"
        );
        assert!(
            (fit.seconds(walk_20) / seconds - 1.0).abs() < 1e-6,
            "{fit:?}"
        );
        // Counted as main cells, the walk would cost ten times what it does.
        let unknown = |(size, m, t): (TraceSize, f64, f64)| {
            let size = TraceSize {
                memory_cells: 0,
                ..size
            };
            (size, m, t)
        };
        let joint = TraceCostFit::fit(&[fib_19, sha_19, fib_20].map(unknown)).unwrap();
        assert_eq!(joint.memory[3], joint.memory[1]);
        assert_eq!(joint.seconds[3], joint.seconds[1]);
        assert!(joint.seconds(walk_20) > 5.0 * seconds);
    }

    /// The calibration segments `bench_segment_memory` measured on the 2-core benchmark
    /// machine under `rv32im-sha2` (fib at heights 19 and 20, sha-chain at 19), and the zkML
    /// guest's segments at 19 and 20: (trace size, peak RSS bytes, seconds).
    pub const MEASURED_FIB_19: (TraceSize, f64, f64) = (
        TraceSize {
            main_cells: 37_208_972,
            logup_cells: 1 << 25,
            interaction_cells: 0,
            memory_cells: 0,
        },
        6_395_949_056.0,
        35.5,
    );
    pub const MEASURED_SHA_CHAIN_19: (TraceSize, f64, f64) = (
        TraceSize {
            main_cells: 62_160_140,
            logup_cells: 1 << 25,
            interaction_cells: 0,
            memory_cells: 0,
        },
        6_793_613_312.0,
        44.7,
    );
    pub const MEASURED_FIB_20: (TraceSize, f64, f64) = (
        TraceSize {
            main_cells: 70_370_188,
            logup_cells: 1 << 26,
            interaction_cells: 0,
            memory_cells: 0,
        },
        12_025_425_920.0,
        78.2,
    );
    pub const MEASURED_ZKML_19: (TraceSize, f64, f64) = (
        TraceSize {
            main_cells: 91_252_776,
            logup_cells: 1 << 26,
            interaction_cells: 0,
            memory_cells: 0,
        },
        12_191_944_704.0,
        79.3,
    );
    pub const MEASURED_ZKML_20: (TraceSize, f64, f64) = (
        TraceSize {
            main_cells: 155_776_564,
            logup_cells: 1 << 27,
            interaction_cells: 0,
            memory_cells: 0,
        },
        23_486_205_952.0,
        167.5,
    );

    /// [`profile`] with the measured calibration segments in place of its per-height ones.
    pub fn fitted_profile() -> DeviceProfile {
        let mut p = profile();
        p.segments = [
            (19, "fib", MEASURED_FIB_19),
            (19, "sha-chain", MEASURED_SHA_CHAIN_19),
            (20, "fib", MEASURED_FIB_20),
        ]
        .into_iter()
        .map(|(h, program, (size, memory, seconds))| SegmentCost {
            segment_height: h,
            instructions: 1_000_000 << (h - 19),
            seconds,
            peak_rss_bytes: memory as u64,
            peak_device_bytes: 0,
            program: Some(program.into()),
            trace_size: Some(size),
            ..Default::default()
        })
        .collect();
        p
    }

    /// The figures `bench_segment_memory` measured on the 2-core benchmark machine under
    /// `rv32im-sha2` (docs/benchmarks.md, "Where a segment's memory and time go"): fitted on
    /// the calibration programs' segments (fib at heights 19 and 20, sha-chain at 19), the
    /// model predicts the zkML guest's segments, whose chip mix it never saw, within the
    /// targets (memory 15%, time 20%). The per-height figure puts a zkML segment at half its
    /// memory.
    #[test]
    fn fitted_on_fib_and_sha_chain_the_model_predicts_zkml_segments() {
        let fit =
            TraceCostFit::fit(&[MEASURED_FIB_19, MEASURED_SHA_CHAIN_19, MEASURED_FIB_20]).unwrap();
        for (size, memory, seconds) in [MEASURED_ZKML_19, MEASURED_ZKML_20] {
            let memory_error = fit.memory_bytes(size) as f64 / memory - 1.0;
            let time_error = fit.seconds(size) / seconds - 1.0;
            assert!(
                memory_error.abs() < 0.15,
                "memory off by {memory_error:.3}: {fit:?}"
            );
            assert!(
                time_error.abs() < 0.20,
                "time off by {time_error:.3}: {fit:?}"
            );
        }

        // Through a profile: a sized segment goes by the fit, an unsized one by its height.
        let p = fitted_profile();
        let zkml_20 = MEASURED_ZKML_20;
        assert_eq!(
            p.segment_memory_sized(20, Some(zkml_20.0)),
            fit.memory_bytes(zkml_20.0)
        );
        assert_eq!(p.segment_memory_sized(20, None), p.segment_memory(20));
        assert!(p.segment_memory(20) < zkml_20.1 as u64 * 6 / 10);
        assert_eq!(
            p.segment_seconds_sized(20, 3_000_000, Some(zkml_20.0)),
            fit.seconds(zkml_20.0)
        );
    }

    #[test]
    fn format_1_profiles_are_read_and_unknown_formats_refused() {
        let mut p = profile();
        p.format_version = 1;
        assert_eq!(
            p.check("0.1.0", "openvm", "2.0", AggTreeShape::default()),
            Ok(())
        );
        assert_eq!(p.trace_fit(), None, "format 1 has no trace sizes");
        p.format_version = PROFILE_FORMAT_VERSION + 1;
        assert!(matches!(
            p.check("0.1.0", "openvm", "2.0", AggTreeShape::default()),
            Err(ProfileError::Mismatch {
                what: "format version",
                ..
            })
        ));
    }
}
