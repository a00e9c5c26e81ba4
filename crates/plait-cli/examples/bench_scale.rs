//! Scale benchmark of planning: how soon a large job starts proving, and what its execution,
//! boundaries and checkpoints cost.
//!
//! For each input of the guest (fib by default, segment height 19):
//! - in this process, with the OpenVM backend: plain execution (`run`) against planning
//!   (execution with boundaries and checkpoints), and checkpoint bytes per segment;
//! - through a real coordinator (`plait serve`, a separate process on a fresh SQLite store):
//!   time from submission to the first lease, to the end of execution, the coordinator's peak
//!   RSS and CPU seconds, and store and blob bytes per segment.
//!
//! Run with `scripts/bench-scale.sh`; it prints one table.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

#[path = "common/bench_support.rs"]
mod bench_support;

use anyhow::{bail, Context, Result};
use bench_support::{cpu_seconds, peak_rss_bytes, Served, CLIENT_TOKEN, WORKER_TOKEN};
use clap::Parser;
use plait_api::{
    ClaimTaskRequest, ClaimTaskResponse, JobStatusResponse, RegisterWorkerRequest,
    RegisterWorkerResponse, SubmitJobResponse, UploadProgramResponse,
};
use plait_core::{JobId, ProgramInput};
use plait_prover::{openvm::OpenVmBackend, ProgramImage, ProverBackend, ProvingParams};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The guest ELF (default: fib, as `plait build-guest guests/fib` builds it).
    #[arg(long)]
    elf: PathBuf,
    /// Guest inputs (u64 each), one row per input.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1500000,15000000,150000000"
    )]
    inputs: Vec<u64>,
    #[arg(long, default_value_t = 19)]
    segment_height: u32,
    /// Plait's cache directory (keys).
    #[arg(long)]
    cache_dir: PathBuf,
    /// The plait binary.
    #[arg(long)]
    plait: PathBuf,
}

struct Row {
    instructions: u64,
    segments: usize,
    run_mips: f64,
    plan_seconds: f64,
    plan_mips: f64,
    checkpoint_raw: f64,
    checkpoint_compressed: f64,
    submit_seconds: f64,
    first_lease_seconds: f64,
    executed_seconds: f64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    store_per_segment: f64,
    blobs_per_segment: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let backend = OpenVmBackend::new(&args.cache_dir);
    let program = ProgramImage::new(std::fs::read(&args.elf).context("reading the ELF")?);
    let params = ProvingParams {
        segment_height: args.segment_height,
        ..Default::default()
    };
    backend.prepare_keys(&params)?;
    backend.prepare_program(&program, &params)?;
    let mut rows = Vec::new();
    for &n in &args.inputs {
        let input = ProgramInput {
            items: vec![n.to_le_bytes().to_vec()],
        };
        let started = Instant::now();
        let ran = backend.run(&program, &input, &params)?;
        let run_seconds = started.elapsed().as_secs_f64();
        let (mut raw, mut compressed) = (0u64, 0u64);
        let started = Instant::now();
        let plan =
            backend.execute_streaming(&program, &input, &params, Some(JobId(1)), &mut |cut| {
                let blob = cut.checkpoint.expect("checkpoints were asked for");
                compressed += blob.len() as u64;
                raw += plait_prover::openvm::checkpoint_raw_size(&blob).unwrap_or(0);
                Ok(())
            })?;
        let plan_seconds = started.elapsed().as_secs_f64();
        let segments = plan.segments.len();
        let pool = through_coordinator(&args, &program, n).await?;
        rows.push(Row {
            instructions: ran.instructions,
            segments,
            run_mips: ran.instructions as f64 / run_seconds / 1e6,
            plan_seconds,
            plan_mips: plan.total_insns() as f64 / plan_seconds / 1e6,
            checkpoint_raw: raw as f64 / segments as f64,
            checkpoint_compressed: compressed as f64 / segments as f64,
            submit_seconds: pool.answered,
            first_lease_seconds: pool.first_lease,
            executed_seconds: pool.executed,
            peak_rss_mib: pool.peak_rss as f64 / (1 << 20) as f64,
            cpu_seconds: pool.cpu,
            store_per_segment: pool.store_bytes as f64 / segments as f64,
            blobs_per_segment: pool.blob_bytes as f64 / segments as f64,
        });
    }
    println!(
        "scale benchmark: {} at segment height {} (in-process: run and plan; through `plait \
         serve`: the rest)",
        args.elf.display(),
        args.segment_height
    );
    println!(
        "| instructions | segments | run Minsn/s | plan s | plan Minsn/s | checkpoint B/segment \
         raw / zstd | submit answered s | first lease s | executed s | coordinator peak RSS MiB \
         | coordinator CPU s | store B/segment | blobs B/segment |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} | {:.0} / {:.0} | {:.2} | {:.2} | {:.2} | {:.0} \
             | {:.1} | {:.0} | {:.0} |",
            r.instructions,
            r.segments,
            r.run_mips,
            r.plan_seconds,
            r.plan_mips,
            r.checkpoint_raw,
            r.checkpoint_compressed,
            r.submit_seconds,
            r.first_lease_seconds,
            r.executed_seconds,
            r.peak_rss_mib,
            r.cpu_seconds,
            r.store_per_segment,
            r.blobs_per_segment
        );
    }
    Ok(())
}

