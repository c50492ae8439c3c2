//! The record endpoints' happy paths and their semantics: ids and revisions, queries, upsert, revision checks,
//! subtables, form fields, status actions, guest spaces, request recording.

use renkei_testkit::kintone::{FakeKintone, Rights, StatusAction};
use serde_json::json;

use super::{call, fake_with_app, query, send, TOKEN};

#[tokio::test]
async fn add_get_and_update_one_record() {
    let fake = fake_with_app().await;
    let body = json!({ "app": 1, "record": { "title": { "value": "A" }, "amount": { "value": 10 } } });
    let added = call(&fake, "POST", "/k/v1/record.json", Some(&body)).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(added.body, json!({ "id": "1", "revision": "1" }));

    let got = call(&fake, "GET", "/k/v1/record.json?app=1&id=1", None).await;
    assert_eq!(got.status, 200);
    let rec = &got.body["record"];
    assert_eq!(rec["title"], json!({ "type": "SINGLE_LINE_TEXT", "value": "A" }));
    assert_eq!(rec["amount"]["value"], "10");
    assert_eq!(rec["$id"], json!({ "type": "__ID__", "value": "1" }));
    assert_eq!(rec["$revision"]["value"], "1");
    assert_eq!(rec["レコード番号"], json!({ "type": "RECORD_NUMBER", "value": "1" }));
    assert_eq!(rec["作成者"]["value"]["code"], "Administrator");
    assert_eq!(rec["kind"], json!({ "type": "DROP_DOWN", "value": null }));
    assert_eq!(rec["tags"]["value"], json!([]));
    assert!(rec.get("ステータス").is_none(), "no status without process management: {rec}");

    let update = json!({ "app": "1", "id": "1", "record": { "amount": { "value": "20" } }, "revision": "1" });
    let updated = call(&fake, "PUT", "/k/v1/record.json", Some(&update)).await;
    assert_eq!(updated.body, json!({ "revision": "2" }));
    let rec = &fake.records(1)[0];
    assert_eq!(rec["amount"]["value"], "20");
    assert_eq!(rec["title"]["value"], "A", "fields not sent keep their value");
}

