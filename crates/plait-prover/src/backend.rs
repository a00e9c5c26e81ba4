//! The interface between Plait's pool and a zkVM.

use std::{fmt, sync::Arc};

use plait_core::{AggLayer, AggTreeShape, JobId, ProgramInput, SegmentPlan, SegmentSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// A guest program as the user gave it (an ELF), with its content hash.
#[derive(Clone)]
pub struct ProgramImage {
    /// The ELF's bytes (shared: jobs and tasks hold the same program).
    pub bytes: Arc<Vec<u8>>,
    /// SHA-256 of `bytes`, hex. Programs are content-addressed by it.
    pub digest: String,
}

impl ProgramImage {
    /// A program of these bytes, hashed.
    pub fn new(bytes: Vec<u8>) -> Self {
        let digest = hex::encode(Sha256::digest(&bytes));
        Self {
            bytes: Arc::new(bytes),
            digest,
        }
    }
}

impl fmt::Debug for ProgramImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "program-{}", &self.digest[..12])
    }
}

/// The zkVM's instruction set for a job: RV32IM with the zkVM's I/O, and optionally its SHA-2
/// extension (a SHA-256 compression as one instruction). Part of a program's identity: each
/// configuration has its own keys, and a proof names the one it was made under.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum VmConfig {
    /// RV32IM and the zkVM's I/O.
    #[default]
    Rv32im,
    /// RV32IM with OpenVM's SHA-2 extension.
    Rv32imSha2,
}

impl VmConfig {
    /// Every VM config, in the order they are listed.
    pub const ALL: [VmConfig; 2] = [VmConfig::Rv32im, VmConfig::Rv32imSha2];

    /// `rv32im` or `rv32im-sha2`: how flags, files and logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rv32im => "rv32im",
            Self::Rv32imSha2 => "rv32im-sha2",
        }
    }
}

impl fmt::Display for VmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for VmConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown VM config {s:?}: rv32im or rv32im-sha2"))
    }
}

/// Which keys a job needs: its VM config and segment height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeySetId {
    /// The VM config.
    pub vm_config: VmConfig,
    /// The segment height (log2 of the largest trace height).
    pub segment_height: u32,
}

/// The parameters that fix a job's keys and its segmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProvingParams {
    /// Log2 of the largest trace height a segment may reach (OpenVM's app
    /// `log_stacked_height`). Smaller means more, cheaper segments. Changes the keys.
    pub segment_height: u32,
    /// Shape of the aggregation tree.
    pub tree: AggTreeShape,
    /// Execution stops with an error past this many guest instructions.
    pub max_instructions: u64,
    /// The VM configuration. Changes the keys. Jobs stored before it existed ran RV32IM.
    #[serde(default)]
    pub vm_config: VmConfig,
}

impl ProvingParams {
    /// The key set these parameters need.
    pub fn key_set(&self) -> KeySetId {
        KeySetId {
            vm_config: self.vm_config,
            segment_height: self.segment_height,
        }
    }
}

impl Default for ProvingParams {
    fn default() -> Self {
        Self {
            segment_height: 20,
            tree: AggTreeShape::default(),
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            vm_config: VmConfig::default(),
        }
    }
}

/// The default instruction limit: 2^36 (68.7 billion) instructions, room for a 10,000-segment
/// job at segment height 22 (fib runs about 7M instructions per segment there), while still
/// stopping a guest that never ends.
pub const DEFAULT_MAX_INSTRUCTIONS: u64 = 1 << 36;

/// Where a segment's prover gets the VM state the segment starts from.
#[derive(Clone, Copy, Debug)]
pub enum SegmentStart<'a> {
    /// A checkpoint the executor saved at the segment's start (see
    /// [`ProverBackend::execute_streaming`]), for the named job; nothing is re-executed.
    Checkpoint {
        /// The job whose execution saved the checkpoint.
        job: JobId,
        /// The checkpoint as the executor serialized it.
        bytes: &'a [u8],
    },
    /// Re-execute the program from its first instruction on this input (costs the whole
    /// prefix of the execution; for tools that have no checkpoint).
    Reexecute(&'a ProgramInput),
}

