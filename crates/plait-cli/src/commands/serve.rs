//! `plait serve`: a standalone coordinator on a durable store (SQLite or PostgreSQL).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use plait_coordinator::{http, Coordinator, CoordinatorConfig, Store};
use plait_prover::ProverBackend;

use super::openvm_backend;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Token workers must present.
    #[arg(long, env = "PLAIT_WORKER_TOKEN")]
    worker_token: String,
    /// Token clients must present to upload programs and submit jobs.
    #[arg(long, env = "PLAIT_CLIENT_TOKEN")]
    client_token: String,
    /// Seconds a lease lasts without a heartbeat.
    #[arg(long, default_value_t = 60)]
    lease_seconds: u64,
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
}

pub async fn run(args: ServeArgs, cache: &Path) -> Result<()> {
    if args.worker_token == args.client_token {
        anyhow::bail!("--worker-token and --client-token must differ");
    }
    let backend: Arc<dyn ProverBackend> = if args.dev {
        eprintln!("WARNING: --dev: this coordinator accepts FAKE dev-backend proofs");
        Arc::new(plait_prover::dev::DevBackend::default())
    } else {
        openvm_backend(cache)
    };
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
            worker_token: args.worker_token,
            client_token: args.client_token,
            lease: Duration::from_secs(args.lease_seconds),
            ..CoordinatorConfig::default()
        },
        store,
    )
    .await?;
    eprintln!("store: {}", coordinator.store());
    let _reaper = coordinator.spawn_lease_reaper();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // The first line on stdout is the address, for scripts and tests that asked for port 0.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, http::router(coordinator, args.max_upload_bytes))
        .await
        .context("serving")?;
    Ok(())
}
