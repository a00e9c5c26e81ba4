//! The embedded pool `plait prove` runs: a coordinator on 127.0.0.1 and worker processes that
//! talk to it over HTTP exactly as remote workers would.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use plait_coordinator::{http, serving, Coordinator, CoordinatorConfig, PlannerConfig, Store};
use plait_core::DeviceChoice;
use plait_prover::ProverBackend;
use tokio::process::{Child, Command};

pub struct LocalPool {
    pub coordinator: Arc<Coordinator>,
    pub url: String,
    workers: Vec<Child>,
    server: tokio::task::JoinHandle<()>,
    reaper: tokio::task::JoinHandle<()>,
    pub log_dir: PathBuf,
    /// Holds the run's store when the user named none; deleted with the pool.
    _scratch: Option<tempfile::TempDir>,
}

impl LocalPool {
    /// Starts the coordinator's HTTP server on a free loopback port, on the store at
    /// `store_url`, or on a scratch SQLite store that lives as long as the pool.
    pub async fn start(
        backend: Arc<dyn ProverBackend>,
        cache: &Path,
        store_url: Option<&str>,
        planner: Option<PlannerConfig>,
    ) -> Result<Self> {
        let config = CoordinatorConfig {
            worker_token: uuid::Uuid::new_v4().to_string(),
            client_token: uuid::Uuid::new_v4().to_string(),
            lease: Duration::from_secs(60),
            planner,
            // Every worker of this pool is a process of this machine: trusted, so a task that
            // fails on all of them fails the job without their first proving others.
            local_machine_memory: Some(plait_prover::openvm::machine_memory_bytes()),
            trusted_after_accepted: 0,
            ..CoordinatorConfig::default()
        };
        let (store, scratch) = match store_url {
            Some(url) => (Store::open(url).await?, None),
            None => {
                let scratch = tempfile::tempdir().context("creating a scratch store directory")?;
                let url = format!("sqlite://{}", scratch.path().join("store.sqlite").display());
                (Store::open(&url).await?, Some(scratch))
            }
        };
        let coordinator = Coordinator::open(backend, config, store).await?;
        let reaper = coordinator.spawn_lease_reaper();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the coordinator to 127.0.0.1")?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = http::router(coordinator.clone(), 1 << 30);
        let server = tokio::spawn(async move {
            if let Err(e) = serving::serve(listener, app, None, Default::default()).await {
                tracing::error!(error = %e, "coordinator server stopped");
            }
        });
        let log_dir = cache.join("logs").join(format!(
            "{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            std::process::id()
        ));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(Self {
            coordinator,
            url,
            workers: Vec::new(),
            server,
            reaper,
            log_dir,
            _scratch: scratch,
        })
    }

    /// Spawns `count` worker processes of this very binary, proving on `device` (or with the
    /// dev backend).
    pub fn spawn_workers(
        &mut self,
        count: usize,
        cache: &Path,
        dev: bool,
        device: DeviceChoice,
    ) -> Result<()> {
        let exe = this_binary()?;
        for i in 0..count {
            let log_path = self.log_dir.join(format!("worker-{i}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let mut command = Command::new(&exe);
            command
                .arg("--cache-dir")
                .arg(cache)
                .args(["worker", "--coordinator", &self.url])
                .args(["--name", &format!("local-{i}")])
                .env(
                    "PLAIT_WORKER_TOKEN",
                    &self.coordinator.config().worker_token,
                )
                .env(
                    "PLAIT_LOG",
                    std::env::var("PLAIT_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true);
            if dev {
                command.arg("--dev");
            } else {
                command.args(["--device", &device.to_string()]);
            }
            let child = command.spawn().context("starting a worker process")?;
            self.workers.push(child);
        }
        Ok(())
    }

    pub async fn shutdown(mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill().await;
        }
        self.server.abort();
        self.reaper.abort();
    }
}

/// This very binary, to start workers from. A GPU build's CPU fallback runs from memory (see
/// `cpu_fallback`): its path names no file, but `/proc/self/exe` still opens it.
fn this_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the plait binary")?;
    Ok(if exe.is_file() {
        exe
    } else {
        PathBuf::from("/proc/self/exe")
    })
}
