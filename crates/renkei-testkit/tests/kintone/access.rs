//! Access: authentication and authorization failures of each kind, the Basic-auth proxy, who may set built-in
//! fields; limits and faults: the concurrency limit observed through the hold/release gate and the in-flight
//! counters (no sleeps), injected failures, the limit/offset caps and query errors.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use renkei_testkit::kintone::{FakeKintone, Rights};
use serde_json::json;

use super::{call, fake_with_app, query, send, TOKEN};

fn password(login: &str, password: &str) -> String {
    STANDARD.encode(format!("{login}:{password}"))
}

fn add_body() -> serde_json::Value {
    json!({ "app": 1, "record": { "title": { "value": "A" } } })
}

#[tokio::test]
async fn no_credentials_is_cb_au01() {
    let fake = fake_with_app().await;
    let answer = send(&fake, "GET", "/k/v1/records.json?app=1", &[], None).await;
    assert_eq!((answer.status, answer.code()), (401, "CB_AU01"));
    let bearer = send(&fake, "GET", "/k/v1/records.json?app=1", &[("Authorization", "Bearer x")], None).await;
    assert_eq!(bearer.code(), "CB_AU01", "OAuth is not modelled");
}

#[tokio::test]
async fn password_users_are_checked() {
    let fake = fake_with_app().await;
    fake.set_password_user("sato", "secret");
    let good = password("sato", "secret");
    let ok =
        send(&fake, "POST", "/k/v1/record.json", &[("X-Cybozu-Authorization", good.as_str())], Some(&add_body())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(fake.records(1)[0]["作成者"]["value"]["code"], "sato");

    for wrong in [password("sato", "nope"), password("suzuki", "secret"), "not base64!".to_string()] {
        let refused =
            send(&fake, "GET", "/k/v1/records.json?app=1", &[("X-Cybozu-Authorization", wrong.as_str())], None).await;
        assert_eq!((refused.status, refused.code()), (401, "CB_WA01"), "{wrong}");
    }
    let headers = [("X-Cybozu-Authorization", good.as_str()), ("X-Cybozu-API-Token", "unknown")];
    let both = send(&fake, "GET", "/k/v1/records.json?app=1", &headers, None).await;
    assert_eq!(both.status, 200, "the password wins over tokens");
}

#[tokio::test]
async fn tokens_must_exist_and_belong_to_the_app() {
    let fake = fake_with_app().await;
    fake.add_app(2, super::fields()).add_token("tok-app2", Rights::RECORDS);
    let with = |token: &'static str| [("X-Cybozu-API-Token", token)];
    let unknown = send(&fake, "GET", "/k/v1/records.json?app=1", &with("bogus"), None).await;
    assert_eq!((unknown.status, unknown.code()), (400, "GAIA_IA02"));
    let other_app = send(&fake, "GET", "/k/v1/records.json?app=1", &with("tok-app2"), None).await;
    assert_eq!((other_app.status, other_app.code()), (400, "GAIA_IA02"));
    let one_bad = send(&fake, "GET", "/k/v1/records.json?app=1", &with("tok-app1,bogus"), None).await;
    assert_eq!(one_bad.code(), "GAIA_IA02");

    let list = send(&fake, "GET", "/k/v1/records.json?app=1", &with("tok-app2, tok-app1"), None).await;
    assert_eq!(list.status, 200, "one token of the app is enough: {}", list.body);
    fake.add_token(1, "tok-app1-view", Rights::VIEW);
    let twice = send(&fake, "GET", "/k/v1/records.json?app=1", &with("tok-app1,tok-app1-view"), None).await;
    assert_eq!((twice.status, twice.code()), (400, "GAIA_DA03"));
}

#[tokio::test]
async fn tokens_need_the_right_for_the_call() {
    let fake = fake_with_app().await;
    fake.add_token(1, "tok-view", Rights::VIEW);
    let headers = [("X-Cybozu-API-Token", "tok-view")];
    assert_eq!(send(&fake, "GET", "/k/v1/records.json?app=1", &headers, None).await.status, 200);
    let add = send(&fake, "POST", "/k/v1/record.json", &headers, Some(&add_body())).await;
    assert_eq!((add.status, add.code()), (403, "GAIA_NO01"));
    assert_eq!(add.body["message"], "このAPIトークンでは、指定したAPIを実行できません。");
    let delete = send(&fake, "DELETE", "/k/v1/records.json?app=1&ids[0]=1", &headers, None).await;
    assert_eq!(delete.code(), "GAIA_NO01");

    fake.add_token(1, "tok-edit", Rights { view: true, edit: true, ..Rights::default() });
    let upsert = json!({ "app": 1, "upsert": true, "records": [{ "updateKey": { "field": "title", "value": "A" }, "record": {} }] });
    let refused = send(&fake, "PUT", "/k/v1/records.json", &[("X-Cybozu-API-Token", "tok-edit")], Some(&upsert)).await;
    assert_eq!(refused.code(), "GAIA_NO01", "an upsert may insert, so it needs the add right too");
    assert!(fake.records(1).is_empty());
}

#[tokio::test]
async fn basic_auth_proxy_comes_first() {
    let fake = fake_with_app().await;
    fake.require_basic("proxy", "pw");
    let without = call(&fake, "GET", "/k/v1/records.json?app=1", None).await;
    assert_eq!(without.status, 401);
    assert!(without.header("www-authenticate").starts_with("Basic"));
    assert!(without.body.is_string(), "the proxy answers HTML, not kintone JSON: {}", without.body);

    let basic = format!("Basic {}", password("proxy", "pw"));
    let wrong = format!("Basic {}", password("proxy", "bad"));
    let refused = send(
        &fake,
        "GET",
        "/k/v1/records.json?app=1",
        &[("Authorization", wrong.as_str()), ("X-Cybozu-API-Token", TOKEN)],
        None,
    )
    .await;
    assert_eq!((refused.status, refused.code()), (401, ""));
    let ok = send(
        &fake,
        "GET",
        "/k/v1/records.json?app=1",
        &[("Authorization", basic.as_str()), ("X-Cybozu-API-Token", TOKEN)],
        None,
    )
    .await;
    assert_eq!(ok.status, 200);
    let no_kintone_auth =
        send(&fake, "GET", "/k/v1/records.json?app=1", &[("Authorization", basic.as_str())], None).await;
    assert_eq!((no_kintone_auth.status, no_kintone_auth.code()), (401, "CB_AU01"));
}

#[tokio::test]
async fn missing_apps_and_records() {
    let fake = fake_with_app().await;
    let app = call(&fake, "GET", "/k/v1/records.json?app=42", None).await;
    assert_eq!((app.status, app.code()), (404, "GAIA_AP01"));
    let record = call(&fake, "GET", "/k/v1/record.json?app=1&id=5", None).await;
    assert_eq!((record.status, record.code()), (404, "GAIA_RE01"));
    let no_app = call(&fake, "GET", "/k/v1/records.json", None).await;
    assert_eq!(no_app.code(), "CB_VA01");
    no_app.messages("app");
    let elsewhere = call(&fake, "GET", "/k/v1/app.json?id=1", None).await;
    assert_eq!((elsewhere.status, elsewhere.code()), (404, "FAKE_UNSUPPORTED"));
}

#[tokio::test]
async fn only_admins_set_built_in_fields_when_adding() {
    let fake = fake_with_app().await;
    let body = json!({ "app": 1, "record": {
        "title": { "value": "A" },
        "作成者": { "value": { "code": "yamada" } },
        "作成日時": { "value": "2020-01-02T03:04:00+09:00" }
    } });
    let refused = call(&fake, "POST", "/k/v1/record.json", Some(&body)).await;
    assert_eq!((refused.status, refused.code()), (403, "CB_NO02"));
    assert!(fake.records(1).is_empty());

    fake.add_token(1, "tok-admin", Rights::ALL);
    let ok = send(&fake, "POST", "/k/v1/record.json", &[("X-Cybozu-API-Token", "tok-admin")], Some(&body)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let rec = &fake.records(1)[0];
    assert_eq!(rec["作成者"]["value"], json!({ "code": "yamada", "name": "yamada" }));
    assert_eq!(rec["作成日時"]["value"], "2020-01-01T18:04:00Z");
    assert_eq!(rec["更新者"]["value"]["code"], "Administrator");

    let later = json!({ "app": 1, "id": 1, "record": { "作成者": { "value": { "code": "x" } }, "レコード番号": { "value": "9" } } });
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&later)).await.status, 200);
    let rec = &fake.records(1)[0];
    assert_eq!(rec["作成者"]["value"]["code"], "yamada", "ignored on update");
    assert_eq!(rec["レコード番号"]["value"], "1", "read-only, ignored");
}

