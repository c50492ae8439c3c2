//! Tests of the fake Shopらん session API (`validateWebhookToken`) and of the notice body builder.

use renkei_testkit::shopran::{FakeShopran, Notice};
use serde_json::Value;

async fn ask(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new().post(url).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn confirms_only_tokens_it_issued() {
    let shop = FakeShopran::start("webapi-key").await;
    shop.issue_token("tok-1");
    let url = shop.session_api_url();
    let ok = ask(&url, &[("func", "validateWebhookToken"), ("key", "webapi-key"), ("token", "tok-1")]).await;
    assert_eq!((ok.0, ok.1["result"].as_str()), (200, Some("OK")));
    let forged = ask(&url, &[("func", "validateWebhookToken"), ("key", "webapi-key"), ("token", "forged")]).await;
    assert_eq!((forged.0, forged.1["result"].as_str()), (200, Some("NG")), "refused in the body, not the status");
    let bad_key = ask(&url, &[("func", "validateWebhookToken"), ("key", "nope"), ("token", "tok-1")]).await;
    assert_eq!(bad_key.0, 403);
    assert_eq!(ask(&url, &[("func", "other"), ("key", "webapi-key"), ("token", "tok-1")]).await.0, 400);
    assert_eq!(ask(&url, &[("key", "webapi-key"), ("token", "tok-1")]).await.0, 400);
    assert_eq!(ask(&url, &[("func", "validateWebhookToken"), ("key", "webapi-key")]).await.0, 400);
    // The same as a query string.
    let get = reqwest::get(format!("{url}?func=validateWebhookToken&key=webapi-key&token=tok-1")).await.unwrap();
    assert_eq!(get.json::<Value>().await.unwrap()["result"], "OK");
    assert_eq!(shop.validated_tokens(), ["tok-1", "forged", "tok-1", "tok-1", "tok-1", "tok-1"]);
    assert_eq!(reqwest::get(format!("{}/other", shop.base_url())).await.unwrap().status(), 404);
}

#[test]
fn notice_bodies_carry_every_field_of_the_seed() {
    let mut n = Notice::new("PUBLISH", 42, "tok-9");
    n.priority = 7;
    n.title = "【緊急】リコール \"至急\"".into();
    let v = n.to_json();
    for field in [
        "noticeId",
        "dispId",
        "event",
        "title",
        "priority",
        "keywords",
        "category",
        "calendarArea",
        "openDate",
        "closeDate",
        "beginDate",
        "endDate",
        "recvStores",
        "colors",
        "targetStaff",
        "userConcerned",
        "replyType",
        "replyDueDate",
        "pubUser",
        "pubGroup",
        "pdf",
        "tasks",
        "approvedDate",
        "regAccount",
        "updAccount",
        "sessionOwner",
        "templateId",
        "templateName",
        "text",
        "data",
        "token",
    ] {
        assert!(v.get(field).is_some(), "{field} missing");
    }
    assert_eq!(v["priority"], 7);
    assert_eq!(v["noticeId"], 42);
    assert_eq!(v["token"], "tok-9");
    assert_eq!(v["category"][0]["selected"][0]["label"], "店舗運営");
}
