//! The coordinator's HTTP API: the worker protocol of `docs/api.md`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Extension, Path, Query, Request, State},
    http::{header::AUTHORIZATION, HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use plait_api::{
    ApiErrorBody, BanWorkerRequest, ClaimTaskRequest, ClaimTaskResponse, ClientRecord, EventsQuery,
    IssueClientRequest, IssueClientResponse, IssueWorkerRequest, IssueWorkerResponse, JobEventBody,
    JobStatusResponse, JobsQuery, MemoryNeedRecord, ProgramRecord, RegisterWorkerRequest,
    RegisterWorkerResponse, ReportFailureRequest, SubmitJobRequest, SubmitJobResponse,
    SubmitResultResponse, TaskMeta, TreeQuery, UploadProgramResponse, WorkerRecord,
    LEASE_SECRET_HEADER, TASK_META_HEADER,
};
use plait_core::{JobId, TaskId};
use plait_prover::ProofBlob;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

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
            CoordinatorError::OverInputLimit { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "over-input-limit")
            }
            CoordinatorError::OverProgramQuota { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "over-program-quota")
            }
            CoordinatorError::UnknownProgram(_) => (StatusCode::NOT_FOUND, "unknown-program"),
            CoordinatorError::RegistrationClosed => (StatusCode::FORBIDDEN, "registration-closed"),
            CoordinatorError::PoolFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "pool-full"),
            CoordinatorError::Panicked(_) | CoordinatorError::Halted => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            CoordinatorError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
            CoordinatorError::CannotCheck(_) => (StatusCode::SERVICE_UNAVAILABLE, "cannot-check"),
            CoordinatorError::InvalidState(_) => (StatusCode::CONFLICT, "invalid-state"),
            CoordinatorError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            CoordinatorError::CannotPlan(_) => (StatusCode::UNPROCESSABLE_ENTITY, "cannot-plan"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Builds the router. `max_body_bytes` bounds uploads (proofs).
///
/// Every route is registered through `routes!` with its `#[utoipa::path]` description, so the
/// API description served at `/v1/openapi.json` is built from the same registrations as the
/// router and cannot leave a route out (see [`openapi`]).
pub fn router(coordinator: Arc<Coordinator>, max_body_bytes: usize) -> Router {
    let (router, api) = documented_router(coordinator.clone(), max_body_bytes).split_for_parts();
    let description = api
        .to_pretty_json()
        .expect("the API description serializes");
    router
        .layer(Extension(ApiDescriptionJson(Arc::new(description))))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(json_errors))
        .with_state(coordinator)
}

/// The API description (OpenAPI 3.1) of the routes [`router`] serves.
pub fn openapi(coordinator: Arc<Coordinator>) -> utoipa::openapi::OpenApi {
    documented_router(coordinator, usize::MAX).into_openapi()
}

