//! Outbound safety and access: the SSRF guard on every outbound request, API tokens with roles and expiry,
//! the audit log, the `token` / `user` / `rotate-key` commands, and config revisions sealed at rest.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use renkei::access::{new_token, token_hash};
use renkei::secrets::{self, KeySource, MasterKey};
use renkei_store::{AuditFilter, NewAudit, NewToken};
use serde_json::json;

use crate::harness::*;

// ----- the SSRF guard -----

/// One source `in` and one flow `f` to destination `d` at `base`, with `network` as given.
fn one_flow(network: &str, base: &str, extra: &str) -> String {
    format!(
        "network: {network}\nsources:\n  in: {{}}\ndestinations:\n  d: {{ type: http, base_url: \"{base}\"{extra} }}\n\
         flows:\n  f: {{ source: in, steps: [ {{ to: d, path: /x }} ] }}\n"
    )
}

/// Posts one event, runs the worker, and answers the delivery's `last_error` (the delivery must be dead).
async fn refused_with(app: &TestApp) -> String {
    assert_eq!(app.post_json("/hooks/in", json!({"n": 1})).await.status, 202);
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead", "a refusal is permanent, not retried: {d}");
    let detail = app.delivery(d["id"].as_i64().unwrap()).await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1, "{detail}");
    d["last_error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn loopback_is_refused_without_the_exception() {
    let rx = Receiver::start().await;
    let app = spawn_app(&one_flow("{ allow_http: true }", &rx.url, "")).await;
    let error = refused_with(&app).await;
    let ip = rx.url.trim_start_matches("http://").split(':').next().unwrap().to_owned();
    assert_eq!(error, format!("step 0: refused: {ip} is a loopback address; allow it with network.allow_private"));
    assert!(rx.received().is_empty(), "nothing reached the receiver");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
    let rx = Receiver::start().await;
    let port = rx.url.rsplit(':').next().unwrap();
    let app = spawn_app(&one_flow("{ allow_http: true }", &format!("http://localhost:{port}"), "")).await;
    let error = refused_with(&app).await;
    assert!(error.starts_with("step 0: refused: localhost resolves to "), "{error}");
    assert!(error.contains("a loopback address; allow it with network.allow_private"), "{error}");
    assert!(rx.received().is_empty());
}

#[tokio::test]
async fn cloud_metadata_is_refused_even_with_loopback_allowed() {
    let network = "{ allow_private: [\"127.0.0.0/8\"], allow_http: true }";
    let app = spawn_app(&one_flow(network, "http://169.254.169.254/latest/meta-data", "")).await;
    let error = refused_with(&app).await;
    assert!(error.starts_with("step 0: refused: 169.254.169.254 is a link-local address"), "{error}");
    // The IPv4-mapped spelling of the same address is the same address.
    let app = spawn_app(&one_flow(network, "http://[::ffff:169.254.169.254]", "")).await;
    assert!(refused_with(&app).await.contains("169.254.169.254"), "mapped form");
}

#[tokio::test]
async fn plain_http_needs_allow_http_globally_or_on_the_destination() {
    let rx = Receiver::start().await;
    let network = "{ allow_private: [\"127.0.0.0/8\"] }";
    let app = spawn_app(&one_flow(network, &rx.url, "")).await;
    let error = refused_with(&app).await;
    assert!(error.contains("is not https") && error.contains("network.allow_http"), "{error}");
    assert!(rx.received().is_empty());

    let app = spawn_app(&one_flow(network, &rx.url, ", allow_http: true")).await;
    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    assert_eq!(app.deliveries().await[0]["status"], "succeeded", "the destination's own exception");
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn the_exception_lets_a_private_address_through() {
    let rx = Receiver::start().await;
    let app = spawn_app(&one_flow("{ allow_private: [\"127.0.0.1/32\"], allow_http: true }", &rx.url, "")).await;
    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn a_redirect_is_an_answer_never_followed() {
    let rx = Receiver::start().await;
    let inside = Receiver::start().await;
    rx.script([Reply::status(302).header("location", &format!("{}/admin", inside.url))]);
    let app = spawn_app(&one_flow("{ allow_private: [\"127.0.0.0/8\"], allow_http: true }", &rx.url, "")).await;
    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead", "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("302"), "{d}");
    assert!(inside.received().is_empty(), "the redirect's target was never asked");
}

#[tokio::test]
async fn subscriptions_kintone_and_the_sender_callback_are_guarded_too() {
    let cfg = r#"
network: { allow_http: true }
sources:
  in: {}
  shop:
    verify: { url: "http://127.0.0.1:9/check", form: { token: "{{ body.token }}" } }
destinations:
  crm: { type: kintone, base_url: "http://10.0.0.5", app: 1, api_token: "t0k3n-for-crm" }
flows:
  to-crm: { source: in, steps: [ { to: crm, action: add, record: { name: "x" } } ] }
subscriptions:
  hook: { url: "http://127.0.0.1:9/hook", source: in }
"#;
    let app = spawn_app(cfg).await;
    let r = app.post_json("/hooks/shop", json!({"token": "t"})).await;
    assert_eq!(r.status, 401);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("refused: 127.0.0.1 is a loopback address"), "{msg}");

    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    for d in app.deliveries().await {
        assert_eq!(d["status"], "dead", "{d}");
        let error = d["last_error"].as_str().unwrap();
        let expected =
            if d["flow"] == "to-crm" { "refused: 10.0.0.5 is a private address" } else { "refused: 127.0.0.1" };
        assert!(error.contains(expected), "{d}");
    }
}

