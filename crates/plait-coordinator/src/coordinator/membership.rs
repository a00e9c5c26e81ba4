//! Membership: worker identities (registration, credentials issued by the operator, bans) and
//! clients (credentials, limits), and the live pool as last seen.

use std::collections::HashMap;

use plait_core::JobId;

use crate::{
    clients::{Client, DEFAULT_CLIENT, MAX_WEIGHT},
    identities::{Ban, Identity},
    store::StoreOp,
};

use super::{Coordinator, WorkerCaller};
use crate::clock::unix_ms;
use crate::error::CoordinatorError;

impl Coordinator {
    /// Forgets workers that have not asked for work for a lease period, and the identities of
    /// registered workers idle for [`CoordinatorConfig::worker_idle`]: neither
    /// table grows with every worker that ever joined.
    pub(super) fn forget_gone_workers(&self) {
        let recent = self.live_window();
        self.workers_seen
            .lock()
            .expect("workers lock")
            .retain(|_, w| w.at.elapsed() <= recent);
        let holding = self.leases_held();
        let gone = self
            .identities
            .lock()
            .expect("identities lock")
            .prune(self.config.worker_idle, |id| holding.contains_key(id));
        if !gone.is_empty() {
            tracing::info!(count = gone.len(), "forgot idle registered workers");
            self.forget_identities(gone);
        }
    }

    /// Drops what is kept about forgotten identities, and records that they are gone.
    pub(super) fn forget_identities(&self, gone: Vec<String>) {
        let mut done = self.tasks_done.lock().expect("tasks done lock");
        for id in &gone {
            done.remove(id);
        }
        drop(done);
        self.outbox
            .lock()
            .expect("outbox lock")
            .extend(gone.into_iter().map(|id| StoreOp::ForgetWorker { id }));
    }

