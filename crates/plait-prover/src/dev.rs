//! The dev backend: fast, fake proofs for testing the pool. **It proves nothing.**
//!
//! A dev "program" is any byte string; its input's first item is the number of instructions to
//! pretend to run (a little-endian u64). Segments hold `2^segment_height` instructions each. A
//! dev "proof" is a JSON commitment (SHA-256) to what it claims, prefixed by a banner that says
//! it is fake. The coordinator checks dev proofs as strictly as real ones (right program, right
//! slice, children in order), so the pool's logic is exercised honestly, but
//! [`ProverBackend::verify_final`] always rejects them: nothing downstream may mistake one for a
//! proof.

use std::{thread, time::Duration};

use plait_core::{AggLayer, JobId, ProgramInput, SegmentPlan, SegmentSpec, TraceSize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    BackendError, BackendInfo, CutSegment, ProgramImage, ProofBlob, ProofMeta, ProverBackend,
    ProvingParams, SegmentSink, SegmentStart, Verdict, VerifiedProof,
};

/// Every dev proof starts with this line.
pub const DEV_PROOF_BANNER: &str =
    "PLAIT DEV-BACKEND PROOF: NOT A REAL PROOF, PROVES NOTHING, NEVER ACCEPTED BY `plait verify`\n";

/// Simulated costs of the dev backend, and a fault it can inject (to test the pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct DevBackend {
    /// How long proving each segment takes (on the worker).
    pub segment_delay: Duration,
    /// How long proving each aggregation node takes (on the worker).
    pub aggregate_delay: Duration,
    /// How long executing each segment takes (on the coordinator).
    pub execute_delay: Duration,
    /// How long loading a program takes (on the coordinator, before a job is stored).
    pub prepare_delay: Duration,
    /// Proofs are padded to this many bytes (0: no padding), to load the pool like real ones.
    pub proof_bytes: usize,
    /// A misbehaviour to show, or a fault to hit (see [`DevFault`]).
    pub fault: Option<DevFault>,
    /// The trace size every segment reports (`None`: none, as a backend that cannot measure
    /// it), for tests of what the profiles predict from it.
    pub trace_size: Option<TraceSize>,
}

/// A misbehaviour a dev worker can be told to show on every segment it proves, or a fault of
/// the coordinator's checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevFault {
    /// Returns bytes that are not a proof.
    CorruptProof,
    /// Returns a well-formed proof of the next segment instead of the one asked for.
    WrongSegment,
    /// Cannot check any proof, as a coordinator whose key cache is unreadable cannot.
    CannotCheck,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevClaim {
    program_sha256: String,
    /// Hash of the input the execution ran on.
    input_sha256: String,
    /// `segment` or the layer name.
    kind: String,
    covers: (u32, u32),
    /// Commitment to the children's commitments (for nodes) or to the slice (for segments).
    commitment: String,
}

fn sha(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

fn input_digest(input: &ProgramInput) -> String {
    let items: Vec<&[u8]> = input.items.iter().map(Vec::as_slice).collect();
    sha(&items)
}

/// A dev segment's "start state": what it is the start of, and the input digest (a dev program
/// has no other state).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevCheckpoint {
    job: u64,
    program_sha256: String,
    input_sha256: String,
    segment: u32,
    instret_start: u64,
}

/// Every dev checkpoint starts with this line.
const DEV_CHECKPOINT_BANNER: &str = "PLAIT DEV-BACKEND CHECKPOINT\n";

fn encode_checkpoint(checkpoint: &DevCheckpoint) -> Vec<u8> {
    let mut bytes = DEV_CHECKPOINT_BANNER.as_bytes().to_vec();
    bytes.extend(serde_json::to_vec(checkpoint).expect("checkpoint serializes"));
    bytes
}

fn decode_checkpoint(bytes: &[u8]) -> Result<DevCheckpoint, String> {
    let body = bytes
        .strip_prefix(DEV_CHECKPOINT_BANNER.as_bytes())
        .ok_or("not a dev-backend checkpoint")?;
    serde_json::from_slice(body).map_err(|e| format!("dev checkpoint does not parse: {e}"))
}

