//! PostgreSQL going away and coming back, under a running `renkei serve`: a TCP proxy of the test's own sits
//! between renkei and the database and is cut (open connections dropped, and new ones refused, or accepted and
//! reset at once as a connection pooler in front of a stopped server does), then restored. While it is cut,
//! ingress answers 503 and stores nothing, `/readyz` answers 503 and the worker waits, longer each time; once
//! it is back, everything resumes without a restart.
//!
//! Needs `RENKEI_TEST_POSTGRES_URL`; skipped with a printed line when it is unset.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::harness::{Receiver, Reply};
use crate::multinode::{fresh_schema, postgres_url, until, with_param, Node};

/// What a cut proxy does with a new connection.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Nothing listens on the port: "connection refused" (the pool retries connecting until `acquire_timeout`).
    Refuse,
    /// Accepted and closed at once: every query fails fast.
    Reset,
}

/// A TCP proxy that can be cut and restored. Both return once done: after `cut`, every connection through it
/// is closed and new ones fail as `Cut` says; after `restore`, the same port accepts and forwards again.
struct Proxy {
    addr: SocketAddr,
    control: mpsc::Sender<(bool, oneshot::Sender<()>)>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, how: Cut) -> Proxy {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().unwrap();
        let (control, commands) = mpsc::channel(1);
        tokio::spawn(run_proxy(listener, upstream, how, commands));
        Proxy { addr, control }
    }

    async fn set(&self, up: bool) {
        let (done, acked) = oneshot::channel();
        self.control.send((up, done)).await.unwrap();
        acked.await.unwrap();
    }

    async fn cut(&self) {
        self.set(false).await;
    }

    async fn restore(&self) {
        self.set(true).await;
    }
}

/// A listener that may take its port again right after closing it (SO_REUSEADDR).
fn listen(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

async fn run_proxy(
    listener: TcpListener,
    upstream: SocketAddr,
    how: Cut,
    mut commands: mpsc::Receiver<(bool, oneshot::Sender<()>)>,
) {
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    let mut up = true;
    let mut pipes = JoinSet::new();
    loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = accept => {
                if let Some((mut client, _)) = accepted.filter(|_| up) {
                    pipes.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
            command = commands.recv() => {
                let Some((set_up, done)) = command else { return };
                up = set_up;
                if up {
                    listener.get_or_insert_with(|| listen(addr));
                } else {
                    // Closing the listening socket makes new connections fail with "connection refused" (with
                    // `Reset` it stays open, and what it accepts is dropped above); aborting the pipes drops both
                    // ends of every open connection.
                    if matches!(how, Cut::Refuse) {
                        listener = None;
                    }
                    pipes.abort_all();
                    while pipes.join_next().await.is_some() {}
                }
                let _ = done.send(());
            }
            Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
        }
    }
}

/// The database's address, and a storage URL that reaches it through `proxy` instead.
async fn through(pg: &str, proxy: SocketAddr, schema: &str) -> (SocketAddr, String) {
    let mut url = reqwest::Url::parse(pg).unwrap();
    let host = url.host_str().unwrap().to_owned();
    let port = url.port().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap();
    url.set_host(Some(&proxy.ip().to_string())).unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    let storage = with_param(&with_param(url.as_str(), "schema", schema), "acquire_timeout", "1s");
    (upstream, storage)
}

/// How long the database stays away at least, so the worker's waiting can be told from a loop.
const AWAY: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_postgres_refuses_connections_ingress_answers_503_and_everything_resumes_when_it_is_back() {
    let Some(pg) = postgres_url("outage::postgres_refuses") else { return };
    away_and_back(&pg, Cut::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_connections_to_postgres_are_reset_ingress_answers_503_and_everything_resumes_when_it_is_back() {
    let Some(pg) = postgres_url("outage::postgres_resets") else { return };
    away_and_back(&pg, Cut::Reset).await;
}

async fn away_and_back(pg: &str, how: Cut) {
    let rx = Receiver::start().await;
    rx.answer_by_default(Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let schema = fresh_schema("out");
    let placeholder: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (upstream, _) = through(pg, placeholder, &schema).await;
    let proxy = Proxy::start(upstream, how).await;
    let (_, storage) = through(pg, proxy.addr, &schema).await;
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(&cfg, crate::multinode::config(&storage, &rx.url)).unwrap();
    let http = reqwest::Client::new();
    let node = Node::start("solo", &cfg, dir.path());
    node.ready(&http).await;

    // Deliveries waiting in the queue when the database goes: the receiver fails them for now.
    for n in 0..4 {
        let (status, body) = node.post(&http, json!({"key": n % 2, "n": n, "phase": "before"})).await;
        assert_eq!(status, 202, "{body}");
    }
    rx.wait_for(4).await;

    proxy.cut().await;
    let cut_at = Instant::now();
    until(Duration::from_secs(20), "/readyz to answer 503", &[&node], || async { node.readyz(&http).await == 503 })
        .await;
    for n in 100..103 {
        let (status, body) = node.post(&http, json!({"key": 0, "n": n, "phase": "during"})).await;
        assert_eq!(status, 503, "never 202 for what was not stored, never a 500: {body}\n{}", node.log());
        assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    }
    // Not a wait for anything: the outage lasts this long, so that a worker asking every `poll` (50 ms) would
    // show in the count of failed claims below.
    tokio::time::sleep(AWAY.saturating_sub(cut_at.elapsed())).await;
    rx.answer_by_default(Reply::status(200));
    let away = cut_at.elapsed();
    proxy.restore().await;

    until(Duration::from_secs(30), "/readyz to answer 200 again", &[&node], || async {
        node.readyz(&http).await == 200
    })
    .await;
    for n in 4..6 {
        let (status, body) = node.post(&http, json!({"key": n % 2, "n": n, "phase": "after"})).await;
        assert_eq!(status, 202, "{body}");
    }
    // The deliveries queued before the cut and those accepted after it all arrive, with no restart.
    until(Duration::from_secs(30), "every stored event delivered", &[&node], || async {
        node.count(&http, "succeeded").await == 6
    })
    .await;
    let mut delivered: Vec<i64> =
        rx.received().iter().filter(|r| r.answered == 200).map(|r| r.json()["n"].as_i64().unwrap()).collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered, [0, 1, 2, 3, 4, 5]);
    // Nothing of what was answered 503 was stored, not even as a rejected request.
    let events = node.api(&http, "/events?limit=500").await;
    let phases: Vec<&str> =
        events["items"].as_array().unwrap().iter().filter_map(|e| e["body"]["phase"].as_str()).collect();
    assert_eq!(events["items"].as_array().unwrap().len(), 6, "{events}");
    assert!(!phases.contains(&"during"), "{phases:?}");

    // The worker waited rather than spinning: its claim failures are logged, and not many of them.
    let log = node.log();
    let failures = log.matches("claiming deliveries failed").count();
    println!("outage ({how:?}): {failures} failed claims logged in {away:?} away");
    assert!(failures >= 1, "the worker's failures are logged:\n{log}");
    assert!(failures as u128 <= 2 + away.as_millis() / 250, "{failures} claim failures in {away:?}:\n{log}");
}
