//! Submission: a client's jobs come in within its limits (jobs in flight, instructions, input), are
//! stored, and start executing; a client's actions on its jobs (pause, resume, cancel, retry).

use std::{
    sync::{atomic::Ordering, Arc},
    time::Instant,
};

use plait_core::{planner::Goal, JobId, ProgramInput};
use plait_prover::{ProgramImage, ProvingParams};

use crate::{
    clients::{Reservation, MAX_PRIORITY},
    job::{Job, JobAction},
    job_status::JobStatus,
    store::{JobOwner, StoreOp},
};

use super::{blocking, Coordinator};
use crate::clock::unix_ms;
use crate::error::CoordinatorError;

impl Coordinator {
    /// Stores the job and starts executing its program; answers once the job is stored, while
    /// execution goes on (see [`Self::submit`]).
    pub async fn submit_job(
        self: &Arc<Self>,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
    ) -> Result<JobId, CoordinatorError> {
        self.submit(program, input, params, None).await
    }

    /// Stores the job and answers; its program then executes in the background, and each
    /// segment becomes a ready task (with its start-state checkpoint stored) as soon as
    /// execution has passed its end. A guest that fails fails its job with the reason.
    ///
    /// With `auto`, the planner first chooses the segment height for that goal (ignoring
    /// `params.segment_height`) by planning each candidate height from one execution
    /// (`planning::candidates`) and simulating each on the pool; the job is stored after
    /// that choice.
    pub async fn submit(
        self: &Arc<Self>,
        program: ProgramImage,
        input: ProgramInput,
        params: ProvingParams,
        auto: Option<Goal>,
    ) -> Result<JobId, CoordinatorError> {
        self.submit_for(JobOwner::default(), program, input, params, auto)
            .await
    }

