//! A fake eセールスマネージャー (e-Sales Manager, Softbrain) REST API for tests: an HTTP server on 127.0.0.1
//! speaking the record API of `shared/specs/saas.md`, so a flow that updates eSM can be tested end to end.
//!
//! Modelled (confirmed by the vendor): `POST /{tenant}/pub/esms/v1/sheet/{sheet}` adds a record and
//! `GET|PUT|DELETE /{tenant}/pub/esms/v1/sheet/{sheet}/{id}` read, update and delete one; every call needs
//! `Authorization: Bearer <API token>` (else 401) and an `X-ESM-TIMEZONE` header naming a time zone such as
//! `Asia/Tokyo` (else 400); bodies are flat JSON objects whose keys are dotted item paths
//! (`deals.deal.status`): a key that is not a dotted path is refused (400); items the test declared as dates
//! must be `yyyy/mm/dd` (a real calendar date) or empty (400 otherwise, naming the item and the value).
//! Records are stored per sheet, with their ids as strings; a PUT merges the items it carries (eSM's
//! "changed items only" shape) and bumps nothing else.
//!
//! A guess, so tests must not depend on it beyond "2xx or not": the shapes of the answers (`{"id": ...}` for
//! an add, the record as a flat object for a read, `{"errors": [{"code", "message"}]}` for a refusal).
//!
//! Not modelled: item types other than dates (numbers, selects, references between sheets), required items,
//! the sheets' real item catalogue (any dotted key is accepted), search and list APIs, paging, rate limits,
//! eSM's own webhooks (the tests post those themselves), OAuth.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::kintone::RecordedRequest;
use crate::shared::ServerTask;

/// One eSM sheet: its date items and its records by id.
#[derive(Default)]
struct Sheet {
    date_items: BTreeSet<String>,
    records: BTreeMap<u64, Map<String, Value>>,
}

struct State {
    tenant: String,
    token: String,
    sheets: BTreeMap<String, Sheet>,
    next_id: u64,
    faults: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
}

type Inner = crate::shared::Inner<State>;

/// The fake eSM tenant. Clones share one server and one state.
#[derive(Clone)]
pub struct FakeEsm {
    inner: Arc<Inner>,
    _server: Arc<ServerTask>,
}

impl FakeEsm {
    /// Serves tenant `tenant`, accepting the API token `token`, on 127.0.0.1 (a free port).
    pub async fn start(tenant: &str, token: &str) -> FakeEsm {
        let state = State {
            tenant: tenant.to_string(),
            token: token.to_string(),
            sheets: BTreeMap::new(),
            next_id: 1,
            faults: VecDeque::new(),
            requests: Vec::new(),
        };
        let (inner, server) = crate::shared::serve(state, handle).await;
        FakeEsm { inner, _server: server }
    }

    /// `http://127.0.0.1:PORT`: the gateway.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `http://127.0.0.1:PORT/{tenant}/pub/esms/v1`: what a client's base URL is.
    pub fn api_url(&self) -> String {
        format!("{}/{}/pub/esms/v1", self.base_url(), self.inner.lock().tenant)
    }

    /// Adds sheet `sheet`; `date_items` are the dotted keys whose values must be `yyyy/mm/dd`.
    pub fn add_sheet(&self, sheet: &str, date_items: &[&str]) {
        let mut st = self.inner.lock();
        let s = st.sheets.entry(sheet.to_string()).or_default();
        s.date_items.extend(date_items.iter().map(|d| d.to_string()));
    }

    /// Stores a record with id `id` (items as dotted keys), bypassing HTTP. Panics on an unknown sheet.
    pub fn seed(&self, sheet: &str, id: u64, items: Value) {
        let mut st = self.inner.lock();
        st.next_id = st.next_id.max(id + 1);
        let s = st.sheets.get_mut(sheet).unwrap_or_else(|| panic!("fake eSM: no sheet {sheet}"));
        let Value::Object(items) = items else { panic!("fake eSM: a record is a JSON object") };
        s.records.insert(id, items);
    }

    /// Record `id` of `sheet` (its items as stored), if any.
    pub fn record(&self, sheet: &str, id: u64) -> Option<Map<String, Value>> {
        self.inner.lock().sheets.get(sheet).and_then(|s| s.records.get(&id).cloned())
    }

    /// The records of `sheet` by id, in id order.
    pub fn records(&self, sheet: &str) -> Vec<(u64, Map<String, Value>)> {
        let st = self.inner.lock();
        st.sheets.get(sheet).map(|s| s.records.iter().map(|(k, v)| (*k, v.clone())).collect()).unwrap_or_default()
    }

    /// Every request received so far, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// The next `n` requests fail with HTTP `status` before any check (e.g. 503 for a maintenance window).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inner.lock().faults.extend(std::iter::repeat_n(status, n));
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({ "errors": [{ "code": code, "message": message.into() }] }))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut st = inner.lock();
    st.requests.push(RecordedRequest::new(&parts, &body));
    if let Some(status) = st.faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "FAKE_FAULT", "injected failure");
    }
    answer(&mut st, &parts.method, parts.uri.path(), &parts.headers, &body)
}

