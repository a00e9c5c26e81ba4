//! Durable job state.
//!
//! The coordinator keeps live state (leases, the task graph) in memory and writes every change
//! that must survive a restart through here, in order, before it answers the caller: a result
//! is "accepted" only once its proof is stored. On start it reloads the jobs that are not over
//! ([`Store::load`]); leases are not stored, so tasks that were in flight are simply handed out
//! again. Jobs that ended are read one at a time when asked for ([`Store::load_job`]).
//!
//! SQLite (the embedded default) and PostgreSQL (a cluster) share one SQL dialect through
//! sqlx's `Any` driver; only the column type for bytes differs.

use std::{collections::BTreeMap, sync::Arc};

use plait_core::{AggTreeShape, JobId, TaskGraph, TaskId};
use plait_prover::KeySetId;

use crate::{
    blobs::{BlobError, BlobStore},
    clients::Client,
    identities::{Ban, Identity, Origin},
    job_status::JobStatus,
};
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
    /// Whose job it is, and its priority within that client's share.
    pub owner: JobOwner,
}

/// The client a job belongs to (only it sees and acts on the job), and the job's priority
/// among that client's jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobOwner {
    pub client: String,
    pub priority: i32,
}

impl Default for JobOwner {
    fn default() -> Self {
        Self {
            client: crate::clients::DEFAULT_CLIENT.into(),
            priority: 0,
        }
    }
}

/// One change to durable state.
#[derive(Clone, Debug)]
pub enum StoreOp {
    Program {
        sha256: String,
        bytes: Arc<Vec<u8>>,
    },
    /// `client` uploaded the program `sha256` (stored already, or in the same batch).
    ProgramOwner {
        sha256: String,
        client: String,
    },
    /// `client` deleted the program `sha256`: it is no longer its; the program itself goes
    /// once no client keeps it and no job names it.
    DropProgramOwner {
        sha256: String,
        client: String,
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
        /// When the job ended (succeeded, failed or was cancelled); `None` while it is live.
        ended_unix_ms: Option<i64>,
    },
    /// The job's blobs were deleted after its retention time; the event says so in its log
    /// (appended after the job's last event: the job is no longer in the coordinator's memory).
    BlobsDeleted {
        job: JobId,
        at_unix_ms: i64,
        message: String,
    },
    /// The memory need learned for a phase (`segments` or an aggregation layer) of one key
    /// set (VM config and segment height).
    NodeMemory {
        keys: KeySetId,
        layer: String,
        peak_bytes: u64,
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
    /// An accepted proof the job cannot use (finalization failed on it, or on one below it):
    /// the task is proven again. Its blob goes with the job's other blobs.
    TaskDiscarded {
        job: JobId,
        task: TaskId,
    },
    /// A worker identity, new or changed (its rejections, its ban).
    WorkerIdentity(Identity),
    /// A client's credential and limits (created or changed).
    Client(Client),
    ForgetClient {
        id: String,
    },
    /// An identity revoked or pruned.
    ForgetWorker {
        id: String,
    },
    /// Every learned memory need forgotten (the operator's `plait workers reset-needs`).
    ForgetMemoryNeeds,
}

impl StoreOp {
    /// The job this change belongs to, if any.
    pub fn job(&self) -> Option<JobId> {
        match self {
            StoreOp::InsertJob(record) => Some(record.id),
            StoreOp::Segment { job, .. }
            | StoreOp::ExecutionEnded { job, .. }
            | StoreOp::Prediction { job, .. }
            | StoreOp::JobState { job, .. }
            | StoreOp::BlobsDeleted { job, .. }
            | StoreOp::Event { job, .. }
            | StoreOp::TaskCounters { job, .. }
            | StoreOp::TaskAccepted { job, .. }
            | StoreOp::TaskDiscarded { job, .. } => Some(*job),
            StoreOp::Program { .. }
            | StoreOp::ProgramOwner { .. }
            | StoreOp::DropProgramOwner { .. }
            | StoreOp::NodeMemory { .. }
            | StoreOp::WorkerIdentity(_)
            | StoreOp::Client(_)
            | StoreOp::ForgetClient { .. }
            | StoreOp::ForgetWorker { .. }
            | StoreOp::ForgetMemoryNeeds => None,
        }
    }
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
    /// The jobs that are not over: live ones, and any whose execution a restart interrupted.
    pub jobs: Vec<StoredJob>,
    /// The largest job id ever stored (0 if none).
    pub last_job_id: u64,
    pub worker_identities: Vec<Identity>,
    /// (key set, phase, the memory need learned from what workers measured).
    pub node_memory: Vec<(KeySetId, String, u64)>,
    pub clients: Vec<Client>,
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
    #[error(
        "another coordinator is using the store {0}: stop it first (two coordinators on one \
         store would overwrite each other's records)"
    )]
    InUse(String),
    #[error(
        "the store {url} holds the {stored} backend's jobs and proofs; a coordinator with the \
         {asked} backend cannot use it (name another store)"
    )]
    OtherBackend {
        url: String,
        stored: String,
        asked: String,
    },
}

