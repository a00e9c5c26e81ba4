//! `plait worker`: prove tasks for a coordinator.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Result};
use clap::Args;
use plait_core::{cost::DeviceProfile, Device, DeviceChoice};
use plait_prover::{
    dev::{DevBackend, DevFault},
    openvm::{machine_memory_bytes, OpenVmBackend},
    ProverBackend, VmConfig,
};
use plait_worker::WorkerConfig;

use super::planner;
use crate::{
    config_file::{self, layered_or, Layered},
    exit::BadInput,
};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    options: WorkerOptions,
    #[command(flatten)]
    config: config_file::ConfigArgs,
    /// Prove with the dev backend: FAKE proofs, for testing the pool only.
    #[arg(long)]
    dev: bool,
    #[command(flatten)]
    dev_options: DevOptions,
}

/// The worker's settings: from flags, `PLAIT_*` variables, the config file's `[worker]`
/// table, or defaults, in that order.
#[derive(Args, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerOptions {
    /// The coordinator's base URL, e.g. https://coordinator.example:7878 (required).
    #[arg(long, env = "PLAIT_COORDINATOR")]
    coordinator: Option<String>,
    /// The pool's worker token (the worker registers with it and gets a credential of its
    /// own), or the credential the operator issued for this worker (`plait workers issue`)
    /// (required).
    #[arg(long, env = "PLAIT_WORKER_TOKEN")]
    token: Option<String>,
    /// What this worker calls itself; the coordinator names a registered worker by it plus a
    /// random suffix (an issued credential names its worker itself). [default: the host name]
    #[arg(long, env = "PLAIT_WORKER_NAME")]
    name: Option<String>,
    /// CA certificate (PEM) to trust for an https:// coordinator, besides the system's.
    #[arg(long, env = "PLAIT_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Stop after this many tasks. [default: no limit]
    #[arg(long, env = "PLAIT_MAX_TASKS")]
    max_tasks: Option<u64>,
    /// This device's profile, sent to the coordinator so that its planner predicts jobs on
    /// the devices actually in the pool. [default: the one `plait calibrate` wrote here for
    /// the device proven on, if any; none with --dev]
    #[arg(long, env = "PLAIT_WORKER_PROFILE")]
    profile: Option<PathBuf>,
    /// What to prove on: `auto` (the GPU if this build has GPU support and finds one, else the
    /// CPU), `gpu` (refused, saying why, when there is none) or `cpu`. [default: auto]
    #[arg(long, env = "PLAIT_DEVICE")]
    device: Option<DeviceChoice>,
}

impl Layered for WorkerOptions {
    layered_or!(
        coordinator,
        token,
        name,
        ca_cert,
        max_tasks,
        profile,
        device
    );

    fn defaults() -> Self {
        Self::default()
    }
}

/// The profile to advertise: the one named (it must be readable and fit this worker's backend),
/// or the one calibrated here for the device it proves on, if it fits.
fn device_profile(
    profile: Option<&Path>,
    device: Option<&Device>,
    backend: &dyn ProverBackend,
    cache: &Path,
) -> Result<Option<DeviceProfile>> {
    let tree = plait_prover::ProvingParams::default().tree;
    let info = backend.info();
    match (profile, device) {
        (Some(path), _) => planner::read_profile(path, tree, &info).map(Some),
        (None, None) => Ok(None),
        (None, Some(device)) => {
            let path = planner::default_profile_path(cache, VmConfig::Rv32im, device.kind);
            Ok(planner::read_profile(&path, tree, &info).ok())
        }
    }
}

/// Dev-backend knobs for testing the pool.
#[derive(Args, Clone, Debug)]
pub struct DevOptions {
    /// Dev backend: milliseconds each segment "proof" takes.
    #[arg(long, default_value_t = 0)]
    pub dev_segment_ms: u64,
    /// Dev backend: milliseconds each aggregation "proof" takes.
    #[arg(long, default_value_t = 0)]
    pub dev_aggregate_ms: u64,
    /// Dev backend: pad every proof to this many bytes (as large as real ones; see the
    /// memory figures in docs/benchmarks.md).
    #[arg(long, default_value_t = 0)]
    pub dev_proof_bytes: usize,
    /// Dev backend: misbehave on every segment (`corrupt-proof` or `wrong-segment`).
    #[arg(long, value_parser = ["corrupt-proof", "wrong-segment"])]
    pub dev_fault: Option<String>,
}

impl DevOptions {
    pub fn backend(&self) -> DevBackend {
        DevBackend {
            segment_delay: std::time::Duration::from_millis(self.dev_segment_ms),
            aggregate_delay: std::time::Duration::from_millis(self.dev_aggregate_ms),
            execute_delay: std::time::Duration::ZERO,
            prepare_delay: std::time::Duration::ZERO,
            proof_bytes: self.dev_proof_bytes,
            fault: match self.dev_fault.as_deref() {
                Some("corrupt-proof") => Some(DevFault::CorruptProof),
                Some("wrong-segment") => Some(DevFault::WrongSegment),
                _ => None,
            },
            trace_size: None,
        }
    }
}

/// The host's name, if it makes a valid worker name, else `worker`.
fn default_worker_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| plait_api::check_worker_name("name", name).is_ok())
        .unwrap_or_else(|| "worker".into())
}

pub async fn run(args: WorkerArgs, cache: &Path) -> Result<()> {
    let file = config_file::section(args.config.config.as_deref(), "worker")?;
    let options = args.options.or(file).or(WorkerOptions::defaults());
    if args.config.print_config {
        #[derive(Serialize)]
        struct File<'a> {
            version: i64,
            worker: &'a WorkerOptions,
        }
        let shown = WorkerOptions {
            token: options.token.as_ref().map(|_| "(hidden)".into()),
            ..options.clone()
        };
        print!(
            "{}",
            toml::to_string(&File {
                version: config_file::VERSION,
                worker: &shown
            })?
        );
        return Ok(());
    }
    let required = |value: Option<String>, what: &str| {
        value.ok_or_else(|| BadInput(format!("{what} is not set")))
    };
    let coordinator = required(
        options.coordinator,
        "the coordinator (--coordinator, PLAIT_COORDINATOR or coordinator)",
    )?;
    let token = required(
        options.token,
        "the worker token (--token, PLAIT_WORKER_TOKEN or token)",
    )?;
    let (backend, device): (Arc<dyn ProverBackend>, _) = if args.dev {
        (Arc::new(args.dev_options.backend()), None)
    } else {
        let choice = options.device.unwrap_or_default();
        let backend =
            OpenVmBackend::on_device(cache, choice).map_err(|e| BadInput(e.to_string()))?;
        let device = backend.device();
        eprintln!("proving on {}", device.describe());
        (Arc::new(backend), Some(device))
    };
    let device_profile = device_profile(
        options.profile.as_deref(),
        device.as_ref(),
        backend.as_ref(),
        cache,
    )?;
    // The coordinator places tasks by it: a worker that cannot say does not join.
    let memory_bytes = machine_memory_bytes();
    if memory_bytes == 0 {
        bail!("cannot read this machine's memory (MemTotal in /proc/meminfo)");
    }
    let config = WorkerConfig {
        coordinator,
        token,
        name: options.name.unwrap_or_else(default_worker_name),
        ca_cert: options.ca_cert,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes,
        max_tasks: options.max_tasks,
        device_profile,
        device,
    };
    plait_worker::run(config, backend).await?;
    Ok(())
}
