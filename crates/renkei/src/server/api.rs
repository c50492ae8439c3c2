//! `/api/v1`: history, retry and replay. Bearer-token protected; answers JSON.
//!
//! Every route but the OpenAPI document needs a token ([`require_token`]), and each needs a role: reading
//! history is `viewer`, retry, replay and connection tests are `editor`, the audit log is `admin`. A viewer
//! is never shown a rejected request's raw body (an unauthenticated sender's bytes may hold credentials
//! renkei does not know to mask). Every retry and replay goes into the audit log with who asked.

use std::sync::Arc;

use axum::extract::{Extension, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use renkei_core::Msg;
use renkei_store::{AttemptFilter, DeliveryFilter, EventFilter};
use renkei_store::{AuditFilter, NewAudit};
use serde::Deserialize;

use super::{access_api, config_api, ApiError};
use crate::access::{authenticate, Caller, Denied, Role};
use crate::app::App;

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let read = Router::new()
        .route("/events", get(list_events))
        .route("/events/{id}", get(get_event))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(get_delivery))
        .route("/attempts", get(list_attempts))
        .route("/queue", get(queue))
        .route("/destinations", get(list_destinations))
        .route("/kintone/usage", get(kintone_usage))
        .route("/config", get(config_api::get_config))
        .route("/config/{section}", get(config_api::list_items))
        .route("/config/{section}/{name}", get(config_api::get_item));
    let operate = Router::new()
        .route("/events/{id}/replay", post(replay_event))
        .route("/deliveries/retry", post(retry_dead))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/destinations/{id}/test", post(test_destination))
        // Sources and subscriptions need admin: checked in the handlers (`config_api::role_to_edit`).
        .route("/config/{section}/{name}", put(config_api::put_item).delete(config_api::delete_item))
        .route_layer(middleware::from_fn(|req: Request, next: Next| need(Role::Editor, req, next)));
    let administer = Router::new()
        .route("/audit", get(list_audit))
        .route("/config", put(config_api::put_config))
        .route("/config/revisions", get(config_api::list_revisions))
        .route("/tokens", get(access_api::list_tokens).post(access_api::create_token))
        .route("/tokens/{name}", delete(access_api::revoke_token))
        .route("/users", get(access_api::list_users).post(access_api::add_user))
        .route("/users/{name}", delete(access_api::remove_user))
        .route_layer(middleware::from_fn(|req: Request, next: Next| need(Role::Admin, req, next)));
    let protected = read.merge(operate).merge(administer);
    Router::new()
        .route("/openapi.json", get(super::openapi::document))
        .merge(protected.route_layer(middleware::from_fn_with_state(app, require_token)))
}

/// Finds who `Authorization: Bearer <token>` is (the config's admin token, or a stored token that has not
/// expired) and puts the [`Caller`] on the request for the role checks and the audit log.
async fn require_token(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match authenticate(&app, bearer).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(Denied::Expired { name, at }) => {
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_expired",
                Msg::new(
                    format!("the token `{name}` expired at {at}; ask an admin for a new one"),
                    format!(
                        "トークン `{name}` は {at} に期限切れになりました。管理者に新しいトークンを依頼してください"
                    ),
                ),
            )
            .lang(&headers)
            .into_response()
        }
        Err(Denied::Unknown) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Msg::new(
                "a valid admin token is required (Authorization: Bearer …): server.admin_token, RENKEI_ADMIN_TOKEN, \
                 or one made with `renkei token create`",
                "有効な管理トークンが必要です（Authorization: Bearer …）。server.admin_token、RENKEI_ADMIN_TOKEN、\
                 または `renkei token create` で作成したトークンを使ってください",
            ),
        )
        .lang(&headers)
        .into_response(),
        Err(Denied::Store(e)) => ApiError::from(e).lang(&headers).into_response(),
    }
}

/// Lets the request through when its caller's role is at least `role`; 403 naming the role otherwise.
async fn need(role: Role, req: Request, next: Next) -> Response {
    let allowed = req.extensions().get::<Caller>().map(|c| (c.role >= role, c.role));
    match allowed {
        Some((true, _)) => next.run(req).await,
        Some((false, has)) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            Msg::new(
                format!("this needs the {role} role; this token has the {has} role"),
                format!("この操作には {role} ロールが必要です（このトークンのロールは {has} です）"),
            ),
        )
        .lang(req.headers())
        .into_response(),
        // Only reachable if a route escaped `require_token`: refuse rather than guess.
        None => ApiError::internal().into_response(),
    }
}

/// Records what a caller did. The change is made already: a failure to record is logged, not answered.
async fn audit(app: &App, caller: &Caller, action: &str, target: String, detail: serde_json::Value) {
    let entry = NewAudit { at: app.clock.now(), actor: caller.actor.clone(), action: action.into(), target, detail };
    if let Err(e) = app.store.append_audit(entry).await {
        tracing::error!(error = %e, action, actor = %caller.actor, "recording an audit entry failed");
    }
}

