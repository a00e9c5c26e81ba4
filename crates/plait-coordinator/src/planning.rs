//! The planner's side that needs a backend: planning a program at each candidate segment
//! height and simulating each on a pool (`plait_core::planner` does the simulating and
//! choosing). Used by the coordinator for `auto` jobs and by `plait plan`.

use std::{sync::Arc, time::Instant};

use plait_core::{
    planner::{evaluate, Candidate, Pool},
    sim::SimConfig,
    ProgramInput, SegmentPlan,
};
use plait_prover::{ProgramImage, ProverBackend, ProvingParams};

use crate::CoordinatorError;

/// The pool a coordinator's planner assumes.
#[derive(Clone, Debug)]
pub struct PlannerConfig {
    /// The devices, and per worker which device it is (may be empty).
    pub pool: Pool,
    /// Plan for `pool` exactly as given. Otherwise plan for the workers that asked for work
    /// within the last lease period: each with the device profile it sent, or else the next
    /// device of `pool`'s mix.
    pub fixed_size: bool,
    /// The segment heights `auto` chooses from.
    pub heights: Vec<u32>,
}

/// Plans the program at each height (ascending) and simulates each plan on `pool`. The
/// program executes once, at the lowest height; the backend predicts the other heights'
/// segments from that execution where it can ([`ProverBackend::predict_segments`]), and
/// executes again only where it cannot. `sim.execution_seconds` is replaced by each
/// execution's measured time (0 for a predicted height); keygen, done first if needed, is not
/// counted.
pub async fn candidates(
    backend: Arc<dyn ProverBackend>,
    program: &ProgramImage,
    input: &ProgramInput,
    base: ProvingParams,
    heights: &[u32],
    pool: &Pool,
    sim: SimConfig,
) -> Result<Vec<(Candidate, SegmentPlan)>, CoordinatorError> {
    let mut heights = heights.to_vec();
    heights.sort_unstable();
    heights.dedup();
    let mut out = Vec::new();
    let mut executed: Option<(u32, SegmentPlan)> = None;
    for height in heights {
        let predicted = executed.as_ref().and_then(|(from, plan)| {
            let instructions = backend.predict_segments(plan, *from, height)?;
            Some(predicted_plan(plan, *from, height, instructions))
        });
        let (plan, execution_seconds, predicted_from) = match predicted {
            Some(plan) => (plan, 0.0, executed.as_ref().map(|(from, _)| *from)),
            None => {
                let params = ProvingParams {
                    segment_height: height,
                    ..base
                };
                let (b, p, i) = (backend.clone(), program.clone(), input.clone());
                let (plan, seconds) = tokio::task::spawn_blocking(move || {
                    b.prepare_keys(&params)?;
                    b.prepare_program(&p, &params)?;
                    let started = Instant::now();
                    let plan = b.execute(&p, &i, &params)?;
                    Ok::<_, plait_prover::BackendError>((plan, started.elapsed().as_secs_f64()))
                })
                .await
                .map_err(|e| CoordinatorError::Panicked(e.to_string()))??;
                if executed.is_none() {
                    executed = Some((height, plan.clone()));
                }
                (plan, seconds, None)
            }
        };
        let sim = SimConfig {
            execution_seconds,
            ..sim
        };
        let mut candidate = evaluate(&plan, height, base.tree, pool, sim)?;
        candidate.predicted_from = predicted_from;
        out.push((candidate, plan));
    }
    Ok(out)
}

/// A plan with the predicted segments' instruction counts, and the zkVM's memory estimate of
/// the executed plan's largest segment scaled by the height (traces double with each step).
fn predicted_plan(
    executed: &SegmentPlan,
    from: u32,
    height: u32,
    instructions: Vec<u64>,
) -> SegmentPlan {
    let memory = executed.peak_memory_estimate_bytes() << (height - from).min(16);
    let mut instret_start = 0;
    let segments = instructions
        .into_iter()
        .enumerate()
        .map(|(index, num_insns)| {
            let spec = plait_core::SegmentSpec {
                index: index as u32,
                instret_start,
                num_insns,
                memory_estimate_bytes: memory,
                backend_hint: serde_json::Value::Null,
                checkpoint: None,
            };
            instret_start += num_insns;
            spec
        })
        .collect();
    SegmentPlan {
        segments,
        public_values: executed.public_values.clone(),
    }
}
