//! Choosing a segment height. Each candidate height's segment plan (from executing the
//! program, which the caller does) is simulated on a pool of profiled devices, and the user's
//! goal picks one. The chosen candidate becomes the job's [`Prediction`], which the job's
//! measured outcome is later compared with.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    cost::DeviceProfile,
    sim::{simulate, SimConfig, SimJob, SimOutcome},
    AggLayer, AggTreeShape, SegmentPlan, TaskGraph, TraceSize, TreeShapeError,
};

/// What a segment height is chosen for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// The lowest predicted latency T.
    Latency,
    /// The least total proving work L.
    Cost,
    /// The least work whose predicted latency meets the deadline (seconds).
    Deadline(f64),
}

impl FromStr for Goal {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "latency" => Ok(Goal::Latency),
            "cost" => Ok(Goal::Cost),
            _ => text
                .strip_prefix("deadline=")
                .and_then(|s| s.trim_end_matches('s').parse().ok())
                .filter(|s: &f64| *s > 0.0)
                .map(Goal::Deadline)
                .ok_or_else(|| {
                    format!("goal {text:?}: expected latency, cost or deadline=SECONDS")
                }),
        }
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Goal::Latency => write!(f, "latency"),
            Goal::Cost => write!(f, "cost"),
            Goal::Deadline(s) => write!(f, "deadline={s}"),
        }
    }
}

impl Serialize for Goal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Goal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// On the wire a goal is its text: `latency`, `cost` or `deadline=SECONDS`.
impl utoipa::PartialSchema for Goal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(r"^(latency|cost|deadline=[0-9]+(\.[0-9]+)?s?)$"))
            .description(Some(
                "`latency`, `cost` or `deadline=SECONDS`: what the segment height is chosen for",
            ))
            .into()
    }
}

impl ToSchema for Goal {}

/// A pool to plan for: its distinct device profiles and, per worker, which profile it has.
#[derive(Clone, Debug)]
pub struct Pool {
    /// The distinct device profiles.
    pub profiles: Vec<DeviceProfile>,
    /// Per worker, the index of its profile in `profiles`.
    pub workers: Vec<usize>,
}

