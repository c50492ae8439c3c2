//! The HTTP server: `/hooks/{source}` ingress, the `/api/v1` admin API, `/healthz`, `/readyz`, `/metrics`.
//!
//! Handlers only read and enqueue; they never call a destination (that is the worker's job).

mod access_api;
mod api;
pub(crate) mod auth;
pub mod config_api;
mod error;
mod ingress;
pub mod limits;
mod openapi;
mod ops;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::app::App;

pub use error::ApiError;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/hooks/{source}", post(ingress::receive))
        .nest("/api/v1", api::routes(app.clone()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::console::routes(app.clone()))
        .fallback(ops::not_found)
        .with_state(app)
}

/// Serves until `shutdown` completes, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer address feeds source IP allow-lists.
    let service = router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown).await
}
