//! `plait verify`: check a proof file against a program with OpenVM's verifier.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use clap::Args;
use plait_prover::{dev::DEV_PROOF_BANNER, BackendError, ProverBackend};

use super::openvm_backend;
use crate::{exit::BadInput, program_arg::load_program};

#[derive(Args)]
pub struct VerifyArgs {
    /// The proof file.
    proof: PathBuf,
    /// The program the proof must be for: a guest ELF or guest package directory.
    #[arg(long)]
    program: PathBuf,
}

pub async fn run(args: VerifyArgs, cache: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(&args.proof)
        .map_err(|e| BadInput(format!("cannot read proof {}: {e}", args.proof.display())))?;
    if bytes.starts_with(DEV_PROOF_BANNER.as_bytes()) {
        return Err(BackendError::ProofRejected(
            "this is a dev-backend proof: it proves nothing and is never accepted".into(),
        )
        .into());
    }
    let program = load_program(&args.program, cache)?;
    let backend = openvm_backend(cache);
    let started = Instant::now();
    let verified = tokio::task::spawn_blocking(move || backend.verify_final(&program, &bytes))
        .await?
        .with_context(|| format!("{} does not verify", args.proof.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    println!("proof verified in {:.0} ms", seconds * 1e3);
    println!("program commit  {}", verified.program_commit);
    println!("public values   {}", hex::encode(&verified.public_values));
    Ok(())
}