/// Waits for `n` requests in flight; a broken gate must fail the test, not hang it.
async fn in_flight(fake: &FakeKintone, n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(10), fake.wait_for_in_flight(n)).await;
    assert!(waited.is_ok(), "{n} requests never were in flight at once (now {})", fake.in_flight());
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_get_429() {
    let fake = fake_with_app().await;
    fake.set_concurrency_limit(2);
    fake.hold_requests();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let fake = fake.clone();
            tokio::spawn(async move { call(&fake, "GET", "/k/v1/records.json?app=1", None).await })
        })
        .collect();
    in_flight(&fake, 2).await;

    // Were the limit not enforced, this request would wait at the gate: bound it so the test fails instead.
    let third = tokio::time::timeout(Duration::from_secs(10), call(&fake, "GET", "/k/v1/records.json?app=1", None))
        .await
        .expect("a request over the limit is answered at once, not held");
    assert_eq!((third.status, third.code()), (429, "GAIA_TO04"));
    assert_eq!(third.header("x-concurrencylimit-limit"), "2");
    assert_eq!(third.header("x-concurrencylimit-running"), "3");
    assert_eq!(fake.in_flight(), 2, "the refused request is done, the held ones are not");

    fake.release_requests();
    for task in held {
        let answer = task.await.expect("request task");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-concurrencylimit-limit"), "2");
    }
    assert_eq!(fake.max_in_flight(), 2, "refused requests do not count as admitted");
    assert_eq!(fake.in_flight(), 0);
}

