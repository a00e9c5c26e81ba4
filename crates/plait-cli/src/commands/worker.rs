//! `plait worker`: prove tasks for a coordinator.

use std::{path::Path, sync::Arc};

use anyhow::Result;
use clap::Args;
use plait_prover::{dev::DevBackend, ProverBackend};
use plait_worker::WorkerConfig;

use super::openvm_backend;

#[derive(Args)]
pub struct WorkerArgs {
    /// The coordinator's base URL, e.g. http://127.0.0.1:7878.
    #[arg(long)]
    coordinator: String,
    /// The coordinator's worker token.
    #[arg(long, env = "PLAIT_WORKER_TOKEN")]
    token: String,
    /// A name for this worker in the coordinator's logs.
    #[arg(long)]
    worker_id: Option<String>,
    /// Stop after this many tasks.
    #[arg(long)]
    max_tasks: Option<u64>,
    /// Prove with the dev backend: FAKE proofs, for testing the pool only.
    #[arg(long)]
    dev: bool,
}

pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

pub async fn run(args: WorkerArgs, cache: &Path) -> Result<()> {
    let backend: Arc<dyn ProverBackend> = if args.dev {
        Arc::new(DevBackend::default())
    } else {
        openvm_backend(cache)
    };
    let config = WorkerConfig {
        coordinator: args.coordinator,
        token: args.token,
        worker_id: args
            .worker_id
            .unwrap_or_else(|| format!("worker-{}", std::process::id())),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: machine_memory_bytes(),
        max_tasks: args.max_tasks,
    };
    plait_worker::run(config, backend).await?;
    Ok(())
}
