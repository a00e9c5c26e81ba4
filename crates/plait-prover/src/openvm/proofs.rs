//! Segment and aggregation proofs: producing them on a worker, and the coordinator's checks
//! that a returned proof is valid *and* is the proof it asked for.

use std::{borrow::Borrow, mem::size_of, time::Instant};

use openvm_circuit::{
    arch::{
        hasher::poseidon2::vm_poseidon2_hasher, ExitCode, PreflightExecutionOutput,
        PreflightExecutor, VmBuilder, VmExecutionConfig, CONNECTOR_AIR_ID, MERKLE_AIR_ID,
        PROGRAM_AIR_ID, PROGRAM_CACHED_TRACE_INDEX,
    },
    system::{
        connector::VmConnectorPvs,
        memory::merkle::{public_values::UserPublicValuesProof, MemoryMerklePvs},
    },
};
use openvm_sdk::{StdIn, F, SC};
use openvm_sdk_config::{SdkVmConfig, SdkVmCpuBuilder};
use openvm_stark_backend::{
    codec::{Decode, Encode},
    keygen::types::MultiStarkVerifyingKey,
    p3_field::{PrimeCharacteristicRing, PrimeField32},
    proof::Proof,
    StarkEngine,
};
use openvm_verify_stark_host::{
    pvs::{
        VerifierBasePvs, VkCommit, VmPvs, CONSTRAINT_EVAL_AIR_ID, CONSTRAINT_EVAL_CACHED_INDEX,
        VERIFIER_PVS_AIR_ID, VM_PVS_AIR_ID,
    },
    vk::VerificationBaseline,
};
use plait_core::{AggLayer, SegmentSpec};
use serde::{Deserialize, Serialize};

use super::{
    checkpoint::{Boundary, CheckpointHeader, StartState},
    execution::{stdin_of, SegmentHint},
    keys::{Engine, KeySet},
    program::{vm_instance_on, LoadedProgram},
};
use crate::{
    BackendError, ProgramImage, ProofBlob, ProofMeta, ProvingPhase, SegmentStart, Verdict,
};

const ENVELOPE_VERSION: u8 = 1;

/// What travels between worker and coordinator: an encoded STARK proof, plus, for the last
/// segment, the proof that the public values sit in the final memory.
#[derive(Serialize, Deserialize)]
pub(crate) struct ProofEnvelope {
    pub version: u8,
    pub proof: Vec<u8>,
    pub user_pvs_proof: Option<Vec<u8>>,
}

impl ProofEnvelope {
    pub fn encode(proof: &Proof<SC>, user_pvs: Option<&UserPublicValuesProof<8, F>>) -> ProofBlob {
        let proof = proof
            .encode_to_vec()
            .expect("encoding to memory cannot fail");
        let user_pvs_proof = user_pvs.map(|p| {
            let mut buf = Vec::new();
            p.encode::<SC, _>(&mut buf)
                .expect("encoding to memory cannot fail");
            buf
        });
        let envelope = ProofEnvelope {
            version: ENVELOPE_VERSION,
            proof,
            user_pvs_proof,
        };
        ProofBlob(bitcode::serialize(&envelope).expect("envelope serializes"))
    }

    pub fn decode(
        blob: &ProofBlob,
    ) -> Result<(Proof<SC>, Option<UserPublicValuesProof<8, F>>), String> {
        let envelope: ProofEnvelope = bitcode::deserialize(&blob.0)
            .map_err(|e| format!("proof envelope does not decode: {e}"))?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(format!(
                "proof envelope version {} is not {ENVELOPE_VERSION}",
                envelope.version
            ));
        }
        let proof = Proof::<SC>::decode_from_bytes(&envelope.proof)
            .map_err(|e| format!("STARK proof does not decode: {e}"))?;
        let user_pvs = envelope
            .user_pvs_proof
            .map(|bytes| {
                UserPublicValuesProof::<8, F>::decode::<SC, _>(&mut std::io::Cursor::new(&bytes))
                    .map_err(|e| format!("public values proof does not decode: {e}"))
            })
            .transpose()?;
        Ok((proof, user_pvs))
    }
}

/// Where a segment is proven: which engine, and the VM builder that puts its chips there.
pub(crate) struct SegmentTask<'a> {
    pub keys: &'a KeySet,
    pub program: &'a LoadedProgram,
    pub image: &'a ProgramImage,
    pub segment: &'a SegmentSpec,
    pub is_last: bool,
    pub start: SegmentStart<'a>,
    /// Called as each step begins, for tools that measure the steps apart.
    pub on_phase: &'a mut dyn FnMut(ProvingPhase),
}

