//! Gate benchmark: what the coordinator's own work per task costs with real proofs, the ceiling
//! of a pool whose workers prove in about a second (GPUs).
//!
//! Reads the task proofs a job kept (`plait prove ... --keep-task-proofs DIR`: `plan.json` and
//! `task-N.proof`), and for every task:
//! - checks its proof the way the coordinator's gate does (the same backend calls), timing each
//!   check alone: seconds per segment and per node kind;
//! - counts the bytes that cross the coordinator for it: in, the proof; out, a segment's
//!   start-state checkpoint (the job is executed again with checkpoints to size them) or a
//!   node's children's proofs.
//!
//! Then checks every proof again on `--threads` threads at once, `--rounds` times, as the
//! coordinator does on its blocking threads, and prints the tasks per second one coordinator
//! sustains on this machine, and how many workers that proving `--worker-seconds` per task it
//! could feed. Run with `scripts/bench-gate.sh`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{atomic::AtomicUsize, atomic::Ordering, Arc},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use plait_core::{
    cost::node_kind, AggLayer, AggTreeShape, InputItemSource, JobId, ProgramInput, SegmentPlan,
    TaskGraph, TaskId, TaskKind,
};
use plait_prover::{
    openvm::OpenVmBackend, ProgramImage, ProofBlob, ProverBackend, ProvingParams, Verdict, VmConfig,
};

