//! `POST /hooks/{source}`: authenticate, parse, classify, store, answer.
//!
//! The answer is 202 only after the events and their deliveries are committed. Every refused request
//! (unknown source, bad credentials, oversized or malformed body) is recorded as a rejected event with the
//! bytes as sent (up to `history.max_rejected_body`), so an admin can see what the sender sent, and is
//! answered with a JSON error saying what is wrong.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use renkei_core::body::{parse_body, BodyError};
use renkei_core::event::EventView;
use renkei_core::redact::Redactor;
use renkei_core::Msg;
use renkei_store::{Ingested, Rejected};

use super::ApiError;
use crate::app::App;
use crate::ingest::{accept, Arrival};

pub async fn receive(
    State(app): State<Arc<App>>,
    Path(source): Path<String>,
    RawQuery(raw_query): RawQuery,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let now = app.clock.now();
    let query = parse_query(raw_query.as_deref());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cfg = &app.loaded().config;
    let limit = cfg.server.body_limit.as_usize();

    // Limits first, before the body is read: a flood costs as little as possible.
    if let Some(refused) = rate_limited(&app, &source, peer, &headers) {
        return refused;
    }
    // Read at most limit + 1 bytes: enough to know the body is too large without holding all of it.
    let Ok((bytes, too_large)) = tokio::time::timeout(cfg.server.read_timeout.0, read_limited(body, limit)).await
    else {
        app.metrics.event(if cfg.sources.contains_key(source.as_str()) { &source } else { "_unknown" }, "read_timeout");
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "read_timeout",
            Msg::new("the body did not arrive in time", "本文が時間内に届きませんでした"),
        )
        .lang(&headers)
        .into_response();
    };
    let reject = Rejection {
        app: &app,
        source: &source,
        now,
        headers: &headers,
        query: &query,
        content_type: content_type.as_deref(),
        bytes: &bytes,
        truncated: too_large,
    };

    let Some((name, src)) = cfg.sources.get_key_value(source.as_str()) else {
        return reject
            .answer(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                Msg::new(format!("there is no source `{source}`"), format!("ソース `{source}` は設定されていません")),
            ))
            .await;
    };
    if too_large {
        return reject
            .answer(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Msg::new(
                    format!("the body is larger than the limit of {limit} bytes"),
                    format!("本文が上限 {limit} バイトを超えています"),
                ),
            ))
            .await;
    }
    if let Some(auth) = &src.auth {
        let ip = super::auth::client_ip(peer, &headers, &cfg.server.trusted_proxies);
        if let Err(e) = super::auth::check(auth, ip, &headers, &query, &bytes, now.timestamp()) {
            return reject.answer(e).await;
        }
    }
    let mut parsed = match parse_body(content_type.as_deref(), &bytes, src.format, &src.csv) {
        Ok(p) => p,
        Err(e) => {
            let (status, code) = match &e {
                BodyError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
                BodyError::UnsupportedType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            };
            return reject.answer(ApiError::new(status, code, e.msg().clone())).await;
        }
    };

    if let Some(verify) = &src.verify {
        let view = EventView {
            id: String::new(),
            event_type: String::new(),
            source: source.clone(),
            received_at: now,
            body: src.reshape(parsed.value.clone()),
            row: None,
            headers: kept_headers(&headers),
            query: kept_query(&query),
        };
        if let Err(e) = super::auth::callback(&app, name, verify, &view).await {
            return reject.answer(e).await;
        }
    }
    let split = src.splits(parsed.kind);
    // One event whose body is the JSON as sent: stored as it came, not written out again.
    let body_text = if split || src.preset.is_some() { None } else { parsed.text.take() };
    let rows = src.events_of(parsed);
    let arrival = Arrival {
        headers: kept_headers(&headers),
        query: kept_query(&query),
        content_type: content_type.clone(),
        received_at: now,
        body_text,
    };
    let n = rows.len();
    match accept(&app, name, src, rows, arrival).await {
        Ok((request_id, outcomes)) => {
            if split {
                let rows: Vec<_> = outcomes.iter().enumerate().map(|(i, o)| row_result(i + 1, o)).collect();
                (StatusCode::MULTI_STATUS, Json(serde_json::json!({ "request_id": request_id, "events": rows })))
                    .into_response()
            } else {
                let o = outcomes.into_iter().next().expect("one event in, one outcome out");
                let status = StatusCode::from_u16(src.ack_status).unwrap_or(StatusCode::ACCEPTED);
                if status == StatusCode::NO_CONTENT {
                    status.into_response()
                } else {
                    (status, Json(single_result(&o))).into_response()
                }
            }
        }
        Err(e) => {
            tracing::error!(source = %source, events = n, error = %e, "ingest failed; answered without acknowledging");
            app.metrics.event(&source, "storage_error");
            ApiError::from(e).lang(&headers).into_response()
        }
    }
}

