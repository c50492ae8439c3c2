//! Tests of the fake eセールスマネージャー over HTTP: the record API's happy path, its required headers, dotted item
//! keys and `yyyy/mm/dd` dates.

use renkei_testkit::esm::FakeEsm;
use serde_json::{json, Value};

const TOKEN: &str = "esm-token-1";

async fn fake() -> FakeEsm {
    let esm = FakeEsm::start("acme", TOKEN).await;
    esm.add_sheet("deal", &["deals.deal.approval_date"]);
    esm
}

async fn send(esm: &FakeEsm, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", esm.api_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

const OK: &[(&str, &str)] = &[("Authorization", "Bearer esm-token-1"), ("X-ESM-TIMEZONE", "Asia/Tokyo")];

#[tokio::test]
async fn add_read_update_delete() {
    let esm = fake().await;
    let (status, added) =
        send(&esm, "POST", "/sheet/deal", OK, Some(json!({"deals.deal.name": "見積 \"特急\""}))).await;
    assert_eq!(status, 200, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    let (status, _) = send(
        &esm,
        "PUT",
        &format!("/sheet/deal/{id}"),
        OK,
        Some(json!({"deals.deal.approval_status": "申請中", "deals.deal.approval_date": "2026/11/22"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, read) = send(&esm, "GET", &format!("/sheet/deal/{id}"), OK, None).await;
    assert_eq!(status, 200);
    assert_eq!(read["deals.deal.name"], "見積 \"特急\"", "a PUT keeps the items it does not carry");
    assert_eq!(read["deals.deal.approval_status"], "申請中");
    let stored = esm.record("deal", id.parse().unwrap()).unwrap();
    assert_eq!(stored["deals.deal.approval_date"], "2026/11/22");
    assert_eq!(send(&esm, "DELETE", &format!("/sheet/deal/{id}"), OK, None).await.0, 200);
    assert_eq!(send(&esm, "GET", &format!("/sheet/deal/{id}"), OK, None).await.0, 404);
    assert_eq!(esm.requests().len(), 5);
}

#[tokio::test]
async fn token_and_timezone_are_required() {
    let esm = fake().await;
    esm.seed("deal", 7, json!({}));
    let put = |headers: &'static [(&'static str, &'static str)]| {
        let esm = esm.clone();
        async move { send(&esm, "PUT", "/sheet/deal/7", headers, Some(json!({"deals.deal.x": "1"}))).await }
    };
    assert_eq!(put(&[("X-ESM-TIMEZONE", "Asia/Tokyo")]).await.0, 401);
    assert_eq!(put(&[("Authorization", "Bearer wrong"), ("X-ESM-TIMEZONE", "Asia/Tokyo")]).await.0, 401);
    let (status, body) = put(&[("Authorization", "Bearer esm-token-1")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "TIMEZONE_REQUIRED");
    assert_eq!(put(&[("Authorization", "Bearer esm-token-1"), ("X-ESM-TIMEZONE", "JST")]).await.0, 400);
    assert_eq!(put(OK).await.0, 200);
}

#[tokio::test]
async fn items_are_dotted_paths_and_dates_are_slashed() {
    let esm = fake().await;
    esm.seed("deal", 1, json!({"deals.deal.name": "a"}));
    for (body, code) in [
        (json!({"status": "申請中"}), "INVALID_ITEM"),
        (json!({"deals.status": "申請中"}), "INVALID_ITEM"),
        (json!({"deals.deal.approval_date": "2026-11-22"}), "INVALID_DATE"),
        (json!({"deals.deal.approval_date": "2026/02/30"}), "INVALID_DATE"),
        (json!({"deals.deal.tags": ["a"]}), "INVALID_VALUE"),
    ] {
        let (status, answer) = send(&esm, "PUT", "/sheet/deal/1", OK, Some(body.clone())).await;
        assert_eq!((status, answer["errors"][0]["code"].as_str().unwrap()), (400, code), "{body}");
    }
    assert_eq!(esm.record("deal", 1).unwrap(), json!({"deals.deal.name": "a"}).as_object().unwrap().clone());
    assert_eq!(send(&esm, "PUT", "/sheet/deal/99", OK, Some(json!({"deals.deal.x": "1"}))).await.0, 404);
    assert_eq!(send(&esm, "PUT", "/sheet/nope/1", OK, Some(json!({"deals.deal.x": "1"}))).await.0, 404);
    let cleared = send(&esm, "PUT", "/sheet/deal/1", OK, Some(json!({"deals.deal.approval_date": ""}))).await;
    assert_eq!(cleared.0, 200, "an empty date clears the item");
    esm.fail_next(1, 503);
    assert_eq!(send(&esm, "GET", "/sheet/deal/1", OK, None).await.0, 503);
}