#[tokio::test]
async fn the_gate_makes_client_concurrency_observable() {
    let fake = fake_with_app().await;
    let free = call(&fake, "GET", "/k/v1/records.json?app=1", None).await;
    assert_eq!((free.header("x-concurrencylimit-limit"), free.header("x-concurrencylimit-running")), ("100", "1"));
    assert_eq!(fake.max_in_flight(), 1);

    fake.hold_requests();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let fake = fake.clone();
            let body = json!({ "app": 1, "record": { "title": { "value": format!("t{i}") } } });
            tokio::spawn(async move { call(&fake, "POST", "/k/v1/record.json", Some(&body)).await })
        })
        .collect();
    in_flight(&fake, 5).await;
    assert_eq!(fake.in_flight(), 5);
    assert!(fake.records(1).is_empty(), "held requests are not handled yet");
    fake.release_requests();
    for task in tasks {
        assert_eq!(task.await.expect("request task").status, 200);
    }
    assert_eq!(fake.records(1).len(), 5);
    assert_eq!(fake.max_in_flight(), 5);
}

#[tokio::test]
async fn injected_failures_come_in_order_then_stop() {
    let fake = fake_with_app().await;
    fake.fail_next(1, 429, "GAIA_TO04");
    fake.fail_next(2, 500, "GAIA_UN01");
    fake.fail_next(1, 400, "GAIA_DA02");
    let body = json!({ "app": 1, "record": { "title": { "value": "A" } } });
    let mut seen = Vec::new();
    for _ in 0..5 {
        let answer = call(&fake, "POST", "/k/v1/record.json", Some(&body)).await;
        seen.push((answer.status, answer.code().to_string()));
    }
    let expected = [(429, "GAIA_TO04"), (500, "GAIA_UN01"), (500, "GAIA_UN01"), (400, "GAIA_DA02"), (200, "")];
    assert_eq!(seen, expected.map(|(s, c)| (s, c.to_string())));
    assert_eq!(fake.records(1).len(), 1, "failed requests wrote nothing");
    assert_eq!(fake.requests().len(), 5, "failed requests are recorded too");
}

#[tokio::test]
async fn limit_and_offset_are_capped() {
    let fake = fake_with_app().await;
    let get = |q: &str| format!("/k/v1/records.json?app=1&{}", query(q));
    assert_eq!(call(&fake, "GET", &get("limit 500"), None).await.status, 200);
    let over = call(&fake, "GET", &get("limit 501"), None).await;
    assert_eq!((over.status, over.code()), (400, "GAIA_QU01"));
    assert_eq!(call(&fake, "GET", &get("order by $id asc offset 10000"), None).await.status, 200);
    let over = call(&fake, "GET", &get("offset 10001"), None).await;
    assert_eq!((over.status, over.code()), (400, "GAIA_QU02"));
}

#[tokio::test]
async fn query_mistakes_get_kintones_errors() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "A" }, "kind": { "value": "A" }, "note": { "value": "hello" } }));
    let get = |q: &str| format!("/k/v1/records.json?app=1&{}", query(q));
    let syntax = call(&fake, "GET", &get(r#"title = "#), None).await;
    assert_eq!((syntax.status, syntax.code()), (400, "CB_VA01"));
    assert_eq!(syntax.messages("query"), vec!["クエリ記法が間違っています。"]);
    let unknown = call(&fake, "GET", &get(r#"nope = "a""#), None).await;
    assert_eq!((unknown.status, unknown.code()), (400, "GAIA_IQ11"));
    let wrong_op = call(&fake, "GET", &get(r#"kind = "A""#), None).await;
    assert_eq!((wrong_op.status, wrong_op.code()), (400, "GAIA_IQ03"));
    assert_eq!(call(&fake, "GET", &get(r#"title > "A""#), None).await.code(), "GAIA_IQ03");
    assert_eq!(call(&fake, "GET", &get("due = TODAY()"), None).await.code(), "CB_VA01", "functions are not modelled");

    let listed = call(&fake, "GET", &get(r#"kind in ("A", "B") and note like "ELL""#), None).await;
    assert_eq!(listed.body["records"].as_array().map(Vec::len), Some(1), "{}", listed.body);
    let none = call(&fake, "GET", &get(r#"kind not in ("A")"#), None).await;
    assert_eq!(none.body["records"], json!([]));
}
