//! Dispatch: a worker's claim is answered with a ready task it can hold (by memory, by device),
//! chosen fairly between clients (weighted fair queueing) and by priority within one.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use plait_api::{ClaimTaskRequest, TaskAssignment, Work};
use plait_core::{AggLayer, JobId};
use plait_prover::ProvingParams;

use crate::job::Job;

use super::{Coordinator, SeenWorker};
use crate::error::CoordinatorError;
use crate::fair_share::FairShare;

impl Coordinator {
    /// Hands the worker a task that fits it, waiting up to the claim wait for one to appear.
    pub async fn claim(
        &self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
    ) -> Result<Option<TaskAssignment>, CoordinatorError> {
        if worker.backend != self.backend_info.name
            || worker.backend_version != self.backend_info.version
        {
            return Err(CoordinatorError::IncompatibleWorker {
                worker: format!("{} {}", worker.backend, worker.backend_version),
                coordinator: format!("{} {}", self.backend_info.name, self.backend_info.version),
            });
        }
        worker
            .check_bounds()
            .map_err(CoordinatorError::BadRequest)?;
        self.check_not_banned(worker_id)?;
        self.note_worker(worker_id, worker);
        let deadline = tokio::time::Instant::now() + self.config.claim_wait;
        loop {
            // Register interest before looking, so a notification between the look and the
            // wait is not lost.
            let notified = self.work_available.notified();
            if let Some(task) = self.try_lease(worker_id, worker) {
                // The lease's attempt number must be durable before the worker uses it, so
                // that a restarted coordinator never reissues it.
                if let Err(e) = self.flush().await {
                    self.withdraw_lease(worker_id, &task, &e);
                    return Err(e);
                }
                self.job_changed.notify_waiters();
                return Ok(Some(task));
            }
            // Look again at least every second: a task's retry backoff ends without a
            // notification.
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(None);
            }
        }
    }

    /// Takes back a lease whose grant could not be stored (the worker is told so and never
    /// gets it): the task is ready again at once, and this does not count against it or the
    /// worker as a lost lease would. The attempt number stays used (its write is retried with
    /// the next flush), so a later lease of the task gets a higher one.
    pub(super) fn withdraw_lease(
        &self,
        worker: &str,
        task: &TaskAssignment,
        error: &CoordinatorError,
    ) {
        let reason = format!("its lease could not be stored ({error}); it was never handed out");
        let withdrawn = self.with_lease(task.job_id, task.task_id, task.attempt, worker, |j| {
            j.fail_attempt(
                task.task_id,
                task.attempt,
                &task.lease_secret,
                &reason,
                None,
                Instant::now(),
            )
        });
        if let Err(e) = withdrawn {
            tracing::warn!(job = %task.job_id, task = %task.task_id, "withdrawing a lease: {e}");
        }
        self.work_available.notify_waiters();
    }

    /// Records that the worker is live, with its device profile if that fits this coordinator.
    pub(super) fn note_worker(&self, worker_id: &str, worker: &ClaimTaskRequest) {
        self.identities
            .lock()
            .expect("identities lock")
            .saw(worker_id);
        let mut seen = self.workers_seen.lock().expect("workers lock");
        let first_claim = !seen.contains_key(worker_id);
        let profile = worker.device_profile.clone().filter(|p| {
            let info = &self.backend_info;
            let tree = ProvingParams::default().tree;
            match p.check(env!("CARGO_PKG_VERSION"), &info.name, &info.version, tree) {
                Ok(()) => true,
                Err(e) => {
                    if first_claim {
                        tracing::warn!(worker = %worker_id, "device profile ignored: {e}");
                    }
                    false
                }
            }
        });
        seen.insert(
            worker_id.to_string(),
            SeenWorker {
                at: Instant::now(),
                memory_bytes: worker.memory_bytes,
                profile,
                proves_on: worker.device.clone(),
            },
        );
    }

    /// How long a lease of `work` (with its children's proof bytes, for a node whose children
    /// are accepted) may last at most: four times what the worker's profile predicts, plus two minutes (and ten for a keygen if it holds no keys for the height),
    /// never more than the configured ceiling, which also serves without a prediction.
    /// (Called once per lease granted, with the jobs lock held: it takes the workers lock
    /// after it, as no other path takes them the other way round.)
    pub(super) fn time_limit(
        &self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
        params: &ProvingParams,
        (work, child_proof_bytes): (&Work, Option<u64>),
    ) -> Duration {
        let ceiling = self.config.max_lease;
        let seen = self.workers_seen.lock().expect("workers lock");
        // The profile note_worker kept, if it fits this coordinator.
        let Some(profile) = seen.get(worker_id).and_then(|w| w.profile.as_ref()) else {
            return ceiling;
        };
        let predicted = match work {
            Work::ProveSegment { segment, .. } => {
                profile.segment_seconds(params.segment_height, segment.num_insns)
            }
            Work::Aggregate { layer, children } => {
                profile.node_seconds(*layer, children.len() as u32, child_proof_bytes)
            }
        };
        let keygen = if worker.key_sets.contains(&params.key_set()) {
            0.0
        } else {
            600.0
        };
        let seconds = 4.0 * predicted + 120.0 + keygen;
        if seconds.is_finite() && seconds > 0.0 {
            Duration::from_secs_f64(seconds).min(ceiling)
        } else {
            ceiling
        }
    }

    pub(super) fn try_lease(
        &self,
        worker_id: &str,
        worker: &ClaimTaskRequest,
    ) -> Option<TaskAssignment> {
        let now = Instant::now();
        // Each phase's need is looked up once per claim, and the other live workers only if a
        // task this worker failed comes up; a job none of whose ready tasks fits the worker
        // says so from its ready summary, without a walk of its tasks.
        let needs = std::cell::RefCell::new(HashMap::new());
        let on_gpu = worker.gpu().is_some();
        let need = |p: &ProvingParams, program: &str, layer: Option<AggLayer>| {
            // Segments' needs are learned per program; nodes' are the same for every program.
            let program = if layer.is_none() { program } else { "" };
            *needs
                .borrow_mut()
                .entry((p.key_set(), layer, program.to_string()))
                .or_insert_with(|| match on_gpu {
                    true => self.device_memory_need(p, layer),
                    false => self.memory_need(p, program, layer),
                })
        };
        // A task this worker just failed goes to another worker, if one that fits is live; a
        // task a worker without a record failed goes to a worker with one, if one that fits is
        // live, so that new identities taking turns cannot keep it from the proven workers.
        let others = std::cell::OnceCell::new();
        let claimant_trusted = std::cell::OnceCell::new();
        let leave_to_others = |failed_by: &str, need: u64| {
            let others = others.get_or_init(|| self.other_live_workers(worker_id));
            if failed_by == worker_id {
                return others.iter().any(|&(m, _)| need <= m);
            }
            !*claimant_trusted.get_or_init(|| self.is_trusted(worker_id))
                && !self.is_trusted(failed_by)
                && others.iter().any(|&(m, trusted)| trusted && need <= m)
        };
        let time_limit = |params: &ProvingParams, work: &Work, child_proof_bytes: Option<u64>| {
            self.time_limit(worker_id, worker, params, (work, child_proof_bytes))
        };
        // Read before the jobs lock is taken: the two locks are never held together.
        let weights: HashMap<String, u32> = self
            .clients
            .lock()
            .expect("clients lock")
            .all()
            .map(|c| (c.id.clone(), c.limits.weight))
            .collect();
        let mut jobs = self.jobs.lock().expect("jobs lock");
        // A worker holds at most as many leases as it has slots: one that claims everything
        // cannot hold more than its share.
        let held: usize = jobs.values().map(|j| j.leases_held_by(worker_id)).sum();
        if held >= worker.slots as usize {
            return None;
        }
        // Local workers share one machine's memory: what the tasks already leased need is
        // not there for another.
        let memory_left = match self.config.local_machine_memory {
            None => u64::MAX,
            Some(machine) => {
                let leased: u64 = jobs.values().map(|j| j.leased_memory_need(&need)).sum();
                match machine.saturating_sub(leased) {
                    0 => return None,
                    left => left,
                }
            }
        };
        // Clients share the pool by weighted fair queueing on leases: each lease costs its
        // client 1/weight, and the client that has been served least goes first; a client
        // that (re)joins starts at the current virtual time, so idling earns no credit.
        // Within a client: a job whose keys the worker holds before one that would cost it a
        // keygen, then the higher priority, then the older.
        let mut fair = self.fair_share.lock().expect("fair share lock");
        let now_virtual = fair.now;
        for job in jobs.values().filter(|j| j.is_running()) {
            let served = fair.served.entry(job.owner.client.clone()).or_default();
            *served = (*served).max(now_virtual);
        }
        let holds_keys = |job: &Job| worker.key_sets.contains(&job.params.key_set());
        let mut order: Vec<(u64, bool, std::cmp::Reverse<i32>, JobId)> = jobs
            .values()
            .filter(|job| job.is_running())
            .map(|job| {
                (
                    fair.served[&job.owner.client],
                    !holds_keys(job),
                    std::cmp::Reverse(job.owner.priority),
                    job.id,
                )
            })
            .collect();
        order.sort_unstable();
        let leased = order.into_iter().find_map(|(.., id)| {
            let job = jobs.get_mut(&id)?;
            let task = job.lease_next(
                worker_id,
                worker,
                memory_left,
                self.config.lease,
                now,
                &need,
                &leave_to_others,
                &time_limit,
            )?;
            self.collect_writes(job);
            self.metrics
                .leases_granted
                .with_label_values(&[job.task_kind(task.task_id)])
                .inc();
            let weight = weights.get(&job.owner.client).copied().unwrap_or(1).max(1);
            let fair = &mut *fair;
            let served = fair.served.entry(job.owner.client.clone()).or_default();
            fair.now = *served;
            *served += FairShare::LEASE_COST / weight as u64;
            Some(task)
        });
        leased
    }
}
