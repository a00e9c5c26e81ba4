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
    cost::{DeviceProfile, NodeCost, SegmentCost, PROFILE_FORMAT, PROFILE_FORMAT_VERSION},
    sim::{simulate, SimConfig, SimJob, SimOutcome},
    AggLayer, AggTreeShape, ProgramInput, SegmentPlan, TaskGraph,
};
use plait_prover::{openvm::OpenVmBackend, ProgramImage, ProofBlob, ProverBackend, ProvingParams};
use serde::{Deserialize, Serialize};

use super::openvm_backend;
use crate::{exit::BadInput, program_arg::ProgramArgs};

const FIB_GUEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guests/fib");

pub fn default_profile_path(cache: &Path) -> PathBuf {
    cache.join("device-profile.json")
}

/// Candidate heights, ascending, each once.
fn sorted(heights: &[u32]) -> Vec<u32> {
    let mut heights = heights.to_vec();
    heights.sort();
    heights.dedup();
    heights
}

// ---------------------------------------------------------------- calibrate

#[derive(Args)]
pub struct CalibrateArgs {
    /// Segment heights to measure (at least 3 for a useful model). The lowest also measures
    /// every aggregation node kind (leaves of 1 to 4 children).
    #[arg(long, default_value = "19,20,21", value_delimiter = ',')]
    heights: Vec<u32>,
    /// Where to write the profile (default: device-profile.json in the cache directory).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// A name for this device.
    #[arg(long)]
    device: Option<String>,
}

fn new_profile(name: String) -> DeviceProfile {
    let info = OpenVmBackend::new(PathBuf::new()).info();
    DeviceProfile {
        format: PROFILE_FORMAT.into(),
        format_version: PROFILE_FORMAT_VERSION,
        plait_version: env!("CARGO_PKG_VERSION").into(),
        backend: info.name,
        backend_version: info.version,
        device: name,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: crate::commands::worker::machine_memory_bytes(),
        tree: AggTreeShape::default(),
        segments: Vec::new(),
        nodes: Vec::new(),
    }
}

/// Runs one measured step: resets the peak RSS, runs `f`, returns its result, seconds and
/// this step's peak RSS.
fn measured<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, u64)> {
    plait_worker::reset_peak_rss();
    let started = Instant::now();
    let value = f()?;
    Ok((
        value,
        started.elapsed().as_secs_f64(),
        plait_worker::process_usage().peak_rss_bytes,
    ))
}

pub async fn calibrate(args: CalibrateArgs, cache: &Path) -> Result<()> {
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| default_profile_path(cache));
    let work = path.with_extension("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let device = args.device.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").map_or("device".into(), |h| h.trim().into())
    });
    // Resume: keep what an interrupted run measured, if it was made by this Plait.
    let mut profile = match std::fs::read(&path) {
        Ok(bytes) => {
            let old: DeviceProfile = serde_json::from_slice(&bytes)
                .map_err(|e| BadInput(format!("{} is not a profile: {e}", path.display())))?;
            let fresh = new_profile(device.clone());
            if old.plait_version == fresh.plait_version
                && old.backend_version == fresh.backend_version
            {
                eprintln!("resuming the calibration in {}", path.display());
                old
            } else {
                fresh
            }
        }
        Err(_) => new_profile(device),
    };
    let cache = cache.to_path_buf();
    tokio::task::spawn_blocking(move || {
        calibrate_blocking(&mut profile, &args.heights, &path, &work, &cache)
    })
    .await?
}

