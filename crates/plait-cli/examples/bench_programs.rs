//! Program upload benchmark: what distinct program uploads cost the coordinator's memory.
//!
//! Starts `plait serve --dev` on a fresh SQLite store, uploads `--programs` distinct programs
//! of `--bytes` each (the dev backend takes any bytes as a program), and prints the
//! coordinator's resident memory before, after, and after a restart on the same store.
//! Run with `scripts/bench-programs.sh`; `--plait` compares another build.

use std::path::PathBuf;

#[path = "common/bench_support.rs"]
mod bench_support;

use anyhow::{bail, Result};
use bench_support::{peak_rss_bytes, plait_binary, rss_bytes, sqlite_bytes, Served, CLIENT_TOKEN};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Distinct programs to upload.
    #[arg(long, default_value_t = 1000)]
    programs: usize,
    /// Bytes of each.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: usize,
    /// The plait binary (default: beside this example's directory).
    #[arg(long)]
    plait: Option<PathBuf>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let plait = plait_binary(args.plait)?;
    let server = Served::start(&plait, &[], &["--dev"])?;
    let pid = server.pid();
    let http = reqwest::blocking::Client::new();
    let before = rss_bytes(pid)?;
    let started = std::time::Instant::now();
    for i in 0..args.programs {
        let mut program = vec![0u8; args.bytes];
        program[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let response = http
            .post(format!("{}/v1/programs", server.url))
            .bearer_auth(CLIENT_TOKEN)
            .body(program)
            .send()?;
        if !response.status().is_success() {
            bail!("upload {i}: {}", response.status());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes(pid)?;
    let peak = peak_rss_bytes(pid)?;
    println!(
        "program benchmark: {} distinct programs of {} bytes uploaded to plait serve --dev \
         ({} at {})",
        args.programs,
        args.bytes,
        plait.display(),
        server.url
    );
    println!(
        "uploads                        {seconds:>8.1} s ({:.1} ms each)",
        seconds * 1e3 / args.programs as f64
    );
    println!("coordinator RSS before         {:>8.1} MiB", mib(before));
    println!(
        "coordinator RSS after          {:>8.1} MiB (peak {:.1} MiB)",
        mib(after),
        mib(peak)
    );
    println!(
        "store (SQLite, with WAL)       {:>8.1} MiB",
        mib(sqlite_bytes(&server.store_path))
    );
    // The same store again, as after a restart.
    let mut server = server;
    server.restart(&plait, &[], &["--dev"])?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    println!(
        "coordinator RSS after restart  {:>8.1} MiB",
        mib(rss_bytes(server.pid())?)
    );
    Ok(())
}