fn documented_router(
    coordinator: Arc<Coordinator>,
    max_body_bytes: usize,
) -> OpenApiRouter<Arc<Coordinator>> {
    use plait_api::limits;
    // Worker bodies are bounded per route (a result by the backend's largest proof), below the
    // coordinator-wide limit on uploads.
    let bounded = |limit: usize| DefaultBodyLimit::max(limit.min(max_body_bytes));
    let result_limit = coordinator.max_proof_bytes().unwrap_or(max_body_bytes);
    // Every request but an upload (a program, a proof) has a deadline, its body included: a
    // peer that trickles a request cannot hold a handler. A claim waits up to `claim_wait`.
    let deadline = TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_DEADLINE + coordinator.config().claim_wait,
    );
    let worker = OpenApiRouter::new()
        .routes(routes!(register).layer(bounded(limits::REGISTER_BODY_BYTES)))
        .routes(routes!(claim).layer(bounded(limits::CLAIM_BODY_BYTES)))
        .routes(routes!(program))
        .routes(routes!(proof))
        .routes(routes!(checkpoint))
        .routes(routes!(heartbeat))
        .routes(routes!(failure).layer(bounded(limits::FAILURE_BODY_BYTES)))
        .layer(deadline.clone())
        .routes(routes!(result).layer(bounded(result_limit)))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            authenticate_worker,
        ));
    let operator = OpenApiRouter::new()
        .routes(routes!(list_workers, issue_worker))
        .routes(routes!(revoke_worker))
        .routes(routes!(ban_worker))
        .routes(routes!(unban_worker))
        .routes(routes!(list_memory_needs, forget_memory_needs))
        .routes(routes!(list_clients, issue_client))
        .routes(routes!(revoke_client))
        .layer(deadline.clone())
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_operator_token,
        ));
    let client = OpenApiRouter::new()
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(job_status))
        .routes(routes!(job_action))
        .routes(routes!(job_proof))
        .routes(routes!(job_events))
        .routes(routes!(job_timings))
        .routes(routes!(job_tree))
        .routes(routes!(list_programs))
        .routes(routes!(delete_program))
        .layer(deadline.clone())
        .routes(routes!(upload_program))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_client_token,
        ));
    let metrics = OpenApiRouter::new()
        .routes(routes!(metrics))
        .layer(deadline.clone())
        .layer(middleware::from_fn_with_state(
            coordinator,
            require_metrics_token,
        ));
    let open = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(dashboard))
        .routes(routes!(dashboard_script))
        .routes(routes!(dashboard_styles))
        .routes(routes!(openapi_json))
        .layer(deadline);
    OpenApiRouter::with_openapi(ApiDescription::openapi())
        .merge(tagged(open, "open", None))
        .merge(tagged(metrics, "operator", Some(METRICS_AUTH)))
        .nest("/v1/worker", tagged(worker, "worker", Some(WORKER_AUTH)))
        .nest(
            "/v1/admin",
            tagged(operator, "operator", Some(OPERATOR_AUTH)),
        )
        .nest("/v1", tagged(client, "client", Some(CLIENT_AUTH)))
}

/// How long a request but an upload may take, beyond a claim's long poll.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

const CLIENT_AUTH: &str = "client-credential";
const WORKER_AUTH: &str = "worker-credential";
const OPERATOR_AUTH: &str = "operator-token";
const METRICS_AUTH: &str = "metrics-token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Plait coordinator",
        description = "A proving pool for zkVM continuations: clients submit programs and \
            jobs, workers claim and prove their segments and aggregation nodes, the operator \
            manages credentials. Prose, error codes and durability: docs/api.md. Every \
            non-2xx answer is an `ApiErrorBody`.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&Security)
)]
struct ApiDescription;

/// The bearer tokens the route groups check.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                CLIENT_AUTH,
                "A client's credential (`plait clients issue`), or the pool's shared client \
                 token (the client `default`).",
            ),
            (
                WORKER_AUTH,
                "A worker's own credential (from registration or `plait workers issue`); the \
                 pool's worker token opens `POST /v1/worker/register` only.",
            ),
            (OPERATOR_AUTH, "The operator token."),
            (
                METRICS_AUTH,
                "The metrics token, if the coordinator was given one (else none is needed).",
            ),
        ] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(description.into());
            components
                .security_schemes
                .insert(name.into(), SecurityScheme::Http(scheme).into());
        }
        components.schemas.insert(
            "ApiErrorBody".into(),
            <ApiErrorBody as utoipa::PartialSchema>::schema(),
        );
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Gives every route of a group its tag, the bearer token its middleware checks, and the error
/// body every route may answer with.
fn tagged(
    mut group: OpenApiRouter<Arc<Coordinator>>,
    tag: &str,
    auth: Option<&str>,
) -> OpenApiRouter<Arc<Coordinator>> {
    for item in group.get_openapi_mut().paths.paths.values_mut() {
        for operation in operations(item) {
            operation.tags = Some(vec![tag.into()]);
            operation.security = auth.map(|scheme| {
                vec![utoipa::openapi::security::SecurityRequirement::new(
                    scheme,
                    Vec::<String>::new(),
                )]
            });
            let error = utoipa::openapi::ResponseBuilder::new()
                .description("An error: a stable code (see docs/api.md) and a message")
                .content(
                    "application/json",
                    utoipa::openapi::Content::new(Some(utoipa::openapi::Ref::from_schema_name(
                        "ApiErrorBody",
                    ))),
                );
            operation
                .responses
                .responses
                .entry("default".into())
                .or_insert_with(|| error.into());
        }
    }
    group
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
        StatusCode::REQUEST_TIMEOUT => "request-timeout",
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

#[utoipa::path(get, path = "/v1/health", responses(
    (status = 200, description = "`ok`", body = String, content_type = "text/plain")
))]
async fn health() -> &'static str {
    "ok"
}

