//! Claim benchmark: what workers that fit no segment cost the pool.
//!
//! Starts `plait serve --dev` on a fresh SQLite store, submits one job of `--segments` dev
//! segments and waits until all are ready; then `--small` workers that advertise 1 byte of
//! memory (no segment fits them) and `--fitting` workers of 1 TiB prove the job, all of them
//! the worker loop of `plait worker` in this process. Prints the job's wall time, its ready →
//! leased delays (p50, p99) and the coordinator's CPU time per task. Run with
//! `scripts/bench-claims.sh`; `--plait` compares another build.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

#[path = "common/bench_support.rs"]
mod bench_support;

use anyhow::{bail, Result};
use bench_support::{
    cpu_seconds, dev_worker_config, percentile, plait_binary, Served, CLIENT_TOKEN,
};
use clap::Parser;
use plait_api::{JobStatusResponse, SubmitJobResponse};
use plait_prover::{dev::DevBackend, ProverBackend};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Dev segments of the job (8 dev instructions each at segment height 3).
    #[arg(long, default_value_t = 10_000)]
    segments: u64,
    /// Workers that fit no task (1 byte of memory).
    #[arg(long, default_value_t = 900)]
    small: usize,
    /// Dev workers that prove the job.
    #[arg(long, default_value_t = 100)]
    fitting: usize,
    /// The plait binary (default: beside this example's directory).
    #[arg(long)]
    plait: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    rlimit::increase_nofile_limit(u64::MAX)?;
    let plait = plait_binary(args.plait)?;
    // Every worker of this benchmark connects from 127.0.0.1.
    let per_ip = (args.small + args.fitting + 64).to_string();
    let server = Served::start(&plait, &[], &["--dev", "--max-connections-per-ip", &per_ip])?;
    let (url, pid) = (server.url.clone(), server.pid());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;

    let upload: Value = http
        .post(format!("{url}/v1/programs"))
        .bearer_auth(CLIENT_TOKEN)
        .body(b"claim benchmark program".to_vec())
        .send()
        .await?
        .json()
        .await?;
    let submitted: SubmitJobResponse = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(CLIENT_TOKEN)
        .json(&json!({
            "program-sha256": upload["program-sha256"],
            "input": {"items": [(args.segments * 8).to_le_bytes().to_vec()]},
            "params": {
                "segment-height": 3,
                "tree": {"num-children-leaf": 4, "num-children-internal": 3},
                "max-instructions": 1u64 << 40,
            },
        }))
        .send()
        .await?
        .json()
        .await?;
    let job = submitted.job_id.0;
    let status = || async {
        let s: JobStatusResponse = http
            .get(format!("{url}/v1/jobs/{job}"))
            .bearer_auth(CLIENT_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(s)
    };
    while status().await?.executing {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every worker is the worker loop of `plait worker` (dev backend): the small ones get no
    // segment (none fits 1 byte) but may take aggregation nodes, whose need the dev backend
    // leaves unknown until workers have measured some.
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let backend: Arc<dyn ProverBackend> = Arc::new(DevBackend::default());
    let worker = |name: String, memory_bytes: u64| {
        let config = dev_worker_config(&url, name, memory_bytes);
        tokio::spawn(plait_worker::run(config, backend.clone()))
    };
    let mut workers = Vec::new();
    for i in 0..args.small {
        workers.push(worker(format!("small-{i}"), 1));
    }
    for i in 0..args.fitting {
        workers.push(worker(format!("fitting-{i}"), 1 << 40));
    }
    loop {
        let s = status().await?;
        match s.state.as_str() {
            "succeeded" => break,
            "running" => tokio::time::sleep(Duration::from_millis(100)).await,
            other => bail!("job-{job} ended {other}: {:?}", s.failure),
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    for handle in workers {
        if handle.is_finished() {
            handle.await??; // a worker that stopped early says why
        } else {
            handle.abort();
        }
    }

    let timings: Vec<Value> = http
        .get(format!("{url}/v1/jobs/{job}/timings"))
        .bearer_auth(CLIENT_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let mut queued: Vec<f64> = timings
        .iter()
        .filter_map(|t| t["queued_seconds"].as_f64())
        .collect();
    queued.sort_by(f64::total_cmp);
    if queued.len() != timings.len() || queued.is_empty() {
        bail!(
            "{} of {} timings carry a queued time",
            queued.len(),
            timings.len()
        );
    }
    let tasks = timings.len();
    let by_small = |phase: Option<&str>| {
        timings
            .iter()
            .filter(|t| {
                t["worker"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("small-"))
            })
            .filter(|t| phase.is_none_or(|p| t["phase"] == p))
            .count()
    };
    if by_small(Some("segments")) > 0 {
        bail!("a worker of 1 byte proved a segment");
    }
    println!(
        "claim benchmark: one job of {} dev segments ({tasks} tasks), {} fitting workers, {} \
         workers of 1 byte ({})",
        args.segments,
        args.fitting,
        args.small,
        plait.display()
    );
    println!(
        "job wall time                  {wall:>8.1} s ({:.0} tasks/s; {} nodes by 1-byte workers)",
        tasks as f64 / wall,
        by_small(None)
    );
    println!(
        "ready -> leased   p50 / p99    {:.1} / {:.1} ms",
        percentile(&queued, 0.50) * 1e3,
        percentile(&queued, 0.99) * 1e3
    );
    println!(
        "coordinator CPU                {cpu:>8.1} s ({:.2} ms per task)",
        cpu / tasks as f64 * 1e3
    );
    server.stop();
    Ok(())
}
