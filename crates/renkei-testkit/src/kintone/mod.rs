//! A fake kintone (Cybozu) for tests: an HTTP server on 127.0.0.1 speaking the REST API of
//! `shared/specs/kintone.md`, errors and limits included, so the kintone connector can be tested without the cloud.
//!
//! A test builds the domain with Rust calls (apps and fields, API tokens, password users, a Basic-auth proxy, guest
//! spaces, process management), points the connector at [`FakeKintone::base_url`], then checks what was stored
//! ([`FakeKintone::records`]), what was sent ([`FakeKintone::requests`]) and how it behaved under faults
//! ([`FakeKintone::fail_next`]) and the concurrency limit ([`FakeKintone::hold_requests`] keeps requests in flight
//! so a test can observe concurrency without sleeping).
//!
//! Modelled: GET/POST/PUT record.json; GET/POST/PUT/DELETE records.json (query subset, upsert, 100-record bulk
//! limit); PUT record/status.json and records/status.json; GET app/form/fields.json; POST bulkRequest.json; the
//! `X-HTTP-Method-Override: GET` form; guest-space paths; API tokens, password and Basic auth; value validation per
//! field type; the concurrency limit with its headers; a request count per app.
//!
//! Deliberately not modelled: users, organizations and groups (any code is accepted, a user's name is its code) and
//! per-user or per-record permissions (password users are administrators); file upload (any fileKey is accepted);
//! CALC formulas (always empty), lookups, related records, default values, categories, reading comments and
//! mentions (adding a comment is modelled), app settings APIs, cursors; field min/max length and value; the daily limit itself (kintone only emails the admin,
//! so the fake only counts); OAuth and session auth; query functions (`TODAY()` ...). Unsupported APIs answer 404
//! `FAKE_UNSUPPORTED` rather than pretending.

mod apps;
mod dispatch;
mod errors;
mod query;
mod records;
mod values;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State as AxumState};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use apps::{Field, FieldType, Rights, StatusAction};

use apps::{App, Process};
use dispatch::Call;
use errors::{ApiError, FieldErrors, Lang};
use values::Actor;

use crate::shared::ServerTask;

/// kintone's concurrency limit per domain.
const DEFAULT_CONCURRENCY_LIMIT: usize = 100;

