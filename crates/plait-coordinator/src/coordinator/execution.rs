//! Execution: a job's program runs once, in the background, and is cut into segments whose start-
//! state checkpoints are stored as execution passes them; with `auto`, the segment height is chosen
//! first.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use plait_core::{
    cost::DeviceProfile,
    planner::{evaluate, recommend, Goal, Pool, Prediction},
    sim::SimConfig,
    JobId, ProgramInput, SegmentPlan,
};
use plait_prover::{BackendError, CutSegment, ProgramImage, ProvingParams, VmConfig};

use crate::{
    job_status::JobStatus,
    planning::{self, PlannerConfig},
};

use super::{blocking, Coordinator};
use crate::error::CoordinatorError;

impl Coordinator {
    /// Chooses the segment height for `goal` by planning each candidate height and simulating
    /// each plan on the pool; returns it with its prediction.
    pub(super) async fn choose_height(
        &self,
        program: &ProgramImage,
        input: &ProgramInput,
        params: ProvingParams,
        goal: Goal,
    ) -> Result<(u32, Option<Prediction>), CoordinatorError> {
        let no_profile = || {
            CoordinatorError::CannotPlan(
                "no device profile: neither this coordinator nor its live workers have one \
                 (run `plait calibrate`, then start the coordinator or the workers with it), or \
                 give a segment height"
                    .into(),
            )
        };
        let planner = self.config.planner.as_ref().ok_or_else(no_profile)?;
        let pool = self
            .planning_pool(planner, params.vm_config)
            .ok_or_else(no_profile)?;
        // Keys for the executed height (the lowest) come first, so that keygen is not timed as
        // execution; the chosen height's keys are made before the job starts.
        if let Some(&lowest) = planner.heights.iter().min() {
            self.prepare_keys(ProvingParams {
                segment_height: lowest,
                ..params
            })
            .await?;
        }
        let candidates: Vec<_> = planning::candidates(
            self.backend.clone(),
            program,
            input,
            params,
            &planner.heights,
            &pool,
            SimConfig::default(),
        )
        .await?
        .into_iter()
        .map(|(candidate, _plan)| candidate)
        .collect();
        let (best, reason) = recommend(&candidates, goal)
            .map_err(|e| CoordinatorError::CannotPlan(e.to_string()))?;
        // The job waits for the planning executions (one, at the lowest height, when the
        // backend predicts the others), then executes at its own height.
        let executions: f64 = candidates.iter().map(|c| c.execution_seconds).sum();
        let prediction = Prediction::of(&candidates[best], &pool).map(|p| Prediction {
            goal: Some(goal),
            reason: Some(reason),
            latency_seconds: p.latency_seconds + executions - candidates[best].execution_seconds,
            ..p
        });
        Ok((candidates[best].segment_height, prediction))
    }

