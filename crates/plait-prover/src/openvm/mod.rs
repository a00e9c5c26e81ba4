//! OpenVM 2.0, proving on the CPU or (with the `cuda` feature) on an NVIDIA GPU.
//!
//! Layout: `keys` generates and caches proving keys per VM config and segment height;
//! `program` loads a
//! guest ELF; `execution` plans segments and their boundaries; `proofs` proves and checks
//! segments and aggregation nodes; `proof_file` is the final proof's on-disk format;
//! `host` describes the CPU and `gpu` finds the GPU and proves on it.
//!
//! Execution, proof checks and verification always run on the CPU; only proving moves to the
//! device the backend was opened on.

mod checkpoint;
mod execution;
#[cfg(feature = "cuda")]
mod gpu;
mod host;
mod keys;
mod program;
mod proof_file;
mod proofs;
mod resident_pages;
mod segmentation;
mod trace_cells;

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

pub use checkpoint::raw_size as checkpoint_raw_size;
pub use host::machine_memory_bytes;
pub use keys::{KeyMeta, MIN_SEGMENT_HEIGHT};
use openvm_sdk::CpuSdk as Sdk;
use openvm_verify_stark_host::vk::VmStarkVerifyingKey;
use plait_core::{AggLayer, DeviceChoice, JobId, ProgramInput, SegmentPlan, SegmentSpec};
#[doc(hidden)]
pub use proofs::with_other_children_key;
pub use trace_cells::{ChipCells, TraceCells};

use self::{keys::KeySet, program::LoadedProgram, proofs::ProofEnvelope};
use crate::{
    BackendError, BackendInfo, KeySetId, ProgramImage, ProofBlob, ProofMeta, ProverBackend,
    ProvingParams, RunOutcome, SegmentSink, SegmentStart, Verdict, VerifiedProof, VmConfig,
};

/// The OpenVM backend. Keys and loaded programs are cached in memory per VM config, segment
/// height and program; keys are also cached on disk under `cache_dir`.
pub struct OpenVmBackend {
    cache_dir: PathBuf,
    key_sets: Mutex<HashMap<(VmConfig, u32), Arc<KeySet>>>,
    programs: Mutex<HashMap<(VmConfig, u32, String), Arc<LoadedProgram>>>,
    device: ProvingDevice,
}

/// Where segments and nodes are proven.
enum ProvingDevice {
    Cpu(plait_core::Device),
    #[cfg(feature = "cuda")]
    Gpu(gpu::Gpu),
}

/// Whether this build can prove on a GPU (the `cuda` feature).
pub const GPU_SUPPORT: bool = cfg!(feature = "cuda");

/// Set, to the reason, in the environment of the CPU build a GPU build of `plait` runs on a
/// machine without a GPU: a CPU build that finds it names that reason rather than its own
/// lack of GPU support.
pub const NO_GPU_ENV: &str = "PLAIT_NO_GPU";

