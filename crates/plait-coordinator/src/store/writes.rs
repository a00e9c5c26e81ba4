//! Applying the coordinator's writes: one transaction per batch of store operations, in order.

//!
//! The coordinator keeps live state (leases, the task graph) in memory and writes every change
//! that must survive a restart through here, in order, before it answers the caller: a result
//! is "accepted" only once its proof is stored. On start it reloads the jobs that are not over
//! ([`Store::load`]); leases are not stored, so tasks that were in flight are simply handed out
//! again. Jobs that ended are read one at a time when asked for ([`Store::load_job`]).
//!
//! SQLite (the embedded default) and PostgreSQL (a cluster) share one SQL dialect through
//! sqlx's `Any` driver; only the column type for bytes differs.

use super::{Store, StoreError, StoreOp};

impl Store {
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
}
