//! The segment planner: `plait calibrate` measures this device into a profile; `plait plan`
//! executes a program at candidate segment heights and predicts each one's latency (T) and
//! total work (L) by simulating the job on a pool of profiled devices; `plait predictions`
//! compares what `plait prove` predicted with what it measured.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{Context, Result};
use clap::Args;
use plait_core::{
    cost::DeviceProfile,
    planner::{error_percent, Candidate, Goal, Measured, Pool, Prediction},
    sim::SimConfig,
    AggTreeShape, DeviceChoice, DeviceKind, ProgramInput,
};
use plait_prover::{
    openvm::OpenVmBackend, BackendInfo, ProgramImage, ProverBackend, ProvingParams, VmConfig,
};
use plait_worker::calibrate::{self, Calibration};
use serde::{Deserialize, Serialize};

use super::openvm_backend;
use crate::{exit::BadInput, program_arg::ProgramArgs};

const FIB_GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/fib");
const SHA_CHAIN_GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/sha-chain");
const MEM_WALK_GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/mem-walk");

/// Where `plait calibrate` keeps this machine's profile for `vm` on a device of `kind`
/// (`device-profile.json` for the CPU under RV32IM, `device-profile-gpu-rv32im-sha2.json`...).
pub fn default_profile_path(cache: &Path, vm: VmConfig, kind: DeviceKind) -> PathBuf {
    let mut name = "device-profile".to_string();
    if kind == DeviceKind::Gpu {
        name.push_str("-gpu");
    }
    if vm != VmConfig::Rv32im {
        name = format!("{name}-{vm}");
    }
    cache.join(format!("{name}.json"))
}

// ---------------------------------------------------------------- calibrate

#[derive(Args)]
pub struct CalibrateArgs {
    /// Segment heights to measure (at least 3 for a useful model). The lowest also measures
    /// every aggregation node kind (leaves of 1 to 4 children).
    #[arg(long, default_value = "19,20,21", value_delimiter = ',')]
    heights: Vec<u32>,
    /// Where to write the profile (default: device-profile.json in the cache directory, or
    /// device-profile-gpu.json for a GPU).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// A name for this device [default: the GPU's model, or the host name].
    #[arg(long)]
    name: Option<String>,
    /// What to measure: `auto` (the GPU if this build has GPU support and finds one, else the
    /// CPU), `gpu` or `cpu`.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// The VM config to measure under (each has its own profile).
    #[arg(long, default_value = "rv32im")]
    vm_config: VmConfig,
    /// A folder with the calibration guests already built (`fib.elf`, `sha-chain.elf`,
    /// `mem-walk.elf`), for a machine without the guest toolchain, such as the GPU check's
    /// [default: build them from this checkout's `guests/`].
    #[arg(long)]
    guest_elfs: Option<PathBuf>,
}

