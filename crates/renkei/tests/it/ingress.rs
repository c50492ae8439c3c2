//! `POST /hooks/{source}`: body formats, auth, errors, splitting, dedupe.

use serde_json::json;

use crate::harness::*;

fn config(receiver: &str) -> String {
    format!(
        r#"
sources:
  open: {{}}
  tokened:
    auth: {{ token: "${{HOOK_TOKEN}}" }}
  basic:
    auth: {{ basic: {{ username: shop, password: "${{HOOK_PASS}}" }} }}
  rakuraku:
    event_type: "{{{{ body.processType }}}}"
    dedupe: "{{{{ body.keyId }}}}:{{{{ body.processType }}}}"
  htdb-csv:
    format: csv
    csv: {{ encoding: shift_jis, split: rows }}
  csv-auto:
    csv: {{ split: rows }}
  json-rows:
    json: {{ split: rows }}
destinations:
  sink: {{ type: http, base_url: "{receiver}" }}
flows:
  csv-forward:
    source: htdb-csv
    steps:
      - to: sink
        path: "/customers/{{{{ row['顧客コード'] }}}}"
        body: {{ name: "{{{{ row['顧客名'] }}}}", row: "{{{{ event.row }}}}" }}
"#
    )
}

async fn app() -> (TestApp, Receiver) {
    let rx = Receiver::start().await;
    let app = spawn_app_env(&config(&rx.url), &[("HOOK_TOKEN", "s3cret-token"), ("HOOK_PASS", "p@ss-word")]).await;
    (app, rx)
}

async fn event(app: &TestApp, id: &str) -> serde_json::Value {
    app.api(&format!("/events/{id}")).await
}

#[tokio::test]
async fn json_object_and_array_are_one_event_each() {
    let (app, _) = app().await;
    let r = app.post_json("/hooks/open", json!({"a": 1, "名前": "山田"})).await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    let e = event(&app, &id).await;
    assert_eq!(e["body"], json!({"a": 1, "名前": "山田"}));
    assert_eq!(e["event_type"], "open", "without event_type the source name is the type");

    let r = app.post_json("/hooks/open", json!([1, 2, 3])).await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event(&app, &id).await["body"], json!([1, 2, 3]));
}

/// However a JSON body was written (spacing, escapes, a number's form), templates and the API see its value;
/// one written as renkei would write it is stored as it came (`Parsed::text`). A split body's rows and a
/// preset's reshaped body are stored as values (here, and with the kintone preset).
#[tokio::test]
async fn a_json_body_reads_as_its_value_however_it_was_written() {
    let (app, _) = app().await;
    let sent = "{ \"a\" : \"\\u3042\",\n  \"n\": 1.50, \"list\": [ 1 , 2 ] }\n";
    let r = app.post("/hooks/open", "application/json", sent).await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event(&app, &id).await["body"], json!({"a": "あ", "n": 1.5, "list": [1, 2]}));
    // A split array of one row is one event too, but its body is the row, not what was sent.
    let r = app.post("/hooks/json-rows", "application/json", "[ {\"x\": 1} ]").await;
    assert_eq!(r.status(), 207);
    let id = r.json()["events"][0]["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event(&app, &id).await["body"], json!({"x": 1}));
}

/// The history's search reads the stored bodies as text: an event whose sender escaped its characters
/// (`\u5c71\u7530`, as PHP's `json_encode` does) or its slashes is found by the characters themselves.
#[tokio::test]
async fn a_search_finds_an_event_by_characters_its_sender_escaped() {
    let (app, _) = app().await;
    let r =
        app.post("/hooks/open", "application/json", r#"{"name":"\u5c71\u7530","url":"https:\/\/example.jp\/a"}"#).await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    for q in ["%E5%B1%B1%E7%94%B0", "https%3A%2F%2Fexample.jp%2Fa"] {
        let found = app.api(&format!("/events?q={q}")).await;
        let ids: Vec<&str> = found["items"].as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids, vec![id.as_str()], "q={q}");
    }
}

#[tokio::test]
async fn json_array_splits_into_rows_when_asked() {
    let (app, _) = app().await;
    let r = app.post_json("/hooks/json-rows", json!([{"n": 1}, {"n": 2}])).await;
    assert_eq!(r.status(), 207);
    let v: serde_json::Value = r.json();
    let rows = v["events"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["row"], 2);
    let e = event(&app, rows[1]["event_id"].as_str().unwrap()).await;
    assert_eq!(e["body"], json!({"n": 2}));
    assert_eq!(e["row"], 2);
}

