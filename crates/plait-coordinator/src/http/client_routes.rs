//! A client's routes under `/v1`: programs, jobs, and a job's status, events, tree, timings and proof.

use std::sync::Arc;

use crate::{store::JobOwner, Coordinator, JobAction, JobStatus};
use axum::{
    body::Bytes,
    extract::{Extension, Path, Query, State},
    http::StatusCode,
    middleware::{self},
    Json,
};
use plait_api::{
    ApiErrorBody, EventsQuery, JobEventBody, JobStatusResponse, JobsQuery, ProgramRecord,
    SubmitJobRequest, SubmitJobResponse, TreeQuery, UploadProgramResponse,
};
use plait_core::JobId;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::{require_client_token, ClientId},
    error::ApiError,
};

/// The client routes, behind a client's credential; every route but the program upload has
/// `deadline`.
pub(super) fn routes(
    coordinator: &Arc<Coordinator>,
    deadline: TimeoutLayer,
) -> OpenApiRouter<Arc<Coordinator>> {
    OpenApiRouter::new()
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(job_status))
        .routes(routes!(job_action))
        .routes(routes!(job_proof))
        .routes(routes!(job_events))
        .routes(routes!(job_timings))
        .routes(routes!(job_tree))
        .routes(routes!(list_programs))
        .routes(routes!(delete_program))
        .layer(deadline)
        .routes(routes!(upload_program))
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_client_token,
        ))
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