#[derive(Parser)]
struct Args {
    /// The folder `plait prove --keep-task-proofs` wrote.
    #[arg(long)]
    proofs: PathBuf,
    /// The guest ELF the job proved.
    #[arg(long)]
    program: PathBuf,
    /// The job's input, as `plait prove --input` takes it (repeatable).
    #[arg(long)]
    input: Vec<String>,
    #[arg(long)]
    segment_height: u32,
    #[arg(long, default_value = "rv32im")]
    vm_config: VmConfig,
    /// Threads checking at once (the coordinator's blocking pool uses every core).
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    threads: usize,
    /// Times every proof is checked in the parallel run.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// A worker's seconds per task, for how many such workers the gate keeps busy.
    #[arg(long, default_value_t = 1.0)]
    worker_seconds: f64,
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// One task's check, ready to run.
struct Check {
    kind: String,
    task: TaskId,
    proof: ProofBlob,
    bytes_out: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cache = args.cache_dir.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".cache/plait")
    });
    let backend = Arc::new(OpenVmBackend::new(&cache));
    let program = ProgramImage::new(
        std::fs::read(&args.program).with_context(|| format!("{}", args.program.display()))?,
    );
    let mut input = ProgramInput::default();
    for item in &args.input {
        input.items.push(match ProgramInput::parse_item(item)? {
            InputItemSource::Bytes(bytes) => bytes,
            InputItemSource::File(path) => std::fs::read(path).with_context(|| path.to_string())?,
        });
    }
    let params = ProvingParams {
        segment_height: args.segment_height,
        vm_config: args.vm_config,
        tree: AggTreeShape::default(),
        ..Default::default()
    };
    let plan: SegmentPlan = serde_json::from_slice(
        &std::fs::read(args.proofs.join("plan.json")).context("reading plan.json")?,
    )?;
    let graph = TaskGraph::new(plan.segments.len() as u32, params.tree)?;

    // Checkpoint sizes: what a segment task downloads.
    let started = Instant::now();
    let mut checkpoint_bytes = Vec::new();
    backend.execute_streaming(&program, &input, &params, Some(JobId(1)), &mut |cut| {
        checkpoint_bytes.push(cut.checkpoint.map_or(0, |c| c.len() as u64));
        Ok(())
    })?;
    eprintln!(
        "executed with checkpoints in {:.1} s: {} segments",
        started.elapsed().as_secs_f64(),
        checkpoint_bytes.len()
    );
    if checkpoint_bytes.len() != plan.segments.len() {
        bail!("the input does not make the kept plan's segments");
    }

    let read = |task: TaskId| -> Result<ProofBlob> {
        let path = args.proofs.join(format!("{task}.proof"));
        Ok(ProofBlob(
            std::fs::read(&path).with_context(|| format!("{}", path.display()))?,
        ))
    };
    let mut checks = Vec::new();
    for t in 0..graph.num_tasks() {
        let task = TaskId(t as u32);
        let (kind, bytes_out) = match graph.kind(task)? {
            TaskKind::ProveSegment { segment } => {
                ("segment".to_string(), checkpoint_bytes[segment as usize])
            }
            TaskKind::Aggregate { layer, .. } => {
                let children: u64 = graph
                    .children(task)?
                    .iter()
                    .map(|&c| read(c).map(|p| p.0.len() as u64))
                    .sum::<Result<u64>>()?;
                (node_kind(layer).to_string(), children)
            }
        };
        checks.push(Check {
            kind,
            task,
            proof: read(task)?,
            bytes_out,
        });
    }

    let check = |c: &Check| -> Verdict {
        match graph.kind(c.task).expect("task exists") {
            TaskKind::ProveSegment { segment } => {
                let last = segment as usize + 1 == plan.segments.len();
                backend
                    .check_segment_proof(
                        &program,
                        &params,
                        &plan.segments[segment as usize],
                        last.then_some(&plan.public_values[..]),
                        &c.proof,
                    )
                    .expect("the gate can check")
            }
            TaskKind::Aggregate { layer, .. } => {
                let (from, to) = graph.covers(c.task).expect("task exists");
                let first_child = graph.children(c.task).expect("task exists")[0];
                let child_layer: Option<AggLayer> = match graph.kind(first_child) {
                    Ok(TaskKind::Aggregate { layer, .. }) => Some(layer),
                    _ => None,
                };
                backend
                    .check_aggregate_proof(
                        &program,
                        &params,
                        layer,
                        child_layer,
                        &plan.segments[from as usize],
                        &plan.segments[to as usize - 1],
                        to as usize == plan.segments.len(),
                        &c.proof,
                    )
                    .expect("the gate can check")
            }
        }
    };

    // Warm the caches (keys, the loaded program) the coordinator holds between checks.
    let verdict = check(&checks[0]);
    if verdict != Verdict::Accepted {
        bail!("the first proof is rejected: {verdict:?}");
    }
    // One at a time: seconds per check, per kind.
    let mut by_kind: BTreeMap<&str, (usize, f64, u64, u64)> = BTreeMap::new();
    for c in &checks {
        let started = Instant::now();
        let verdict = check(c);
        let seconds = started.elapsed().as_secs_f64();
        if verdict != Verdict::Accepted {
            bail!("{} is rejected: {verdict:?}", c.task);
        }
        let entry = by_kind.entry(&c.kind).or_default();
        entry.0 += 1;
        entry.1 += seconds;
        entry.2 += c.proof.0.len() as u64;
        entry.3 += c.bytes_out;
    }
    println!(
        "{:>20} {:>5} {:>14} {:>12} {:>14}",
        "task kind", "tasks", "check s/task", "in KB/task", "out KB/task"
    );
    for (kind, (n, seconds, bytes_in, bytes_out)) in &by_kind {
        let n = *n as f64;
        println!(
            "{kind:>20} {n:>5} {:>14.4} {:>12.1} {:>14.1}",
            seconds / n,
            *bytes_in as f64 / n / 1e3,
            *bytes_out as f64 / n / 1e3
        );
    }

    // All at once, on every thread.
    let next = AtomicUsize::new(0);
    let total = checks.len() * args.rounds;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                assert_eq!(check(&checks[i % checks.len()]), Verdict::Accepted);
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let rate = total as f64 / seconds;
    println!(
        "{total} checks on {} threads in {seconds:.2} s: {rate:.1} tasks per second \
         (this job's mix: {} segments, {} nodes)",
        args.threads,
        plan.segments.len(),
        checks.len() - plan.segments.len()
    );
    println!(
        "workers proving {:.2} s per task this gate keeps busy: {:.0}",
        args.worker_seconds,
        rate * args.worker_seconds
    );
    Ok(())
}