pub async fn calibrate(args: CalibrateArgs, cache: &Path) -> Result<()> {
    let started = Instant::now();
    let backend =
        OpenVmBackend::on_device(cache, args.device).map_err(|e| BadInput(e.to_string()))?;
    let device = backend.device();
    eprintln!("measuring {}", device.describe());
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| default_profile_path(cache, args.vm_config, device.kind));
    let name = args.name.clone().unwrap_or_else(|| match device.kind {
        DeviceKind::Gpu => device.model.clone(),
        DeviceKind::Cpu => {
            std::fs::read_to_string("/etc/hostname").map_or("device".into(), |h| h.trim().into())
        }
    });
    let mut heights = args.heights.clone();
    heights.sort_unstable();
    heights.dedup();
    if heights.is_empty() {
        return Err(BadInput("--heights: give at least one segment height".into()).into());
    }
    // The guests first: a missing one is refused before a kept calibration is touched.
    let guest = |source: &str, elf: &str| {
        let path = match &args.guest_elfs {
            Some(dir) => dir.join(elf),
            None => PathBuf::from(source),
        };
        crate::program_arg::load_program(&path, cache)
    };
    let fib = guest(FIB_GUEST, "fib.elf")?;
    let sha_chain = guest(SHA_CHAIN_GUEST, "sha-chain.elf")?;
    let mem_walk = guest(MEM_WALK_GUEST, "mem-walk.elf")?;
    let fresh = calibrate::new_profile(&backend, name, &device, args.vm_config);
    // Resume: keep what an interrupted run measured, if it was made by this Plait.
    let work_dir = calibrate::work_dir(&path);
    let old = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<DeviceProfile>(&bytes)
                .map_err(|e| BadInput(format!("{} is not a profile: {e}", path.display())))?,
        ),
        Err(_) => None,
    };
    let mut profile = match old.and_then(|old| calibrate::resume(old, &fresh)) {
        Some(resumed) => {
            eprintln!("resuming the calibration in {}", path.display());
            resumed
        }
        None => {
            // Proofs another run kept must not stand in for this one's.
            let _ = std::fs::remove_dir_all(&work_dir);
            fresh
        }
    };
    let vm_config = args.vm_config;
    let profile_path = path.clone();
    tokio::task::spawn_blocking(move || {
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed}")
                .expect("template"),
        );
        let calibration = Calibration {
            backend: &backend,
            fib: &fib,
            sha_chain: &sha_chain,
            mem_walk: &mem_walk,
            vm_config,
            heights,
            profile_path,
            work_dir,
        };
        calibration.run(&mut profile, &mut |progress| match progress {
            calibrate::Progress::Step { done, total, what } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(what);
            }
            calibrate::Progress::Measured(line) => bar.suspend(|| eprintln!("{line}")),
        })?;
        bar.finish_and_clear();
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    eprintln!(
        "profile written to {} ({:.0} s this run)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------- plan

#[derive(Args, Clone)]
pub struct PoolArgs {
    /// A device profile for every local worker (default: the one `plait calibrate` wrote).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Workers in the pool, all with `--profile`.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// A heterogeneous pool instead: PROFILE[:COUNT], repeatable.
    #[arg(long, value_name = "PROFILE[:COUNT]")]
    pool: Vec<String>,
    /// Candidate segment heights.
    #[arg(long, default_value = "19,20,21", value_delimiter = ',')]
    heights: Vec<u32>,
    /// What to optimize: latency, cost (total proving work) or deadline=SECONDS (the cheapest
    /// that meets it).
    #[arg(long, default_value = "latency")]
    goal: Goal,
    /// Simulated probability that a task attempt fails and is redone.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Simulated seconds per task to move its inputs and proof.
    #[arg(long, default_value_t = 0.0)]
    transfer_seconds: f64,
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    program: ProgramArgs,
    #[command(flatten)]
    pool: PoolArgs,
    /// Also simulate pools of these sizes (workers like the first profile) and plot T and L
    /// against the number of segments into this SVG file.
    #[arg(long, value_name = "SVG")]
    plot: Option<PathBuf>,
    #[arg(long, default_value = "1,10,100,1000,10000")]
    plot_pool_sizes: String,
    #[arg(long)]
    json: bool,
    /// Also write every task of the recommended height as the (first) profile predicts it
    /// (seconds, peak memory, proof bytes) to this JSON file: what a job's timings can be set
    /// beside (`scripts/per-task-table.py --predicted FILE`) without proving it again.
    #[arg(long, value_name = "FILE")]
    tasks_json: Option<PathBuf>,
}

/// Reads a device profile and checks it was made for this Plait, `backend` and `tree`.
pub fn read_profile(
    path: &Path,
    tree: AggTreeShape,
    backend: &BackendInfo,
) -> Result<DeviceProfile> {
    let bytes = std::fs::read(path).map_err(|e| {
        BadInput(format!(
            "cannot read device profile {}: {e}; run `plait calibrate` first",
            path.display()
        ))
    })?;
    let profile: DeviceProfile = serde_json::from_slice(&bytes)
        .map_err(|e| BadInput(format!("{} is not a device profile: {e}", path.display())))?;
    profile
        .check(
            env!("CARGO_PKG_VERSION"),
            &backend.name,
            &backend.version,
            tree,
        )
        .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    Ok(profile)
}

impl PoolArgs {
    /// A pool of `workers` local workers with the profile at `profile` (or the default one).
    pub fn local(profile: Option<PathBuf>, workers: usize, heights: Vec<u32>, goal: Goal) -> Self {
        Self {
            profile,
            workers,
            pool: Vec::new(),
            heights,
            goal,
            failure_rate: 0.0,
            transfer_seconds: 0.0,
        }
    }

    /// The pool for a job of `params`: every profile must have been measured under its VM
    /// config and tree shape.
    pub fn pool(&self, cache: &Path, params: &ProvingParams) -> Result<Pool> {
        let openvm = OpenVmBackend::new(PathBuf::new()).info();
        let pool = if self.pool.is_empty() {
            let path = self
                .profile
                .clone()
                .unwrap_or_else(|| default_profile_path(cache, params.vm_config, DeviceKind::Cpu));
            let profile = read_profile(&path, params.tree, &openvm)?;
            Pool::uniform(profile, self.workers.max(1))
        } else {
            read_pool(&self.pool, params.tree, &openvm)?.0
        };
        let vm = params.vm_config.name();
        if let Some(other) = pool.profiles.iter().find(|p| p.vm_config != vm) {
            return Err(BadInput(format!(
                "device profile {:?} was measured under the {} VM config, and this job runs \
                 {vm}: run `plait calibrate --vm-config {vm}`",
                other.device, other.vm_config
            ))
            .into());
        }
        Ok(pool)
    }

    pub fn sim_config(&self, execution_seconds: f64) -> SimConfig {
        SimConfig {
            execution_seconds,
            transfer_seconds: self.transfer_seconds,
            failure_rate: self.failure_rate,
            seed: 1,
        }
    }
}

/// A pool from `PROFILE[:COUNT]` entries (a missing count is 1); also says whether any entry
/// gave a count.
pub fn read_pool(
    entries: &[String],
    tree: AggTreeShape,
    backend: &BackendInfo,
) -> Result<(Pool, bool)> {
    let mut pool = Pool {
        profiles: Vec::new(),
        workers: Vec::new(),
    };
    let mut counted = false;
    for entry in entries {
        let (path, count) = match entry.rsplit_once(':') {
            Some((p, c)) if c.parse::<usize>().is_ok() => {
                counted = true;
                (p, c.parse().unwrap())
            }
            _ => (entry.as_str(), 1),
        };
        pool.profiles
            .push(read_profile(Path::new(path), tree, backend)?);
        let index = pool.profiles.len() - 1;
        pool.workers.extend(std::iter::repeat_n(index, count));
    }
    Ok((pool, counted))
}

/// Plans the program at every candidate height (one execution; see
/// `plait_coordinator::planning::candidates`) and simulates each.
pub async fn candidates(
    backend: Arc<dyn ProverBackend>,
    program: &ProgramImage,
    input: &ProgramInput,
    base: ProvingParams,
    pool_args: &PoolArgs,
    pool: &Pool,
) -> Result<Vec<Candidate>> {
    let evaluated = plait_coordinator::planning::candidates(
        backend,
        program,
        input,
        base,
        &pool_args.heights,
        pool,
        pool_args.sim_config(0.0),
    )
    .await?;
    Ok(evaluated.into_iter().map(|(c, _)| c).collect())
}

/// The recommendation, or an error that says what to do.
pub fn recommend(candidates: &[Candidate], goal: Goal) -> Result<(usize, String)> {
    plait_core::planner::recommend(candidates, goal).map_err(|e| BadInput(e.to_string()).into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
}

pub fn print_table(candidates: &[Candidate], workers: usize) {
    println!(
        "{:>6} {:>8} {:<34} {:>9} {:>9} {:>10} {:>10} {:>10} {:>6}  {}",
        "height",
        "segments",
        "aggregation nodes per layer",
        "mem GiB",
        "OpenVM est",
        "T pred s",
        "L pred s",
        "T bound s",
        "util",
        "devices that fit"
    );
    for c in candidates {
        let layers = c
            .nodes_per_layer
            .iter()
            .map(|(l, n)| format!("{}:{n}", short_layer(l)))
            .collect::<Vec<_>>()
            .join(" ");
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
        println!(
            "{:>6} {:>8} {:<34} {:>9} {:>10} {:>10} {:>10} {:>10} {:>6}  {}",
            c.segment_height,
            c.segments,
            layers,
            gib(c.peak_task_memory_bytes),
            gib(c.openvm_segment_memory_bytes),
            f(c.predicted_latency_seconds),
            f(c.predicted_work_seconds),
            f(c.lower_bound_seconds),
            c.utilization
                .map_or("-".into(), |u| format!("{:.0}%", u * 100.0)),
            if c.devices_that_fit.is_empty() {
                c.infeasible.clone().unwrap_or_else(|| "none".into())
            } else {
                c.devices_that_fit.join(", ")
            }
        );
    }
    println!("(T and L simulated on {workers} worker(s); T bound = max(L/workers, critical path))");
}

fn short_layer(layer: &str) -> String {
    layer
        .replace("internal-recursive.", "ir")
        .replace("internal-for-leaf", "ifl")
}

pub async fn plan(args: PlanArgs, cache: &Path) -> Result<()> {
    let (program, input) = args.program.load(cache)?;
    let params = args.program.params()?;
    let pool = args.pool.pool(cache, &params)?;
    let backend = openvm_backend(cache);
    let candidates = candidates(backend, &program, &input, params, &args.pool, &pool).await?;
    let (best, why) = recommend(&candidates, args.pool.goal)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "candidates": candidates,
                "recommended-segment-height": candidates[best].segment_height,
                "reason": why,
            }))?
        );
    } else {
        print_table(&candidates, pool.workers.len());
        println!(
            "recommended: --segment-height {}: {why}",
            candidates[best].segment_height
        );
    }
    if let Some(path) = &args.tasks_json {
        let c = &candidates[best];
        let job = plait_core::sim::SimJob {
            segment_instructions: &c.segment_instructions,
            segment_sizes: &c.segment_sizes,
            segment_height: c.segment_height,
            tree: params.tree,
        };
        let tasks = plait_core::sim::predict_tasks(&job, &pool.profiles[0])?;
        std::fs::write(path, serde_json::to_vec_pretty(&tasks)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "{} tasks' predictions written to {}",
            tasks.len(),
            path.display()
        );
    }
    if let Some(svg) = &args.plot {
        let sizes: Vec<usize> = args
            .plot_pool_sizes
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| BadInput("--plot-pool-sizes: comma-separated numbers".into()))?;
        plot(&candidates, &pool, &args.pool, params.tree, &sizes, svg)?;
        eprintln!("plot written to {}", svg.display());
    }
    Ok(())
}

