//! Signed and verified webhooks: Standard Webhooks and HMAC inbound (with replay protection), IP
//! allow-lists, the sender callback (Shopらん), and signed subscriptions outbound.

use std::time::Duration;

use renkei_core::signing::{hmac_digest, standard_sign, standard_verify, Algorithm, DigestEncoding};
use serde_json::json;

use crate::harness::*;

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn post_signed(app: &TestApp, path: &str, id: &str, ts: i64, sig: &str, body: &str) -> Answer {
    let r = app
        .http
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    Answer { status: r.status().as_u16(), text: r.text().await.unwrap() }
}

#[tokio::test]
async fn standard_webhooks_inbound_with_tolerance_and_replay_protection() {
    let cfg = format!(
        "sources:\n  signed:\n    auth: {{ standard_webhooks: {{ secrets: [\"{WHSEC}\"], tolerance: 5m }} }}\n"
    );
    let app = spawn_app(&cfg).await;
    let now = t0().timestamp();
    let body = r#"{"order": 1}"#;
    let sig = standard_sign(WHSEC, "msg_1", now, body.as_bytes()).unwrap();
    let first = post_signed(&app, "/hooks/signed", "msg_1", now, &sig, body).await;
    assert_eq!(first.status, 202);
    // The same request captured and sent again: recognised, not run twice.
    let replay = post_signed(&app, "/hooks/signed", "msg_1", now, &sig, body).await;
    assert_eq!(replay.json()["duplicate"], true);
    // Tampered body, wrong secret, stale timestamp: refused and recorded.
    assert_eq!(post_signed(&app, "/hooks/signed", "msg_2", now, &sig, r#"{"order": 2}"#).await.status, 401);
    let stale_ts = now - 301;
    let stale = standard_sign(WHSEC, "msg_3", stale_ts, body.as_bytes()).unwrap();
    let r = post_signed(&app, "/hooks/signed", "msg_3", stale_ts, &stale, body).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("outside the allowed window"), "{}", r.text);
    let rejected = app.api("/events?status=rejected").await;
    assert_eq!(rejected["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn hmac_signatures_github_style() {
    let cfg = "sources:\n  gh:\n    auth: { hmac: { header: X-Hub-Signature-256, secret: \"${GH_SECRET}\", prefix: \"sha256=\" } }\n";
    let app = spawn_app_env(cfg, &[("GH_SECRET", "It's a Secret to Everybody")]).await;
    let body = "Hello, World!";
    // GitHub's documented example signature for this secret and body.
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        hmac_digest(Algorithm::Sha256, b"It's a Secret to Everybody", body.as_bytes(), DigestEncoding::Hex),
        &sig[7..]
    );
    let send = |sig: &'static str| {
        app.http
            .post(app.url("/hooks/gh"))
            .header("x-hub-signature-256", sig)
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };
    assert_eq!(send(sig).await.unwrap().status(), 202);
    assert_eq!(send("sha256=00").await.unwrap().status(), 401);
    let again = send(sig).await.unwrap().json::<serde_json::Value>().await.unwrap();
    assert_eq!(again["duplicate"], true, "a replayed signature is a duplicate");
    let stored = app.api("/events?status=rejected").await.to_string();
    assert!(!stored.contains("It's a Secret"), "the secret is never stored");
}

#[tokio::test]
async fn ip_allow_lists() {
    let cfg = "sources:\n  office: { auth: { ip_allow: [\"10.0.0.0/8\"] } }\n  local: { auth: { ip_allow: [\"127.0.0.1\"] } }\n";
    let app = spawn_app(cfg).await;
    let r = app.post_json("/hooks/office", json!({})).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "address_not_allowed");
    assert_eq!(app.post_json("/hooks/local", json!({})).await.status, 202);
}