#[tokio::test]
async fn records_query_orders_pages_and_counts() {
    let fake = fake_with_app().await;
    let records: Vec<_> =
        (1..=5).map(|i| json!({ "title": { "value": format!("t{i}") }, "amount": { "value": i } })).collect();
    let added = call(&fake, "POST", "/k/v1/records.json", Some(&json!({ "app": 1, "records": records }))).await;
    assert_eq!(added.body, json!({ "ids": ["1", "2", "3", "4", "5"], "revisions": ["1", "1", "1", "1", "1"] }));

    let q = query(r#"amount > "1" and title != "t5" order by $id asc limit 1 offset 1"#);
    let page = call(&fake, "GET", &format!("/k/v1/records.json?app=1&{q}&totalCount=true"), None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["totalCount"], "3");
    let titles: Vec<_> = page.body["records"].as_array().unwrap().iter().map(|r| r["title"]["value"].clone()).collect();
    assert_eq!(titles, vec![json!("t3")]);

    let one = call(&fake, "GET", &format!("/k/v1/records.json?app=1&{}", query(r#"title = "t2""#)), None).await;
    assert_eq!(one.body["records"].as_array().unwrap().len(), 1);
    assert_eq!(one.body["records"][0]["amount"]["value"], "2");
    assert_eq!(one.body["totalCount"], json!(null), "totalCount only when asked");

    let all = call(&fake, "GET", "/k/v1/records.json?app=1&fields[0]=title&fields[1]=$id", None).await;
    let first = &all.body["records"][0];
    assert_eq!(first["title"]["value"], "t5", "newest first without order by");
    let keys: Vec<_> = first.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec!["title".to_string(), "$id".to_string()]);

    let or = call(
        &fake,
        "GET",
        &format!("/k/v1/records.json?app=1&{}", query(r#"(amount <= 1 or amount >= "5") order by amount desc"#)),
        None,
    )
    .await;
    let amounts: Vec<_> = or.body["records"].as_array().unwrap().iter().map(|r| r["amount"]["value"].clone()).collect();
    assert_eq!(amounts, vec![json!("5"), json!("1")]);

    // The periodic pull: records updated after a moment, the moment given with an offset.
    let since =
        |at: &str| format!("/k/v1/records.json?app=1&totalCount=true&{}", query(&format!("更新日時 > \"{at}\"")));
    assert_eq!(call(&fake, "GET", &since("2000-01-01T09:00:00+09:00"), None).await.body["totalCount"], "5");
    assert_eq!(call(&fake, "GET", &since("2999-01-01T09:00:00+09:00"), None).await.body["totalCount"], "0");
}

#[tokio::test]
async fn upsert_inserts_then_updates() {
    let fake = fake_with_app().await;
    let upsert = |amount: i64| {
        json!({ "app": 1, "upsert": true, "records": [
            { "updateKey": { "field": "title", "value": "K1" }, "record": { "amount": { "value": amount } } }
        ] })
    };
    let first = call(&fake, "PUT", "/k/v1/records.json", Some(&upsert(1))).await;
    assert_eq!(first.body, json!({ "records": [{ "id": "1", "revision": "1", "operation": "INSERT" }] }));
    let second = call(&fake, "PUT", "/k/v1/records.json", Some(&upsert(2))).await;
    assert_eq!(second.body, json!({ "records": [{ "id": "1", "revision": "2", "operation": "UPDATE" }] }));
    let stored = fake.records(1);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["title"]["value"], "K1");
    assert_eq!(stored[0]["amount"]["value"], "2");

    let plain = json!({ "app": 1, "records": [{ "updateKey": { "field": "title", "value": "nope" }, "record": {} }] });
    let missing = call(&fake, "PUT", "/k/v1/records.json", Some(&plain)).await;
    assert_eq!((missing.status, missing.code()), (404, "GAIA_RE01"));
    let by_id = json!({ "app": 1, "records": [{ "id": 1, "record": { "amount": { "value": "3" } } }] });
    let updated = call(&fake, "PUT", "/k/v1/records.json", Some(&by_id)).await;
    assert_eq!(updated.body, json!({ "records": [{ "id": "1", "revision": "3" }] }), "no operation without upsert");
}

#[tokio::test]
async fn update_key_rules() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "A" }, "code": { "value": "7" } }));
    let by_code =
        json!({ "app": 1, "updateKey": { "field": "code", "value": 7 }, "record": { "note": { "value": "n" } } });
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&by_code)).await.body, json!({ "revision": "2" }));

    let not_unique = json!({ "app": 1, "updateKey": { "field": "note", "value": "n" }, "record": {} });
    let refused = call(&fake, "PUT", "/k/v1/record.json", Some(&not_unique)).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    refused.messages("updateKey.field");

    let both = json!({ "app": 1, "id": 1, "updateKey": { "field": "title", "value": "A" }, "record": {} });
    let refused = call(&fake, "PUT", "/k/v1/record.json", Some(&both)).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    refused.messages("id");
}

#[tokio::test]
async fn stale_revision_is_a_conflict() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "A" } }));
    fake.seed_record(1, json!({ "title": { "value": "B" } }));
    let put = |revision: serde_json::Value| json!({ "app": 1, "id": 1, "record": { "note": { "value": "x" } }, "revision": revision });

    let stale = call(&fake, "PUT", "/k/v1/record.json", Some(&put(json!(5)))).await;
    assert_eq!((stale.status, stale.code()), (409, "GAIA_CO02"));
    assert_eq!(fake.records(1)[0]["note"]["value"], "", "nothing written on conflict");
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&put(json!(-1)))).await.status, 200);
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&put(json!("2")))).await.status, 200);
    let unchecked = json!({ "app": 1, "id": 1, "record": {} });
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&unchecked)).await.body, json!({ "revision": "4" }));

    let bulk = json!({ "app": 1, "records": [
        { "id": 2, "record": { "note": { "value": "y" } }, "revision": 1 },
        { "id": 1, "record": { "note": { "value": "y" } }, "revision": 1 }
    ] });
    let refused = call(&fake, "PUT", "/k/v1/records.json", Some(&bulk)).await;
    assert_eq!((refused.status, refused.code()), (409, "GAIA_CO02"));
    assert_eq!(fake.records(1)[1]["note"]["value"], "", "the first update is rolled back");
}

#[tokio::test]
async fn delete_records_by_ids() {
    let fake = fake_with_app().await;
    for t in ["a", "b", "c"] {
        fake.seed_record(1, json!({ "title": { "value": t } }));
    }
    let deleted = call(&fake, "DELETE", "/k/v1/records.json?app=1&ids[0]=1&ids[1]=3", None).await;
    assert_eq!((deleted.status, &deleted.body), (200, &json!({})));
    let left: Vec<_> = fake.records(1).iter().map(|r| r["$id"]["value"].clone()).collect();
    assert_eq!(left, vec![json!("2")]);

    let missing = call(&fake, "DELETE", "/k/v1/records.json?app=1&ids[0]=2&ids[1]=99", None).await;
    assert_eq!((missing.status, missing.code()), (404, "GAIA_RE01"));
    assert_eq!(fake.records(1).len(), 1, "all-or-nothing: record 2 is still there");
    let stale = call(&fake, "DELETE", "/k/v1/records.json?app=1&ids[0]=2&revisions[0]=9", None).await;
    assert_eq!(stale.code(), "GAIA_CO02");
}

