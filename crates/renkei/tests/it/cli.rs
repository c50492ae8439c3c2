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
    let cfg = write(
        dir.path(),
        "renkei.yaml",
        &format!(
            r#"
storage: "sqlite://{}"
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ poll: 50ms }}
sources:
  in: {{}}
destinations:
  sink: {{ type: http, base_url: "{}" }}
flows:
  forward:
    source: in
    order_key: "{{{{ body.key }}}}"
    retry: {{ max_attempts: 100, initial: 50ms, max: 200ms }}
    steps: [ {{ to: sink, path: /in, body: {{ n: "{{{{ body.n }}}}" }} }} ]
"#,
            dir.path().join("renkei.db").display(),
            rx.url
        ),
    );
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
