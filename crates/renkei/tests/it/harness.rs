//! The one test harness: the real app on port 0 with a fresh SQLite file, a manual clock, a worker that
//! tests drain by hand, and a recording receiver that answers what the test says.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use renkei::app::{App, Home};
use renkei::clock::ManualClock;
use renkei::live::Loader;
use renkei::secrets::MasterKey;
use renkei::worker::Worker;
use renkei_store::postgres::PgStore;
use renkei_store::sqlite::SqliteStore;
use renkei_store::Store;
use tempfile::TempDir;
use tokio::sync::Notify;

pub const ADMIN: &str = "test-admin-token";

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T09:00:00+09:00").unwrap().with_timezone(&Utc)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub worker: Arc<Worker>,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub dir: Arc<TempDir>,
    /// Seals this app's config revisions; kept across a restart, like a key file.
    pub key: Arc<MasterKey>,
    config: String,
    env: Vec<(String, String)>,
    server: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts renkei with `config` (YAML). `${VAR}` is looked up in `env` only, never the process environment.
pub async fn spawn_app(config: &str) -> TestApp {
    spawn_app_env(config, &[]).await
}

pub async fn spawn_app_env(config: &str, env: &[(&str, &str)]) -> TestApp {
    let dir = Arc::new(TempDir::new().unwrap());
    let clock = Arc::new(ManualClock::new(t0()));
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    start(with_local_network(config), env, dir, clock, Arc::new(MasterKey::generate())).await
}

/// Receivers and fakes listen on 127.0.0.1 over plain http, which the SSRF guard refuses: a config that says
/// nothing about `network:` is given the exception (tests of the guard write their own `network:`).
fn with_local_network(config: &str) -> String {
    if config.lines().any(|l| l.starts_with("network:")) {
        config.to_owned()
    } else {
        format!("{config}\nnetwork: {{ allow_private: [\"127.0.0.0/8\"], allow_http: true }}\n")
    }
}

