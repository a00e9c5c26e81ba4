//! The dashboard's page, script and styles, served with a content security policy that allows no inline code.

use std::sync::Arc;

use crate::Coordinator;
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The dashboard's routes (open: the page asks for tokens and sends them to the API itself).
pub(super) fn routes() -> OpenApiRouter<Arc<Coordinator>> {
    OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(dashboard_script))
        .routes(routes!(dashboard_styles))
}

/// The live dashboard: one page, embedded in the binary (no CDN), that reads the API with the
/// tokens the user gives it; it holds no data itself, so it is served to anyone. Its script
/// and styles are files of their own, so that its CSP allows no inline script or style: text
/// the page shows (job names, failure reasons) can never run as code.
#[utoipa::path(get, path = "/ui", responses(
    (status = 200, description = "The live dashboard: one HTML page that reads this API with the tokens given to it", content_type = "text/html")
))]
async fn dashboard() -> Response {
    dashboard_file("text/html; charset=utf-8", include_str!("../ui/index.html"))
}

#[utoipa::path(get, path = "/ui/dashboard.js", responses(
    (status = 200, description = "The dashboard's script", content_type = "text/javascript")
))]
async fn dashboard_script() -> Response {
    dashboard_file(
        "text/javascript; charset=utf-8",
        include_str!("../ui/dashboard.js"),
    )
}

#[utoipa::path(get, path = "/ui/dashboard.css", responses(
    (status = 200, description = "The dashboard's styles", content_type = "text/css")
))]
async fn dashboard_styles() -> Response {
    dashboard_file(
        "text/css; charset=utf-8",
        include_str!("../ui/dashboard.css"),
    )
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
