//! The live config: reading it without secrets, editing items and the whole text through the API (roles,
//! validation with lines, stale edits refused), edits running at once, surviving a restart, and reaching a
//! node that did not make them.

use renkei_core::config::edit;
use serde_json::{json, Value};

use crate::access::token;
use crate::harness::*;

fn config(rx: &str) -> String {
    format!(
        r#"
# Orders from the shop.
sources:
  shop:
    auth: {{ token: shop-inbound-s3cret }}
destinations:
  crm:
    type: http
    base_url: "{rx}"
    auth: {{ bearer: crm-outbound-s3cret }}
flows:
  orders:
    source: shop
    steps:
      - to: crm
        path: /orders
        body: {{ id: "{{{{ body.id }}}}" }}
"#
    )
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(&format!("/api/v1{path}"))).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.header("accept-language", "ja").send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    send(app, reqwest::Method::PUT, path, token, Some(body)).await
}

async fn order(app: &TestApp, id: &str) -> u16 {
    let r = app
        .http
        .post(app.url("/hooks/shop"))
        .header("x-renkei-token", "shop-inbound-s3cret")
        .json(&json!({ "id": id, "total": 1200 }))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn an_edited_flow_runs_at_once_and_after_a_restart() {
    let rx = Receiver::start().await;
    let app = spawn_app(&config(&rx.url)).await;
    let shown = app.api("/config").await;
    let text = shown["text"].as_str().unwrap();
    assert!(!text.contains("s3cret") && text.contains("[REDACTED]"), "{text}");
    assert!(text.contains("# Orders from the shop."), "comments are kept");
    let first = shown["revision"].as_i64().unwrap();

    let item = app.api("/config/flows/orders").await;
    let value = item["text"].as_str().unwrap().replace("path: /orders", "path: /v2/orders");
    let value = value
        .replace("body: { id: \"{{ body.id }}\" }", "body: { id: \"{{ body.id }}\", total: \"{{ body.total }}\" }");
    let (status, body) = put(&app, "/config/flows/orders", ADMIN, json!({ "text": value, "base": first })).await;
    assert_eq!(status, 200, "{body}");
    let second = body["revision"].as_i64().unwrap();
    assert!(second > first);
    assert_eq!(app.app.revision(), second, "runs on this node at once");

    assert_eq!(order(&app, "A-1").await, 202);
    app.drain().await;
    let got = rx.received();
    assert_eq!(got[0].path, "/v2/orders");
    assert_eq!(got[0].json(), json!({ "id": "A-1", "total": 1200 }));
    assert_eq!(got[0].headers["authorization"], "Bearer crm-outbound-s3cret", "the masked secret was kept");

    // Restarted with the same file: the edit is the newest revision and still runs.
    let app = app.restart().await;
    assert_eq!(app.app.revision(), second);
    assert_eq!(order(&app, "A-2").await, 202);
    app.drain().await;
    assert_eq!(rx.received()[1].path, "/v2/orders");

    let revs = app.api("/config/revisions").await;
    let origins: Vec<&str> = revs["items"].as_array().unwrap().iter().map(|r| r["origin"].as_str().unwrap()).collect();
    assert_eq!(origins, ["api", "file"]);
    let audit = app.api("/audit?action=config.edit").await;
    assert_eq!(audit["items"][0]["target"], "flows/orders");
    assert_eq!(audit["items"][0]["actor"], "admin_token");
}

#[tokio::test]
async fn a_broken_edit_is_refused_with_its_lines_and_changes_nothing() {
    let rx = Receiver::start().await;
    let app = spawn_app(&config(&rx.url)).await;
    let before = app.app.revision();
    // A step to a destination there is not: the problem names it, with its line in the whole text.
    let bad = "source: shop\nsteps:\n  - to: nowhere\n";
    let (status, body) = put(&app, "/config/flows/orders", ADMIN, json!({ "text": bad })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["path"], "flows.orders.steps[0].to");
    assert_eq!(problems[0]["line"], 15, "the line of `- to: nowhere` once spliced in");
    assert!(problems.iter().all(|p| p["line"].as_u64().is_some()), "{problems:?}");
    assert!(problems.iter().any(|p| p["message"].as_str().unwrap().contains("nowhere")), "{problems:?}");
    assert_eq!(app.app.revision(), before);

    // A destination a flow uses cannot be deleted.
    let r = send(&app, reqwest::Method::DELETE, "/config/destinations/crm", ADMIN, None).await;
    assert_eq!(r.0, 422, "{}", r.1);
    // A mask on a line that changed cannot be given its secret back.
    let shown = app.api("/config/destinations/crm").await["text"].as_str().unwrap().to_owned();
    let changed = shown.replace("auth: { bearer: [REDACTED] }", "auth: { bearer: [REDACTED] }  # x\n");
    let changed = changed.replace("{ bearer: [REDACTED] }", "{ bearer: [REDACTED], basic: x }");
    let (status, body) = put(&app, "/config/destinations/crm", ADMIN, json!({ "text": changed })).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("secret_mask")), "{body}");
    assert_eq!(app.app.revision(), before);

    // An edit made from a revision that is no longer the newest.
    let ok = put(&app, "/config/tables/codes", ADMIN, json!({ "text": "key: k\nrows: [ { k: a, v: 1 } ]" })).await;
    assert_eq!(ok.0, 201, "{}", ok.1);
    let stale = put(&app, "/config/tables/codes", ADMIN, json!({ "text": "key: k\nrows: []", "base": before })).await;
    assert_eq!(stale.0, 409, "{}", stale.1);
    assert!(stale.1["error"]["message"].as_str().unwrap().contains("読み込み直して"), "answered in Japanese");
}