/// What one job measured through a coordinator: seconds from submission, and the
/// coordinator's own costs.
struct ThroughPool {
    answered: f64,
    first_lease: f64,
    executed: f64,
    peak_rss: u64,
    cpu: f64,
    store_bytes: u64,
    blob_bytes: u64,
}

/// Submits one job to a fresh `plait serve` and measures it until execution ends.
async fn through_coordinator(args: &Args, program: &ProgramImage, n: u64) -> Result<ThroughPool> {
    let cache_dir = args.cache_dir.to_str().context("cache dir")?;
    let server = Served::start(&args.plait, &["--cache-dir", cache_dir], &[])?;
    let (url, pid) = (server.url.clone(), server.pid());
    let http = reqwest::Client::new();
    let upload: UploadProgramResponse = http
        .post(format!("{url}/v1/programs"))
        .bearer_auth(CLIENT_TOKEN)
        .body(program.bytes.as_ref().clone())
        .send()
        .await?
        .json()
        .await?;
    let info = OpenVmBackend::new(&args.cache_dir).info();
    let registered: RegisterWorkerResponse = http
        .post(format!("{url}/v1/worker/register"))
        .bearer_auth(WORKER_TOKEN)
        .json(&RegisterWorkerRequest {
            name: "bench".into(),
        })
        .send()
        .await?
        .json()
        .await?;
    let credential = registered
        .credential
        .context("registering with the pool token returns a credential")?;
    let claim = ClaimTaskRequest {
        slots: 1,
        cores: 2,
        memory_bytes: 1 << 40,
        backend: info.name,
        backend_version: info.version,
        plait_version: env!("CARGO_PKG_VERSION").into(),
        key_sets: vec![plait_prover::KeySetId {
            vm_config: Default::default(),
            segment_height: args.segment_height,
        }],
        gpus: 0,
        device_profile: None,
        device: None,
    };
    let cpu_before = cpu_seconds(pid)?;
    let submitted = Instant::now();
    let job: SubmitJobResponse = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(CLIENT_TOKEN)
        .json(&json!({
            "program-sha256": upload.program_sha256,
            "input": {"items": [n.to_le_bytes().to_vec()]},
            "params": {
                "segment-height": args.segment_height,
                "tree": {"num-children-leaf": 4, "num-children-internal": 3},
                "max-instructions": plait_prover::DEFAULT_MAX_INSTRUCTIONS,
            },
        }))
        .send()
        .await?
        .json()
        .await?;
    let answered = submitted.elapsed().as_secs_f64();
    let leased: ClaimTaskResponse = http
        .post(format!("{url}/v1/worker/claim"))
        .bearer_auth(&credential)
        .json(&claim)
        .send()
        .await?
        .json()
        .await?;
    if leased.task.is_none() {
        bail!("no task was leased within the claim wait");
    }
    let first_lease = submitted.elapsed().as_secs_f64();
    let executed = loop {
        let status: JobStatusResponse = http
            .get(format!("{url}/v1/jobs/{}", job.job_id.0))
            .bearer_auth(CLIENT_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        if status.state == "failed" {
            bail!("the job failed: {:?}", status.failure);
        }
        if !status.executing {
            break submitted.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu = cpu_seconds(pid)? - cpu_before;
    let peak_rss = peak_rss_bytes(pid)?;
    let (store_bytes, blob_bytes) = server.stop();
    Ok(ThroughPool {
        answered,
        first_lease,
        executed,
        peak_rss,
        cpu,
        store_bytes,
        blob_bytes,
    })
}
