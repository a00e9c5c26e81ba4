//! `plait serve`: a standalone coordinator on a durable store (SQLite or PostgreSQL).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use plait_coordinator::{http, Coordinator, CoordinatorConfig, PlannerConfig, Store};
use plait_prover::{ProverBackend, VmConfig};

use plait_core::planner::Pool;

use super::{openvm_backend, planner};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// The pool's worker token: a worker presenting it registers and gets an identity and a
    /// credential of its own. Without it the pool is closed: only workers holding a
    /// credential the operator issued (`plait workers issue`) can join.
    #[arg(long, env = "PLAIT_WORKER_TOKEN")]
    worker_token: Option<String>,
    /// Token clients must present to upload programs and submit jobs.
    #[arg(long, env = "PLAIT_CLIENT_TOKEN")]
    client_token: String,
    /// Token the operator presents to list, issue, revoke, ban and unban workers
    /// (`plait workers`). Without it those routes are closed.
    #[arg(long, env = "PLAIT_OPERATOR_TOKEN")]
    operator_token: Option<String>,
    /// Token a Prometheus scraper presents for `GET /metrics`. Without it the metrics are
    /// open to anyone who can reach the coordinator.
    #[arg(long, env = "PLAIT_METRICS_TOKEN")]
    metrics_token: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Seconds a lease lasts without a heartbeat.
    #[arg(long, default_value_t = 60)]
    lease_seconds: u64,
    /// Seconds a lease lasts at most, heartbeats or not, when the worker's device profile
    /// predicts nothing for the task (with a prediction: four times it plus slack, up to
    /// this): a hung prover or a worker that only heartbeats cannot hold a task for longer.
    #[arg(long, default_value_t = 7200)]
    max_lease_seconds: u64,
    /// Seconds a succeeded or cancelled job keeps its blobs (segment checkpoints and task
    /// proofs) after it ended; the final proof is kept for good.
    #[arg(long, default_value_t = 3600)]
    blob_retention_seconds: u64,
    /// Largest accepted upload (program or proof), in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    max_upload_bytes: usize,
    /// Where job state lives: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB`. Default: `sqlite://<cache dir>/coordinator.sqlite`.
    #[arg(long, env = "PLAIT_STORE")]
    store: Option<String>,
    /// Accept dev-backend proofs: FAKE proofs, for testing the pool only.
    #[arg(long)]
    dev: bool,
    /// Dev backend: milliseconds executing each segment takes on the coordinator (to test
    /// jobs whose execution is still running).
    #[arg(long, default_value_t = 0, requires = "dev")]
    dev_execute_ms: u64,
    /// Device profiles (`plait calibrate`) for the planner, which predicts each job's latency
    /// and work and chooses segment heights for `--segment-size auto`. It plans on the workers
    /// asking for work, each with the profile it sends; PROFILE (repeatable) stands in for
    /// workers that send none. PROFILE:COUNT entries plan for that fixed pool instead.
    /// Default: this machine's calibrated profile, if there is one.
    #[arg(long, value_name = "PROFILE[:COUNT]")]
    plan_profile: Vec<String>,
    /// The segment heights `auto` chooses from.
    #[arg(long, default_value = "19,20,21", value_delimiter = ',')]
    plan_heights: Vec<u32>,
}

