//! Operations endpoints: liveness, readiness, metrics. (The root page is the console's.)

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::app::App;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response()
        }
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let now = app.clock.now();
    let stats = app.store.queue_stats(now).await.unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.metrics.render(&stats, now),
    )
        .into_response()
}

pub async fn not_found(headers: HeaderMap) -> ApiError {
    ApiError::not_found("path").lang(&headers)
}
