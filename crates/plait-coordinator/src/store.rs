//! Durable job state.
//!
//! The coordinator keeps live state (leases, the task graph) in memory and writes every change
//! that must survive a restart through here, in order, before it answers the caller: a result
//! is "accepted" only once its proof is stored. On start it reloads everything
//! ([`Store::load`]); leases are not stored, so tasks that were in flight are simply handed out
//! again.
//!
//! SQLite (the embedded default) and PostgreSQL (a cluster) share one SQL dialect through
//! sqlx's `Any` driver; only the column type for bytes differs.

use std::{collections::BTreeMap, sync::Arc};

use plait_core::{AggTreeShape, JobId, TaskGraph, TaskId};

use crate::{blobs::BlobStore, JobStatus};
use sqlx::{any::AnyPoolOptions, AnyPool, Row};

/// A job's state is stored as (state, reason, final proof) columns.
impl JobStatus {
    fn columns(&self) -> (&'static str, Option<String>, Option<Vec<u8>>) {
        match self {
            Self::Running => ("running", None, None),
            Self::Paused => ("paused", None, None),
            Self::Cancelled => ("cancelled", None, None),
            Self::Succeeded(proof) => ("succeeded", None, Some(proof.clone())),
            Self::Failed(reason) => ("failed", Some(reason.clone()), None),
        }
    }

    fn from_columns(
        state: &str,
        reason: Option<String>,
        proof: Option<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        Ok(match (state, reason, proof) {
            ("running", ..) => Self::Running,
            ("paused", ..) => Self::Paused,
            ("cancelled", ..) => Self::Cancelled,
            ("succeeded", _, Some(proof)) => Self::Succeeded(proof),
            ("failed", reason, _) => Self::Failed(reason.unwrap_or_default()),
            (other, ..) => {
                return Err(StoreError::Corrupt(format!("unknown job state {other:?}")));
            }
        })
    }
}

/// A job as submitted. The JSON members are the coordinator's own types, serialized.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub program_sha256: String,
    pub input_json: String,
    pub params_json: String,
    pub plan_json: String,
    pub submitted_unix_ms: i64,
    pub state: JobStatus,
    /// The planner's prediction for the job (JSON), if the coordinator could make one.
    pub prediction_json: Option<String>,
    /// Whether the program's execution has ended (successfully or not).
    pub execution_ended: bool,
    /// The public values, once execution ended successfully.
    pub public_values: Option<Vec<u8>>,
}

/// One change to durable state.
#[derive(Clone, Debug)]
pub enum StoreOp {
    Program {
        sha256: String,
        bytes: Arc<Vec<u8>>,
    },
    InsertJob(JobRecord),
    /// A segment execution cut (JSON of its spec).
    Segment {
        job: JobId,
        index: u32,
        spec_json: String,
    },
    /// Execution ended: with the public values, or with none after a failure or a cancel.
    ExecutionEnded {
        job: JobId,
        public_values: Option<Vec<u8>>,
    },
    Prediction {
        job: JobId,
        prediction_json: String,
    },
    JobState {
        job: JobId,
        state: JobStatus,
    },
    Event {
        job: JobId,
        seq: u32,
        at_seconds: f64,
        message: String,
    },
    /// How often a task was leased and how often it failed (counted against the task).
    TaskCounters {
        job: JobId,
        task: TaskId,
        attempts: u32,
        failures: u32,
    },
    /// A verified proof (already in the blob store under `proof_sha256`), with its timing
    /// record (JSON).
    TaskAccepted {
        job: JobId,
        task: TaskId,
        proof_sha256: String,
        timing_json: String,
    },
    WorkerRejections {
        worker: String,
        rejections: u32,
    },
}

/// A task's stored row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredTask {
    pub attempts: u32,
    pub failures: u32,
    /// Once accepted: the SHA-256 of its proof (a blob of the job) and its timing (JSON).
    pub accepted: Option<(String, String)>,
}

