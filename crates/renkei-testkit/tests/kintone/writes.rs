//! Writes: all-or-nothing bulk writes (records.json batches of at most 100, bulkRequest.json of at most 20),
//! unique values within and across batches, and field value validation as one table.

use serde_json::{json, Value};

use super::{call, fake_with_app, send, TOKEN};

fn titled(title: &str) -> Value {
    json!({ "title": { "value": title } })
}

#[tokio::test]
async fn bulk_add_is_all_or_nothing_with_indexed_error_keys() {
    let fake = fake_with_app().await;
    let records = json!([titled("a"), { "amount": { "value": "1" } }, titled("c")]);
    let refused = call(&fake, "POST", "/k/v1/records.json", Some(&json!({ "app": 1, "records": records }))).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    assert_eq!(refused.body["message"], "入力内容が正しくありません。");
    assert_eq!(refused.messages("records[1].title.value"), vec!["必須です。"]);
    assert_eq!(refused.body["errors"].as_object().unwrap().len(), 1, "{}", refused.body);
    assert!(fake.records(1).is_empty(), "records 0 and 2 were not kept");
}

#[tokio::test]
async fn bulk_update_reports_every_invalid_record_and_rolls_back() {
    let fake = fake_with_app().await;
    fake.seed_record(1, titled("a"));
    fake.seed_record(1, titled("b"));
    let body = json!({ "app": 1, "records": [
        { "id": 1, "record": { "amount": { "value": "5" } } },
        { "id": 2, "record": { "kind": { "value": "Z" } } },
        { "id": 1, "record": { "amount": { "value": "five" } } }
    ] });
    let refused = call(&fake, "PUT", "/k/v1/records.json", Some(&body)).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    assert_eq!(refused.messages("records[1].kind.value"), vec!["\"Z\"は選択肢にありません。"]);
    assert_eq!(refused.messages("records[2][amount].value"), vec!["数字でなければなりません。"]);
    assert_eq!(fake.records(1)[0]["amount"]["value"], "", "record 1 is unchanged");
    assert_eq!(fake.records(1)[0]["$revision"]["value"], "1");
}

#[tokio::test]
async fn more_than_100_records_is_refused() {
    let fake = fake_with_app().await;
    let batch = |n: usize| json!({ "app": 1, "records": (0..n).map(|i| titled(&format!("r{i}"))).collect::<Vec<_>>() });
    let refused = call(&fake, "POST", "/k/v1/records.json", Some(&batch(101))).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    assert_eq!(refused.messages("records"), vec!["一度に100件までのレコードを追加できます。"]);
    assert!(fake.records(1).is_empty());

    let added = call(&fake, "POST", "/k/v1/records.json", Some(&batch(100))).await;
    assert_eq!(added.body["ids"].as_array().map(Vec::len), Some(100));
    let updates: Vec<_> = (1..=101).map(|id| json!({ "id": id, "record": {} })).collect();
    let refused = call(&fake, "PUT", "/k/v1/records.json", Some(&json!({ "app": 1, "records": updates }))).await;
    assert_eq!(refused.code(), "CB_VA01");
    refused.messages("records");
    let ids: String = (0..101).map(|i| format!("&ids[{i}]={}", i + 1)).collect();
    let refused = call(&fake, "DELETE", &format!("/k/v1/records.json?app=1{ids}"), None).await;
    assert_eq!(refused.code(), "CB_VA01");
    refused.messages("ids");
    assert_eq!(fake.records(1).len(), 100);
}

#[tokio::test]
async fn unique_values_are_checked_against_stored_and_batch_records() {
    let fake = fake_with_app().await;
    fake.seed_record(1, json!({ "title": { "value": "dup" }, "code": { "value": "10" } }));
    let one = json!({ "app": 1, "record": { "title": { "value": "dup" } } });
    let refused = call(&fake, "POST", "/k/v1/record.json", Some(&one)).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    assert_eq!(refused.messages("record.title.value"), vec!["値がほかのレコードと重複しています。"]);

    let numeric = json!({ "app": 1, "record": { "title": { "value": "n" }, "code": { "value": "10.0" } } });
    let refused = call(&fake, "POST", "/k/v1/record.json", Some(&numeric)).await;
    refused.messages("record.code.value");

    let batch = json!({ "app": 1, "records": [titled("x"), titled("x")] });
    let refused = call(&fake, "POST", "/k/v1/records.json", Some(&batch)).await;
    refused.messages("records[1].title.value");
    assert!(refused.body["errors"].get("records[0].title.value").is_none());

    let same = json!({ "app": 1, "id": 1, "record": { "title": { "value": "dup" } } });
    assert_eq!(
        call(&fake, "PUT", "/k/v1/record.json", Some(&same)).await.status,
        200,
        "a record does not clash with itself"
    );
}

