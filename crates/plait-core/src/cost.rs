//! The cost model: what a task costs on a device, from that device's measured profile.
//!
//! A profile (`plait calibrate` writes it) holds measured proving seconds and peak memory for
//! full segments at several segment heights and for each aggregation node kind. The model
//! interpolates between them:
//! - a segment costs its height's full-segment time scaled by how full it is (never below an
//!   eighth: small traces still pay fixed costs); a height between or beyond the measured ones
//!   doubles per height step from the nearest measured one;
//! - a node costs what was measured for its kind and number of children (calibration measures
//!   leaves of 1 to 4 children, other kinds with 1); other counts use `fixed + per_child ·
//!   children`, fitted from the leaf's fewest- and most-children measurements, with the
//!   leaf's fixed fraction for other kinds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AggLayer, AggTreeShape, DeviceKind};

pub const PROFILE_FORMAT: &str = "plait-device-profile";
pub const PROFILE_FORMAT_VERSION: u32 = 1;

pub(crate) fn rv32im() -> String {
    "rv32im".into()
}

/// One device's measured costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceProfile {
    pub format: String,
    pub format_version: u32,
    pub plait_version: String,
    pub backend: String,
    pub backend_version: String,
    /// A name for the device (host name by default).
    pub device: String,
    /// What proved: the CPU, or a GPU. Profiles written before GPUs measured a CPU.
    #[serde(default)]
    pub device_kind: DeviceKind,
    pub cores: u32,
    /// The memory tasks are placed by: the machine's for a CPU, the GPU's own for a GPU.
    pub memory_bytes: u64,
    pub tree: AggTreeShape,
    /// The VM config the measurements were made under (`rv32im`, `rv32im-sha2`): a config with
    /// more chips proves each segment more slowly. Profiles written before configs existed
    /// measured `rv32im`.
    #[serde(default = "rv32im")]
    pub vm_config: String,
    pub segments: Vec<SegmentCost>,
    pub nodes: Vec<NodeCost>,
}

/// A full segment proven at one segment height.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SegmentCost {
    pub segment_height: u32,
    pub instructions: u64,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    /// On a GPU: the most device memory in use while it was proven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak_device_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One aggregation node proven: its kind (`leaf`, `internal-for-leaf`, `internal-recursive`,
/// `wrap`) and how many children it joined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeCost {
    pub kind: String,
    pub children: u32,
    pub seconds: f64,
    pub peak_rss_bytes: u64,
    /// On a GPU: the most device memory in use while it was proven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak_device_bytes: u64,
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

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("not a device profile (format {0:?}); `plait calibrate` writes them")]
    NotAProfile(String),
    #[error(
        "profile {what} is {found}, this Plait needs {expected}: run `plait calibrate` again \
         on that device"
    )]
    Mismatch {
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error("profile has no {0} measurement; run `plait calibrate` to finish it")]
    Missing(String),
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
        let checks = [
            mismatch(
                "format version",
                self.format_version.to_string(),
                PROFILE_FORMAT_VERSION.to_string(),
            ),
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
            || !self
                .segments
                .iter()
                .all(|s| finite(s.seconds) && s.instructions > 0)
            || !self.nodes.iter().all(|n| {
                finite(n.seconds) && n.kind.len() <= 32 && crate::text::is_printable(&n.kind)
            })
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

    /// The measured full segment nearest to `height`.
    fn nearest_segment(&self, height: u32) -> &SegmentCost {
        self.segments
            .iter()
            .min_by_key(|s| s.segment_height.abs_diff(height))
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

    /// The memory a measurement counts against [`Self::memory_bytes`]: device memory on a
    /// GPU, the process's on a CPU.
    fn placed_peak(&self, peak_rss_bytes: u64, peak_device_bytes: u64) -> u64 {
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

    /// Seconds to prove an aggregation node of `layer` with `children` children.
    pub fn node_seconds(&self, layer: AggLayer, children: u32) -> f64 {
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

    /// Peak memory of a node of `layer` (device memory on a GPU).
    pub fn node_memory(&self, layer: AggLayer) -> u64 {
        let kind = node_kind(layer);
        self.nodes
            .iter()
            .filter(|n| n.kind == kind)
            .map(|n| self.placed_peak(n.peak_rss_bytes, n.peak_device_bytes))
            .max()
            .unwrap_or(0)
    }
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
                },
                SegmentCost {
                    segment_height: 20,
                    instructions: 1_700_000,
                    seconds: 110.0,
                    peak_rss_bytes: 4 << 30,
                    peak_device_bytes: 0,
                },
            ],
            nodes: vec![
                NodeCost {
                    kind: "leaf".into(),
                    children: 1,
                    seconds: 60.0,
                    peak_rss_bytes: 5 << 30,
                    peak_device_bytes: 0,
                },
                NodeCost {
                    kind: "leaf".into(),
                    children: 2,
                    seconds: 80.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                },
                NodeCost {
                    kind: "internal-for-leaf".into(),
                    children: 1,
                    seconds: 70.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                },
                NodeCost {
                    kind: "internal-recursive".into(),
                    children: 1,
                    seconds: 60.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                },
                NodeCost {
                    kind: "wrap".into(),
                    children: 1,
                    seconds: 36.0,
                    peak_rss_bytes: 6 << 30,
                    peak_device_bytes: 0,
                },
            ],
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
        assert_eq!(gpu.node_memory(AggLayer::Wrap), (6 << 30) / 3);
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
        assert_eq!(p.node_seconds(AggLayer::Leaf, 4), 120.0);
        // internal-for-leaf measured 70 s with 1 child: × (40 + 60) / (40 + 20).
        assert!((p.node_seconds(AggLayer::InternalForLeaf, 3) - 70.0 * 100.0 / 60.0).abs() < 1e-9);
        assert_eq!(p.node_seconds(AggLayer::Wrap, 1), 36.0);
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
}
