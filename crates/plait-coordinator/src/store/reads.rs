//! Reading the store back: the snapshot a coordinator opens from, and jobs, programs and clients
//! asked for once they left memory.

//!
//! The coordinator keeps live state (leases, the task graph) in memory and writes every change
//! that must survive a restart through here, in order, before it answers the caller: a result
//! is "accepted" only once its proof is stored. On start it reloads the jobs that are not over
//! ([`Store::load`]); leases are not stored, so tasks that were in flight are simply handed out
//! again. Jobs that ended are read one at a time when asked for ([`Store::load_job`]).
//!
//! SQLite (the embedded default) and PostgreSQL (a cluster) share one SQL dialect through
//! sqlx's `Any` driver; only the column type for bytes differs.

use std::collections::BTreeMap;

use plait_core::{JobId, TaskId};
use plait_prover::KeySetId;

use crate::{
    clients::Client,
    identities::{Ban, Identity, Origin},
    job_status::JobStatus,
};
use sqlx::Row;

use super::{JobOwner, JobRecord, Snapshot, Store, StoreError, StoredJob, StoredTask};

impl Store {
    /// Reads back what a coordinator needs to resume: programs, workers, learned node memory,
    /// and the jobs that are not over (see `JobFilter::Resident`).
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.pool.acquire().await?;
        // Only the programs of the jobs it resumes: the others are read when asked for.
        let programs = sqlx::query(&format!(
            "SELECT sha256, elf FROM programs WHERE sha256 IN \
             (SELECT j.program_sha256 FROM jobs j WHERE {}) ORDER BY sha256",
            JobFilter::Resident.condition()
        ))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let worker_identities = sqlx::query(
            "SELECT id, origin, name, credential_sha256, created_unix_ms, rejections, \
             banned_unix_ms, ban_reason, banned_by_operator FROM credentials \
             WHERE role = 'worker' ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(identity_from_row)
        .collect::<Result<_, StoreError>>()?;
        let node_memory = sqlx::query(
            "SELECT vm_config, segment_height, layer, peak_bytes FROM memory_needs \
             ORDER BY vm_config, segment_height, layer",
        )
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|row| {
            let config: String = row.try_get(0)?;
            let keys = KeySetId {
                vm_config: config.parse().map_err(StoreError::Corrupt)?,
                segment_height: row.try_get::<i64, _>(1)? as u32,
            };
            Ok((keys, row.try_get(2)?, row.try_get::<i64, _>(3)? as u64))
        })
        .collect::<Result<_, StoreError>>()?;
        let clients = sqlx::query(
            "SELECT id, credential_sha256, created_unix_ms, limits FROM credentials \
             WHERE role = 'client' ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(client_from_row)
        .collect::<Result<_, StoreError>>()?;
        let last_job_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM jobs")
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        Ok(Snapshot {
            programs,
            jobs: self.read_jobs(JobFilter::Resident).await?,
            last_job_id: last_job_id.unwrap_or(0) as u64,
            worker_identities,
            node_memory,
            clients,
        })
    }