impl From<BlobError> for StoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Io(e) => Self::Blobs(e),
            BlobError::Database(e) => Self::Database(e),
        }
    }
}

/// Held by the one coordinator that writes to a store ([`Store::claim_writer`]); released when
/// dropped or when the process ends, however it ends.
pub struct WriterLock {
    _held: Held,
}

#[allow(dead_code)] // held, never read: the lock lives as long as the value
enum Held {
    /// An exclusive lock on `PATH.lock` beside the SQLite file.
    File(std::fs::File),
    /// The connection holding a session advisory lock (in a mutex only to be `Sync`).
    Postgres(std::sync::Mutex<sqlx::AnyConnection>),
}

/// The schema's version, recorded in the store. An older store is migrated on open; a newer
/// one is refused.
const SCHEMA_VERSION: &str = "8";

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    url_for_display: String,
    blobs: BlobStore,
    /// The SQLite file, for a SQLite store.
    sqlite_path: Option<std::path::PathBuf>,
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
            sqlite_path: url.strip_prefix("sqlite://").map(Into::into),
        };
        store.blobs.migrate().await?;
        if store.schema_version().await?.as_deref() != Some(SCHEMA_VERSION) {
            // Creating or migrating the schema under a running coordinator would change its
            // tables under it: only the store's one writer may (the lock ends here; the
            // coordinator opened on this store takes it again).
            let _writer = store.claim_writer().await?;
            store.migrate(bytes_type).await?;
        }
        Ok(store)
    }

    /// The schema version the store records; `None` for a store without one (new).
    async fn schema_version(&self) -> Result<Option<String>, StoreError> {
        let found =
            sqlx::query_scalar::<_, String>("SELECT value FROM plait_meta WHERE key = 'schema'")
                .fetch_optional(&self.pool)
                .await;
        match found {
            Ok(version) => Ok(version),
            // No `plait_meta` table: a new store.
            Err(sqlx::Error::Database(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
                 final_proof {bytes}, prediction TEXT, execution TEXT, public_values {bytes}, \
                 ended_unix_ms BIGINT, blobs_deleted_unix_ms BIGINT, \
                 client TEXT NOT NULL DEFAULT 'default', priority BIGINT NOT NULL DEFAULT 0)"
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
            // Credentials by role, `worker` or `client` (with its limits, JSON).
            "CREATE TABLE IF NOT EXISTS credentials (role TEXT NOT NULL, id TEXT NOT NULL, \
             origin TEXT NOT NULL, name TEXT NOT NULL, credential_sha256 TEXT NOT NULL UNIQUE, \
             created_unix_ms BIGINT NOT NULL, rejections BIGINT NOT NULL, \
             banned_unix_ms BIGINT, ban_reason TEXT, banned_by_operator BIGINT, limits TEXT, \
             PRIMARY KEY (role, id))"
                .to_string(),
            // Who may submit jobs of a program: the clients that uploaded it.
            "CREATE TABLE IF NOT EXISTS program_owners (sha256 TEXT NOT NULL, \
             client TEXT NOT NULL, PRIMARY KEY (sha256, client))"
                .to_string(),
            "CREATE TABLE IF NOT EXISTS memory_needs (vm_config TEXT NOT NULL, \
             segment_height BIGINT NOT NULL, layer TEXT NOT NULL, peak_bytes BIGINT NOT NULL, \
             PRIMARY KEY (vm_config, segment_height, layer))"
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
            Some(old @ ("1" | "2" | "3" | "4" | "5" | "6" | "7")) => {
                if matches!(old, "1" | "2") {
                    // Version 1 had no predictions; its jobs simply have none.
                    if old == "1" {
                        sqlx::query("ALTER TABLE jobs ADD COLUMN prediction TEXT")
                            .execute(&mut *tx)
                            .await?;
                    }
                    // Version 2 planned whole jobs before storing them (their plan column) and
                    // numbered tasks segments first; version 3 streams segments and numbers
                    // tasks in creation order.
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
                }
                if matches!(old, "1" | "2" | "3") {
                    // Version 4 reads ended jobs only when asked: it records when each ended
                    // and when its blobs were deleted, and keeps learned node memory in a table
                    // of its own instead of deriving it from every task ever accepted.
                    for column in ["ended_unix_ms", "blobs_deleted_unix_ms"] {
                        sqlx::query(&format!("ALTER TABLE jobs ADD COLUMN {column} BIGINT"))
                            .execute(&mut *tx)
                            .await?;
                    }
                    // An ended job ended at its last event.
                    sqlx::query(
                        "UPDATE jobs SET ended_unix_ms = submitted_unix_ms + CAST(1000 * \
                         COALESCE((SELECT MAX(e.at_seconds) FROM events e \
                         WHERE e.job_id = jobs.id), 0) AS BIGINT) \
                         WHERE state IN ('succeeded', 'failed', 'cancelled')",
                    )
                    .execute(&mut *tx)
                    .await?;
                    learn_node_memory_from_timings(&mut tx).await?;
                }
                // Version 5 names workers itself (`credentials`). Version 4's `workers` table
                // counted rejections by the names workers chose, which identify no one.
                sqlx::query("DROP TABLE IF EXISTS workers")
                    .execute(&mut *tx)
                    .await?;
                // Version 6 learns memory needs per VM config (`memory_needs`); versions 4 and
                // 5 knew RV32IM only (`node_memory`).
                if matches!(old, "4" | "5") {
                    sqlx::query(
                        "INSERT INTO memory_needs (vm_config, segment_height, layer, peak_bytes) \
                         SELECT 'rv32im', segment_height, layer, peak_bytes FROM node_memory",
                    )
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DROP TABLE node_memory")
                        .execute(&mut *tx)
                        .await?;
                }
                // Version 7 has clients: every job belongs to one (the older ones to the
                // client of the shared token, `default`), with a priority; client credentials
                // carry their limits.
                // (A table created by this version's DDL above has them already.)
                for (table, column, definition) in [
                    ("jobs", "client", "TEXT NOT NULL DEFAULT 'default'"),
                    ("jobs", "priority", "BIGINT NOT NULL DEFAULT 0"),
                    ("credentials", "limits", "TEXT"),
                ] {
                    if !has_column(&mut tx, table, column, bytes == "BLOB").await? {
                        sqlx::query(&format!(
                            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                        ))
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                // Version 8 gives programs owners. Before, every client could use every
                // program: each stays the client `default`'s, and each client that submitted
                // jobs of one owns it.
                for statement in [
                    "INSERT INTO program_owners (sha256, client) SELECT sha256, 'default' \
                     FROM programs WHERE true ON CONFLICT (sha256, client) DO NOTHING",
                    "INSERT INTO program_owners (sha256, client) SELECT DISTINCT \
                     program_sha256, client FROM jobs WHERE true ON CONFLICT (sha256, client) DO NOTHING",
                ] {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
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
        // A client's jobs are listed newest first, a page at a time (after the migrations: an
        // older schema's jobs table gains its client column above).
        sqlx::query("CREATE INDEX IF NOT EXISTS jobs_by_client ON jobs (client, id)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Binds the store to the backend `name` (`openvm` or `dev`) on first use, and refuses
    /// another afterwards: proofs of one backend mean nothing to another, and fake dev proofs
    /// must never be finalized as real ones.
    pub async fn claim_backend(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plait_meta (key, value) VALUES ('backend', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM plait_meta WHERE key = 'backend'")
                .fetch_one(&self.pool)
                .await?;
        if stored != name {
            return Err(StoreError::OtherBackend {
                url: self.url_for_display.clone(),
                stored,
                asked: name.into(),
            });
        }
        Ok(())
    }

    /// Makes the caller the store's only writer for as long as the lock lives. A coordinator
    /// numbers its records (events, tasks, jobs) from what it holds in memory: a second one on
    /// the same store would write under the same numbers and wedge the first.
    pub async fn claim_writer(&self) -> Result<WriterLock, StoreError> {
        let in_use = || StoreError::InUse(self.url_for_display.clone());
        let held = match &self.sqlite_path {
            Some(path) => {
                let lock = path.with_extension("lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock)
                    .map_err(|e| StoreError::Blobs(format!("{}: {e}", lock.display())))?;
                match file.try_lock() {
                    Ok(()) => Held::File(file),
                    Err(std::fs::TryLockError::WouldBlock) => return Err(in_use()),
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(StoreError::Blobs(format!("{}: {e}", lock.display())))
                    }
                }
            }
            None => {
                let mut conn = self.pool.acquire().await?.detach();
                // A coordinator that just ended may still hold the lock for a moment: the
                // server ends its session only once it notices the connection closed.
                let mut tries = 0;
                loop {
                    // Any fixed key: one writer per database.
                    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(7300185)")
                        .fetch_one(&mut conn)
                        .await?;
                    if locked {
                        break;
                    }
                    tries += 1;
                    if tries == 30 {
                        return Err(in_use());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Held::Postgres(std::sync::Mutex::new(conn))
            }
        };
        Ok(WriterLock { _held: held })
    }

    /// Applies `ops` in order, in one transaction: all or nothing.
    pub async fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for op in ops {
            let query = match op {
                StoreOp::BlobsDeleted {
                    job,
                    at_unix_ms,
                    message,
                } => {
                    sqlx::query(
                        "INSERT INTO events (job_id, seq, at_seconds, message) \
                         SELECT j.id, (SELECT COALESCE(MAX(e.seq) + 1, 0) FROM events e \
                         WHERE e.job_id = j.id), ($2 - j.submitted_unix_ms) / 1000.0, $3 \
                         FROM jobs j WHERE j.id = $1",
                    )
                    .bind(job.0 as i64)
                    .bind(*at_unix_ms)
                    .bind(message.clone())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE jobs SET blobs_deleted_unix_ms = $1 WHERE id = $2")
                        .bind(*at_unix_ms)
                        .bind(job.0 as i64)
                }
                StoreOp::NodeMemory {
                    keys,
                    layer,
                    peak_bytes,
                } => sqlx::query(
                    "INSERT INTO memory_needs (vm_config, segment_height, layer, peak_bytes) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (vm_config, segment_height, layer) \
                     DO UPDATE SET peak_bytes = excluded.peak_bytes",
                )
                .bind(keys.vm_config.name())
                .bind(keys.segment_height as i64)
                .bind(layer.clone())
                .bind(*peak_bytes as i64),
                StoreOp::Program { sha256, bytes } => sqlx::query(
                    "INSERT INTO programs (sha256, elf) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
                )
                .bind(sha256.clone())
                .bind(bytes.as_ref().clone()),
                StoreOp::ProgramOwner { sha256, client } => sqlx::query(
                    "INSERT INTO program_owners (sha256, client) VALUES ($1, $2) \
                     ON CONFLICT (sha256, client) DO NOTHING",
                )
                .bind(sha256.clone())
                .bind(client.clone()),
                StoreOp::DropProgramOwner { sha256, client } => {
                    sqlx::query("DELETE FROM program_owners WHERE sha256 = $1 AND client = $2")
                        .bind(sha256.clone())
                        .bind(client.clone())
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "DELETE FROM programs WHERE sha256 = $1 \
                         AND NOT EXISTS (SELECT 1 FROM program_owners o WHERE o.sha256 = $1) \
                         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.program_sha256 = $1)",
                    )
                    .bind(sha256.clone())
                }
                StoreOp::InsertJob(r) => {
                    let (state, reason, proof) = r.state.columns();
                    sqlx::query(
                        "INSERT INTO jobs (id, program_sha256, input, params, plan, submitted_unix_ms, \
                         state, reason, final_proof, prediction, execution, public_values, client, \
                         priority) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
                    .bind(r.owner.client.clone())
                    .bind(r.owner.priority as i64)
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
                StoreOp::JobState {
                    job,
                    state,
                    ended_unix_ms,
                } => {
                    let (state, reason, proof) = state.columns();
                    sqlx::query(
                        "UPDATE jobs SET state = $1, reason = $2, final_proof = $3, \
                         ended_unix_ms = $4 WHERE id = $5",
                    )
                    .bind(state)
                    .bind(reason)
                    .bind(proof)
                    .bind(*ended_unix_ms)
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
                StoreOp::TaskDiscarded { job, task } => sqlx::query(
                    "UPDATE tasks SET proof_sha256 = NULL, timing = NULL \
                     WHERE job_id = $1 AND task_id = $2",
                )
                .bind(job.0 as i64)
                .bind(task.0 as i64),
                StoreOp::WorkerIdentity(identity) => sqlx::query(
                    "INSERT INTO credentials (role, id, origin, name, credential_sha256, \
                     created_unix_ms, rejections, banned_unix_ms, ban_reason, banned_by_operator) \
                     VALUES ('worker', $1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (role, id) DO UPDATE SET rejections = excluded.rejections, \
                     banned_unix_ms = excluded.banned_unix_ms, ban_reason = excluded.ban_reason, \
                     banned_by_operator = excluded.banned_by_operator",
                )
                .bind(identity.id.clone())
                .bind(identity.origin.as_str())
                .bind(identity.name.clone())
                .bind(hex::encode(identity.credential_sha256))
                .bind(identity.created_unix_ms)
                .bind(identity.rejections as i64)
                .bind(identity.ban.as_ref().map(|b| b.at_unix_ms))
                .bind(identity.ban.as_ref().map(|b| b.reason.clone()))
                .bind(identity.ban.as_ref().map(|b| b.by_operator as i64)),
                StoreOp::Client(client) => sqlx::query(
                    "INSERT INTO credentials (role, id, origin, name, credential_sha256, \
                     created_unix_ms, rejections, limits) \
                     VALUES ('client', $1, 'issued', $1, $2, $3, 0, $4) \
                     ON CONFLICT (role, id) DO UPDATE SET limits = excluded.limits",
                )
                .bind(client.id.clone())
                .bind(hex::encode(client.credential_sha256))
                .bind(client.created_unix_ms)
                .bind(serde_json::to_string(&client.limits).expect("limits serialize")),
                StoreOp::ForgetClient { id } => {
                    sqlx::query("DELETE FROM credentials WHERE role = 'client' AND id = $1")
                        .bind(id.clone())
                }
                StoreOp::ForgetWorker { id } => {
                    sqlx::query("DELETE FROM credentials WHERE role = 'worker' AND id = $1")
                        .bind(id.clone())
                }
                StoreOp::ForgetMemoryNeeds => sqlx::query("DELETE FROM memory_needs"),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads back what a coordinator needs to resume: programs, workers, learned node memory,
    /// and the jobs that are not over (see [`JobFilter::Resident`]).
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

/// Whether `table` has `column` (for migrations that add one).
async fn has_column(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    column: &str,
    sqlite: bool,
) -> Result<bool, StoreError> {
    let query = if sqlite {
        "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2"
    } else {
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
    };
    let count: i64 = sqlx::query_scalar(query)
        .bind(table.to_string())
        .bind(column.to_string())
        .fetch_one(&mut **tx)
        .await?;
    Ok(count > 0)
}

/// Fills the memory-need table from the timings of every accepted task (schema 3 kept no
/// table of its own; its jobs all ran RV32IM), by the coordinator's rule: per segment height
/// and phase, the lower
/// median of each worker's largest figure, and only where at least two workers reported (one
/// worker's figure, perhaps a hostile one, must not set a need).
async fn learn_node_memory_from_timings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT j.params, t.timing FROM tasks t JOIN jobs j ON j.id = t.job_id \
         WHERE t.timing IS NOT NULL",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut peaks: BTreeMap<(u32, String), BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows {
        let params: serde_json::Value =
            serde_json::from_str(&row.try_get::<String, _>(0)?).unwrap_or_default();
        let timing: serde_json::Value =
            serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default();
        let (Some(height), Some(phase), Some(worker), Some(peak)) = (
            params["segment-height"].as_u64(),
            timing["phase"].as_str(),
            timing["worker"].as_str(),
            timing["meta"]["process_peak_rss_bytes"].as_u64(),
        ) else {
            continue;
        };
        if peak > 0 {
            let by_worker = peaks.entry((height as u32, phase.to_string())).or_default();
            let known = by_worker.entry(worker.to_string()).or_insert(0);
            *known = (*known).max(peak);
        }
    }
    for ((height, phase), by_worker) in peaks {
        if by_worker.len() < 2 {
            continue;
        }
        let mut figures: Vec<u64> = by_worker.into_values().collect();
        figures.sort_unstable();
        sqlx::query(
            "INSERT INTO memory_needs (vm_config, segment_height, layer, peak_bytes) \
             VALUES ('rv32im', $1, $2, $3)",
        )
        .bind(height as i64)
        .bind(phase)
        .bind(figures[(figures.len() - 1) / 2] as i64)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Stores a blob of `job` (durably) and returns its SHA-256 (hex).
    pub async fn put_blob(&self, job: JobId, bytes: &[u8]) -> Result<String, StoreError> {
        self.blobs.put(job, bytes).await.map_err(Into::into)
    }

    /// The blob of `job` named `sha256`, if it is stored.
    pub async fn blob(&self, job: JobId, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.blobs.get(job, sha256).await.map_err(Into::into)
    }

    /// Deletes every blob of `job`; returns the bytes freed.
    pub async fn delete_blobs(&self, job: JobId) -> Result<u64, StoreError> {
        self.blobs.delete_job(job).await.map_err(Into::into)
    }

    /// Bytes of blobs stored for `job`.
    pub async fn blob_bytes(&self, job: JobId) -> Result<u64, StoreError> {
        self.blobs.job_bytes(job).await.map_err(Into::into)
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

/// The URL without its secrets, for messages: the password of its user part, and any query
/// parameter that carries one (PostgreSQL takes `password` and `sslpassword` there too).
fn redact(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_string();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        return format!("{scheme}://(a URL that does not parse, hidden)");
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let secret = key.to_ascii_lowercase().contains("password");
                let value = if secret {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
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

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn store_urls_are_shown_without_their_secrets() {
        assert_eq!(
            redact("postgres://plait:s3cret@db.example:5432/plait"),
            "postgres://plait:***@db.example:5432/plait"
        );
        let shown =
            redact("postgres://plait@db/plait?sslmode=require&password=s3cret&sslpassword=k3y");
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.contains("sslmode=require"), "{shown}");
        assert_eq!(redact("postgres://db/plait"), "postgres://db/plait");
        assert!(!redact("postgres://u:s3cret@[bad/").contains("s3cret"));
        assert_eq!(
            redact("sqlite:///var/lib/plait/store.sqlite"),
            "sqlite:///var/lib/plait/store.sqlite"
        );
    }
}
