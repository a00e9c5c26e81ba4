//! Dispatch benchmark: how much the pool itself costs per task, apart from proving.
//!
//! Starts `plait serve --dev` (a separate process, so its CPU time is its own) on a fresh
//! SQLite store, runs N dev workers in this process (each a real HTTP client running the same
//! worker loop as `plait worker`, proving with the dev backend's fixed delays), and streams
//! small jobs at it until the wanted number of tasks has run, keeping only a few jobs in flight
//! so that workers are mostly idle and a ready task is not waiting for a free worker.
//!
//! Prints: ready → leased delay per task (p50, p99, max), the coordinator's CPU time per task,
//! and the store's size per job. Run with `scripts/bench-dispatch.sh` (defaults: 100 workers,
//! 10,000 tasks).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

#[path = "common/bench_support.rs"]
mod bench_support;

use anyhow::{bail, Result};
use bench_support::{
    cpu_seconds, dev_worker_config, peak_rss_bytes, percentile, plait_binary, Served, CLIENT_TOKEN,
};
use clap::Parser;
use plait_api::{JobStatusResponse, SubmitJobResponse, UploadProgramResponse};
use plait_prover::{dev::DevBackend, ProverBackend};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Dev workers (tokio tasks in this process, each with its own HTTP connection).
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Tasks to run in all (jobs are added until their tasks reach this).
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Dev instructions per job (8 per segment at segment height 3).
    #[arg(long, default_value_t = 128)]
    instructions_per_job: u64,
    /// Jobs in flight at once.
    #[arg(long, default_value_t = 4)]
    jobs_in_flight: usize,
    /// Simulated proving time per segment and per aggregation node.
    #[arg(long, default_value_t = 50)]
    task_ms: u64,
    /// Pad every dev proof to this many bytes (real proofs weigh about as much: see docs/benchmarks.md).
    #[arg(long, default_value_t = 0)]
    proof_bytes: usize,
    /// The plait binary (default: beside this example's directory).
    #[arg(long)]
    plait: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plait = plait_binary(args.plait)?;
    let server = Served::start(&plait, &[], &["--dev"])?;
    let (url, pid) = (server.url.clone(), server.pid());

    let backend: Arc<dyn ProverBackend> = Arc::new(DevBackend {
        segment_delay: Duration::from_millis(args.task_ms),
        aggregate_delay: Duration::from_millis(args.task_ms),
        execute_delay: Duration::ZERO,
        prepare_delay: Duration::ZERO,
        proof_bytes: args.proof_bytes,
        fault: None,
        trace_size: None,
    });
    for i in 0..args.workers {
        let config = dev_worker_config(&url, format!("bench-{i}"), 1 << 40);
        let backend = backend.clone();
        tokio::spawn(async move { plait_worker::run(config, backend).await });
    }

    let http = reqwest::Client::new();
    let upload: UploadProgramResponse = http
        .post(format!("{url}/v1/programs"))
        .bearer_auth(CLIENT_TOKEN)
        .body(b"dispatch benchmark program".to_vec())
        .send()
        .await?
        .json()
        .await?;
    let submit = || async {
        let response: SubmitJobResponse = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth(CLIENT_TOKEN)
            .json(&json!({
                "program-sha256": upload.program_sha256,
                "input": {"items": [args.instructions_per_job.to_le_bytes().to_vec()]},
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
        anyhow::Ok(response.job_id.0)
    };
    let status = |job: u64| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let s: JobStatusResponse = http
                .get(format!("{url}/v1/jobs/{job}"))
                .bearer_auth(CLIENT_TOKEN)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(s)
        }
    };

    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let (mut submitted_tasks, mut jobs, mut in_flight) = (0usize, Vec::new(), Vec::new());
    while submitted_tasks < args.tasks || !in_flight.is_empty() {
        while submitted_tasks < args.tasks && in_flight.len() < args.jobs_in_flight {
            let job = submit().await?;
            // Jobs answer before they execute; count their tasks once execution has ended.
            let mut s = status(job).await?;
            while s.executing {
                tokio::time::sleep(Duration::from_millis(10)).await;
                s = status(job).await?;
            }
            submitted_tasks += s.phases.iter().map(|p| p.2).sum::<usize>();
            jobs.push(job);
            in_flight.push(job);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut still = Vec::new();
        for job in in_flight {
            let s = status(job).await?;
            match s.state.as_str() {
                "succeeded" => {}
                "running" => still.push(job),
                other => bail!("job-{job} ended {other}: {:?}", s.failure),
            }
        }
        in_flight = still;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;

    let mut queued = Vec::new();
    let mut tasks = 0usize;
    for &job in &jobs {
        let timings: Vec<Value> = http
            .get(format!("{url}/v1/jobs/{job}/timings"))
            .bearer_auth(CLIENT_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        tasks += timings.len();
        queued.extend(timings.iter().filter_map(|t| t["queued_seconds"].as_f64()));
    }
    if queued.len() != tasks {
        bail!("{} of {tasks} timings carry a queued time", queued.len());
    }
    queued.sort_by(f64::total_cmp);
    // An ended job is no longer in the coordinator's memory: its status is read from the store.
    let mut status_reads = Vec::new();
    for _ in 0..5 {
        let at = Instant::now();
        status(*jobs.last().expect("at least one job")).await?;
        status_reads.push(at.elapsed().as_secs_f64());
    }
    status_reads.sort_by(f64::total_cmp);
    let peak_rss = peak_rss_bytes(pid)?;
    let (store_bytes, blob_bytes) = server.stop();

    println!(
        "dispatch benchmark: {} workers, {} jobs, {tasks} tasks ({} dev instructions and {} tasks \
         per job, {} jobs in flight, {} ms per task)",
        args.workers,
        jobs.len(),
        args.instructions_per_job,
        tasks / jobs.len(),
        args.jobs_in_flight,
        args.task_ms
    );
    println!(
        "wall time                      {wall:>10.1} s ({:.0} tasks/s)",
        tasks as f64 / wall
    );
    println!(
        "ready -> leased   p50 / p99 / max  {:.1} / {:.1} / {:.1} ms",
        percentile(&queued, 0.50) * 1e3,
        percentile(&queued, 0.99) * 1e3,
        queued.last().copied().unwrap_or(0.0) * 1e3
    );
    println!(
        "coordinator CPU                {cpu:>10.1} s ({:.2} ms per task)",
        cpu / tasks as f64 * 1e3
    );
    println!(
        "status of an ended job         {:>10.1} ms (median of 5 reads, from the store)",
        status_reads[2] * 1e3
    );
    println!(
        "coordinator peak RSS           {:>10.1} MiB",
        peak_rss as f64 / (1 << 20) as f64
    );
    println!(
        "blobs (proofs, checkpoints)    {:>10.1} MiB ({:.1} KiB per task)",
        blob_bytes as f64 / (1 << 20) as f64,
        blob_bytes as f64 / tasks as f64 / 1024.0
    );
    println!(
        "store (SQLite, with WAL)       {:>10.1} MiB ({:.1} KiB per job, {:.0} B per task)",
        store_bytes as f64 / (1 << 20) as f64,
        store_bytes as f64 / 1024.0 / jobs.len() as f64,
        store_bytes as f64 / tasks as f64
    );
    Ok(())
}