fn save(profile: &DeviceProfile, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(profile)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn calibrate_blocking(
    profile: &mut DeviceProfile,
    heights: &[u32],
    path: &Path,
    work: &Path,
    cache: &Path,
) -> Result<()> {
    let started = Instant::now();
    let backend = OpenVmBackend::new(cache);
    let program = crate::program_arg::load_program(Path::new(FIB_GUEST), cache)?;
    let steps = heights.len() + 8;
    let bar = indicatif::ProgressBar::new(steps as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed}")
            .expect("template"),
    );
    let say = |bar: &indicatif::ProgressBar, line: String| bar.suspend(|| eprintln!("{line}"));
    let lowest = heights[0];
    for &h in heights {
        let params = ProvingParams {
            segment_height: h,
            ..Default::default()
        };
        // About two segments: one full, which is what is measured.
        let n = 80_000u64 << (h.saturating_sub(19));
        let input = ProgramInput {
            items: vec![n.to_le_bytes().to_vec()],
        };
        bar.set_message(format!("keys and execution at height {h}"));
        backend.prepare_keys(&params)?;
        let plan = backend.execute(&program, &input, &params)?;
        if profile.segments.iter().any(|s| s.segment_height == h) {
            bar.inc(1);
            continue;
        }
        bar.set_message(format!("segment at height {h}"));
        let seg = &plan.segments[0];
        let ((proof, _), seconds, peak) = measured(|| {
            Ok(backend.prove_segment(&program, &input, &params, seg, plan.segments.len() == 1)?)
        })?;
        std::fs::write(work.join(format!("h{h}-segment-0.proof")), &proof.0)?;
        profile.segments.push(SegmentCost {
            segment_height: h,
            instructions: seg.num_insns,
            seconds,
            peak_rss_bytes: peak,
        });
        profile.segments.sort_by_key(|s| s.segment_height);
        save(profile, path)?;
        say(
            &bar,
            format!(
                "segment at height {h}: {} instructions in {seconds:.1} s, peak {:.2} GiB",
                seg.num_insns,
                peak as f64 / (1u64 << 30) as f64
            ),
        );
        bar.inc(1);
    }

    // Every node kind, at the lowest height: leaves of 1 to 4 segments, then the chain.
    let params = ProvingParams {
        segment_height: lowest,
        ..Default::default()
    };
    // Four segments, so that leaves of 1 to 4 children can be measured: a leaf's circuit grows
    // in power-of-two steps, so its cost is not linear in its children.
    let wide_input = ProgramInput {
        items: vec![(215_000u64 << lowest.saturating_sub(19))
            .to_le_bytes()
            .to_vec()],
    };
    let wide = backend.execute(&program, &wide_input, &params)?;
    let load =
        |name: &str| -> Option<ProofBlob> { std::fs::read(work.join(name)).ok().map(ProofBlob) };
    let mut segs = Vec::new();
    for (i, seg) in wide.segments.iter().enumerate().take(4) {
        let file = format!("h{lowest}-wide-segment-{i}.proof");
        let proof = match load(&file) {
            Some(p) => p,
            None => {
                bar.set_message(format!("segment {i} of the aggregation workload"));
                let last = i + 1 == wide.segments.len();
                let (proof, _) =
                    backend.prove_segment(&program, &wide_input, &params, seg, last)?;
                std::fs::write(work.join(&file), &proof.0)?;
                proof
            }
        };
        segs.push(proof);
    }
    bar.inc(1);
    let steps: [(&str, AggLayer, &str, Vec<&str>); 7] = [
        ("leaf", AggLayer::Leaf, "leaf-1", vec!["seg0"]),
        ("leaf", AggLayer::Leaf, "leaf-2", vec!["seg0", "seg1"]),
        (
            "leaf",
            AggLayer::Leaf,
            "leaf-3",
            vec!["seg0", "seg1", "seg2"],
        ),
        (
            "leaf",
            AggLayer::Leaf,
            "leaf-4",
            vec!["seg0", "seg1", "seg2", "seg3"],
        ),
        (
            "internal-for-leaf",
            AggLayer::InternalForLeaf,
            "ifl",
            vec!["leaf-2"],
        ),
        (
            "internal-recursive",
            AggLayer::InternalRecursive(0),
            "ir",
            vec!["ifl"],
        ),
        ("wrap", AggLayer::Wrap, "wrap", vec!["ir"]),
    ];
    for (kind, layer, name, children) in steps {
        let file = format!("h{lowest}-{name}.proof");
        let already = profile
            .nodes
            .iter()
            .any(|n| n.kind == kind && n.children == children.len() as u32);
        if already && load(&file).is_some() {
            bar.inc(1);
            continue;
        }
        let inputs: Vec<ProofBlob> = children
            .iter()
            .map(|c| match c.strip_prefix("seg") {
                Some(i) => segs
                    .get(i.parse::<usize>().expect("seg index"))
                    .cloned()
                    .context("the aggregation workload has fewer than 4 segments"),
                None => {
                    load(&format!("h{lowest}-{c}.proof")).with_context(|| format!("the {c} proof"))
                }
            })
            .collect::<Result<_>>()?;
        bar.set_message(format!("{layer} node with {} children", inputs.len()));
        let (proof, seconds, peak) = measured(|| Ok(backend.aggregate(&params, layer, &inputs)?))?;
        std::fs::write(work.join(&file), &proof.0)?;
        profile
            .nodes
            .retain(|n| !(n.kind == kind && n.children == inputs.len() as u32));
        profile.nodes.push(NodeCost {
            kind: kind.into(),
            children: inputs.len() as u32,
            seconds,
            peak_rss_bytes: peak,
        });
        save(profile, path)?;
        say(
            &bar,
            format!(
                "{layer} node, {} children: {seconds:.1} s, peak {:.2} GiB",
                inputs.len(),
                peak as f64 / (1u64 << 30) as f64
            ),
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!(
        "profile written to {} ({:.0} s this run)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------- plan

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    Latency,
    Cost,
    Deadline(f64),
}

pub fn parse_goal(text: &str) -> Result<Goal, String> {
    match text {
        "latency" => Ok(Goal::Latency),
        "cost" => Ok(Goal::Cost),
        _ => text
            .strip_prefix("deadline=")
            .and_then(|s| s.trim_end_matches('s').parse().ok())
            .map(Goal::Deadline)
            .ok_or_else(|| format!("{text:?}: expected latency, cost or deadline=SECONDS")),
    }
}

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
    #[arg(long, default_value = "latency", value_parser = parse_goal)]
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
}

/// The pool: its distinct profiles and, per worker, which profile it has.
pub struct Pool {
    pub profiles: Vec<DeviceProfile>,
    pub workers: Vec<usize>,
}

fn read_profile(path: &Path, tree: AggTreeShape) -> Result<DeviceProfile> {
    let bytes = std::fs::read(path).map_err(|e| {
        BadInput(format!(
            "cannot read device profile {}: {e}; run `plait calibrate` first",
            path.display()
        ))
    })?;
    let profile: DeviceProfile = serde_json::from_slice(&bytes)
        .map_err(|e| BadInput(format!("{} is not a device profile: {e}", path.display())))?;
    let info = OpenVmBackend::new(PathBuf::new()).info();
    profile
        .check(env!("CARGO_PKG_VERSION"), &info.name, &info.version, tree)
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

    pub fn pool(&self, cache: &Path, tree: AggTreeShape) -> Result<Pool> {
        let mut pool = Pool {
            profiles: Vec::new(),
            workers: Vec::new(),
        };
        if self.pool.is_empty() {
            let path = self
                .profile
                .clone()
                .unwrap_or_else(|| default_profile_path(cache));
            pool.profiles.push(read_profile(&path, tree)?);
            pool.workers = vec![0; self.workers.max(1)];
            return Ok(pool);
        }
        for entry in &self.pool {
            let (path, count) = match entry.rsplit_once(':') {
                Some((p, c)) if c.parse::<usize>().is_ok() => (p, c.parse().unwrap()),
                _ => (entry.as_str(), 1),
            };
            pool.profiles.push(read_profile(Path::new(path), tree)?);
            let index = pool.profiles.len() - 1;
            pool.workers.extend(std::iter::repeat_n(index, count));
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

/// One candidate segment height, executed and simulated.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub segment_height: u32,
    pub segments: usize,
    pub nodes_per_layer: Vec<(String, usize)>,
    pub segment_instructions: Vec<u64>,
    /// OpenVM's own estimate for the largest segment.
    pub openvm_segment_memory_bytes: u64,
    pub peak_task_memory_bytes: u64,
    pub devices_that_fit: Vec<String>,
    pub predicted_latency_seconds: Option<f64>,
    pub predicted_work_seconds: Option<f64>,
    pub lower_bound_seconds: Option<f64>,
    pub utilization: Option<f64>,
    pub work_by_phase: Vec<(String, f64)>,
    /// Why the simulation could not run (no device holds a task).
    pub infeasible: Option<String>,
}

pub fn evaluate(
    plan: &SegmentPlan,
    height: u32,
    tree: AggTreeShape,
    pool: &Pool,
    config: SimConfig,
) -> Result<Candidate> {
    let instructions: Vec<u64> = plan.segments.iter().map(|s| s.num_insns).collect();
    let graph = TaskGraph::new(instructions.len() as u32, tree)?;
    let nodes_per_layer = graph
        .progress()
        .into_iter()
        .skip(1)
        .map(|(phase, _, total)| (phase, total))
        .collect();
    let job = SimJob {
        segment_instructions: &instructions,
        segment_height: height,
        tree,
    };
    let peak = |p: &DeviceProfile| {
        let nodes = graph
            .tree()
            .layers
            .iter()
            .flatten()
            .map(|n| p.node_memory(n.layer));
        nodes.chain([p.segment_memory(height)]).max().unwrap_or(0)
    };
    let devices_that_fit = pool
        .profiles
        .iter()
        .filter(|p| peak(p) <= p.memory_bytes)
        .map(|p| p.device.clone())
        .collect();
    let mut candidate = Candidate {
        segment_height: height,
        segments: instructions.len(),
        nodes_per_layer,
        openvm_segment_memory_bytes: plan
            .segments
            .iter()
            .map(|s| s.memory_estimate_bytes)
            .max()
            .unwrap_or(0),
        peak_task_memory_bytes: peak(&pool.profiles[0]),
        segment_instructions: instructions.clone(),
        devices_that_fit,
        predicted_latency_seconds: None,
        predicted_work_seconds: None,
        lower_bound_seconds: None,
        utilization: None,
        work_by_phase: Vec::new(),
        infeasible: None,
    };
    match simulate(&job, &pool.profiles, &pool.workers, config) {
        Ok(SimOutcome {
            latency_seconds,
            work_seconds,
            lower_bound_seconds,
            utilization,
            work_by_phase,
            ..
        }) => {
            candidate.predicted_latency_seconds = Some(latency_seconds);
            candidate.predicted_work_seconds = Some(work_seconds);
            candidate.lower_bound_seconds = Some(lower_bound_seconds);
            candidate.utilization = Some(utilization);
            candidate.work_by_phase = work_by_phase;
        }
        Err(e) => candidate.infeasible = Some(e.to_string()),
    }
    Ok(candidate)
}

/// Picks a candidate for the goal; returns its index and the reason.
pub fn recommend(candidates: &[Candidate], goal: Goal) -> Result<(usize, String)> {
    let feasible: Vec<(usize, f64, f64)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.predicted_latency_seconds?, c.predicted_work_seconds?)))
        .collect();
    if feasible.is_empty() {
        return Err(BadInput(format!(
            "no candidate segment height fits any device of the pool: {}. Use smaller segment \
             heights (--heights) or add devices with more memory",
            candidates
                .iter()
                .filter_map(|c| c.infeasible.clone())
                .next()
                .unwrap_or_default()
        ))
        .into());
    }
    let by = |key: fn(&(usize, f64, f64)) -> f64| {
        *feasible
            .iter()
            .min_by(|a, b| key(a).total_cmp(&key(b)))
            .expect("non-empty")
    };
    let fastest = by(|c| c.1);
    let cheapest = by(|c| c.2);
    let h = |i: usize| candidates[i].segment_height;
    Ok(match goal {
        Goal::Latency => (
            fastest.0,
            format!(
                "height {} has the lowest predicted latency, {:.0} s (the cheapest, height {}, \
                 would take {:.0} s for {:.0} s of work instead of {:.0} s)",
                h(fastest.0),
                fastest.1,
                h(cheapest.0),
                cheapest.1,
                cheapest.2,
                fastest.2
            ),
        ),
        Goal::Cost => (
            cheapest.0,
            format!(
                "height {} needs the least proving work, {:.0} s (the fastest, height {}, \
                 would finish in {:.0} s instead of {:.0} s)",
                h(cheapest.0),
                cheapest.2,
                h(fastest.0),
                fastest.1,
                cheapest.1
            ),
        ),
        Goal::Deadline(limit) => {
            match feasible
                .iter()
                .filter(|c| c.1 <= limit)
                .min_by(|a, b| a.2.total_cmp(&b.2))
            {
                Some(c) => (
                    c.0,
                    format!(
                        "height {} is the cheapest that meets the {limit:.0} s deadline: \
                         {:.0} s predicted, {:.0} s of work",
                        h(c.0),
                        c.1,
                        c.2
                    ),
                ),
                None => (
                    fastest.0,
                    format!(
                        "no height meets the {limit:.0} s deadline; height {} is the fastest \
                         at {:.0} s predicted",
                        h(fastest.0),
                        fastest.1
                    ),
                ),
            }
        }
    })
}

/// Executes the program at every candidate height and simulates each.
pub async fn candidates(
    backend: Arc<dyn ProverBackend>,
    program: &ProgramImage,
    input: &ProgramInput,
    base: ProvingParams,
    pool_args: &PoolArgs,
    pool: &Pool,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for h in sorted(&pool_args.heights) {
        let params = ProvingParams {
            segment_height: h,
            ..base
        };
        let (b, p, i) = (backend.clone(), program.clone(), input.clone());
        let started = Instant::now();
        let plan = tokio::task::spawn_blocking(move || {
            b.prepare_keys(&params)?;
            b.execute(&p, &i, &params)
        })
        .await??;
        let execution = started.elapsed().as_secs_f64();
        out.push(evaluate(
            &plan,
            h,
            base.tree,
            pool,
            pool_args.sim_config(execution),
        )?);
    }
    Ok(out)
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
    let params = args.program.params.params();
    let pool = args.pool.pool(cache, params.tree)?;
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

/// Simulates each candidate on pools of several sizes and draws T and L against n.
fn plot(
    candidates: &[Candidate],
    pool: &Pool,
    pool_args: &PoolArgs,
    tree: AggTreeShape,
    sizes: &[usize],
    path: &Path,
) -> Result<()> {
    let mut series = Vec::new();
    for &size in sizes {
        let sized = Pool {
            profiles: pool.profiles.clone(),
            workers: (0..size)
                .map(|i| pool.workers[i % pool.workers.len()])
                .collect(),
        };
        let mut points = Vec::new();
        for c in candidates {
            let job = SimJob {
                segment_instructions: &c.segment_instructions,
                segment_height: c.segment_height,
                tree,
            };
            if let Ok(out) = simulate(
                &job,
                &sized.profiles,
                &sized.workers,
                pool_args.sim_config(0.0),
            ) {
                points.push((c.segments as f64, out.latency_seconds, out.work_seconds));
            }
        }
        series.push((format!("{size} workers"), points));
    }
    std::fs::write(path, crate::svg_plot::two_panels(&series))
        .with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------- predictions

/// One job's prediction and outcome, appended by `plait prove` to `predictions.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub program_sha256: String,
    pub segment_height: u32,
    pub segments: usize,
    pub workers: usize,
    pub predicted_latency_seconds: f64,
    pub measured_latency_seconds: f64,
    pub predicted_work_seconds: f64,
    pub measured_work_seconds: f64,
    /// (phase, predicted work s, measured work s).
    pub phases: Vec<(String, f64, f64)>,
}

pub fn predictions_path(cache: &Path) -> PathBuf {
    cache.join("predictions.jsonl")
}

#[derive(Args)]
pub struct PredictionsArgs {
    #[arg(long)]
    json: bool,
}

pub fn error_percent(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured * 100.0
}

pub async fn predictions(args: PredictionsArgs, cache: &Path) -> Result<()> {
    let path = predictions_path(cache);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let records: Vec<PredictionRecord> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("no predictions recorded yet ({}): `plait prove` records one per job when a device profile exists", path.display());
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
        let (te, le) = (
            error_percent(r.predicted_latency_seconds, r.measured_latency_seconds),
            error_percent(r.predicted_work_seconds, r.measured_work_seconds),
        );
        t_abs += te.abs();
        l_abs += le.abs();
        println!(
            "{:<14} {:>6} {:>4} {:>7} {:>10.0} {:>10.0} {:>6.1}% {:>10.0} {:>10.0} {:>6.1}%",
            &r.program_sha256[..12],
            r.segment_height,
            r.segments,
            r.workers,
            r.predicted_latency_seconds,
            r.measured_latency_seconds,
            te,
            r.predicted_work_seconds,
            r.measured_work_seconds,
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