    /// Executes job `id`'s program in the background, skipping the first `skip` segments
    /// (already stored before a restart).
    pub(super) fn spawn_execution(
        self: &Arc<Self>,
        id: JobId,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        skip: usize,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = this.execute_job(id, program, input, params, skip).await;
            if outcome.is_ok() {
                this.metrics
                    .execution_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            // With the whole plan known, predict the job on the pool it has: a simulation of
            // every task, so on a blocking thread and outside the jobs lock.
            let predicting = Instant::now();
            let prediction = match &outcome {
                Ok(plan) => this.predict(id, plan, params, started.elapsed()).await,
                Err(_) => None,
            };
            if prediction.is_some() {
                this.metrics
                    .planning_seconds
                    .with_label_values(&["predict"])
                    .observe(predicting.elapsed().as_secs_f64());
            }
            let now = Instant::now();
            {
                let mut jobs = this.jobs.lock().expect("jobs lock");
                let Some(job) = jobs.get_mut(&id) else { return };
                match &outcome {
                    Ok(_) => match prediction {
                        Some(Ok(p)) => job.set_prediction(p, now),
                        Some(Err(e)) => job.log(now, format!("no prediction: {e}")),
                        None => {}
                    },
                    // A job cancelled while executing stops its execution; that is not a
                    // failure.
                    Err(_) if job.status == JobStatus::Cancelled => job.execution_stopped(now),
                    Err(e) => job.execution_failed(&e.to_string(), now),
                }
                this.collect_writes(job);
            }
            if let Err(e) = this.flush().await {
                tracing::error!(job = %id, "storing the end of execution: {e}");
            }
            this.work_available.notify_waiters();
            this.job_changed.notify_waiters();
        });
    }

    /// The prediction for a job that has none yet, from its whole plan, if the coordinator has
    /// device profiles.
    pub(super) async fn predict(
        &self,
        id: JobId,
        plan: &SegmentPlan,
        params: ProvingParams,
        execution: Duration,
    ) -> Option<Result<Prediction, String>> {
        if self
            .read_job(id, |j| j.prediction.is_some())
            .await
            .unwrap_or(true)
        {
            return None;
        }
        let pool = self.planning_pool(self.config.planner.as_ref()?, params.vm_config)?;
        let instructions = plan.clone();
        let sim = SimConfig {
            execution_seconds: execution.as_secs_f64(),
            ..SimConfig::default()
        };
        let evaluated = blocking(move || {
            evaluate(
                &instructions,
                params.segment_height,
                params.tree,
                &pool,
                sim,
            )
            .map(|candidate| Prediction::of(&candidate, &pool))
        })
        .await;
        match evaluated {
            Ok(Ok(prediction)) => prediction.map(Ok),
            Ok(Err(e)) => Some(Err(e.to_string())),
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Executes the program for job `id`: stores each segment's checkpoint, then adds the
    /// segment to the job, as execution cuts it.
    pub(super) async fn execute_job(
        self: &Arc<Self>,
        id: JobId,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        skip: usize,
    ) -> Result<SegmentPlan, CoordinatorError> {
        let backend = self.backend.clone();
        let this = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let plan = blocking(move || {
            backend.execute_streaming(&program, &input, &params, Some(id), &mut |cut| {
                runtime.block_on(this.segment_cut(id, cut, skip))
            })
        })
        .await??;
        Ok(plan)
    }

    /// Takes one segment from execution: stores its checkpoint, then adds it to the job (its
    /// task is then ready). An error stops execution: the job is gone or no longer live, or a
    /// segment re-cut after a restart differs from the one stored.
    pub(super) async fn segment_cut(
        &self,
        id: JobId,
        cut: CutSegment,
        skip: usize,
    ) -> Result<(), BackendError> {
        let index = cut.spec.index as usize;
        let stop = |why: String| BackendError::Stopped(why);
        if self.halted.load(Ordering::SeqCst) {
            return Err(stop("the coordinator was halted".into()));
        }
        if index < skip {
            // Cut before the restart: it must be the segment stored then.
            let same = self
                .read_job(id, |j| j.segments.get(index) == Some(&cut.spec))
                .await
                .map_err(|e| stop(e.to_string()))?;
            return if same {
                Ok(())
            } else {
                Err(stop(format!(
                    "after the restart, execution cut segment {index} differently from before"
                )))
            };
        }
        if let Some(bytes) = &cut.checkpoint {
            // A store that fails for a while is waited out: a long execution must not fail its
            // job (for good: execution failures are not retried) on a passing outage.
            let mut failures = 0;
            let stored = loop {
                match self.store.put_blob(id, bytes).await {
                    Ok(stored) => break stored,
                    Err(e) => {
                        self.note_store_failure(&e);
                        self.wait_out_store_failure(&mut failures)
                            .await
                            .map_err(|halted| {
                                stop(format!(
                                    "storing the checkpoint of segment {index}: {e}; {halted}"
                                ))
                            })?;
                    }
                }
            };
            // Workers fetch it by the name the segment carries.
            if cut.spec.checkpoint.as_deref() != Some(stored.as_str()) {
                return Err(stop(format!(
                    "segment {index} names checkpoint {:?}, its bytes hash to {stored}",
                    cut.spec.checkpoint
                )));
            }
        }
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let job = jobs
                .get_mut(&id)
                .ok_or_else(|| stop(format!("{id} no longer exists")))?;
            // A failed job keeps executing: it can be retried, and then needs every segment.
            if job.status == JobStatus::Cancelled {
                return Err(stop(format!("{id} is {}", job.status.name())));
            }
            let added = job.add_segment(cut.spec, cut.ending, Instant::now());
            self.collect_writes(job);
            added.map_err(stop)?;
        }
        // The segment is durable before any worker can be handed it (a claim flushes before it
        // answers, so none is while this waits out a failing store).
        let mut failures = 0;
        while let Err(e) = self.flush().await {
            self.wait_out_store_failure(&mut failures)
                .await
                .map_err(|halted| stop(format!("storing segment {index}: {e}; {halted}")))?;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(())
    }

    /// The pool to plan a job of `vm` for: the configured one if it is fixed; otherwise one
    /// worker per live worker, each with its own profile or else the next of the configured mix
    /// (at least one worker). Only profiles measured under `vm` count. `None` when no profile
    /// is known.
    pub(super) fn planning_pool(&self, planner: &PlannerConfig, vm: VmConfig) -> Option<Pool> {
        let configured = &planner.pool.of_vm_config(vm.name());
        if planner.fixed_size {
            return (!configured.workers.is_empty()).then(|| configured.clone());
        }
        let recent = self.live_window();
        let mut seen = self.workers_seen.lock().expect("workers lock");
        // Workers gone for a lease period are forgotten (ids of restarted workers differ).
        seen.retain(|_, w| w.at.elapsed() <= recent);
        let mut live: Vec<(&String, &Option<DeviceProfile>)> =
            seen.iter().map(|(id, w)| (id, &w.profile)).collect();
        live.sort_by_key(|(id, _)| *id);
        let mut pool = Pool {
            profiles: configured.profiles.clone(),
            workers: Vec::new(),
        };
        let mut defaults = configured.workers.iter().cycle();
        for (_, profile) in live {
            match profile.as_ref().filter(|p| p.vm_config == vm.name()) {
                Some(own) => {
                    let index = match pool.profiles.iter().position(|p| p == own) {
                        Some(i) => i,
                        None => {
                            pool.profiles.push(own.clone());
                            pool.profiles.len() - 1
                        }
                    };
                    pool.workers.push(index);
                }
                None => pool.workers.extend(defaults.next()),
            }
        }
        if pool.workers.is_empty() {
            pool.workers.extend(configured.workers.first());
        }
        (!pool.workers.is_empty()).then_some(pool)
    }
}