impl Pool {
    /// No devices, no workers.
    pub fn empty() -> Self {
        Self {
            profiles: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// `workers` workers, all of one profile.
    pub fn uniform(profile: DeviceProfile, workers: usize) -> Self {
        Self {
            profiles: vec![profile],
            workers: vec![0; workers],
        }
    }

    /// (device name, workers of it), in profile order.
    pub fn devices(&self) -> Vec<(String, usize)> {
        self.profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.device.clone(),
                    self.workers.iter().filter(|&&w| w == i).count(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The workers whose profiles were measured under `vm_config` (profiles of other configs
    /// would mispredict its segments).
    pub fn of_vm_config(&self, vm_config: &str) -> Self {
        Self {
            profiles: self.profiles.clone(),
            workers: self
                .workers
                .iter()
                .copied()
                .filter(|&w| self.profiles[w].vm_config == vm_config)
                .collect(),
        }
    }

    /// The same mix of devices, with `size` workers.
    pub fn resized(&self, size: usize) -> Self {
        Self {
            profiles: self.profiles.clone(),
            workers: (0..size)
                .map(|i| self.workers[i % self.workers.len().max(1)])
                .collect(),
        }
    }
}

/// One candidate segment height, executed and simulated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    /// The candidate segment height.
    pub segment_height: u32,
    /// Segments the program cuts into at this height.
    pub segments: usize,
    /// (layer, nodes) for each aggregation layer.
    pub nodes_per_layer: Vec<(String, usize)>,
    /// Instructions of each segment.
    pub segment_instructions: Vec<u64>,
    /// Per segment, its trace size where the executor measured it (none for a height
    /// predicted from another height's execution).
    #[serde(skip)]
    pub segment_sizes: Vec<Option<TraceSize>>,
    /// Executing the program at this height (part of the predicted latency).
    pub execution_seconds: f64,
    /// The zkVM's own estimate for the largest segment.
    pub openvm_segment_memory_bytes: u64,
    /// The largest task's memory on the pool's first device.
    pub peak_task_memory_bytes: u64,
    /// The devices of the pool that can hold every task.
    pub devices_that_fit: Vec<String>,
    /// Predicted latency T, from submission to the final proof.
    pub predicted_latency_seconds: Option<f64>,
    /// Predicted work L, proving seconds over all tasks.
    pub predicted_work_seconds: Option<f64>,
    /// No schedule can finish sooner: `max(L / workers, critical path)`.
    pub lower_bound_seconds: Option<f64>,
    /// Busy fraction of the workers in the simulation.
    pub utilization: Option<f64>,
    /// Predicted proving seconds per phase: `segments`, then each layer.
    pub work_by_phase: Vec<(String, f64)>,
    /// Why the simulation could not run (no device holds a task).
    pub infeasible: Option<String>,
    /// The height whose execution this plan was predicted from (`None`: executed at its own
    /// height).
    #[serde(default)]
    pub predicted_from: Option<u32>,
}

/// Simulates the job `plan` describes (cut at `height`) on `pool`.
pub fn evaluate(
    plan: &SegmentPlan,
    height: u32,
    tree: AggTreeShape,
    pool: &Pool,
    config: SimConfig,
) -> Result<Candidate, TreeShapeError> {
    let instructions: Vec<u64> = plan.segments.iter().map(|s| s.num_insns).collect();
    let sizes: Vec<Option<TraceSize>> = plan.segments.iter().map(|s| s.trace_size).collect();
    let graph = TaskGraph::new(instructions.len() as u32, tree)?;
    let nodes_per_layer = graph
        .progress()
        .into_iter()
        .skip(1)
        .map(|(phase, _, total)| (phase, total))
        .collect();
    let job = SimJob {
        segment_instructions: &instructions,
        segment_sizes: &sizes,
        segment_height: height,
        tree,
    };
    let tree = graph.tree().expect("a planned graph is sealed");
    // The largest task: a node, or the segment that needs the most (by its trace size where
    // both it and the profile's fit are known).
    let peak = |p: &DeviceProfile| {
        // A leaf by the proofs it verifies where the profile can predict them; every other
        // node by the most its kind was measured to need.
        let nodes = tree.layers.iter().flatten().map(|n| match n.layer {
            AggLayer::Leaf => {
                let (from, to) = n.covers;
                let bytes: Option<u64> = (from..to)
                    .map(|s| {
                        p.segment_proof_bytes(height, sizes.get(s as usize).copied().flatten())
                    })
                    .sum();
                match bytes {
                    Some(_) => p.node_memory(n.layer, n.children.len() as u32, bytes),
                    None => p.node_memory_ceiling(n.layer),
                }
            }
            layer => p.node_memory_ceiling(layer),
        });
        let fit = p.trace_fit();
        let segments = sizes.iter().map(|size| match (size, fit) {
            (Some(size), Some(fit)) => fit.memory_bytes(*size),
            _ => p.segment_memory(height),
        });
        nodes.chain(segments).max().unwrap_or(0)
    };
    let devices_that_fit = pool
        .profiles
        .iter()
        .filter(|p| peak(p) <= p.usable_memory_bytes())
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
        peak_task_memory_bytes: pool.profiles.first().map_or(0, peak),
        segment_instructions: instructions.clone(),
        segment_sizes: sizes.clone(),
        execution_seconds: config.execution_seconds,
        devices_that_fit,
        predicted_latency_seconds: None,
        predicted_work_seconds: None,
        lower_bound_seconds: None,
        utilization: None,
        work_by_phase: Vec::new(),
        infeasible: None,
        predicted_from: None,
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

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "no candidate segment height fits any device of the pool ({0}); try smaller segment \
     heights or add devices with more memory"
)]
/// No candidate fits any device; the text lists each candidate's reason.
pub struct NothingFeasible(pub String);

/// Picks a candidate for the goal; returns its index and the reason, in words.
pub fn recommend(candidates: &[Candidate], goal: Goal) -> Result<(usize, String), NothingFeasible> {
    let feasible: Vec<(usize, f64, f64)> = candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.predicted_latency_seconds?, c.predicted_work_seconds?)))
        .collect();
    if feasible.is_empty() {
        return Err(NothingFeasible(
            candidates
                .iter()
                .find_map(|c| c.infeasible.clone())
                .unwrap_or_else(|| "no candidates".into()),
        ));
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

/// What was predicted for a job when it was submitted; kept with the job so that its status
/// can show predicted beside measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Prediction {
    /// The segment height.
    pub segment_height: u32,
    /// The VM config of the profiles it was made with (predictions made before configs
    /// existed: `rv32im`).
    #[serde(default = "crate::cost::rv32im")]
    pub vm_config: String,
    /// Segments the program was cut into.
    pub segments: usize,
    /// Workers in the simulated pool.
    pub workers: usize,
    /// (device, workers of it) in the simulated pool.
    #[serde(default)]
    pub devices: Vec<(String, usize)>,
    /// Set when the height was chosen by the planner (`auto`), with the reason.
    pub goal: Option<Goal>,
    /// Why the planner chose this height, in words (with `goal`).
    pub reason: Option<String>,
    /// Predicted latency T in seconds.
    pub latency_seconds: f64,
    /// Predicted work L in seconds.
    pub work_seconds: f64,
    /// (phase, predicted proving seconds): `segments`, then each aggregation layer.
    pub work_by_phase: Vec<(String, f64)>,
}

impl Prediction {
    /// The prediction a feasible candidate makes on `pool`; `None` if no device could hold it.
    pub fn of(candidate: &Candidate, pool: &Pool) -> Option<Self> {
        Some(Self {
            segment_height: candidate.segment_height,
            vm_config: pool
                .workers
                .first()
                .map_or_else(crate::cost::rv32im, |&w| pool.profiles[w].vm_config.clone()),
            segments: candidate.segments,
            workers: pool.workers.len(),
            devices: pool.devices(),
            goal: None,
            reason: None,
            latency_seconds: candidate.predicted_latency_seconds?,
            work_seconds: candidate.predicted_work_seconds?,
            work_by_phase: candidate.work_by_phase.clone(),
        })
    }
}

/// What a job measured, to compare with its [`Prediction`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct Measured {
    /// From submission (execution included) to the verified final proof.
    pub latency_seconds: f64,
    /// Proving (and re-execution) seconds of the accepted task proofs.
    pub work_seconds: f64,
    /// Measured proving seconds per phase: `segments`, then each layer.
    pub work_by_phase: Vec<(String, f64)>,
}