/// The steps of proving a segment, in order, for tools that measure them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvingPhase {
    /// Rebuilding the VM state the segment starts from (a checkpoint, or re-execution).
    StartState,
    /// Executing the segment again, recording what each chip's trace needs.
    Recording,
    /// Building every chip's trace from the records.
    TraceGeneration,
    /// The STARK prover: committing to the traces and proving the constraints.
    Proving,
    /// For the last segment: the proof that its public values sit in the final memory.
    PublicValues,
}

/// A segment as execution cuts it.
#[derive(Clone, Debug)]
pub struct CutSegment {
    /// The segment, as the scheduler sees it.
    pub spec: SegmentSpec,
    /// The checkpoint of its start state, if asked for (its digest is `spec.checkpoint`).
    pub checkpoint: Option<Vec<u8>>,
    /// For the execution's last segment: the public values the program revealed.
    pub ending: Option<Vec<u8>>,
}

/// Receives each segment as soon as execution has passed its end.
pub type SegmentSink<'a> = dyn FnMut(CutSegment) -> Result<(), BackendError> + 'a;

/// An opaque, backend-encoded proof (a segment proof or an aggregation node's proof).
#[derive(Clone, PartialEq, Eq)]
pub struct ProofBlob(pub Vec<u8>);

impl fmt::Debug for ProofBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProofBlob({} bytes)", self.0.len())
    }
}

/// Measurements a worker reports beside a proof.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProofMeta {
    /// Seconds spent rebuilding the segment's start state: decoding its checkpoint, or
    /// re-executing the guest from its start when there is none.
    pub reexecution_seconds: f64,
    /// Instructions executed before the segment's first one to rebuild its start state (0 from
    /// a checkpoint).
    pub reexecuted_instructions: u64,
    /// Seconds spent proving (the segment or the aggregation node).
    pub proving_seconds: f64,
    /// The worker process's peak resident memory while it worked on this task, in bytes
    /// (workers reset the peak before each task where the OS allows it).
    pub process_peak_rss_bytes: u64,
    /// CPU seconds (user + system) the worker process has used so far.
    pub process_cpu_seconds: f64,
    /// For a task proven on a GPU: the most device memory in use while it ran, in bytes (0 on
    /// a CPU).
    pub device_peak_bytes: u64,
}

/// The coordinator's judgement of a returned proof. Rejection is a normal outcome, not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// The proof is valid and is the one asked for.
    Accepted,
    /// It is not.
    Rejected {
        /// Why, in words.
        reason: String,
    },
}

impl Verdict {
    /// A rejection, with why.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Verdict::Rejected {
            reason: reason.into(),
        }
    }
}

/// What a successful final verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The public values the program revealed, as committed in the proof.
    pub public_values: Vec<u8>,
    /// The backend's commitment to the program, hex.
    pub program_commit: String,
}

/// What running a guest (without planning or proving) gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// The public values the guest revealed.
    pub public_values: Vec<u8>,
    /// Instructions it executed.
    pub instructions: u64,
}

