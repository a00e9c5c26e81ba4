//! The planner's side that needs a backend: executing a program at each candidate segment
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

/// Executes the program at each height (ascending) and simulates each plan on `pool`.
/// `sim.execution_seconds` is replaced by each execution's measured time; keygen, done first
/// if needed, is not counted.
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
    for height in heights {
        let params = ProvingParams {
            segment_height: height,
            ..base
        };
        let (b, p, i) = (backend.clone(), program.clone(), input.clone());
        let (plan, execution_seconds) = tokio::task::spawn_blocking(move || {
            b.prepare_keys(&params)?;
            let started = Instant::now();
            let plan = b.execute(&p, &i, &params)?;
            Ok::<_, plait_prover::BackendError>((plan, started.elapsed().as_secs_f64()))
        })
        .await
        .map_err(|e| CoordinatorError::Panicked(e.to_string()))??;
        let sim = SimConfig {
            execution_seconds,
            ..sim
        };
        out.push((evaluate(&plan, height, base.tree, pool, sim)?, plan));
    }
    Ok(out)
}