/// The planner's pool: `--plan-profile`, or this machine's profile if it has one that fits the
/// backend, or none (then only workers that send their profiles are planned for).
fn planner_config(
    args: &ServeArgs,
    backend: &dyn ProverBackend,
    cache: &Path,
) -> Result<PlannerConfig> {
    let tree = plait_prover::ProvingParams::default().tree;
    let info = backend.info();
    let none = (Pool::empty(), false);
    let (pool, fixed_size) = if args.plan_profile.is_empty() {
        // This machine's profiles, one per VM config calibrated.
        let entries: Vec<String> = VmConfig::ALL
            .into_iter()
            .map(|vm| planner::default_profile_path(cache, vm))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if entries.is_empty() {
            none
        } else {
            planner::read_pool(&entries, tree, &info).unwrap_or_else(|e| {
                tracing::warn!("not planning with this machine's device profiles: {e:#}");
                none
            })
        }
    } else {
        planner::read_pool(&args.plan_profile, tree, &info)?
    };
    let devices: Vec<&str> = pool.profiles.iter().map(|p| p.device.as_str()).collect();
    tracing::info!(
        "planner: {}, heights {:?}",
        if fixed_size {
            format!(
                "a fixed pool of {} workers ({})",
                pool.workers.len(),
                devices.join(", ")
            )
        } else if devices.is_empty() {
            "the profiles the live workers send".into()
        } else {
            format!(
                "the live workers, with their own profiles or else {}",
                devices.join(", ")
            )
        },
        args.plan_heights
    );
    Ok(PlannerConfig {
        pool,
        fixed_size,
        heights: args.plan_heights.clone(),
    })
}

pub async fn run(args: ServeArgs, cache: &Path) -> Result<()> {
    let worker_token = args.worker_token.clone().unwrap_or_default();
    let operator_token = args.operator_token.clone().unwrap_or_default();
    check_tokens(&[
        ("--worker-token", &worker_token),
        ("--client-token", &args.client_token),
        ("--operator-token", &operator_token),
        (
            "--metrics-token",
            args.metrics_token.as_deref().unwrap_or(""),
        ),
    ])?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            http::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }
            .load()
            .await
            .map_err(|e| crate::exit::BadInput(e.to_string()))?,
        ),
        _ => None,
    };
    let backend: Arc<dyn ProverBackend> = if args.dev {
        tracing::warn!("--dev: this coordinator accepts FAKE dev-backend proofs");
        Arc::new(plait_prover::dev::DevBackend {
            execute_delay: std::time::Duration::from_millis(args.dev_execute_ms),
            ..Default::default()
        })
    } else {
        openvm_backend(cache)
    };
    let planner = planner_config(&args, backend.as_ref(), cache)?;
    let store_url = match args.store {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("creating {}", cache.display()))?;
            format!("sqlite://{}", cache.join("coordinator.sqlite").display())
        }
    };
    let store = Store::open(&store_url)
        .await
        .map_err(|e| crate::exit::BadInput(e.to_string()))?;
    let coordinator = Coordinator::open(
        backend,
        CoordinatorConfig {
            worker_token,
            client_token: args.client_token,
            operator_token,
            metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
            lease: Duration::from_secs(args.lease_seconds),
            max_lease: Duration::from_secs(args.max_lease_seconds),
            blob_retention: Duration::from_secs(args.blob_retention_seconds),
            planner: Some(planner),
            ..CoordinatorConfig::default()
        },
        store,
    )
    .await?;
    tracing::info!("store: {}", coordinator.store());
    let _reaper = coordinator.spawn_lease_reaper();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    if coordinator.config().worker_token.is_empty() {
        tracing::info!("closed pool: workers join with credentials from `plait workers issue`");
    }
    // The first line on stdout is the address, for scripts and tests that asked for port 0.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    http::serve(
        listener,
        http::router(coordinator, args.max_upload_bytes),
        tls,
    )
    .await
    .context("serving")?;
    Ok(())
}

/// Each role's token opens only its own routes: they must differ, and be long enough not to
/// be guessed.
fn check_tokens(named: &[(&str, &str)]) -> Result<()> {
    for (i, (flag, token)) in named.iter().enumerate() {
        if token.is_empty() {
            continue;
        }
        if token.len() < 16 {
            return Err(crate::exit::BadInput(format!(
                "{flag} must be at least 16 characters (use e.g. `openssl rand -hex 32`)"
            ))
            .into());
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, t)| t == token) {
            return Err(crate::exit::BadInput(format!("{other} and {flag} must differ")).into());
        }
    }
    Ok(())
}
