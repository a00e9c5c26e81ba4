//! The worker loop: claim a task, fetch what it needs, prove it on a blocking thread while
//! heartbeating the lease, upload the result. A worker holds no job state; losing one loses at
//! most the task it was proving, which the coordinator re-leases when the lease runs out.
//!
//! Main items: [`run`], the loop over a [`CoordinatorClient`] configured by [`WorkerConfig`];
//! [`calibrate`] (measuring a device into a profile); and [`process_usage`] (the peak memory
//! and CPU reported with each proof).

#![warn(missing_docs)]

pub mod calibrate;
mod client;
mod usage;

use std::{collections::HashMap, sync::Arc, time::Duration};

pub use client::{http_client, http_client_builder, ClientError, CoordinatorClient};
use plait_api::{ClaimTaskRequest, TaskAssignment, Work};
use plait_core::{cost::DeviceProfile, Device, DeviceKind};
use plait_prover::{
    BackendError, ProgramImage, ProofBlob, ProofMeta, ProverBackend, SegmentStart, Verdict,
};
use sha2::{Digest, Sha256};
pub use usage::{process_usage, reset_peak_rss, ProcessUsage};

/// Logs an event about a task with its job, task, attempt and worker as fields (the JSON log
/// format puts them beside the message, for log collectors).
macro_rules! task_event {
    ($level:ident, $task:expr, $worker:expr, $($rest:tt)+) => {
        tracing::$level!(
            job = %$task.job_id,
            task = %$task.task_id,
            attempt = $task.attempt,
            worker = %$worker,
            $($rest)+
        )
    };
}

/// How a worker joins a pool and what it says about its machine.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's base URL (`http://` or `https://`).
    pub coordinator: String,
    /// The pool's worker token, or a credential the operator issued for this worker.
    pub token: String,
    /// What this worker calls itself (the coordinator adds a suffix to make its id).
    pub name: String,
    /// A CA certificate (PEM) to trust for an `https://` coordinator, besides the system's.
    pub ca_cert: Option<std::path::PathBuf>,
    /// CPU cores it proves with (advertised with each claim).
    pub cores: u32,
    /// Memory it may use for a task, in bytes: it is handed only tasks that need no more.
    pub memory_bytes: u64,
    /// Stop after this many tasks (for tests and benchmarks); `None` runs forever.
    pub max_tasks: Option<u64>,
    /// This device's measured costs, sent with each claim for the coordinator's planner.
    pub device_profile: Option<DeviceProfile>,
    /// The device the backend proves on, sent with each claim: a GPU worker is placed by its
    /// device memory.
    pub device: Option<Device>,
}

/// Why the worker loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator could not be reached, or refused the worker for good.
    #[error("coordinator: {0}")]
    Client(#[from] ClientError),
}

