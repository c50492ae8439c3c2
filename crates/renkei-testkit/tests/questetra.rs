//! Tests of the fake Questetra Message Start Event (HTTP): the key, form parameters, and the value forms of
//! numbers, dates, datetimes, selects and users.

use renkei_testkit::questetra::{DataType, FakeQuestetra};

async fn fake() -> FakeQuestetra {
    let q = FakeQuestetra::start().await;
    q.add_message_start(
        12,
        3,
        "qkey",
        vec![
            ("title", DataType::String),
            ("amount", DataType::Number),
            ("due", DataType::Date),
            ("at", DataType::DateTime),
            ("priority", DataType::Select(vec!["high".into(), "low".into()])),
            ("owner", DataType::User),
        ],
    );
    q
}

async fn start(q: &FakeQuestetra, path: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", q.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

const PATH: &str = "/System/Event/MessageStart/12/3/start?key=qkey";

#[tokio::test]
async fn starts_a_process_with_typed_values() {
    let q = fake().await;
    let body = "q_title=%E8%A6%8B%E7%A9%8D+%22A%22%0A2&q_amount=1200&q_due=2026-11-22&q_at=2026-11-22+10%3A30\
                &q_priority=high&q_priority=low&q_owner=sato%40example.jp&q_unknown=x&other=y";
    let (status, text) = start(&q, PATH, body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "1");
    let p = &q.processes()[0];
    assert_eq!((p.app_id, p.node_id, p.process_id), (12, 3, 1));
    assert_eq!(p.value("title"), Some("見積 \"A\"\n2"));
    assert_eq!(p.value("at"), Some("2026-11-22 10:30"));
    assert_eq!(p.values["priority"], ["high", "low"]);
    assert!(!p.values.contains_key("unknown"));
}

#[tokio::test]
async fn refusals_name_the_item() {
    let q = fake().await;
    for (body, bad) in [
        ("q_amount=1%2C200", "q_amount"),
        ("q_due=2026%2F11%2F22", "q_due"),
        ("q_at=2026-11-22T10%3A30%3A00Z", "q_at"),
        ("q_priority=%E9%AB%98", "q_priority"),
        ("q_owner=sato", "q_owner"),
        ("q_title=a&q_title=b", "q_title"),
    ] {
        let (status, text) = start(&q, PATH, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(text.starts_with(bad), "{body}: {text}");
    }
    assert_eq!(start(&q, "/System/Event/MessageStart/12/3/start?key=wrong", "q_title=a").await.0, 401);
    assert_eq!(start(&q, "/System/Event/MessageStart/12/3/start", "q_title=a").await.0, 401);
    assert_eq!(start(&q, "/System/Event/MessageStart/12/9/start?key=qkey", "q_title=a").await.0, 404);
    let json = reqwest::Client::new()
        .post(format!("{}{PATH}", q.base_url()))
        .json(&serde_json::json!({"q_title": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 415);
    assert!(q.processes().is_empty());
    q.fail_next(1, 500);
    assert_eq!(start(&q, PATH, "q_title=a").await.0, 500);
    assert_eq!(q.requests().len(), 11);
}
