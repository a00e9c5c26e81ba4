//! `plait prove`: the main job. Executes the program, proves its segments in local worker
//! processes, aggregates them, writes and verifies the final proof.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use plait_coordinator::{JobStatus, PlannerConfig, TaskTiming};
use plait_core::{
    planner::{Goal, Measured, Prediction},
    DeviceChoice, JobId,
};
use plait_prover::{dev::DevBackend, ProverBackend};

use super::{openvm_backend, planner};
use crate::{
    exit::{BadInput, ProvingFailed},
    local::LocalPool,
    program_arg::ProgramArgs,
};

#[derive(Args)]
pub struct ProveArgs {
    #[command(flatten)]
    program: ProgramArgs,
    /// Local worker processes to start.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// What the local workers prove on: `auto` (a GPU if this build has GPU support and finds
    /// one, else the CPU), `gpu` or `cpu`.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Where to write the proof (default: PROGRAM-NAME.proof).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Use the dev backend: FAKE proofs that prove nothing, for testing the pool only.
    #[arg(long)]
    dev: bool,
    /// Print the per-task timings as JSON on stdout when done.
    #[arg(long)]
    pub(crate) timings_json: bool,
    /// Also write the segment plan and every accepted task proof into this directory
    /// (`plan.json`, `task-N.proof`), for inspection and tests.
    #[arg(long, value_name = "DIR")]
    keep_task_proofs: Option<PathBuf>,
    /// Write wall time and each process's peak memory and CPU time to this JSON file.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Keep job state in this store (`sqlite://PATH` or `postgres://…`) instead of a scratch
    /// SQLite file deleted at the end.
    #[arg(long)]
    store: Option<String>,
    /// `auto`: choose the segment height for `--goal` with the planner's cost model (needs a
    /// device profile: `plait calibrate`), from `--plan-heights`.
    #[arg(long, value_name = "auto")]
    segment_size: Option<String>,
    /// What `--segment-size auto` optimizes: latency, cost or deadline=SECONDS.
    #[arg(long, default_value = "latency")]
    goal: Goal,
    #[arg(long, default_value = "19,20,21", value_delimiter = ',')]
    plan_heights: Vec<u32>,
    /// The device profile for `auto` and for predictions (default: the one `plait calibrate`
    /// wrote). With a profile, the job's predicted and measured T and L are printed and
    /// recorded (`plait predictions`).
    #[arg(long)]
    profile: Option<PathBuf>,
}