    /// The client a stored job belongs to, if it is stored.
    pub async fn job_client(&self, job: JobId) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT client FROM jobs WHERE id = $1")
            .bind(job.0 as i64)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The program `sha256`, if `client` uploaded it.
    pub async fn program_of(
        &self,
        client: &str,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT p.elf FROM programs p JOIN program_owners o ON o.sha256 = p.sha256 \
             WHERE p.sha256 = $1 AND o.client = $2",
        )
        .bind(sha256)
        .bind(client)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Which client keeps which program, with its size in bytes.
    pub async fn program_ownership(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT o.client, o.sha256, CAST(length(p.elf) AS BIGINT) FROM program_owners o \
             JOIN programs p ON p.sha256 = o.sha256",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(client, sha256, bytes)| (client, sha256, bytes as u64))
            .collect())
    }

    /// Whether the store holds the program `sha256` at all.
    pub async fn has_program(&self, sha256: &str) -> Result<bool, StoreError> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM programs WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// The program `sha256`, whoever uploaded it.
    pub async fn program(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT elf FROM programs WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Whether any stored job belongs to `client`.
    pub async fn client_has_jobs(&self, client: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE client = $1 LIMIT 1")
                .bind(client)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// One job with everything recorded about it, if it is stored.
    pub async fn load_job(&self, job: JobId) -> Result<Option<StoredJob>, StoreError> {
        Ok(self.read_jobs(JobFilter::One(job)).await?.pop())
    }

    /// The ids of `client`'s stored jobs below `before`, newest first, at most `limit`.
    pub async fn job_ids_of(
        &self,
        client: &str,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        let before = before.map_or(i64::MAX, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT id FROM jobs WHERE client = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(client.to_string())
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|id| JobId(id as u64))
        .collect())
    }

    /// Every stored job's id, oldest first.
    pub async fn job_ids(&self) -> Result<Vec<JobId>, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT id FROM jobs ORDER BY id")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|id| JobId(id as u64))
                .collect(),
        )
    }

    /// Succeeded and cancelled jobs that ended at or before `ended_by_unix_ms` and whose
    /// blobs were not deleted yet.
    pub async fn jobs_due_for_blob_deletion(
        &self,
        ended_by_unix_ms: i64,
    ) -> Result<Vec<JobId>, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT id FROM jobs WHERE state IN ('succeeded', 'cancelled') \
             AND blobs_deleted_unix_ms IS NULL AND ended_unix_ms <= $1 ORDER BY id",
        )
        .bind(ended_by_unix_ms)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|id| JobId(id as u64))
        .collect())
    }

    async fn read_jobs(&self, filter: JobFilter) -> Result<Vec<StoredJob>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let condition = filter.condition();
        let mut jobs: BTreeMap<i64, StoredJob> = BTreeMap::new();
        let select_jobs = format!(
            "SELECT j.id, j.program_sha256, j.input, j.params, j.plan, j.submitted_unix_ms, \
             j.state, j.reason, j.final_proof, j.prediction, j.execution, j.public_values, \
             j.client, j.priority \
             FROM jobs j WHERE {condition} ORDER BY j.id"
        );
        for row in filter
            .bind(sqlx::query(&select_jobs))
            .fetch_all(&mut *conn)
            .await?
        {
            let id: i64 = row.try_get(0)?;
            let state: String = row.try_get(6)?;
            let record = JobRecord {
                id: JobId(id as u64),
                program_sha256: row.try_get(1)?,
                input_json: row.try_get(2)?,
                params_json: row.try_get(3)?,
                plan_json: row.try_get(4)?,
                submitted_unix_ms: row.try_get(5)?,
                state: JobStatus::from_columns(&state, row.try_get(7)?, row.try_get(8)?)?,
                prediction_json: row.try_get(9)?,
                // Jobs planned whole before storing (schema 2) have no execution column.
                execution_ended: row.try_get::<Option<String>, _>(10)?.as_deref()
                    != Some("running"),
                public_values: row.try_get(11)?,
                owner: JobOwner {
                    client: row.try_get(12)?,
                    priority: row.try_get::<i64, _>(13)? as i32,
                },
            };
            jobs.insert(
                id,
                StoredJob {
                    record,
                    segments: Vec::new(),
                    tasks: BTreeMap::new(),
                    events: Vec::new(),
                },
            );
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let of_jobs = format!("job_id IN (SELECT j.id FROM jobs j WHERE {condition})");
        let select_tasks = format!(
            "SELECT job_id, task_id, attempts, failures, proof_sha256, timing FROM tasks \
             WHERE {of_jobs} ORDER BY job_id, task_id"
        );
        for row in filter
            .bind(sqlx::query(&select_tasks))
            .fetch_all(&mut *conn)
            .await?
        {
            let job: i64 = row.try_get(0)?;
            let task: i64 = row.try_get(1)?;
            let proof: Option<String> = row.try_get(4)?;
            // A task is accepted exactly when its timing is stored (with its proof's name).
            let timing: Option<String> = row.try_get(5)?;
            let accepted = match (proof, timing) {
                (Some(proof), Some(timing)) => Some((proof, timing)),
                (None, None) => None,
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "job-{job} task-{task}: a proof without timing or a timing without proof"
                    )))
                }
            };
            let stored = StoredTask {
                attempts: row.try_get::<i64, _>(2)? as u32,
                failures: row.try_get::<i64, _>(3)? as u32,
                accepted,
            };
            jobs.get_mut(&job)
                .ok_or_else(|| StoreError::Corrupt(format!("task of unknown job-{job}")))?
                .tasks
                .insert(TaskId(task as u32), stored);
        }
        let select_segments =
            format!("SELECT job_id, idx, spec FROM segments WHERE {of_jobs} ORDER BY job_id, idx");
        for row in filter
            .bind(sqlx::query(&select_segments))
            .fetch_all(&mut *conn)
            .await?
        {
            let job: i64 = row.try_get(0)?;
            let index: i64 = row.try_get(1)?;
            let stored = jobs
                .get_mut(&job)
                .ok_or_else(|| StoreError::Corrupt(format!("segment of unknown job-{job}")))?;
            if index as usize != stored.segments.len() {
                return Err(StoreError::Corrupt(format!(
                    "job-{job}: segment {index} stored, {} expected",
                    stored.segments.len()
                )));
            }
            stored.segments.push(row.try_get(2)?);
        }
        let select_events = format!(
            "SELECT job_id, at_seconds, message FROM events WHERE {of_jobs} \
             ORDER BY job_id, seq"
        );
        for row in filter
            .bind(sqlx::query(&select_events))
            .fetch_all(&mut *conn)
            .await?
        {
            let job: i64 = row.try_get(0)?;
            jobs.get_mut(&job)
                .ok_or_else(|| StoreError::Corrupt(format!("event of unknown job-{job}")))?
                .events
                .push((row.try_get(1)?, row.try_get(2)?));
        }
        Ok(jobs.into_values().collect())
    }
}