/// Who a backend is; recorded in every proof and checked by workers and verifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `openvm` or `dev`.
    pub name: String,
    /// Version of the zkVM whose proof format this backend speaks (major.minor).
    pub version: String,
    /// False for the dev backend: its proofs prove nothing.
    pub sound: bool,
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The bytes are not a program this backend runs.
    #[error("program is not a usable guest: {0}")]
    InvalidProgram(String),
    /// The guest failed while executing (a panic exits with 1).
    #[error("guest failed during execution: {0}")]
    GuestFailed(String),
    /// The guest ran past the instruction limit.
    #[error("guest exceeded the instruction limit of {limit} instructions")]
    InstructionLimit {
        /// The limit.
        limit: u64,
    },
    /// Parameters the backend cannot use (a segment height out of range, …).
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// A task's inputs do not fit it (a checkpoint of another segment, a bad hint, …).
    #[error("task input is malformed: {0}")]
    MalformedTask(String),
    /// Proving failed.
    #[error("proving failed: {0}")]
    ProvingFailed(String),
    /// The key cache cannot be read or written.
    #[error("key store at {path}: {reason}")]
    KeyStore {
        /// The key set's directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A proof did not verify.
    #[error("proof rejected: {0}")]
    ProofRejected(String),
    /// The device asked for is not there (no GPU, or a build without GPU support).
    #[error("no such device: {0}")]
    NoDevice(String),
    /// A segment sink stopped execution (the job ended, or its segments could not be stored).
    #[error("execution stopped: {0}")]
    Stopped(String),
}

/// The operations Plait needs from a zkVM with continuations.
///
/// Every method is blocking and may take minutes; async callers run them on blocking threads.
/// Implementations cache expensive state (keys, committed programs) internally, so calls are
/// cheap to repeat.
pub trait ProverBackend: Send + Sync {
    /// Who the backend is: name, version, and whether its proofs are sound.
    fn info(&self) -> BackendInfo;

    /// Makes sure the keys for `params` exist (generating and caching them if needed) and
    /// returns a one-line report: where they are, how long keygen took, their sizes.
    fn prepare_keys(&self, params: &ProvingParams) -> Result<String, BackendError>;