#[tokio::test]
async fn subtable_rows_merge_add_and_delete() {
    let fake = fake_with_app().await;
    let rows = json!([
        { "value": { "name": { "value": "a" }, "qty": { "value": "1" } } },
        { "value": { "name": { "value": "b" }, "qty": { "value": "2" } } }
    ]);
    fake.seed_record(1, json!({ "title": { "value": "T" }, "items": { "value": rows } }));
    let before = fake.records(1)[0]["items"]["value"].clone();
    let (row_a, row_b) = (before[0]["id"].as_str().unwrap().to_string(), before[1]["id"].as_str().unwrap().to_string());
    assert_ne!(row_a, row_b);

    let update = json!({ "app": 1, "id": 1, "record": { "items": { "value": [
        { "id": row_a, "value": { "qty": { "value": "5" } } },
        { "value": { "name": { "value": "c" } } }
    ] } } });
    assert_eq!(call(&fake, "PUT", "/k/v1/record.json", Some(&update)).await.status, 200);
    let after = fake.records(1)[0]["items"]["value"].clone();
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 2, "row b left out is deleted: {after:?}");
    assert_eq!(after[0]["id"], row_a.as_str());
    assert_eq!(after[0]["value"]["name"], json!({ "type": "SINGLE_LINE_TEXT", "value": "a" }), "merged row keeps name");
    assert_eq!(after[0]["value"]["qty"]["value"], "5");
    assert_ne!(after[1]["id"], row_b.as_str());
    assert_eq!(after[1]["value"]["name"]["value"], "c");
    assert_eq!(after[1]["value"]["qty"]["value"], "", "cells not given read as empty");
}

#[tokio::test]
async fn form_fields_in_both_languages() {
    let fake = fake_with_app().await;
    let ja = call(&fake, "GET", "/k/v1/app/form/fields.json?app=1", None).await;
    let title = &ja.body["properties"]["title"];
    assert_eq!(title["type"], "SINGLE_LINE_TEXT");
    assert_eq!(
        (title["label"].as_str(), title["required"].as_bool(), title["unique"].as_bool()),
        (Some("件名"), Some(true), Some(true))
    );
    assert_eq!(ja.body["properties"]["kind"]["options"]["B"], json!({ "label": "B", "index": "1" }));
    assert_eq!(ja.body["properties"]["items"]["fields"]["qty"]["type"], "NUMBER");
    assert_eq!(ja.body["properties"]["ステータス"]["enabled"], false);
    assert_eq!(ja.body["revision"], "1");

    let en = call(&fake, "GET", "/k/v1/app/form/fields.json?app=1&lang=en", None).await;
    assert_eq!(en.body["properties"]["title"]["label"], "Title");
    assert_eq!(en.body["properties"]["レコード番号"]["label"], "Record number");
    assert_eq!(en.body["properties"]["note"]["label"], "備考", "no English label: the default one");
}

#[tokio::test]
async fn method_override_get_takes_json_parameters() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "A" } }));
    fake.seed_record(1, json!({ "title": { "value": "B" } }));
    let body = json!({ "app": 1, "query": "title = \"A\"", "totalCount": true });
    let headers = [("X-Cybozu-API-Token", TOKEN), ("X-HTTP-Method-Override", "GET")];
    let got = send(&fake, "POST", "/k/v1/records.json", &headers, Some(&body)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["totalCount"], "1");
    assert_eq!(fake.records(1).len(), 2, "nothing was added");
}

