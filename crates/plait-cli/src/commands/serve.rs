//! `plait serve`: a standalone coordinator on a durable store (SQLite or PostgreSQL).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::Args;
use plait_coordinator::{
    http,
    serving::{self, ConnectionLimits, TlsFiles},
    Coordinator, CoordinatorConfig, PlannerConfig, Store,
};
use plait_prover::{ProverBackend, VmConfig};
use serde::{Deserialize, Serialize};

use plait_api::ClientLimits;
use plait_core::planner::Pool;

use super::{openvm_backend, planner};
use crate::{
    config_file::{self, layered_or, Layered},
    exit::BadInput,
};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    options: ServeOptions,
    #[command(flatten)]
    config: config_file::ConfigArgs,
    /// Accept dev-backend proofs: FAKE proofs, for testing the pool only.
    #[arg(long)]
    dev: bool,
    /// Dev backend: milliseconds executing each segment takes on the coordinator (to test
    /// jobs whose execution is still running).
    #[arg(long, default_value_t = 0, requires = "dev")]
    dev_execute_ms: u64,
    /// Dev backend: milliseconds loading a program takes on the coordinator before a job is
    /// stored (to test what happens meanwhile).
    #[arg(long, default_value_t = 0, requires = "dev", hide = true)]
    dev_prepare_ms: u64,
}