fn client_from_row(row: &sqlx::any::AnyRow) -> Result<Client, StoreError> {
    let id: String = row.try_get(0)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("client {id}: {what}"));
    let mut credential_sha256 = [0u8; 32];
    hex::decode_to_slice(row.try_get::<String, _>(1)?, &mut credential_sha256)
        .map_err(|_| corrupt("credential hash is not 32 bytes of hex"))?;
    let limits: Option<String> = row.try_get(3)?;
    let limits = match limits {
        Some(json) => serde_json::from_str(&json).map_err(|e| corrupt(&e.to_string()))?,
        None => Default::default(),
    };
    Ok(Client {
        credential_sha256,
        created_unix_ms: row.try_get(2)?,
        limits,
        id,
    })
}

fn identity_from_row(row: &sqlx::any::AnyRow) -> Result<Identity, StoreError> {
    let id: String = row.try_get(0)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("worker {id}: {what}"));
    let origin: String = row.try_get(1)?;
    let mut credential_sha256 = [0u8; 32];
    hex::decode_to_slice(row.try_get::<String, _>(3)?, &mut credential_sha256)
        .map_err(|_| corrupt("credential hash is not 32 bytes of hex"))?;
    let banned_at: Option<i64> = row.try_get(6)?;
    let ban = match banned_at {
        Some(at_unix_ms) => Some(Ban {
            reason: row.try_get::<Option<String>, _>(7)?.unwrap_or_default(),
            at_unix_ms,
            by_operator: row.try_get::<Option<i64>, _>(8)?.unwrap_or(0) != 0,
        }),
        None => None,
    };
    Ok(Identity {
        origin: Origin::parse(&origin).ok_or_else(|| corrupt("unknown origin"))?,
        name: row.try_get(2)?,
        credential_sha256,
        created_unix_ms: row.try_get(4)?,
        rejections: row.try_get::<i64, _>(5)? as u32,
        ban,
        id,
    })
}

/// Which jobs [`Store::read_jobs`] reads.
enum JobFilter {
    /// Live jobs, and jobs whose execution has not ended (unless cancelled): what a
    /// coordinator keeps in memory.
    Resident,
    One(JobId),
}

impl JobFilter {
    /// The condition on the `jobs` table (as `j`), binding the job id as `$1` for `One`.
    fn condition(&self) -> &'static str {
        match self {
            Self::Resident => {
                "(j.state IN ('running', 'paused') OR \
                 (j.execution = 'running' AND j.state <> 'cancelled'))"
            }
            Self::One(_) => "j.id = $1",
        }
    }

    fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Self::Resident => query,
            Self::One(job) => query.bind(job.0 as i64),
        }
    }
}