/// The API description, made once when the router was built.
#[derive(Clone)]
struct ApiDescriptionJson(Arc<String>);

#[utoipa::path(get, path = "/v1/openapi.json", responses(
    (status = 200, description = "This API description (OpenAPI 3.1)", content_type = "application/json")
))]
async fn openapi_json(
    Extension(ApiDescriptionJson(json)): Extension<ApiDescriptionJson>,
) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.as_str().to_owned(),
    )
        .into_response()
}

/// The live dashboard: one page, embedded in the binary (no CDN), that reads the API with the
/// tokens the user gives it; it holds no data itself, so it is served to anyone. Its script
/// and styles are files of their own, so that its CSP allows no inline script or style: text
/// the page shows (job names, failure reasons) can never run as code.
#[utoipa::path(get, path = "/ui", responses(
    (status = 200, description = "The live dashboard: one HTML page that reads this API with the tokens given to it", content_type = "text/html")
))]
async fn dashboard() -> Response {
    dashboard_file("text/html; charset=utf-8", include_str!("ui/index.html"))
}

#[utoipa::path(get, path = "/ui/dashboard.js", responses(
    (status = 200, description = "The dashboard's script", content_type = "text/javascript")
))]
async fn dashboard_script() -> Response {
    dashboard_file(
        "text/javascript; charset=utf-8",
        include_str!("ui/dashboard.js"),
    )
}

#[utoipa::path(get, path = "/ui/dashboard.css", responses(
    (status = 200, description = "The dashboard's styles", content_type = "text/css")
))]
async fn dashboard_styles() -> Response {
    dashboard_file("text/css; charset=utf-8", include_str!("ui/dashboard.css"))
}

/// What the dashboard's page may load and do: its own script and styles, calls to this
/// server, nothing inline, no framing, no form posts.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn dashboard_file(content_type: &'static str, body: &'static str) -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Prometheus' text exposition format.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus' text exposition format (see docs/metrics.md)", body = String, content_type = "text/plain")
))]
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

#[utoipa::path(post, path = "/programs",
    request_body(content = Vec<u8>, description = "The program ELF", content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored (or already stored), by its SHA-256", body = UploadProgramResponse),
        (status = 422, description = "`invalid-program`: the backend cannot run it; nothing stored", body = ApiErrorBody),
        (status = 413, description = "`over-program-quota`: it would take the client over its program bytes; nothing stored", body = ApiErrorBody),
    ))]
async fn upload_program(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    body: Bytes,
) -> Result<Json<UploadProgramResponse>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty-program",
            "the request body must be the program ELF",
        ));
    }
    let program = coordinator.add_program_for(&client, body.to_vec()).await?;
    Ok(Json(UploadProgramResponse {
        program_sha256: program.digest,
    }))
}

#[utoipa::path(get, path = "/programs", responses(
    (status = 200, description = "The programs the client keeps, with their sizes (its quota counts them)", body = Vec<ProgramRecord>),
))]
async fn list_programs(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
) -> Json<Vec<ProgramRecord>> {
    Json(coordinator.programs_of(&client))
}

