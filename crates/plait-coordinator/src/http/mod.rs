//! The coordinator's HTTP API (`docs/api.md`): [`router`] assembles the route groups, each
//! behind its bearer token (`auth`): the worker protocol (`worker_routes`), the clients'
//! routes (`client_routes`), the operator's (`operator_routes`), the dashboard
//! (`dashboard`) and the open routes and metrics here. Every error answer is an
//! [`ApiError`] (`error`); every route is registered with its OpenAPI description, so the
//! description served at `/v1/openapi.json` cannot leave one out.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{DefaultBodyLimit, Extension, State},
    http::StatusCode,
    middleware::{self},
    response::{IntoResponse, Response},
    Router,
};
use plait_api::ApiErrorBody;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::Coordinator;

mod auth;
mod client_routes;
mod dashboard;
mod error;
mod operator_routes;
mod worker_routes;

use auth::require_metrics_token;
pub use dashboard::DASHBOARD_CSP;
pub use error::ApiError;

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
    // Every request but an upload (a program, a proof) has a deadline, its body included: a
    // peer that trickles a request cannot hold a handler. A claim waits up to `claim_wait`.
    let deadline = TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        REQUEST_DEADLINE + coordinator.config().claim_wait,
    );
    let worker = worker_routes::routes(&coordinator, max_body_bytes, deadline.clone());
    let operator = operator_routes::routes(&coordinator, deadline.clone());
    let client = client_routes::routes(&coordinator, deadline.clone());
    let metrics = OpenApiRouter::new()
        .routes(routes!(metrics))
        .layer(deadline.clone())
        .layer(middleware::from_fn_with_state(
            coordinator,
            require_metrics_token,
        ));
    let open = OpenApiRouter::new()
        .routes(routes!(health))
        .merge(dashboard::routes())
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