#[tokio::test]
async fn shopran_token_is_confirmed_by_calling_the_sender_back() {
    let shop = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  shopran:
    verify:
      url: "{}/h2/STRSessionManipurator.do"
      form: {{ func: validateWebhookToken, key: "${{SHOPRAN_API_KEY}}", token: "{{{{ body.token }}}}" }}
      valid_when: "response.status == 200 and response.body.result == 'OK'"
    event_type: "{{{{ body.event }}}}"
"#,
        shop.url
    );
    let app = spawn_app_env(&cfg, &[("SHOPRAN_API_KEY", "shop-api-key-123")]).await;
    shop.script([Reply::json(200, json!({"result": "OK"})), Reply::json(200, json!({"result": "NG"}))]);
    let notice = json!({"event": "PUBLISH", "token": "tok-1", "title": "お知らせ"});
    let ok = app.post_json("/hooks/shopran", notice.clone()).await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    let bad = app.post_json("/hooks/shopran", json!({"event": "PUBLISH", "token": "forged"})).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["code"], "not_confirmed");
    let calls = shop.received();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].path, "/h2/STRSessionManipurator.do");
    let form: Vec<(String, String)> = form_urlencoded::parse(&calls[0].body).into_owned().collect();
    assert_eq!(
        form,
        [
            ("func".into(), "validateWebhookToken".into()),
            ("key".into(), "shop-api-key-123".into()),
            ("token".into(), "tok-1".into())
        ]
    );
    let events = app.api("/events").await;
    assert_eq!(events["items"][0]["status"], "rejected");
    assert_eq!(events["items"][1]["event_type"], "PUBLISH");
    assert!(!events.to_string().contains("shop-api-key-123"));
}

#[tokio::test]
async fn subscriptions_are_signed_filtered_and_carry_url_credentials() {
    let chat = Receiver::start().await;
    let (scheme, host) = chat.url.split_once("://").unwrap();
    let cfg = format!(
        r#"
sources:
  shopran: {{ event_type: "{{{{ body.event }}}}" }}
subscriptions:
  store-chat:
    url: "{scheme}://bot:p%40ss@{host}/hooks/abc"
    source: shopran
    event_types: [PUBLISH, UPDATE]
    when: "body.priority >= 4"
    secret: "{WHSEC}"
"#
    );
    let app = spawn_app(&cfg).await;
    for (event, priority) in [("PUBLISH", 5), ("PUBLISH", 1), ("DELETE", 5), ("UPDATE", 4)] {
        app.post_json("/hooks/shopran", json!({"event": event, "priority": priority, "title": "重要なお知らせ"})).await;
    }
    app.drain().await;
    let got = chat.received();
    assert_eq!(got.len(), 2, "only PUBLISH and UPDATE with priority >= 4");
    for r in &got {
        assert_eq!(r.path, "/hooks/abc");
        assert_eq!(r.header("authorization"), Some("Basic Ym90OnBAc3M="), "bot:p@ss");
        let ok = standard_verify(
            &[WHSEC],
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
            t0().timestamp(),
            60,
        );
        assert_eq!(ok, Ok(()), "the receiver can verify the signature");
        assert_eq!(r.json()["data"]["title"], "重要なお知らせ");
    }
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(types, ["PUBLISH", "UPDATE"]);
    // The same message id on a retry; history masks the URL's password.
    let ds = app.api("/deliveries?flow=subscription-store-chat").await;
    let detail = app.delivery(ds["items"][0]["id"].as_i64().unwrap()).await;
    assert!(!detail.to_string().contains("p%40ss") && !detail.to_string().contains("p@ss"), "{detail}");
}

#[tokio::test]
async fn rotation_signs_with_old_and_new_secrets_until_the_old_expires() {
    let rx = Receiver::start().await;
    let old = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
    let cfg = format!(
        r#"
sources:
  in: {{}}
subscriptions:
  hook:
    url: "{}/in"
    source: in
    secrets: [ {{ secret: "{WHSEC}" }}, {{ secret: "{old}", until: "2026-11-23T00:00:00Z" }} ]
"#,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    let sig = rx.received()[0].header("webhook-signature").unwrap().to_owned();
    assert_eq!(sig.split(' ').count(), 2);
    app.advance(Duration::from_secs(86400));
    app.post_json("/hooks/in", json!({})).await;
    app.drain().await;
    let r = &rx.received()[1];
    assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 1);
    let now = t0().timestamp() + 86400;
    let verify = |secret: &str| {
        standard_verify(
            &[secret],
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
            now,
            60,
        )
    };
    assert_eq!(verify(WHSEC), Ok(()));
    assert!(verify(old).is_err(), "the old secret no longer signs");
}

#[tokio::test]
async fn a_flood_on_one_source_is_limited_and_does_not_starve_the_others() {
    let cfg = "sources:\n  noisy: { rate_limit: { per_second: 0.5, burst: 3 } }\n  quiet: {}\n";
    let app = spawn_app(cfg).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.post_json("/hooks/noisy", json!({})).await.status);
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429]);
    let r = app.http.post(app.url("/hooks/noisy")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // The other source is not affected, and refused requests are not stored.
    assert_eq!(app.post_json("/hooks/quiet", json!({})).await.status, 202);
    assert_eq!(app.api("/events").await["items"].as_array().unwrap().len(), 4);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"renkei_events_received_total{source="noisy",outcome="rate_limited"} 4"#), "{metrics}");
}