impl OpenVmBackend {
    /// A backend that proves on the CPU (and executes, checks and verifies, as every backend
    /// does on the CPU).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self::with_device(cache_dir.into(), ProvingDevice::Cpu(host::cpu()))
    }

    /// A backend that proves on the device `choice` names: `auto` takes the GPU if this build
    /// has GPU support and finds one, else the CPU; `gpu` refuses, naming why, when it cannot.
    pub fn on_device(
        cache_dir: impl Into<PathBuf>,
        choice: DeviceChoice,
    ) -> Result<Self, BackendError> {
        let device = match choice {
            DeviceChoice::Cpu => ProvingDevice::Cpu(host::cpu()),
            DeviceChoice::Auto | DeviceChoice::Gpu => match Self::find_gpu() {
                Ok(device) => device,
                Err(why) if choice == DeviceChoice::Gpu => {
                    return Err(BackendError::NoDevice(why));
                }
                Err(why) => {
                    tracing::info!(reason = %why, "no GPU to prove on; proving on the CPU");
                    ProvingDevice::Cpu(host::cpu())
                }
            },
        };
        Ok(Self::with_device(cache_dir.into(), device))
    }

    #[cfg(feature = "cuda")]
    fn find_gpu() -> Result<ProvingDevice, String> {
        gpu::Gpu::open().map(ProvingDevice::Gpu)
    }

    #[cfg(not(feature = "cuda"))]
    fn find_gpu() -> Result<ProvingDevice, String> {
        Err(no_gpu_support(std::env::var(NO_GPU_ENV).ok()))
    }

    fn with_device(cache_dir: PathBuf, device: ProvingDevice) -> Self {
        Self {
            cache_dir,
            key_sets: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            device,
        }
    }

    /// The device this backend proves on.
    pub fn device(&self) -> plait_core::Device {
        match &self.device {
            ProvingDevice::Cpu(cpu) => cpu.clone(),
            #[cfg(feature = "cuda")]
            ProvingDevice::Gpu(gpu) => gpu.device(),
        }
    }

    /// Where keys are cached.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Proves one segment as [`ProverBackend::prove_segment`] does, calling `on_phase` as each
    /// step begins (so that a caller can measure the steps apart), and returns the segment's
    /// traces chip by chip beside the proof.
    pub fn prove_segment_observed(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        segment: &SegmentSpec,
        is_last: bool,
        start: SegmentStart<'_>,
        on_phase: &mut dyn FnMut(crate::ProvingPhase),
    ) -> Result<(ProofBlob, ProofMeta, TraceCells), BackendError> {
        let keys = self.keys_for(params)?;
        let loaded = self.program(&keys, program)?;
        let cells =
            trace_cells::of_heights(&keys, &execution::SegmentHint::of(segment)?.trace_heights)?;
        let task = proofs::SegmentTask {
            keys: &keys,
            program: &loaded,
            image: program,
            segment,
            is_last,
            start,
            on_phase,
        };
        let (proof, meta) = match &self.device {
            ProvingDevice::Cpu(_) => proofs::prove_segment(task)?,
            #[cfg(feature = "cuda")]
            ProvingDevice::Gpu(gpu) => gpu.prove_segment(task)?,
        };
        Ok((proof, meta, cells))
    }

    fn key_set(&self, vm: VmConfig, segment_height: u32) -> Result<Arc<KeySet>, BackendError> {
        let mut sets = self.key_sets.lock().expect("key set lock poisoned");
        if let Some(set) = sets.get(&(vm, segment_height)) {
            return Ok(set.clone());
        }
        let set = Arc::new(KeySet::new(&self.cache_dir, vm, segment_height)?);
        sets.insert((vm, segment_height), set.clone());
        Ok(set)
    }

    fn keys_for(&self, params: &ProvingParams) -> Result<Arc<KeySet>, BackendError> {
        self.key_set(params.vm_config, params.segment_height)
    }

    /// Checks the parameters, makes sure the keys exist and loads the program: what running
    /// or planning a program needs first. Execution needs the app key (for trace widths); the
    /// whole set is generated once here.
    fn ready_to_execute(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
    ) -> Result<(Arc<KeySet>, Arc<LoadedProgram>), BackendError> {
        Self::check_params(params)?;
        let keys = self.keys_for(params)?;
        keys.ensure_generated()?;
        let loaded = self.program(&keys, program)?;
        Ok((keys, loaded))
    }

    fn program(
        &self,
        keys: &KeySet,
        program: &ProgramImage,
    ) -> Result<Arc<LoadedProgram>, BackendError> {
        let key = (keys.vm, keys.segment_height, program.digest.clone());
        if let Some(loaded) = self.programs.lock().expect("program lock").get(&key) {
            return Ok(loaded.clone());
        }
        // Loading commits the program (seconds); do it outside the lock.
        let loaded = Arc::new(program::load(keys, program)?);
        Ok(self
            .programs
            .lock()
            .expect("program lock")
            .entry(key)
            .or_insert(loaded)
            .clone())
    }

    /// Returns the verifying key of `program` under `vm` and `segment_height`: what OpenVM's
    /// verifier needs. It is cached on disk, so verifying needs no proving key once it exists.
    pub fn program_verifying_key(
        &self,
        program: &ProgramImage,
        vm: VmConfig,
        segment_height: u32,
    ) -> Result<VmStarkVerifyingKey, BackendError> {
        let keys = self.key_set(vm, segment_height)?;
        let path = keys
            .dir
            .join("programs")
            .join(format!("{}.vk", program.digest));
        if let Ok(bytes) = fs::read(&path) {
            if let Ok(vk) = bitcode::deserialize(&bytes) {
                return Ok(vk);
            }
        }
        // Keys are deterministic: a verifier without them derives them (once) from the
        // parameters rather than trusting any key material that came with the proof.
        keys.ensure_generated()?;
        let loaded = self.program(&keys, program)?;
        let mut vk = keys.verifier_template()?.clone();
        vk.baseline.app_exe_commit = loaded.exe_commit;
        // Best effort: a read-only cache only costs the next verify some seconds.
        let _ = fs::create_dir_all(path.parent().expect("vk path has a parent"));
        let _ = fs::write(&path, bitcode::serialize(&vk).expect("vk serializes"));
        Ok(vk)
    }

    /// The keys and loaded program a proof check needs. Both come from the job, not the
    /// proof, so failing to get them is the checker's fault (see `check_segment_proof`).
    fn checking_context(
        &self,
        params: &ProvingParams,
        program: &ProgramImage,
    ) -> Result<(Arc<KeySet>, Arc<LoadedProgram>), BackendError> {
        let keys = self.keys_for(params)?;
        let loaded = self.program(&keys, program)?;
        Ok((keys, loaded))
    }

    fn check_params(params: &ProvingParams) -> Result<(), BackendError> {
        keys::validate_segment_height(params.segment_height)?;
        let leaf = params.tree.num_children_leaf as usize;
        let internal = params.tree.num_children_internal as usize;
        if !(1..=proofs::max_children(AggLayer::Leaf)).contains(&leaf)
            || !(2..=proofs::max_children(AggLayer::InternalForLeaf)).contains(&internal)
        {
            return Err(BackendError::InvalidParams(format!(
                "OpenVM takes 1..={} children per leaf and 2..={} per internal node, got {leaf} and {internal}",
                proofs::max_children(AggLayer::Leaf),
                proofs::max_children(AggLayer::InternalForLeaf)
            )));
        }
        Ok(())
    }
}

