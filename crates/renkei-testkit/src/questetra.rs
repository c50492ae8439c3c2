//! A fake Questetra BPM Suite for tests: the Message Start Event (HTTP) that starts a process from an HTTP request,
//! so a flow that starts Questetra processes can be tested end to end.
//!
//! Modelled (confirmed by the vendor): `POST /System/Event/MessageStart/{appId}/{nodeId}/start?key={apiKey}` with
//! an `application/x-www-form-urlencoded` body whose parameters are `q_{fieldName}`; values are checked by the
//! data item's type: numbers plain (`1200`, `-3.5`; no thousands separators), dates `2011-10-27`, datetimes
//! `2011-10-27 12:34`, selects by choice id (repeated for several), users by e-mail address, strings as they are.
//! Parameters that are not `q_` ones, and `q_` ones no data item has, are ignored. Refusals: an unknown app or
//! node 404, a wrong or missing key 401, not POST 405, a body that is not form-urlencoded 415, a value that does
//! not fit its data item 400 naming the item and the value. A started process is recorded
//! ([`FakeQuestetra::processes`]) and the answer is 200 (Questetra treats anything else as an error).
//!
//! A guess: the texts of the answers (the process instance id as plain text; an error message as plain text).
//!
//! Not modelled: multipart bodies and file data items, required data items, the Throwing Message Intermediate
//! Event (Questetra as a sender: tests post its requests themselves), OAuth, quotas.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::kintone::RecordedRequest;
use crate::shared::ServerTask;

/// The type of a Questetra data item, as the Message Start Event checks a `q_` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataType {
    String,
    Number,
    /// `2011-10-27`.
    Date,
    /// `2011-10-27 12:34`.
    DateTime,
    /// Choice ids; several values may be given.
    Select(Vec<String>),
    /// A user's e-mail address.
    User,
}

/// A process the fake started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub app_id: u64,
    pub node_id: u64,
    pub process_id: u64,
    /// The data items set, by name (without `q_`), with every value given (several for a multi-select).
    pub values: BTreeMap<String, Vec<String>>,
}

impl Started {
    /// The first value of data item `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.first()).map(String::as_str)
    }
}

struct StartEvent {
    key: String,
    items: BTreeMap<String, DataType>,
}

struct State {
    events: BTreeMap<(u64, u64), StartEvent>,
    started: Vec<Started>,
    next_process: u64,
    faults: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
}

type Inner = crate::shared::Inner<State>;

/// The fake Questetra workspace. Clones share one server and one state.
#[derive(Clone)]
pub struct FakeQuestetra {
    inner: Arc<Inner>,
    _server: Arc<ServerTask>,
}

impl FakeQuestetra {
    /// Serves on 127.0.0.1 (a free port).
    pub async fn start() -> FakeQuestetra {
        let state = State {
            events: BTreeMap::new(),
            started: Vec::new(),
            next_process: 1,
            faults: VecDeque::new(),
            requests: Vec::new(),
        };
        let (inner, server) = crate::shared::serve(state, handle).await;
        FakeQuestetra { inner, _server: server }
    }

    /// `http://127.0.0.1:PORT`: the workspace URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A Message Start Event (HTTP): node `node_id` of app `app_id`, started with `key`, setting `items`.
    pub fn add_message_start(&self, app_id: u64, node_id: u64, key: &str, items: Vec<(&str, DataType)>) {
        let items = items.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
        self.inner.lock().events.insert((app_id, node_id), StartEvent { key: key.to_string(), items });
    }

    /// The processes started so far, in order.
    pub fn processes(&self) -> Vec<Started> {
        self.inner.lock().started.clone()
    }