/// Proves one segment on the CPU.
pub(crate) fn prove_segment(task: SegmentTask<'_>) -> Result<(ProofBlob, ProofMeta), BackendError> {
    prove_segment_on::<Engine, _>(SdkVmCpuBuilder, task)
}

/// Proves one segment on `E`'s device (the same steps and the same proof on every engine:
/// only where the traces are built and committed differs).
pub(crate) fn prove_segment_on<E, VB>(
    builder: VB,
    task: SegmentTask<'_>,
) -> Result<(ProofBlob, ProofMeta), BackendError>
where
    E: StarkEngine<SC = SC>,
    VB: VmBuilder<E, VmConfig = SdkVmConfig>,
    <SdkVmConfig as VmExecutionConfig<F>>::Executor: PreflightExecutor<F, VB::RecordArena>,
{
    let SegmentTask {
        keys,
        program,
        image,
        segment,
        is_last,
        start,
        on_phase,
    } = task;
    let hint = SegmentHint::of(segment)?;
    let mut instance = vm_instance_on::<E, VB>(builder, keys, &program.exe)?;
    let failed = |e: &dyn std::fmt::Display| BackendError::ProvingFailed(e.to_string());

    on_phase(ProvingPhase::StartState);
    let started = Instant::now();
    let (state, reexecuted_instructions) = {
        let interpreter = instance
            .vm
            .interpreter(&program.exe)
            .map_err(|e| failed(&e))?;
        match start {
            SegmentStart::Checkpoint { job, bytes } => {
                let expected = CheckpointHeader {
                    job: job.0,
                    program_sha256: image.digest.clone(),
                    segment: segment.index,
                    instret_start: segment.instret_start,
                    boundary: hint.start,
                };
                let start = StartState::decode(bytes, &expected).map_err(|reason| {
                    BackendError::MalformedTask(format!("checkpoint refused: {reason}"))
                })?;
                let mut state = interpreter.create_initial_vm_state(StdIn::default());
                let md = instance
                    .vm
                    .config()
                    .as_ref()
                    .memory_config
                    .memory_dimensions();
                start.restore(&mut state, &md).map_err(|reason| {
                    BackendError::MalformedTask(format!("checkpoint refused: {reason}"))
                })?;
                (state, 0)
            }
            // Without a checkpoint, rebuild the state by executing up to the segment.
            SegmentStart::Reexecute(input) => {
                let initial = interpreter.create_initial_vm_state(stdin_of(input));
                let state = if segment.instret_start == 0 {
                    initial
                } else {
                    interpreter
                        .execute_from_state(initial, Some(segment.instret_start))
                        .map_err(|e| failed(&e))?
                };
                (state, segment.instret_start)
            }
        }
    };
    let reexecution_seconds = started.elapsed().as_secs_f64();
    if state.pc() != hint.start.pc {
        return Err(BackendError::MalformedTask(format!(
            "the start state is at pc {:#x}, the plan says segment {} starts at {:#x}: \
             input or program differ from the plan's",
            state.pc(),
            segment.index,
            hint.start.pc
        )));
    }

    // OpenVM's `VirtualMachine::prove`, step by step.
    let started = Instant::now();
    let instance = &mut instance;
    on_phase(ProvingPhase::Recording);
    instance.vm.transport_init_memory_to_device(&state.memory);
    let PreflightExecutionOutput {
        system_records,
        record_arenas,
        to_state,
    } = instance
        .vm
        .execute_preflight(
            &mut instance.interpreter,
            state,
            Some(segment.num_insns),
            &hint.trace_heights,
        )
        .map_err(|e| failed(&e))?;
    // Final memory matters only to a terminal segment that exited successfully.
    let final_memory =
        (system_records.exit_code == Some(ExitCode::Success as u32)).then_some(to_state.memory);
    on_phase(ProvingPhase::TraceGeneration);
    let ctx = instance
        .vm
        .generate_proving_ctx(system_records, record_arenas)
        .map_err(|e| failed(&e))?;
    on_phase(ProvingPhase::Proving);
    let proof = instance
        .vm
        .engine
        .prove(instance.vm.pk(), ctx)
        .map_err(|e| failed(&format!("{e:?}")))?;
    on_phase(ProvingPhase::PublicValues);
    let user_pvs = if is_last {
        let final_memory = final_memory.ok_or_else(|| {
            BackendError::ProvingFailed("the last segment did not end in a successful exit".into())
        })?;
        let top_tree = instance.vm.memory_top_tree().ok_or_else(|| {
            BackendError::ProvingFailed("VM kept no memory tree after the last segment".into())
        })?;
        let config = instance.vm.config().as_ref();
        Some(UserPublicValuesProof::compute(
            config.memory_config.memory_dimensions(),
            config.num_public_values,
            &vm_poseidon2_hasher(),
            &final_memory.memory,
            top_tree,
        ))
    } else {
        None
    };
    let proving_seconds = started.elapsed().as_secs_f64();
    Ok((
        ProofEnvelope::encode(&proof, user_pvs.as_ref()),
        ProofMeta {
            reexecution_seconds,
            reexecuted_instructions,
            proving_seconds,
            ..Default::default()
        },
    ))
}

