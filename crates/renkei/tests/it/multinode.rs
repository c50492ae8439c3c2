//! Several `renkei serve` processes on one PostgreSQL database: events posted to every node, one node killed
//! with SIGKILL in the middle, and every acknowledged event delivered, in order per key, with the repeats that
//! at-least-once allows after a kill counted and bounded.
//!
//! Needs `RENKEI_TEST_POSTGRES_URL`; skipped with a printed line when it is unset. Each test works in a fresh
//! schema of that database, named by the storage URL's `schema` parameter (left behind, as the harness's are).
//! [`Node`] (a `renkei serve` process) is shared with `outage.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde_json::json;

use crate::harness::{deliveries_with, listen_address, ADMIN};

pub const POSTGRES_URL_VAR: &str = "RENKEI_TEST_POSTGRES_URL";

/// The test database's URL, or `None` after printing that `test` was skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    let url = std::env::var(POSTGRES_URL_VAR).ok();
    if url.is_none() {
        println!("skipped {test}: {POSTGRES_URL_VAR} is not set");
    }
    url
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    format!("{url}{}{key}={value}", if url.contains('?') { '&' } else { '?' })
}

/// A fresh schema name (PostgreSQL folds nothing here: lower case, letters and digits).
pub fn fresh_schema(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Polls `condition` every 20 ms until it holds; panics with `what` (and the logs of `nodes`) at the deadline.
pub async fn until<F, Fut>(deadline: Duration, what: &str, nodes: &[&Node], mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !condition().await {
        if Instant::now() > end {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            panic!("timed out after {deadline:?} waiting for {what}; logs:\n{}", logs.join("\n----\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `renkei serve` process on a free port, its stderr kept in `<dir>/<name>.log`.
pub struct Node {
    pub name: String,
    pub url: String,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Node {
    pub fn start(name: &str, config: &Path, dir: &Path) -> Node {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_renkei"))
            .env("RENKEI_ADMIN_TOKEN", ADMIN)
            // Every node of one database shares the master key (PostgreSQL has no key file by default).
            .env("RENKEI_MASTER_KEY", "bm9kZXMtb2Ytb25lLWRhdGFiYXNlLXNoYXJlLWEta2U=")
            .env("LANG", "C")
            .env("HOSTNAME", name)
            .env_remove("RUST_LOG")
            .current_dir(dir)
            .args(["serve", "--config"])
            .arg(config)
            // Port 0: renkei binds a free port and logs it (`listen_address`).
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = listen_address(&mut child, &log, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{name} {e}"));
        let url = format!("http://{addr}");
        Node { name: name.to_owned(), url, child: Mutex::new(Some(child)), log }
    }

    /// GET /readyz's status, 0 when nothing answers.
    pub async fn readyz(&self, http: &reqwest::Client) -> u16 {
        match http.get(format!("{}/readyz", self.url)).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn ready(&self, http: &reqwest::Client) {
        until(Duration::from_secs(30), &format!("{} to be ready", self.name), &[self], || async {
            // A node that exited (a bad config, no master key) will never be ready: say why at once.
            let exited = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(exited.is_none(), "{} exited ({exited:?}):\n{}", self.name, self.log());
            self.readyz(http).await == 200
        })
        .await;
    }

    pub async fn post(&self, http: &reqwest::Client, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = http.post(format!("{}/hooks/in", self.url)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn api(&self, http: &reqwest::Client, path: &str) -> serde_json::Value {
        let r = http.get(format!("{}/api/v1{path}", self.url)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path} on {}", self.name);
        r.json().await.unwrap()
    }

    /// How many deliveries have `status` (up to 500, the API's page).
    pub async fn count(&self, http: &reqwest::Client, status: &str) -> usize {
        deliveries_with(http, &self.url, ADMIN, status).await
    }

    pub fn log(&self) -> String {
        format!("[{}]\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// SIGKILL: no shutdown, no release; its claims come back only when their leases run out.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap().take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A receiver that records `(key, n)` of every request, in arrival order, and answers 200 after a short
/// delay, so deliveries are in flight when a node is killed.
#[derive(Clone, Default)]
pub struct Sink {
    got: Arc<Mutex<Vec<(i64, i64)>>>,
}

impl Sink {
    pub async fn start(latency: Duration) -> (Sink, String) {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(move |State(s): State<Sink>, Json(body): Json<serde_json::Value>| async move {
                s.got.lock().unwrap().push((body["key"].as_i64().unwrap(), body["n"].as_i64().unwrap()));
                tokio::time::sleep(latency).await;
                "ok"
            })
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (sink, url)
    }

    pub fn got(&self) -> Vec<(i64, i64)> {
        self.got.lock().unwrap().clone()
    }
}

/// A config forwarding `in` to the sink, ordered by `body.key`, with a short lease and poll.
pub fn config(storage: &str, sink: &str) -> String {
    format!(
        r#"
storage: "{storage}"
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ lease: 2s, poll: 50ms, concurrency: 8, shutdown_grace: 1s }}
sources:
  in: {{}}
destinations:
  sink: {{ type: http, base_url: "{sink}", timeout: 5s }}
flows:
  forward:
    source: in
    order_key: "{{{{ body.key }}}}"
    retry: {{ max_attempts: 100, initial: 50ms, max: 500ms }}
    steps: [ {{ to: sink, path: /in, body: {{ n: "{{{{ body.n }}}}", key: "{{{{ body.key }}}}" }} }} ]
"#
    )
}

/// Posts events `from..to` of every key, each key's in order (the next after the previous one's 202), keys side
/// by side, event `n` of a key to `nodes[n % len]`. Every post must be acknowledged.
async fn post_all(http: &reqwest::Client, nodes: &[&Node], keys: i64, range: std::ops::Range<i64>) {
    let posts = (0..keys).map(|key| {
        let range = range.clone();
        async move {
            for n in range {
                let node = nodes[n as usize % nodes.len()];
                let (status, body) = node.post(http, json!({"key": key, "n": n})).await;
                assert_eq!(status, 202, "key {key} n {n} on {}: {body}", node.name);
            }
        }
    });
    futures_join(posts).await;
}

/// Runs futures side by side on this task (no spawning, so they may borrow).
async fn futures_join<F: std::future::Future<Output = ()>>(fs: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = fs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_every_acknowledged_event_in_key_order_when_one_is_killed() {
    let Some(pg) = postgres_url("multinode::three_nodes") else { return };
    const KEYS: i64 = 6;
    const PER_KEY: i64 = 40;
    let total = (KEYS * PER_KEY) as usize;
    let (sink, sink_url) = Sink::start(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = with_param(&pg, "schema", &fresh_schema("mn"));
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(&cfg, config(&storage, &sink_url)).unwrap();
    let http = reqwest::Client::new();

    let a = Node::start("a", &cfg, dir.path());
    let b = Node::start("b", &cfg, dir.path());
    let mut c = Node::start("c", &cfg, dir.path());
    for n in [&a, &b, &c] {
        n.ready(&http).await;
    }

    // The first half goes to all three; c is killed once a sixth of everything has been delivered, while the
    // rest of the first half is still being worked on (by c too).
    post_all(&http, &[&a, &b, &c], KEYS, 0..PER_KEY / 2).await;
    until(Duration::from_secs(30), "the first deliveries", &[&a, &b, &c], || async { sink.got().len() >= total / 6 })
        .await;
    let at_kill = sink.got().len();
    c.kill9();
    assert!(at_kill < total / 2, "the kill came after the first half was delivered ({at_kill})");

    // The second half goes to the two left.
    post_all(&http, &[&a, &b], KEYS, PER_KEY / 2..PER_KEY).await;
    until(Duration::from_secs(60), "every delivery to succeed", &[&a, &b, &c], || async {
        a.count(&http, "succeeded").await == total
    })
    .await;

    let got = sink.got();
    let mut per_key: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (key, n) in &got {
        per_key.entry(*key).or_default().push(*n);
    }
    let distinct: BTreeSet<(i64, i64)> = got.iter().copied().collect();
    assert_eq!(distinct.len(), total, "every acknowledged event arrived");
    for key in 0..KEYS {
        let mut seq = per_key.remove(&key).unwrap_or_default();
        // A repeat after the kill is the delivery the dead node had sent without recording it; the key's next
        // delivery waits for it, so a repeat always follows its first arrival directly.
        seq.dedup();
        assert_eq!(seq, (0..PER_KEY).collect::<Vec<_>>(), "key {key}: in posting order, repeats only back to back");
    }
    let duplicates = got.len() - total;
    // Only a delivery in flight on the killed node can arrive twice, and each key has at most one in flight.
    println!("multinode: {duplicates} duplicate deliveries after SIGKILL ({at_kill} of {total} delivered at the kill; bound {KEYS})");
    assert!(duplicates <= KEYS as usize, "{duplicates} duplicates");
    for status in ["pending", "retrying", "in_flight", "dead"] {
        assert_eq!(a.count(&http, status).await, 0, "{status}");
    }
}

/// Runs `renkei` with `args`; answers (exit code, stdout, stderr).
fn renkei_cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .env("RENKEI_MASTER_KEY", "bm9kZXMtb2Ytb25lLWRhdGFiYXNlLXNoYXJlLWEta2U=")
        .env("LANG", "C")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Two nodes on one database: a flow edited through one node's API runs on the other within seconds, and a
/// config exported with `renkei export` (secrets masked), changed and stored with `renkei apply` reaches both.
#[tokio::test]
async fn a_config_edit_on_one_node_reaches_the_other_without_a_restart() {
    let Some(pg) = postgres_url("multinode::config_edit") else { return };
    let (sink, sink_url) = Sink::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = with_param(&pg, "schema", &fresh_schema("mc"));
    let cfg = dir.path().join("renkei.yaml");
    let text = config(&storage, &sink_url)
        .replace("sink: { type: http,", "sink: { type: http, headers: { X-Api-Key: sink-s3cret-key },");
    std::fs::write(&cfg, &text).unwrap();
    let http = reqwest::Client::new();
    let a = Node::start("a", &cfg, dir.path());
    let b = Node::start("b", &cfg, dir.path());
    a.ready(&http).await;
    b.ready(&http).await;
    let first = b.api(&http, "/config").await["revision"].as_i64().unwrap();

    // Through a's API: n becomes n * 10.
    let flow =
        a.api(&http, "/config/flows/forward").await["text"].as_str().unwrap().replace("body.n }}", "body.n * 10 }}");
    let r = http
        .put(format!("{}/api/v1/config/flows/forward", a.url))
        .bearer_auth(ADMIN)
        .json(&json!({ "text": flow }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    until(Duration::from_secs(10), "b to run the edit", &[&a, &b], || async {
        b.api(&http, "/config").await["revision"].as_i64().unwrap() > first
    })
    .await;
    assert_eq!(b.post(&http, json!({ "key": 1, "n": 7 })).await.0, 202);
    until(Duration::from_secs(10), "the delivery", &[&a, &b], || async { sink.got() == [(1, 70)] }).await;

    // export, change, apply: secrets stay masked on the way out and keep their values on the way in.
    let config_arg = cfg.to_str().unwrap();
    let (code, exported, err) = renkei_cli(dir.path(), &["export", "--config", config_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(exported.contains("[REDACTED]") && !exported.contains("sink-s3cret-key"), "{exported}");
    assert!(exported.contains("body.n * 10"), "the newest revision, not the file");
    let changed = dir.path().join("changed.yaml");
    std::fs::write(&changed, exported.replace("body.n * 10 }}", "body.n * 100 }}")).unwrap();
    let (code, _, err) = renkei_cli(dir.path(), &["apply", "--config", config_arg, changed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("stored as revision"), "{err}");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, exported.replace("to: sink", "to: nowhere")).unwrap();
    let (code, _, err) = renkei_cli(dir.path(), &["apply", "--config", config_arg, broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nowhere") && err.contains("nothing stored"), "{err}");
    let applied = a.api(&http, "/config/revisions").await["items"][0]["id"].as_i64().unwrap();
    for node in [&a, &b] {
        until(Duration::from_secs(10), "the applied revision to run", &[&a, &b], || async {
            node.api(&http, "/config").await["revision"].as_i64() == Some(applied)
        })
        .await;
    }
    assert_eq!(a.post(&http, json!({ "key": 2, "n": 1 })).await.0, 202);
    assert_eq!(b.post(&http, json!({ "key": 3, "n": 2 })).await.0, 202);
    until(Duration::from_secs(10), "both deliveries", &[&a, &b], || async { sink.got().len() == 3 }).await;
    let mut got = sink.got();
    got.sort();
    assert_eq!(got, [(1, 70), (2, 100), (3, 200)]);
}