/// Runs the claim → prove → submit loop until `max_tasks` is reached or the coordinator says
/// this worker cannot work for it.
pub async fn run(config: WorkerConfig, backend: Arc<dyn ProverBackend>) -> Result<(), WorkerError> {
    let mut client = CoordinatorClient::new(
        &config.coordinator,
        &config.token,
        config.ca_cert.as_deref(),
    )?;
    let mut worker_id = register(&mut client, &config.name).await?;
    // Whether the last claim came right after registering (a credential refused then is not
    // a forgotten identity, and registering again would not help).
    let mut just_registered = true;
    let info = backend.info();
    let mut request = ClaimTaskRequest {
        slots: 1,
        cores: config.cores,
        memory_bytes: config.memory_bytes,
        backend: info.name.clone(),
        backend_version: info.version.clone(),
        plait_version: env!("CARGO_PKG_VERSION").into(),
        key_sets: backend.cached_key_sets(),
        gpus: config
            .device
            .as_ref()
            .map_or(0, |d| u32::from(d.kind == DeviceKind::Gpu)),
        device_profile: config.device_profile.clone(),
        device: config.device.clone(),
    };
    let mut programs: HashMap<String, ProgramImage> = HashMap::new();
    let mut done = 0u64;
    let device = config
        .device
        .as_ref()
        .map_or("unnamed".into(), Device::describe);
    tracing::info!(worker = %worker_id, coordinator = %config.coordinator, backend = %info.name, %device, "worker started");
    while config.max_tasks.is_none_or(|max| done < max) {
        let claimed = client.claim(&request).await;
        let fresh_identity = std::mem::replace(&mut just_registered, false);
        let task = match claimed {
            Ok(Some(task)) => task,
            Ok(None) => continue,
            // Registered identities are forgotten after a long idle, or to make room in a
            // full pool: join again rather than exit.
            Err(e) if e.is_unauthorized() && client.joined_with_pool_token() && !fresh_identity => {
                tracing::warn!(worker = %worker_id, "the coordinator no longer knows this worker; registering again");
                worker_id = register(&mut client, &config.name).await?;
                just_registered = true;
                continue;
            }
            // Permanent refusals end the worker; anything else may pass.
            Err(e @ ClientError::Refused { .. }) if e.is_permanent() => return Err(e.into()),
            Err(e) => {
                // The coordinator may be restarting; back off and retry.
                tracing::warn!(error = %e, "claim failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        done += 1;
        if let Err(e) = work_on(&client, &backend, &mut programs, &task, &worker_id).await {
            task_event!(warn, task, worker_id, error = %e, "task abandoned");
        }
        // The task may have generated keys.
        request.key_sets = backend.cached_key_sets();
    }
    Ok(())
}

/// Registers, retrying while the coordinator is unreachable or failing (it may be starting).
async fn register(client: &mut CoordinatorClient, name: &str) -> Result<String, ClientError> {
    loop {
        match client.register(name).await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "registering failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

async fn work_on(
    client: &CoordinatorClient,
    backend: &Arc<dyn ProverBackend>,
    programs: &mut HashMap<String, ProgramImage>,
    task: &TaskAssignment,
    worker: &str,
) -> Result<(), ClientError> {
    task_event!(info, task, worker, "task started");
    let program = match programs.get(&task.program_sha256) {
        Some(p) => p.clone(),
        None => {
            let bytes = client.program(task).await?;
            let program = ProgramImage::new(bytes);
            if program.digest != task.program_sha256 {
                return client
                    .report_failure(task, "program download does not match its digest")
                    .await;
            }
            programs.insert(program.digest.clone(), program.clone());
            program
        }
    };
    let mut checkpoint = None;
    let children = match &task.work {
        Work::Aggregate { children, .. } => {
            let mut proofs = Vec::with_capacity(children.len());
            for child in children {
                proofs.push(ProofBlob(client.child_proof(task, *child).await?));
            }
            proofs
        }
        Work::ProveSegment { segment, .. } => {
            if let Some(sha256) = &segment.checkpoint {
                let bytes = client.checkpoint(task, sha256).await?;
                // The download must be the checkpoint the task names; what it holds is then
                // checked against the segment's boundary by the backend.
                if hex::encode(Sha256::digest(&bytes)) != *sha256 {
                    return client
                        .report_failure(
                            task,
                            "checkpoint refused: its download does not hash to the digest the \
                             task names",
                        )
                        .await;
                }
                checkpoint = Some(bytes);
            }
            Vec::new()
        }
    };

    // Prove on a blocking thread; heartbeat the lease meanwhile. The peak memory reported with
    // the result is this task's own (the coordinator learns aggregation nodes' needs from it).
    reset_peak_rss();
    let proving = {
        let backend = backend.clone();
        let task = task.clone();
        tokio::task::spawn_blocking(move || {
            prove(&*backend, &program, &task, &children, checkpoint.as_deref())
        })
    };
    tokio::pin!(proving);
    let heartbeat_every = Duration::from_millis((task.lease_seconds * 1000 / 3).max(100));
    let outcome = loop {
        tokio::select! {
            outcome = &mut proving => break outcome,
            _ = tokio::time::sleep(heartbeat_every) => {
                if let Err(e) = client.heartbeat(task).await {
                    task_event!(warn, task, worker, error = %e, "heartbeat failed");
                }
            }
        }
    };
    match outcome {
        Ok(Ok((proof, mut meta))) => {
            let usage = process_usage();
            meta.process_peak_rss_bytes = usage.peak_rss_bytes;
            meta.process_cpu_seconds = usage.cpu_seconds;
            let verdict = submit_with_retries(client, task, worker, proof, &meta).await?;
            match verdict {
                Verdict::Accepted => task_event!(info, task, worker, "result accepted"),
                Verdict::Rejected { reason } => {
                    task_event!(warn, task, worker, %reason, "result rejected")
                }
            }
            Ok(())
        }
        Ok(Err(e)) => client.report_failure(task, &e.to_string()).await,
        Err(panic) => {
            client
                .report_failure(task, &format!("prover panicked: {panic}"))
                .await
        }
    }
}

/// Submits a result, retrying while the coordinator is unreachable or failing (it may be
/// restarting): a finished proof is worth a minute of retries.
async fn submit_with_retries(
    client: &CoordinatorClient,
    task: &TaskAssignment,
    worker: &str,
    proof: ProofBlob,
    meta: &ProofMeta,
) -> Result<Verdict, ClientError> {
    let mut delay = Duration::from_millis(250);
    for _ in 0..12 {
        match client.submit(task, proof.clone(), meta).await {
            Err(e) if e.is_transient() => {
                task_event!(warn, task, worker, error = %e, "submitting failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            other => return other,
        }
    }
    client.submit(task, proof, meta).await
}

fn prove(
    backend: &dyn ProverBackend,
    program: &ProgramImage,
    task: &TaskAssignment,
    children: &[ProofBlob],
    checkpoint: Option<&[u8]>,
) -> Result<(ProofBlob, ProofMeta), BackendError> {
    // Loads the task's keys, generating them on a machine that has none yet.
    backend.prepare_keys(&task.params)?;
    match &task.work {
        Work::ProveSegment {
            segment,
            is_last,
            input,
        } => {
            let start = match (checkpoint, input) {
                (Some(bytes), _) => SegmentStart::Checkpoint {
                    job: task.job_id,
                    bytes,
                },
                (None, Some(input)) => SegmentStart::Reexecute(input),
                (None, None) => {
                    return Err(BackendError::MalformedTask(
                        "segment task has neither a checkpoint nor the program input".into(),
                    ))
                }
            };
            backend.prove_segment(program, &task.params, segment, *is_last, start)
        }
        Work::Aggregate { layer, .. } => {
            let started = std::time::Instant::now();
            let (proof, meta) = backend.aggregate_with_meta(&task.params, *layer, children)?;
            Ok((
                proof,
                ProofMeta {
                    proving_seconds: started.elapsed().as_secs_f64(),
                    ..meta
                },
            ))
        }
    }
}
