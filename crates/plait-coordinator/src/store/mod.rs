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
//!
//! `migrations` brings an older store up to this schema, `writes` applies the coordinator's
//! store operations, `reads` reads the snapshot and ended jobs back.

use std::{collections::BTreeMap, sync::Arc};

use plait_core::{JobId, TaskId};
use plait_prover::KeySetId;

use crate::{
    blobs::{BlobError, BlobStore},
    clients::Client,
    identities::Identity,
    job_status::JobStatus,
};
use sqlx::{any::AnyPoolOptions, AnyPool, Row};

mod migrations;
mod reads;
mod writes;

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
    /// The job's number.
    pub id: JobId,
    /// Its program's SHA-256.
    pub program_sha256: String,
    /// Its input ([`plait_core::ProgramInput`], JSON).
    pub input_json: String,
    /// Its proving parameters ([`plait_prover::ProvingParams`], JSON).
    pub params_json: String,
    /// The whole plan, for jobs stored before segments were stored one by one (else empty).
    pub plan_json: String,
    /// When it was submitted (Unix milliseconds).
    pub submitted_unix_ms: i64,
    /// Its state.
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
    /// The client's id.
    pub client: String,
    /// The job's priority within the client's share (-1000 to 1000).
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
    /// A program uploaded.
    Program {
        /// Its SHA-256.
        sha256: String,
        /// The ELF.
        bytes: Arc<Vec<u8>>,
    },
    /// `client` uploaded the program `sha256` (stored already, or in the same batch).
    ProgramOwner {
        /// The program.
        sha256: String,
        /// The client that keeps it.
        client: String,
    },
    /// `client` deleted the program `sha256`: it is no longer its; the program itself goes
    /// once no client keeps it and no job names it.
    DropProgramOwner {
        /// The program.
        sha256: String,
        /// The client that no longer keeps it.
        client: String,
    },
    /// A job submitted.
    InsertJob(JobRecord),
    /// A segment execution cut (JSON of its spec).
    Segment {
        /// The job.
        job: JobId,
        /// The segment's position, from 0.
        index: u32,
        /// Its [`plait_core::SegmentSpec`], JSON.
        spec_json: String,
    },
    /// Execution ended: with the public values, or with none after a failure or a cancel.
    ExecutionEnded {
        /// The job.
        job: JobId,
        /// What the program revealed, if it ended successfully.
        public_values: Option<Vec<u8>>,
    },
    /// The planner's prediction for the job.
    Prediction {
        /// The job.
        job: JobId,
        /// The [`plait_core::planner::Prediction`], JSON.
        prediction_json: String,
    },
    /// The job's state changed.
    JobState {
        /// The job.
        job: JobId,
        /// Its new state.
        state: JobStatus,
        /// When the job ended (succeeded, failed or was cancelled); `None` while it is live.
        ended_unix_ms: Option<i64>,
    },
    /// The job's blobs were deleted after its retention time; the event says so in its log
    /// (appended after the job's last event: the job is no longer in the coordinator's memory).
    BlobsDeleted {
        /// The job.
        job: JobId,
        /// When (Unix milliseconds).
        at_unix_ms: i64,
        /// The event's text.
        message: String,
    },
    /// The memory need learned for a phase (`segments:` and a program's SHA-256, or an
    /// aggregation layer) of one key set (VM config and segment height).
    NodeMemory {
        /// The VM config and segment height.
        keys: KeySetId,
        /// The phase.
        layer: String,
        /// The need, in bytes.
        peak_bytes: u64,
    },
    /// An entry of the job's event log.
    Event {
        /// The job.
        job: JobId,
        /// Its position in the log.
        seq: u32,
        /// Seconds since the job's submission.
        at_seconds: f64,
        /// What happened.
        message: String,
    },
    /// How often a task was leased and how often it failed (counted against the task).
    TaskCounters {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// Leases of it so far.
        attempts: u32,
        /// Its failures that count.
        failures: u32,
    },
    /// A verified proof (already in the blob store under `proof_sha256`), with its timing
    /// record (JSON).
    TaskAccepted {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
        /// The proof's blob.
        proof_sha256: String,
        /// The [`crate::TaskTiming`], JSON.
        timing_json: String,
    },
    /// An accepted proof the job cannot use (finalization failed on it, or on one below it):
    /// the task is proven again. Its blob goes with the job's other blobs.
    TaskDiscarded {
        /// The job.
        job: JobId,
        /// The task.
        task: TaskId,
    },
    /// A worker identity, new or changed (its rejections, its ban).
    WorkerIdentity(Identity),
    /// A client's credential and limits (created or changed).
    Client(Client),
    /// A client revoked.
    ForgetClient {
        /// The client.
        id: String,
    },
    /// An identity revoked or pruned.
    ForgetWorker {
        /// The identity.
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
    /// Attempts made.
    pub attempts: u32,
    /// Failed attempts that count.
    pub failures: u32,
    /// Once accepted: the SHA-256 of its proof (a blob of the job) and its timing (JSON).
    pub accepted: Option<(String, String)>,
}

/// One job with everything recorded about it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredJob {
    /// The job as submitted.
    pub record: JobRecord,
    /// The segments cut so far (JSON), in order.
    pub segments: Vec<String>,
    /// Its tasks' rows, by task.
    pub tasks: BTreeMap<TaskId, StoredTask>,
    /// (at_seconds, message), in order.
    pub events: Vec<(f64, String)>,
}

/// Everything a coordinator needs to resume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every program kept: (SHA-256, the ELF's bytes).
    pub programs: Vec<(String, Vec<u8>)>,
    /// The jobs that are not over: live ones, and any whose execution a restart interrupted.
    pub jobs: Vec<StoredJob>,
    /// The largest job id ever stored (0 if none).
    pub last_job_id: u64,
    /// Every worker identity.
    pub worker_identities: Vec<Identity>,
    /// (key set, phase, the memory need learned from what workers measured).
    pub node_memory: Vec<(KeySetId, String, u64)>,
    /// Every client.
    pub clients: Vec<Client>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL names no store this build opens.
    #[error("store URL {0:?}: expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DB")]
    BadUrl(String),
    /// The database failed.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// The store holds data this version cannot read.
    #[error("store holds data this version cannot read: {0}")]
    Corrupt(String),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blobs(String),
    /// Another coordinator holds the store.
    #[error(
        "another coordinator is using the store {0}: stop it first (two coordinators on one \
         store would overwrite each other's records)"
    )]
    InUse(String),
    /// The store belongs to a coordinator of another backend.
    #[error(
        "the store {url} holds the {stored} backend's jobs and proofs; a coordinator with the \
         {asked} backend cannot use it (name another store)"
    )]
    OtherBackend {
        /// The store's URL.
        url: String,
        /// The backend it belongs to.
        stored: String,
        /// The backend that asked.
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
const SCHEMA_VERSION: &str = "10";

/// The store: jobs, tasks, events, identities, clients and programs in SQLite or PostgreSQL, proofs and checkpoints in its blob store.
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
