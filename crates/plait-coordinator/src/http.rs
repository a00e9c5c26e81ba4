//! The coordinator's HTTP API: the worker protocol of `docs/api.md`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Extension, Path, Request, State},
    http::{header::AUTHORIZATION, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use plait_api::{
    ApiErrorBody, BanWorkerRequest, ClaimTaskRequest, ClaimTaskResponse, ClientRecord,
    IssueClientRequest, IssueClientResponse, IssueWorkerRequest, IssueWorkerResponse, JobEventBody,
    JobStatusResponse, RegisterWorkerRequest, RegisterWorkerResponse, ReportFailureRequest,
    SubmitJobRequest, SubmitJobResponse, SubmitResultResponse, TaskMeta, UploadProgramResponse,
    WorkerRecord, LEASE_SECRET_HEADER, TASK_META_HEADER,
};
use plait_core::{JobId, TaskId};
use plait_prover::ProofBlob;

use crate::{store::JobOwner, Coordinator, CoordinatorError, JobAction, JobStatus, WorkerCaller};

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
            CoordinatorError::UnknownCheckpoint(..) => {
                (StatusCode::NOT_FOUND, "unknown-checkpoint")
            }
            CoordinatorError::StaleLease { .. } => (StatusCode::CONFLICT, "stale-lease"),
            CoordinatorError::NotLeaseHolder { .. } | CoordinatorError::NotLeased(_) => {
                (StatusCode::FORBIDDEN, "not-lease-holder")
            }
            CoordinatorError::IncompatibleWorker { .. } => {
                (StatusCode::CONFLICT, "incompatible-worker")
            }
            CoordinatorError::Backend(plait_prover::BackendError::InvalidProgram(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-program")
            }
            CoordinatorError::Backend(_) | CoordinatorError::Tree(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-job")
            }
            CoordinatorError::WorkerBanned { .. } => (StatusCode::FORBIDDEN, "worker-banned"),
            CoordinatorError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            CoordinatorError::UnknownWorker(_) => (StatusCode::NOT_FOUND, "unknown-worker"),
            CoordinatorError::WorkerExists(_) => (StatusCode::CONFLICT, "worker-exists"),
            CoordinatorError::ClientExists(_) => (StatusCode::CONFLICT, "client-exists"),
            CoordinatorError::UnknownClient(_) => (StatusCode::NOT_FOUND, "unknown-client"),
            CoordinatorError::TooManyJobs { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-jobs")
            }
            CoordinatorError::OverInstructionLimit { .. } => {
                (StatusCode::FORBIDDEN, "over-instruction-limit")
            }
            CoordinatorError::RegistrationClosed => (StatusCode::FORBIDDEN, "registration-closed"),
            CoordinatorError::PoolFull(_) => (StatusCode::SERVICE_UNAVAILABLE, "pool-full"),
            CoordinatorError::Panicked(_) | CoordinatorError::Halted => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            CoordinatorError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            CoordinatorError::InvalidState(_) => (StatusCode::CONFLICT, "invalid-state"),
            CoordinatorError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            CoordinatorError::CannotPlan(_) => (StatusCode::UNPROCESSABLE_ENTITY, "cannot-plan"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Builds the router. `max_body_bytes` bounds uploads (proofs).
pub fn router(coordinator: Arc<Coordinator>, max_body_bytes: usize) -> Router {
    use plait_api::limits;
    // Worker bodies are bounded per route (a result by the backend's largest proof), below the
    // coordinator-wide limit on uploads.
    let bounded = |limit: usize| DefaultBodyLimit::max(limit.min(max_body_bytes));
    let result_limit = coordinator.max_proof_bytes().unwrap_or(max_body_bytes);
    let worker = Router::new()
        .route(
            "/register",
            post(register).layer(bounded(limits::REGISTER_BODY_BYTES)),
        )
        .route(
            "/claim",
            post(claim).layer(bounded(limits::CLAIM_BODY_BYTES)),
        )
        .route("/programs/{sha256}", get(program))
        .route("/jobs/{job}/tasks/{task}/proof", get(proof))
        .route("/jobs/{job}/checkpoints/{sha256}", get(checkpoint))
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/heartbeat",
            post(heartbeat),
        )
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/result",
            post(result).layer(bounded(result_limit)),
        )
        .route(
            "/jobs/{job}/tasks/{task}/attempts/{attempt}/failure",
            post(failure).layer(bounded(limits::FAILURE_BODY_BYTES)),
        )
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            authenticate_worker,
        ));
    let operator = Router::new()
        .route("/workers", get(list_workers).post(issue_worker))
        .route("/workers/{id}", delete(revoke_worker))
        .route("/workers/{id}/ban", post(ban_worker))
        .route("/workers/{id}/unban", post(unban_worker))
        .route("/clients", get(list_clients).post(issue_client))
        .route("/clients/{id}", delete(revoke_client))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_operator_token,
        ));
    let client = Router::new()
        .route("/programs", post(upload_program))
        .route("/jobs", post(submit_job).get(list_jobs))
        .route("/jobs/{job}", get(job_status))
        .route("/jobs/{job}/{action}", post(job_action))
        .route("/jobs/{job}/proof", get(job_proof))
        .route("/jobs/{job}/events", get(job_events))
        .route("/jobs/{job}/timings", get(job_timings))
        .route("/jobs/{job}/tree", get(job_tree))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_client_token,
        ));
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .layer(middleware::from_fn_with_state(
                coordinator.clone(),
                require_metrics_token,
            ));
    Router::new()
        .route("/v1/health", get(|| async { "ok" }))
        .route("/ui", get(dashboard))
        .route("/ui/", get(dashboard))
        .merge(metrics)
        .nest("/v1/worker", worker)
        .nest("/v1/admin", operator)
        .nest("/v1", client)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(json_errors))
        .with_state(coordinator)
}

