//! A discrete-event simulation of one job on a pool of workers, driving the task graph with
//! the coordinator's own scheduling rule ([`TaskGraph::next_ready`]): each idle worker takes
//! the first ready task that fits its memory, in the coordinator's order.
//!
//! In a pool of unlike devices (GPUs beside CPUs), idle workers are served fastest first, and a
//! slower worker leaves a task to the faster devices when they would clear every ready task
//! before it finished this one: a CPU beside GPUs then proves segments only while the queue is
//! long, and aggregation nodes (the critical path: each layer waits for the one below) go to
//! the GPUs.
//!
//! Task durations come from each worker's device profile ([`DeviceProfile`]); a worker's first
//! node of each kind also loads that kind's prover; attempts fail at a given rate (and are
//! retried, their work counted); every task pays a transfer time.

use std::{cmp::Ordering, collections::BinaryHeap};

use crate::{
    cost::{DeviceProfile, TraceCostFit},
    AggTreeShape, TaskGraph, TaskId, TaskKind, TraceSize, TreeShapeError,
};

/// What the simulation assumes beyond the job and the pool.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// Executing and planning before the first task (seconds).
    pub execution_seconds: f64,
    /// Added to every task (moving inputs and proofs).
    pub transfer_seconds: f64,
    /// Probability that an attempt fails at its end and must be redone.
    pub failure_rate: f64,
    /// Seed of the failure draws (the same seed gives the same run).
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            execution_seconds: 0.0,
            transfer_seconds: 0.0,
            failure_rate: 0.0,
            seed: 1,
        }
    }
}

/// What a simulated run predicts.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOutcome {
    /// Wall time from submission to the root proof (T).
    pub latency_seconds: f64,
    /// Proving seconds summed over every attempt (L).
    pub work_seconds: f64,
    /// Busy fraction of the workers between the first task and the last.
    pub utilization: f64,
    /// The longest chain of tasks, each on the fastest device.
    pub critical_path_seconds: f64,
    /// No schedule can beat `max(execution + L_fastest / workers, critical path)`.
    pub lower_bound_seconds: f64,
    /// Attempts that failed and were redone.
    pub failed_attempts: u64,
    /// Proving seconds per phase (`segments`, then each layer), summed over attempts.
    pub work_by_phase: Vec<(String, f64)>,
}

/// Why a job cannot be simulated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    /// The tree shape cannot make a tree.
    #[error(transparent)]
    Tree(#[from] TreeShapeError),
    /// The pool has no workers.
    #[error("the pool has no workers")]
    NoWorkers,
    /// No device's usable memory holds a ready task.
    #[error(
        "no device in the pool can hold {task} ({need} bytes); the largest lets a task use \
         {largest} (nine tenths of its memory)"
    )]
    NothingFits {
        /// The task, in words.
        task: String,
        /// What it needs, in bytes.
        need: u64,
        /// The most usable memory of any device in the pool.
        largest: u64,
    },
}

/// The job: its segments' instruction counts and segment height, and its tree shape.
pub struct SimJob<'a> {
    /// Instructions of each segment.
    pub segment_instructions: &'a [u64],
    /// Per segment, its trace size where the executor measured it (empty where none is
    /// known): a profile with a trace fit costs such segments from it.
    pub segment_sizes: &'a [Option<TraceSize>],
    /// The segment height the job is cut at.
    pub segment_height: u32,
    /// Its aggregation tree shape.
    pub tree: AggTreeShape,
}

/// A device's profile with its trace fit, fitted once per simulation.
struct Device<'a> {
    profile: &'a DeviceProfile,
    fit: Option<TraceCostFit>,
    /// Per task id, the size of its proof as this profile predicts it (see [`proof_bytes`]):
    /// computed once, as a node's cost asks for its whole subtree's.
    proof_bytes: Vec<Option<u64>>,
}

