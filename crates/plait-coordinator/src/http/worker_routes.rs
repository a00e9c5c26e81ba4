//! The worker protocol under `/v1/worker`: register, claim, read what a lease allows, heartbeat, submit a result or a failure.

use std::sync::Arc;

use crate::{Coordinator, WorkerCaller};
use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Extension, Path, State},
    http::{HeaderMap, StatusCode},
    middleware::{self},
    Json,
};
use plait_api::{
    ApiErrorBody, ClaimTaskRequest, ClaimTaskResponse, RegisterWorkerRequest,
    RegisterWorkerResponse, ReportFailureRequest, SubmitResultResponse, TaskMeta,
    LEASE_SECRET_HEADER, TASK_META_HEADER,
};
use plait_core::{JobId, TaskId};
use plait_prover::ProofBlob;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use super::{
    auth::{authenticate_worker, WorkerId},
    error::ApiError,
};

/// The worker routes, behind the worker's credential. Bodies are bounded per route (a result
/// by the backend's largest proof), below the coordinator-wide limit on uploads; every route
/// but the result upload has `deadline`.
pub(super) fn routes(
    coordinator: &Arc<Coordinator>,
    max_body_bytes: usize,
    deadline: TimeoutLayer,
) -> OpenApiRouter<Arc<Coordinator>> {
    use plait_api::limits;
    let bounded = |limit: usize| DefaultBodyLimit::max(limit.min(max_body_bytes));
    let result_limit = coordinator.max_proof_bytes().unwrap_or(max_body_bytes);
    OpenApiRouter::new()
        .routes(routes!(register).layer(bounded(limits::REGISTER_BODY_BYTES)))
        .routes(routes!(claim).layer(bounded(limits::CLAIM_BODY_BYTES)))
        .routes(routes!(program))
        .routes(routes!(proof))
        .routes(routes!(checkpoint))
        .routes(routes!(heartbeat))
        .routes(routes!(failure).layer(bounded(limits::FAILURE_BODY_BYTES)))
        .layer(deadline)
        .routes(routes!(result).layer(bounded(result_limit)))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            authenticate_worker,
        ))
}

/// With the pool token: a new identity and its credential. With a credential: who it names.
#[utoipa::path(post, path = "/register", request_body = RegisterWorkerRequest, responses(
    (status = 200, description = "With the pool's worker token: a new identity and its credential. With a credential: the id it names", body = RegisterWorkerResponse),
    (status = 403, description = "`registration-closed`", body = ApiErrorBody),
    (status = 503, description = "`pool-full`", body = ApiErrorBody),
))]
async fn register(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(caller): Extension<WorkerCaller>,
    Json(request): Json<RegisterWorkerRequest>,
) -> Result<Json<RegisterWorkerResponse>, ApiError> {
    Ok(Json(match caller {
        WorkerCaller::Pool => {
            let (worker_id, credential) = coordinator.register_worker(&request.name).await?;
            RegisterWorkerResponse {
                worker_id,
                credential: Some(credential),
            }
        }
        WorkerCaller::Worker(worker_id) => RegisterWorkerResponse {
            worker_id,
            credential: None,
        },
    }))
}

#[utoipa::path(post, path = "/claim", request_body = ClaimTaskRequest, responses(
    (status = 200, description = "A task that fits the worker, or none after a short wait (long poll)", body = ClaimTaskResponse),
    (status = 403, description = "`worker-banned`", body = ApiErrorBody),
))]
async fn claim(
    State(coordinator): State<Arc<Coordinator>>,
    WorkerId(worker): WorkerId,
    Json(request): Json<ClaimTaskRequest>,
) -> Result<Json<ClaimTaskResponse>, ApiError> {
    let task = coordinator.claim(&worker, &request).await?;
    Ok(Json(ClaimTaskResponse { task }))
}

#[utoipa::path(get, path = "/jobs/{job}/program", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment")), responses(
    (status = 200, description = "The job's program ELF, for the holder of one of its leases", body = Vec<u8>, content_type = "application/octet-stream"),
    (status = 403, description = "`not-lease-holder`", body = ApiErrorBody),
))]
async fn program(
    State(coordinator): State<Arc<Coordinator>>,
    _worker: WorkerId,
    Path(job): Path<u64>,
    headers: HeaderMap,
) -> Result<Vec<u8>, ApiError> {
    let program = coordinator.program_for_lease(JobId(job), lease_secret(&headers))?;
    Ok(program.bytes.as_ref().clone())
}