/// Gives the errors axum produces itself (malformed JSON or paths, oversize bodies, unknown
/// routes) the same JSON shape and stable codes as ours.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "malformed-json",
        _ if status.is_client_error() => "bad-request",
        _ => "internal",
    };
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    ApiError {
        status,
        code,
        message: if message.is_empty() {
            status.to_string()
        } else {
            message
        },
    }
    .into_response()
}

/// The worker a call comes from: extracted from the caller [`authenticate_worker`] found, and
/// refused (`401 register-first`) for the pool's token, which only registers.
struct WorkerId(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WorkerId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        match parts.extensions.get::<WorkerCaller>() {
            Some(WorkerCaller::Worker(id)) => Ok(WorkerId(id.clone())),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "register-first",
                "the pool's worker token only registers (POST /v1/worker/register); \
                 present the credential registration returned",
            )),
        }
    }
}

/// Resolves the bearer token to the calling worker (refusing unknown tokens and banned
/// workers), for the handlers to act on its behalf and nobody else's.
async fn authenticate_worker(
    State(coordinator): State<Arc<Coordinator>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = coordinator.authenticate_worker(bearer(&request))?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

async fn require_operator_token(
    State(coordinator): State<Arc<Coordinator>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_token(&request, &coordinator.config().operator_token, "operator")?;
    Ok(next.run(request).await)
}

/// The client a call comes from (see [`Coordinator::authenticate_client`]).
#[derive(Clone)]
struct ClientId(String);

/// Resolves the bearer token to the calling client; its handlers act on its jobs only.
async fn require_client_token(
    State(coordinator): State<Arc<Coordinator>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = coordinator.authenticate_client(bearer(&request))?;
    request.extensions_mut().insert(ClientId(client));
    Ok(next.run(request).await)
}

/// `/metrics` is open unless the operator gave it a token of its own (a scraper needs no
/// client's or worker's credential).
async fn require_metrics_token(
    State(coordinator): State<Arc<Coordinator>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &coordinator.config().metrics_token {
        check_token(&request, token, "metrics")?;
    }
    Ok(next.run(request).await)
}

/// The live dashboard: one page, embedded in the binary (no CDN), that reads the API with the
/// tokens the user gives it; it holds no data itself, so it is served to anyone.
async fn dashboard() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("ui/index.html"),
    )
        .into_response()
}

/// Prometheus' text exposition format.
async fn metrics(State(coordinator): State<Arc<Coordinator>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        coordinator.metrics_text(),
    )
        .into_response()
}

/// Workers and clients hold different tokens; neither opens the other's routes.
fn check_token(request: &Request, token: &str, who: &str) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    let given = bearer(request);
    // Constant time, so that timing does not reveal how much of a guess was right.
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err(unauthorized(who));
    }
    Ok(())
}

/// The request's bearer token; empty if none.
fn bearer(request: &Request) -> &str {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn unauthorized(who: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("missing or wrong {who} token"),
    )
}

async fn upload_program(
    State(coordinator): State<Arc<Coordinator>>,
    body: Bytes,
) -> Result<Json<UploadProgramResponse>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty-program",
            "the request body must be the program ELF",
        ));
    }
    let program = coordinator.add_program(body.to_vec()).await?;
    Ok(Json(UploadProgramResponse {
        program_sha256: program.digest,
    }))
}

async fn submit_job(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Json(request): Json<SubmitJobRequest>,
) -> Result<Json<SubmitJobResponse>, ApiError> {
    let program = coordinator
        .program(&request.program_sha256)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-program",
                format!("no program with sha256 {}", request.program_sha256),
            )
        })?;
    let owner = JobOwner {
        client,
        priority: request.priority,
    };
    let job_id = coordinator
        .submit_for(
            owner,
            program,
            request.input,
            request.params,
            request.auto_segment_height,
        )
        .await?;
    let plan = coordinator.plan(job_id).await?;
    Ok(Json(SubmitJobResponse {
        job_id,
        segments: plan.segments.len(),
        segment_height: coordinator.params(job_id).await?.segment_height,
    }))
}