#[utoipa::path(delete, path = "/programs/{sha256}", params(("sha256" = String, Path, description = "The program's SHA-256")), responses(
    (status = 204, description = "The client no longer keeps it (jobs already submitted run on); the coordinator drops it once no client keeps it and no job names it"),
    (status = 404, description = "`unknown-program`: the client keeps no such program", body = ApiErrorBody),
))]
async fn delete_program(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(sha256): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.delete_program_for(&client, &sha256).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/jobs", request_body = SubmitJobRequest, responses(
    (status = 200, description = "The job is stored; its program executes in the background", body = SubmitJobResponse),
    (status = 404, description = "`unknown-program`", body = ApiErrorBody),
    (status = 403, description = "`over-instruction-limit`: more instructions than the client may ask for", body = ApiErrorBody),
    (status = 413, description = "`over-input-limit`: more input than the client's jobs may carry", body = ApiErrorBody),
    (status = 429, description = "`too-many-jobs`: the client's jobs in flight are at its limit", body = ApiErrorBody),
))]
async fn submit_job(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Json(request): Json<SubmitJobRequest>,
) -> Result<Json<SubmitJobResponse>, ApiError> {
    let program = coordinator
        .program_of(&client, &request.program_sha256)
        .await?
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

#[utoipa::path(get, path = "/jobs/{job}", params(("job" = u64, Path, description = "The job's number (the N of job-N)")), responses(
    (status = 200, description = "The job's status", body = JobStatusResponse),
    (status = 404, description = "`unknown-job` (also another client's job)", body = ApiErrorBody),
))]
async fn job_status(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<JobStatusResponse>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(status_body(&coordinator, JobId(job)).await?))
}

/// The calling client's jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/jobs", params(JobsQuery), responses(
    (status = 200, description = "A page of the calling client's jobs, newest first", body = Vec<JobStatusResponse>),
))]
async fn list_jobs(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobStatusResponse>>, ApiError> {
    let mut bodies = Vec::new();
    let before = query.before.map(JobId);
    for id in coordinator
        .job_ids_of(&client, before, query.limit())
        .await?
    {
        bodies.push(status_body(&coordinator, id).await?);
    }
    Ok(Json(bodies))
}

/// `POST /v1/jobs/{job}/{pause|resume|cancel|retry}`.
#[utoipa::path(post, path = "/jobs/{job}/{action}", params(
    ("job" = u64, Path, description = "The job's number (the N of job-N)"),
    ("action" = String, Path, description = "`pause`, `resume`, `cancel` or `retry`"),
), responses(
    (status = 200, description = "The job's new status", body = JobStatusResponse),
    (status = 404, description = "`unknown-job` or `unknown-action`", body = ApiErrorBody),
    (status = 409, description = "`invalid-state`: the action does not apply to the job's state", body = ApiErrorBody),
))]
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

#[utoipa::path(get, path = "/jobs/{job}/proof", params(("job" = u64, Path, description = "The job's number (the N of job-N)")), responses(
    (status = 200, description = "The verified final proof file", body = Vec<u8>, content_type = "application/octet-stream"),
    (status = 409, description = "`not-finished`", body = ApiErrorBody),
))]
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

#[utoipa::path(get, path = "/jobs/{job}/events", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), EventsQuery), responses(
    (status = 200, description = "The job's event log (or its last events)", body = Vec<JobEventBody>),
))]
async fn job_events(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<Vec<JobEventBody>>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    let events = match query.last {
        Some(last) => coordinator.last_events(JobId(job), last).await?,
        None => coordinator.events(JobId(job)).await?,
    };
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

#[utoipa::path(get, path = "/jobs/{job}/tree", params(("job" = u64, Path, description = "The job's number (the N of job-N)"), TreeQuery), responses(
    (status = 200, description = "The aggregation tree as far as it exists: whole, or counted per layer with its notable nodes", body = plait_api::TreeView),
))]
/// The job's aggregation tree, each task with its state (a large one counted per layer).
async fn job_tree(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
    Query(query): Query<TreeQuery>,
) -> Result<Json<plait_api::TreeView>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(
        coordinator.tree_view(JobId(job), query.limit()).await?,
    ))
}