fn single_result(o: &Ingested) -> serde_json::Value {
    match o {
        Ingested::Stored { event_id, .. } => serde_json::json!({ "event_id": event_id }),
        Ingested::Duplicate { event_id } => serde_json::json!({ "event_id": event_id, "duplicate": true }),
    }
}

fn row_result(row: usize, o: &Ingested) -> serde_json::Value {
    let mut v = single_result(o);
    v["row"] = row.into();
    v["status"] = 202.into();
    v
}

struct Rejection<'a> {
    app: &'a App,
    source: &'a str,
    now: DateTime<Utc>,
    headers: &'a HeaderMap,
    query: &'a [(String, String)],
    content_type: Option<&'a str>,
    bytes: &'a [u8],
    truncated: bool,
}

impl Rejection<'_> {
    /// Records the refused request, then answers with the error.
    async fn answer(self, err: ApiError) -> Response {
        let max = self.app.loaded().config.history.max_rejected_body.as_usize();
        let raw = self.app.loaded().redactor.bytes(&self.bytes[..self.bytes.len().min(max)]);
        let rejected = Rejected {
            id: uuid::Uuid::now_v7().to_string(),
            source: self.source.to_owned(),
            received_at: self.now,
            http_status: err.status.as_u16(),
            reason: err.message.en.clone(),
            content_type: self.content_type.map(str::to_owned),
            headers: serde_json::Value::Object(kept_headers(self.headers)),
            query: serde_json::Value::Object(kept_query(self.query)),
            raw,
            raw_truncated: self.truncated || self.bytes.len() > max,
        };
        // Only configured names become metric labels: a caller must not be able to mint new series.
        let label = if self.app.loaded().config.sources.contains_key(self.source) { self.source } else { "_unknown" };
        self.app.metrics.event(label, err.code);
        tracing::info!(source = %self.source, status = err.status.as_u16(), code = err.code, "request rejected: {}", err.message.en);
        if let Err(e) = self.app.store.record_rejected(rejected).await {
            tracing::warn!(error = %e, "could not record a rejected request");
        }
        let mut resp = err.lang(self.headers).into_response();
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"renkei\""));
        }
        resp
    }
}

/// 429 with `Retry-After` when the source's or the client's bucket is empty.
fn rate_limited(app: &App, source: &str, peer: Option<std::net::SocketAddr>, headers: &HeaderMap) -> Option<Response> {
    let cfg = &app.loaded().config;
    let now = std::time::Instant::now();
    let mut checks = Vec::new();
    if let Some(limit) = cfg.sources.get(source).and_then(|s| s.rate_limit.as_ref()) {
        checks.push((format!("source:{source}"), limit, "source"));
    }
    if let Some(limit) = &cfg.server.rate_limit_per_client {
        if let Some(ip) = super::auth::client_ip(peer, headers, &cfg.server.trusted_proxies) {
            checks.push((format!("client:{ip}"), limit, "client"));
        }
    }
    for (key, limit, what) in checks {
        if let Err(wait) = app.limiter.take(&key, limit, now) {
            let label = if cfg.sources.contains_key(source) { source } else { "_unknown" };
            app.metrics.event(label, "rate_limited");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let (en, ja) = match what {
                "source" => (
                    format!("too many requests for source `{source}`; try again in {secs} s"),
                    format!("ソース `{source}` へのリクエストが多すぎます。{secs} 秒後に再送してください"),
                ),
                _ => (
                    format!("too many requests from this address; try again in {secs} s"),
                    format!("このアドレスからのリクエストが多すぎます。{secs} 秒後に再送してください"),
                ),
            };
            let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", Msg::new(en, ja))
                .lang(headers)
                .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return Some(resp);
        }
    }
    None
}

async fn read_limited(mut body: Body, limit: usize) -> (Bytes, bool) {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        // A broken connection mid-body leaves what arrived: the request is then rejected as malformed.
        let Ok(frame) = frame else { break };
        let Ok(chunk) = frame.into_data() else { continue };
        if buf.len() + chunk.len() > limit {
            let room = limit - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            return (Bytes::from(buf), true);
        }
        buf.extend_from_slice(&chunk);
    }
    (Bytes::from(buf), false)
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// Request headers as stored and shown to templates: names lower-cased, credentials dropped.
fn kept_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in headers {
        let name = k.as_str();
        if Redactor::is_secret_header(name) {
            continue;
        }
        out.insert(name.to_owned(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    out
}

/// Query parameters as stored: `token` dropped, repeated keys become lists.
fn kept_query(query: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in query {
        if k == "token" {
            continue;
        }
        let v = serde_json::Value::String(v.clone());
        match out.get_mut(k) {
            Some(serde_json::Value::Array(list)) => list.push(v),
            Some(existing) => *existing = serde_json::Value::Array(vec![existing.take(), v]),
            None => {
                out.insert(k.clone(), v);
            }
        }
    }
    out
}