async fn status_body(
    coordinator: &Coordinator,
    job_id: JobId,
) -> Result<JobStatusResponse, ApiError> {
    let job = coordinator.summary(job_id).await?;
    Ok(JobStatusResponse {
        job_id,
        program_sha256: job.program_sha256,
        state: job.state.into(),
        failure: job.failure,
        phases: job.progress.phases,
        elapsed_seconds: job.progress.elapsed_seconds,
        segment_height: job.segment_height,
        prediction: job.prediction,
        measured: job.measured,
        executing: job.progress.executing,
        instructions: job.instructions,
        reexecuted_instructions: job.reexecuted_instructions,
        execution_failed: job.execution_failed,
        waiting_for_memory: job.waiting_for_memory,
    })
}

async fn job_status(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<JobStatusResponse>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(status_body(&coordinator, JobId(job)).await?))
}

/// The calling client's jobs.
async fn list_jobs(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
) -> Result<Json<Vec<JobStatusResponse>>, ApiError> {
    let mut bodies = Vec::new();
    for id in coordinator.job_ids_of(&client).await? {
        bodies.push(status_body(&coordinator, id).await?);
    }
    Ok(Json(bodies))
}

/// `POST /v1/jobs/{job}/{pause|resume|cancel|retry}`.
async fn job_action(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path((job, action)): Path<(u64, String)>,
) -> Result<Json<JobStatusResponse>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    let action = match action.as_str() {
        "pause" => JobAction::Pause,
        "resume" => JobAction::Resume,
        "cancel" => JobAction::Cancel,
        "retry" => JobAction::Retry,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-action",
                format!("no job action {other:?}; expected pause, resume, cancel or retry"),
            ))
        }
    };
    coordinator.act(JobId(job), action).await?;
    Ok(Json(status_body(&coordinator, JobId(job)).await?))
}

async fn job_proof(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Vec<u8>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    match coordinator.status(JobId(job)).await? {
        JobStatus::Succeeded(bytes) => Ok(bytes),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not-finished",
            format!("{} has no proof (yet)", JobId(job)),
        )),
    }
}

async fn job_events(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<Vec<JobEventBody>>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    let events = coordinator.events(JobId(job)).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| JobEventBody {
                at_seconds: e.at_seconds,
                message: e.message,
            })
            .collect(),
    ))
}

/// The job's aggregation tree, each task with its state.
async fn job_tree(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<Vec<plait_api::TreeNode>>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(coordinator.tree(JobId(job)).await?))
}

/// Every accepted task's timing and measurements.
async fn job_timings(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<Vec<crate::TaskTiming>>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(coordinator.timings(JobId(job)).await?))
}

/// With the pool token: a new identity and its credential. With a credential: who it names.
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

async fn claim(
    State(coordinator): State<Arc<Coordinator>>,
    WorkerId(worker): WorkerId,
    Json(request): Json<ClaimTaskRequest>,
) -> Result<Json<ClaimTaskResponse>, ApiError> {
    let task = coordinator.claim(&worker, &request).await?;
    Ok(Json(ClaimTaskResponse { task }))
}

async fn list_workers(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<WorkerRecord>> {
    Json(coordinator.workers())
}

async fn issue_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Json(request): Json<IssueWorkerRequest>,
) -> Result<Json<IssueWorkerResponse>, ApiError> {
    let token = coordinator.issue_worker(&request.worker_id).await?;
    Ok(Json(IssueWorkerResponse {
        worker_id: request.worker_id,
        token,
    }))
}

async fn list_clients(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<ClientRecord>> {
    Json(coordinator.clients())
}

async fn issue_client(
    State(coordinator): State<Arc<Coordinator>>,
    Json(request): Json<IssueClientRequest>,
) -> Result<Json<IssueClientResponse>, ApiError> {
    let token = coordinator
        .issue_client(&request.client_id, request.limits)
        .await?;
    Ok(Json(IssueClientResponse {
        client_id: request.client_id,
        token,
    }))
}

async fn revoke_client(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.revoke_client(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.revoke_worker(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ban_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
    Json(request): Json<BanWorkerRequest>,
) -> Result<StatusCode, ApiError> {
    coordinator
        .set_worker_ban(&id, Some(&request.reason))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unban_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.set_worker_ban(&id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn program(
    State(coordinator): State<Arc<Coordinator>>,
    _worker: WorkerId,
    Path(sha256): Path<String>,
) -> Result<Vec<u8>, ApiError> {
    coordinator
        .program(&sha256)
        .map(|p| p.bytes.as_ref().clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown-program", sha256))
}

/// The lease secret a worker presents ([`LEASE_SECRET_HEADER`]); empty if none, which no
/// lease has.
fn lease_secret(headers: &HeaderMap) -> &str {
    headers
        .get(LEASE_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

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

/// HTTPS: the coordinator's certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files (before the coordinator says it is listening).
    pub async fn load(&self) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
        // One crypto provider for the process: ring, which reqwest uses too. Installing it a
        // second time fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        axum_server::tls_rustls::RustlsConfig::from_pem_file(&self.cert, &self.key)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "TLS certificate {} or key {}: {e}",
                        self.cert.display(),
                        self.key.display()
                    ),
                )
            })
    }
}

/// Serves `app` on `listener` until the process ends: HTTPS with `tls`, else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener, app).await,
        Some(config) => {
            axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)
                .serve(app.into_make_service())
                .await
        }
    }
}
