//! Exit codes, documented in `docs/usage.md`.

use plait_coordinator::CoordinatorError;
use plait_prover::BackendError;

/// Something failed that is not one of the cases below.
pub const FAILURE: u8 = 1;
/// The program or its input is unusable: missing or corrupt ELF, wrong architecture,
/// unparsable input, a guest that panics or runs past the instruction limit.
pub const BAD_INPUT: u8 = 3;
/// A proof was checked and rejected.
pub const PROOF_REJECTED: u8 = 4;
/// Proving did not produce a proof.
pub const PROVING_FAILED: u8 = 5;

/// Marks an error as the user's input being at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Marks a failed proving job.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProvingFailed(pub String);

pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<BadInput>() {
            return BAD_INPUT;
        }
        if cause.is::<ProvingFailed>() {
            return PROVING_FAILED;
        }
        let backend = cause.downcast_ref::<BackendError>().or_else(|| {
            match cause.downcast_ref::<CoordinatorError>() {
                Some(CoordinatorError::Backend(e)) => Some(e),
                _ => None,
            }
        });
        if let Some(e) = backend {
            return match e {
                BackendError::InvalidProgram(_)
                | BackendError::GuestFailed(_)
                | BackendError::InstructionLimit { .. }
                | BackendError::InvalidParams(_) => BAD_INPUT,
                BackendError::ProofRejected(_) => PROOF_REJECTED,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}