/// Simulates every candidate on pools of `sizes` workers, plots T and L to `path` (SVG), and
/// prints the plotted figures.
pub fn plot(
    candidates: &[Candidate],
    pool: &Pool,
    pool_args: &PoolArgs,
    tree: AggTreeShape,
    sizes: &[usize],
    path: &Path,
) -> Result<()> {
    let series = plait_core::plot::pool_size_series(
        candidates,
        pool,
        tree,
        pool_args.sim_config(0.0),
        sizes,
    );
    let svg = plait_core::plot::two_panel_svg(&series)
        .map_err(|e| anyhow::anyhow!("drawing the plot: {e}"))?;
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    for s in &series {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(n, t, l)| format!("n={n:.0}: T {t:.0} s, L {l:.0} s"))
            .collect();
        eprintln!("{:>14}  {}", s.label, points.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------- predictions

/// One job's prediction and outcome, appended by `plait prove` to `predictions.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub program_sha256: String,
    /// Local worker processes that proved it.
    pub workers: usize,
    pub predicted: Prediction,
    pub measured: Measured,
}

pub fn predictions_path(cache: &Path) -> PathBuf {
    cache.join("predictions.jsonl")
}

/// Predicted beside measured T and L, and L per phase; measured left blank until known.
pub fn prediction_table(predicted: &Prediction, measured: Option<&Measured>) -> String {
    let mut out = format!(
        "{:>22} {:>10} {:>10} {:>7}\n",
        "predicted vs measured", "predicted", "measured", "error"
    );
    let mut row = |name: &str, p: f64, m: Option<f64>| {
        let (m, e) = m.map_or(("-".into(), "-".into()), |m| {
            (format!("{m:.1}s"), format!("{:.1}%", error_percent(p, m)))
        });
        out += &format!("{name:>22} {:>10} {m:>10} {e:>7}\n", format!("{p:.1}s"));
    };
    row(
        "T (latency)",
        predicted.latency_seconds,
        measured.map(|m| m.latency_seconds),
    );
    row(
        "L (work)",
        predicted.work_seconds,
        measured.map(|m| m.work_seconds),
    );
    for (phase, p) in &predicted.work_by_phase {
        let m = measured.map(|m| {
            m.work_by_phase
                .iter()
                .find(|(q, _)| q == phase)
                .map_or(0.0, |(_, w)| *w)
        });
        row(&format!("L {phase}"), *p, m);
    }
    out
}

#[derive(Args)]
pub struct PredictionsArgs {
    /// List the jobs of this coordinator instead of those `plait prove` recorded here.
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// The coordinator's client token.
    #[arg(long, env = "PLAIT_CLIENT_TOKEN", default_value = "")]
    token: String,
    #[arg(long)]
    json: bool,
}

async fn records_of_coordinator(url: &str, token: &str) -> Result<Vec<PredictionRecord>> {
    let connection = crate::connection::Connection::new(url, token);
    let jobs = crate::connection::all_jobs(&connection).await?;
    Ok(jobs
        .into_iter()
        .filter_map(|job| {
            Some(PredictionRecord {
                program_sha256: job.program_sha256,
                workers: job.prediction.as_ref()?.workers,
                predicted: job.prediction?,
                measured: job.measured?,
            })
        })
        .collect())
}

fn records_of_this_machine(cache: &Path) -> Result<(Vec<PredictionRecord>, PathBuf)> {
    let path = predictions_path(cache);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut records = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) => unreadable += 1,
        }
    }
    if unreadable > 0 {
        eprintln!(
            "note: skipped {unreadable} records of {} in an older format",
            path.display()
        );
    }
    Ok((records, path))
}

