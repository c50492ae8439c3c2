//! The web console: server-rendered pages at `/console/` (and `/`, which leads there), in Japanese and
//! English, for the people who set integrations up and watch them: a dashboard, sources with their webhook
//! URLs, destinations with the connection test (認証) and kintone's fields, flows with a preview of the
//! requests for a recent event, the history of events and deliveries with every attempt's request and
//! response, retry and replay, the lookup tables with CSV download, and the audit log (admins).
//!
//! Templates are files under `templates/`, compiled into the binary and rendered with MiniJinja (one
//! environment, built once, auto-escaping every `.html` template). A small CSS file and a tiny script (copy
//! buttons, confirmations) are served from the binary too: every page works without the script.
//!
//! What it never does: call a destination, except the connection test an admin asks for with its button
//! (`crate::connection`, reads only); show a secret (everything taken from the config or the store passes the
//! config's redactor, and auth settings are shown as kinds, never values); change anything on a GET (every
//! change is a POST form carrying the session's CSRF token). It writes through the same store operations as
//! the admin API and rings the worker's bell; it never sends a delivery itself.

mod audit;
mod dashboard;
mod destinations;
mod editing;
mod flows;
mod history;
mod page;
pub mod session;
mod sources;
mod tables;
mod view;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

pub use page::Page;

/// The console's own state beside the app's: who is signed in, and the last connection test of each
/// destination (kept in memory: a test is a look at a moment, not history).
pub struct Console {
    pub app: Arc<App>,
    pub sessions: session::Sessions,
    tests: std::sync::Mutex<std::collections::HashMap<String, destinations::LastTest>>,
    /// Cookies are marked `Secure` when the hub is reached over https (`server.public_url`).
    secure_cookies: bool,
}

impl Console {
    pub fn new(app: Arc<App>) -> Console {
        let secure_cookies = app
            .loaded()
            .config
            .server
            .public_url
            .as_deref()
            .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
        let sessions = session::Sessions::new(app.store.clone());
        Console { app, sessions, tests: Default::default(), secure_cookies }
    }
}

/// The console's routes, with their own state; merged into the server's router.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let console = Arc::new(Console::new(app));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(dashboard::show))
        .route("/console/login", get(session::login_form).post(session::login))
        .route("/console/logout", post(session::logout))
        .route("/console/lang", get(session::switch_lang))
        .route("/console/assets/{file}", get(asset))
        .route("/console/sources", get(sources::list))
        .route("/console/sources/{name}", get(sources::show))
        .route("/console/destinations", get(destinations::list))
        .route("/console/destinations/{name}", get(destinations::show))
        .route("/console/destinations/{name}/test", post(destinations::test))
        .route("/console/flows", get(flows::list))
        .route("/console/flows/{name}", get(flows::show))
        .route("/console/events", get(history::events))
        .route("/console/events/{id}", get(history::event))
        .route("/console/events/{id}/replay", post(history::replay))
        .route("/console/deliveries", get(history::deliveries))
        .route("/console/deliveries/retry-dead", post(history::retry_dead))
        .route("/console/deliveries/{id}", get(history::delivery))
        .route("/console/deliveries/{id}/retry", post(history::retry))
        .route("/console/tables", get(tables::list))
        .route("/console/tables/{name}", get(tables::show))
        .route("/console/tables/{name}/csv", get(tables::csv))
        .route("/console/tables/{name}/upload", post(editing::upload_table))
        .route("/console/audit", get(audit::list))
        .route("/console/config", get(editing::whole).post(editing::save_whole))
        .route("/console/config/export", get(editing::export))
        .route("/console/config/{section}", post(editing::save_new))
        .route("/console/config/{section}/new", get(editing::new_item))
        .route("/console/config/{section}/{name}", post(editing::save_item))
        .route("/console/config/{section}/{name}/edit", get(editing::edit_item))
        .route("/console/config/{section}/{name}/delete", post(editing::delete_item))
        .route("/console/flows/{name}/mapping", post(editing::save_mapping))
        .route("/console/flows/{name}/enabled", post(editing::set_flow_enabled))
        .layer(axum::middleware::map_response(protect))
        .with_state(console)
}

/// Records what a console user did in the audit log, as the admin API does for its callers. The change is
/// made already: a failure to record is logged, not shown.
pub(crate) async fn audit(
    app: &App,
    who: &session::Principal,
    action: &str,
    target: String,
    detail: serde_json::Value,
) {
    let entry =
        renkei_store::NewAudit { at: app.clock.now(), actor: who.actor.clone(), action: action.into(), target, detail };
    if let Err(e) = app.store.append_audit(entry).await {
        tracing::error!(error = %e, action, actor = %who.actor, "recording an audit entry failed");
    }
}

/// Headers on every console answer: pages load nothing from elsewhere, cannot be framed, and are not
/// kept by caches (they show history).
async fn protect(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "cache-control", "no-store");
    resp
}

/// The stylesheet and the script, from the binary.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    // Versioned by the binary: a new release changes the query string the pages use.
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}