impl ProveArgs {
    /// `plait prove PROGRAM -o OUTPUT --workers N --device D` with every other option at its
    /// default.
    pub fn new(
        program: ProgramArgs,
        workers: usize,
        device: DeviceChoice,
        output: PathBuf,
    ) -> Self {
        Self {
            program,
            workers,
            device,
            output: Some(output),
            dev: false,
            timings_json: false,
            keep_task_proofs: None,
            summary_json: None,
            store: None,
            segment_size: None,
            goal: Goal::Latency,
            plan_heights: vec![19, 20, 21],
            profile: None,
        }
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub async fn run(args: ProveArgs, cache: &Path) -> Result<()> {
    let started = Instant::now();
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params()?;
    let backend: Arc<dyn ProverBackend> = if args.dev {
        eprintln!("WARNING: --dev: the dev backend makes FAKE proofs that prove nothing");
        Arc::new(DevBackend::default())
    } else {
        openvm_backend(cache)
    };
    let output = args.output.clone().unwrap_or_else(|| {
        let stem = args
            .program
            .program
            .file_name()
            .map_or("program".into(), |n| n.to_string_lossy().to_string());
        PathBuf::from(format!("{stem}.proof"))
    });

    // Local workers share this machine's cores, so the model predicts them as one worker of
    // the profiled device (measured: 2 workers on 2 cores are no faster than 1).
    let pool_args = planner::PoolArgs::local(
        args.profile.clone(),
        1,
        args.plan_heights.clone(),
        args.goal,
    );
    let profile_given = args.profile.is_some() || args.segment_size.is_some();
    let planner = match pool_args.pool(cache, &params) {
        Ok(pool) if !args.dev => Some(PlannerConfig {
            pool,
            fixed_size: true,
            heights: args.plan_heights.clone(),
        }),
        Err(e) if profile_given => return Err(e),
        _ => None,
    };
    let auto = match args.segment_size.as_deref() {
        None => None,
        Some("auto") if planner.is_some() => Some(args.goal),
        Some("auto") => {
            return Err(
                BadInput("--segment-size auto needs the OpenVM backend (not --dev)".into()).into(),
            )
        }
        Some(other) => {
            return Err(BadInput(format!(
                "--segment-size {other:?}: only `auto` (or use --segment-height)"
            ))
            .into())
        }
    };

    let mut pool = LocalPool::start(backend, cache, args.store.as_deref(), planner).await?;
    let coordinator = pool.coordinator.clone();

    if auto.is_none() {
        let bar = spinner("keys");
        let keys = coordinator.prepare_keys(params).await?;
        bar.finish_and_clear();
        eprintln!("{keys}");
    }

    // Workers first: segments are handed out as soon as execution cuts them.
    pool.spawn_workers(args.workers, cache, args.dev, args.device)?;
    eprintln!(
        "{} worker processes (coordinator {}; logs in {})",
        args.workers,
        pool.url,
        pool.log_dir.display()
    );
    let bar = spinner(if auto.is_some() {
        "choosing the segment height"
    } else {
        "executing"
    });
    let exec_started = Instant::now();
    let job = coordinator
        .submit(program.clone(), input, params, auto)
        .await?;
    // Execution runs while the first segments are proven; report it when it ends.
    while coordinator.summary(job).await?.progress.executing {
        coordinator.changed(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let plan = coordinator.plan(job).await?;
    let params = coordinator.params(job).await?;
    if let (Some(goal), Some(reason)) = coordinator
        .prediction(job)
        .await?
        .0
        .map_or((None, None), |p| (p.goal, p.reason))
    {
        eprintln!(
            "--segment-size auto ({goal}): height {}: {reason}",
            params.segment_height
        );
    }
    if !matches!(coordinator.status(job).await?, JobStatus::Failed(_)) {
        eprintln!(
            "executed {} instructions in {:.2} s: {} segments at segment height {}",
            plan.total_insns(),
            exec_started.elapsed().as_secs_f64(),
            plan.segments.len(),
            params.segment_height
        );
    }
    let status = follow_progress(&coordinator, job).await?;
    let execution_failed = coordinator.summary(job).await?.execution_failed;
    let timings = coordinator.timings(job).await?;
    if let (Some(predicted), Some(measured)) = coordinator.prediction(job).await? {
        eprint!("{}", planner::prediction_table(&predicted, Some(&measured)));
        record_prediction(cache, &program, predicted, measured, args.workers)?;
    }
    if let Some(dir) = &args.keep_task_proofs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;
        for (task, proof) in coordinator.accepted_proofs(job).await? {
            std::fs::write(dir.join(format!("{task}.proof")), &proof.0)?;
        }
    }
    pool.shutdown().await;

    if let Some(path) = &args.summary_json {
        let summary = super::bench::summary(started.elapsed().as_secs_f64(), &timings);
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match status {
        JobStatus::Succeeded(bytes) => {
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            print_summary(&timings);
            let total_seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "{} written to {} ({} bytes) in {total_seconds:.1} s total \
                 ({:.0} instructions per second end to end)",
                if args.dev {
                    "FAKE dev proof (proves nothing)"
                } else {
                    "proof verified and"
                },
                output.display(),
                bytes.len(),
                plan.total_insns() as f64 / total_seconds
            );
            if args.timings_json {
                println!("{}", serde_json::to_string_pretty(&timings)?);
            }
            Ok(())
        }
        JobStatus::Failed(reason) if execution_failed => Err(BadInput(reason).into()),
        JobStatus::Failed(reason) => {
            for event in coordinator.events(job).await? {
                eprintln!("  [{:>7.1} s] {}", event.at_seconds, event.message);
            }
            Err(ProvingFailed(format!("proving failed: {reason}")).into())
        }
        other => Err(ProvingFailed(format!("the job ended {}", other.name())).into()),
    }
}

/// Shows one progress bar per phase until the job ends.
async fn follow_progress(
    coordinator: &plait_coordinator::Coordinator,
    job: JobId,
) -> Result<JobStatus> {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {msg}")
        .expect("template")
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut reported: HashMap<String, bool> = HashMap::new();
    loop {
        let progress = coordinator.progress(job).await?;
        for (phase, done, total) in &progress.phases {
            let bar = bars.entry(phase.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(*total as u64));
                bar.set_style(style.clone());
                bar.set_prefix(phase.clone());
                bar
            });
            bar.set_position(*done as u64);
            if done == total && !reported.get(phase).copied().unwrap_or(false) {
                reported.insert(phase.clone(), true);
                bar.finish_with_message(format!("done at {:.1} s", progress.elapsed_seconds));
                multi.suspend(|| {
                    eprintln!(
                        "{phase}: {total}/{total} done at {:.1} s",
                        progress.elapsed_seconds
                    )
                });
            } else if done != total {
                bar.set_message(format!("{:.0} s", progress.elapsed_seconds));
            }
        }
        if progress.finished {
            break;
        }
        coordinator.changed(Duration::from_millis(500)).await;
    }
    // Finalization runs after the last phase completes; wait for its verdict.
    loop {
        match coordinator.status(job).await? {
            status if status.is_live() => coordinator.changed(Duration::from_millis(200)).await,
            status => return Ok(status),
        }
    }
}

/// Appends the job's prediction and outcome to the local record (`plait predictions`).
fn record_prediction(
    cache: &Path,
    program: &plait_prover::ProgramImage,
    predicted: Prediction,
    measured: Measured,
    workers: usize,
) -> Result<()> {
    let record = planner::PredictionRecord {
        program_sha256: program.digest.clone(),
        workers,
        predicted,
        measured,
    };
    let path = planner::predictions_path(cache);
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(&record)?)?;
    Ok(())
}

