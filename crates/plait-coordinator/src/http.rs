//! The coordinator's HTTP API: the worker protocol of `docs/api.md`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State},
    http::{header::AUTHORIZATION, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use plait_api::{
    ApiErrorBody, ClaimTaskRequest, ClaimTaskResponse, ReportFailureRequest, SubmitResultResponse,
    TaskMeta, TASK_META_HEADER,
};
use plait_core::{JobId, TaskId};
use plait_prover::ProofBlob;

use crate::{Coordinator, CoordinatorError};

/// An error answer: an HTTP status and a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        let (status, code) = match &e {
            CoordinatorError::UnknownJob(_) => (StatusCode::NOT_FOUND, "unknown-job"),
            CoordinatorError::UnknownTask(..) => (StatusCode::NOT_FOUND, "unknown-task"),
            CoordinatorError::StaleLease { .. } => (StatusCode::CONFLICT, "stale-lease"),
            CoordinatorError::IncompatibleWorker { .. } => {
                (StatusCode::CONFLICT, "incompatible-worker")
            }
            CoordinatorError::Backend(_) | CoordinatorError::Tree(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-job")
            }
            CoordinatorError::Panicked(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Builds the router. `max_body_bytes` bounds uploads (proofs).
pub fn router(coordinator: Arc<Coordinator>, max_body_bytes: usize) -> Router {
    let worker = Router::new()
        .route("/claim", post(claim))
        .route("/programs/{sha256}", get(program))
        .route("/jobs/{job}/tasks/{task}/proof", get(proof))
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/heartbeat",
            post(heartbeat),
        )
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/result",
            post(result),
        )
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/failure",
            post(failure),
        )
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_worker_token,
        ));
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .nest("/v1/worker", worker)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(coordinator)
}

async fn require_worker_token(
    State(coordinator): State<Arc<Coordinator>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = format!("Bearer {}", coordinator.config().worker_token);
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong worker token",
        ));
    }
    Ok(next.run(request).await)
}

async fn claim(
    State(coordinator): State<Arc<Coordinator>>,
    Json(request): Json<ClaimTaskRequest>,
) -> Result<Json<ClaimTaskResponse>, ApiError> {
    let task = coordinator.claim(&request).await?;
    Ok(Json(ClaimTaskResponse { task }))
}

async fn program(
    State(coordinator): State<Arc<Coordinator>>,
    Path(sha256): Path<String>,
) -> Result<Vec<u8>, ApiError> {
    coordinator
        .program(&sha256)
        .map(|p| p.bytes.as_ref().clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown-program", sha256))
}

async fn proof(
    State(coordinator): State<Arc<Coordinator>>,
    Path((job, task)): Path<(u64, u32)>,
) -> Result<Vec<u8>, ApiError> {
    Ok(coordinator.accepted_proof(JobId(job), TaskId(task))?.0)
}

async fn heartbeat(
    State(coordinator): State<Arc<Coordinator>>,
    Path((job, task, attempt)): Path<(u64, u32, u32)>,
) -> Result<StatusCode, ApiError> {
    coordinator.heartbeat(JobId(job), TaskId(task), attempt)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn result(
    State(coordinator): State<Arc<Coordinator>>,
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
            JobId(job),
            TaskId(task),
            attempt,
            ProofBlob(body.to_vec()),
            meta,
        )
        .await?;
    Ok(Json(SubmitResultResponse { verdict }))
}

async fn failure(
    State(coordinator): State<Arc<Coordinator>>,
    Path((job, task, attempt)): Path<(u64, u32, u32)>,
    Json(request): Json<ReportFailureRequest>,
) -> Result<StatusCode, ApiError> {
    coordinator.report_failure(JobId(job), TaskId(task), attempt, &request.reason)?;
    Ok(StatusCode::NO_CONTENT)
}