/// One job with everything recorded about it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredJob {
    pub record: JobRecord,
    /// The segments cut so far (JSON), in order.
    pub segments: Vec<String>,
    pub tasks: BTreeMap<TaskId, StoredTask>,
    /// (at_seconds, message), in order.
    pub events: Vec<(f64, String)>,
}

/// Everything a coordinator needs to resume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub programs: Vec<(String, Vec<u8>)>,
    pub jobs: Vec<StoredJob>,
    pub worker_rejections: Vec<(String, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    BadUrl(String),
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("blob store: {0}")]
    Blobs(String),
}

/// The schema's version, recorded in the store. An older store is migrated on open; a newer
/// one is refused.
const SCHEMA_VERSION: &str = "3";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    url_for_display: String,
    blobs: BlobStore,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url_for_display)
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url`: `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (connect_url, bytes_type, is_sqlite) = if let Some(path) = url.strip_prefix("sqlite://")
        {
            if path.is_empty() {
                return Err(StoreError::BadUrl(url.into()));
            }
            (format!("sqlite://{path}?mode=rwc"), "BLOB", true)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (url.to_string(), "BYTEA", false)
        } else {
            return Err(StoreError::BadUrl(url.into()));
        };
        let mut options = AnyPoolOptions::new().max_connections(if is_sqlite { 1 } else { 4 });
        if is_sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL with synchronous=NORMAL survives a killed process (not a power cut)
                    // at a fraction of the cost of a full sync per commit.
                    for pragma in [
                        "PRAGMA journal_mode=WAL",
                        "PRAGMA synchronous=NORMAL",
                        "PRAGMA busy_timeout=5000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect(&connect_url).await?;
        let blobs = match url.strip_prefix("sqlite://") {
            Some(path) => BlobStore::Directory(format!("{path}.blobs").into()),
            None => BlobStore::Postgres(pool.clone()),
        };
        let store = Self {
            pool,
            url_for_display: redact(url),
            blobs,
        };
        store.blobs.migrate().await?;
        store.migrate(bytes_type).await?;
        Ok(store)
    }

    async fn migrate(&self, bytes: &str) -> Result<(), StoreError> {
        let ddl = [
            "CREATE TABLE IF NOT EXISTS plait_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                .to_string(),
            format!("CREATE TABLE IF NOT EXISTS programs (sha256 TEXT PRIMARY KEY, elf {bytes} NOT NULL)"),
            format!(
                "CREATE TABLE IF NOT EXISTS jobs (id BIGINT PRIMARY KEY, program_sha256 TEXT NOT NULL, \
                 input TEXT NOT NULL, params TEXT NOT NULL, plan TEXT NOT NULL, \
                 submitted_unix_ms BIGINT NOT NULL, state TEXT NOT NULL, reason TEXT, \
                 final_proof {bytes}, prediction TEXT, execution TEXT, public_values {bytes})"
            ),
            "CREATE TABLE IF NOT EXISTS segments (job_id BIGINT NOT NULL, idx BIGINT NOT NULL, \
             spec TEXT NOT NULL, PRIMARY KEY (job_id, idx))"
                .to_string(),
            format!(
                "CREATE TABLE IF NOT EXISTS tasks (job_id BIGINT NOT NULL, task_id BIGINT NOT NULL, \
                 attempts BIGINT NOT NULL, failures BIGINT NOT NULL, proof {bytes}, timing TEXT, \
                 proof_sha256 TEXT, PRIMARY KEY (job_id, task_id))"
            ),
            "CREATE TABLE IF NOT EXISTS events (job_id BIGINT NOT NULL, seq BIGINT NOT NULL, \
             at_seconds DOUBLE PRECISION NOT NULL, message TEXT NOT NULL, PRIMARY KEY (job_id, seq))"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS workers (worker_id TEXT PRIMARY KEY, rejections BIGINT NOT NULL)"
                .to_string(),
        ];
        let mut tx = self.pool.begin().await?;
        for statement in &ddl {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        let version: Option<String> =
            sqlx::query_scalar("SELECT value FROM plait_meta WHERE key = 'schema'")
                .fetch_optional(&mut *tx)
                .await?;
        match version.as_deref() {
            None => {
                sqlx::query("INSERT INTO plait_meta (key, value) VALUES ('schema', $1)")
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(old @ ("1" | "2")) => {
                // Version 1 had no predictions; its jobs simply have none.
                if old == "1" {
                    sqlx::query("ALTER TABLE jobs ADD COLUMN prediction TEXT")
                        .execute(&mut *tx)
                        .await?;
                }
                // Version 2 planned whole jobs before storing them (their plan column) and
                // numbered tasks segments first; version 3 streams segments and numbers tasks
                // in creation order.
                sqlx::query("ALTER TABLE jobs ADD COLUMN execution TEXT")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "ALTER TABLE jobs ADD COLUMN public_values {bytes}"
                ))
                .execute(&mut *tx)
                .await?;
                sqlx::query("ALTER TABLE tasks ADD COLUMN proof_sha256 TEXT")
                    .execute(&mut *tx)
                    .await?;
                renumber_tasks_of_planned_jobs(&mut tx, &self.blobs).await?;
                sqlx::query("UPDATE plait_meta SET value = $1 WHERE key = 'schema'")
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "schema version {v}, this Plait writes version {SCHEMA_VERSION}"
                )))
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies `ops` in order, in one transaction: all or nothing.
    pub async fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for op in ops {
            let query = match op {
                StoreOp::Program { sha256, bytes } => sqlx::query(
                    "INSERT INTO programs (sha256, elf) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(sha256.clone())
                .bind(bytes.as_ref().clone()),
                StoreOp::InsertJob(r) => {
                    let (state, reason, proof) = r.state.columns();
                    sqlx::query(
                        "INSERT INTO jobs (id, program_sha256, input, params, plan, submitted_unix_ms, \
                         state, reason, final_proof, prediction, execution, public_values) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(r.id.0 as i64)
                    .bind(r.program_sha256.clone())
                    .bind(r.input_json.clone())
                    .bind(r.params_json.clone())
                    .bind(r.plan_json.clone())
                    .bind(r.submitted_unix_ms)
                    .bind(state)
                    .bind(reason)
                    .bind(proof)
                    .bind(r.prediction_json.clone())
                    .bind(if r.execution_ended { "ended" } else { "running" })
                    .bind(r.public_values.clone())
                }
                StoreOp::Segment {
                    job,
                    index,
                    spec_json,
                } => sqlx::query("INSERT INTO segments (job_id, idx, spec) VALUES ($1, $2, $3)")
                    .bind(job.0 as i64)
                    .bind(*index as i64)
                    .bind(spec_json.clone()),
                StoreOp::ExecutionEnded { job, public_values } => sqlx::query(
                    "UPDATE jobs SET execution = 'ended', public_values = $1 WHERE id = $2",
                )
                .bind(public_values.clone())
                .bind(job.0 as i64),
                StoreOp::Prediction {
                    job,
                    prediction_json,
                } => sqlx::query("UPDATE jobs SET prediction = $1 WHERE id = $2")
                    .bind(prediction_json.clone())
                    .bind(job.0 as i64),
                StoreOp::JobState { job, state } => {
                    let (state, reason, proof) = state.columns();
                    sqlx::query(
                        "UPDATE jobs SET state = $1, reason = $2, final_proof = $3 WHERE id = $4",
                    )
                    .bind(state)
                    .bind(reason)
                    .bind(proof)
                    .bind(job.0 as i64)
                }
                StoreOp::Event {
                    job,
                    seq,
                    at_seconds,
                    message,
                } => sqlx::query(
                    "INSERT INTO events (job_id, seq, at_seconds, message) VALUES ($1, $2, $3, $4)",
                )
                .bind(job.0 as i64)
                .bind(*seq as i64)
                .bind(*at_seconds)
                .bind(message.clone()),
                StoreOp::TaskCounters {
                    job,
                    task,
                    attempts,
                    failures,
                } => sqlx::query(
                    "INSERT INTO tasks (job_id, task_id, attempts, failures) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (job_id, task_id) DO UPDATE SET attempts = excluded.attempts, \
                     failures = excluded.failures",
                )
                .bind(job.0 as i64)
                .bind(task.0 as i64)
                .bind(*attempts as i64)
                .bind(*failures as i64),
                StoreOp::TaskAccepted {
                    job,
                    task,
                    proof_sha256,
                    timing_json,
                } => sqlx::query(
                    "INSERT INTO tasks (job_id, task_id, attempts, failures, proof_sha256, timing) \
                     VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (job_id, task_id) DO UPDATE SET \
                     proof_sha256 = excluded.proof_sha256, timing = excluded.timing",
                )
                .bind(job.0 as i64)
                .bind(task.0 as i64)
                .bind(proof_sha256.clone())
                .bind(timing_json.clone()),
                StoreOp::WorkerRejections { worker, rejections } => sqlx::query(
                    "INSERT INTO workers (worker_id, rejections) VALUES ($1, $2) \
                     ON CONFLICT (worker_id) DO UPDATE SET rejections = excluded.rejections",
                )
                .bind(worker.clone())
                .bind(*rejections as i64),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads everything back.
    pub async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let programs = sqlx::query("SELECT sha256, elf FROM programs ORDER BY sha256")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let worker_rejections = sqlx::query("SELECT worker_id, rejections FROM workers")
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get::<i64, _>(1)? as u32)))
            .collect::<Result<_, sqlx::Error>>()?;
        let mut jobs: BTreeMap<i64, StoredJob> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT id, program_sha256, input, params, plan, submitted_unix_ms, state, reason, \
             final_proof, prediction, execution, public_values FROM jobs ORDER BY id",
        )
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
        for row in sqlx::query(
            "SELECT job_id, task_id, attempts, failures, proof_sha256, timing FROM tasks \
             ORDER BY job_id, task_id",
        )
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
        for row in sqlx::query("SELECT job_id, idx, spec FROM segments ORDER BY job_id, idx")
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
        for row in
            sqlx::query("SELECT job_id, at_seconds, message FROM events ORDER BY job_id, seq")
                .fetch_all(&mut *conn)
                .await?
        {
            let job: i64 = row.try_get(0)?;
            jobs.get_mut(&job)
                .ok_or_else(|| StoreError::Corrupt(format!("event of unknown job-{job}")))?
                .events
                .push((row.try_get(1)?, row.try_get(2)?));
        }
        Ok(Snapshot {
            programs,
            jobs: jobs.into_values().collect(),
            worker_rejections,
        })
    }
}