impl<'a> Device<'a> {
    fn new(profile: &'a DeviceProfile, graph: &TaskGraph, job: &SimJob) -> Self {
        Self {
            profile,
            fit: profile.trace_fit(),
            proof_bytes: proof_bytes(graph, job, profile),
        }
    }
}

fn segment_size(job: &SimJob, segment: u32) -> Option<TraceSize> {
    job.segment_sizes.get(segment as usize).copied().flatten()
}

fn task_seconds(graph: &TaskGraph, job: &SimJob, d: &Device, task: TaskId) -> f64 {
    let p = d.profile;
    match graph.kind(task).expect("task exists") {
        TaskKind::ProveSegment { segment } => match (segment_size(job, segment), d.fit) {
            (Some(size), Some(fit)) => fit.seconds(size),
            _ => p.segment_seconds(
                job.segment_height,
                job.segment_instructions[segment as usize],
            ),
        },
        TaskKind::Aggregate { layer, .. } => {
            let children = graph.children(task).expect("task exists").len() as u32;
            p.node_seconds(layer, children, child_proof_bytes(graph, d, task))
        }
    }
}

fn task_memory(graph: &TaskGraph, job: &SimJob, d: &Device, task: TaskId) -> u64 {
    let p = d.profile;
    match graph.kind(task).expect("task exists") {
        TaskKind::ProveSegment { segment } => match (segment_size(job, segment), d.fit) {
            (Some(size), Some(fit)) => fit.memory_bytes(size),
            _ => p.segment_memory(job.segment_height),
        },
        TaskKind::Aggregate { layer, .. } => {
            let children = graph.children(task).expect("task exists").len() as u32;
            p.node_memory(layer, children, child_proof_bytes(graph, d, task))
        }
    }
}

/// A node's children's proof bytes, as the device's profile predicts them.
fn child_proof_bytes(graph: &TaskGraph, d: &Device, task: TaskId) -> Option<u64> {
    let children = graph.children(task).expect("task exists");
    children.iter().map(|c| d.proof_bytes[c.0 as usize]).sum()
}

/// Per task id, the size of its proof as `p` predicts it: a segment's from its trace size
/// ([`DeviceProfile::segment_proof_bytes`]), a node's from its children's
/// ([`DeviceProfile::node_proof_bytes`]); `None` where the profile measured no proof sizes.
fn proof_bytes(graph: &TaskGraph, job: &SimJob, p: &DeviceProfile) -> Vec<Option<u64>> {
    let mut sizes: Vec<Option<Option<u64>>> = vec![None; graph.num_tasks()];
    fn size_of(
        graph: &TaskGraph,
        job: &SimJob,
        p: &DeviceProfile,
        task: TaskId,
        sizes: &mut Vec<Option<Option<u64>>>,
    ) -> Option<u64> {
        if let Some(known) = sizes[task.0 as usize] {
            return known;
        }
        let size = match graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => {
                p.segment_proof_bytes(job.segment_height, segment_size(job, segment))
            }
            TaskKind::Aggregate { layer, .. } => {
                let children = graph.children(task).expect("task exists").to_vec();
                let bytes: Option<u64> = children
                    .iter()
                    .map(|&c| size_of(graph, job, p, c, sizes))
                    .sum();
                p.node_proof_bytes(layer, children.len() as u32, bytes)
            }
        };
        sizes[task.0 as usize] = Some(size);
        size
    }
    (0..graph.num_tasks() as u32)
        .map(|t| size_of(graph, job, p, TaskId(t), &mut sizes))
        .collect()
}

/// One task of a job as a profile predicts it, before any worker measured anything: what the
/// coordinator costs and places it by.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TaskPrediction {
    /// The task's id in the job's task graph (as in `plait prove --timings-json`).
    pub task: u32,
    /// `segments`, or the node's layer (`leaf`, `internal-for-leaf`, …).
    pub phase: String,
    /// Proving seconds, without the prover load a worker's first node of a kind also pays.
    pub seconds: f64,
    /// Peak memory (device memory on a GPU).
    pub peak_bytes: u64,
    /// The size of the proof it makes; `None` where the profile measured no proof sizes.
    pub proof_bytes: Option<u64>,
}