/// A request as the fake received it, before any check.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// What every fake records of a request (kintone's and the others').
    pub(crate) fn new(parts: &Parts, body: &[u8]) -> RecordedRequest {
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Everything the fake knows, behind one lock (never held across an await).
pub(crate) struct State {
    pub(crate) apps: BTreeMap<u64, App>,
    pub(crate) tokens: HashMap<String, (u64, Rights)>,
    pub(crate) users: HashMap<String, String>,
    pub(crate) counts: HashMap<u64, u64>,
    basic: Option<(String, String)>,
    faults: VecDeque<(u16, String)>,
    limit: usize,
    requests: Vec<RecordedRequest>,
}

struct Inner {
    addr: SocketAddr,
    state: Mutex<State>,
    /// Requests being handled now, rejected ones included while they are answered.
    in_flight: watch::Sender<usize>,
    /// `true` while `hold_requests` keeps requests waiting.
    gate: watch::Sender<bool>,
    max_in_flight: AtomicUsize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take every other test's fake down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fake kintone domain. Clones share one server and one state.
#[derive(Clone)]
pub struct FakeKintone {
    inner: Arc<Inner>,
    _server: Arc<ServerTask>,
}

/// An app of the fake, for chaining its setup.
#[derive(Clone)]
pub struct AppHandle {
    fake: FakeKintone,
    id: u64,
}

impl AppHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn guest_space(&self, space_id: u64) -> &AppHandle {
        self.fake.guest_space(self.id, space_id);
        self
    }

    pub fn add_token(&self, token: &str, rights: Rights) -> &AppHandle {
        self.fake.add_token(self.id, token, rights);
        self
    }

    pub fn enable_process(&self, actions: Vec<StatusAction>, initial_status: &str) -> &AppHandle {
        self.fake.enable_process(self.id, actions, initial_status);
        self
    }

    pub fn seed(&self, record: Value) -> u64 {
        self.fake.seed_record(self.id, record)
    }

    pub fn records(&self) -> Vec<Value> {
        self.fake.records(self.id)
    }

    pub fn request_count(&self) -> u64 {
        self.fake.request_count(self.id)
    }
}

impl FakeKintone {
    /// Binds 127.0.0.1 on a free port and serves in a background task of the current tokio runtime.
    pub async fn start() -> FakeKintone {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of the fake kintone");
        let state = State {
            apps: BTreeMap::new(),
            tokens: HashMap::new(),
            users: HashMap::new(),
            counts: HashMap::new(),
            basic: None,
            faults: VecDeque::new(),
            limit: DEFAULT_CONCURRENCY_LIMIT,
            requests: Vec::new(),
        };
        let inner = Arc::new(Inner {
            addr,
            state: Mutex::new(state),
            in_flight: watch::Sender::new(0),
            gate: watch::Sender::new(false),
            max_in_flight: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            // The server only ends with the runtime or when the last clone aborts it.
            let _ = axum::serve(listener, router).await;
        });
        FakeKintone { inner, _server: Arc::new(ServerTask(task)) }
    }

    /// `http://127.0.0.1:PORT`, the "domain" to give the connector.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Adds app `app_id` with `fields` (kintone's built-in fields are added unless defined). Panics when the app
    /// exists: a test set-up mistake.
    pub fn add_app(&self, app_id: u64, fields: Vec<Field>) -> AppHandle {
        let mut st = self.inner.lock();
        assert!(!st.apps.contains_key(&app_id), "fake kintone: app {app_id} already exists");
        st.apps.insert(app_id, App::new(fields));
        AppHandle { fake: self.clone(), id: app_id }
    }

    /// Moves the app into guest space `space_id`: it is then only reachable under `/k/guest/{space_id}/v1/`.
    pub fn guest_space(&self, app: u64, space_id: u64) {
        self.with_app(app, |a| a.guest_space = Some(space_id));
    }

    /// An API token of `app` with `rights`.
    pub fn add_token(&self, app: u64, token: &str, rights: Rights) {
        let mut st = self.inner.lock();
        assert!(st.apps.contains_key(&app), "fake kintone: no app {app}");
        st.tokens.insert(token.to_string(), (app, rights));
    }

    /// A user for `X-Cybozu-Authorization` (treated as an administrator).
    pub fn set_password_user(&self, login: &str, password: &str) {
        self.inner.lock().users.insert(login.to_string(), password.to_string());
    }

    /// Puts a Basic-auth proxy in front of the domain: every request then needs `Authorization: Basic` with these
    /// credentials first (401 otherwise, before kintone's own authentication).
    pub fn require_basic(&self, user: &str, password: &str) {
        self.inner.lock().basic = Some((user.to_string(), password.to_string()));
    }

    /// Turns process management on: new records (and existing ones without a status) start in `initial_status`.
    pub fn enable_process(&self, app: u64, actions: Vec<StatusAction>, initial_status: &str) {
        self.with_app(app, |a| {
            a.process = Some(Process { actions, initial: initial_status.to_string() });
            a.settings_revision += 1;
            for rec in a.records.values_mut() {
                rec.status.get_or_insert_with(|| initial_status.to_string());
            }
        });
    }

    /// Stores a record given in write form (`{"code": {"value": ...}}`) as an administrator would, bypassing
    /// HTTP; returns its id. Panics with kintone's error body when the record is invalid.
    pub fn seed_record(&self, app: u64, record: Value) -> u64 {
        let actor = Actor { code: "Administrator".to_string(), admin: true };
        self.with_app(app, |a| {
            let mut errors = FieldErrors::default();
            match values::write_record(a, Some(&record), None, &actor, "record", &mut errors) {
                Ok(Some((id, _))) => id,
                Ok(None) => panic!("fake kintone: invalid seed record: {}", ApiError::invalid(errors).body(Lang::En)),
                Err(e) => panic!("fake kintone: seed record refused: {}", e.body(Lang::En)),
            }
        })
    }

    /// The app's records in kintone's read format, oldest first.
    pub fn records(&self, app: u64) -> Vec<Value> {
        self.with_app(app, |a| a.records.values().map(|r| a.record_json(r, None)).collect())
    }

    /// The comments of record `id` of `app`, oldest first.
    pub fn comments(&self, app: u64, id: u64) -> Vec<String> {
        self.with_app(app, |a| a.comments.iter().filter(|(r, _, _)| *r == id).map(|(_, _, t)| t.clone()).collect())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// Calls that reached the app (kintone's per-app daily request count; bulkRequest counts each inner request).
    pub fn request_count(&self, app: u64) -> u64 {
        self.inner.lock().counts.get(&app).copied().unwrap_or(0)
    }

    /// The next `n` requests fail with `status` and kintone error `code` (e.g. 429 `GAIA_TO04`, 500, 400
    /// `GAIA_DA02`), before any other check; queued failures are used in order.
    pub fn fail_next(&self, n: usize, status: u16, code: &str) {
        let mut st = self.inner.lock();
        st.faults.extend(std::iter::repeat_n((status, code.to_string()), n));
    }

    /// Requests beyond `n` at once get 429 `GAIA_TO04` (kintone: 100 per domain).
    pub fn set_concurrency_limit(&self, n: usize) {
        self.inner.lock().limit = n;
    }

    /// Keeps every request admitted from now on waiting, counted as in flight, until `release_requests`.
    pub fn hold_requests(&self) {
        self.inner.gate.send_replace(true);
    }

    pub fn release_requests(&self) {
        self.inner.gate.send_replace(false);
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        *self.inner.in_flight.borrow()
    }

    /// Waits until at least `n` requests are in flight (use with `hold_requests`, instead of sleeping).
    pub async fn wait_for_in_flight(&self, n: usize) {
        let mut rx = self.inner.in_flight.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// The most requests admitted at once so far (requests refused with 429 are not counted).
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    fn with_app<T>(&self, app: u64, f: impl FnOnce(&mut App) -> T) -> T {
        let mut st = self.inner.lock();
        let a = st.apps.get_mut(&app).unwrap_or_else(|| panic!("fake kintone: no app {app}"));
        f(a)
    }
}

/// Counts a request in flight for as long as it is handled, even when the client goes away mid-request.
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> (InFlight<'a>, usize) {
        let mut now = 0;
        inner.in_flight.send_modify(|count| {
            *count += 1;
            now = *count;
        });
        (InFlight(inner), now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|count| *count -= 1);
    }
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 64 << 20).await.unwrap_or_default();
    let lang = Lang::from_header(dispatch::header(&parts.headers, "accept-language"));
    let limit = {
        let mut st = inner.lock();
        st.requests.push(RecordedRequest::new(&parts, &body));
        st.limit
    };
    let (_in_flight, running) = InFlight::enter(&inner);
    let mut response = if running > limit {
        error_response(&ApiError::too_many_requests(), lang)
    } else {
        inner.max_in_flight.fetch_max(running, Ordering::SeqCst);
        let mut gate = inner.gate.subscribe();
        let _ = gate.wait_for(|held| !*held).await;
        answer(&inner, &parts, &body, lang)
    };
    let headers = response.headers_mut();
    headers.insert("x-concurrencylimit-limit", HeaderValue::from(limit));
    headers.insert("x-concurrencylimit-running", HeaderValue::from(running));
    response
}

fn answer(inner: &Inner, parts: &Parts, body: &[u8], lang: Lang) -> Response {
    let mut st = inner.lock();
    if let Some((status, code)) = st.faults.pop_front() {
        return error_response(&ApiError::injected(status, &code), lang);
    }
    if let Some((user, password)) = &st.basic {
        if !basic_ok(parts, user, password) {
            return basic_challenge();
        }
    }
    let path = parts.uri.path();
    let override_get = parts.method == Method::POST
        && dispatch::header(&parts.headers, "x-http-method-override").is_some_and(|m| m.eq_ignore_ascii_case("GET"));
    let method = if override_get { Method::GET } else { parts.method.clone() };
    let Some((space, resource)) = dispatch::parse_path(path) else {
        return error_response(&ApiError::unsupported(method.as_str(), path), lang);
    };
    let caller = match dispatch::authenticate(&st, &parts.headers) {
        Ok(caller) => caller,
        Err(e) => return error_response(&e, lang),
    };
    let query = parts.uri.query().filter(|q| !q.is_empty());
    let params = match (&method, query) {
        // GET carries its parameters in the query string, and so may DELETE; the override form carries them as JSON.
        (&Method::GET, Some(q)) if !override_get => Ok(dispatch::query_params(q)),
        (&Method::GET, None) if !override_get => Ok(dispatch::query_params("")),
        (&Method::DELETE, Some(q)) => Ok(dispatch::query_params(q)),
        _ => dispatch::body_params(&parts.headers, body),
    };
    let result =
        params.and_then(|params| dispatch::execute(&mut st, &caller, &Call { method, space, resource, params }));
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => error_response(&e, lang),
    }
}

fn error_response(e: &ApiError, lang: Lang) -> Response {
    (e.status, Json(e.body(lang))).into_response()
}

fn basic_ok(parts: &Parts, user: &str, password: &str) -> bool {
    let given = dispatch::header(&parts.headers, "authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    given.as_deref().and_then(|s| s.split_once(':')) == Some((user, password))
}

/// What the Basic-auth proxy in front of a kintone domain answers: a challenge and an HTML page, not kintone JSON.
fn basic_challenge() -> Response {
    let mut response = Response::new(Body::from("<html><body><h1>401 Authorization Required</h1></body></html>"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Please Login\""));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}