#[tokio::test]
async fn roles_decide_who_edits_what() {
    let rx = Receiver::start().await;
    let app = spawn_app(&config(&rx.url)).await;
    let viewer = token(&app, "v", "viewer", None).await;
    let editor = token(&app, "e", "editor", None).await;
    let flow = app.api("/config/flows/orders").await["text"].as_str().unwrap().to_owned();
    // A viewer reads (without secrets) and edits nothing.
    let (status, body) = send(&app, reqwest::Method::GET, "/config", &viewer, None).await;
    assert_eq!(status, 200);
    assert!(!body["text"].as_str().unwrap().contains("s3cret"));
    assert_eq!(put(&app, "/config/flows/orders", &viewer, json!({ "text": flow })).await.0, 403);
    // An editor edits flows and destinations, not sources, subscriptions or the whole text.
    assert_eq!(put(&app, "/config/flows/orders", &editor, json!({ "text": flow })).await.0, 200);
    let src = "auth: { token: new-token-1234 }";
    assert_eq!(put(&app, "/config/sources/shop", &editor, json!({ "text": src })).await.0, 403);
    let sub = json!({ "text": format!("url: {}/hook\nsource: shop", rx.url) });
    assert_eq!(put(&app, "/config/subscriptions/s", &editor, sub.clone()).await.0, 403);
    assert_eq!(put(&app, "/config", &editor, json!({ "text": "sources: {}" })).await.0, 403);
    assert_eq!(send(&app, reqwest::Method::GET, "/config/revisions", &editor, None).await.0, 403);
    // An admin manages subscriptions through the API: the new endpoint gets the next event.
    let (status, body) = put(&app, "/config/subscriptions/audit-copy", ADMIN, sub).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(order(&app, "B-1").await, 202);
    app.drain().await;
    let mut paths: Vec<String> = rx.received().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/hook", "/orders"]);
    let (status, _) = send(&app, reqwest::Method::DELETE, "/config/subscriptions/audit-copy", ADMIN, None).await;
    assert_eq!(status, 200);
    assert!(app.api("/config/subscriptions").await["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_whole_text_round_trips_with_its_secrets_masked() {
    let rx = Receiver::start().await;
    let app = spawn_app(&config(&rx.url)).await;
    let shown = app.api("/config").await["text"].as_str().unwrap().to_owned();
    let edited = shown.replace("path: /orders", "path: /whole");
    let (status, body) = put(&app, "/config", ADMIN, json!({ "text": edited })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(order(&app, "C-1").await, 202, "the source's masked token still opens it");
    app.drain().await;
    let got = &rx.received()[0];
    assert_eq!(got.path, "/whole");
    assert_eq!(got.headers["authorization"], "Bearer crm-outbound-s3cret");
}

#[tokio::test]
async fn a_revision_stored_elsewhere_reaches_this_node() {
    let rx = Receiver::start().await;
    let app = spawn_app(&config(&rx.url)).await;
    let running = app.app.loaded();
    // Another node (or `renkei apply`) stores a new revision.
    let text =
        edit::set_item(&running.text, "flows", "orders", "source: shop\nsteps: [ { to: crm, path: /elsewhere } ]")
            .unwrap();
    let audit = renkei_store::NewAudit {
        at: t0(),
        actor: "cli".into(),
        action: "config.apply".into(),
        target: "config".into(),
        detail: json!({}),
    };
    let id = app.app.store.add_config_revision(&app.key.seal(&text), "apply", t0(), None, audit).await.unwrap();
    assert_eq!(renkei::live::reload(&app.app).await.unwrap(), Some(id));
    assert_eq!(renkei::live::reload(&app.app).await.unwrap(), None, "nothing newer");
    assert_eq!(order(&app, "D-1").await, 202);
    app.drain().await;
    assert_eq!(rx.received()[0].path, "/elsewhere");

    // A revision that does not load on this node is refused once, and the node keeps running what it ran.
    let broken = text.replace("to: crm", "to: missing");
    let audit = renkei_store::NewAudit {
        at: t0(),
        actor: "cli".into(),
        action: "x".into(),
        target: String::new(),
        detail: json!({}),
    };
    app.app.store.add_config_revision(&app.key.seal(&broken), "apply", t0(), None, audit).await.unwrap();
    let e = renkei::live::reload(&app.app).await.unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains(&format!("keeps running revision {id}")), "{e}");
    assert_eq!(renkei::live::reload(&app.app).await.unwrap(), None, "not tried again");
    assert_eq!(app.app.revision(), id);
}