/// Every task of `job` as `profile` predicts it, in task id order.
pub fn predict_tasks(
    job: &SimJob,
    profile: &DeviceProfile,
) -> Result<Vec<TaskPrediction>, TreeShapeError> {
    let graph = TaskGraph::new(job.segment_instructions.len() as u32, job.tree)?;
    let device = Device::new(profile, &graph, job);
    Ok((0..graph.num_tasks() as u32)
        .map(TaskId)
        .map(|task| TaskPrediction {
            task: task.0,
            phase: match graph.kind(task).expect("task exists") {
                TaskKind::ProveSegment { .. } => "segments".to_string(),
                TaskKind::Aggregate { layer, .. } => layer.to_string(),
            },
            seconds: task_seconds(&graph, job, &device, task),
            peak_bytes: task_memory(&graph, job, &device, task),
            proof_bytes: device.proof_bytes[task.0 as usize],
        })
        .collect())
}

#[derive(PartialEq)]
struct Finish {
    at: f64,
    worker: usize,
    task: TaskId,
    failed: bool,
}

impl Eq for Finish {}
impl PartialOrd for Finish {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Finish {
    // Earliest first (BinaryHeap is a max-heap); ties by worker for determinism.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then(other.worker.cmp(&self.worker))
    }
}

/// Simulates `job` on `workers` (each an index into `profiles`).
pub fn simulate(
    job: &SimJob,
    profiles: &[DeviceProfile],
    workers: &[usize],
    config: SimConfig,
) -> Result<SimOutcome, SimError> {
    if workers.is_empty() {
        return Err(SimError::NoWorkers);
    }
    let mut graph = TaskGraph::new(job.segment_instructions.len() as u32, job.tree)?;
    let devices: Vec<Device> = profiles
        .iter()
        .map(|profile| Device::new(profile, &graph, job))
        .collect();
    let mut rng = config.seed.max(1);
    let mut next_random = move || {
        // xorshift64*: deterministic for a seed.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut now = config.execution_seconds;
    let mut idle: Vec<usize> = (0..workers.len()).collect();
    let mut running = BinaryHeap::new();
    let (mut work, mut busy, mut failed_attempts) = (0.0, 0.0, 0u64);
    let mut work_by_phase: Vec<(String, f64)> = graph
        .progress()
        .into_iter()
        .map(|(phase, ..)| (phase, 0.0))
        .collect();
    // Fastest first: a device's speed is its time for a full segment at the job's height.
    let speed = |w: usize| {
        let p = &profiles[workers[w]];
        p.segment_seconds(
            job.segment_height,
            p.full_segment_instructions(job.segment_height),
        )
    };
    let mut of_profile = vec![0usize; profiles.len()];
    for &p in workers {
        of_profile[p] += 1;
    }
    let heterogeneous = of_profile.iter().filter(|&&n| n > 0).count() > 1;
    // The node kinds whose prover each worker has loaded: its first node of a kind pays for it.
    let mut loaded: Vec<Vec<&'static str>> = vec![Vec::new(); workers.len()];
    while !graph.is_complete() {
        // Hand out work, fastest idle worker first, as the coordinator answers claims.
        idle.sort_by(|&a, &b| speed(a).total_cmp(&speed(b)).then(a.cmp(&b)));
        let mut still_idle = Vec::with_capacity(idle.len());
        for w in idle {
            let d = &devices[workers[w]];
            let fits =
                |t: TaskId| task_memory(&graph, job, d, t) <= d.profile.usable_memory_bytes();
            // Whether this worker should take `t`: not if the devices faster at it would
            // clear every ready task before this one finished it.
            let ready = graph.ready_count() as f64;
            let worth_taking = |t: TaskId| {
                if !heterogeneous {
                    return true;
                }
                let mine = task_seconds(&graph, job, d, t);
                let faster_rate: f64 = devices
                    .iter()
                    .zip(&of_profile)
                    .filter(|&(q, &n)| {
                        n > 0 && task_memory(&graph, job, q, t) <= q.profile.usable_memory_bytes()
                    })
                    .map(|(q, &n)| (n, task_seconds(&graph, job, q, t)))
                    .filter(|&(_, theirs)| theirs < mine)
                    .map(|(n, theirs)| n as f64 / theirs.max(f64::MIN_POSITIVE))
                    .sum();
                faster_rate == 0.0 || mine <= ready / faster_rate
            };
            match graph.next_ready(|t| fits(t) && worth_taking(t)) {
                Some(task) => {
                    graph.start(task).expect("ready");
                    let mut seconds = task_seconds(&graph, job, d, task);
                    let phase = match graph.kind(task).expect("task exists") {
                        TaskKind::ProveSegment { .. } => "segments".to_string(),
                        TaskKind::Aggregate { layer, .. } => {
                            let kind = crate::cost::node_kind(layer);
                            if !loaded[w].contains(&kind) {
                                loaded[w].push(kind);
                                seconds += d.profile.prover_load_seconds(layer);
                            }
                            layer.to_string()
                        }
                    };
                    work += seconds;
                    if let Some(entry) = work_by_phase.iter_mut().find(|(p, _)| *p == phase) {
                        entry.1 += seconds;
                    }
                    busy += seconds + config.transfer_seconds;
                    running.push(Finish {
                        at: now + seconds + config.transfer_seconds,
                        worker: w,
                        task,
                        failed: next_random() < config.failure_rate,
                    });
                }
                None => still_idle.push(w),
            }
        }
        idle = still_idle;
        let Some(done) = running.pop() else {
            // Nothing runs and nothing can start: no device holds a ready task.
            let task = graph
                .ready_tasks()
                .next()
                .expect("an incomplete graph has work");
            let need = task_memory(&graph, job, &devices[workers[0]], task);
            let largest = workers
                .iter()
                .map(|&w| profiles[w].usable_memory_bytes())
                .max()
                .unwrap_or(0);
            let what = match graph.kind(task).expect("task exists") {
                TaskKind::ProveSegment { .. } => {
                    format!("a segment at segment height {}", job.segment_height)
                }
                TaskKind::Aggregate { layer, .. } => format!("a {layer} node"),
            };
            return Err(SimError::NothingFits {
                task: what,
                need,
                largest,
            });
        };
        now = done.at;
        if done.failed {
            failed_attempts += 1;
            graph.retry(done.task).expect("running");
        } else {
            graph.complete(done.task).expect("running");
        }
        idle.push(done.worker);
        idle.sort();
    }

    // Critical path and the fastest device's total work, for the lower bound.
    let fastest = |t: TaskId| {
        devices
            .iter()
            .map(|d| task_seconds(&graph, job, d, t))
            .fold(f64::INFINITY, f64::min)
    };
    let n = graph.num_tasks();
    let mut finish = vec![0.0f64; n];
    let mut total_fastest = 0.0;
    for t in 0..n {
        let task = TaskId(t as u32);
        let children_done = graph
            .children(task)
            .expect("task exists")
            .iter()
            .map(|c| finish[c.0 as usize])
            .fold(0.0, f64::max);
        let seconds = fastest(task);
        total_fastest += seconds;
        finish[t] = children_done + seconds + config.transfer_seconds;
    }
    let critical = config.execution_seconds + finish[n - 1];
    let span = (now - config.execution_seconds).max(f64::MIN_POSITIVE);
    Ok(SimOutcome {
        latency_seconds: now,
        work_seconds: work,
        utilization: busy / (span * workers.len() as f64),
        critical_path_seconds: critical,
        lower_bound_seconds: critical
            .max(config.execution_seconds + total_fastest / workers.len() as f64),
        failed_attempts,
        work_by_phase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::tests::{gpu_profile, profile};
    use crate::AggLayer;

    fn job(segments: &[u64]) -> SimJob<'_> {
        SimJob {
            segment_instructions: segments,
            segment_sizes: &[],
            segment_height: 19,
            tree: AggTreeShape::default(),
        }
    }

    /// A worker loads a node kind's prover once, before its first node of that kind: two
    /// leaves on one worker pay the leaf's load once, on two workers twice.
    #[test]
    fn each_worker_loads_a_kinds_prover_once() {
        let segments = [800_000u64; 8];
        let run = |p: &DeviceProfile, workers: &[usize]| {
            simulate(&job(&segments), &[p.clone()], workers, SimConfig::default()).unwrap()
        };
        let phase = |out: &SimOutcome, name: &str| {
            out.work_by_phase
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, s)| *s)
                .unwrap()
        };
        let warm = profile();
        let mut cold = warm.clone();
        cold.prover_load_seconds = [("leaf".to_string(), 10.0), ("wrap".to_string(), 3.0)]
            .into_iter()
            .collect();
        let (one_warm, one_cold) = (run(&warm, &[0]), run(&cold, &[0]));
        assert_eq!(phase(&one_cold, "leaf"), phase(&one_warm, "leaf") + 10.0);
        assert_eq!(phase(&one_cold, "wrap"), phase(&one_warm, "wrap") + 3.0);
        assert_eq!(one_cold.latency_seconds, one_warm.latency_seconds + 13.0);
        let two_cold = run(&cold, &[0, 0]);
        assert_eq!(phase(&two_cold, "leaf"), phase(&one_warm, "leaf") + 20.0);
    }

    /// With proof sizes in the profile, a leaf costs what its children's predicted proofs
    /// say: heavier segments (more main cells) make a slower leaf than the children count
    /// alone would.
    #[test]
    fn a_leaf_is_simulated_by_its_childrens_predicted_proofs() {
        let mut p = profile();
        for (s, width) in p.segments.iter_mut().zip([100u64, 200]) {
            s.segment_height = 19;
            s.trace_size = Some(TraceSize {
                main_cells: width << 19,
                ..Default::default()
            });
            s.proof_bytes = width * 10_000; // 1 MB and 2 MB
        }
        for (n, mb) in p
            .nodes
            .iter_mut()
            .filter(|n| n.kind == "leaf")
            .zip([1u64, 2])
        {
            n.child_proof_bytes = mb * 1_000_000; // leaf-1: 60 s, leaf-2: 80 s
        }
        let profiles = vec![p];
        let segments = [800_000u64, 800_000];
        let heavy = [Some(TraceSize {
            main_cells: 300 << 19, // 3 MB of proof each
            ..Default::default()
        }); 2];
        let sized = SimJob {
            segment_sizes: &heavy,
            ..job(&segments)
        };
        let leaf = |job: &SimJob| {
            let out = simulate(job, &profiles, &[0], SimConfig::default()).unwrap();
            out.work_by_phase
                .iter()
                .find(|(p, _)| p == "leaf")
                .unwrap()
                .1
        };
        // 40 s + 20 s per MB over 6 MB of children, against the 2-child leaf's 80 s.
        assert!((leaf(&sized) - 160.0).abs() < 1e-6, "{}", leaf(&sized));
        // Without trace sizes each segment's proof is the measured mean, 1.5 MB.
        assert!((leaf(&job(&segments)) - 100.0).abs() < 1e-6);
    }

    #[test]
    fn one_worker_does_everything_in_sequence() {
        let p = vec![profile()];
        let segments = [800_000u64, 800_000, 400_000];
        let out = simulate(&job(&segments), &p, &[0], SimConfig::default()).unwrap();
        // 50 + 50 + 25 (segments) + leaf(3) 100 + ifl(1) 70 + ir(1) 60 + wrap 36.
        let expected = 125.0 + 100.0 + 70.0 + 60.0 + 36.0;
        assert!((out.work_seconds - expected).abs() < 1e-9, "{out:?}");
        assert!((out.latency_seconds - expected).abs() < 1e-9);
        assert!((out.utilization - 1.0).abs() < 1e-9);
        assert!(out.lower_bound_seconds <= out.latency_seconds + 1e-9);
    }

    #[test]
    fn more_workers_cut_latency_down_to_the_critical_path() {
        let p = vec![profile()];
        let segments = vec![800_000u64; 12];
        let one = simulate(&job(&segments), &p, &[0], SimConfig::default()).unwrap();
        let many = simulate(&job(&segments), &p, &[0; 12], SimConfig::default()).unwrap();
        assert_eq!(one.work_seconds, many.work_seconds);
        assert!(
            many.latency_seconds < one.latency_seconds / 3.0,
            "{one:?} {many:?}"
        );
        // With a worker per segment, T is exactly the critical path.
        assert!((many.latency_seconds - many.critical_path_seconds).abs() < 1e-9);
    }

    #[test]
    fn failures_add_work_and_small_devices_are_refused() {
        let p = vec![profile()];
        let segments = vec![800_000u64; 8];
        let config = SimConfig {
            failure_rate: 0.3,
            seed: 42,
            ..SimConfig::default()
        };
        let clean = simulate(&job(&segments), &p, &[0; 4], SimConfig::default()).unwrap();
        let flaky = simulate(&job(&segments), &p, &[0; 4], config).unwrap();
        assert!(flaky.failed_attempts > 0);
        assert!(flaky.work_seconds > clean.work_seconds);
        let mut small = profile();
        small.memory_bytes = 3 << 30; // holds a segment (2 GiB), not a leaf (6 GiB)
        let err = simulate(&job(&segments), &[small], &[0], SimConfig::default()).unwrap_err();
        assert!(matches!(err, SimError::NothingFits { .. }), "{err}");
        assert!(err.to_string().contains("leaf"), "{err}");
    }

    #[test]
    fn slower_devices_leave_tasks_to_faster_ones_unless_the_queue_is_long() {
        let profiles = vec![gpu_profile(), profile()];
        let segments = vec![800_000u64; 12];
        let config = SimConfig::default();
        // One GPU and eight CPUs: the CPUs prove segments beside the GPU, but every node (a
        // second or less on the GPU, a minute on a CPU) waits for the GPU.
        let mixed: Vec<usize> = std::iter::once(0).chain([1; 8]).collect();
        let out = simulate(&job(&segments), &profiles, &mixed, config).unwrap();
        let gpu = &profiles[0];
        let expected_nodes = [
            ("leaf", 3.0 * gpu.node_seconds(AggLayer::Leaf, 4, None)),
            (
                "internal-for-leaf",
                gpu.node_seconds(AggLayer::InternalForLeaf, 3, None),
            ),
            (
                "internal-recursive.0",
                gpu.node_seconds(AggLayer::InternalRecursive(0), 1, None),
            ),
            ("wrap", gpu.node_seconds(AggLayer::Wrap, 1, None)),
        ];
        for (phase, seconds) in expected_nodes {
            let work = out
                .work_by_phase
                .iter()
                .find(|(p, _)| p == phase)
                .map(|(_, w)| *w);
            let work = work.unwrap_or_else(|| panic!("no {phase} in {:?}", out.work_by_phase));
            assert!(
                (work - seconds).abs() < 1e-9,
                "{phase}: {work} s, GPU alone {seconds} s"
            );
        }
        // The CPUs only help: the mix is no slower than the GPU alone, and far faster than
        // nine CPUs.
        let gpu_alone = simulate(&job(&segments), &profiles, &[0], config).unwrap();
        let cpus = simulate(&job(&segments), &profiles, &[1; 9], config).unwrap();
        assert!(
            out.latency_seconds <= gpu_alone.latency_seconds + 1e-9,
            "{out:?}"
        );
        assert!(
            out.latency_seconds < cpus.latency_seconds / 10.0,
            "{out:?} {cpus:?}"
        );
    }
}