/// The coordinator's settings: from flags, `PLAIT_*` variables, the config file's `[serve]`
/// table, or defaults ([`ServeOptions::defaults`]), in that order.
#[derive(Args, Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    /// [default: 127.0.0.1:7878]
    #[arg(long, env = "PLAIT_LISTEN")]
    listen: Option<String>,
    /// The pool's worker token: a worker presenting it registers and gets an identity and a
    /// credential of its own. Without it the pool is closed: only workers holding a
    /// credential the operator issued (`plait workers issue`) can join.
    #[arg(long, env = "PLAIT_WORKER_TOKEN")]
    worker_token: Option<String>,
    /// Token clients must present to upload programs and submit jobs (required).
    #[arg(long, env = "PLAIT_CLIENT_TOKEN")]
    client_token: Option<String>,
    /// Token the operator presents to list, issue, revoke, ban and unban workers
    /// (`plait workers`). Without it those routes are closed.
    #[arg(long, env = "PLAIT_OPERATOR_TOKEN")]
    operator_token: Option<String>,
    /// Token a Prometheus scraper presents for `GET /metrics`. Without it the metrics are
    /// open to anyone who can reach the coordinator.
    #[arg(long, env = "PLAIT_METRICS_TOKEN")]
    metrics_token: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs tls-key.
    #[arg(long, env = "PLAIT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of tls-cert.
    #[arg(long, env = "PLAIT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds a lease lasts without a heartbeat. [default: 60]
    #[arg(long, env = "PLAIT_LEASE_SECONDS")]
    lease_seconds: Option<u64>,
    /// Seconds a lease lasts at most, heartbeats or not, when the worker's device profile
    /// predicts nothing for the task (with a prediction: four times it plus slack, up to
    /// this): a hung prover or a worker that only heartbeats cannot hold a task for longer.
    /// [default: 7200]
    #[arg(long, env = "PLAIT_MAX_LEASE_SECONDS")]
    max_lease_seconds: Option<u64>,
    /// Seconds a succeeded or cancelled job keeps its blobs (segment checkpoints and task
    /// proofs) after it ended; the final proof is kept for good. [default: 3600]
    #[arg(long, env = "PLAIT_BLOB_RETENTION_SECONDS")]
    blob_retention_seconds: Option<u64>,
    /// Seconds every write to the store may keep failing before the coordinator stops with
    /// an error (exit code 1), for its supervisor to see; the store keeps the last state it
    /// recorded, and a coordinator started again resumes from it. [default: 600]
    #[arg(long, env = "PLAIT_STORE_OUTAGE_SECONDS")]
    store_outage_seconds: Option<u64>,
    /// Worker identities kept at most. When full, a registration displaces the registered
    /// worker seen least recently, if it is idle (unseen for a lease period and holding no
    /// lease); if every one is working it is refused (`503 pool-full`) and the worker retries.
    /// [default: 100000]
    #[arg(long, env = "PLAIT_MAX_WORKERS")]
    max_workers: Option<usize>,
    /// Open connections the coordinator holds at most; one more is closed at once. The
    /// process's open-files limit is raised to its hard limit, and this must fit under it.
    /// [default: 8192]
    #[arg(long, env = "PLAIT_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections from one IP address at most (a machine running many workers behind
    /// one address needs about two per worker). [default: 512]
    #[arg(long, env = "PLAIT_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Seconds a connection may take to send a request's headers, counted from when it opens
    /// or its previous answer ends (so also how long an idle connection is kept). [default: 20]
    #[arg(long, env = "PLAIT_HEADER_TIMEOUT_SECONDS")]
    header_timeout_seconds: Option<u64>,
    /// Largest accepted upload (program or proof), in bytes. [default: 1073741824]
    #[arg(long, env = "PLAIT_MAX_UPLOAD_BYTES")]
    max_upload_bytes: Option<usize>,
    /// Bytes of programs the shared client token's client (`default`) may keep on the coordinator (`plait programs
    /// delete` frees them). [default: 1073741824]
    #[arg(long, env = "PLAIT_DEFAULT_CLIENT_MAX_PROGRAM_BYTES")]
    default_client_max_program_bytes: Option<u64>,
    /// Jobs the shared client token's client (`default`) may have in flight (executing,
    /// running or paused) at once; more are refused as `too-many-jobs`. [default: 64]
    #[arg(long, env = "PLAIT_DEFAULT_CLIENT_MAX_JOBS")]
    default_client_max_jobs: Option<u32>,
    /// Bytes of input one job of the shared client token's client (`default`) may carry; a
    /// job with more is refused as `over-input-limit`. [default: 67108864]
    #[arg(long, env = "PLAIT_DEFAULT_CLIENT_MAX_INPUT_BYTES")]
    default_client_max_input_bytes: Option<u64>,
    /// Where job state lives: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB`. Default: `sqlite://<cache dir>/coordinator.sqlite`
    /// (with `--dev`, `coordinator-dev.sqlite`: a store keeps the backend it was made for).
    #[arg(long, env = "PLAIT_STORE")]
    store: Option<String>,
    /// Device profiles (`plait calibrate`) for the planner, which predicts each job's latency
    /// and work and chooses segment heights for `--segment-size auto`. It plans on the workers
    /// asking for work, each with the profile it sends; PROFILE (repeatable) stands in for
    /// workers that send none. PROFILE:COUNT entries plan for that fixed pool instead.
    /// Default: this machine's calibrated profile, if there is one.
    #[arg(
        long,
        env = "PLAIT_PLAN_PROFILE",
        value_name = "PROFILE[:COUNT]",
        value_delimiter = ','
    )]
    plan_profile: Option<Vec<String>>,
    /// The segment heights `auto` chooses from. [default: 19,20,21]
    #[arg(long, env = "PLAIT_PLAN_HEIGHTS", value_delimiter = ',')]
    plan_heights: Option<Vec<u32>>,
}

impl Layered for ServeOptions {
    layered_or!(
        listen,
        worker_token,
        client_token,
        operator_token,
        metrics_token,
        tls_cert,
        tls_key,
        lease_seconds,
        max_lease_seconds,
        blob_retention_seconds,
        store_outage_seconds,
        max_workers,
        max_connections,
        max_connections_per_ip,
        header_timeout_seconds,
        max_upload_bytes,
        default_client_max_program_bytes,
        default_client_max_jobs,
        default_client_max_input_bytes,
        store,
        plan_profile,
        plan_heights,
    );

    fn defaults() -> Self {
        Self {
            listen: Some("127.0.0.1:7878".into()),
            lease_seconds: Some(60),
            max_lease_seconds: Some(7200),
            blob_retention_seconds: Some(3600),
            store_outage_seconds: Some(600),
            max_workers: Some(100_000),
            max_connections: Some(ConnectionLimits::default().max_connections),
            max_connections_per_ip: Some(ConnectionLimits::default().max_connections_per_ip),
            header_timeout_seconds: Some(ConnectionLimits::default().header_timeout.as_secs()),
            max_upload_bytes: Some(1 << 30),
            default_client_max_program_bytes: Some(1 << 30),
            default_client_max_jobs: Some(64),
            default_client_max_input_bytes: Some(64 << 20),
            plan_profile: Some(Vec::new()),
            plan_heights: Some(vec![19, 20, 21]),
            ..Self::default()
        }
    }
}