// ----- tokens, roles, the audit log -----

/// Stores a token with `role` (and an expiry) as `renkei token create` does; answers the token.
pub(crate) async fn token(app: &TestApp, name: &str, role: &str, expires_in: Option<chrono::Duration>) -> String {
    let token = new_token();
    let now = app.app.clock.now();
    let record = NewToken {
        name: name.into(),
        role: role.into(),
        hash: token_hash(&token),
        created_at: now,
        expires_at: expires_in.map(|d| now + d),
    };
    let audit = NewAudit {
        at: now,
        actor: "cli".into(),
        action: "token.created".into(),
        target: name.into(),
        detail: json!({}),
    };
    app.app.store.create_token(record, audit).await.unwrap();
    token
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> Answer {
    let r = app.http.get(app.url(&format!("/api/v1{path}"))).bearer_auth(token).send().await.unwrap();
    Answer { status: r.status().as_u16(), text: r.text().await.unwrap() }
}

async fn post_as(app: &TestApp, token: &str, path: &str, body: serde_json::Value) -> Answer {
    let r = app.http.post(app.url(&format!("/api/v1{path}"))).bearer_auth(token).json(&body).send().await.unwrap();
    Answer { status: r.status().as_u16(), text: r.text().await.unwrap() }
}

/// A source `in` (token-protected), a flow to a receiver that fails, so there is a dead delivery to retry.
async fn app_with_a_dead_delivery() -> (TestApp, Receiver, i64, String) {
    let rx = Receiver::start().await;
    rx.answer_by_default(Reply::status(400));
    let cfg = format!(
        "sources:\n  in: {{ auth: {{ token: \"${{IN_TOKEN}}\" }} }}\ndestinations:\n  d: {{ type: http, base_url: \"{}\", auth: {{ bearer: \"${{DEST_TOKEN}}\" }} }}\nflows:\n  f: {{ source: in, steps: [ {{ to: d, path: /x }} ] }}\n",
        rx.url
    );
    let app =
        spawn_app_env(&cfg, &[("IN_TOKEN", "inbound-s3cr3t-token"), ("DEST_TOKEN", "outbound-s3cr3t-token")]).await;
    let ok = app
        .http
        .post(app.url("/hooks/in"))
        .header("x-renkei-token", "inbound-s3cr3t-token")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    // A rejected request whose body holds a credential renkei does not know.
    let rejected = app
        .http
        .post(app.url("/hooks/in"))
        .header("x-renkei-token", "wrong")
        .json(&json!({"password": "someone-elses-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead");
    let id = d["id"].as_i64().unwrap();
    let event_id = d["event_id"].as_str().unwrap().to_owned();
    (app, rx, id, event_id)
}

#[tokio::test]
async fn a_viewer_reads_history_but_never_retries_replays_or_sees_secrets() {
    let (app, _rx, id, event_id) = app_with_a_dead_delivery().await;
    let viewer = token(&app, "watcher", "viewer", None).await;
    let mut seen = String::new();
    for path in [
        "/events",
        &format!("/events/{event_id}"),
        "/deliveries",
        &format!("/deliveries/{id}"),
        "/attempts",
        "/queue",
        "/destinations",
        "/kintone/usage",
    ] {
        let r = get_as(&app, &viewer, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        seen.push_str(&r.text);
    }
    for secret in ["inbound-s3cr3t-token", "outbound-s3cr3t-token", "someone-elses-password"] {
        assert!(!seen.contains(secret), "{secret} reached a viewer");
    }
    let rejected = get_as(&app, &viewer, "/events?status=rejected").await.json();
    let rejected_id = rejected["items"][0]["id"].as_str().unwrap();
    let r = get_as(&app, &viewer, &format!("/events/{rejected_id}")).await.json();
    assert!(r["raw"].is_null() && r["raw_withheld"] == true, "{r}");

    for (path, body) in [
        (format!("/deliveries/{id}/retry"), json!({})),
        ("/deliveries/retry".to_owned(), json!({})),
        (format!("/events/{event_id}/replay"), json!({})),
        ("/destinations/d/test".to_owned(), json!({})),
    ] {
        let r = post_as(&app, &viewer, &path, body).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        let e = r.json();
        assert_eq!(e["error"]["code"], "forbidden");
        assert_eq!(e["error"]["message"], "this needs the editor role; this token has the viewer role", "{path}");
    }
    let r = get_as(&app, &viewer, "/audit").await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("needs the admin role"));
    assert_eq!(app.deliveries().await.len(), 1, "nothing was replayed");
    assert_eq!(app.deliveries().await[0]["status"], "dead", "nothing was retried");
    // In Japanese too.
    let ja = app
        .http
        .post(app.url(&format!("/api/v1/deliveries/{id}/retry")))
        .bearer_auth(&viewer)
        .header("accept-language", "ja")
        .send()
        .await
        .unwrap();
    let msg = ja.json::<serde_json::Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("editor ロールが必要です"), "{msg}");
}

#[tokio::test]
async fn an_editor_retries_and_replays_and_the_audit_log_says_who() {
    let (app, _rx, id, event_id) = app_with_a_dead_delivery().await;
    let editor = token(&app, "ops", "editor", None).await;
    let admin = token(&app, "boss", "admin", None).await;
    let r = get_as(&app, &editor, "/events?status=rejected").await.json();
    let rejected_id = r["items"][0]["id"].as_str().unwrap();
    assert!(get_as(&app, &editor, &format!("/events/{rejected_id}")).await.json()["raw"].is_string());

    assert_eq!(post_as(&app, &editor, &format!("/deliveries/{id}/retry"), json!({})).await.status, 202);
    app.drain().await;
    let bulk = post_as(&app, &editor, "/deliveries/retry", json!({"flow": "f"})).await;
    assert_eq!(bulk.json()["retried"], 1);
    app.drain().await;
    let replay = post_as(&app, &editor, &format!("/events/{event_id}/replay"), json!({})).await;
    assert_eq!(replay.status, 202);
    let new_ids = replay.json()["delivery_ids"].clone();
    assert_eq!(get_as(&app, &editor, "/audit").await.status, 403, "the audit log is for admins");

    let log = get_as(&app, &admin, "/audit?actor=token:ops").await;
    assert_eq!(log.status, 200, "{}", log.text);
    let items = log.json()["items"].as_array().unwrap().clone();
    let lines: Vec<(String, String)> = items
        .iter()
        .map(|a| (a["action"].as_str().unwrap().to_owned(), a["target"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        lines,
        [
            ("event.replayed".to_owned(), event_id.clone()),
            ("deliveries.retried".to_owned(), String::new()),
            ("delivery.retried".to_owned(), id.to_string()),
        ]
    );
    assert_eq!(items[0]["detail"]["delivery_ids"], new_ids);
    assert_eq!(
        items[1]["detail"],
        json!({"filter": {"flow": "f", "source": null, "since": null, "until": null, "q": null}, "retried": 1})
    );
    assert_eq!(items[2]["actor"], "token:ops");
    assert_eq!(items[2]["at"], json!(t0()));
    // The config's admin token is an admin, and says so in the log.
    app.api_post(&format!("/deliveries/{id}/retry"), json!({})).await;
    let mine = app.api("/audit?actor=admin_token").await;
    assert_eq!(mine["items"][0]["action"], "delivery.retried");
    let created = app.api("/audit?action=token.created").await;
    assert_eq!(created["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_expired_or_revoked_token_opens_nothing() {
    let app = spawn_app("sources:\n  in: {}\n").await;
    let t = token(&app, "temp", "viewer", Some(chrono::Duration::hours(1))).await;
    assert_eq!(get_as(&app, &t, "/events").await.status, 200);
    app.advance(Duration::from_secs(3600));
    let r = get_as(&app, &t, "/events").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "token_expired");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`temp` expired at"), "{}", r.text);

    let kept = token(&app, "kept", "admin", None).await;
    assert_eq!(get_as(&app, &kept, "/audit").await.status, 200);
    let audit = NewAudit {
        at: app.app.clock.now(),
        actor: "cli".into(),
        action: "token.revoked".into(),
        target: "kept".into(),
        detail: json!({}),
    };
    app.app.store.revoke_token("kept", audit).await.unwrap();
    let r = get_as(&app, &kept, "/audit").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    assert_eq!(get_as(&app, "rk_made-up", "/events").await.status, 401);
}

// ----- config revisions sealed at rest (on the backend under test) -----

#[tokio::test]
async fn config_revisions_are_sealed_compared_and_re_encrypted() {
    let (store, _dir) = fresh_store().await;
    let store = &*store;
    let now = t0();
    // A revision a version before sealing stored in plaintext.
    store.save_config("server: { admin_token: old-literal-s3cr3t }\n", now).await.unwrap();
    let key = secrets::master_key(store, &KeySource::Ephemeral, None).await.unwrap();
    let loader = renkei::live::Loader::default();
    let adopt = |text: &'static str| {
        let key = &key;
        let loader = &loader;
        async move {
            let file = loader.load(text).unwrap();
            renkei::live::adopt(store, key, loader, file, now).await.unwrap().1
        }
    };
    let v1 = "server: { admin_token: literal-s3cr3t-token }\nsources: { a: {} }\n";
    let r1 = adopt(v1).await;
    assert_eq!(adopt(v1).await, r1, "unchanged: no new revision");
    let v2 = "server: { admin_token: literal-s3cr3t-token }\nsources: { b: {} }\n";
    assert!(adopt(v2).await > r1);
    let revs = store.config_revisions().await.unwrap();
    assert_eq!(revs.len(), 3);
    for r in &revs {
        assert_eq!(secrets::sealed_by(&r.text), Some(key.id()), "{}", r.text);
        assert!(!r.text.contains("s3cr3t"), "no plaintext at rest");
    }
    assert_eq!(key.open(&revs[0].text).unwrap(), "server: { admin_token: old-literal-s3cr3t }\n");
    assert_eq!(key.open(&revs[2].text).unwrap(), v2);

    // Another key is refused, naming both keys and never either key itself.
    let env = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stranger = MasterKey::from_base64(env).unwrap();
    let e = secrets::master_key(store, &KeySource::Env, Some(env)).await.unwrap_err().to_string();
    assert!(e.contains(key.id()) && e.contains(stranger.id()) && !e.contains(env), "{e}");

    let new = MasterKey::generate();
    let new_id = new.id().to_owned();
    let done = secrets::rotate(store, &KeySource::Env, &key, new, "cli", now).await.unwrap();
    assert_eq!(done.revisions, 3);
    let revs = store.config_revisions().await.unwrap();
    assert!(revs.iter().all(|r| secrets::sealed_by(&r.text) == Some(new_id.as_str())));
    assert!(key.open(&revs[2].text).is_err(), "the old key opens nothing now");
    let log = store.list_audit(&AuditFilter { action: Some("master_key.rotated".into()), ..Default::default() }).await;
    let log = log.unwrap();
    assert_eq!(log[0].detail["new_key"], json!(new_id));
    let kinds: Vec<String> =
        store.list_audit(&AuditFilter::default()).await.unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(kinds, ["master_key.rotated", "config.changed", "config.changed", "config.sealed"]);
}

// ----- the command line: token, user, rotate-key, and serve's key file -----

fn renkei() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renkei"));
    c.env_remove("RENKEI_ADMIN_TOKEN").env_remove(secrets::KEY_ENV).env_remove(secrets::NEW_KEY_ENV).env("LANG", "C");
    c
}

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = renkei();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// Everything renkei keeps in `dir` (database, WAL, key file), as bytes, for searching.
fn stored_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "log") {
            continue;
        }
        out.extend(std::fs::read(&p).unwrap_or_default());
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn token_and_user_commands_keep_hashes_only_and_audit_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(&cfg, format!("storage: \"sqlite://{}\"\n", dir.path().join("renkei.db").display())).unwrap();
    let cfg = cfg.to_str().unwrap();

    let (code, token, err) =
        run(&["token", "create", "--config", cfg, "--name", "ci", "--role", "viewer", "--expires", "30d"], None);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("rk_"), "only the token on stdout: {token}");
    assert!(err.contains("shown only now"), "{err}");
    let (code, _, err) = run(&["token", "create", "--config", cfg, "--name", "ci", "--role", "admin"], None);
    assert_eq!(code, 2, "a taken name: {err}");
    assert!(err.contains("already a token named `ci`"), "{err}");
    let (code, _, err) = run(&["token", "create", "--config", cfg, "--name", "x", "--role", "root"], None);
    assert_ne!(code, 0);
    assert!(err.contains("root"), "{err}");
    let (_, list, _) = run(&["token", "list", "--config", cfg], None);
    assert!(list.contains("ci") && list.contains("viewer") && !list.contains(&token), "{list}");

    let (code, _, err) = run(
        &["user", "add", "--config", cfg, "--name", "佐藤", "--role", "editor"],
        Some("correct horse battery staple\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["user", "add", "--config", cfg, "--name", "short", "--role", "viewer"], Some("pw\n"));
    assert_eq!(code, 2);
    assert!(err.contains("at least 12 characters"), "{err}");
    let mut env_cmd = renkei();
    let out = env_cmd
        .args(["user", "add", "--config", cfg, "--name", "suzuki", "--role", "viewer", "--password-env", "PW"])
        .env("PW", "another long passphrase")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, users, _) = run(&["user", "list", "--config", cfg], None);
    assert!(users.contains("佐藤") && users.contains("editor") && users.contains("suzuki"), "{users}");

    let at_rest = stored_bytes(dir.path());
    for secret in [token.as_str(), "correct horse battery staple", "another long passphrase"] {
        assert!(!contains(&at_rest, secret), "{secret} is stored as it is");
    }
    assert!(contains(&at_rest, &token_hash(&token)), "the token's hash is what is kept");

    assert_eq!(run(&["token", "revoke", "--config", cfg, "ci"], None).0, 0);
    let (code, _, err) = run(&["token", "revoke", "--config", cfg, "ci"], None);
    assert_eq!(code, 2);
    assert!(err.contains("no token named `ci`"), "{err}");
    assert_eq!(run(&["user", "remove", "--config", cfg, "suzuki"], None).0, 0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = rt.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
        let store = renkei_store::sqlite::SqliteStore::open_beside(&url).await.unwrap();
        renkei_store::Store::list_audit(&store, &AuditFilter::default()).await.unwrap()
    });
    let lines: Vec<(&str, &str, &str)> =
        log.iter().map(|a| (a.actor.as_str(), a.action.as_str(), a.target.as_str())).collect();
    assert_eq!(
        lines,
        [
            ("cli", "user.removed", "suzuki"),
            ("cli", "token.revoked", "ci"),
            ("cli", "user.added", "suzuki"),
            ("cli", "user.added", "佐藤"),
            ("cli", "token.created", "ci"),
        ]
    );
    assert_eq!(log[4].detail["role"], "viewer");
}

