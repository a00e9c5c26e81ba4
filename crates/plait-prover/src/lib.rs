//! The backend interface Plait proves through, and its implementations.
//!
//! The scheduler and the coordinator speak only [`ProverBackend`]; this is the only crate that
//! names OpenVM types. Adding another zkVM means adding a module here, not touching the pool.
//!
//! - [`openvm`]: OpenVM 2.0 on the CPU, or on an NVIDIA GPU with the `cuda` feature: real
//!   proofs ([`openvm::OpenVmBackend`]).
//! - [`dev`]: a dev backend whose "proofs" are hash commitments. It proves nothing, says so in
//!   every proof it makes, and no verifier outside dev mode accepts its output.
//!
//! Main types: [`ProverBackend`] (execute, prove a segment, aggregate, check, verify),
//! [`ProgramImage`] (a guest ELF and its hash), [`ProvingParams`] (VM config, segment height,
//! tree shape), [`ProofBlob`] (an opaque proof), [`Verdict`] (a checked proof's fate) and
//! [`BackendError`].

#![warn(missing_docs)]

mod backend;
pub mod dev;
pub mod openvm;

pub use backend::{
    BackendError, BackendInfo, CutSegment, KeySetId, ProgramImage, ProofBlob, ProofMeta,
    ProverBackend, ProvingParams, ProvingPhase, RunOutcome, SegmentSink, SegmentStart, Verdict,
    VerifiedProof, VmConfig, DEFAULT_MAX_INSTRUCTIONS,
};