#[tokio::test]
async fn bulk_request_commits_every_request() {
    let fake = fake_with_app().await;
    fake.seed_record(1, titled("old"));
    fake.seed_record(1, titled("gone"));
    let body = json!({ "requests": [
        { "method": "POST", "api": "/k/v1/record.json", "payload": { "app": 1, "record": titled("new") } },
        { "method": "PUT", "api": "/k/v1/record.json", "payload": { "app": 1, "id": 1, "record": { "amount": { "value": 7 } } } },
        { "method": "DELETE", "api": "/k/v1/records.json", "payload": { "app": 1, "ids": [2] } }
    ] });
    let done = call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&body)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body, json!({ "results": [{ "id": "3", "revision": "1" }, { "revision": "2" }, {}] }));
    let titles: Vec<_> = fake.records(1).iter().map(|r| r["title"]["value"].clone()).collect();
    assert_eq!(titles, vec![json!("old"), json!("new")]);
    assert_eq!(fake.records(1)[0]["amount"]["value"], "7");
    assert_eq!(fake.request_count(1), 3, "each inner request counts against the app");
}

#[tokio::test]
async fn bulk_request_rolls_back_and_names_the_failing_request() {
    let fake = fake_with_app().await;
    fake.seed_record(1, titled("old"));
    let body = json!({ "requests": [
        { "method": "POST", "api": "/k/v1/record.json", "payload": { "app": 1, "record": titled("new") } },
        { "method": "PUT", "api": "/k/v1/record.json", "payload": { "app": 1, "id": 99, "record": {} } },
        { "method": "POST", "api": "/k/v1/record.json", "payload": { "app": 1, "record": titled("later") } }
    ] });
    let refused = call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&body)).await;
    assert_eq!(refused.status, 404);
    let results = refused.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!((&results[0], &results[2]), (&json!({}), &json!({})));
    assert_eq!(results[1]["code"], "GAIA_RE01");
    assert_eq!(fake.records(1).len(), 1, "the first POST was rolled back");

    let invalid = json!({ "requests": [
        { "method": "POST", "api": "/k/v1/record.json", "payload": { "app": 1, "record": titled("a") } },
        { "method": "POST", "api": "/k/v1/records.json", "payload": { "app": 1, "records": [titled("b"), {}] } }
    ] });
    let refused = call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&invalid)).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["results"][1]["errors"]["records[1].title.value"]["messages"][0], "必須です。");
    assert_eq!(fake.records(1).len(), 1);
}

#[tokio::test]
async fn bulk_request_takes_at_most_20_writes() {
    let fake = fake_with_app().await;
    let request = |i: usize| json!({ "method": "POST", "api": "/k/v1/record.json", "payload": { "app": 1, "record": titled(&format!("r{i}")) } });
    let too_many = json!({ "requests": (0..21).map(request).collect::<Vec<_>>() });
    let refused = call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&too_many)).await;
    assert_eq!((refused.status, refused.code()), (400, "CB_VA01"));
    refused.messages("requests");
    let twenty = json!({ "requests": (0..20).map(request).collect::<Vec<_>>() });
    assert_eq!(call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&twenty)).await.status, 200);
    assert_eq!(fake.records(1).len(), 20);

    let read = json!({ "requests": [{ "method": "GET", "api": "/k/v1/records.json", "payload": { "app": 1 } }] });
    let refused = call(&fake, "POST", "/k/v1/bulkRequest.json", Some(&read)).await;
    assert_eq!(refused.body["results"][0]["code"], "FAKE_UNSUPPORTED", "bulkRequest takes writes only");
}

