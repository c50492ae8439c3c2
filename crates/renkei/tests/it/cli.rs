//! The `renkei` binary itself: `check`, `test`, and `serve` killed with SIGKILL and started again.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

fn renkei() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renkei"));
    c.env_remove("RENKEI_ADMIN_TOKEN").env("LANG", "C");
    c
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_lists_every_problem_with_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.yaml",
        "sources:\n  a: { formt: json }\nflows:\n  f:\n    source: nope\n    steps: [ { to: d } ]\n",
    );
    let out = renkei().arg("check").arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let path = cfg.display().to_string();
    assert!(err.contains(&format!("{path}:2: sources.a.formt: unknown field `formt`")), "{err}");
    assert!(err.contains(&format!("{path}:5: flows.f.source: there is no source `nope`")), "{err}");
    assert!(err.contains(&format!("{path}:6: flows.f.steps[0].to: there is no destination `d`")), "{err}");
    assert!(err.contains("3 problem(s) found"), "{err}");

    let ja = renkei().env("LANG", "ja_JP.UTF-8").arg("check").arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8(ja.stderr).unwrap();
    assert!(err.contains("ソース `nope` がありません") && err.contains("3 件の問題があります"), "{err}");

    let ok = renkei().args(["check", "--config", "../../examples/quickstart/renkei.yaml"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn test_prints_the_requests_and_sends_nothing() {
    let out = renkei()
        .args([
            "test",
            "--config",
            "../../examples/quickstart/renkei.yaml",
            "--flow",
            "approval-to-inbox",
            "--event",
            "../../examples/quickstart/events/submission.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = "# event type: rakuraku_submission, dedupe key: 1001:rakuraku_submission
# order key: 1001
# step 0 → self
POST http://127.0.0.1:8080/hooks/inbox
X-Deal-Id: 1001
Content-Type: application/json; charset=utf-8

{\"deals.deal.id\":\"1001\",\"deals.deal.status\":\"申請中\",\"deals.deal.approver\":\"佐藤花子\",\"deals.deal.note\":\"見積 \\\"特急\\\"\\n2 行目\"}

";
    assert_eq!(text, expected);
}

/// The config of the SIGKILL tests: source `in`, one flow `forward` to the sink with `body.key` as its ordering
/// key, quick retries, the database in `dir`.
fn forward_config(dir: &Path, sink: &str, slots: usize) -> std::path::PathBuf {
    let db = dir.join("renkei.db");
    let text = format!(
        r#"
storage: "sqlite://{}"
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ poll: 50ms, concurrency: {slots} }}
sources:
  in: {{}}
destinations:
  sink: {{ type: http, base_url: "{sink}" }}
flows:
  forward:
    source: in
    order_key: "{{{{ body.key }}}}"
    retry: {{ max_attempts: 100, initial: 50ms, max: 200ms }}
    steps: [ {{ to: sink, path: /in, body: {{ n: "{{{{ body.n }}}}", key: "{{{{ body.key }}}}" }} }} ]
"#,
        db.display()
    );
    write(dir, "renkei.yaml", &text)
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(config: &Path, dir: &Path) -> Server {
        let log = dir.join("stderr.log");
        let mut child = renkei()
            .current_dir(dir)
            .env("RENKEI_ADMIN_TOKEN", ADMIN)
            .args(["serve", "--config"])
            .arg(config)
            // Port 0: renkei binds a free port and logs it (`listen_address`).
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://{}", listen_address(&mut child, &log, Duration::from_secs(20)).unwrap());
        Server { child, url }
    }

    async fn ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("renkei did not become ready");
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_and_are_delivered_after_restart() {
    let rx = Receiver::start().await;
    rx.answer_by_default(Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let cfg = forward_config(dir.path(), &rx.url, 128);
    let http = reqwest::Client::new();
    let server = Server::start(&cfg, dir.path());
    server.ready(&http).await;
    let n = 30;
    for i in 0..n {
        let r =
            http.post(format!("{}/hooks/in", server.url)).json(&json!({"n": i, "key": i % 3})).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    // The worker is busy failing against the receiver; kill the process in the middle of it.
    rx.wait_for(5).await;
    server.kill9();

    rx.answer_by_default(Reply::status(200));
    let server = Server::start(&cfg, dir.path());
    server.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries_with(&http, &server.url, ADMIN, "succeeded").await < n {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("not every acknowledged event was delivered after the restart; log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut delivered: Vec<i64> =
        rx.received().iter().filter(|r| r.answered == 200).map(|r| r.json()["n"].as_i64().unwrap()).collect();
    delivered.sort();
    delivered.dedup();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!log.contains("storage unavailable"), "the restarted process hit a locked database:\n{log}");
    assert_eq!(delivered, (0..n as i64).collect::<Vec<_>>());
    // Per key, the successful deliveries came in posting order.
    for key in 0..3 {
        let seq: Vec<i64> = rx
            .received()
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| r.json()["n"].as_i64().unwrap())
            .filter(|n| n % 3 == key)
            .collect();
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, sorted, "key {key}");
    }
}

/// `kill -9` at random moments under load, again and again, then a last start: every acknowledged event is
/// delivered, per key in the order it was acknowledged, and repeats are counted and bounded (a kill can only
/// repeat what was sent and not yet recorded, at most `worker.concurrency` deliveries). Eight senders post
/// without pause throughout, each its own ordering key; what is not answered 202 (the process was dead or died
/// mid-request) counts as not acknowledged and may or may not arrive. `RENKEI_CRASH_ROUNDS` (default 4) makes
/// the run longer; `RENKEI_CRASH_SEED` replays one (the seed is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_under_load_loses_nothing_acknowledged() {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};

    let rounds: usize = std::env::var("RENKEI_CRASH_ROUNDS").ok().map(|v| v.parse().unwrap()).unwrap_or(4);
    let seed: u64 = std::env::var("RENKEI_CRASH_SEED").ok().map(|v| v.parse().unwrap()).unwrap_or_else(rand::random);
    println!("crash loop: {rounds} rounds, RENKEI_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let senders = 8;
    let slots = 16;

    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = forward_config(dir.path(), &rx.url, slots);

    // The senders: each posts its next event as soon as the last is answered, to whichever process is up.
    let (target, watch) = tokio::sync::watch::channel::<Option<String>>(None);
    let next = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(i64, i64)>::new()));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut load = tokio::task::JoinSet::new();
    for key in 0..senders {
        let (mut watch, next, stop, acked, http) =
            (watch.clone(), next.clone(), stop.clone(), acked.clone(), http.clone());
        load.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Some(url) = watch.borrow_and_update().clone() else {
                    let _ = watch.changed().await;
                    continue;
                };
                let n = next.fetch_add(1, Ordering::SeqCst);
                let sent = http.post(format!("{url}/hooks/in")).json(&json!({"n": n, "key": key})).send().await;
                if sent.is_ok_and(|r| r.status() == 202) {
                    acked.lock().unwrap().push((key, n));
                }
            }
        });
    }

    for round in 0..rounds {
        let server = Server::start(&cfg, dir.path());
        server.ready(&http).await;
        target.send_replace(Some(server.url.clone()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        target.send_replace(None);
        server.kill9();
        println!(
            "round {round}: {} acknowledged so far, {} received",
            acked.lock().unwrap().len(),
            rx.received().len()
        );
    }
    stop.store(true, Ordering::SeqCst);
    target.send_replace(None);
    while load.join_next().await.is_some() {}

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= rounds, "the load reached the server: {} acknowledged", acked.len());
    let server = Server::start(&cfg, dir.path());
    server.ready(&http).await;
    let received = |rx: &Receiver| -> Vec<(i64, i64)> {
        rx.received()
            .iter()
            .filter(|r| r.answered == 200)
            .map(|r| (r.json()["key"].as_i64().unwrap(), r.json()["n"].as_i64().unwrap()))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::HashSet<(i64, i64)> = received(&rx).into_iter().collect();
        let missing: Vec<_> = acked.iter().filter(|a| !got.contains(a)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("{} acknowledged events never arrived ({missing:?}); seed {seed}; log:\n{log}", missing.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received(&rx);
    let distinct: std::collections::HashSet<_> = got.iter().collect();
    let repeats = got.len() - distinct.len();
    println!(
        "{} acknowledged, {} delivered ({} not acknowledged but stored), {repeats} repeats over {rounds} kills",
        acked.len(),
        distinct.len(),
        distinct.len() - acked.len()
    );
    assert!(repeats <= rounds * slots, "{repeats} repeats over {rounds} kills; seed {seed}");
    for key in 0..senders {
        let seq: Vec<i64> = got.iter().filter(|(k, _)| *k == key).map(|(_, n)| *n).collect();
        assert!(seq.windows(2).all(|w| w[0] <= w[1]), "key {key} out of order: {seq:?}; seed {seed}");
    }
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}