/// The lease secret a worker presents ([`LEASE_SECRET_HEADER`]); empty if none, which no
/// lease has.
fn lease_secret(headers: &HeaderMap) -> &str {
    headers
        .get(LEASE_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[utoipa::path(get, path = "/jobs/{job}/tasks/{task}/proof", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), ("task" = u32, Path, description = "The task's number within the job (the N of task-N)"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment")), responses(
    (status = 200, description = "An accepted proof, a child of the aggregation task whose lease the secret names", body = Vec<u8>, content_type = "application/octet-stream"),
    (status = 403, description = "`not-lease-holder`", body = ApiErrorBody),
))]
async fn proof(
    State(coordinator): State<Arc<Coordinator>>,
    _worker: WorkerId,
    Path((job, task)): Path<(u64, u32)>,
    headers: HeaderMap,
) -> Result<Vec<u8>, ApiError> {
    Ok(coordinator
        .child_proof_for_lease(JobId(job), TaskId(task), lease_secret(&headers))
        .await?
        .0)
}

#[utoipa::path(get, path = "/jobs/{job}/checkpoints/{sha256}", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), ("sha256" = String, Path, description = "The checkpoint's SHA-256, as the segment task names it"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment")), responses(
    (status = 200, description = "A segment's start-state checkpoint, for the holder of that segment's lease", body = Vec<u8>, content_type = "application/octet-stream"),
    (status = 403, description = "`not-lease-holder`", body = ApiErrorBody),
))]
async fn checkpoint(
    State(coordinator): State<Arc<Coordinator>>,
    _worker: WorkerId,
    Path((job, sha256)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Result<Vec<u8>, ApiError> {
    Ok(coordinator
        .checkpoint_for_lease(JobId(job), &sha256, lease_secret(&headers))
        .await?)
}

#[utoipa::path(post, path = "/jobs/{job}/tasks/{task}/attempts/{attempt}/heartbeat", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), ("task" = u32, Path, description = "The task's number within the job (the N of task-N)"), ("attempt" = u32, Path, description = "The lease's attempt number, as the assignment gave it"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment")), responses(
    (status = 204, description = "The lease is extended"),
    (status = 409, description = "`stale-lease`: the lease is over", body = ApiErrorBody),
))]
async fn heartbeat(
    State(coordinator): State<Arc<Coordinator>>,
    WorkerId(worker): WorkerId,
    Path((job, task, attempt)): Path<(u64, u32, u32)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    coordinator.heartbeat(
        &worker,
        JobId(job),
        TaskId(task),
        attempt,
        lease_secret(&headers),
    )?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/jobs/{job}/tasks/{task}/attempts/{attempt}/result", params(
    ("job" = u64, Path, description = "The job's number (the N of job-N)"), ("task" = u32, Path, description = "The task's number within the job (the N of task-N)"), ("attempt" = u32, Path, description = "The lease's attempt number, as the assignment gave it"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment"),
    ("plait-task-meta" = Option<String>, Header, description = "The worker's measurements, a `ProofMeta` as JSON"),
), request_body(content = Vec<u8>, description = "The proof", content_type = "application/octet-stream"), responses(
    (status = 200, description = "The coordinator's verdict on the proof", body = SubmitResultResponse),
    (status = 409, description = "`stale-lease`: the lease is over", body = ApiErrorBody),
    (status = 413, description = "`payload-too-large`: larger than the backend's largest proof", body = ApiErrorBody),
))]
async fn result(
    State(coordinator): State<Arc<Coordinator>>,
    WorkerId(worker): WorkerId,
    Path((job, task, attempt)): Path<(u64, u32, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SubmitResultResponse>, ApiError> {
    let meta: TaskMeta = match headers.get(TASK_META_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed-meta",
                    format!("header {TASK_META_HEADER} is not valid task metadata JSON"),
                )
            })?,
        None => TaskMeta::default(),
    };
    let verdict = coordinator
        .submit_result(
            &worker,
            JobId(job),
            TaskId(task),
            attempt,
            lease_secret(&headers),
            ProofBlob(body.to_vec()),
            meta,
        )
        .await?;
    Ok(Json(SubmitResultResponse { verdict }))
}

#[utoipa::path(post, path = "/jobs/{job}/tasks/{task}/attempts/{attempt}/failure", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), ("task" = u32, Path, description = "The task's number within the job (the N of task-N)"), ("attempt" = u32, Path, description = "The lease's attempt number, as the assignment gave it"), ("plait-lease-secret" = String, Header, description = "The lease's secret, from its assignment")), request_body = ReportFailureRequest, responses(
    (status = 204, description = "The lease ends; the task is retried"),
    (status = 409, description = "`stale-lease`: the lease is over", body = ApiErrorBody),
))]
async fn failure(
    State(coordinator): State<Arc<Coordinator>>,
    WorkerId(worker): WorkerId,
    Path((job, task, attempt)): Path<(u64, u32, u32)>,
    headers: HeaderMap,
    Json(request): Json<ReportFailureRequest>,
) -> Result<StatusCode, ApiError> {
    coordinator
        .report_failure(
            &worker,
            JobId(job),
            TaskId(task),
            attempt,
            lease_secret(&headers),
            &request.reason,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