#[tokio::test]
async fn form_bodies_keep_repeated_keys_as_lists() {
    let (app, _) = app().await;
    let r = app
        .post(
            "/hooks/open",
            "application/x-www-form-urlencoded",
            "q_name=%E5%B1%B1%E7%94%B0+%E5%A4%AA%E9%83%8E&q_tag=a&q_tag=b",
        )
        .await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event(&app, &id).await["body"], json!({"q_name": "山田 太郎", "q_tag": ["a", "b"]}));
}

#[tokio::test]
async fn other_types_are_kept_as_text_and_binary_is_refused() {
    let (app, _) = app().await;
    let r = app.post("/hooks/open", "application/xml", "<a>1</a>").await;
    assert_eq!(r.status(), 202);
    let id = r.json()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event(&app, &id).await["body"], json!("<a>1</a>"));

    let r = app.post("/hooks/open", "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(r.status(), 415);
    let v: serde_json::Value = r.json();
    assert_eq!(v["error"]["code"], "unsupported_media_type");
    assert!(v["error"]["message"].as_str().unwrap().contains("image/png"), "{v}");
}

#[tokio::test]
async fn shift_jis_csv_with_nec_and_ibm_characters_splits_into_rows_and_is_delivered() {
    let (app, rx) = app().await;
    let text = "顧客コード,顧客名,電話番号\r\nC001,㈱山田商事 髙橋①,03-1234-5678\r\nC002,﨑村\"特急\",06-0000-0000\r\n";
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable);
    let r = app.post("/hooks/htdb-csv", "text/csv", sjis.into_owned()).await;
    assert_eq!(r.status(), 207);
    let v: serde_json::Value = r.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 2);

    assert_eq!(app.drain().await, 2);
    let got = rx.received();
    assert_eq!(got.len(), 2);
    let mut paths: Vec<String> = got.iter().map(|g| g.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/customers/C001", "/customers/C002"]);
    let first = got.iter().find(|g| g.path == "/customers/C001").unwrap();
    assert_eq!(first.json(), json!({"name": "㈱山田商事 髙橋①", "row": 1}));
    let second = got.iter().find(|g| g.path == "/customers/C002").unwrap();
    assert_eq!(second.json()["name"], "﨑村\"特急\"");
}

#[tokio::test]
async fn csv_encoding_is_detected_utf8_bom_and_shift_jis() {
    let (app, _) = app().await;
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice("名前,点\n山田,1\n".as_bytes());
    let r = app.post("/hooks/csv-auto", "text/csv", bom).await;
    assert_eq!(r.status(), 207);
    let v: serde_json::Value = r.json();
    let e = event(&app, v["events"][0]["event_id"].as_str().unwrap()).await;
    assert_eq!(e["body"], json!({"名前": "山田", "点": "1"}));

    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("名前,点\n髙橋,2\n");
    let r = app.post("/hooks/csv-auto", "text/csv", sjis.into_owned()).await;
    let v: serde_json::Value = r.json();
    let e = event(&app, v["events"][0]["event_id"].as_str().unwrap()).await;
    assert_eq!(e["body"], json!({"名前": "髙橋", "点": "2"}));
}

