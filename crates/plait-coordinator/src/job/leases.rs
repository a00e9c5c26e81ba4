//! Leases: handing the next ready task to a worker, heartbeats, deadlines, failed attempts and the
//! retry policy, and what a lease lets its holder read.

//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::time::{Duration, Instant};

use plait_api::{ClaimTaskRequest, TaskAssignment, Work};
use plait_core::{AggLayer, TaskId, TaskKind};
use plait_prover::ProvingParams;

use crate::{job_status::JobStatus, store::StoreOp};

use super::{Failure, Job, Lease, LeaseError, LeaseSecret, RetryPolicy};

impl Job {
    /// Leases the first ready task that fits the worker and `memory_left` (the machine's
    /// memory not leased yet, for workers sharing one), if any. A task the worker failed
    /// last is left to another worker while `another_fits` its memory need. The lease lasts
    /// `lease` past each heartbeat, and `time_limit(work, child proof bytes)` at most.
    #[allow(clippy::too_many_arguments)]
    pub fn lease_next(
        &mut self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
        memory_left: u64,
        lease: Duration,
        now: Instant,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
        leave_to_others: &dyn Fn(&str, u64) -> bool,
        time_limit: &dyn Fn(&ProvingParams, &Work, Option<u64>) -> Duration,
    ) -> Option<TaskAssignment> {
        if !self.is_running() {
            return None;
        }
        let capacity = match worker.gpu() {
            Some(gpu) => gpu.memory_bytes,
            None => worker.memory_bytes.min(memory_left),
        };
        if !self.fits_a_ready_task(capacity, need) {
            return None;
        }
        let task = self.graph.next_ready(|t| {
            if self.not_before.get(&t).is_some_and(|at| *at > now) {
                return false;
            }
            let need = self.memory_need(t, need);
            // A GPU worker proves in its device memory: that is what must hold the task (its
            // host memory holds little more than the inputs).
            let fits = match worker.gpu() {
                Some(gpu) => need <= gpu.memory_bytes,
                None => need <= worker.memory_bytes && need <= memory_left,
            };
            fits && !self
                .failed_by
                .get(&t)
                .is_some_and(|failed_by| leave_to_others(failed_by, need))
        })?;
        self.not_before.remove(&task);
        // What the profiles predict, kept for the task's timing record, and what it is
        // placed by (the need workers have measured, where that is more).
        let predicted = self.memory_floor(task);
        let placed_by = predicted.max(self.phase_need(task, need));
        let queued = self
            .ready_since
            .remove(&task)
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.graph.start(task).expect("a ready task can start");
        let attempt = {
            let n = self.attempts.entry(task).or_insert(0);
            *n += 1;
            *n
        };
        self.outbox.push(StoreOp::TaskCounters {
            job: self.id,
            task,
            attempts: attempt,
            failures: self.failures.get(&task).copied().unwrap_or(0),
        });
        let work = match self.graph.kind(task).expect("task exists") {
            TaskKind::ProveSegment { segment } => {
                let segment = self.segments[segment as usize].clone();
                Work::ProveSegment {
                    is_last: self.is_last_segment(segment.index),
                    // A segment with a checkpoint needs no input: the checkpoint holds what is
                    // left of it.
                    input: segment.checkpoint.is_none().then(|| self.input.clone()),
                    segment,
                }
            }
            TaskKind::Aggregate { layer, .. } => Work::Aggregate {
                layer,
                children: self.graph.children(task).expect("task exists").to_vec(),
            },
        };
        let secret = LeaseSecret::random();
        let lease_secret = secret.hex();
        let limit = time_limit(&self.params, &work, self.child_proof_bytes(task)).max(lease);
        self.insert_lease(
            task,
            Lease {
                attempt,
                secret,
                worker: worker_id.to_string(),
                worker_memory: worker.memory_bytes,
                worker_device_memory: worker.gpu().map_or(0, |g| g.memory_bytes),
                predicted,
                placed_by,
                started: now,
                expires: now + lease,
                deadline: now + limit,
                queued,
            },
        );
        let phase = self.phase(task);
        self.log_attempt(
            now,
            task,
            attempt,
            worker_id,
            format!("{task} ({phase}) attempt {attempt} leased to {worker_id}"),
        );
        Some(TaskAssignment {
            job_id: self.id,
            task_id: task,
            attempt,
            lease_secret,
            params: self.params,
            program_sha256: self.program.digest.clone(),
            lease_seconds: lease.as_secs(),
            time_limit_seconds: limit.as_secs(),
            work,
        })
    }