/// Field value validation, one table: what each field type takes, what it stores, and the key of its error.
enum Want {
    /// Accepted; the field reads back as this value.
    Stored(Value),
    /// Accepted, and the field code is not part of the record (unknown codes are ignored).
    Ignored,
    /// Refused with CB_VA01 under this key.
    Rejected(&'static str),
}

use Want::{Ignored, Rejected, Stored};

fn cases() -> Vec<(&'static str, Value, Want)> {
    vec![
        ("amount", json!("12.5"), Stored(json!("12.5"))),
        ("amount", json!(7), Stored(json!("7"))),
        ("amount", json!("-1e3"), Stored(json!("-1e3"))),
        ("amount", json!(""), Stored(json!(""))),
        ("amount", json!("abc"), Rejected("record[amount].value")),
        ("amount", json!("１２"), Rejected("record[amount].value")),
        ("amount", json!(".5"), Rejected("record[amount].value")),
        ("due", json!("2026-11-22"), Stored(json!("2026-11-22"))),
        ("due", json!(null), Stored(json!(null))),
        ("due", json!("2026/11/22"), Rejected("record.due.value")),
        ("due", json!("2026-02-30"), Rejected("record.due.value")),
        ("at", json!("09:30"), Stored(json!("09:30"))),
        ("at", json!("9:30"), Rejected("record.at.value")),
        ("at", json!("24:00"), Rejected("record.at.value")),
        ("when", json!("2026-11-22T09:30:00+09:00"), Stored(json!("2026-11-22T00:30:00Z"))),
        ("when", json!("2026-11-22T00:30:00Z"), Stored(json!("2026-11-22T00:30:00Z"))),
        ("when", json!("2026-11-22T09:30+09:00"), Stored(json!("2026-11-22T00:30:00Z"))),
        ("when", json!("2026-11-22 09:30"), Rejected("record.when.value")),
        ("when", json!("2026-11-22T09:30:00"), Rejected("record.when.value")),
        ("kind", json!("A"), Stored(json!("A"))),
        ("kind", json!(""), Stored(json!(null))),
        ("kind", json!("Z"), Rejected("record.kind.value")),
        ("radio", json!("yes"), Stored(json!("yes"))),
        ("radio", json!("maybe"), Rejected("record.radio.value")),
        ("tags", json!(["x", "y"]), Stored(json!(["x", "y"]))),
        ("tags", json!(["x", "nope"]), Rejected("record.tags.values[1].value")),
        ("tags", json!("x"), Rejected("record.tags.value")),
        ("multi", json!(["m2"]), Stored(json!(["m2"]))),
        ("owner", json!([{ "code": "sato" }]), Stored(json!([{ "code": "sato", "name": "sato" }]))),
        ("owner", json!(["sato"]), Rejected("record.owner.value")),
        ("org", json!([{ "code": "dev" }]), Stored(json!([{ "code": "dev", "name": "dev" }]))),
        ("group", json!([{ "code": "g1" }]), Stored(json!([{ "code": "g1", "name": "g1" }]))),
        ("url", json!("https://example.com"), Stored(json!("https://example.com"))),
        ("note", json!("line1\nline2"), Stored(json!("line1\nline2"))),
        ("note", json!({ "text": "x" }), Rejected("record.note.value")),
        ("total", json!("99"), Stored(json!(""))),
        ("no_such_field", json!("x"), Ignored),
        ("$revision", json!("7"), Stored(json!("1"))),
        (
            "items",
            json!([{ "value": { "name": { "value": "a" }, "qty": { "value": "x" } } }]),
            Rejected("record.items.value[0].value.qty.value"),
        ),
        (
            "items",
            json!([{ "value": { "qty": { "value": "1" } } }]),
            Rejected("record.items.value[0].value.name.value"),
        ),
        ("title", json!(""), Rejected("record.title.value")),
    ]
}

#[tokio::test]
async fn field_values_by_type() {
    let fake = fake_with_app().await;
    for (i, (code, value, want)) in cases().into_iter().enumerate() {
        let mut record = json!({ "title": { "value": format!("case-{i}") } });
        record[code] = json!({ "value": value });
        let answer = call(&fake, "POST", "/k/v1/record.json", Some(&json!({ "app": 1, "record": record }))).await;
        let case = format!("case {i}: {code} = {value}");
        match want {
            Stored(expected) => {
                assert_eq!(answer.status, 200, "{case}: {}", answer.body);
                let id = answer.body["id"].as_str().expect("id");
                let got = call(&fake, "GET", &format!("/k/v1/record.json?app=1&id={id}"), None).await;
                assert_eq!(got.body["record"][code]["value"], expected, "{case}");
            }
            Ignored => {
                assert_eq!(answer.status, 200, "{case}: {}", answer.body);
                let stored = fake.records(1).pop().expect("stored");
                assert!(stored.get(code).is_none(), "{case}: {stored}");
            }
            Rejected(key) => {
                assert_eq!((answer.status, answer.code()), (400, "CB_VA01"), "{case}: {}", answer.body);
                assert!(!answer.messages(key).is_empty(), "{case}");
                let keys = answer.body["errors"].as_object().map(|e| e.len());
                assert_eq!(keys, Some(1), "{case}: one error only: {}", answer.body);
            }
        }
    }
}

#[tokio::test]
async fn required_fields_and_messages_in_english() {
    let fake = fake_with_app().await;
    let body = json!({ "app": 1, "record": { "amount": { "value": "1" } } });
    let ja = call(&fake, "POST", "/k/v1/record.json", Some(&body)).await;
    assert_eq!(ja.messages("record.title.value"), vec!["必須です。"]);
    let headers = [("X-Cybozu-API-Token", TOKEN), ("Accept-Language", "en")];
    let en = send(&fake, "POST", "/k/v1/record.json", &headers, Some(&body)).await;
    assert_eq!(en.body["message"], "Missing or invalid input.");
    assert_eq!(en.messages("record.title.value"), vec!["Required."]);

    fake.seed_record(1, json!({ "title": { "value": "A" } }));
    let blank = json!({ "app": 1, "id": 1, "record": { "title": { "value": "" }, "kind": { "value": "Q" } } });
    let refused = call(&fake, "PUT", "/k/v1/record.json", Some(&blank)).await;
    assert_eq!(refused.messages("record.title.value"), vec!["必須です。"]);
    assert_eq!(refused.messages("record.kind.value"), vec!["\"Q\"は選択肢にありません。"]);
    assert_eq!(fake.records(1)[0]["title"]["value"], "A");
}