    /// Every request received so far, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// The next `n` requests fail with HTTP `status` before any check.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inner.lock().faults.extend(std::iter::repeat_n(status, n));
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [("content-type", "text/plain; charset=utf-8")], body.into()).into_response()
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut st = inner.lock();
    st.requests.push(RecordedRequest::new(&parts, &body));
    if let Some(status) = st.faults.pop_front() {
        return text(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure");
    }
    let path = parts.uri.path();
    let ids = match path.split('/').collect::<Vec<_>>()[..] {
        ["", "System", "Event", "MessageStart", app, node, "start"] => app.parse::<u64>().ok().zip(node.parse().ok()),
        _ => None,
    };
    let Some((app_id, node_id)) = ids else { return text(StatusCode::NOT_FOUND, format!("no API at {path}")) };
    let Some(event) = st.events.get(&(app_id, node_id)) else {
        return text(StatusCode::NOT_FOUND, format!("no Message Start Event (HTTP) {node_id} in app {app_id}"));
    };
    if parts.method.as_str() != "POST" {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST is required");
    }
    let key = parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).into_owned().find(|(k, _)| k == "key").map(|(_, v)| v));
    if key.as_deref() != Some(event.key.as_str()) {
        return text(StatusCode::UNAUTHORIZED, "the key is not valid for this event");
    }
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("`{content_type}` is not form-urlencoded"));
    }
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(&body) {
        let Some(item) = name.strip_prefix("q_") else { continue };
        let Some(kind) = event.items.get(item) else { continue };
        if let Err(why) = check(kind, &value) {
            return text(StatusCode::BAD_REQUEST, format!("q_{item}: `{value}` {why}"));
        }
        values.entry(item.to_string()).or_default().push(value.into_owned());
    }
    for (item, given) in &values {
        let several_allowed = matches!(event.items.get(item), Some(DataType::Select(_)));
        if given.len() > 1 && !several_allowed {
            return text(StatusCode::BAD_REQUEST, format!("q_{item} is given {} times", given.len()));
        }
    }
    let process_id = st.next_process;
    st.next_process += 1;
    st.started.push(Started { app_id, node_id, process_id, values });
    text(StatusCode::OK, process_id.to_string())
}

fn check(kind: &DataType, v: &str) -> Result<(), String> {
    let ok = match kind {
        DataType::String => true,
        DataType::Number => number(v),
        DataType::Date => date(v),
        DataType::DateTime => v.len() == 16 && date(&v[..10]) && v.as_bytes()[10] == b' ' && time(&v[11..]),
        DataType::Select(choices) => {
            return if choices.iter().any(|c| c == v) {
                Ok(())
            } else {
                Err(format!("is not a choice id ({})", choices.join(", ")))
            }
        }
        DataType::User => v.contains('@') && !v.starts_with('@') && !v.ends_with('@'),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            DataType::Number => "is not a number (digits, an optional sign and decimal point)".to_string(),
            DataType::Date => "is not a date (yyyy-MM-dd)".to_string(),
            DataType::DateTime => "is not a datetime (yyyy-MM-dd HH:mm)".to_string(),
            DataType::User => "is not a user's e-mail address".to_string(),
            _ => "is not valid".to_string(),
        })
    }
}

fn number(v: &str) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = v.split_once('.').unwrap_or((v, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn date(v: &str) -> bool {
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10
}

fn time(v: &str) -> bool {
    chrono::NaiveTime::parse_from_str(v, "%H:%M").is_ok() && v.len() == 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_forms() {
        assert!(check(&DataType::Number, "1200").is_ok());
        assert!(check(&DataType::Number, "-3.5").is_ok());
        assert!(check(&DataType::Number, "1,200").is_err());
        assert!(check(&DataType::Date, "2011-10-27").is_ok());
        assert!(check(&DataType::Date, "2011/10/27").is_err());
        assert!(check(&DataType::Date, "2011-02-30").is_err());
        assert!(check(&DataType::DateTime, "2011-10-27 12:34").is_ok());
        assert!(check(&DataType::DateTime, "2011-10-27T12:34").is_err());
        assert!(check(&DataType::DateTime, "2011-10-27 12:34:56").is_err());
        assert!(check(&DataType::Select(vec!["high".into()]), "high").is_ok());
        assert!(check(&DataType::Select(vec!["high".into()]), "高").is_err());
        assert!(check(&DataType::User, "sato@example.jp").is_ok());
        assert!(check(&DataType::User, "sato").is_err());
    }
}