fn encode(claim: &DevClaim) -> ProofBlob {
    let mut bytes = DEV_PROOF_BANNER.as_bytes().to_vec();
    bytes.extend(serde_json::to_vec(claim).expect("claim serializes"));
    ProofBlob(bytes)
}

/// Pads a dev proof with zeros after a newline up to `size` bytes, so that the pool moves and
/// stores bytes of the size real proofs have.
fn pad(proof: &mut ProofBlob, size: usize) {
    if proof.0.len() < size {
        proof.0.push(b'\n');
        proof.0.resize(size, 0);
    }
}

fn decode(blob: &ProofBlob) -> Result<DevClaim, String> {
    let body = blob
        .0
        .strip_prefix(DEV_PROOF_BANNER.as_bytes())
        .ok_or("not a dev-backend proof")?;
    // The claim is one line of JSON; padding may follow it.
    let claim = body.split(|&b| b == b'\n').next().unwrap_or(body);
    serde_json::from_slice(claim).map_err(|e| format!("dev proof does not parse: {e}"))
}

fn segment_commitment(program: &str, input: &str, segment: &SegmentSpec) -> String {
    sha(&[
        program.as_bytes(),
        input.as_bytes(),
        &segment.instret_start.to_le_bytes(),
        &segment.num_insns.to_le_bytes(),
    ])
}

fn node_commitment(layer: AggLayer, children: &[String]) -> String {
    let name = layer.to_string();
    let mut parts: Vec<&[u8]> = vec![name.as_bytes()];
    parts.extend(children.iter().map(|c| c.as_bytes()));
    sha(&parts)
}

/// The input digest is part of every segment's plan, so checks can recompute claims without
/// the input.
fn planned_input_digest(segment: &SegmentSpec) -> Option<&str> {
    segment.backend_hint.get("input-sha256")?.as_str()
}

impl DevBackend {
    fn checker_works(&self) -> Result<(), BackendError> {
        if self.fault == Some(DevFault::CannotCheck) {
            return Err(BackendError::KeyStore {
                path: "(dev)".into(),
                reason: "the checker's keys cannot be read (injected fault)".into(),
            });
        }
        Ok(())
    }
}