fn answer(st: &mut State, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let prefix = format!("/{}/pub/esms/v1/sheet/", st.tenant);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no API at {path}"));
    };
    let (sheet, id) = match rest.split_once('/') {
        Some((s, id)) => (s.to_string(), Some(id.to_string())),
        None => (rest.to_string(), None),
    };
    let bearer = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(st.token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the API token is missing or invalid");
    }
    match header(headers, "x-esm-timezone") {
        None => return error(StatusCode::BAD_REQUEST, "TIMEZONE_REQUIRED", "X-ESM-TIMEZONE is required"),
        Some(tz) if !valid_timezone(tz) => {
            return error(
                StatusCode::BAD_REQUEST,
                "TIMEZONE_INVALID",
                format!("X-ESM-TIMEZONE `{tz}` is not a time zone"),
            )
        }
        Some(_) => {}
    }
    let next_id = st.next_id;
    let Some(s) = st.sheets.get_mut(&sheet) else {
        return error(StatusCode::NOT_FOUND, "SHEET_NOT_FOUND", format!("no sheet `{sheet}`"));
    };
    let id = match id.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            let id = id.as_deref().unwrap_or_default();
            return error(StatusCode::NOT_FOUND, "RECORD_NOT_FOUND", format!("no record `{id}`"));
        }
    };
    match (method.as_str(), id) {
        ("POST", None) => match items(s, body).map_err(|(status, code, message)| error(status, code, message)) {
            Ok(items) => {
                s.records.insert(next_id, items);
                st.next_id += 1;
                (StatusCode::OK, Json(json!({ "id": next_id.to_string() }))).into_response()
            }
            Err(r) => r,
        },
        ("GET", Some(id)) => match s.records.get(&id) {
            Some(r) => {
                let mut out = r.clone();
                out.insert("id".into(), Value::String(id.to_string()));
                (StatusCode::OK, Json(Value::Object(out))).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "RECORD_NOT_FOUND", format!("no record {id} in sheet `{sheet}`")),
        },
        ("PUT", Some(id)) => {
            if !s.records.contains_key(&id) {
                return error(StatusCode::NOT_FOUND, "RECORD_NOT_FOUND", format!("no record {id} in sheet `{sheet}`"));
            }
            match items(s, body).map_err(|(status, code, message)| error(status, code, message)) {
                Ok(items) => {
                    s.records.get_mut(&id).expect("checked above").extend(items);
                    (StatusCode::OK, Json(json!({ "id": id.to_string() }))).into_response()
                }
                Err(r) => r,
            }
        }
        ("DELETE", Some(id)) => match s.records.remove(&id) {
            Some(_) => (StatusCode::OK, Json(json!({ "id": id.to_string() }))).into_response(),
            None => error(StatusCode::NOT_FOUND, "RECORD_NOT_FOUND", format!("no record {id} in sheet `{sheet}`")),
        },
        (m, _) => error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("{m} is not allowed here")),
    }
}

/// `Asia/Tokyo`, `UTC`, `Etc/GMT-9`: an IANA-style name.
fn valid_timezone(tz: &str) -> bool {
    tz == "UTC"
        || tz.split('/').count() >= 2
            && tz
                .split('/')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+')))
}

/// A refusal: status, error code, message.
type Refusal = (StatusCode, &'static str, String);

/// The body's items, checked: a JSON object of dotted keys, dates as `yyyy/mm/dd`.
fn items(sheet: &Sheet, body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, "INVALID_JSON", format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err((StatusCode::BAD_REQUEST, "INVALID_JSON", "the body must be a JSON object".into()));
    };
    for (key, value) in &map {
        let segments: Vec<&str> = key.split('.').collect();
        let dotted = segments.len() >= 3
            && segments.iter().all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !dotted {
            return Err((
                StatusCode::BAD_REQUEST,
                "INVALID_ITEM",
                format!("`{key}` is not an item path (e.g. deals.deal.status)"),
            ));
        }
        if value.is_object() || value.is_array() {
            return Err((StatusCode::BAD_REQUEST, "INVALID_VALUE", format!("`{key}`: values are plain")));
        }
        if sheet.date_items.contains(key) {
            let text = value.as_str().unwrap_or_default();
            if !(text.is_empty() || valid_date(text)) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATE",
                    format!("`{key}`: `{value}` is not a date in the form yyyy/mm/dd"),
                ));
            }
        }
    }
    Ok(map)
}

/// `2026/11/22`: four-digit year, two-digit month and day, a real calendar date.
fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'/' || b[7] != b'/' {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (s[..4].parse::<i32>(), s[5..7].parse::<u32>(), s[8..].parse::<u32>()) else {
        return false;
    };
    s[..4].bytes().all(|c| c.is_ascii_digit())
        && s[5..7].bytes().all(|c| c.is_ascii_digit())
        && s[8..].bytes().all(|c| c.is_ascii_digit())
        && chrono::NaiveDate::from_ymd_opt(y, m, d).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_zones() {
        assert!(valid_date("2026/11/22"));
        assert!(!valid_date("2026-11-22"));
        assert!(!valid_date("2026/02/30"));
        assert!(!valid_date("2026/1/2"));
        assert!(valid_timezone("Asia/Tokyo"));
        assert!(valid_timezone("UTC"));
        assert!(!valid_timezone("JST9"));
        assert!(!valid_timezone(""));
    }
}