/// Signed relative error of a prediction, in percent of the measured value.
pub fn error_percent(predicted: f64, measured: f64) -> f64 {
    (predicted - measured) / measured * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(height: u32, latency: f64, work: f64) -> Candidate {
        Candidate {
            segment_height: height,
            segments: 1,
            nodes_per_layer: vec![],
            segment_instructions: vec![],
            segment_sizes: vec![],
            execution_seconds: 0.0,
            openvm_segment_memory_bytes: 0,
            peak_task_memory_bytes: 0,
            devices_that_fit: vec![],
            predicted_latency_seconds: Some(latency),
            predicted_work_seconds: Some(work),
            lower_bound_seconds: None,
            utilization: None,
            work_by_phase: vec![],
            infeasible: None,
            predicted_from: None,
        }
    }

    /// A plan whose segments carry trace sizes is placed and timed by the profile's fit: four
    /// height-20 zkML segments need about 23.6 GB each, which a per-height (fib) figure puts
    /// at half that.
    #[test]
    fn sized_segments_are_placed_and_timed_by_the_trace_fit() {
        use crate::cost::tests::{fitted_profile, MEASURED_ZKML_20};
        let segment = |index: u32, sized: bool| crate::SegmentSpec {
            index,
            instret_start: 3_000_000 * u64::from(index),
            num_insns: 3_000_000,
            memory_estimate_bytes: 5 << 30,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            trace_size: sized.then_some(MEASURED_ZKML_20.0),
        };
        let plan = |sized: bool| SegmentPlan {
            segments: (0..4).map(|i| segment(i, sized)).collect(),
            public_values: vec![],
        };
        let mut profile = fitted_profile();
        profile.memory_bytes = 20 << 30;
        let pool = Pool::uniform(profile.clone(), 1);
        let tree = AggTreeShape::default();
        let config = SimConfig::default();

        let sized = evaluate(&plan(true), 20, tree, &pool, config).unwrap();
        let need = sized.peak_task_memory_bytes as f64;
        assert!((need / MEASURED_ZKML_20.1 - 1.0).abs() < 0.15, "{need}");
        assert!(sized.devices_that_fit.is_empty());
        assert!(
            sized.infeasible.is_some(),
            "20 GiB cannot hold such a segment"
        );
        let unsized_ = evaluate(&plan(false), 20, tree, &pool, config).unwrap();
        assert!(
            unsized_.infeasible.is_none(),
            "by the per-height figure it fits"
        );

        profile.memory_bytes = 28 << 30;
        let pool = Pool::uniform(profile, 1);
        let sized = evaluate(&plan(true), 20, tree, &pool, config).unwrap();
        let unsized_ = evaluate(&plan(false), 20, tree, &pool, config).unwrap();
        let (sized, unsized_) = (
            sized.predicted_latency_seconds.unwrap(),
            unsized_.predicted_latency_seconds.unwrap(),
        );
        // Four segments at about 157 s each by the fit, 78 s by fib's height-20 figure.
        assert!(sized > unsized_ + 4.0 * 60.0, "{sized} against {unsized_}");
    }

    #[test]
    fn each_goal_picks_its_candidate() {
        // Height 19: fast and expensive; 21: slow and cheap; 20 in between.
        let c = [
            candidate(19, 100.0, 900.0),
            candidate(20, 150.0, 600.0),
            candidate(21, 300.0, 500.0),
        ];
        assert_eq!(recommend(&c, Goal::Latency).unwrap().0, 0);
        assert_eq!(recommend(&c, Goal::Cost).unwrap().0, 2);
        assert_eq!(recommend(&c, Goal::Deadline(200.0)).unwrap().0, 1);
        // A deadline nothing meets falls back to the fastest, and says so.
        let (i, why) = recommend(&c, Goal::Deadline(50.0)).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("no height meets"), "{why}");
    }

    #[test]
    fn infeasible_candidates_are_never_recommended() {
        let mut c = [candidate(19, 100.0, 900.0), candidate(20, 150.0, 600.0)];
        c[1].predicted_latency_seconds = None;
        c[1].infeasible = Some("too big".into());
        assert_eq!(recommend(&c, Goal::Cost).unwrap().0, 0);
        c[0].predicted_latency_seconds = None;
        let err = recommend(&c, Goal::Cost).unwrap_err();
        assert!(err.to_string().contains("too big"), "{err}");
    }

    #[test]
    fn goals_round_trip_as_text_and_bad_ones_are_named() {
        for goal in [Goal::Latency, Goal::Cost, Goal::Deadline(90.0)] {
            let json = serde_json::to_string(&goal).unwrap();
            assert_eq!(serde_json::from_str::<Goal>(&json).unwrap(), goal);
        }
        assert_eq!(
            "deadline=90s".parse::<Goal>().unwrap(),
            Goal::Deadline(90.0)
        );
        for bad in ["fast", "deadline=", "deadline=-3"] {
            assert!(bad.parse::<Goal>().unwrap_err().contains(bad));
        }
    }
}