    /// Loads `layer`'s prover for `params` ahead of its first node (for OpenVM: reads the
    /// layer's proving key and commits its child's verifying key, 10–20 s a layer), so that a
    /// measured node's time is its proof's alone, and the load is measured apart. Nothing by
    /// default.
    fn prepare_aggregation(
        &self,
        _params: &ProvingParams,
        _layer: AggLayer,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    /// Checks, cheaply, that `program` is something this backend can run (for OpenVM: a 32-bit
    /// RISC-V ELF), so that uploads of anything else are refused at the door.
    fn check_program(&self, program: &ProgramImage) -> Result<(), BackendError>;

    /// Loads `program` for `params` ahead of its first execution (for OpenVM: transpiles and
    /// commits it, seconds once per program and height), so that this one-time cost is not
    /// counted as a job's execution.
    fn prepare_program(
        &self,
        _program: &ProgramImage,
        _params: &ProvingParams,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    /// The key sets (VM config and segment height) this backend has on disk already.
    fn cached_key_sets(&self) -> Vec<KeySetId> {
        Vec::new()
    }

    /// Runs the program to its end without planning segments or proving, and returns its public
    /// values: a quick check of what a guest computes.
    fn run(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
    ) -> Result<RunOutcome, BackendError> {
        let plan = self.execute(program, input, params)?;
        Ok(RunOutcome {
            instructions: plan.total_insns(),
            public_values: plan.public_values,
        })
    }

    /// The largest proof this backend produces, in bytes, if it can say: the coordinator
    /// refuses larger result bodies before reading them.
    fn max_proof_bytes(&self) -> Option<usize> {
        None
    }

    /// Memory an aggregation node of `layer` needs, in bytes, before anything was measured in
    /// this pool (0: unknown). The coordinator replaces it with the peaks workers report.
    fn aggregation_memory_estimate(&self, _params: &ProvingParams, _layer: AggLayer) -> u64 {
        0
    }

    /// Predicts, without executing again, how an execution planned at `plan_height` would be
    /// cut at a larger `height`: the instructions of each segment. `None` when the backend
    /// cannot tell (the caller then executes at `height`).
    fn predict_segments(
        &self,
        _plan: &SegmentPlan,
        _plan_height: u32,
        _height: u32,
    ) -> Option<Vec<u64>> {
        None
    }

    /// Executes the program once and cuts the execution into segments.
    fn execute(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
    ) -> Result<SegmentPlan, BackendError> {
        self.execute_streaming(program, input, params, None, &mut |_| Ok(()))
    }

    /// Executes the program once, handing each segment to `sink` as soon as execution has
    /// passed its end. With `checkpoints_for`, each segment comes with a checkpoint of its
    /// start state for that job (and its digest in [`SegmentSpec::checkpoint`]), so that it can
    /// be proven without re-executing anything before it. An error from `sink` stops execution.
    fn execute_streaming(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
        checkpoints_for: Option<JobId>,
        sink: &mut SegmentSink<'_>,
    ) -> Result<SegmentPlan, BackendError>;

    /// Proves one segment, starting from `start`. A checkpoint that is not the start of exactly
    /// this segment of this job is refused with [`BackendError::MalformedTask`].
    fn prove_segment(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        segment: &SegmentSpec,
        is_last: bool,
        start: SegmentStart<'_>,
    ) -> Result<(ProofBlob, ProofMeta), BackendError>;

    /// Joins the children's proofs (in execution order) into one proof of `layer`.
    fn aggregate(
        &self,
        params: &ProvingParams,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<ProofBlob, BackendError>;

    /// [`Self::aggregate`], with what the backend measured while proving (a GPU's device
    /// memory peak); the caller adds time and process figures.
    fn aggregate_with_meta(
        &self,
        params: &ProvingParams,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<(ProofBlob, ProofMeta), BackendError> {
        self.aggregate(params, layer, children)
            .map(|proof| (proof, ProofMeta::default()))
    }

    /// Checks that `proof` is a valid proof of exactly this segment of this execution.
    /// `ending` is `Some(public values)` when the segment is the execution's last: its proof
    /// must then show a successful exit and carry a proof of exactly these public values.
    /// An error means the backend could not check at all (its keys or the program would not
    /// load): the checker's fault, which says nothing about the proof.
    fn check_segment_proof(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        segment: &SegmentSpec,
        ending: Option<&[u8]>,
        proof: &ProofBlob,
    ) -> Result<Verdict, BackendError>;

    /// Checks that `proof` is a valid `layer` proof covering exactly the segments from `first`
    /// to `last` (inclusive, in order) of this execution; `ends_execution` says whether `last`
    /// is the execution's last segment; `child_layer` is the layer of the node's children
    /// (`None` for segments), which fixes where in the recursion the proof must sit. Errors as
    /// [`Self::check_segment_proof`]'s.
    #[expect(
        clippy::too_many_arguments,
        reason = "each argument is one fact the check needs"
    )]
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
    ) -> Result<Verdict, BackendError>;

    /// Builds the final, self-describing proof file from the root (wrap) proof and the last
    /// segment's proof, and verifies it before returning it.
    fn finalize(
        &self,
        program: &ProgramImage,
        params: &ProvingParams,
        root: &ProofBlob,
        last_segment: &ProofBlob,
    ) -> Result<Vec<u8>, BackendError>;

    /// Verifies a final proof file against the program it claims to prove.
    fn verify_final(
        &self,
        program: &ProgramImage,
        proof_file: &[u8],
    ) -> Result<VerifiedProof, BackendError>;
}

#[cfg(test)]
mod vm_config_tests {
    use super::*;

    #[test]
    fn vm_configs_have_one_name_everywhere_and_old_params_are_rv32im() {
        for vm in VmConfig::ALL {
            assert_eq!(vm.name().parse::<VmConfig>(), Ok(vm));
            assert_eq!(serde_json::to_value(vm).unwrap(), vm.name());
        }
        assert!("rv64gc"
            .parse::<VmConfig>()
            .unwrap_err()
            .contains("rv32im-sha2"));
        let stored = r#"{"segment-height": 19, "tree": {"num-children-leaf": 4,
            "num-children-internal": 3}, "max-instructions": 1000}"#;
        let params: ProvingParams = serde_json::from_str(stored).unwrap();
        assert_eq!(params.vm_config, VmConfig::Rv32im);
    }
}