/// The most children one node of `layer` takes (a circuit constant in OpenVM).
pub(crate) fn max_children(layer: AggLayer) -> usize {
    match layer {
        AggLayer::Leaf => openvm_sdk::config::MAX_NUM_CHILDREN_LEAF,
        AggLayer::InternalForLeaf | AggLayer::InternalRecursive(_) => {
            openvm_sdk::config::MAX_NUM_CHILDREN_INTERNAL
        }
        AggLayer::Wrap => 1,
    }
}

/// The aggregation layers' provers on one engine.
pub(crate) trait LayerProvers {
    /// Proves one node of `layer` over its children's proofs. The outer error is a prover
    /// that could not be loaded, the inner one a proof that could not be made.
    fn prove_layer(
        &self,
        layer: AggLayer,
        proofs: &[Proof<SC>],
    ) -> Result<eyre::Result<Proof<SC>>, BackendError>;
}

/// Which prover and which child key a node of each layer uses, for `$provers` (anything with
/// `leaf_prover`, `internal_for_leaf_prover` and `internal_recursive_prover`) on `$engine`.
macro_rules! prove_layer_with {
    ($provers:expr, $engine:ty, $layer:expr, $proofs:expr) => {{
        use openvm_continuations::prover::ChildVkKind;
        Ok(match $layer {
            AggLayer::Leaf => $provers
                .leaf_prover()?
                .agg_prove_no_def::<$engine>($proofs, ChildVkKind::App),
            AggLayer::InternalForLeaf => $provers
                .internal_for_leaf_prover()?
                .agg_prove_no_def::<$engine>($proofs, ChildVkKind::Standard),
            AggLayer::InternalRecursive(0) => $provers
                .internal_recursive_prover()?
                .agg_prove_no_def::<$engine>($proofs, ChildVkKind::Standard),
            // Deeper recursive layers and the wrap verify proofs of their own circuit.
            AggLayer::InternalRecursive(_) | AggLayer::Wrap => $provers
                .internal_recursive_prover()?
                .agg_prove_no_def::<$engine>($proofs, ChildVkKind::RecursiveSelf),
        })
    }};
}
#[cfg_attr(not(feature = "cuda"), allow(unused_imports))]
pub(crate) use prove_layer_with;

impl LayerProvers for KeySet {
    fn prove_layer(
        &self,
        layer: AggLayer,
        proofs: &[Proof<SC>],
    ) -> Result<eyre::Result<Proof<SC>>, BackendError> {
        prove_layer_with!(self, Engine, layer, proofs)
    }
}