async fn start(
    config: String,
    env: Vec<(String, String)>,
    dir: Arc<TempDir>,
    clock: Arc<ManualClock>,
    key: Arc<MasterKey>,
) -> TestApp {
    let lookup: HashMap<String, String> = env.iter().cloned().collect();
    let loader = Loader::new(dir.path().to_path_buf(), Arc::new(move |k: &str| lookup.get(k).cloned()));
    let loaded = loader.load(&config).unwrap_or_else(|problems| panic!("test config does not load: {problems:#?}"));
    let store = open_store(&dir, clock.now_utc()).await;
    // As `renkei serve`: the file's text is a revision; after a restart with the same text, the newest runs.
    let (loaded, revision) = renkei::live::adopt(&*store, &key, &loader, loaded, clock.now_utc()).await.unwrap();
    let home = Home { revision, key: Some(key.clone()), loader };
    let app = App::with_revisions(loaded, home, store, clock.clone(), Some(ADMIN.to_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(renkei::server::serve(listener, app.clone(), async move {
        let _ = stopped.await;
    }));
    let server = tokio::spawn(async move {
        server.await.unwrap().unwrap();
    });
    let worker = Arc::new(Worker::new(app.clone()));
    TestApp { addr, app, worker, clock, http: reqwest::Client::new(), dir, key, config, env, server, stop }
}

/// A store of the backend under test, in a folder of its own (dropped with the folder).
pub async fn fresh_store() -> (Arc<dyn Store>, TempDir) {
    let dir = TempDir::new().unwrap();
    let store = open_store(&dir, t0()).await;
    (store, dir)
}

/// The store under test: SQLite in the test's directory, or, with `RENKEI_TEST_STORAGE=postgres`, a schema of
/// its own (named after the directory, so a restart finds it again) in `RENKEI_TEST_POSTGRES_URL`.
async fn open_store(dir: &TempDir, now: DateTime<Utc>) -> Arc<dyn Store> {
    if std::env::var("RENKEI_TEST_STORAGE").as_deref() == Ok("postgres") {
        let url = std::env::var("RENKEI_TEST_POSTGRES_URL")
            .expect("RENKEI_TEST_STORAGE=postgres needs RENKEI_TEST_POSTGRES_URL");
        let name = dir.path().file_name().unwrap().to_string_lossy().to_ascii_lowercase();
        let schema = format!("it_{}", name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>());
        Arc::new(PgStore::open_in_schema(&url, &schema, now).await.expect("open postgres store"))
    } else {
        let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
        Arc::new(SqliteStore::open(&url, now).await.expect("open store"))
    }
}

trait NowUtc {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> DateTime<Utc> {
        renkei::clock::Clock::now(self)
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer::read(
            self.http.post(self.url(path)).header("content-type", content_type).body(body.into()).send().await.unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> Answer {
        self.post(path, "application/json", body.to_string()).await
    }

    /// Runs the worker until nothing is due at the clock's current time.
    pub async fn drain(&self) -> usize {
        self.worker.drain().await.expect("worker drain")
    }

    /// Starts the worker's long-running loop ([`Worker::run`]), as `renkei serve` does, until
    /// [`RunningWorker::stop`].
    pub fn run_worker(&self) -> RunningWorker {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(self.worker.clone().run(async move {
            let _ = stopped.await;
        }));
        RunningWorker { stop, run }
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn api(&self, path: &str) -> serde_json::Value {
        let r = self.http.get(self.url(&format!("/api/v1{path}"))).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    pub async fn api_post(&self, path: &str, body: serde_json::Value) -> Answer {
        Answer::read(
            self.http.post(self.url(&format!("/api/v1{path}"))).bearer_auth(ADMIN).json(&body).send().await.unwrap(),
        )
        .await
    }

    /// The deliveries, oldest first.
    pub async fn deliveries(&self) -> Vec<serde_json::Value> {
        let mut items = self.api("/deliveries?limit=500").await["items"].as_array().unwrap().clone();
        items.reverse();
        items
    }

    pub async fn delivery(&self, id: i64) -> serde_json::Value {
        self.api(&format!("/deliveries/{id}")).await
    }

    /// Stops this app (as a crash would: nothing is released) and starts a new one on the same database,
    /// config and clock.
    pub async fn restart(self) -> TestApp {
        let TestApp { app, worker, clock, dir, key, config, env, server, stop, http, .. } = self;
        // Close the client's connections so the server's graceful stop completes.
        drop(http);
        let _ = stop.send(());
        server.await.unwrap();
        drop(worker);
        let store = app.store.clone();
        drop(app);
        // The store (and its file lock) goes when the last handle does.
        assert_eq!(Arc::strong_count(&store), 1, "something still holds the store");
        drop(store);
        start(config, env, dir, clock, key).await
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    async fn read(r: reqwest::Response) -> Answer {
        Answer { status: r.status().as_u16(), text: r.text().await.unwrap() }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// What the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered (0 when it hung).
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Never answer (until the test ends): a target that hangs.
    pub hang: bool,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: String::new(), hang: false }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            hang: false,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn hang() -> Reply {
        Reply { hang: true, ..Reply::status(200) }
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    /// The answer once the script is used up (200 when unset).
    default: Mutex<Option<Reply>>,
    arrived: Notify,
}

/// A recording HTTP receiver: answers from a script, then 200.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver { url, state }
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Sets the answer given once the script is used up.
    pub fn answer_by_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (fails the test after 10 s).
    pub async fn wait_for(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.state.arrived.notified();
                if self.state.received.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("receiver did not get {n} requests"));
    }
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scripted = state.script.lock().unwrap().pop_front();
    let reply = scripted.or_else(|| state.default.lock().unwrap().clone()).unwrap_or(Reply::status(200));
    state.received.lock().unwrap().push(Received {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body,
        answered: if reply.hang { 0 } else { reply.status },
    });
    state.arrived.notify_waiters();
    if reply.hang {
        std::future::pending::<()>().await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    resp
}

/// Where a `renkei serve --listen 127.0.0.1:0` child listens, as `127.0.0.1:PORT`, read from its log (the
/// "renkei is listening addr=…" line); `Err` with the exit status and the log when it exits first or says
/// nothing within `within`. Port 0 because asking the OS for a free port and handing it to renkei raced with
/// other tests taking the same port in between ("Address already in use").
pub fn listen_address(
    child: &mut std::process::Child,
    log: &std::path::Path,
    within: std::time::Duration,
) -> Result<String, String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .find(|l| l.contains("renkei is listening"))
            .and_then(|l| l.split_once("addr=").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(addr) = addr {
            return Ok(addr.to_owned());
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited {status}: {text}"));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("did not say where it listens: {text}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How many deliveries a running renkei at `url` lists with `status` (up to 500, the API's page).
pub async fn deliveries_with(http: &reqwest::Client, url: &str, token: &str, status: &str) -> usize {
    let v: serde_json::Value = http
        .get(format!("{url}/api/v1/deliveries?status={status}&limit=500"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().unwrap().len()
}

/// The worker's loop, running until stopped.
pub struct RunningWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Shuts the loop down as `renkei serve` does (running deliveries get `worker.shutdown_grace`, the rest are
    /// released) and waits for it to end.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        self.run.await.unwrap();
    }
}

/// How a [`FaultySink`] treats each request it reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Answers 200 and keeps the body: the sink is well.
    #[default]
    Healthy,
    /// Resets the connection (RST) instead of answering.
    Reset,
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Starts a 200 whose body never arrives whole (the connection closes 5 bytes in).
    Truncated,
    /// Answers 200 after this long.
    Slow(Duration),
}

/// A destination that misbehaves at the TCP and HTTP level, as the test says: resets, garbage, cut-off answers,
/// slow answers. Speaks just enough HTTP/1.1 (keep-alive, `content-length` bodies) for renkei's client.
pub struct FaultySink {
    pub url: String,
    state: Arc<FaultyState>,
}

#[derive(Default)]
struct FaultyState {
    fault: Mutex<Fault>,
    /// Bodies of the requests it acted on (`Healthy` and `Slow`, whether or not the answer was still awaited).
    delivered: Mutex<Vec<Vec<u8>>>,
    /// Requests read, whatever was done with them.
    requests: std::sync::atomic::AtomicUsize,
}

impl FaultySink {
    pub async fn start() -> FaultySink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FaultyState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(faulty_connection(stream, shared.clone()));
            }
        });
        FaultySink { url, state }
    }

    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// The JSON bodies of the requests it acted on, in order.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.state.delivered.lock().unwrap().iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads what the connection has next into `buf`; false when it is closed.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn faulty_connection(mut stream: tokio::net::TcpStream, state: Arc<FaultyState>) {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::new();
    loop {
        // One request: the head up to the blank line, then `content-length` bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        state.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let fault = *state.fault.lock().unwrap();
        const OK: &[u8] =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        match fault {
            Fault::Reset => {
                let _ = stream.set_zero_linger();
                return;
            }
            Fault::Garbage => {
                let _ = stream.write_all(b"\x16\x03\x01\x00 SSH-2.0-not-http \xff\xfe\r\n\r\n").await;
                return;
            }
            Fault::Truncated => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"ok\"").await;
                return;
            }
            Fault::Healthy | Fault::Slow(_) => {
                // It has the request (and acts on it) at once; when slow, only its answer is.
                state.delivered.lock().unwrap().push(body);
                if let Fault::Slow(d) = fault {
                    tokio::time::sleep(d).await;
                }
                if stream.write_all(OK).await.is_err() {
                    return;
                }
            }
        }
    }
}