impl Store {
    /// Stores a blob of `job` (durably) and returns its SHA-256 (hex).
    pub async fn put_blob(&self, job: JobId, bytes: &[u8]) -> Result<String, StoreError> {
        self.blobs.put(job, bytes).await
    }

    /// The blob of `job` named `sha256`, if it is stored.
    pub async fn blob(&self, job: JobId, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blobs.get(job, sha256).await
    }

    /// Deletes every blob of `job`; returns the bytes freed.
    pub async fn delete_blobs(&self, job: JobId) -> Result<u64, StoreError> {
        self.blobs.delete_job(job).await
    }

    /// Bytes of blobs stored for `job`.
    pub async fn blob_bytes(&self, job: JobId) -> Result<u64, StoreError> {
        self.blobs.job_bytes(job).await
    }

    /// The accepted proofs of one job, by task (an error if they were garbage-collected).
    pub async fn task_proofs(&self, job: JobId) -> Result<BTreeMap<TaskId, Vec<u8>>, StoreError> {
        let rows = sqlx::query(
            "SELECT task_id, proof_sha256 FROM tasks WHERE job_id = $1 AND proof_sha256 IS NOT \
             NULL ORDER BY task_id",
        )
        .bind(job.0 as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut proofs = BTreeMap::new();
        for row in rows {
            let task: i64 = row.try_get(0)?;
            let sha256: String = row.try_get(1)?;
            let proof = self.blob(job, &sha256).await?.ok_or_else(|| {
                StoreError::Blobs(format!(
                    "the proof of task-{task} of {job} is gone (its blobs were garbage-collected)"
                ))
            })?;
            proofs.insert(TaskId(task as u32), proof);
        }
        Ok(proofs)
    }
}

/// Renumbers the stored tasks of jobs planned whole (schema 2 and before: segments first, then
/// the tree's layers bottom-up) to creation order, which the streamed task graph uses.
///
/// Their proofs move from the tasks table to the blob store on the way.
async fn renumber_tasks_of_planned_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    blobs: &BlobStore,
) -> Result<(), StoreError> {
    let jobs = sqlx::query("SELECT id, params, plan FROM jobs")
        .fetch_all(&mut **tx)
        .await?;
    for row in jobs {
        let job: i64 = row.try_get(0)?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("job-{job}: {what}"));
        let params: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>(1)?)
            .map_err(|_| corrupt("params do not parse"))?;
        let plan: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>(2)?)
            .map_err(|_| corrupt("plan does not parse"))?;
        let segments = plan["segments"]
            .as_array()
            .ok_or_else(|| corrupt("plan has no segments"))?
            .len() as u32;
        let shape: AggTreeShape = serde_json::from_value(params["tree"].clone())
            .map_err(|_| corrupt("params have no tree shape"))?;
        let graph = TaskGraph::new(segments, shape).map_err(|e| corrupt(&e.to_string()))?;
        let new_ids = graph.in_layer_order();
        let tasks = sqlx::query(
            "SELECT task_id, attempts, failures, proof, timing FROM tasks WHERE job_id = $1",
        )
        .bind(job)
        .fetch_all(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM tasks WHERE job_id = $1")
            .bind(job)
            .execute(&mut **tx)
            .await?;
        for task in tasks {
            let old: i64 = task.try_get(0)?;
            let new = new_ids
                .get(old as usize)
                .ok_or_else(|| corrupt(&format!("task-{old} is not in its tree")))?;
            let timing: Option<String> = task.try_get(4)?;
            // The timing record names its task too.
            let timing = timing
                .map(|t| -> Result<String, StoreError> {
                    let mut value: serde_json::Value =
                        serde_json::from_str(&t).map_err(|_| corrupt("timing does not parse"))?;
                    value["task"] = serde_json::json!(new.0);
                    Ok(value.to_string())
                })
                .transpose()?;
            let proof_sha256 = match task.try_get::<Option<Vec<u8>>, _>(3)? {
                Some(proof) => Some(blobs.put(JobId(job as u64), &proof).await?),
                None => None,
            };
            sqlx::query(
                "INSERT INTO tasks (job_id, task_id, attempts, failures, proof_sha256, timing) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job)
            .bind(new.0 as i64)
            .bind(task.try_get::<i64, _>(1)?)
            .bind(task.try_get::<i64, _>(2)?)
            .bind(proof_sha256)
            .bind(timing)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url_for_display)
    }
}

/// Creates an empty database named `plait_<random>` on the PostgreSQL server of `admin_url`
/// (a role allowed to create databases) and returns its URL. For tests, which each want a
/// store of their own on one server.
pub async fn scratch_postgres_database(admin_url: &str) -> Result<String, StoreError> {
    use sqlx::Connection;
    if !(admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl(admin_url.into()));
    }
    let name = format!(
        "plait_{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64) << 40
    );
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .map(|(server, _)| server)
        .ok_or_else(|| StoreError::BadUrl(admin_url.into()))?;
    Ok(format!("{base}/{name}"))
}