pub(crate) fn aggregate(
    provers: &dyn LayerProvers,
    layer: AggLayer,
    children: &[ProofBlob],
) -> Result<ProofBlob, BackendError> {
    if children.is_empty() || children.len() > max_children(layer) {
        return Err(BackendError::MalformedTask(format!(
            "a {layer} node takes 1 to {} children, got {}",
            max_children(layer),
            children.len()
        )));
    }
    let proofs = children
        .iter()
        .map(|c| ProofEnvelope::decode(c).map(|(p, _)| p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BackendError::MalformedTask)?;
    let proof = provers
        .prove_layer(layer, &proofs)?
        .map_err(|e| BackendError::ProvingFailed(format!("{layer} node: {e}")))?;
    Ok(ProofEnvelope::encode(&proof, None))
}

/// The verifying key a proof of `layer` must verify under.
fn layer_vk(keys: &KeySet, layer: AggLayer) -> Result<&MultiStarkVerifyingKey<SC>, BackendError> {
    let vks = keys.vks()?;
    Ok(match layer {
        AggLayer::Leaf => &vks.leaf,
        AggLayer::InternalForLeaf => &vks.internal_for_leaf,
        AggLayer::InternalRecursive(_) | AggLayer::Wrap => &vks.internal_recursive,
    })
}

fn verify_stark(vk: &MultiStarkVerifyingKey<SC>, proof: &Proof<SC>) -> Result<(), String> {
    Engine::new(vk.inner.params.clone())
        .verify(vk, proof)
        .map_err(|e| format!("STARK verification failed: {e:?}"))
}

fn words(digest: &[F; 8]) -> [u32; 8] {
    digest.map(|x| x.as_canonical_u32())
}

/// The facts about an execution slice that a proof exposes, in one shape for segment and
/// aggregation proofs.
struct SliceClaims {
    program_commit: [u32; 8],
    start: Boundary,
    end: Boundary,
    is_terminate: bool,
    exit_code: u32,
}

/// Compares what a proof claims with the plan's boundaries for the slice it was asked for.
fn compare_with_plan(
    claims: &SliceClaims,
    program: &LoadedProgram,
    first: &SegmentHint,
    last: &SegmentHint,
    ends_execution: bool,
) -> Result<(), String> {
    if claims.program_commit != words(&program.program_commit) {
        return Err("proof is of another program (program commitment differs)".into());
    }
    if claims.start != first.start {
        return Err(format!(
            "proof starts at pc {:#x} / memory root {:08x?}, the slice starts at pc {:#x} / {:08x?}",
            claims.start.pc, claims.start.memory_root[0], first.start.pc, first.start.memory_root[0]
        ));
    }
    if claims.end.memory_root != last.end.memory_root {
        return Err("proof ends in another memory state than the slice".into());
    }
    if claims.is_terminate != ends_execution {
        return Err(format!(
            "proof says the program {} here, the plan says it {}",
            if claims.is_terminate {
                "terminates"
            } else {
                "continues"
            },
            if ends_execution {
                "terminates"
            } else {
                "continues"
            }
        ));
    }
    if ends_execution {
        if claims.exit_code != 0 {
            return Err(format!("proof shows exit code {}", claims.exit_code));
        }
    } else if claims.end.pc != last.end.pc {
        return Err(format!(
            "proof ends at pc {:#x}, the slice ends at {:#x}",
            claims.end.pc, last.end.pc
        ));
    }
    Ok(())
}

/// The commitment to cached trace `index` of AIR `air`, if the proof has one.
fn cached_commitment(proof: &Proof<SC>, air: usize, index: usize) -> Option<&[F; 8]> {
    proof
        .trace_vdata
        .get(air)
        .and_then(|v| v.as_ref())
        .and_then(|v| v.cached_commitments.get(index))
}

fn pvs_slice(proof: &Proof<SC>, air: usize, len: usize) -> Result<&[F], String> {
    let pvs = proof
        .public_values
        .get(air)
        .ok_or_else(|| format!("proof has no public values for AIR {air}"))?;
    if pvs.len() != len {
        return Err(format!(
            "AIR {air} exposes {} public values, expected {len}",
            pvs.len()
        ));
    }
    Ok(pvs)
}

pub(crate) fn check_segment(
    keys: &KeySet,
    program: &LoadedProgram,
    segment: &SegmentSpec,
    ending: Option<&[u8]>,
    blob: &ProofBlob,
) -> Result<(), String> {
    let hint = SegmentHint::of(segment).map_err(|e| e.to_string())?;
    let (proof, user_pvs) = ProofEnvelope::decode(blob)?;
    let vks = keys.vks().map_err(|e| e.to_string())?;
    verify_stark(&vks.app, &proof)?;

    let program_commit = cached_commitment(&proof, PROGRAM_AIR_ID, PROGRAM_CACHED_TRACE_INDEX)
        .ok_or("proof has no program commitment")?;
    let connector: &VmConnectorPvs<F> =
        pvs_slice(&proof, CONNECTOR_AIR_ID, size_of::<VmConnectorPvs<u8>>())?.borrow();
    let merkle: &MemoryMerklePvs<F, 8> =
        pvs_slice(&proof, MERKLE_AIR_ID, size_of::<MemoryMerklePvs<u8, 8>>())?.borrow();
    let claims = SliceClaims {
        program_commit: words(program_commit),
        start: Boundary {
            pc: connector.initial_pc.as_canonical_u32(),
            memory_root: words(&merkle.initial_root),
        },
        end: Boundary {
            pc: connector.final_pc.as_canonical_u32(),
            memory_root: words(&merkle.final_root),
        },
        is_terminate: connector.is_terminate(),
        exit_code: connector.exit_code.as_canonical_u32(),
    };
    compare_with_plan(&claims, program, &hint, &hint, ending.is_some())?;

    match (ending, user_pvs) {
        (Some(public_values), Some(user_pvs)) => {
            let config = keys
                .app_pk()
                .map_err(|e| e.to_string())?
                .vm_config()
                .as_ref();
            user_pvs
                .verify(
                    &vm_poseidon2_hasher(),
                    config.memory_config.memory_dimensions(),
                    merkle.final_root,
                )
                .map_err(|e| format!("public values proof does not verify: {e:?}"))?;
            let revealed: Vec<u8> = user_pvs
                .public_values
                .iter()
                .map(|x| x.as_canonical_u32() as u8)
                .collect();
            if revealed != public_values {
                return Err("public values differ from the planned execution's".into());
            }
        }
        (Some(_), None) => {
            return Err("the last segment's proof lacks its public values proof".into())
        }
        (None, Some(_)) => return Err("only the last segment carries a public values proof".into()),
        (None, None) => {}
    }
    Ok(())
}

/// What an aggregation node's proof must prove: its layer, its children's layer (`None`:
/// segments), and the slice of the execution it covers.
pub(crate) struct NodeSlice<'a> {
    pub layer: AggLayer,
    pub child_layer: Option<AggLayer>,
    pub first: &'a SegmentSpec,
    pub last: &'a SegmentSpec,
    pub ends_execution: bool,
}