    pub(super) fn store_identity(&self, identity: Option<Identity>) {
        if let Some(identity) = identity {
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::WorkerIdentity(identity));
        }
    }

    /// Who presents `token` on a worker route: the pool (its worker token, which only
    /// registers) or a worker (its own credential). Anything else, and a banned worker, is
    /// refused.
    pub fn authenticate_worker(&self, token: &str) -> Result<WorkerCaller, CoordinatorError> {
        use subtle::ConstantTimeEq;
        let pool = &self.config.worker_token;
        if !pool.is_empty() && bool::from(token.as_bytes().ct_eq(pool.as_bytes())) {
            return Ok(WorkerCaller::Pool);
        }
        // Bound first: the identities lock must be released before the ban check takes it.
        let id = self
            .identities
            .lock()
            .expect("identities lock")
            .identify(token)
            .ok_or(CoordinatorError::Unauthorized("worker"))?;
        self.check_not_banned(&id)?;
        Ok(WorkerCaller::Worker(id))
    }

    /// A new identity for a worker that presented the pool token: its id and credential.
    pub async fn register_worker(&self, name: &str) -> Result<(String, String), CoordinatorError> {
        plait_api::check_worker_name("name", name).map_err(CoordinatorError::BadRequest)?;
        if self.config.worker_token.is_empty() {
            return Err(CoordinatorError::RegistrationClosed);
        }
        // The table is bounded, so that a flood of registrations cannot exhaust memory. When
        // it is full, a registered identity that is not working (unseen for longer than a
        // live worker's silence, holding no lease) makes room: a flood of registrations
        // that are never used cannot keep later workers out.
        let known = self.identities.lock().expect("identities lock").len();
        // Taken before the identities lock (the lock order elsewhere is jobs, then identities).
        let holding = (known >= self.config.max_workers).then(|| self.leases_held());
        let (identity, credential, displaced) = {
            let mut identities = self.identities.lock().expect("identities lock");
            let mut displaced = None;
            if identities.len() >= self.config.max_workers {
                // No lease holders read: the table filled since `known` was read. Refusing
                // (the worker retries) is safe; displacing without knowing who works is not.
                displaced = holding.as_ref().and_then(|holding| {
                    identities.displace_stalest(self.live_window(), |id| holding.contains_key(id))
                });
                if displaced.is_none() {
                    return Err(CoordinatorError::PoolFull {
                        limit: self.config.max_workers,
                        live_secs: self.live_window().as_secs(),
                    });
                }
            }
            let (identity, credential) = identities.register(name, unix_ms());
            (identity, credential, displaced)
        };
        if let Some(displaced) = displaced {
            tracing::info!(worker = %displaced, "forgot an idle registered worker to make room for a new one");
            self.forget_identities(vec![displaced]);
        }
        let id = identity.id.clone();
        self.store_identity(Some(identity));
        // A worker uses its credential only once it is stored.
        self.flush().await?;
        tracing::info!(worker = %id, "worker registered");
        Ok((id, credential))
    }

    /// Issues a credential for a worker of the operator's naming (a closed pool's way in).
    /// The client a bearer token names: the shared client token is the client `default`,
    /// any other must be a credential the operator issued.
    pub fn authenticate_client(&self, token: &str) -> Result<String, CoordinatorError> {
        use subtle::ConstantTimeEq;
        let shared = &self.config.client_token;
        if !shared.is_empty() && bool::from(token.as_bytes().ct_eq(shared.as_bytes())) {
            return Ok(DEFAULT_CLIENT.into());
        }
        self.clients
            .lock()
            .expect("clients lock")
            .identify(token)
            .ok_or(CoordinatorError::Unauthorized("client"))
    }

    /// Issues a credential for a new client with `limits`.
    pub async fn issue_client(
        &self,
        id: &str,
        limits: plait_api::ClientLimits,
    ) -> Result<String, CoordinatorError> {
        plait_api::check_worker_name("client-id", id).map_err(CoordinatorError::BadRequest)?;
        if !(1..=MAX_WEIGHT).contains(&limits.weight) {
            return Err(CoordinatorError::BadRequest(format!(
                "a client's weight is 1 to {MAX_WEIGHT}"
            )));
        }
        // A revoked client's name is not issued again while its jobs are kept: the new
        // holder would see and act on them.
        self.flush().await?;
        if self.store.client_has_jobs(id).await? {
            return Err(CoordinatorError::ClientExists(id.to_string()));
        }
        let (client, credential) = self
            .clients
            .lock()
            .expect("clients lock")
            .issue(id, limits, unix_ms())
            .ok_or_else(|| CoordinatorError::ClientExists(id.to_string()))?;
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::Client(client));
        self.flush().await?;
        Ok(credential)
    }

    /// Revokes a client's credential; its jobs run on, out of its reach.
    pub async fn revoke_client(&self, id: &str) -> Result<(), CoordinatorError> {
        if !self.clients.lock().expect("clients lock").revoke(id) {
            return Err(CoordinatorError::UnknownClient(id.to_string()));
        }
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetClient { id: id.to_string() });
        self.flush().await
    }

    /// The operator's view of the clients, sorted by id.
    pub fn clients(&self) -> Vec<plait_api::ClientRecord> {
        let (mut in_flight, mut leases) = (HashMap::new(), HashMap::new());
        for job in self.jobs.lock().expect("jobs lock").values() {
            if job.status.is_live() {
                *in_flight.entry(job.owner.client.clone()).or_insert(0u32) += 1;
                *leases.entry(job.owner.client.clone()).or_insert(0u32) +=
                    job.lease_holders().map(|(_, n)| n as u32).sum::<u32>();
            }
        }
        let clients = self.clients.lock().expect("clients lock");
        let owners = self.program_owners.lock().expect("program owners lock");
        let mut records: Vec<_> = clients
            .all()
            .map(|c: &Client| plait_api::ClientRecord {
                client_id: c.id.clone(),
                created_unix_ms: c.created_unix_ms,
                limits: c.limits,
                jobs_in_flight: in_flight.get(&c.id).copied().unwrap_or(0),
                leases: leases.get(&c.id).copied().unwrap_or(0),
                program_bytes: owners.bytes_of(&c.id),
            })
            .collect();
        if !self.config.client_token.is_empty() {
            records.push(plait_api::ClientRecord {
                client_id: DEFAULT_CLIENT.into(),
                created_unix_ms: 0,
                limits: clients.limits(DEFAULT_CLIENT),
                jobs_in_flight: in_flight.get(DEFAULT_CLIENT).copied().unwrap_or(0),
                leases: leases.get(DEFAULT_CLIENT).copied().unwrap_or(0),
                program_bytes: owners.bytes_of(DEFAULT_CLIENT),
            });
        }
        records.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        records
    }

    /// Refuses a client's call about a job that is not its own as if the job did not exist:
    /// a client learns nothing of another's jobs.
    pub async fn check_owner(&self, job: JobId, client: &str) -> Result<(), CoordinatorError> {
        let in_memory = self
            .jobs
            .lock()
            .expect("jobs lock")
            .get(&job)
            .map(|j| j.owner.client.clone());
        // An ended job is not read back whole for this: its owner is one column.
        let owner = match in_memory {
            Some(owner) => Some(owner),
            None if self.was_submitted(job) => {
                self.flush().await?;
                self.store.job_client(job).await?
            }
            None => None,
        };
        match owner {
            Some(owner) if owner == client => Ok(()),
            _ => Err(CoordinatorError::UnknownJob(job)),
        }
    }

    /// Issues a credential for a new worker identity `id` (a closed pool's way in); returns the credential, shown once.
    pub async fn issue_worker(&self, id: &str) -> Result<String, CoordinatorError> {
        plait_api::check_worker_name("worker-id", id).map_err(CoordinatorError::BadRequest)?;
        let (identity, credential) = self
            .identities
            .lock()
            .expect("identities lock")
            .issue(id, unix_ms())
            .ok_or_else(|| CoordinatorError::WorkerExists(id.to_string()))?;
        self.store_identity(Some(identity));
        self.flush().await?;
        Ok(credential)
    }

    /// Revokes a worker's credential: its next call is refused, and its leases lapse.
    pub async fn revoke_worker(&self, id: &str) -> Result<(), CoordinatorError> {
        if !self.identities.lock().expect("identities lock").revoke(id) {
            return Err(CoordinatorError::UnknownWorker(id.to_string()));
        }
        self.tasks_done.lock().expect("tasks done lock").remove(id);
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetWorker { id: id.to_string() });
        self.flush().await
    }

    /// Bans a worker (`Some(reason)`) or lifts its ban (`None`, which also clears its
    /// rejection count). A banned worker gets no work and its calls are refused, so its
    /// leases lapse at their next missed heartbeat.
    pub async fn set_worker_ban(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        if let Some(reason) = reason {
            if reason.is_empty() || reason.len() > plait_api::limits::BAN_REASON_BYTES {
                return Err(CoordinatorError::BadRequest(format!(
                    "a ban's reason must be 1 to {} bytes",
                    plait_api::limits::BAN_REASON_BYTES
                )));
            }
        }
        let changed = self
            .identities
            .lock()
            .expect("identities lock")
            .update(id, |identity| match reason {
                Some(reason) => {
                    identity.ban = Some(Ban {
                        reason: reason.to_string(),
                        at_unix_ms: unix_ms(),
                        by_operator: true,
                    })
                }
                None => {
                    identity.ban = None;
                    identity.rejections = 0;
                }
            })
            .ok_or_else(|| CoordinatorError::UnknownWorker(id.to_string()))?;
        tracing::info!(worker = %id, banned = reason.is_some(), "operator changed a worker's ban");
        self.store_identity(Some(changed));
        self.flush().await
    }

    /// Every worker identity, for the operator: with whether it is live, the memory it
    /// advertised and the leases it holds.
    pub fn workers(&self) -> Vec<plait_api::WorkerRecord> {
        let recent = self.live_window();
        // The jobs lock is released before the workers lock is taken (lease grants take them
        // the other way round).
        let leases = self.leases_held();
        let mut current: HashMap<String, Vec<String>> = HashMap::new();
        for job in self.jobs.lock().expect("jobs lock").values() {
            for (worker, task) in job.leased_tasks() {
                current
                    .entry(worker.to_string())
                    .or_default()
                    .push(format!("{}/{task}", job.id));
            }
        }
        let done = self.tasks_done.lock().expect("tasks done lock").clone();
        let seen = self.workers_seen.lock().expect("workers lock");
        self.identities.lock().expect("identities lock").records(
            |id| {
                let worker = seen.get(id);
                (
                    worker.is_some_and(|w| w.at.elapsed() <= recent),
                    worker.map_or(0, |w| w.memory_bytes),
                    leases.get(id).copied().unwrap_or(0) as u32,
                )
            },
            |record| {
                let id = &record.worker_id;
                record.device = seen
                    .get(id)
                    .and_then(|w| w.profile.as_ref())
                    .map(|p| p.device.clone());
                record.proves_on = seen.get(id).and_then(|w| w.proves_on.clone());
                record.current_tasks = current.get(id).cloned().unwrap_or_default();
                record.tasks_done = done.get(id).copied().unwrap_or(0);
            },
        )
    }
}