    /// The task's current lease, if `attempt` is its attempt and `secret` its secret.
    pub(super) fn current_lease(
        &self,
        task: TaskId,
        attempt: u32,
        secret: &str,
    ) -> Result<&Lease, LeaseError> {
        self.graph.kind(task).map_err(|_| LeaseError::UnknownTask)?;
        match self.leases.get(&task) {
            Some(lease) if lease.attempt == attempt => {
                if lease.secret.matches(secret) {
                    Ok(lease)
                } else {
                    Err(LeaseError::NotHolder)
                }
            }
            _ => Err(LeaseError::Stale),
        }
    }

    /// The task leased under `secret`, if a current lease of this job has it.
    pub fn leased_task(&self, secret: &str) -> Option<TaskId> {
        let secret = LeaseSecret::parse(secret)?;
        let task = *self.by_secret.get(&secret)?;
        // Found by hash; confirmed in constant time.
        self.leases
            .get(&task)
            .filter(|lease| lease.secret.is(&secret))
            .map(|_| task)
    }

    /// Whether the holder of `secret` may download the accepted proof of `child`: it leases
    /// `child`'s parent.
    pub fn may_read_child_proof(&self, secret: &str, child: TaskId) -> bool {
        self.leased_task(secret).is_some_and(|task| {
            self.graph
                .children(task)
                .is_ok_and(|children| children.contains(&child))
        })
    }

    /// Whether the holder of `secret` may download checkpoint `sha256`: it leases the segment
    /// that starts from it.
    pub fn may_read_checkpoint(&self, secret: &str, sha256: &str) -> bool {
        self.leased_task(secret).is_some_and(|task| {
            matches!(self.graph.kind(task), Ok(TaskKind::ProveSegment { segment })
                if self.segments[segment as usize].checkpoint.as_deref() == Some(sha256))
        })
    }

    /// How many of this job's leases `worker` holds.
    pub fn leases_held_by(&self, worker: &str) -> usize {
        self.held.get(worker).copied().unwrap_or(0)
    }

