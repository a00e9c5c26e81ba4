//! Who is calling: bearer tokens resolved to a worker, a client, the operator or a metrics scraper, before any handler runs.

use std::sync::Arc;

use crate::{Coordinator, WorkerCaller};
use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, StatusCode},
    middleware::Next,
    response::Response,
};

use super::error::ApiError;

/// The worker a call comes from: extracted from the caller [`authenticate_worker`] found, and
/// refused (`401 register-first`) for the pool's token, which only registers.
pub(super) struct WorkerId(pub(super) String);

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
pub(super) async fn authenticate_worker(
    State(coordinator): State<Arc<Coordinator>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = coordinator.authenticate_worker(bearer(&request))?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

pub(super) async fn require_operator_token(
    State(coordinator): State<Arc<Coordinator>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_token(&request, &coordinator.config().operator_token, "operator")?;
    Ok(next.run(request).await)
}

/// The client a call comes from (see [`Coordinator::authenticate_client`]).
#[derive(Clone)]
pub(super) struct ClientId(pub(super) String);

/// Resolves the bearer token to the calling client; its handlers act on its jobs only.
pub(super) async fn require_client_token(
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
pub(super) async fn require_metrics_token(
    State(coordinator): State<Arc<Coordinator>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &coordinator.config().metrics_token {
        check_token(&request, token, "metrics")?;
    }
    Ok(next.run(request).await)
}

/// Workers and clients hold different tokens; neither opens the other's routes.
pub(super) fn check_token(request: &Request, token: &str, who: &str) -> Result<(), ApiError> {
    use subtle::ConstantTimeEq;
    let given = bearer(request);
    // Constant time, so that timing does not reveal how much of a guess was right.
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return Err(unauthorized(who));
    }
    Ok(())
}

/// The request's bearer token; empty if none.
pub(super) fn bearer(request: &Request) -> &str {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

pub(super) fn unauthorized(who: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("missing or wrong {who} token"),
    )
}
