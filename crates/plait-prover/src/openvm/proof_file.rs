//! The final proof file: a self-describing JSON document around OpenVM's own versioned proof.
//!
//! The `openvm-proof` member is exactly OpenVM's `VersionedVmStarkProof` encoding, so the proof
//! can be verified with `Sdk::verify_proof` and the program's verifying key without Plait.
//! Every member is checked on reading (unknown members are refused), so no byte of the file
//! can change without the verifier noticing.

use openvm_sdk::{types::VersionedVmStarkProof, F};
use openvm_stark_backend::p3_field::PrimeField32;
use openvm_verify_stark_host::VmStarkProof;
use serde::{Deserialize, Serialize};

use crate::{BackendError, ProvingParams, VmConfig};

pub(crate) const FORMAT: &str = "plait-proof";
/// Version 2 names the VM config; version 1 files (RV32IM only) are still read.
pub(crate) const FORMAT_VERSION: u32 = 2;
pub(crate) const OPENVM_PROOF_VERSION: &str = "v2.0";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ProofFile {
    pub format: String,
    pub format_version: u32,
    pub backend: String,
    /// The VM config the proof was made under (files of format version 1 predate it: RV32IM).
    #[serde(default)]
    pub vm_config: VmConfig,
    pub segment_height: u32,
    /// SHA-256 of the guest ELF the proof is for.
    pub program_sha256: String,
    /// OpenVM's commitment to the program (code, initial memory, entry point), hex words.
    pub app_exe_commit: String,
    /// The public values the program revealed, hex.
    pub public_values: String,
    pub openvm_proof: OpenVmProofJson,
}

/// OpenVM's `VersionedVmStarkProof` JSON, mirrored so that unknown or missing members are
/// refused rather than defaulted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenVmProofJson {
    pub version: String,
    pub proof: String,
    pub user_pvs_proof: String,
    pub deferral_merkle_proofs: Option<String>,
}

pub(crate) fn public_values_of(proof: &VmStarkProof) -> Vec<u8> {
    proof
        .user_pvs_proof
        .public_values
        .iter()
        .map(|x| x.as_canonical_u32() as u8)
        .collect()
}

pub(crate) fn digest_hex(digest: &[F; 8]) -> String {
    digest
        .iter()
        .map(|x| format!("{:08x}", x.as_canonical_u32()))
        .collect()
}

pub(crate) fn write(
    proof: VmStarkProof,
    params: &ProvingParams,
    program_sha256: &str,
    exe_commit: &[F; 8],
) -> Result<Vec<u8>, BackendError> {
    let public_values = hex::encode(public_values_of(&proof));
    let versioned = VersionedVmStarkProof::new(proof)
        .map_err(|e| BackendError::ProvingFailed(format!("proof does not encode: {e}")))?;
    let file = ProofFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        backend: "openvm".into(),
        vm_config: params.vm_config,
        segment_height: params.segment_height,
        program_sha256: program_sha256.into(),
        app_exe_commit: digest_hex(exe_commit),
        public_values,
        openvm_proof: OpenVmProofJson {
            version: versioned.version,
            proof: hex::encode(versioned.proof),
            user_pvs_proof: hex::encode(versioned.user_pvs_proof),
            deferral_merkle_proofs: versioned.deferral_merkle_proofs.map(hex::encode),
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("proof file serializes");
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses a proof file and checks its envelope; the proof itself is verified by the caller.
pub(crate) fn read(bytes: &[u8]) -> Result<(ProofFile, VmStarkProof), BackendError> {
    let bad = |reason: String| BackendError::ProofRejected(reason);
    let file: ProofFile = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("not a well-formed Plait proof file: {e}")))?;
    if file.format != FORMAT || !(1..=FORMAT_VERSION).contains(&file.format_version) {
        return Err(bad(format!(
            "unsupported proof format {:?} version {}; this Plait reads {FORMAT:?} versions 1 to {FORMAT_VERSION}",
            file.format, file.format_version
        )));
    }
    if file.format_version == 1 && file.vm_config != VmConfig::Rv32im {
        return Err(bad("a version 1 proof file cannot name a VM config".into()));
    }
    if file.backend != "openvm" {
        return Err(bad(format!(
            "proof is from backend {:?}, not openvm",
            file.backend
        )));
    }
    let inner = &file.openvm_proof;
    if inner.version != OPENVM_PROOF_VERSION {
        return Err(bad(format!(
            "OpenVM proof version {:?} is not {OPENVM_PROOF_VERSION}",
            inner.version
        )));
    }
    let hex_field = |name: &str, s: &str| {
        hex::decode(s).map_err(|e| bad(format!("member {name} is not valid hex: {e}")))
    };
    let versioned = VersionedVmStarkProof {
        version: inner.version.clone(),
        proof: hex_field("proof", &inner.proof)?,
        user_pvs_proof: hex_field("user_pvs_proof", &inner.user_pvs_proof)?,
        deferral_merkle_proofs: inner
            .deferral_merkle_proofs
            .as_deref()
            .map(|s| hex_field("deferral_merkle_proofs", s))
            .transpose()?,
    };
    let proof = VmStarkProof::try_from(versioned)
        .map_err(|e| bad(format!("OpenVM proof does not decode: {e}")))?;
    Ok((file, proof))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file envelope around a proof that is not a proof: enough to test the envelope checks,
    /// which come first.
    fn envelope(version: u32, vm_config: Option<&str>) -> Vec<u8> {
        let mut file = serde_json::json!({
            "format": FORMAT, "format-version": version, "backend": "openvm",
            "segment-height": 19, "program-sha256": "00", "app-exe-commit": "00",
            "public-values": "", "openvm-proof": {
                "version": OPENVM_PROOF_VERSION, "proof": "00", "user_pvs_proof": "00",
                "deferral_merkle_proofs": null
            }
        });
        if let Some(vm) = vm_config {
            file["vm-config"] = vm.into();
        }
        serde_json::to_vec(&file).unwrap()
    }

    fn refusal(bytes: &[u8]) -> String {
        read(bytes).err().expect("refused").to_string()
    }

    #[test]
    fn the_envelope_names_its_vm_config_and_old_files_are_rv32im() {
        // Versions 1 (no config: RV32IM) and 2 pass the envelope checks and fail only at the
        // proof itself.
        for (version, vm) in [(1, None), (2, Some("rv32im")), (2, Some("rv32im-sha2"))] {
            let why = refusal(&envelope(version, vm));
            assert!(why.contains("does not decode"), "{version} {vm:?}: {why}");
        }
        let file: ProofFile = serde_json::from_slice(&envelope(1, None)).unwrap();
        assert_eq!(file.vm_config, VmConfig::Rv32im);
        assert!(refusal(&envelope(1, Some("rv32im-sha2"))).contains("cannot name a VM config"));
        assert!(refusal(&envelope(3, None)).contains("versions 1 to 2"));
        assert!(refusal(&envelope(2, Some("rv64gc"))).contains("not a well-formed"));
    }
}