    /// Each task leased now, with its holder.
    pub fn leased_tasks(&self) -> impl Iterator<Item = (&str, TaskId)> + '_ {
        self.leases
            .iter()
            .map(|(task, lease)| (lease.worker.as_str(), *task))
    }

    /// Each worker holding leases of this job, and how many.
    pub fn lease_holders(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.held.iter().map(|(worker, &n)| (worker.as_str(), n))
    }

    pub(super) fn insert_lease(&mut self, task: TaskId, lease: Lease) {
        *self.held.entry(lease.worker.clone()).or_insert(0) += 1;
        self.by_secret.insert(lease.secret.0, task);
        if let Some(replaced) = self.leases.insert(task, lease) {
            self.forget_lease(&replaced);
        }
    }

    pub(super) fn remove_lease(&mut self, task: TaskId) -> Option<Lease> {
        let lease = self.leases.remove(&task)?;
        self.forget_lease(&lease);
        Some(lease)
    }

    pub(super) fn clear_leases(&mut self) {
        self.leases.clear();
        self.held.clear();
        self.by_secret.clear();
    }

    /// Drops a lease that left `leases` from the indexes over it.
    pub(super) fn forget_lease(&mut self, lease: &Lease) {
        self.by_secret.remove(&lease.secret.0);
        self.release_held(&lease.worker);
    }

    pub(super) fn release_held(&mut self, worker: &str) {
        if let Some(n) = self.held.get_mut(worker) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(worker);
            }
        }
    }

    /// The worker holding the task's current lease.
    pub fn lease_holder(&self, task: TaskId) -> Option<String> {
        self.leases.get(&task).map(|l| l.worker.clone())
    }

    pub fn heartbeat(
        &mut self,
        task: TaskId,
        attempt: u32,
        secret: &str,
        lease: Duration,
        now: Instant,
    ) -> Result<(), LeaseError> {
        self.current_lease(task, attempt, secret)?;
        let held = self.leases.get_mut(&task).expect("lease checked");
        held.expires = (now + lease).min(held.deadline);
        Ok(())
    }

    /// Records a failed or rejected attempt and puts the task back. With a retry policy, the
    /// attempt counts against the task: it waits out a backoff that doubles with each failure,
    /// and the job fails once the task has failed `max_attempts` times.
    pub fn fail_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        secret: &str,
        reason: &str,
        policy: Option<RetryPolicy>,
        now: Instant,
    ) -> Result<(), LeaseError> {
        self.current_lease(task, attempt, secret)?;
        self.fail_lease(task, reason, policy.map(|p| (p, Failure::Reported)), now);
        Ok(())
    }

    /// Ends the task's current lease as failed (see [`Self::fail_attempt`]).
    pub(super) fn fail_lease(
        &mut self,
        task: TaskId,
        reason: &str,
        policy: Option<(RetryPolicy, Failure)>,
        now: Instant,
    ) {
        let Some(lease) = self.remove_lease(task) else {
            return;
        };
        let (attempt, worker) = (lease.attempt, lease.worker);
        self.failed_by.insert(task, worker.clone());
        self.last_failure.insert(task, reason.to_string());
        self.graph.retry(task).expect("a leased task is running");
        self.ready_since.insert(task, now);
        self.log_attempt(
            now,
            task,
            attempt,
            &worker,
            format!("{task} attempt {attempt} from {worker} failed: {reason}"),
        );
        let Some((policy, failure)) = policy else {
            return;
        };
        if failure == Failure::Reported {
            let failures = {
                let n = self.failures.entry(task).or_insert(0);
                *n += 1;
                *n
            };
            self.outbox.push(StoreOp::TaskCounters {
                job: self.id,
                task,
                attempts: self.attempts.get(&task).copied().unwrap_or(0),
                failures,
            });
        }
        let retries = self.failures.get(&task).copied().unwrap_or(0)
            + self.lost.get(&task).map_or(0, |(n, _)| *n);
        let ready_at = now + policy.backoff_after(retries);
        self.not_before.insert(task, ready_at);
        self.ready_since.insert(task, ready_at);
        if !policy.counts {
            return;
        }
        // Only failures of workers with a record count toward failing the job.
        let (counted, workers) = match failure {
            Failure::Reported => self.failed_on.entry(task).or_default(),
            Failure::Lost => self.lost.entry(task).or_default(),
        };
        *counted += 1;
        workers.insert(worker.clone());
        let (failures, failed_on) = (*counted, workers.len());
        let (limit, what) = match failure {
            Failure::Reported => (policy.max_attempts, "failed"),
            Failure::Lost => (policy.max_lost_leases, "lost its lease"),
        };
        let enough_workers = limit.min(policy.live_workers.max(1) as u32) as usize;
        if failures >= limit && failed_on >= enough_workers && self.is_running() {
            let message = format!(
                "{task} {what} {failures} times on {failed_on} workers; last reason: {reason}"
            );
            self.log(now, format!("job failed: {message}"));
            self.set_status(JobStatus::Failed(message));
        }
    }

    /// Requeues every task whose lease ran out; a lost lease counts toward failing its task
    /// if its worker is `trusted`. Returns their kinds.
    pub fn expire_leases(
        &mut self,
        policy: RetryPolicy,
        trusted: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<&'static str> {
        let expired: Vec<(TaskId, &'static str, bool)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(t, l)| {
                let why = if l.expires >= l.deadline {
                    "lease reached its time limit (heartbeats do not extend a lease past it)"
                } else {
                    "lease expired (no heartbeat)"
                };
                (*t, why, trusted(&l.worker))
            })
            .collect();
        let kinds = expired.iter().map(|(t, ..)| self.task_kind(*t)).collect();
        for &(task, why, counts) in &expired {
            let policy = RetryPolicy { counts, ..policy };
            self.fail_lease(task, why, Some((policy, Failure::Lost)), now);
        }
        kinds
    }
}
