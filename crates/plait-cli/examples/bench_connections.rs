//! Connection benchmark: what slow, half-open connections cost the coordinator.
//!
//! Starts `plait serve --dev` with its default connection limits, then:
//! 1. opens `--connections` connections that each send the start of a request and no more,
//!    spread over loopback addresses (`--per-address` from each of 127.0.0.2, .3, …), and counts
//!    how many the server holds and how many it closes at once;
//! 2. closes them, and with `--slow` such connections kept open (each one the server closes is
//!    opened again), runs a dev worker from 127.0.0.1 and times a job from submission to its
//!    verified proof, against the same job with no slow connections.
//!
//! Run with `scripts/bench-connections.sh`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

#[path = "common/bench_support.rs"]
mod bench_support;

use anyhow::{bail, Context, Result};
use bench_support::{
    cpu_seconds, dev_worker_config, peak_rss_bytes, plait_binary, Served, CLIENT_TOKEN,
};
use clap::Parser;
use plait_api::{JobStatusResponse, SubmitJobResponse, UploadProgramResponse};
use plait_prover::{dev::DevBackend, ProverBackend};
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream};

#[derive(Parser)]
struct Args {
    /// Half-open connections to try in step 1.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Slow connections kept open during the job of step 2.
    #[arg(long, default_value_t = 5_000)]
    slow: usize,
    /// Connections from each loopback address.
    #[arg(long, default_value_t = 400)]
    per_address: usize,
    /// Dev instructions of the timed job (8 a segment at segment height 3).
    #[arg(long, default_value_t = 256)]
    instructions: u64,
    /// The plait binary (default: beside this example's directory).
    #[arg(long)]
    plait: Option<PathBuf>,
}

/// Opens connection `i`: from 127.0.0.(2 + i / per_address), sending a request's first line.
async fn open_slow(server: SocketAddr, i: usize, per_address: usize) -> Result<TcpStream> {
    let n = 2 + i / per_address;
    let source: SocketAddr = format!("127.0.{}.{}:0", n / 256, n % 256).parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(source)?;
    let mut stream = socket.connect(server).await?;
    // The server may already have closed it; that shows when it is read.
    let _ = stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await;
    Ok(stream)
}

/// Whether the server has closed `stream` (a read sees the end, or an error).
fn is_closed(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 256];
    match stream.try_read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => true, // an answer to a half request comes only with a close
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    rlimit::increase_nofile_limit(u64::MAX)?;
    let plait = plait_binary(args.plait)?;
    let server = Served::start(&plait, &[], &["--dev"])?;
    let (url, pid) = (server.url.clone(), server.pid());
    let address: SocketAddr = url.strip_prefix("http://").context("url")?.parse()?;

    // 1. How many half-open connections are held.
    let mut streams = Vec::new();
    for i in 0..args.connections {
        streams.push(open_slow(address, i, args.per_address).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let closed = streams.iter().filter(|s| is_closed(s)).count();
    println!(
        "connection benchmark: plait serve --dev, default limits; {} half-open connections, {} \
         from each loopback address",
        args.connections, args.per_address
    );
    println!(
        "held / closed at once          {:>6} / {}",
        args.connections - closed,
        closed
    );
    println!(
        "coordinator RSS while held     {:>6.1} MiB (peak)",
        peak_rss_bytes(pid)? as f64 / (1 << 20) as f64
    );
    drop(streams);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. A job with and without slow connections kept open.
    let backend: Arc<dyn ProverBackend> = Arc::new(DevBackend::default());
    let config = dev_worker_config(&url, "honest".into(), 1 << 40);
    tokio::spawn(plait_worker::run(config, backend));
    let http = reqwest::Client::new();
    let upload: UploadProgramResponse = http
        .post(format!("{url}/v1/programs"))
        .bearer_auth(CLIENT_TOKEN)
        .body(b"connection benchmark program".to_vec())
        .send()
        .await?
        .json()
        .await?;
    let prove_one = || async {
        let started = Instant::now();
        let submitted: SubmitJobResponse = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth(CLIENT_TOKEN)
            .json(&json!({
                "program-sha256": upload.program_sha256,
                "input": {"items": [args.instructions.to_le_bytes().to_vec()]},
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
        loop {
            let s: JobStatusResponse = http
                .get(format!("{url}/v1/jobs/{job}"))
                .bearer_auth(CLIENT_TOKEN)
                .send()
                .await?
                .json()
                .await?;
            match s.state.as_str() {
                "succeeded" => return anyhow::Ok(started.elapsed().as_secs_f64()),
                "running" => tokio::time::sleep(Duration::from_millis(20)).await,
                other => bail!("job-{job} ended {other}: {:?}", s.failure),
            }
        }
    };
    let quiet = prove_one().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, reopened, open) = (stop.clone(), reopened.clone(), open.clone());
        let (slow, per_address) = (args.slow, args.per_address);
        tokio::spawn(async move {
            let mut streams = Vec::new();
            for i in 0..slow {
                streams.push(open_slow(address, i, per_address).await?);
            }
            open.store(streams.len(), Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                for (i, stream) in streams.iter_mut().enumerate() {
                    if is_closed(stream) {
                        *stream = open_slow(address, i, per_address).await?;
                        reopened.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    while open.load(Ordering::SeqCst) == 0 {
        if attacker.is_finished() {
            attacker.await??;
            bail!("the attacker stopped");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_before = cpu_seconds(pid)?;
    let attacked = prove_one().await?;
    // Held past the header timeout (20 s), so that the server closes and they reopen.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let attacked_later = prove_one().await?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    stop.store(true, Ordering::SeqCst);
    attacker.await??;
    println!(
        "job of {} dev instructions, submitted to verified:",
        args.instructions
    );
    println!("  no slow connections          {:>6.2} s", quiet);
    println!(
        "  {} slow connections open   {:>6.2} s, and {:.2} s 25 s later",
        args.slow, attacked, attacked_later
    );
    println!(
        "slow connections the server closed (header timeout) and the attacker reopened: {}",
        reopened.load(Ordering::SeqCst)
    );
    println!("coordinator CPU under attack   {cpu:>6.1} s");
    println!(
        "coordinator peak RSS           {:>6.1} MiB",
        peak_rss_bytes(pid)? as f64 / (1 << 20) as f64
    );
    server.stop();
    Ok(())
}
