//! Health, readiness, metrics, the OpenAPI document and the admin API's guard.

use serde_json::json;

use crate::harness::*;

const CFG: &str = "sources:\n  in: {}\n";

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app(CFG).await;
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.http.get(app.url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn metrics_count_events_and_show_the_queue() {
    let app = spawn_app(CFG).await;
    app.post_json("/hooks/in", json!({})).await;
    app.post("/hooks/in", "application/json", "{").await;
    app.post("/hooks/random-name", "application/json", "{}").await;
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"renkei_events_received_total{source="in",outcome="accepted"} 1"#), "{text}");
    assert!(text.contains(r#"renkei_events_received_total{source="in",outcome="malformed_body"} 1"#), "{text}");
    assert!(text.contains(r#"source="_unknown""#), "unknown source names do not become labels: {text}");
    assert!(!text.contains("random-name"));
    assert!(text.contains(r#"renkei_queue_depth{status="pending"} 0"#), "{text}");
    assert!(text.contains("renkei_queue_oldest_age_seconds"), "{text}");
}

#[tokio::test]
async fn admin_api_needs_the_token() {
    let app = spawn_app(CFG).await;
    let r = app.http.get(app.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = app.http.get(app.url("/api/v1/events")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The OpenAPI document is public.
    let r = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let app = spawn_app(CFG).await;
    let doc: serde_json::Value =
        app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    // Every route the API's router declares (read from its source, so a new route cannot be forgotten here).
    let api = include_str!("../../src/server/api.rs");
    let declared: Vec<String> = api
        .split(".route(\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .map(|p| if p == "/openapi.json" { "/api/v1/openapi.json".to_owned() } else { format!("/api/v1{p}") })
        .collect();
    assert!(declared.len() >= 20, "the routes were found: {declared:?}");
    for p in declared.iter().map(String::as_str).chain(["/hooks/{source}", "/healthz", "/readyz", "/metrics"]) {
        assert!(paths.contains_key(p), "{p} missing from openapi.json");
    }
}

#[tokio::test]
async fn listings_filter_and_page() {
    let app = spawn_app(CFG).await;
    for i in 0..5 {
        app.post_json("/hooks/in", json!({"n": i, "name": if i == 3 { "目印" } else { "x" }})).await;
    }
    let page1 = app.api("/events?limit=2").await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["items"][0]["body"]["n"], 4, "newest first");
    let cursor = page1["next_before"].as_str().unwrap();
    let page2 = app.api(&format!("/events?limit=2&before={cursor}")).await;
    assert_eq!(page2["items"][0]["body"]["n"], 2);
    let found = app.api("/events?q=%E7%9B%AE%E5%8D%B0").await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["body"]["n"], 3);
    let since = app.api("/events?since=2030-01-01T00:00:00Z").await;
    assert!(since["items"].as_array().unwrap().is_empty());
    let r = app.http.get(app.url("/api/v1/deliveries?status=bogus")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    for bad in ["/api/v1/events?colour=red", "/api/v1/events?limit=many", "/api/v1/events?since=yesterday"] {
        let r = app.http.get(app.url(bad)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{bad}: {v}");
    }
}

#[tokio::test]
async fn queue_figures() {
    let rx = Receiver::start().await;
    let cfg = format!("sources:\n  in: {{}}\ndestinations:\n  d: {{ type: http, base_url: \"{}\" }}\nflows:\n  f: {{ source: in, steps: [ {{ to: d }} ] }}\n", rx.url);
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({})).await;
    let q = app.api("/queue").await;
    assert_eq!(q["pending"], 1);
    app.drain().await;
    let q = app.api("/queue").await;
    assert_eq!(q["pending"], 0);
    assert!(q["oldest_open_at"].is_null());
}
