//! The schema and its migrations: a store of an older version is brought up to this one under the
//! writer lock; one of a newer version is refused.

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

use plait_core::{AggTreeShape, JobId, TaskGraph};

use crate::blobs::BlobStore;
use sqlx::Row;

use super::{Store, StoreError, SCHEMA_VERSION};

impl Store {
    /// The schema version the store records; `None` for a store without one (new).
    pub(super) async fn schema_version(&self) -> Result<Option<String>, StoreError> {
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

    pub(super) async fn migrate(&self, bytes: &str) -> Result<(), StoreError> {
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
            Some(old @ ("1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9")) => {
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
                // jobs of one owns it. (A version 8 store has its owners: giving `default`
                // every program again would let it use programs other clients uploaded.)
                let owner_statements = [
                    "INSERT INTO program_owners (sha256, client) SELECT sha256, 'default' \
                     FROM programs WHERE true ON CONFLICT (sha256, client) DO NOTHING",
                    "INSERT INTO program_owners (sha256, client) SELECT DISTINCT \
                     program_sha256, client FROM jobs WHERE true ON CONFLICT (sha256, client) DO NOTHING",
                ];
                if !matches!(old, "8" | "9") {
                    for statement in owner_statements {
                        sqlx::query(statement).execute(&mut *tx).await?;
                    }
                }
                // Version 9 learns segment needs per program (`segments:<program SHA-256>`),
                // version 10 node needs too (`leaf:<program SHA-256>`): a need learned for
                // every program of a height is read no more.
                sqlx::query("DELETE FROM memory_needs WHERE layer NOT LIKE '%:%'")
                    .execute(&mut *tx)
                    .await?;
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
/// table of its own; its jobs all ran RV32IM), by the coordinator's rule: per segment height,
/// phase and program, the lower
/// median of each worker's largest figure, and only where at least two workers reported (one
/// worker's figure, perhaps a hostile one, must not set a need).
async fn learn_node_memory_from_timings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT j.params, t.timing, j.program_sha256 FROM tasks t JOIN jobs j ON j.id = t.job_id \
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
            let program: String = row.try_get(2)?;
            let by_worker = peaks
                .entry((height as u32, format!("{phase}:{program}")))
                .or_default();
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