/// `renkei serve` until it answers `/readyz`, then killed; answers its stderr.
fn serve_once(cfg: &Path, dir: &Path, env: &[(&str, &str)]) -> Result<(), String> {
    let log = dir.join("serve.log");
    let mut child = renkei()
        .envs(env.iter().copied())
        .args(["serve", "--config"])
        .arg(cfg)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = match listen_address(&mut child, &log, Duration::from_secs(20)) {
        Ok(addr) => addr,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let result = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("exited {status}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        }
        let ready = std::net::TcpStream::connect(addr.as_str()).ok().and_then(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.0 200").then_some(())
        });
        if ready.is_some() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err("not ready in time".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn serve_seals_the_config_with_a_0600_key_file_and_rotate_key_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("renkei.yaml");
    let text = format!(
        "server: {{ admin_token: \"literal-admin-s3cr3t\" }}\nstorage: \"sqlite://{}\"\nsources:\n  in: {{}}\n",
        dir.path().join("renkei.db").display()
    );
    std::fs::write(&cfg, &text).unwrap();
    serve_once(&cfg, dir.path(), &[]).unwrap();
    let key_file = dir.path().join("renkei.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let first_key = std::fs::read_to_string(&key_file).unwrap();
    assert!(!contains(&stored_bytes(dir.path()), "literal-admin-s3cr3t"), "the config is sealed at rest");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains(first_key.trim()), "the key is never logged");

    let (code, out, err) = run(&["rotate-key", "--config", cfg.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("re-encrypted 1 config revision(s)"), "{err}");
    let second_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(first_key, second_key);
    assert!(!out.contains(second_key.trim()) && !err.contains(second_key.trim()), "the key is never printed");
    assert!(!dir.path().join("renkei.key.new").exists());

    // Started again with the new key: the same config is recognised (opened, compared), nothing new stored.
    serve_once(&cfg, dir.path(), &[]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("renkei.db").display());
    let (revisions, key_id) = rt.block_on(async {
        let store = renkei_store::sqlite::SqliteStore::open_beside(&url).await.unwrap();
        let revs = renkei_store::Store::config_revisions(&store).await.unwrap();
        (revs.len(), secrets::sealed_by(&revs[0].text).unwrap().to_owned())
    });
    assert_eq!(revisions, 1);
    assert_eq!(key_id, MasterKey::from_base64(&second_key).unwrap().id());

    // Another key (a node given the wrong one) is stopped before it writes anything.
    let wrong = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let e = serve_once(&cfg, dir.path(), &[(secrets::KEY_ENV, wrong)]).unwrap_err();
    assert!(e.contains("sealed with master key") && !e.contains(wrong), "{e}");
}

/// `renkei token` and `renkei user` over the API: an admin makes a token (shown once, then usable), lists and
/// revokes it; users are added with a password and removed; an editor may do none of it; all is audited.
#[tokio::test]
async fn tokens_and_users_are_managed_through_the_api_by_admins() {
    let app = spawn_app("sources:\n  in: {}\n").await;
    let editor = token(&app, "ed", "editor", None).await;
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<serde_json::Value>| {
        let mut req = app.http.request(method, app.url(&format!("/api/v1{path}"))).bearer_auth(token.to_owned());
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let made =
        send(reqwest::Method::POST, "/tokens", ADMIN, Some(json!({"name": "ci", "role": "viewer", "expires": "30d"})))
            .await;
    assert_eq!(made.0, 201, "{}", made.1);
    let made: serde_json::Value = serde_json::from_str(&made.1).unwrap();
    let ci = made["token"].as_str().unwrap().to_owned();
    assert!(ci.starts_with("rk_"));
    assert_eq!(send(reqwest::Method::GET, "/events", &ci, None).await.0, 200, "the new token works");
    assert_eq!(send(reqwest::Method::GET, "/tokens", &ci, None).await.0, 403, "a viewer lists no tokens");
    let list = send(reqwest::Method::GET, "/tokens", ADMIN, None).await.1;
    assert!(list.contains("\"ci\"") && !list.contains(&ci), "listed, never shown again: {list}");
    let dup = send(reqwest::Method::POST, "/tokens", ADMIN, Some(json!({"name": "ci", "role": "admin"}))).await;
    assert_eq!(dup.0, 409);
    let bad = send(reqwest::Method::POST, "/tokens", ADMIN, Some(json!({"name": "x", "role": "root"}))).await;
    assert_eq!(bad.0, 400);
    assert_eq!(
        send(reqwest::Method::POST, "/tokens", &editor, Some(json!({"name": "mine", "role": "admin"}))).await.0,
        403
    );
    assert_eq!(send(reqwest::Method::DELETE, "/tokens/ci", ADMIN, None).await.0, 204);
    assert_eq!(send(reqwest::Method::GET, "/events", &ci, None).await.0, 401, "revoked");
    assert_eq!(send(reqwest::Method::DELETE, "/tokens/ci", ADMIN, None).await.0, 404);

    let short = send(
        reqwest::Method::POST,
        "/users",
        ADMIN,
        Some(json!({"name": "sato", "role": "editor", "password": "short"})),
    )
    .await;
    assert_eq!(short.0, 400);
    let password = "correct horse battery staple";
    let added = send(
        reqwest::Method::POST,
        "/users",
        ADMIN,
        Some(json!({"name": "sato", "role": "editor", "password": password})),
    )
    .await;
    assert_eq!(added.0, 201, "{}", added.1);
    let users = send(reqwest::Method::GET, "/users", ADMIN, None).await.1;
    assert!(users.contains("\"sato\"") && !users.contains(password) && !users.contains("argon2"), "{users}");
    assert_eq!(send(reqwest::Method::DELETE, "/users/sato", ADMIN, None).await.0, 204);

    let audit = app.api("/audit?actor=admin_token").await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["user.removed", "user.added", "token.revoked", "token.created"]);
    assert!(!audit.to_string().contains(password) && !audit.to_string().contains(&ci));
}

/// The process's own log, at the most verbose level, after a run that used every kind of secret: a source
/// token (in the header and in `?token=`), Basic credentials, a destination's bearer token and a literal
/// API-key header, a destination that refuses them, a sender with a wrong token, a config edit through the
/// API. None of the secrets may appear in it.
#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    const SOURCE_TOKEN: &str = "src-tok-5d1c8e0f";
    const BASIC_PASSWORD: &str = "basic-pw-77a1b2";
    const BEARER: &str = "dest-bearer-9f3e2a";
    const API_KEY: &str = "x-api-key-c4d5e6";
    const ADMIN_TOKEN: &str = "admin-tok-0a9b8c7d";
    let rx = Receiver::start().await;
    rx.answer_by_default(Reply::json(503, json!({"error": "bad token", "echo": BEARER})));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("renkei.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"
storage: "sqlite://{db}"
server: {{ admin_token: "{ADMIN_TOKEN}" }}
network: {{ allow_private: ["127.0.0.0/8"], allow_http: true }}
worker: {{ poll: 20ms }}
sources:
  shop:
    auth: {{ token: "{SOURCE_TOKEN}" }}
  web:
    auth: {{ basic: {{ username: shop, password: "{BASIC_PASSWORD}" }} }}
destinations:
  crm:
    type: http
    base_url: "{rx}"
    auth: {{ bearer: "{BEARER}" }}
    headers: {{ X-Api-Key: "{API_KEY}" }}
flows:
  orders:
    source: shop
    retry: {{ max_attempts: 2, initial: 10ms, max: 10ms }}
    steps: [ {{ to: crm, path: "/orders?key={API_KEY}", body: {{ id: "{{{{ body.id }}}}" }} }} ]
"#,
            db = dir.path().join("renkei.db").display(),
            rx = rx.url
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = renkei()
        .env("RUST_LOG", "trace")
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://{}", listen_address(&mut child, &log, Duration::from_secs(20)).unwrap());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        let exited = child.try_wait().unwrap().is_some();
        assert!(
            !exited && Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hook = format!("{base}/hooks/shop");
    let r = http.post(&hook).header("x-renkei-token", SOURCE_TOKEN).json(&json!({"id": 1})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = http.post(format!("{hook}?token={SOURCE_TOKEN}")).json(&json!({"id": 2})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let web = format!("{base}/hooks/web");
    let r = http.post(&web).basic_auth("shop", Some(BASIC_PASSWORD)).json(&json!({"id": 3})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = http.post(&web).basic_auth("shop", Some("nope")).json(&json!({"id": 3})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&hook).header("x-renkei-token", SOURCE_TOKEN).json(&json!({"id": 3})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let r = http.post(&hook).header("x-renkei-token", "wrong").json(&json!({"id": 4})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Three deliveries, two tries each, all refused with the bearer echoed back.
    rx.wait_for(6).await;
    let flow = http.get(format!("{base}/api/v1/config/flows/orders")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let flow: serde_json::Value = flow.json().await.unwrap();
    let edited = flow["text"].as_str().unwrap().replace("max_attempts: 2", "max_attempts: 3");
    let r = http
        .put(format!("{base}/api/v1/config/flows/orders"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "text": edited }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if deliveries_with(&http, &base, ADMIN_TOKEN, "dead").await == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 50, "trace logging was on: {text}");
    assert!(text.contains("sqlx::query") && text.contains("hyper"), "the libraries' own debug lines are in it too");
    assert!(!text.contains('\u{1b}'), "no terminal colours in a log written to a file");
    for secret in [SOURCE_TOKEN, BASIC_PASSWORD, BEARER, API_KEY, ADMIN_TOKEN] {
        let at: Vec<&str> = text.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(at.is_empty(), "{secret} is in the log:\n{}", at.join("\n"));
    }
}