impl ProverBackend for DevBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "dev".into(),
            version: "0".into(),
            sound: false,
        }
    }

    fn prepare_program(
        &self,
        _program: &ProgramImage,
        _params: &ProvingParams,
    ) -> Result<(), BackendError> {
        thread::sleep(self.prepare_delay);
        Ok(())
    }

    fn prepare_keys(&self, _params: &ProvingParams) -> Result<String, BackendError> {
        Ok("dev backend: no keys (its proofs are fake)".into())
    }

    fn check_program(&self, program: &ProgramImage) -> Result<(), BackendError> {
        if program.bytes.is_empty() {
            return Err(BackendError::InvalidProgram("empty program".into()));
        }
        Ok(())
    }

    fn execute_streaming(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: &ProvingParams,
        checkpoints_for: Option<JobId>,
        sink: &mut SegmentSink<'_>,
    ) -> Result<SegmentPlan, BackendError> {
        let total = match input.items.first().map(Vec::as_slice) {
            Some(bytes) if bytes.len() == 8 => u64::from_le_bytes(bytes.try_into().unwrap()),
            // A u32 count too, as the sha-chain guest's first item is (calibration runs it).
            Some(bytes) if bytes.len() == 4 => {
                u64::from(u32::from_le_bytes(bytes.try_into().unwrap()))
            }
            _ => {
                return Err(BackendError::GuestFailed(
                    "a dev program's first input item is its instruction count (u64 or u32)".into(),
                ))
            }
        };
        if total == 0 {
            return Err(BackendError::GuestFailed(
                "a dev program runs at least one instruction".into(),
            ));
        }
        if total > params.max_instructions {
            return Err(BackendError::InstructionLimit {
                limit: params.max_instructions,
            });
        }
        let per_segment = 1u64 << params.segment_height.min(62);
        let input_sha = input_digest(input);
        let public_values = hex::decode(sha(&[program.digest.as_bytes(), input_sha.as_bytes()]))
            .expect("hex of a digest");
        let mut segments = Vec::new();
        for i in 0..total.div_ceil(per_segment) {
            thread::sleep(self.execute_delay);
            let start = i * per_segment;
            let mut spec = SegmentSpec {
                index: i as u32,
                instret_start: start,
                num_insns: per_segment.min(total - start),
                memory_estimate_bytes: per_segment * 1024,
                backend_hint: serde_json::json!({ "input-sha256": input_sha }),
                checkpoint: None,
                trace_size: self.trace_size,
            };
            let checkpoint = checkpoints_for.map(|job| {
                let blob = encode_checkpoint(&DevCheckpoint {
                    job: job.0,
                    program_sha256: program.digest.clone(),
                    input_sha256: input_sha.clone(),
                    segment: spec.index,
                    instret_start: spec.instret_start,
                });
                spec.checkpoint = Some(hex::encode(Sha256::digest(&blob)));
                blob
            });
            let is_last = start + per_segment >= total;
            sink(CutSegment {
                spec: spec.clone(),
                checkpoint,
                ending: is_last.then(|| public_values.clone()),
            })?;
            segments.push(spec);
        }
        Ok(SegmentPlan {
            segments,
            public_values,
        })
    }

    /// Exact: dev segments hold `2^height` instructions each.
    fn predict_segments(
        &self,
        plan: &SegmentPlan,
        _plan_height: u32,
        height: u32,
    ) -> Option<Vec<u64>> {
        let total = plan.total_insns();
        let per_segment = 1u64 << height.min(62);
        Some(
            (0..total.div_ceil(per_segment))
                .map(|i| per_segment.min(total - i * per_segment))
                .collect(),
        )
    }

    fn prove_segment(
        &self,
        program: &ProgramImage,
        _params: &ProvingParams,
        segment: &SegmentSpec,
        _is_last: bool,
        start: SegmentStart<'_>,
    ) -> Result<(ProofBlob, ProofMeta), BackendError> {
        let (input_sha, reexecuted_instructions) = match start {
            SegmentStart::Reexecute(input) => (input_digest(input), segment.instret_start),
            SegmentStart::Checkpoint { job, bytes } => {
                let checkpoint = decode_checkpoint(bytes).map_err(|reason| {
                    BackendError::MalformedTask(format!("checkpoint refused: {reason}"))
                })?;
                let expected = DevCheckpoint {
                    job: job.0,
                    program_sha256: program.digest.clone(),
                    input_sha256: checkpoint.input_sha256.clone(),
                    segment: segment.index,
                    instret_start: segment.instret_start,
                };
                if checkpoint != expected {
                    return Err(BackendError::MalformedTask(format!(
                        "checkpoint refused: it is the start of segment {} of job-{}, the task \
                         proves segment {} of job-{}",
                        checkpoint.segment, checkpoint.job, segment.index, job.0
                    )));
                }
                (checkpoint.input_sha256, 0)
            }
        };
        thread::sleep(self.segment_delay);
        let mut proven = segment.clone();
        if self.fault == Some(DevFault::WrongSegment) {
            proven.index += 1;
            proven.instret_start += segment.num_insns;
        }
        let claim = DevClaim {
            commitment: segment_commitment(&program.digest, &input_sha, &proven),
            program_sha256: program.digest.clone(),
            input_sha256: input_sha,
            kind: "segment".into(),
            covers: (proven.index, proven.index + 1),
        };
        let mut proof = encode(&claim);
        if self.fault == Some(DevFault::CorruptProof) {
            let last = proof.0.len() - 2;
            proof.0[last] ^= 0x55;
        }
        pad(&mut proof, self.proof_bytes);
        Ok((
            proof,
            ProofMeta {
                proving_seconds: self.segment_delay.as_secs_f64(),
                reexecuted_instructions,
                ..Default::default()
            },
        ))
    }

    fn aggregate(
        &self,
        _params: &ProvingParams,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<ProofBlob, BackendError> {
        thread::sleep(self.aggregate_delay);
        let claims = children
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(BackendError::MalformedTask)?;
        let (first, last) = match (claims.first(), claims.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(BackendError::MalformedTask("no children".into())),
        };
        // Like a real recursion circuit, refuse children that do not chain.
        if claims.windows(2).any(|w| w[0].covers.1 != w[1].covers.0)
            || claims
                .iter()
                .any(|c| c.program_sha256 != first.program_sha256)
        {
            return Err(BackendError::ProvingFailed(format!(
                "{layer} node: children do not form one contiguous slice of one program"
            )));
        }
        let commitments: Vec<String> = claims.iter().map(|c| c.commitment.clone()).collect();
        let mut proof = encode(&DevClaim {
            program_sha256: first.program_sha256.clone(),
            input_sha256: first.input_sha256.clone(),
            kind: layer.to_string(),
            covers: (first.covers.0, last.covers.1),
            commitment: node_commitment(layer, &commitments),
        });
        pad(&mut proof, self.proof_bytes);
        Ok(proof)
    }

    fn check_segment_proof(
        &self,
        program: &ProgramImage,
        _params: &ProvingParams,
        segment: &SegmentSpec,
        _ending: Option<&[u8]>,
        proof: &ProofBlob,
    ) -> Result<Verdict, BackendError> {
        self.checker_works()?;
        let check = || -> Result<(), String> {
            let claim = decode(proof)?;
            let input = planned_input_digest(segment).ok_or("plan has no input digest")?;
            let expected = DevClaim {
                program_sha256: program.digest.clone(),
                input_sha256: input.to_string(),
                kind: "segment".into(),
                covers: (segment.index, segment.index + 1),
                commitment: segment_commitment(&program.digest, input, segment),
            };
            if claim != expected {
                return Err(format!(
                    "dev proof claims {} {:?}, expected segment {}",
                    claim.kind, claim.covers, segment.index
                ));
            }
            Ok(())
        };
        Ok(check().into())
    }

    fn check_aggregate_proof(
        &self,
        program: &ProgramImage,
        _params: &ProvingParams,
        layer: AggLayer,
        _child_layer: Option<AggLayer>,
        first: &SegmentSpec,
        last: &SegmentSpec,
        _ends_execution: bool,
        proof: &ProofBlob,
    ) -> Result<Verdict, BackendError> {
        self.checker_works()?;
        let check = || -> Result<(), String> {
            let claim = decode(proof)?;
            let input = planned_input_digest(first).ok_or("plan has no input digest")?;
            let covers = (first.index, last.index + 1);
            if claim.program_sha256 != program.digest
                || claim.input_sha256 != input
                || claim.kind != layer.to_string()
                || claim.covers != covers
            {
                return Err(format!(
                    "dev proof claims {} {:?}, expected {layer} {covers:?}",
                    claim.kind, claim.covers
                ));
            }
            Ok(())
        };
        Ok(check().into())
    }

    fn finalize(
        &self,
        _program: &ProgramImage,
        _params: &ProvingParams,
        root: &ProofBlob,
        last_segment: &ProofBlob,
    ) -> Result<Vec<u8>, BackendError> {
        let claim = decode(root).map_err(BackendError::MalformedTask)?;
        // Like OpenVM's, the final proof also takes what it reveals from the last segment's.
        let last = decode(last_segment)
            .map_err(|e| BackendError::ProofRejected(format!("last segment's proof: {e}")))?;
        if last.kind != "segment" || last.covers.1 != claim.covers.1 {
            return Err(BackendError::ProofRejected(format!(
                "last segment's proof claims {} {:?}, the root ends at segment {}",
                last.kind, last.covers, claim.covers.1
            )));
        }
        Ok(root.0.clone())
    }

    fn verify_final(
        &self,
        _program: &ProgramImage,
        _proof_file: &[u8],
    ) -> Result<VerifiedProof, BackendError> {
        Err(BackendError::ProofRejected(
            "dev-backend proofs prove nothing and are never accepted".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(
        insns: u64,
    ) -> (
        DevBackend,
        ProgramImage,
        ProgramInput,
        ProvingParams,
        SegmentPlan,
    ) {
        let backend = DevBackend::default();
        let program = ProgramImage::new(b"dev program".to_vec());
        let input = ProgramInput {
            items: vec![insns.to_le_bytes().to_vec()],
        };
        let params = ProvingParams {
            segment_height: 4,
            ..Default::default()
        };
        let plan = backend.execute(&program, &input, &params).unwrap();
        (backend, program, input, params, plan)
    }

    #[test]
    fn dev_proofs_check_only_for_their_own_slice_and_never_verify() {
        let (backend, program, input, params, plan) = setup(40);
        assert_eq!(plan.segments.len(), 3);
        let proofs: Vec<ProofBlob> = plan
            .segments
            .iter()
            .map(|s| {
                backend
                    .prove_segment(&program, &params, s, false, SegmentStart::Reexecute(&input))
                    .unwrap()
                    .0
            })
            .collect();
        let s = &plan.segments;
        assert_eq!(
            backend
                .check_segment_proof(&program, &params, &s[1], None, &proofs[1])
                .unwrap(),
            Verdict::Accepted
        );
        // A valid proof of the wrong segment is rejected.
        assert!(matches!(
            backend
                .check_segment_proof(&program, &params, &s[1], None, &proofs[2])
                .unwrap(),
            Verdict::Rejected { .. }
        ));
        // Reordered children cannot be aggregated.
        let swapped = [proofs[1].clone(), proofs[0].clone()];
        assert!(backend
            .aggregate(&params, AggLayer::Leaf, &swapped)
            .is_err());
        // A dropped child yields a proof that does not cover the node's segments.
        let dropped = backend
            .aggregate(
                &params,
                AggLayer::Leaf,
                &[proofs[0].clone(), proofs[2].clone()],
            )
            .err();
        assert!(dropped.is_some());
        let leaf = backend.aggregate(&params, AggLayer::Leaf, &proofs).unwrap();
        let check = |first: &SegmentSpec, last: &SegmentSpec| {
            backend
                .check_aggregate_proof(
                    &program,
                    &params,
                    AggLayer::Leaf,
                    None,
                    first,
                    last,
                    true,
                    &leaf,
                )
                .unwrap()
        };
        assert_eq!(check(&s[0], &s[2]), Verdict::Accepted);
        assert!(matches!(check(&s[0], &s[1]), Verdict::Rejected { .. }));
        let file = backend
            .finalize(&program, &params, &leaf, &proofs[2])
            .unwrap();
        assert!(file.starts_with(DEV_PROOF_BANNER.as_bytes()));
        assert!(backend.verify_final(&program, &file).is_err());
    }

    #[test]
    fn dev_checkpoints_start_only_their_own_segment_of_their_own_job() {
        let (backend, program, input, params, _) = setup(40);
        let mut blobs = Vec::new();
        let plan = backend
            .execute_streaming(&program, &input, &params, Some(JobId(7)), &mut |cut| {
                let blob = cut.checkpoint.expect("checkpoints were asked for");
                assert_eq!(
                    cut.spec.checkpoint.as_deref(),
                    Some(hex::encode(Sha256::digest(&blob)).as_str())
                );
                assert_eq!(
                    cut.ending.is_some(),
                    cut.spec.index == 2,
                    "only the last ends"
                );
                blobs.push(blob);
                Ok(())
            })
            .unwrap();
        let s = &plan.segments;
        let from = |job: u64, blob: &[u8], seg: &SegmentSpec| {
            let start = SegmentStart::Checkpoint {
                job: JobId(job),
                bytes: blob,
            };
            backend.prove_segment(&program, &params, seg, false, start)
        };
        let (proof, meta) = from(7, &blobs[1], &s[1]).unwrap();
        assert_eq!(meta.reexecuted_instructions, 0);
        let reexecuted = backend
            .prove_segment(
                &program,
                &params,
                &s[1],
                false,
                SegmentStart::Reexecute(&input),
            )
            .unwrap();
        assert_eq!(proof, reexecuted.0);
        assert_eq!(reexecuted.1.reexecuted_instructions, s[1].instret_start);
        for (job, blob, seg) in [(8, &blobs[1], &s[1]), (7, &blobs[2], &s[1])] {
            let err = from(job, blob, seg).unwrap_err().to_string();
            assert!(err.contains("checkpoint refused"), "{err}");
        }
        let mut altered = blobs[1].clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(from(7, &altered, &s[1]).is_err());
    }

    #[test]
    fn instruction_limit_is_enforced() {
        let backend = DevBackend::default();
        let params = ProvingParams {
            max_instructions: 10,
            ..Default::default()
        };
        let input = ProgramInput {
            items: vec![11u64.to_le_bytes().to_vec()],
        };
        let err = backend
            .execute(&ProgramImage::new(vec![1]), &input, &params)
            .unwrap_err();
        assert!(matches!(err, BackendError::InstructionLimit { limit: 10 }));
    }
}