pub async fn predictions(args: PredictionsArgs, cache: &Path) -> Result<()> {
    let (records, source) = match &args.coordinator {
        Some(url) => (records_of_coordinator(url, &args.token).await?, url.clone()),
        None => {
            let (records, path) = records_of_this_machine(cache)?;
            (records, path.display().to_string())
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!(
            "no finished jobs with predictions yet ({source}): jobs are predicted when a \
             device profile exists (`plait calibrate`)"
        );
        return Ok(());
    }
    println!(
        "{:<14} {:>6} {:>4} {:>7} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "program",
        "height",
        "segs",
        "workers",
        "T pred",
        "T meas",
        "T err",
        "L pred",
        "L meas",
        "L err"
    );
    let (mut t_abs, mut l_abs) = (0.0, 0.0);
    for r in &records {
        let (p, m) = (&r.predicted, &r.measured);
        let te = error_percent(p.latency_seconds, m.latency_seconds);
        let le = error_percent(p.work_seconds, m.work_seconds);
        t_abs += te.abs();
        l_abs += le.abs();
        println!(
            "{:<14} {:>6} {:>4} {:>7} {:>10.0} {:>10.0} {:>6.1}% {:>10.0} {:>10.0} {:>6.1}%",
            &r.program_sha256[..12.min(r.program_sha256.len())],
            p.segment_height,
            p.segments,
            r.workers,
            p.latency_seconds,
            m.latency_seconds,
            te,
            p.work_seconds,
            m.work_seconds,
            le
        );
    }
    let n = records.len() as f64;
    println!(
        "mean absolute error over {} jobs: T {:.1}%, L {:.1}%",
        records.len(),
        t_abs / n,
        l_abs / n
    );
    Ok(())
}