/// Every accepted task's timing and measurements.
#[utoipa::path(get, path = "/jobs/{job}/timings", params(("job" = u64, Path, description = "The job's number (the N of job-N)")), responses(
    (status = 200, description = "Every accepted task's timing and measurements", body = Vec<crate::TaskTiming>),
))]
async fn job_timings(
    State(coordinator): State<Arc<Coordinator>>,
    Extension(ClientId(client)): Extension<ClientId>,
    Path(job): Path<u64>,
) -> Result<Json<Vec<crate::TaskTiming>>, ApiError> {
    coordinator.check_owner(JobId(job), &client).await?;
    Ok(Json(coordinator.timings(JobId(job)).await?))
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

#[utoipa::path(get, path = "/workers", responses(
    (status = 200, description = "Every worker identity", body = Vec<WorkerRecord>),
))]
async fn list_workers(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<WorkerRecord>> {
    Json(coordinator.workers())
}

#[utoipa::path(post, path = "/workers", request_body = IssueWorkerRequest, responses(
    (status = 200, description = "A credential for a new worker, shown once", body = IssueWorkerResponse),
    (status = 409, description = "`worker-exists`", body = ApiErrorBody),
))]
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

#[utoipa::path(get, path = "/clients", responses(
    (status = 200, description = "Every client", body = Vec<ClientRecord>),
))]
async fn list_clients(State(coordinator): State<Arc<Coordinator>>) -> Json<Vec<ClientRecord>> {
    Json(coordinator.clients())
}

#[utoipa::path(post, path = "/clients", request_body = IssueClientRequest, responses(
    (status = 200, description = "A credential for a new client, shown once", body = IssueClientResponse),
    (status = 409, description = "`client-exists`", body = ApiErrorBody),
))]
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

#[utoipa::path(delete, path = "/clients/{id}", params(("id" = String, Path, description = "The client's id")), responses(
    (status = 204, description = "The credential stops working; the client's jobs run on"),
    (status = 404, description = "`unknown-client`", body = ApiErrorBody),
))]
async fn revoke_client(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.revoke_client(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/workers/{id}", params(("id" = String, Path, description = "The worker's id")), responses(
    (status = 204, description = "The credential stops working"),
    (status = 404, description = "`unknown-worker`", body = ApiErrorBody),
))]
async fn revoke_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.revoke_worker(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/workers/{id}/ban", params(("id" = String, Path, description = "The worker's id")), request_body = BanWorkerRequest, responses(
    (status = 204, description = "Banned: its calls get `403 worker-banned` and its leases lapse"),
    (status = 404, description = "`unknown-worker`", body = ApiErrorBody),
))]
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

#[utoipa::path(post, path = "/workers/{id}/unban", params(("id" = String, Path, description = "The worker's id")), responses(
    (status = 204, description = "The ban and the rejection count are cleared"),
    (status = 404, description = "`unknown-worker`", body = ApiErrorBody),
))]
async fn unban_worker(
    State(coordinator): State<Arc<Coordinator>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    coordinator.set_worker_ban(&id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/memory-needs", responses(
    (status = 200, description = "The memory needs learned from workers' measured peaks", body = Vec<MemoryNeedRecord>),
))]
async fn list_memory_needs(
    State(coordinator): State<Arc<Coordinator>>,
) -> Json<Vec<MemoryNeedRecord>> {
    Json(coordinator.memory_needs())
}

#[utoipa::path(delete, path = "/memory-needs", responses(
    (status = 204, description = "Every learned need forgotten: tasks go by the operator's profiles or the backend's estimate until workers report again"),
))]
async fn forget_memory_needs(
    State(coordinator): State<Arc<Coordinator>>,
) -> Result<StatusCode, ApiError> {
    coordinator.forget_memory_needs().await?;
    Ok(StatusCode::NO_CONTENT)
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