/// The settings in effect, every default filled in.
struct Settings {
    listen: String,
    worker_token: String,
    client_token: String,
    operator_token: String,
    metrics_token: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    lease_seconds: u64,
    max_lease_seconds: u64,
    blob_retention_seconds: u64,
    store_outage_seconds: u64,
    max_workers: usize,
    connections: ConnectionLimits,
    max_upload_bytes: usize,
    default_client_limits: ClientLimits,
    store: Option<String>,
    plan_profile: Vec<String>,
    plan_heights: Vec<u32>,
}

impl ServeOptions {
    fn settings(self) -> Result<Settings> {
        let missing = |what: &str| BadInput(format!("{what} is not set"));
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(BadInput("tls-cert and tls-key go together".into()).into()),
        };
        let defaulted = "every defaulted setting has a value";
        for (name, value) in [
            ("max-workers", self.max_workers),
            ("max-connections", self.max_connections),
            ("max-connections-per-ip", self.max_connections_per_ip),
            (
                "header-timeout-seconds",
                self.header_timeout_seconds.map(|s| s as usize),
            ),
            (
                "default-client-max-jobs",
                self.default_client_max_jobs.map(|n| n as usize),
            ),
        ] {
            if value == Some(0) {
                return Err(BadInput(format!("{name} is at least 1")).into());
            }
        }
        Ok(Settings {
            listen: self.listen.expect(defaulted),
            worker_token: self.worker_token.unwrap_or_default(),
            client_token: self.client_token.ok_or_else(|| {
                missing("the client token (--client-token, PLAIT_CLIENT_TOKEN or client-token)")
            })?,
            operator_token: self.operator_token.unwrap_or_default(),
            metrics_token: self.metrics_token.filter(|t| !t.is_empty()),
            tls,
            lease_seconds: self.lease_seconds.expect(defaulted),
            max_lease_seconds: self.max_lease_seconds.expect(defaulted),
            blob_retention_seconds: self.blob_retention_seconds.expect(defaulted),
            store_outage_seconds: self.store_outage_seconds.expect(defaulted),
            max_workers: self.max_workers.expect(defaulted),
            connections: ConnectionLimits {
                max_connections: self.max_connections.expect(defaulted),
                max_connections_per_ip: self.max_connections_per_ip.expect(defaulted),
                header_timeout: Duration::from_secs(self.header_timeout_seconds.expect(defaulted)),
                ..ConnectionLimits::default()
            },
            max_upload_bytes: self.max_upload_bytes.expect(defaulted),
            default_client_limits: ClientLimits {
                max_program_bytes: Some(self.default_client_max_program_bytes.expect(defaulted)),
                max_jobs_in_flight: Some(self.default_client_max_jobs.expect(defaulted)),
                max_input_bytes: Some(self.default_client_max_input_bytes.expect(defaulted)),
                ..ClientLimits::default()
            },
            store: self.store,
            plan_profile: self.plan_profile.expect(defaulted),
            plan_heights: self.plan_heights.expect(defaulted),
        })
    }

    /// The settings as a config file, tokens hidden.
    fn to_config_file(&self) -> String {
        let hide = |t: &Option<String>| t.as_ref().map(|_| "(hidden)".to_string());
        let shown = Self {
            worker_token: hide(&self.worker_token),
            client_token: hide(&self.client_token),
            operator_token: hide(&self.operator_token),
            metrics_token: hide(&self.metrics_token),
            ..self.clone()
        };
        #[derive(Serialize)]
        struct File<'a> {
            version: i64,
            serve: &'a ServeOptions,
        }
        toml::to_string(&File {
            version: config_file::VERSION,
            serve: &shown,
        })
        .expect("settings serialize")
    }
}