#[tokio::test]
async fn malformed_bodies_get_400_and_are_kept_as_rejected() {
    let (app, _) = app().await;
    let r = app.post("/hooks/open", "application/json", r#"{"name": "a"b"}"#).await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json();
    assert_eq!(v["error"]["code"], "malformed_body");
    assert!(v["error"]["message"].as_str().unwrap().contains("line 1"), "{v}");

    let list = app.api("/events?status=rejected").await;
    let e = &list["items"][0];
    assert_eq!(e["http_status"], 400);
    assert_eq!(e["source"], "open");
    let full = event(&app, e["id"].as_str().unwrap()).await;
    assert_eq!(full["raw"], r#"{"name": "a"b"}"#, "the body as sent is kept for inspection");
}

#[tokio::test]
async fn errors_answer_in_japanese_when_asked() {
    let (app, _) = app().await;
    let r =
        app.http.post(app.url("/hooks/nope")).header("accept-language", "ja,en;q=0.5").body("x").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_source");
    assert_eq!(v["error"]["message"], "ソース `nope` は設定されていません");
}

#[tokio::test]
async fn token_auth_by_header_or_query_in_constant_time() {
    let (app, _) = app().await;
    let post = |h: Option<&'static str>, q: &'static str| {
        let mut r = app.http.post(app.url(&format!("/hooks/tokened{q}"))).json(&json!({}));
        if let Some(h) = h {
            r = r.header("x-renkei-token", h);
        }
        r.send()
    };
    assert_eq!(post(Some("s3cret-token"), "").await.unwrap().status(), 202);
    assert_eq!(post(None, "?token=s3cret-token").await.unwrap().status(), 202);
    let wrong = post(Some("s3cret-tokem"), "").await.unwrap();
    assert_eq!(wrong.status(), 401);
    let v: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(post(None, "").await.unwrap().status(), 401);

    // Rejections are recorded, without the token.
    let list = app.api("/events?status=rejected&source=tokened").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let text = list.to_string();
    assert!(!text.contains("s3cret-tokem") && !text.contains("s3cret-token"), "{text}");
    // Accepted events keep neither the token header nor the query token.
    let ok = app.api("/events?status=accepted&source=tokened").await.to_string();
    assert!(!ok.contains("s3cret-token"), "{ok}");
}

#[tokio::test]
async fn basic_auth() {
    let (app, _) = app().await;
    let ok = app
        .http
        .post(app.url("/hooks/basic"))
        .basic_auth("shop", Some("p@ss-word"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    let bad =
        app.http.post(app.url("/hooks/basic")).basic_auth("shop", Some("nope")).json(&json!({})).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("www-authenticate").is_some());
    let none = app.http.post(app.url("/hooks/basic")).json(&json!({})).send().await.unwrap();
    assert_eq!(none.status(), 401);
}

#[tokio::test]
async fn body_limit_answers_413_and_keeps_a_clipped_copy() {
    let rx = Receiver::start().await;
    let cfg = config(&rx.url)
        .replace("sources:", "server: { body_limit: 1KiB }\nhistory: { max_rejected_body: 100 }\nsources:");
    let app = spawn_app_env(&cfg, &[("HOOK_TOKEN", "t0ken"), ("HOOK_PASS", "pass")]).await;
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(5000));
    let r = app.post("/hooks/open", "application/json", big).await;
    assert_eq!(r.status(), 413);
    let list = app.api("/events?status=rejected").await;
    let e = event(&app, list["items"][0]["id"].as_str().unwrap()).await;
    assert_eq!(e["raw"].as_str().unwrap().len(), 100);
    assert_eq!(e["raw_truncated"], true);
}

#[tokio::test]
async fn dedupe_answers_a_repeat_with_the_first_event_and_runs_it_once() {
    let (app, _) = app().await;
    let body = json!({"processType": "rakuraku_submission", "keyId": "1001"});
    let first: serde_json::Value = app.post_json("/hooks/rakuraku", body.clone()).await.json();
    let again = app.post_json("/hooks/rakuraku", body.clone()).await;
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json();
    assert_eq!(again["event_id"], first["event_id"]);
    assert_eq!(again["duplicate"], true);
    let other: serde_json::Value =
        app.post_json("/hooks/rakuraku", json!({"processType": "rakuraku_approval", "keyId": "1001"})).await.json();
    assert_ne!(other["event_id"], first["event_id"]);
    let list = app.api("/events?source=rakuraku").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "the repeat is not stored");
    assert_eq!(list["items"][0]["event_type"], "rakuraku_approval");

    // After the window (7 days by default) the same key is a new event.
    app.advance(std::time::Duration::from_secs(8 * 86400));
    let later: serde_json::Value = app.post_json("/hooks/rakuraku", body).await.json();
    assert_ne!(later["event_id"], first["event_id"]);
    assert!(later.get("duplicate").is_none());
}

#[tokio::test]
async fn the_acknowledgement_status_can_be_what_the_sender_expects() {
    let app = spawn_app("sources:\n  q: { ack_status: 200 }\n  n: { ack_status: 204 }\n").await;
    let ok = app.post_json("/hooks/q", json!({"a": 1})).await;
    assert_eq!(ok.status, 200);
    assert!(ok.json()["event_id"].is_string());
    let none = app.post_json("/hooks/n", json!({"a": 1})).await;
    assert_eq!((none.status, none.text.as_str()), (204, ""));
    assert_eq!(app.api("/events").await["items"].as_array().unwrap().len(), 2, "both stored");
}
