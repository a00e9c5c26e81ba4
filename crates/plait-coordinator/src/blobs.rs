//! Bulk bytes kept out of the coordinator's memory: segment start-state checkpoints, named by
//! job and SHA-256.
//!
//! Two backings behind one interface, chosen with the store:
//! - beside an SQLite store, a directory (`<store file>.blobs/job-N/<sha256>`): the embedded
//!   default needs no server, and files are written once, read whole and deleted per job;
//! - with PostgreSQL, a `blobs` table (`bytea`) in the same database. The coordinator is the
//!   only reader and writer, so shared storage buys nothing; one database is one thing to back
//!   up; and checkpoints are far below `bytea`'s 1 GB limit, so large objects (which need their
//!   own unlinking) would add lifecycle work for no gain.
//!
//! A blob is durable before `put` returns: the directory backing syncs the file and renames it
//! into place, so a reader never sees a partial blob.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use plait_core::JobId;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};

/// Why a blob could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Clone, Debug)]
pub(crate) enum BlobStore {
    Directory(PathBuf),
    Postgres(AnyPool),
}

impl BlobStore {
    pub(crate) async fn migrate(&self) -> Result<(), BlobError> {
        match self {
            Self::Directory(dir) => fs::create_dir_all(dir).map_err(|e| io_error(dir, e)),
            Self::Postgres(pool) => {
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS blobs (job_id BIGINT NOT NULL, sha256 TEXT NOT \
                     NULL, bytes BYTEA NOT NULL, PRIMARY KEY (job_id, sha256))",
                )
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// Stores `bytes` for `job` under their SHA-256 (hex), which is returned. Idempotent. A
    /// blob stored again is written again, not skipped: proofs are deterministic, so a proof
    /// proven again because its stored copy was unusable (damaged on disk, say) has the same
    /// name, and must replace that copy.
    pub(crate) async fn put(&self, job: JobId, bytes: &[u8]) -> Result<String, BlobError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        match self {
            Self::Directory(dir) => {
                write_durably(&blob_path(dir, job, &sha256), bytes)?;
            }
            Self::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO blobs (job_id, sha256, bytes) VALUES ($1, $2, $3) \
                     ON CONFLICT (job_id, sha256) DO UPDATE SET bytes = excluded.bytes",
                )
                .bind(job.0 as i64)
                .bind(sha256.clone())
                .bind(bytes.to_vec())
                .execute(pool)
                .await?;
            }
        }
        Ok(sha256)
    }

    /// The blob of `job` named `sha256`, if stored.
    pub(crate) async fn get(&self, job: JobId, sha256: &str) -> Result<Option<Vec<u8>>, BlobError> {
        if !is_sha256_hex(sha256) {
            return Ok(None);
        }
        match self {
            Self::Directory(dir) => match fs::read(blob_path(dir, job, sha256)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(dir, e)),
            },
            Self::Postgres(pool) => {
                let row = sqlx::query("SELECT bytes FROM blobs WHERE job_id = $1 AND sha256 = $2")
                    .bind(job.0 as i64)
                    .bind(sha256.to_string())
                    .fetch_optional(pool)
                    .await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            }
        }
    }

    /// Deletes every blob of `job`; returns how many bytes that freed.
    pub(crate) async fn delete_job(&self, job: JobId) -> Result<u64, BlobError> {
        match self {
            Self::Directory(dir) => {
                let job_dir = dir.join(job_dir_name(job));
                let freed = fs::read_dir(&job_dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok()?.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                match fs::remove_dir_all(&job_dir) {
                    Ok(()) => Ok(freed),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                    Err(e) => Err(io_error(&job_dir, e)),
                }
            }
            Self::Postgres(pool) => {
                let freed: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(LENGTH(bytes)) AS BIGINT) FROM blobs WHERE job_id = $1",
                )
                .bind(job.0 as i64)
                .fetch_one(pool)
                .await?;
                sqlx::query("DELETE FROM blobs WHERE job_id = $1")
                    .bind(job.0 as i64)
                    .execute(pool)
                    .await?;
                Ok(freed.unwrap_or(0) as u64)
            }
        }
    }

    /// Bytes stored for `job`.
    pub(crate) async fn job_bytes(&self, job: JobId) -> Result<u64, BlobError> {
        match self {
            Self::Directory(dir) => Ok(fs::read_dir(dir.join(job_dir_name(job)))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)),
            Self::Postgres(pool) => {
                let bytes: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(LENGTH(bytes)) AS BIGINT) FROM blobs WHERE job_id = $1",
                )
                .bind(job.0 as i64)
                .fetch_one(pool)
                .await?;
                Ok(bytes.unwrap_or(0) as u64)
            }
        }
    }
}

fn job_dir_name(job: JobId) -> String {
    format!("job-{}", job.0)
}

fn blob_path(dir: &Path, job: JobId, sha256: &str) -> PathBuf {
    dir.join(job_dir_name(job)).join(sha256)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BlobError> {
    let dir = path.parent().expect("blob paths have a parent");
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_error(dir, e))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| io_error(path, e))?;
    file.persist(path).map_err(|e| io_error(path, e.error))?;
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> BlobError {
    BlobError::Io(format!("{}: {e}", path.display()))
}
