//! One module per subcommand.

pub mod bench;
pub mod client;
pub mod clients;
pub mod demo;
pub mod execute;
pub mod planner;
pub mod prove;
pub mod reprove;
pub mod serve;
pub mod verify;
pub mod worker;
pub mod workers;

use std::{path::Path, sync::Arc};

use anyhow::Result;
use plait_prover::{openvm::OpenVmBackend, ProverBackend, ProvingParams, VmConfig};

/// The backend every real command uses.
pub fn openvm_backend(cache: &Path) -> Arc<OpenVmBackend> {
    Arc::new(OpenVmBackend::new(cache))
}

pub async fn keygen(segment_height: u32, vm_config: VmConfig, cache: &Path) -> Result<()> {
    let backend = openvm_backend(cache);
    let params = ProvingParams {
        segment_height,
        vm_config,
        ..Default::default()
    };
    let report = tokio::task::spawn_blocking(move || backend.prepare_keys(&params)).await??;
    println!("{report}");
    Ok(())
}