/// Query parameters; a bad one is answered with the API's JSON error, naming it.
pub struct Query<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(raw).map(Query).map_err(|e| {
            ApiError::bad_request(
                format!("bad query parameter: {e}"),
                format!("クエリパラメーターが正しくありません: {e}"),
            )
            .lang(&parts.headers)
        })
    }
}

/// Query strings are read through serde_json so the parameters' types (numbers, times) are checked by the
/// target struct, with its `deny_unknown_fields`.
fn serde_urlencoded_like<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, String> {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let value = match v.parse::<i64>() {
            Ok(n) if k == "limit" || k == "delivery_id" => serde_json::Value::from(n),
            _ => serde_json::Value::String(v.into_owned()),
        };
        map.insert(k.into_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    source: Option<String>,
    flow: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    status: Option<String>,
    event_id: Option<String>,
    delivery_id: Option<i64>,
    outcome: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    q: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

fn status_param(s: &Option<String>) -> Result<Option<Status>, ApiError> {
    match s.as_deref() {
        None => Ok(None),
        Some(v) => Status::parse(v).map(Some).ok_or_else(|| {
            let all = Status::ALL.map(Status::as_str).join(", ");
            ApiError::bad_request(
                format!("unknown status `{v}`; use one of {all}"),
                format!("不明な状態 `{v}` です。{all} のいずれかを指定してください"),
            )
        }),
    }
}

fn before_id(b: &Option<String>) -> Result<Option<i64>, ApiError> {
    b.as_deref()
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request("`before` must be a delivery or attempt id", "before には ID を指定してください")
            })
        })
        .transpose()
}

/// A listing with the cursor for the next page.
fn page<T: serde::Serialize>(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Json<serde_json::Value> {
    let limit = if limit == 0 { 50 } else { limit.min(500) };
    let next = if items.len() as u32 >= limit { items.last().map(cursor) } else { None };
    Json(serde_json::json!({ "items": items, "next_before": next }))
}

async fn list_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = EventFilter {
        source: p.source,
        event_type: p.event_type,
        status: p.status,
        since: p.since,
        until: p.until,
        q: p.q,
        before: p.before,
        limit: p.limit.unwrap_or(50),
    };
    let items = app.store.list_events(&f).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    Ok(page(items, f.limit, |e| e.id.clone()))
}

async fn get_event(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event = app.store.get_event(&id).await.map_err(|e| not_found(e, "event", &headers))?;
    let deliveries = app
        .store
        .list_deliveries(&DeliveryFilter { event_id: Some(id), limit: 500, ..Default::default() })
        .await
        .map_err(|e| ApiError::from(e).lang(&headers))?;
    let withheld = caller.role < Role::Editor && event.raw.is_some();
    let raw = event.raw.as_ref().filter(|_| !withheld).map(|b| String::from_utf8_lossy(b).into_owned());
    let mut v = serde_json::to_value(&event).map_err(|_| ApiError::internal())?;
    v["raw"] = raw.into();
    if withheld {
        v["raw_withheld"] = true.into();
    }
    v["deliveries"] = serde_json::to_value(&deliveries).map_err(|_| ApiError::internal())?;
    Ok(Json(v))
}

/// Runs a stored event through the flows of the current config again, as new deliveries.
async fn replay_event(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let event = app.store.get_event(&id).await.map_err(|e| not_found(e, "event", &headers))?;
    let ids = match crate::ingest::replay(&app, &event).await {
        Ok(ids) => ids,
        Err(crate::ingest::ReplayError::Rejected) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "rejected_event",
                Msg::new(
                    "a rejected event has no parsed body to replay; ask the sender to send it again",
                    "拒否されたイベントは再実行できません。送信元から再送してください",
                ),
            )
            .lang(&headers))
        }
        Err(crate::ingest::ReplayError::UnknownSource(source)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unknown_source",
                Msg::new(
                    format!("source `{source}` is no longer configured"),
                    format!("ソース `{source}` は現在の設定にありません"),
                ),
            )
            .lang(&headers))
        }
        Err(crate::ingest::ReplayError::Store(e)) => return Err(ApiError::from(e).lang(&headers)),
    };
    audit(&app, &caller, "event.replayed", id.clone(), serde_json::json!({ "delivery_ids": ids })).await;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "event_id": id, "delivery_ids": ids }))).into_response())
}

async fn list_deliveries(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = DeliveryFilter {
        flow: p.flow,
        source: p.source,
        status: status_param(&p.status).map_err(|e| e.lang(&headers))?,
        event_id: p.event_id,
        since: p.since,
        until: p.until,
        q: p.q,
        before: before_id(&p.before).map_err(|e| e.lang(&headers))?,
        limit: p.limit.unwrap_or(50),
    };
    let items = app.store.list_deliveries(&f).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    Ok(page(items, f.limit, |d| d.id.to_string()))
}