impl ProverBackend for OpenVmBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "openvm".into(),
            version: openvm_sdk::OPENVM_VERSION.into(),
            sound: true,
        }
    }

    /// The largest proof measured is a full segment's, 1.25 MB at height 19
    /// (`docs/benchmarks.md`, Large jobs); STARK proofs grow with the logarithm of the trace, so 64 MiB leaves a wide margin
    /// at every height while bounding what a worker can make the coordinator read.
    fn max_proof_bytes(&self) -> Option<usize> {
        Some(64 << 20)
    }

    /// Measured with `scripts/bench-foundation.sh 150000 19` on a 2-core machine: the worker
    /// processes that proved aggregation nodes peaked at 5.9–6.0 GiB, against OpenVM's own
    /// estimate of 1.5 GiB for a height-19 segment. Only height 19 was measured; the figure
    /// serves every height and layer until workers report their own peaks.
    fn aggregation_memory_estimate(&self, _params: &ProvingParams, _layer: AggLayer) -> u64 {
        6 << 30
    }

    fn prepare_aggregation(
        &self,
        params: &ProvingParams,
        layer: AggLayer,
    ) -> Result<(), BackendError> {
        Self::check_params(params)?;
        let keys = self.keys_for(params)?;
        match &self.device {
            ProvingDevice::Cpu(_) => match layer {
                AggLayer::Leaf => {
                    keys.leaf_prover()?;
                }
                AggLayer::InternalForLeaf => {
                    keys.internal_for_leaf_prover()?;
                }
                AggLayer::InternalRecursive(_) => {
                    keys.internal_recursive_prover()?;
                }
                AggLayer::Wrap => {}
            },
            // The GPU's provers load on their first node.
            #[cfg(feature = "cuda")]
            ProvingDevice::Gpu(_) => {}
        }
        Ok(())
    }

    fn prepare_keys(&self, params: &ProvingParams) -> Result<String, BackendError> {
        Self::check_params(params)?;
        let keys = self.keys_for(params)?;
        let fresh = !keys.exists();
        let meta = keys.ensure_generated()?;
        let total: u64 = meta.files.iter().map(|(_, len)| len).sum();
        let sizes: Vec<String> = meta
            .files
            .iter()
            .map(|(name, len)| format!("{name} {:.1} MB", *len as f64 / 1e6))
            .collect();
        Ok(format!(
            "keys for {} at segment height {} {} at {} (keygen: app {:.1} s, aggregation {:.1} s; {:.1} MB: {})",
            params.vm_config,
            params.segment_height,
            if fresh { "generated" } else { "loaded from cache" },
            keys.dir.display(),
            meta.app_keygen_seconds,
            meta.agg_keygen_seconds,
            total as f64 / 1e6,
            sizes.join(", ")
        ))
    }

    fn check_program(&self, program: &ProgramImage) -> Result<(), BackendError> {
        program::check_elf_header(&program.bytes)
    }

    fn prepare_program(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
    ) -> Result<(), BackendError> {
        self.ready_to_execute(program, params).map(|_| ())
    }

    fn cached_key_sets(&self) -> Vec<KeySetId> {
        let heights =
            MIN_SEGMENT_HEIGHT..=openvm_stark_sdk::config::MAX_APP_LOG_STACKED_HEIGHT as u32;
        VmConfig::ALL
            .into_iter()
            .flat_map(|vm| heights.clone().map(move |h| (vm, h)))
            .filter(|&(vm, h)| KeySet::new(&self.cache_dir, vm, h).is_ok_and(|k| k.exists()))
            .map(|(vm_config, segment_height)| KeySetId {
                vm_config,
                segment_height,
            })
            .collect()
    }

    fn run(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
    ) -> Result<RunOutcome, BackendError> {
        let (keys, loaded) = self.ready_to_execute(program, params)?;
        execution::run(&keys, &loaded, input, params.max_instructions)
    }

    fn execute_streaming(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
        checkpoints_for: Option<JobId>,
        sink: &mut SegmentSink<'_>,
    ) -> Result<SegmentPlan, BackendError> {
        let (keys, loaded) = self.ready_to_execute(program, params)?;
        execution::execute(
            &keys,
            &loaded,
            program,
            input,
            params.segment_height,
            params.max_instructions,
            checkpoints_for,
            sink,
        )
    }

    fn predict_segments(
        &self,
        plan: &SegmentPlan,
        plan_height: u32,
        height: u32,
    ) -> Option<Vec<u64>> {
        execution::predict_segments(plan, plan_height, height)
    }

    fn prove_segment(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        segment: &SegmentSpec,
        is_last: bool,
        start: SegmentStart<'_>,
    ) -> Result<(ProofBlob, ProofMeta), BackendError> {
        self.prove_segment_observed(program, params, segment, is_last, start, &mut |_| {})
            .map(|(proof, meta, _)| (proof, meta))
    }

    fn aggregate(
        &self,
        params: &ProvingParams,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<ProofBlob, BackendError> {
        self.aggregate_with_meta(params, layer, children)
            .map(|(proof, _)| proof)
    }

    fn aggregate_with_meta(
        &self,
        params: &ProvingParams,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<(ProofBlob, ProofMeta), BackendError> {
        let keys = self.keys_for(params)?;
        match &self.device {
            ProvingDevice::Cpu(_) => proofs::aggregate(keys.as_ref(), layer, children)
                .map(|proof| (proof, ProofMeta::default())),
            #[cfg(feature = "cuda")]
            ProvingDevice::Gpu(gpu) => {
                let (proof, device_peak_bytes) = gpu.aggregate(&keys, layer, children)?;
                let meta = ProofMeta {
                    device_peak_bytes,
                    ..ProofMeta::default()
                };
                Ok((proof, meta))
            }
        }
    }

    fn check_segment_proof(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        segment: &SegmentSpec,
        ending: Option<&[u8]>,
        proof: &ProofBlob,
    ) -> Result<Verdict, BackendError> {
        let (keys, loaded) = self.checking_context(params, program)?;
        Ok(proofs::check_segment(&keys, &loaded, segment, ending, proof).into())
    }

    fn check_aggregate_proof(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        layer: AggLayer,
        child_layer: Option<AggLayer>,
        first: &SegmentSpec,
        last: &SegmentSpec,
        ends_execution: bool,
        proof: &ProofBlob,
    ) -> Result<Verdict, BackendError> {
        let (keys, loaded) = self.checking_context(params, program)?;
        let node = proofs::NodeSlice {
            layer,
            child_layer,
            first,
            last,
            ends_execution,
        };
        Ok(proofs::check_aggregate(&keys, &loaded, &node, proof).into())
    }

    fn finalize(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        root: &ProofBlob,
        last_segment: &ProofBlob,
    ) -> Result<Vec<u8>, BackendError> {
        let (inner, _) = ProofEnvelope::decode(root).map_err(BackendError::MalformedTask)?;
        let (_, user_pvs) =
            ProofEnvelope::decode(last_segment).map_err(BackendError::MalformedTask)?;
        let user_pvs_proof = user_pvs.ok_or_else(|| {
            BackendError::MalformedTask("last segment proof has no public values proof".into())
        })?;
        let proof = openvm_verify_stark_host::VmStarkProof {
            inner,
            user_pvs_proof,
            deferral_merkle_proofs: None,
        };
        let vk = self.program_verifying_key(program, params.vm_config, params.segment_height)?;
        let exe_commit = vk.baseline.app_exe_commit;
        let bytes = proof_file::write(proof, params, &program.digest, &exe_commit)?;
        // Never hand out a proof we have not verified the way a user will: from the file.
        verify_file(&vk, program, &bytes)?;
        Ok(bytes)
    }

    fn verify_final(
        &self,
        program: &ProgramImage,
        proof_file: &[u8],
    ) -> Result<VerifiedProof, BackendError> {
        let (file, _) = proof_file::read(proof_file)?;
        keys::validate_segment_height(file.segment_height)
            .map_err(|e| BackendError::ProofRejected(e.to_string()))?;
        // Not an ELF at all is the user's input at fault, whatever the proof says.
        program::check_elf_header(&program.bytes)?;
        // The file names the config; a program that cannot run under it has no such proof.
        let vk = self
            .program_verifying_key(program, file.vm_config, file.segment_height)
            .map_err(|e| match e {
                BackendError::InvalidProgram(why) => BackendError::ProofRejected(format!(
                    "the proof is for the {} VM config, and {why}",
                    file.vm_config
                )),
                other => other,
            })?;
        verify_file(&vk, program, proof_file)
    }
}

/// Verifies a proof file with the given program verifying key, then checks that every member
/// of the file agrees with what the proof commits to.
fn verify_file(
    vk: &VmStarkVerifyingKey,
    program: &ProgramImage,
    proof_file: &[u8],
) -> Result<VerifiedProof, BackendError> {
    let (file, proof) = proof_file::read(proof_file)?;
    // The cryptographic check comes first and is against the program the caller named, never
    // against anything the file says about itself.
    Sdk::verify_proof(vk.mvk.clone(), vk.baseline.clone(), &proof).map_err(|e| {
        BackendError::ProofRejected(format!(
            "OpenVM verifier rejects the proof for this program: {e}"
        ))
    })?;
    let public_values = proof_file::public_values_of(&proof);
    let program_commit = proof_file::digest_hex(&vk.baseline.app_exe_commit);
    if file.public_values != hex::encode(&public_values) {
        return Err(BackendError::ProofRejected(
            "the file's public-values member differs from the values the proof commits to".into(),
        ));
    }
    if file.app_exe_commit != program_commit {
        return Err(BackendError::ProofRejected(
            "the file's app-exe-commit member differs from the program's".into(),
        ));
    }
    if file.program_sha256 != program.digest {
        return Err(BackendError::ProofRejected(
            "the file's program-sha256 member names another program".into(),
        ));
    }
    Ok(VerifiedProof {
        public_values,
        program_commit,
    })
}

/// Recomputes every boundary of `plan` by re-executing segment by segment and hashing the whole
/// memory at each boundary (the slow way the planner used to take), and returns the first
/// segment whose boundaries differ from the plan's. For tests of the incremental boundaries.
pub fn first_boundary_mismatch(
    cache_dir: &Path,
    program: &ProgramImage,
    input: &ProgramInput,
    params: &ProvingParams,
    plan: &SegmentPlan,
) -> Result<Option<u32>, BackendError> {
    let keys = KeySet::new(cache_dir, params.vm_config, params.segment_height)?;
    keys.ensure_generated()?;
    let loaded = program::load(&keys, program)?;
    execution::first_boundary_mismatch(&keys, &loaded, input, plan)
}

/// OpenVM's own single-process pipeline, as a baseline for benchmarks: `Sdk::prove` with the
/// same cached keys Plait uses, followed by `Sdk::verify_proof`. Returns the proof's size in
/// bytes.
pub fn sdk_prove_single_process(
    cache_dir: &Path,
    program: &ProgramImage,
    input: &ProgramInput,
    params: &ProvingParams,
) -> Result<usize, BackendError> {
    let keys = KeySet::new(cache_dir, params.vm_config, params.segment_height)?;
    keys.ensure_generated()?;
    let sdk = keys.sdk()?;
    program::check_elf_header(&program.bytes)?;
    let elf = openvm_transpiler::elf::Elf::decode(
        &program.bytes,
        openvm_transpiler::openvm_platform::memory::MEM_SIZE as u32,
    )
    .map_err(|e| BackendError::InvalidProgram(e.to_string()))?;
    let exe = sdk
        .convert_to_exe(elf)
        .map_err(|e| BackendError::InvalidProgram(e.to_string()))?;
    let (proof, baseline) = sdk
        .prove(exe, execution::stdin_of(input), &[])
        .map_err(|e| BackendError::ProvingFailed(e.to_string()))?;
    Sdk::verify_proof(sdk.agg_vk().as_ref().clone(), baseline, &proof)
        .map_err(|e| BackendError::ProofRejected(e.to_string()))?;
    let encoded = openvm_sdk::types::VersionedVmStarkProof::new(proof)
        .map_err(|e| BackendError::ProvingFailed(e.to_string()))?;
    Ok(encoded.proof.len() + encoded.user_pvs_proof.len())
}

/// Why a build without GPU support proves on the CPU: its own build, or, as the CPU build a GPU
/// build carries, the reason the GPU build gave ([`NO_GPU_ENV`]).
#[cfg(not(feature = "cuda"))]
fn no_gpu_support(from_gpu_build: Option<String>) -> String {
    match from_gpu_build {
        Some(reason) => reason.chars().take(500).collect(),
        None => {
            "this plait was built without GPU support (build it with scripts/build-gpu.sh)".into()
        }
    }
}

#[cfg(all(test, not(feature = "cuda")))]
mod device_tests {
    use plait_core::{DeviceChoice, DeviceKind};

    use super::OpenVmBackend;
    use crate::BackendError;

    #[test]
    fn a_build_without_gpu_support_proves_on_the_cpu_or_refuses_by_name() {
        let dir = std::env::temp_dir();
        for choice in [DeviceChoice::Auto, DeviceChoice::Cpu] {
            let backend = OpenVmBackend::on_device(&dir, choice).unwrap();
            assert_eq!(backend.device().kind, DeviceKind::Cpu);
        }
        match OpenVmBackend::on_device(&dir, DeviceChoice::Gpu) {
            Err(BackendError::NoDevice(why)) => {
                assert!(why.contains("without GPU support"), "{why}");
                assert!(why.contains("scripts/build-gpu.sh"), "{why}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a CPU-only build opened a GPU"),
        }
    }

    #[test]
    fn the_cpu_build_a_gpu_build_runs_gives_the_gpu_build_s_reason() {
        let reason = "this machine has no NVIDIA driver (/dev/nvidiactl is missing)";
        assert_eq!(super::no_gpu_support(Some(reason.into())), reason);
        assert!(super::no_gpu_support(None).contains("without GPU support"));
    }
}