/// The planner's pool: `--plan-profile`, or this machine's profile if it has one that fits the
/// backend, or none (then only workers that send their profiles are planned for).
fn planner_config(
    args: &Settings,
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
            .map(|vm| planner::default_profile_path(cache, vm, plait_core::DeviceKind::Cpu))
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
    let file = config_file::section(args.config.config.as_deref(), "serve")?;
    let options = args.options.or(file).or(ServeOptions::defaults());
    if args.config.print_config {
        print!("{}", options.to_config_file());
        return Ok(());
    }
    let settings = options.settings()?;
    check_tokens(&[
        ("worker token", &settings.worker_token),
        ("client token", &settings.client_token),
        ("operator token", &settings.operator_token),
        (
            "metrics token",
            settings.metrics_token.as_deref().unwrap_or(""),
        ),
    ])?;
    let tls = match &settings.tls {
        Some((cert, key)) => Some(
            TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }
            .load()
            .map_err(|e| crate::exit::BadInput(e.to_string()))?,
        ),
        None => None,
    };
    let backend: Arc<dyn ProverBackend> = if args.dev {
        tracing::warn!("--dev: this coordinator accepts FAKE dev-backend proofs");
        Arc::new(plait_prover::dev::DevBackend {
            execute_delay: std::time::Duration::from_millis(args.dev_execute_ms),
            prepare_delay: std::time::Duration::from_millis(args.dev_prepare_ms),
            ..Default::default()
        })
    } else {
        openvm_backend(cache)
    };
    let planner = planner_config(&settings, backend.as_ref(), cache)?;
    let store_url = match settings.store.clone() {
        Some(url) => url,
        None => {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("creating {}", cache.display()))?;
            default_store_url(cache, args.dev)
        }
    };
    let store = Store::open(&store_url)
        .await
        .map_err(|e| crate::exit::BadInput(e.to_string()))?;
    let coordinator = Coordinator::open(
        backend,
        CoordinatorConfig {
            worker_token: settings.worker_token.clone(),
            client_token: settings.client_token.clone(),
            default_client_limits: settings.default_client_limits,
            operator_token: settings.operator_token.clone(),
            metrics_token: settings.metrics_token.clone(),
            lease: Duration::from_secs(settings.lease_seconds),
            max_lease: Duration::from_secs(settings.max_lease_seconds),
            blob_retention: Duration::from_secs(settings.blob_retention_seconds),
            store_outage_limit: Duration::from_secs(settings.store_outage_seconds),
            max_workers: settings.max_workers,
            planner: Some(planner),
            ..CoordinatorConfig::default()
        },
        store,
    )
    .await?;
    tracing::info!("store: {}", coordinator.store());
    let _reaper = coordinator.spawn_lease_reaper();
    check_open_files(&settings.connections)?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    if coordinator.config().worker_token.is_empty() {
        tracing::info!("closed pool: workers join with credentials from `plait workers issue`");
    }
    // The first line on stdout is the address, for scripts and tests that asked for port 0.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    let app = http::router(coordinator.clone(), settings.max_upload_bytes);
    tokio::select! {
        served = serving::serve(listener, app, tls, settings.connections) => served.context("serving")?,
        reason = coordinator.stopped() => anyhow::bail!("the coordinator stopped: {reason}"),
    }
    Ok(())
}

/// The store a coordinator uses when none is named: one file for real proofs, another for
/// `--dev` (fake proofs), so that a trial with `--dev` never mixes into the real one.
fn default_store_url(cache: &Path, dev: bool) -> String {
    let file = if dev {
        "coordinator-dev.sqlite"
    } else {
        "coordinator.sqlite"
    };
    format!("sqlite://{}", cache.join(file).display())
}

/// Raises the open-files limit and checks the connection cap fits under it, with room for the
/// store, the blobs and the listener.
fn check_open_files(limits: &ConnectionLimits) -> Result<()> {
    const RESERVED: u64 = 256;
    let open_files = serving::raise_open_files_limit().context("raising the open-files limit")?;
    if limits.max_connections as u64 + RESERVED > open_files {
        return Err(BadInput(format!(
            "max-connections {} does not fit under this process's open-files limit {open_files} \
             (less {RESERVED} kept for the store and blobs): lower it, or raise the hard limit \
             (`ulimit -Hn`, LimitNOFILE= for systemd)",
            limits.max_connections
        ))
        .into());
    }
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
            return Err(BadInput(format!(
                "the {flag} must be at least 16 characters (use e.g. `openssl rand -hex 32`)"
            ))
            .into());
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, t)| t == token) {
            return Err(BadInput(format!("the {other} and the {flag} must differ")).into());
        }
    }
    Ok(())
}
