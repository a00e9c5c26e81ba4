//! The operator's routes under `/v1/admin`: workers (issue, revoke, ban), clients, memory needs.

use std::sync::Arc;

use crate::Coordinator;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    middleware::{self},
    Json,
};
use plait_api::{
    ApiErrorBody, BanWorkerRequest, ClientRecord, IssueClientRequest, IssueClientResponse,
    IssueWorkerRequest, IssueWorkerResponse, MemoryNeedRecord, WorkerRecord,
};
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{auth::require_operator_token, error::ApiError};

/// The operator's routes, behind the operator token, each with `deadline`.
pub(super) fn routes(
    coordinator: &Arc<Coordinator>,
    deadline: TimeoutLayer,
) -> OpenApiRouter<Arc<Coordinator>> {
    OpenApiRouter::new()
        .routes(routes!(list_workers, issue_worker))
        .routes(routes!(revoke_worker))
        .routes(routes!(ban_worker))
        .routes(routes!(unban_worker))
        .routes(routes!(list_memory_needs, forget_memory_needs))
        .routes(routes!(list_clients, issue_client))
        .routes(routes!(revoke_client))
        .layer(deadline)
        .layer(middleware::from_fn_with_state(
            coordinator.clone(),
            require_operator_token,
        ))
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