pub(crate) fn check_aggregate(
    keys: &KeySet,
    program: &LoadedProgram,
    node: &NodeSlice<'_>,
    blob: &ProofBlob,
) -> Result<(), String> {
    let NodeSlice {
        layer,
        child_layer,
        first,
        last,
        ends_execution,
    } = *node;
    if first.index > last.index {
        return Err("an aggregation node must cover at least one segment".into());
    }
    let (proof, user_pvs) = ProofEnvelope::decode(blob)?;
    if user_pvs.is_some() {
        return Err("aggregation proofs carry no public values proof".into());
    }
    // Where the proof sits in the recursion is read from its public values and commitments
    // alone: cheap, so checked before the STARK.
    let baseline = &keys
        .verifier_template()
        .map_err(|e| e.to_string())?
        .baseline;
    check_layer(&proof, layer, child_layer, baseline)?;
    verify_stark(layer_vk(keys, layer).map_err(|e| e.to_string())?, &proof)?;
    let pvs: &VmPvs<F> = pvs_slice(&proof, VM_PVS_AIR_ID, size_of::<VmPvs<u8>>())?.borrow();
    let claims = SliceClaims {
        program_commit: words(&pvs.program_commit),
        start: Boundary {
            pc: pvs.initial_pc.as_canonical_u32(),
            memory_root: words(&pvs.initial_root),
        },
        end: Boundary {
            pc: pvs.final_pc.as_canonical_u32(),
            memory_root: words(&pvs.final_root),
        },
        is_terminate: pvs.is_terminate.as_canonical_u32() == 1,
        exit_code: pvs.exit_code.as_canonical_u32(),
    };
    let first = SegmentHint::of(first).map_err(|e| e.to_string())?;
    let last = SegmentHint::of(last).map_err(|e| e.to_string())?;
    compare_with_plan(&claims, program, &first, &last, ends_execution)
}

