//! Benchmark support: the single-process OpenVM baseline and the resource summary both sides
//! print, so `scripts/bench-foundation.sh` can compare them.

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use anyhow::Result;
use clap::Args;
use plait_coordinator::TaskTiming;
use serde::Serialize;

use crate::program_arg::ProgramArgs;

#[derive(Args)]
pub struct BenchSdkProveArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// Write the resource summary to this JSON file.
    #[arg(long, value_name = "FILE")]
    summary_json: PathBuf,
}

#[derive(Serialize)]
pub struct ProcessSummary {
    pub name: String,
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

#[derive(Serialize)]
pub struct Summary {
    pub wall_seconds: f64,
    pub processes: Vec<ProcessSummary>,
}

/// This process's usage plus each worker's last reported usage.
pub fn summary(wall_seconds: f64, timings: &[TaskTiming]) -> Summary {
    let me = plait_worker::process_usage();
    let mut processes = vec![ProcessSummary {
        name: "coordinator".into(),
        peak_rss_bytes: me.peak_rss_bytes,
        cpu_seconds: me.cpu_seconds,
    }];
    let mut workers: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for t in timings {
        let entry = workers.entry(&t.worker).or_default();
        entry.0 = entry.0.max(t.meta.process_peak_rss_bytes);
        entry.1 = entry.1.max(t.meta.process_cpu_seconds);
    }
    processes.extend(
        workers
            .into_iter()
            .map(|(name, (rss, cpu))| ProcessSummary {
                name: name.to_string(),
                peak_rss_bytes: rss,
                cpu_seconds: cpu,
            }),
    );
    Summary {
        wall_seconds,
        processes,
    }
}

pub async fn sdk_prove(args: BenchSdkProveArgs, cache: &std::path::Path) -> Result<()> {
    let started = Instant::now();
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params()?;
    let cache_dir = cache.to_path_buf();
    let bytes = tokio::task::spawn_blocking(move || {
        plait_prover::openvm::sdk_prove_single_process(&cache_dir, &program, &input, &params)
    })
    .await??;
    let wall_seconds = started.elapsed().as_secs_f64();
    let me = plait_worker::process_usage();
    let summary = Summary {
        wall_seconds,
        processes: vec![ProcessSummary {
            name: "sdk-prove".into(),
            peak_rss_bytes: me.peak_rss_bytes,
            cpu_seconds: me.cpu_seconds,
        }],
    };
    std::fs::write(&args.summary_json, serde_json::to_vec_pretty(&summary)?)?;
    eprintln!("Sdk::prove: verified proof ({bytes} bytes) in {wall_seconds:.1} s");
    Ok(())
}
