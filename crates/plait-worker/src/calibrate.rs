//! How a device measures itself into a profile (`plait calibrate`): one segment proof of each
//! program at each segment height, and every aggregation node kind at the lowest height
//! (leaves and internal nodes over small and over full children, the wrap), each timed, with
//! the process's peak memory and the sizes of the proofs it took and made. Each step is saved
//! as soon as it is measured, with the proofs it made, so an interrupted calibration resumes
//! where it stopped.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use plait_core::{
    cost::{DeviceProfile, NodeCost, SegmentCost},
    AggLayer, Device, ProgramInput,
};
use plait_prover::{
    BackendError, ProgramImage, ProofBlob, ProverBackend, ProvingParams, SegmentStart, VmConfig,
};

use crate::usage::{process_usage, reset_peak_rss};

/// What to measure, with what. Segments are measured for three programs with different chip
/// mixes, so that the cost fit can tell main cells from LogUp cells: the Fibonacci guest
/// (`guests/fib`; input: the number of iterations), the SHA-256 chain (`guests/sha-chain`;
/// input: iterations, then a buffer) and a random walk over a 4 MiB table (`guests/mem-walk`;
/// input: steps, then the table's log2 size in words), whose segments are mostly memory
/// chips by the executor's bound. All three make the aggregation workload: fib's segment
/// proofs are small, SHA-256's large, and a walk over a 256 KiB table, which touches many
/// chips in every segment, makes the largest (as large as a zkML guest's).
pub struct Calibration<'a> {
    /// The backend whose proving is measured.
    pub backend: &'a dyn ProverBackend,
    /// The Fibonacci guest's ELF.
    pub fib: &'a ProgramImage,
    /// The SHA-256 chain guest's ELF.
    pub sha_chain: &'a ProgramImage,
    /// The memory walk guest's ELF.
    pub mem_walk: &'a ProgramImage,
    /// The VM config measured (each has its own chips, keys and costs).
    pub vm_config: VmConfig,
    /// Ascending; the lowest also measures the aggregation nodes.
    pub heights: Vec<u32>,
    /// Where the profile is saved after each step.
    pub profile_path: PathBuf,
    /// Where the proofs made on the way are kept (for a resumed run).
    pub work_dir: PathBuf,
}

/// Progress, for whoever shows it.
pub enum Progress {
    /// Now doing `what`; `done` of `total` steps are done.
    Step {
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
        /// The step now under way.
        what: String,
    },
    /// A step was measured: a line to show.
    Measured(String),
}

/// Why a calibration stopped.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Proving or key generation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The profile or a kept proof could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A program of the aggregation workload cut into too few segments for its leaves.
    #[error("the aggregation workload cut into too few segments")]
    TooFewSegments,
    /// A resumed run lost a proof that a later step aggregates.
    #[error("the {0} proof of the earlier steps is missing")]
    MissingProof(String),
}

/// A profile with nothing measured yet, of `device` (what the backend proves on), named `name`.
/// Tasks are placed by its memory: the machine's for a CPU, the GPU's own for a GPU.
pub fn new_profile(
    backend: &dyn ProverBackend,
    name: String,
    device: &Device,
    vm_config: VmConfig,
) -> DeviceProfile {
    let info = backend.info();
    DeviceProfile {
        plait_version: env!("CARGO_PKG_VERSION").into(),
        backend: info.name,
        backend_version: info.version,
        device: name,
        device_kind: device.kind,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: device.memory_bytes,
        vm_config: vm_config.name().into(),
        ..DeviceProfile::default()
    }
}

/// Whether `old` (read from the profile path) was measured by this Plait and backend, for
/// this VM config: then a calibration resumes it rather than starting over.
pub fn resumable(old: &DeviceProfile, fresh: &DeviceProfile) -> bool {
    // Version 3 lacks only the memory chips' cells, which `Calibration::run` recomputes.
    (old.format_version == fresh.format_version
        || (old.format_version == 3 && fresh.format_version == 4))
        && old.plait_version == fresh.plait_version
        && old.backend_version == fresh.backend_version
        && old.vm_config == fresh.vm_config
        && old.device_kind == fresh.device_kind
}