    /// [`Self::submit`] for a client, within its limits: jobs in flight, and instructions
    /// per job.
    pub async fn submit_for(
        self: &Arc<Self>,
        owner: JobOwner,
        program: ProgramImage,
        input: ProgramInput,
        mut params: ProvingParams,
        auto: Option<Goal>,
    ) -> Result<JobId, CoordinatorError> {
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&owner.priority) {
            return Err(CoordinatorError::BadRequest(format!(
                "a job's priority is -{MAX_PRIORITY} to {MAX_PRIORITY}, not {}",
                owner.priority
            )));
        }
        // Held until the job is stored, across the awaits below.
        let reservation = self.check_client_limits(&owner.client, &params, &input)?;
        let chosen = match auto {
            None => None,
            Some(goal) => {
                let started = Instant::now();
                let (height, prediction) =
                    self.choose_height(&program, &input, params, goal).await?;
                self.metrics
                    .planning_seconds
                    .with_label_values(&["choose-height"])
                    .observe(started.elapsed().as_secs_f64());
                params.segment_height = height;
                prediction
            }
        };
        // Keys and the loaded program first (for `auto`, at the chosen height), so that a
        // keygen (minutes, once) or loading the program (seconds, once per height) is not
        // timed as part of the job.
        self.prepare_keys(params).await?;
        let (backend, p) = (self.backend.clone(), program.clone());
        blocking(move || backend.prepare_program(&p, &params)).await??;
        let id = JobId(self.next_job.fetch_add(1, Ordering::Relaxed));
        let now = Instant::now();
        let owner_client = owner.client.clone();
        let mut job = Job::new(
            id,
            owner,
            program.clone(),
            input.clone(),
            params,
            now,
            unix_ms(),
        )?;
        job.segment_fits = self.segment_memory_fits(&params);
        job.node_profiles = super::memory::node_profiles(&self.config, &params);
        if let Some(prediction) = chosen {
            job.set_prediction(prediction, now);
        }
        // In-process submissions (the library's callers) bring their own program; a client
        // over the API names one it keeps already, which costs nothing here.
        self.remember_program(&owner_client, &program, None)
            .expect("no limit refuses nothing");
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            self.collect_writes(&mut job);
            jobs.insert(id, job);
            // The job counts itself now.
            drop(reservation);
        }
        if let Err(e) = self.flush().await {
            if self.withdraw_unstored_job(id).await {
                return Err(e);
            }
        }
        self.metrics.jobs_submitted.inc();
        self.spawn_execution(id, program, input, params, 0);
        self.job_changed.notify_waiters();
        Ok(id)
    }

    /// Forgets a job whose submission could not be stored, so that the client, told so,
    /// can submit it again without making two (left in memory it would also never execute).
    /// Returns `false` if another write stored it meanwhile: then it stands.
    pub(super) async fn withdraw_unstored_job(&self, id: JobId) -> bool {
        // Under the writer lock no flush is under way: what the outbox holds is not stored.
        let _writer = self.writer.lock().await;
        // The jobs lock first, then the outbox's, as `collect_writes` takes them.
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let mut outbox = self.outbox.lock().expect("outbox lock");
        let unstored = outbox
            .iter()
            .any(|op| matches!(op, StoreOp::InsertJob(record) if record.id == id));
        if unstored {
            outbox.retain(|op| op.job() != Some(id));
            jobs.remove(&id);
        }
        unstored
    }

    /// Checks a submission against its client's limits and takes its place among the
    /// client's jobs in flight.
    pub(super) fn check_client_limits(
        &self,
        client: &str,
        params: &ProvingParams,
        input: &ProgramInput,
    ) -> Result<Reservation, CoordinatorError> {
        let limits = self.clients.lock().expect("clients lock").limits(client);
        if let Some(limit) = limits.max_input_bytes {
            let asked = input.total_bytes();
            if asked > limit {
                return Err(CoordinatorError::OverInputLimit {
                    client: client.into(),
                    limit,
                    asked,
                });
            }
        }
        if let Some(limit) = limits.max_instructions {
            if params.max_instructions > limit {
                return Err(CoordinatorError::OverInstructionLimit {
                    client: client.into(),
                    limit,
                    asked: params.max_instructions,
                });
            }
        }
        // Counted and reserved under the jobs lock, which a submission's job is inserted
        // under: no two submissions can both see room for one.
        let jobs = self.jobs.lock().expect("jobs lock");
        if let Some(limit) = limits.max_jobs_in_flight {
            let count = jobs
                .values()
                .filter(|j| j.owner.client == client && (j.status.is_live() || j.executing))
                .count() as u32
                + self.submitting.count(client);
            if count >= limit {
                return Err(CoordinatorError::TooManyJobs {
                    client: client.into(),
                    limit,
                    count,
                });
            }
        }
        Ok(self.submitting.reserve(client))
    }

    /// Pauses, resumes, cancels or retries a job.
    pub async fn act(&self, job: JobId, action: JobAction) -> Result<JobStatus, CoordinatorError> {
        let ended = if self.jobs.lock().expect("jobs lock").contains_key(&job) {
            None
        } else {
            Some(self.load_ended_job(job).await?)
        };
        let (status, finalize) = {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            // A job read back from the store comes back into memory (a retry makes it live; the
            // next flush releases it otherwise). Another call may have brought it back first.
            if let Some(ended) = ended {
                jobs.entry(job).or_insert(ended);
            }
            let state = jobs
                .get_mut(&job)
                .ok_or(CoordinatorError::UnknownJob(job))?;
            let applied = state.apply(action, Instant::now());
            self.collect_writes(state);
            applied.map_err(CoordinatorError::InvalidState)?;
            (state.status.clone(), state.awaits_finalization())
        };
        self.flush().await?;
        // A job can fail in finalization with every task accepted; retrying it finalizes again.
        if finalize {
            self.finalize(job).await?;
        }
        self.work_available.notify_waiters();
        self.job_changed.notify_waiters();
        Ok(status)
    }
}
