//! What the benchmarks share: a `plait serve` on a fresh SQLite store, and what they read
//! about a process and the disk (Linux `/proc`).
#![allow(dead_code)] // each benchmark uses its own part

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result};

pub const WORKER_TOKEN: &str = "bench-worker-token-0123";
pub const CLIENT_TOKEN: &str = "bench-client-token-0123";

/// The `plait` binary to measure: `given`, else the one beside this example's directory
/// (`target/release/plait` for `target/release/examples/bench_*`).
pub fn plait_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => Ok(std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .context("locating target dir")?
            .join("plait")),
    }
}

/// The `p` quantile (0 to 1) of ascending `sorted` figures, by the nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A dev worker of `memory_bytes` with one core, joining `coordinator` with the pool token.
pub fn dev_worker_config(
    coordinator: &str,
    name: String,
    memory_bytes: u64,
) -> plait_worker::WorkerConfig {
    plait_worker::WorkerConfig {
        coordinator: coordinator.to_string(),
        token: WORKER_TOKEN.into(),
        name,
        ca_cert: None,
        cores: 1,
        memory_bytes,
        max_tasks: None,
        device_profile: None,
        device: None,
    }
}

/// A `plait serve` process on a fresh SQLite store (deleted with it).
pub struct Served {
    pub child: Child,
    pub url: String,
    pub store_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Starts `plait [global] serve [args]` on 127.0.0.1 and reads the address it prints.
    pub fn start(plait: &Path, global: &[&str], args: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store_path = dir.path().join("store.sqlite");
        let (child, url) = spawn(plait, global, args, &store_path)?;
        Ok(Self {
            child,
            url,
            store_path,
            _dir: dir,
        })
    }

    /// Kills the server and starts it again on the same store.
    pub fn restart(&mut self, plait: &Path, global: &[&str], args: &[&str]) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.child, self.url) = spawn(plait, global, args, &self.store_path)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server; returns the bytes of its store and of its blobs.
    pub fn stop(mut self) -> (u64, u64) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let blobs = PathBuf::from(format!("{}.blobs", self.store_path.display()));
        (sqlite_bytes(&self.store_path), dir_bytes(&blobs))
    }
}

fn spawn(
    plait: &Path,
    global: &[&str],
    args: &[&str],
    store_path: &Path,
) -> Result<(Child, String)> {
    let mut child = Command::new(plait)
        .args(global)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--store", &format!("sqlite://{}", store_path.display())])
        .args([
            "--worker-token",
            WORKER_TOKEN,
            "--client-token",
            CLIENT_TOKEN,
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("PLAIT_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", plait.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .context("plait serve printed no address")?
        .to_string();
    Ok((child, url))
}

/// User + system CPU seconds of a process, from /proc/PID/stat (clock ticks at 100 Hz).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split_whitespace()
        .collect();
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / 100.0)
}

/// The peak resident memory of a process, from /proc/PID/status (VmHWM).
pub fn peak_rss_bytes(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// The resident memory of a process now, from /proc/PID/status (VmRSS).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field}"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// Bytes of the files under `dir`, recursively (0 if it does not exist).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes of an SQLite store with its write-ahead log.
pub fn sqlite_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}