fn print_summary(timings: &[TaskTiming]) {
    let mut phases: Vec<(String, Vec<&TaskTiming>)> = Vec::new();
    for t in timings {
        match phases.iter_mut().find(|(p, _)| *p == t.phase) {
            Some((_, list)) => list.push(t),
            None => phases.push((t.phase.clone(), vec![t])),
        }
    }
    // Tasks proven on a GPU report their device memory, others the worker's resident memory:
    // show the highest per phase.
    let on_gpu = timings.iter().any(|t| t.meta.device_peak_bytes > 0);
    eprintln!(
        "{:>22} {:>5} {:>12} {:>12} {:>14} {:>10}",
        "phase",
        "tasks",
        "prove s/task",
        "wall s/task",
        "start s/task",
        if on_gpu { "device GiB" } else { "peak GiB" }
    );
    for (phase, list) in phases {
        let n = list.len() as f64;
        let prove: f64 = list.iter().map(|t| t.meta.proving_seconds).sum::<f64>() / n;
        let wall: f64 = list.iter().map(|t| t.wall_seconds).sum::<f64>() / n;
        let reexec: f64 = list.iter().map(|t| t.meta.reexecution_seconds).sum::<f64>() / n;
        let peak = list
            .iter()
            .map(|t| match on_gpu {
                true => t.meta.device_peak_bytes,
                false => t.meta.process_peak_rss_bytes,
            })
            .max()
            .unwrap_or(0);
        eprintln!(
            "{phase:>22} {:>5} {prove:>12.2} {wall:>12.2} {reexec:>14.2} {:>10.2}",
            list.len(),
            peak as f64 / (1u64 << 30) as f64
        );
    }
}