/// `old`, to be resumed, in the current format (the run adds what an older one lacked), if it
/// is [`resumable`].
pub fn resume(old: DeviceProfile, fresh: &DeviceProfile) -> Option<DeviceProfile> {
    resumable(&old, fresh).then(|| DeviceProfile {
        format_version: fresh.format_version,
        ..old
    })
}

/// Runs one measured step: resets the peak RSS, runs `f`; its result, seconds and peak RSS.
fn measured<T>(f: impl FnOnce() -> Result<T, BackendError>) -> Result<(T, f64, u64), BackendError> {
    reset_peak_rss();
    let started = Instant::now();
    let value = f()?;
    Ok((
        value,
        started.elapsed().as_secs_f64(),
        process_usage().peak_rss_bytes,
    ))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `, device 12.3 GiB` for a task proven on a GPU, nothing on a CPU.
fn device_peak(bytes: u64) -> String {
    if bytes == 0 {
        String::new()
    } else {
        format!(", device {:.2} GiB", gib(bytes))
    }
}

impl Calibration<'_> {
    /// Proves the first segment of `program` at height `h`, and records it with its trace size.
    fn measure_segment(
        &self,
        profile: &mut DeviceProfile,
        (name, program, input): (&str, &ProgramImage, &ProgramInput),
        h: u32,
        done: usize,
        total: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CalibrationError> {
        let backend = self.backend;
        let params = self.params(h);
        progress(Progress::Step {
            done,
            total,
            what: format!("{name} at height {h}: execution"),
        });
        let plan = backend.execute(program, input, &params)?;
        progress(Progress::Step {
            done,
            total,
            what: format!("{name} segment at height {h}"),
        });
        let seg = &plan.segments[0];
        let last = plan.segments.len() == 1;
        let ((proof, meta), seconds, peak) = measured(|| {
            backend.prove_segment(program, &params, seg, last, SegmentStart::Reexecute(input))
        })?;
        self.write(&format!("h{h}-{name}-segment-0.proof"), &proof)?;
        profile.segments.push(SegmentCost {
            segment_height: h,
            instructions: seg.num_insns,
            seconds,
            peak_rss_bytes: peak,
            peak_device_bytes: meta.device_peak_bytes,
            program: Some(name.into()),
            trace_size: seg.trace_size,
            proof_bytes: proof.0.len() as u64,
        });
        profile
            .segments
            .sort_by(|a, b| (a.segment_height, &a.program).cmp(&(b.segment_height, &b.program)));
        self.save(profile)?;
        let cells = seg.trace_size.map_or(String::new(), |size| {
            format!(
                "; {:.1}M main cells, {:.1}M LogUp cells",
                size.main_cells as f64 / 1e6,
                size.logup_cells as f64 / 1e6
            )
        });
        progress(Progress::Measured(format!(
            "{name} segment at height {h}: {} instructions in {seconds:.1} s ({:.0} per second), peak {:.2} GiB{}{cells}",
            seg.num_insns,
            seg.num_insns as f64 / seconds,
            gib(peak),
            device_peak(meta.device_peak_bytes)
        )));
        Ok(())
    }

    fn save(&self, profile: &DeviceProfile) -> Result<(), CalibrationError> {
        let tmp = self.profile_path.with_extension("tmp");
        let io = |e| CalibrationError::Io(self.profile_path.clone(), e);
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(profile).expect("profiles serialize"),
        )
        .map_err(io)?;
        std::fs::rename(&tmp, &self.profile_path).map_err(io)
    }

    fn write(&self, name: &str, proof: &ProofBlob) -> Result<(), CalibrationError> {
        let path = self.work_dir.join(name);
        std::fs::write(&path, &proof.0).map_err(|e| CalibrationError::Io(path, e))
    }

    fn load(&self, name: &str) -> Option<ProofBlob> {
        std::fs::read(self.work_dir.join(name)).ok().map(ProofBlob)
    }

    fn params(&self, segment_height: u32) -> ProvingParams {
        ProvingParams {
            segment_height,
            vm_config: self.vm_config,
            ..Default::default()
        }
    }

    /// Measures what `profile` lacks, saving it after every step.
    pub fn run(
        &self,
        profile: &mut DeviceProfile,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), CalibrationError> {
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| CalibrationError::Io(self.work_dir.clone(), e))?;
        // Every node kind, at the lowest height, over the segments of three longer runs: four
        // of fib (small proofs), twelve of the SHA-256 chain (large ones) and four of a walk
        // over a 256 KiB table (the largest: as large as a zkML guest's). Leaves of 1 to 4
        // children (a leaf's circuit grows in power-of-two steps, so its cost is not linear in
        // its children), and internal nodes over small and over full children: a recursion
        // node's cost steps with the bytes it verifies, and the planner costs a node as the
        // cheapest measured one at least as large, so the largest nodes a job makes must be
        // among those measured.
        let lowest = self.heights[0];
        let shift = lowest.saturating_sub(19);
        let fib_iterations = 240_000u64 << shift;
        let sha_iterations = 3_200u32 << shift;
        let walk_steps = 125_000u32 << shift;
        let runs = [
            (
                "fib",
                self.fib,
                fib_input(fib_iterations),
                format!("h{lowest}-fib{fib_iterations}"),
                4,
            ),
            (
                "sha",
                self.sha_chain,
                sha_chain_input(sha_iterations),
                format!("h{lowest}-sha-chain{sha_iterations}"),
                12,
            ),
            (
                "walk",
                self.mem_walk,
                mem_walk_input(walk_steps, 16),
                format!("h{lowest}-mem-walk{walk_steps}"),
                4,
            ),
        ];
        // Children of one node must cover consecutive segments of one run: the recursion
        // checks each child ends where the next begins.
        let sha = format!("h{lowest}-sha-chain-segment-0");
        let steps: Vec<(&str, AggLayer, &str, Vec<&str>)> = vec![
            ("leaf", AggLayer::Leaf, "leaf-1", vec!["fib0"]),
            ("leaf", AggLayer::Leaf, "leaf-2", vec!["fib0", "fib1"]),
            (
                "leaf",
                AggLayer::Leaf,
                "leaf-3",
                vec!["fib0", "fib1", "fib2"],
            ),
            (
                "leaf",
                AggLayer::Leaf,
                "leaf-4",
                vec!["fib0", "fib1", "fib2", "fib3"],
            ),
            ("leaf", AggLayer::Leaf, "leaf-sha", vec![sha.as_str()]),
            ("leaf", AggLayer::Leaf, "leaf-seg1", vec!["fib1"]),
            ("leaf", AggLayer::Leaf, "leaf-seg2", vec!["fib2"]),
            ("leaf", AggLayer::Leaf, "leaf-seg3", vec!["fib3"]),
            (
                "leaf",
                AggLayer::Leaf,
                "sha-leaf-a",
                vec!["sha0", "sha1", "sha2", "sha3"],
            ),
            (
                "leaf",
                AggLayer::Leaf,
                "sha-leaf-b",
                vec!["sha4", "sha5", "sha6", "sha7"],
            ),
            (
                "leaf",
                AggLayer::Leaf,
                "sha-leaf-c",
                vec!["sha8", "sha9", "sha10", "sha11"],
            ),
            (
                "leaf",
                AggLayer::Leaf,
                "walk-leaf",
                vec!["walk0", "walk1", "walk2", "walk3"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl",
                vec!["leaf-2"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-2",
                vec!["leaf-1", "leaf-seg1"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-3",
                vec!["leaf-1", "leaf-seg1", "leaf-seg2"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-seg2",
                vec!["leaf-seg2"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-seg3",
                vec!["leaf-seg3"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-sha-2",
                vec!["sha-leaf-a", "sha-leaf-b"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-sha-c",
                vec!["sha-leaf-c"],
            ),
            (
                "internal-for-leaf",
                AggLayer::InternalForLeaf,
                "ifl-sha-3",
                vec!["sha-leaf-a", "sha-leaf-b", "sha-leaf-c"],
            ),
            (
                "internal-recursive",
                AggLayer::InternalRecursive(0),
                "ir",
                vec!["ifl"],
            ),
            (
                "internal-recursive",
                AggLayer::InternalRecursive(0),
                "ir-2",
                vec!["ifl", "ifl-seg2"],
            ),
            (
                "internal-recursive",
                AggLayer::InternalRecursive(0),
                "ir-3",
                vec!["ifl", "ifl-seg2", "ifl-seg3"],
            ),
            (
                "internal-recursive",
                AggLayer::InternalRecursive(0),
                "ir-sha",
                vec!["ifl-sha-3"],
            ),
            (
                "internal-recursive",
                AggLayer::InternalRecursive(0),
                "ir-sha-2",
                vec!["ifl-sha-2", "ifl-sha-c"],
            ),
            ("wrap", AggLayer::Wrap, "wrap", vec!["ir"]),
        ];
        // A segment per program and height, each run's segments, each node.
        let total = 3 * self.heights.len() + runs.len() + steps.len();
        let mut done = 0;
        let backend = self.backend;
        for &h in &self.heights {
            let params = self.params(h);
            backend.prepare_keys(&params)?;
            // About two segments of each: the first, full, is what is measured.
            let programs = [
                (
                    "fib",
                    self.fib,
                    fib_input(80_000u64 << h.saturating_sub(19)),
                ),
                (
                    "sha-chain",
                    self.sha_chain,
                    sha_chain_input(500u32 << h.saturating_sub(19)),
                ),
                (
                    "mem-walk",
                    self.mem_walk,
                    mem_walk_input(4_000u32 << h.saturating_sub(19), 20),
                ),
            ];
            for (name, program, input) in programs {
                let measured_before = profile
                    .segments
                    .iter_mut()
                    .find(|s| s.segment_height == h && s.program.as_deref() == Some(name));
                match measured_before {
                    None => self.measure_segment(
                        profile,
                        (name, program, &input),
                        h,
                        done,
                        total,
                        progress,
                    )?,
                    // Measured by a version-3 calibration: its trace size, which execution
                    // alone gives, again with the memory chips' cells.
                    Some(s) if s.trace_size.is_some_and(|t| t.memory_cells == 0) => {
                        let plan = backend.execute(program, &input, &params)?;
                        s.trace_size = plan.segments[0].trace_size;
                        self.save(profile)?;
                    }
                    Some(_) => {}
                }
                done += 1;
            }
        }

        // The aggregation workload (`runs`, `steps`), at the lowest height.
        let params = self.params(lowest);
        // Proofs kept for a resumed run are named by the run they belong to: a node joins only
        // proofs of one execution (each child must end where the next begins).
        let mut segs: Vec<(String, ProofBlob)> = Vec::new();
        for (short, program, input, workload, count) in &runs {
            let plan = backend.execute(program, input, &params)?;
            if plan.segments.len() < *count {
                return Err(CalibrationError::TooFewSegments);
            }
            for (i, seg) in plan.segments.iter().enumerate().take(*count) {
                let file = format!("{workload}-segment-{i}.proof");
                let proof = match self.load(&file) {
                    Some(p) => p,
                    None => {
                        progress(Progress::Step {
                            done,
                            total,
                            what: format!("{short} segment {i} of the aggregation workload"),
                        });
                        let last = i + 1 == plan.segments.len();
                        let start = SegmentStart::Reexecute(input);
                        let (proof, _) =
                            backend.prove_segment(program, &params, seg, last, start)?;
                        self.write(&file, &proof)?;
                        proof
                    }
                };
                segs.push((format!("{short}{i}"), proof));
            }
            done += 1;
        }
        // The first node of each kind would otherwise also pay for loading its layer's prover:
        // loaded first, and timed apart (a job's worker pays it once per kind).
        for layer in [
            AggLayer::Leaf,
            AggLayer::InternalForLeaf,
            AggLayer::InternalRecursive(0),
        ] {
            let started = Instant::now();
            backend.prepare_aggregation(&params, layer)?;
            profile.prover_load_seconds.insert(
                plait_core::cost::node_kind(layer).into(),
                started.elapsed().as_secs_f64(),
            );
        }
        self.save(profile)?;
        // Node proofs are named by the runs they cover (the walk's by the first two, as before
        // it was measured: their names do not change, and a resumed run keeps them).
        let workload = format!("{}+{}", runs[0].3, runs[1].3);
        for (kind, layer, name, children) in steps {
            let file = format!("{workload}-{name}.proof");
            let inputs: Vec<ProofBlob> = children
                .iter()
                .map(|c| match segs.iter().find(|(name, _)| name == c) {
                    Some((_, proof)) => Ok(proof.clone()),
                    None if c.starts_with('h') => self
                        .load(&format!("{c}.proof"))
                        .ok_or_else(|| CalibrationError::MissingProof(c.to_string())),
                    None => self
                        .load(&format!("{workload}-{c}.proof"))
                        .ok_or_else(|| CalibrationError::MissingProof(c.to_string())),
                })
                .collect::<Result<_, _>>()?;
            let child_proof_bytes: u64 = inputs.iter().map(|p| p.0.len() as u64).sum();
            let same = |n: &NodeCost| {
                n.kind == kind
                    && n.children == inputs.len() as u32
                    && n.child_proof_bytes == child_proof_bytes
            };
            if profile.nodes.iter().any(same) && self.load(&file).is_some() {
                done += 1;
                continue;
            }
            progress(Progress::Step {
                done,
                total,
                what: format!("{layer} node with {} children", inputs.len()),
            });
            let ((proof, meta), seconds, peak) =
                measured(|| backend.aggregate_with_meta(&params, layer, &inputs))?;
            self.write(&file, &proof)?;
            profile.nodes.push(NodeCost {
                kind: kind.into(),
                children: inputs.len() as u32,
                seconds,
                peak_rss_bytes: peak,
                peak_device_bytes: meta.device_peak_bytes,
                child_proof_bytes,
                proof_bytes: proof.0.len() as u64,
            });
            self.save(profile)?;
            progress(Progress::Measured(format!(
                "{layer} node, {} children ({:.2} MB of proofs): {seconds:.1} s, peak {:.2} GiB{}",
                inputs.len(),
                child_proof_bytes as f64 / 1e6,
                gib(peak),
                device_peak(meta.device_peak_bytes)
            )));
            done += 1;
        }
        Ok(())
    }
}

fn fib_input(n: u64) -> ProgramInput {
    ProgramInput {
        items: vec![n.to_le_bytes().to_vec()],
    }
}

fn sha_chain_input(iterations: u32) -> ProgramInput {
    ProgramInput {
        items: vec![iterations.to_le_bytes().to_vec(), b"plait".to_vec()],
    }
}

/// `steps` of the walk over a table of 2^`log2_words` words (at 2^20, 4 MiB, nearly every step
/// touches another memory block).
fn mem_walk_input(steps: u32, log2_words: u32) -> ProgramInput {
    ProgramInput {
        items: vec![
            steps.to_le_bytes().to_vec(),
            log2_words.to_le_bytes().to_vec(),
        ],
    }
}

/// Where a profile's work directory goes: beside it.
pub fn work_dir(profile_path: &Path) -> PathBuf {
    profile_path.with_extension("work")
}

#[cfg(test)]
mod tests {
    use super::*;
    use plait_core::{cost::PROFILE_FORMAT_VERSION, DeviceKind};
    use plait_prover::dev::DevBackend;

    /// With the dev backend (fake proofs, real bookkeeping): a calibration measures one
    /// segment per program and height and the 26 nodes, saving as it goes; run again, it
    /// resumes and measures nothing twice.
    #[test]
    fn measures_every_step_once_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = DevBackend::default();
        let fib = ProgramImage::new(b"dev program".to_vec());
        let sha_chain = ProgramImage::new(b"another dev program".to_vec());
        let mem_walk = ProgramImage::new(b"a third dev program".to_vec());
        let calibration = Calibration {
            backend: &backend,
            fib: &fib,
            sha_chain: &sha_chain,
            mem_walk: &mem_walk,
            vm_config: VmConfig::Rv32im,
            heights: vec![8, 9],
            profile_path: dir.path().join("profile.json"),
            work_dir: dir.path().join("profile.work"),
        };
        let cpu = Device {
            kind: DeviceKind::Cpu,
            model: "test".into(),
            memory_bytes: 1 << 30,
            compute_capability: None,
        };
        let mut profile = new_profile(&backend, "test".into(), &cpu, VmConfig::Rv32im);
        let mut measured = Vec::new();
        let mut steps = 0;
        calibration
            .run(&mut profile, &mut |p| match p {
                Progress::Measured(line) => measured.push(line),
                Progress::Step { .. } => steps += 1,
            })
            .unwrap();
        assert_eq!(measured.len(), 6 + 26, "{measured:#?}");
        assert!(steps >= 32);
        let saved: DeviceProfile =
            serde_json::from_slice(&std::fs::read(&calibration.profile_path).unwrap()).unwrap();
        assert_eq!(saved, profile);
        let measured_segments: Vec<(u32, &str)> = saved
            .segments
            .iter()
            .map(|s| (s.segment_height, s.program.as_deref().unwrap()))
            .collect();
        assert_eq!(
            measured_segments,
            [
                (8, "fib"),
                (8, "mem-walk"),
                (8, "sha-chain"),
                (9, "fib"),
                (9, "mem-walk"),
                (9, "sha-chain")
            ]
        );
        let leaves: Vec<u32> = saved
            .nodes
            .iter()
            .filter(|n| n.kind == "leaf")
            .map(|n| n.children)
            .collect();
        assert_eq!(leaves, [1, 2, 3, 4, 1, 1, 1, 1, 4, 4, 4, 4]);

        let mut again = Vec::new();
        calibration
            .run(&mut profile, &mut |p| {
                if let Progress::Measured(line) = p {
                    again.push(line)
                }
            })
            .unwrap();
        assert_eq!(
            again,
            Vec::<String>::new(),
            "a resumed calibration measures nothing twice"
        );
        assert!(resumable(
            &saved,
            &new_profile(&backend, "x".into(), &cpu, VmConfig::Rv32im)
        ));
        assert!(!resumable(
            &saved,
            &new_profile(&backend, "x".into(), &cpu, VmConfig::Rv32imSha2)
        ));
        // A format-3 profile lacks only the memory chips' cells: resumed, and saved as format 4
        // (run again, it recomputes them and measures nothing else).
        let format_3 = DeviceProfile {
            format_version: 3,
            ..saved.clone()
        };
        let mut resumed = resume(
            format_3,
            &new_profile(&backend, "x".into(), &cpu, VmConfig::Rv32im),
        )
        .unwrap();
        assert_eq!(resumed.format_version, PROFILE_FORMAT_VERSION);
        calibration
            .run(&mut resumed, &mut |p| {
                assert!(!matches!(p, Progress::Measured(_)), "measured again")
            })
            .unwrap();
        // A format-1 profile has no trace sizes to fit: measured again, not resumed.
        let format_1 = DeviceProfile {
            format_version: 1,
            ..saved.clone()
        };
        assert!(!resumable(
            &format_1,
            &new_profile(&backend, "x".into(), &cpu, VmConfig::Rv32im)
        ));
        // A GPU's profile is another device's: never resumed from a CPU's.
        let gpu = Device {
            kind: DeviceKind::Gpu,
            memory_bytes: 80 << 30,
            ..cpu.clone()
        };
        let gpu_profile = new_profile(&backend, "x".into(), &gpu, VmConfig::Rv32im);
        assert!(!resumable(&saved, &gpu_profile));
        assert_eq!(gpu_profile.memory_bytes, 80 << 30);
    }
}
