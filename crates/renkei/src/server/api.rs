//! `/api/v1`: history, retry and replay. Bearer-token protected; answers JSON.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use renkei_core::flow::{classify, plan};
use renkei_core::types::Name;
use renkei_core::Msg;
use renkei_store::{AttemptFilter, DeliveryFilter, EventFilter};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app::App;
use crate::worker::event_view;

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let protected = Router::new()
        .route("/events", get(list_events))
        .route("/events/{id}", get(get_event))
        .route("/events/{id}/replay", post(replay_event))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/retry", post(retry_dead))
        .route("/deliveries/{id}", get(get_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/attempts", get(list_attempts))
        .route("/queue", get(queue))
        .route("/destinations", get(list_destinations))
        .route("/destinations/{id}/test", post(test_destination))
        .route("/kintone/usage", get(kintone_usage));
    Router::new()
        .route("/openapi.json", get(super::openapi::document))
        .merge(protected.route_layer(middleware::from_fn_with_state(app, require_token)))
}

/// Checks `Authorization: Bearer <token>` against the configured admin token, in constant time.
async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let Some(expected) = &app.admin_token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_api_disabled",
            Msg::new(
                "the admin API is disabled: set server.admin_token or RENKEI_ADMIN_TOKEN",
                "管理 API は無効です。server.admin_token か RENKEI_ADMIN_TOKEN を設定してください",
            ),
        )
        .lang(&headers)
        .into_response();
    };
    let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if bool::from(g.trim().as_bytes().ct_eq(expected.expose().as_bytes())) => next.run(req).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Msg::new(
                "a valid admin token is required (Authorization: Bearer …)",
                "有効な管理トークンが必要です（Authorization: Bearer …）",
            ),
        )
        .lang(&headers)
        .into_response(),
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
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let event = app.store.get_event(&id).await.map_err(|e| not_found(e, "event", &headers))?;
    let deliveries = app
        .store
        .list_deliveries(&DeliveryFilter { event_id: Some(id), limit: 500, ..Default::default() })
        .await
        .map_err(|e| ApiError::from(e).lang(&headers))?;
    let raw = event.raw.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let mut v = serde_json::to_value(&event).map_err(|_| ApiError::internal())?;
    v["raw"] = raw.into();
    v["deliveries"] = serde_json::to_value(&deliveries).map_err(|_| ApiError::internal())?;
    Ok(Json(v))
}

/// Runs a stored event through the flows of the current config again, as new deliveries.
async fn replay_event(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let event = app.store.get_event(&id).await.map_err(|e| not_found(e, "event", &headers))?;
    if event.status != "accepted" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "rejected_event",
            Msg::new(
                "a rejected event has no parsed body to replay; ask the sender to send it again",
                "拒否されたイベントは再実行できません。送信元から再送してください",
            ),
        )
        .lang(&headers));
    }
    let loaded = &app.loaded;
    let Ok(source) = Name::parse(&event.source) else { return Err(ApiError::internal()) };
    if !loaded.config.sources.contains_key(source.as_str()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "unknown_source",
            Msg::new(
                format!("source `{source}` is no longer configured"),
                format!("ソース `{source}` は現在の設定にありません"),
            ),
        )
        .lang(&headers));
    }
    let mut view = event_view(&event);
    if let Ok((event_type, _)) = classify(loaded, &source, &view) {
        view.event_type = event_type;
    }
    let deliveries: Vec<_> = plan(loaded, &view).into_iter().map(crate::ingest::new_delivery).collect();
    let ids = app
        .store
        .add_deliveries(&id, deliveries, app.clock.now())
        .await
        .map_err(|e| ApiError::from(e).lang(&headers))?;
    app.wake.notify_one();
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
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let d = app.store.retry_delivery(id, app.clock.now()).await.map_err(|e| not_found(e, "delivery", &headers))?;
    app.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}

#[derive(Debug, Default, Deserialize)]
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
    headers: HeaderMap,
    body: Option<Json<RetryFilter>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = body.map(|Json(f)| f).unwrap_or_default();
    let filter =
        DeliveryFilter { flow: f.flow, source: f.source, since: f.since, until: f.until, q: f.q, ..Default::default() };
    let n = app.store.retry_dead(&filter, app.clock.now()).await.map_err(|e| ApiError::from(e).lang(&headers))?;
    app.wake.notify_one();
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
        .loaded
        .config
        .destinations
        .iter()
        .map(|(name, d)| match d {
            Destination::Http(h) => serde_json::json!({
                "id": name, "type": "http",
                "base_url": h.base_url.as_deref().map(|u| app.loaded.redactor.text(u).into_owned()),
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
    crate::connection::test_destination(&app.loaded, &app.http, &id)
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