async fn get_delivery(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = app.store.get_delivery(id).await.map_err(|e| not_found(e, "delivery", &headers))?;
    let attempts = app
        .store
        .list_attempts(&AttemptFilter { delivery_id: Some(id), limit: 500, ..Default::default() })
        .await
        .map_err(|e| ApiError::from(e).lang(&headers))?;
    let mut v = serde_json::to_value(&d).map_err(|_| ApiError::internal())?;
    v["attempts"] = serde_json::to_value(&attempts).map_err(|_| ApiError::internal())?;
    Ok(Json(v))
}

async fn retry_delivery(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let d = app.store.retry_delivery(id, app.clock.now()).await.map_err(|e| not_found(e, "delivery", &headers))?;
    app.wake.notify_one();
    let detail = serde_json::json!({ "flow": d.flow, "event_id": d.event_id, "step": d.step });
    audit(&app, &caller, "delivery.retried", id.to_string(), detail).await;
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RetryFilter {
    flow: Option<String>,
    source: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    q: Option<String>,
}

/// Retries every dead delivery matching the filter (all dead deliveries when the body is `{}`).
async fn retry_dead(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Option<Json<RetryFilter>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = body.map(|Json(f)| f).unwrap_or_default();
    let asked = serde_json::to_value(&f).map_err(|_| ApiError::internal())?;
    let filter =
        DeliveryFilter { flow: f.flow, source: f.source, since: f.since, until: f.until, q: f.q, ..Default::default() };
    let n = app.store.retry_dead(&filter, app.clock.now()).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    app.wake.notify_one();
    audit(&app, &caller, "deliveries.retried", String::new(), serde_json::json!({ "filter": asked, "retried": n }))
        .await;
    Ok(Json(serde_json::json!({ "retried": n })))
}

async fn list_attempts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = AttemptFilter {
        delivery_id: p.delivery_id,
        flow: p.flow,
        outcome: p.outcome,
        since: p.since,
        before: before_id(&p.before).map_err(|e| e.lang(&headers))?,
        limit: p.limit.unwrap_or(50),
    };
    let items = app.store.list_attempts(&f).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    Ok(page(items, f.limit, |a| a.id.to_string()))
}

async fn queue(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<renkei_store::QueueStats>, ApiError> {
    Ok(Json(app.store.queue_stats(app.clock.now()).await.map_err(|e| ApiError::from(e).lang(&headers))?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    since: Option<DateTime<Utc>>,
    before: Option<String>,
    limit: Option<u32>,
}

/// The audit log, newest first: who (`token:NAME`, `admin_token`, `cli`, `serve`), when, what, to what.
async fn list_audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = AuditFilter {
        actor: p.actor,
        action: p.action,
        since: p.since,
        before: before_id(&p.before).map_err(|e| e.lang(&headers))?,
        limit: p.limit.unwrap_or(50),
    };
    let items = app.store.list_audit(&f).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    Ok(page(items, f.limit, |a| a.id.to_string()))
}

fn not_found(e: renkei_store::StoreError, what: &str, headers: &HeaderMap) -> ApiError {
    match e {
        renkei_store::StoreError::NotFound => ApiError::not_found(what).lang(headers),
        other => ApiError::from(other).lang(headers),
    }
}

/// Configured destinations: name, type and where they point; never credentials.
async fn list_destinations(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    use renkei_core::config::Destination;
    let items: Vec<serde_json::Value> = app
        .loaded()
        .config
        .destinations
        .iter()
        .map(|(name, d)| match d {
            Destination::Http(h) => serde_json::json!({
                "id": name, "type": "http",
                "base_url": h.base_url.as_deref().map(|u| app.loaded().redactor.text(u).into_owned()),
            }),
            Destination::Kintone(k) => serde_json::json!({
                "id": name, "type": "kintone", "base_url": k.base(), "app": k.app, "guest_space": k.guest_space,
            }),
        })
        .collect();
    Json(serde_json::json!({ "items": items }))
}

/// The connection test (認証): reachability, and for kintone the app, its fields and the token's rights.
async fn test_destination(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::connection::Report>, ApiError> {
    app.forget_kintone_fields(&id);
    crate::connection::test_destination(&app.loaded(), &app.http(), &id)
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found("destination").lang(&headers))
}

/// kintone requests sent today (JST) per destination and app: kintone counts 10,000 per app per day on the
/// Standard course.
async fn kintone_usage(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let day = crate::metrics::jst_day(app.clock.now());
    let counts = app.store.counts(&format!("kintone:{day}:")).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    let items: Vec<serde_json::Value> = counts
        .into_iter()
        .filter_map(|(key, n)| {
            let mut parts = key.splitn(4, ':').skip(2);
            let destination = parts.next()?.to_owned();
            let app_id: u64 = parts.next()?.parse().ok()?;
            Some(serde_json::json!({"day": day, "destination": destination, "app": app_id, "requests": n}))
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}