#[tokio::test]
async fn status_actions_follow_the_process() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "A" } }));
    let action = |name: &str, revision: i64| json!({ "app": 1, "id": 1, "action": name, "revision": revision });
    let off = call(&fake, "PUT", "/k/v1/record/status.json", Some(&action("申請", -1))).await;
    assert_eq!((off.status, off.code()), (400, "GAIA_ST02"));

    let actions = vec![StatusAction::new("申請", "未処理", "処理中"), StatusAction::new("完了する", "処理中", "完了")];
    fake.enable_process(1, actions, "未処理");
    fake.seed_record(1, json!({ "title": { "value": "B" } }));
    assert_eq!(fake.records(1)[0]["ステータス"], json!({ "type": "STATUS", "value": "未処理" }));

    let moved = call(&fake, "PUT", "/k/v1/record/status.json", Some(&action("申請", 1))).await;
    assert_eq!(moved.body, json!({ "revision": "3" }), "an action raises the revision by 2");
    assert_eq!(fake.records(1)[0]["ステータス"]["value"], "処理中");
    let again = call(&fake, "PUT", "/k/v1/record/status.json", Some(&action("申請", -1))).await;
    assert_eq!((again.status, again.code()), (400, "GAIA_IL03"));

    let both = json!({ "app": 1, "records": [
        { "id": 2, "action": "申請" }, { "id": 1, "action": "申請" }
    ] });
    let refused = call(&fake, "PUT", "/k/v1/records/status.json", Some(&both)).await;
    assert_eq!(refused.code(), "GAIA_IL03");
    assert_eq!(fake.records(1)[1]["ステータス"]["value"], "未処理", "record 2 rolled back");
    let fine = json!({ "app": 1, "records": [{ "id": 2, "action": "申請" }, { "id": 1, "action": "完了する", "assignee": "sato" }] });
    let done = call(&fake, "PUT", "/k/v1/records/status.json", Some(&fine)).await;
    assert_eq!(done.body, json!({ "records": [{ "id": "2", "revision": "3" }, { "id": "1", "revision": "5" }] }));
    assert_eq!(fake.records(1)[0]["作業者"]["value"], json!([{ "code": "sato", "name": "sato" }]));
}

#[tokio::test]
async fn guest_space_apps_need_the_guest_path() {
    let fake = FakeKintone::start().await;
    fake.add_app(7, super::fields()).guest_space(3).add_token("tok-guest", Rights::RECORDS);
    let headers = [("X-Cybozu-API-Token", "tok-guest")];
    let body = json!({ "app": 7, "record": { "title": { "value": "g" } } });
    let ok = send(&fake, "POST", "/k/guest/3/v1/record.json", &headers, Some(&body)).await;
    assert_eq!(ok.body, json!({ "id": "1", "revision": "1" }));
    let normal = send(&fake, "GET", "/k/v1/record.json?app=7&id=1", &headers, None).await;
    assert_eq!((normal.status, normal.code()), (400, "GAIA_IL23"));
    let other = send(&fake, "GET", "/k/guest/4/v1/record.json?app=7&id=1", &headers, None).await;
    assert_eq!((other.status, other.code()), (403, "CB_NO02"));
    let got = send(&fake, "GET", "/k/guest/3/v1/records.json?app=7", &headers, None).await;
    assert_eq!(got.body["records"][0]["title"]["value"], "g");
}

#[tokio::test]
async fn requests_are_recorded_and_counted_per_app() {
    let fake = fake_with_app().await;
    fake.add_app(2, super::fields()).add_token("tok-app2", Rights::RECORDS);
    let body = json!({ "app": 1, "record": { "title": { "value": "A" } } });
    call(&fake, "POST", "/k/v1/record.json", Some(&body)).await;
    call(&fake, "GET", "/k/v1/records.json?app=1", None).await;
    send(&fake, "GET", "/k/v1/records.json?app=2", &[("X-Cybozu-API-Token", "tok-app2")], None).await;
    assert_eq!((fake.request_count(1), fake.request_count(2), fake.request_count(3)), (2, 1, 0));

    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("POST", "/k/v1/record.json"));
    assert_eq!(requests[0].header("x-cybozu-api-token"), Some(TOKEN));
    assert_eq!(requests[0].json(), Some(body));
    assert_eq!(requests[2].query.as_deref(), Some("app=2"));
}

#[tokio::test]
async fn errors_speak_japanese_unless_english_is_asked() {
    let fake = fake_with_app().await;
    let ja = call(&fake, "GET", "/k/v1/record.json?app=1&id=99", None).await;
    assert_eq!((ja.status, ja.code()), (404, "GAIA_RE01"));
    assert_eq!(ja.body["message"], "指定したレコード（id: 99）が見つかりません。");
    assert!(ja.body["id"].as_str().is_some_and(|id| !id.is_empty()));
    let headers = [("X-Cybozu-API-Token", TOKEN), ("Accept-Language", "en")];
    let en = send(&fake, "GET", "/k/v1/record.json?app=1&id=99", &headers, None).await;
    assert_eq!(en.body["message"], "The specified record (ID: 99) is not found.");
    assert_ne!(ja.body["id"], en.body["id"], "every error gets its own id");
}
