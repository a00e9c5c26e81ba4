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

use crate::error::CoordinatorError;

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
///
/// All of it (executions, predictions, simulations of plans of many thousands of segments)
/// runs on the blocking pool: none of it may hold up the coordinator's async runtime, which
/// serves every worker and client meanwhile.
pub async fn candidates(
    backend: Arc<dyn ProverBackend>,
    program: &ProgramImage,
    input: &ProgramInput,
    base: ProvingParams,
    heights: &[u32],
    pool: &Pool,
    sim: SimConfig,
) -> Result<Vec<(Candidate, SegmentPlan)>, CoordinatorError> {
    let (program, input, heights, pool) = (
        program.clone(),
        input.clone(),
        heights.to_vec(),
        pool.clone(),
    );
    tokio::task::spawn_blocking(move || {
        candidates_blocking(&*backend, &program, &input, base, heights, &pool, sim)
    })
    .await
    .map_err(|e| CoordinatorError::Panicked(e.to_string()))?
}

fn candidates_blocking(
    backend: &dyn ProverBackend,
    program: &ProgramImage,
    input: &ProgramInput,
    base: ProvingParams,
    mut heights: Vec<u32>,
    pool: &Pool,
    sim: SimConfig,
) -> Result<Vec<(Candidate, SegmentPlan)>, CoordinatorError> {
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
                backend.prepare_keys(&params)?;
                backend.prepare_program(program, &params)?;
                let started = Instant::now();
                let plan = backend.execute(program, input, &params)?;
                let seconds = started.elapsed().as_secs_f64();
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

/// A plan with the predicted segments' instruction counts, their trace sizes merged from the
/// executed segments they are made of, and the zkVM's memory estimate of the executed plan's
/// largest segment scaled by the height (traces double with each step).
fn predicted_plan(
    executed: &SegmentPlan,
    from: u32,
    height: u32,
    instructions: Vec<u64>,
) -> SegmentPlan {
    let memory = executed.peak_memory_estimate_bytes() << (height - from).min(16);
    let sizes = executed.regrouped_sizes(&instructions);
    let mut instret_start = 0;
    let segments = instructions
        .into_iter()
        .zip(sizes)
        .enumerate()
        .map(|(index, (num_insns, trace_size))| {
            let spec = plait_core::SegmentSpec {
                index: index as u32,
                instret_start,
                num_insns,
                memory_estimate_bytes: memory,
                backend_hint: serde_json::Value::Null,
                checkpoint: None,
                trace_size,
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

#[cfg(test)]
mod tests {
    use std::{
        sync::Mutex,
        thread::{self, ThreadId},
    };

    use plait_core::{
        cost::{DeviceProfile, PROFILE_FORMAT, PROFILE_FORMAT_VERSION},
        AggLayer, JobId, SegmentSpec,
    };
    use plait_prover::{
        dev::DevBackend, BackendError, BackendInfo, ProofBlob, ProofMeta, SegmentSink,
        SegmentStart, Verdict, VerifiedProof,
    };

    use super::*;

    /// The dev backend, noting the threads its planning calls run on; it proves nothing.
    #[derive(Default)]
    struct Watched {
        dev: DevBackend,
        threads: Mutex<Vec<ThreadId>>,
    }

    impl Watched {
        fn note(&self) {
            self.threads.lock().unwrap().push(thread::current().id());
        }
    }

    impl ProverBackend for Watched {
        fn info(&self) -> BackendInfo {
            self.dev.info()
        }
        fn prepare_keys(&self, params: &ProvingParams) -> Result<String, BackendError> {
            self.dev.prepare_keys(params)
        }
        fn check_program(&self, program: &ProgramImage) -> Result<(), BackendError> {
            self.dev.check_program(program)
        }
        fn predict_segments(&self, plan: &SegmentPlan, from: u32, to: u32) -> Option<Vec<u64>> {
            self.note();
            self.dev.predict_segments(plan, from, to)
        }
        fn execute_streaming(
            &self,
            program: &ProgramImage,
            input: &ProgramInput,
            params: &ProvingParams,
            checkpoints_for: Option<JobId>,
            sink: &mut SegmentSink<'_>,
        ) -> Result<SegmentPlan, BackendError> {
            self.note();
            self.dev
                .execute_streaming(program, input, params, checkpoints_for, sink)
        }
        fn prove_segment(
            &self,
            _: &ProgramImage,
            _: &ProvingParams,
            _: &SegmentSpec,
            _: bool,
            _: SegmentStart<'_>,
        ) -> Result<(ProofBlob, ProofMeta), BackendError> {
            unreachable!("planning proves nothing")
        }
        fn aggregate(
            &self,
            _: &ProvingParams,
            _: AggLayer,
            _: &[ProofBlob],
        ) -> Result<ProofBlob, BackendError> {
            unreachable!("planning proves nothing")
        }
        fn check_segment_proof(
            &self,
            _: &ProgramImage,
            _: &ProvingParams,
            _: &SegmentSpec,
            _: Option<&[u8]>,
            _: &ProofBlob,
        ) -> Result<Verdict, BackendError> {
            unreachable!("planning checks nothing")
        }
        fn check_aggregate_proof(
            &self,
            _: &ProgramImage,
            _: &ProvingParams,
            _: AggLayer,
            _: Option<AggLayer>,
            _: &SegmentSpec,
            _: &SegmentSpec,
            _: bool,
            _: &ProofBlob,
        ) -> Result<Verdict, BackendError> {
            unreachable!("planning checks nothing")
        }
        fn finalize(
            &self,
            _: &ProgramImage,
            _: &ProvingParams,
            _: &ProofBlob,
            _: &ProofBlob,
        ) -> Result<Vec<u8>, BackendError> {
            unreachable!("planning finalizes nothing")
        }
        fn verify_final(&self, _: &ProgramImage, _: &[u8]) -> Result<VerifiedProof, BackendError> {
            unreachable!("planning verifies nothing")
        }
    }

    fn pool() -> Pool {
        let cost = |kind: &str| serde_json::json!({"kind": kind, "children": 1, "seconds": 1.0, "peak-rss-bytes": 1 << 30});
        let profile: DeviceProfile = serde_json::from_value(serde_json::json!({
            "format": PROFILE_FORMAT, "format-version": PROFILE_FORMAT_VERSION,
            "plait-version": "0.1.0", "backend": "dev", "backend-version": "0", "device": "test",
            "cores": 2, "memory-bytes": 8u64 << 30, "tree": plait_core::AggTreeShape::default(),
            "segments": [{"segment-height": 10, "instructions": 1024, "seconds": 1.0,
                          "peak-rss-bytes": 1 << 30}],
            "nodes": [cost("leaf"), cost("internal-for-leaf"), cost("internal-recursive"), cost("wrap")],
        }))
        .unwrap();
        Pool::uniform(profile, 4)
    }

    /// Planning an `auto` job (executions, predictions, simulations) holds up no task of the
    /// coordinator's runtime: on a runtime of one thread, none of it runs on that thread.
    #[test]
    fn planning_runs_off_the_async_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let backend = Arc::new(Watched::default());
        let input = ProgramInput {
            items: vec![100_000u64.to_le_bytes().to_vec()],
        };
        let planned = runtime
            .block_on(candidates(
                backend.clone(),
                &ProgramImage::new(b"program".to_vec()),
                &input,
                ProvingParams::default(),
                &[10, 11, 12],
                &pool(),
                SimConfig::default(),
            ))
            .unwrap();
        assert_eq!(planned.len(), 3);
        let threads = backend.threads.lock().unwrap();
        // One execution, two predictions.
        assert_eq!(threads.len(), 3);
        assert!(
            threads.iter().all(|t| *t != thread::current().id()),
            "planning ran on the runtime's thread"
        );
    }
}