/// Checks where in the recursion an aggregation proof sits, as OpenVM's final verifier
/// (`openvm_verify_stark_host::verify_vm_stark_proof_pvs`) checks the last one: its layer
/// flag, its recursion depth, the verifying-key commitments of the layers below it, and the
/// key its children were verified under. Without this, the internal-recursive layers and the
/// wrap, which share one verifying key, would accept each other's proofs: a worker could
/// return its child's proof unchanged. At every layer the key its children were verified
/// under (the commitment of its constraint-evaluation trace) must be the pool's key of the
/// layer below: OpenVM's own circuits check this only one layer up, so a leaf proven over a
/// weakened app key of the same shape would pass its own layer and poison the node above.
fn check_layer(
    proof: &Proof<SC>,
    layer: AggLayer,
    child_layer: Option<AggLayer>,
    baseline: &VerificationBaseline,
) -> Result<(), String> {
    let pvs = proof
        .public_values
        .get(VERIFIER_PVS_AIR_ID)
        .ok_or("proof has no verifier public values")?;
    let width = VerifierBasePvs::<u8>::width();
    if pvs.len() < width {
        return Err(format!(
            "proof exposes {} verifier public values, expected at least {width}",
            pvs.len()
        ));
    }
    let base: &VerifierBasePvs<F> = pvs[..width].borrow();
    // (flag, depth) per layer: the leaf and internal-for-leaf verifiers are 0 and 1 at depth
    // 0; internal-recursive layer k is 2 at depth k + 1; the wrap is one level above its child.
    let depth_of = |layer: AggLayer| match layer {
        AggLayer::InternalRecursive(k) => Some(k + 1),
        _ => None,
    };
    let (flag, depth) = match layer {
        AggLayer::Leaf => (0, 0),
        AggLayer::InternalForLeaf => (1, 0),
        AggLayer::InternalRecursive(k) => (2, k + 1),
        AggLayer::Wrap => (
            2,
            child_layer
                .and_then(depth_of)
                .map(|d| d + 1)
                .ok_or("a wrap node's children must be internal-recursive proofs")?,
        ),
    };
    let found = (
        base.internal_flag.as_canonical_u32(),
        base.recursion_depth.as_canonical_u32(),
    );
    if found != (flag, depth) {
        return Err(format!(
            "proof is of layer flag {} at recursion depth {}; a {layer} proof has flag {flag} at              depth {depth} (a proof of another layer, or a child's proof returned as its parent's)",
            found.0, found.1
        ));
    }
    let same = |name: &str, found: &VkCommit<F>, expected: &VkCommit<F>| {
        if found.cached_commit == expected.cached_commit
            && found.vk_pre_hash == expected.vk_pre_hash
        {
            Ok(())
        } else {
            Err(format!(
                "proof's {name} verifying-key commitment is not this pool's"
            ))
        }
    };
    same("app", &base.app_vk_commit, &baseline.app_vk_commit)?;
    if flag >= 1 {
        same("leaf", &base.leaf_vk_commit, &baseline.leaf_vk_commit)?;
    }
    // The key the children were verified under: the app key below a leaf, the leaf key below
    // internal-for-leaf, internal-for-leaf at depth 1, the internal-recursive key above.
    let children_vk = match flag {
        0 => &baseline.app_vk_commit,
        1 => &baseline.leaf_vk_commit,
        _ => {
            same(
                "internal-for-leaf",
                &base.internal_for_leaf_vk_commit,
                &baseline.internal_for_leaf_vk_commit,
            )?;
            let zero = |digest: &[F; 8]| digest.iter().all(|x| x.as_canonical_u32() == 0);
            let unset = zero(&base.internal_recursive_vk_commit.cached_commit)
                && zero(&base.internal_recursive_vk_commit.vk_pre_hash);
            if depth == 1 {
                if !unset {
                    return Err("a depth-1 proof must not name an internal-recursive key".into());
                }
                &baseline.internal_for_leaf_vk_commit
            } else {
                same(
                    "internal-recursive",
                    &base.internal_recursive_vk_commit,
                    &baseline.internal_recursive_vk_commit,
                )?;
                &baseline.internal_recursive_vk_commit
            }
        }
    };
    let cached = cached_commitment(proof, CONSTRAINT_EVAL_AIR_ID, CONSTRAINT_EVAL_CACHED_INDEX)
        .ok_or("proof has no constraint-evaluation commitment")?;
    if *cached != children_vk.cached_commit {
        return Err("proof verified its children under another key than its layer's".into());
    }
    Ok(())
}

/// For the gate's tests: a copy of an aggregation proof whose constraint-evaluation
/// commitment (the key it claims to have verified its children under) is changed, as a proof
/// made over another key of the same shape would carry.
#[doc(hidden)]
pub fn with_other_children_key(blob: &ProofBlob) -> Result<ProofBlob, String> {
    let (mut proof, user_pvs) = ProofEnvelope::decode(blob)?;
    let commitment = proof
        .trace_vdata
        .get_mut(CONSTRAINT_EVAL_AIR_ID)
        .and_then(|v| v.as_mut())
        .and_then(|v| v.cached_commitments.get_mut(CONSTRAINT_EVAL_CACHED_INDEX))
        .ok_or("proof has no constraint-evaluation commitment")?;
    commitment[0] += F::ONE;
    Ok(ProofEnvelope::encode(&proof, user_pvs.as_ref()))
}

impl From<Result<(), String>> for Verdict {
    fn from(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Verdict::Accepted,
            Err(reason) => Verdict::Rejected { reason },
        }
    }
}