#[tokio::test]
async fn per_client_limits_and_slow_senders() {
    let cfg = "server: { rate_limit_per_client: { per_second: 0.5, burst: 2 }, read_timeout: 200ms }\nsources:\n  a: {}\n  b: {}\n";
    let app = spawn_app(cfg).await;
    assert_eq!(app.post_json("/hooks/a", json!({})).await.status, 202);
    assert_eq!(app.post_json("/hooks/b", json!({})).await.status, 202);
    assert_eq!(app.post_json("/hooks/a", json!({})).await.status, 429, "the address's budget is shared by sources");

    // A sender that announces a body and never sends it is answered 408 once the read timeout passes.
    let app = spawn_app("server: { read_timeout: 200ms }\nsources:\n  a: {}\n").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    sock.write_all(
        b"POST /hooks/a HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
}

/// An endpoint that fails every try for `disable_after` is disabled, through a config revision, and the admin
/// is told (audit log with why, dashboard); a healthy endpoint and one failing for less long are left alone.
#[tokio::test]
async fn a_subscription_failing_for_days_is_disabled_and_the_admin_told() {
    let down = Receiver::start().await;
    down.answer_by_default(Reply::status(500));
    let up = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  in: {{}}
subscriptions:
  gone:
    url: "{}/gone"
    source: in
    disable_after: 2d
    retry: {{ max_attempts: 100, initial: 1h, max: 6h }}
  fine:
    url: "{}/fine"
    source: in
    disable_after: 2d
"#,
        down.url, up.url
    );
    let app = spawn_app(&cfg).await;
    let check = || renkei::health::check_subscriptions(&app.app);
    // Day 0 to day 2: every try to `gone` fails, `fine` takes everything.
    for hour in 0..=49 {
        if hour % 12 == 0 {
            assert_eq!(app.post_json("/hooks/in", json!({ "hour": hour })).await.status(), 202);
        }
        app.drain().await;
        if hour == 24 {
            assert!(check().await.is_empty(), "a day of failures is not yet `disable_after`");
        }
        app.advance(Duration::from_secs(3600));
    }
    assert_eq!(check().await, ["gone"]);
    assert!(check().await.is_empty(), "disabled once");
    let loaded = app.app.loaded();
    assert!(!loaded.config.subscriptions["gone"].enabled);
    assert!(loaded.config.subscriptions["fine"].enabled);
    assert!(loaded.text.contains("enabled: false"), "written into the config as a revision");

    // Told: the audit log says who, since when and the last error; the dashboard lists it.
    let audit = app.api("/audit?action=subscription.disabled").await;
    let entry = &audit["items"][0];
    assert_eq!((entry["actor"].as_str(), entry["target"].as_str()), (Some("renkei"), Some("subscriptions/gone")));
    assert_eq!(entry["detail"]["why"]["failing_since"], json!(t0()));
    assert!(entry["detail"]["why"]["last_error"].as_str().unwrap().contains("500"), "{entry}");
    let v = crate::console::Visitor::new(&app);
    v.sign_in_as_admin().await;
    let dashboard = v.open("/console/").await.plain();
    assert!(dashboard.contains(r#"id="disabled-subscriptions""#) && dashboard.contains("HTTP 500"), "{dashboard}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("renkei_subscriptions_disabled_total{subscription=\"gone\"} 1"), "{metrics}");

    // No new deliveries to it; `fine` goes on.
    let before = down.received().len();
    let fine_before = up.received().len();
    app.post_json("/hooks/in", json!({ "after": true })).await;
    app.advance(Duration::from_secs(7 * 3600));
    app.drain().await;
    assert_eq!(up.received().len(), fine_before + 1);
    let disabled_at = t0() + chrono::Duration::hours(50);
    let to_gone = app.api("/deliveries?flow=subscription-gone&limit=500").await;
    let made: Vec<chrono::DateTime<chrono::Utc>> = to_gone["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["created_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(made.len(), 5, "the events of hours 0, 12, 24, 36 and 48 only");
    assert!(made.iter().all(|t| *t < disabled_at));
    // Deliveries already queued keep their retries (an admin may turn it back on before they run out).
    let retrying = app.api("/deliveries?flow=subscription-gone&status=retrying").await;
    assert_eq!(retrying["items"].as_array().unwrap().len(), 5);
    assert!(down.received().len() > before, "queued deliveries were tried again");
}
