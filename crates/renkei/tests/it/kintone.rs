//! The kintone connector through the real server, against the kintone fake (`renkei-testkit`).

use std::time::Duration;

use renkei_testkit::kintone::{FakeKintone, Field, FieldType as T, Rights, StatusAction};
use serde_json::json;

use crate::harness::*;

const TOKEN: &str = "kintone-token-abc";

fn customer_app(k: &FakeKintone) {
    k.add_app(
        12,
        vec![
            Field::new("customer_code", "顧客コード", T::SingleLineText).unique().required(),
            Field::new("customer_name", "顧客名", T::SingleLineText).required(),
            Field::new("amount", "金額", T::Number),
            Field::new("since", "取引開始日", T::Date),
            Field::new("contacted", "最終連絡", T::DateTime),
            Field::new("tags", "タグ", T::CheckBox).options(["重要", "新規", "休眠"]),
            Field::new("owner", "担当者", T::UserSelect),
            Field::subtable(
                "lines",
                "明細",
                vec![Field::new("item", "品名", T::SingleLineText), Field::new("qty", "数量", T::Number)],
            ),
        ],
    )
    .add_token(TOKEN, Rights::RECORDS);
}

fn config(k: &FakeKintone, action: &str, extra_step: &str, dest_extra: &str) -> String {
    format!(
        r#"
worker: {{ concurrency: 1000 }}
sources:
  in: {{}}
destinations:
  crm:
    type: kintone
    base_url: "{base}"
    app: 12
    api_token: "{TOKEN}"
    {dest_extra}
  echo: {{ type: http, base_url: "{base}" }}
flows:
  to-kintone:
    source: in
    retry: {{ max_attempts: 5, initial: 1s, max: 1m }}
    steps:
      - to: crm
        action: {action}
        key: {{ field: customer_code, value: "{{{{ body.code }}}}" }}
        record:
          customer_code: "{{{{ body.code }}}}"
          customer_name: "{{{{ body.name }}}}"
          amount: "{{{{ body.amount | default('') }}}}"
          since: "{{{{ body.since | default('') }}}}"
          contacted: "{{{{ body.contacted | default('') }}}}"
          tags: "{{{{ body.tags | default('') }}}}"
          owner: "{{{{ body.owner | default([]) }}}}"
          lines: "{{{{ body.lines | default([]) }}}}"
{extra_step}
"#,
        base = k.base_url()
    )
}

fn value<'a>(record: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    &record[code]["value"]
}

#[tokio::test]
async fn upsert_converts_values_to_field_types_then_updates_the_same_record() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let app = spawn_app(&config(&k, "upsert", "", "")).await;
    app.post_json(
        "/hooks/in",
        json!({"code": "C001", "name": "㈱山田商事 \"本社\"", "amount": "1,200", "since": "令和8年11月22日",
               "contacted": "2026-11-22 10:30", "tags": "重要、新規", "owner": "sato",
               "lines": [{"item": "りんご", "qty": 3}]}),
    )
    .await;
    assert_eq!(app.drain().await, 1);
    let records = k.records(12);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(value(r, "customer_name"), "㈱山田商事 \"本社\"");
    assert_eq!(value(r, "amount"), "1200");
    assert_eq!(value(r, "since"), "2026-11-22");
    assert_eq!(value(r, "contacted"), "2026-11-22T01:30:00Z");
    assert_eq!(value(r, "tags"), &json!(["重要", "新規"]));
    assert_eq!(value(r, "owner")[0]["code"], "sato");
    assert_eq!(value(r, "lines")[0]["value"]["qty"]["value"], "3");

    app.post_json("/hooks/in", json!({"code": "C001", "name": "㈱山田商事", "amount": 5000})).await;
    app.drain().await;
    let records = k.records(12);
    assert_eq!(records.len(), 1, "the second event updated the record found by its key");
    assert_eq!(value(&records[0], "amount"), "5000");
    let ds = app.deliveries().await;
    let first = app.delivery(ds[0]["id"].as_i64().unwrap()).await;
    assert_eq!(first["outputs"][0]["body"]["operation"], "INSERT");
    let second = app.delivery(ds[1]["id"].as_i64().unwrap()).await;
    assert_eq!(second["outputs"][0]["body"]["operation"], "UPDATE");
    let detail = second;
    assert!(!detail.to_string().contains(TOKEN), "the API token is not in the history");
}

#[tokio::test]
async fn a_value_that_does_not_fit_fails_with_field_value_and_reason() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let app = spawn_app(&config(&k, "upsert", "", "")).await;
    app.post_json("/hooks/in", json!({"code": "C1", "name": "x", "amount": "たくさん"})).await;
    app.post_json("/hooks/in", json!({"code": "C2", "name": "y", "tags": "重要,存在しない"})).await;
    app.drain().await;
    let ds = app.deliveries().await;
    assert_eq!(ds[0]["status"], "dead");
    assert_eq!(
        ds[0]["last_error"],
        "step 0: kintone app 12: field `amount` (`金額`): value \"たくさん\" is not a number"
    );
    assert_eq!(ds[1]["status"], "dead");
    assert!(
        ds[1]["last_error"].as_str().unwrap().contains("is not one of the choices (重要, 新規, 休眠)"),
        "{}",
        ds[1]["last_error"]
    );
    assert!(k.records(12).is_empty());
}

#[tokio::test]
async fn a_burst_of_1000_events_is_written_in_10_requests() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let app = spawn_app(&config(&k, "upsert", "", "")).await;
    let rows: Vec<serde_json::Value> =
        (0..1000).map(|i| json!({"code": format!("C{i:04}"), "name": format!("顧客{i}"), "amount": i})).collect();
    // One CSV-like burst: a JSON array split into 1,000 events.
    let cfg_split = config(&k, "upsert", "", "").replace("  in: {}", "  in: { json: { split: rows } }");
    drop(app);
    let app = spawn_app(&cfg_split).await;
    assert_eq!(app.post_json("/hooks/in", json!(rows)).await.status(), 207);
    assert_eq!(app.drain().await, 1000);
    let writes = k.requests().iter().filter(|r| r.path.ends_with("/records.json")).count();
    assert!(writes <= 10, "{writes} record requests for 1,000 events");
    let records = k.records(12);
    assert_eq!(records.len(), 1000);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(value(r, "customer_code"), &json!(format!("C{i:04}")));
        assert_eq!(value(r, "amount"), &json!(i.to_string()));
    }
    assert!(app.deliveries().await.iter().all(|d| d["status"] == "succeeded"));
    let usage = app.api("/kintone/usage").await;
    assert_eq!(usage["items"][0]["app"], 12);
    assert!(usage["items"][0]["requests"].as_u64().unwrap() <= 11, "{usage}");
}

#[tokio::test]
async fn a_bad_record_in_a_batch_fails_alone() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let cfg =
        config(&k, "add", "", "").replace("        key: { field: customer_code, value: \"{{ body.code }}\" }\n", "");
    let app = spawn_app(&cfg.replace("  in: {}", "  in: { json: { split: rows } }")).await;
    // Row 3 has no name: it passes renkei's conversion, and kintone refuses the required field.
    let rows: Vec<serde_json::Value> = (0..5)
        .map(
            |i| if i == 2 { json!({"code": "C2", "name": ""}) } else { json!({"code": format!("C{i}"), "name": "ok"}) },
        )
        .collect();
    app.post_json("/hooks/in", json!(rows)).await;
    app.drain().await;
    let ds = app.deliveries().await;
    let statuses: Vec<&str> = ds.iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "dead", "succeeded", "succeeded"]);
    let err = ds[2]["last_error"].as_str().unwrap();
    assert!(err.contains("CB_VA01") && err.contains("customer_name"), "{err}");
    assert_eq!(k.records(12).len(), 4);
    let posts = k.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/records.json")).count();
    assert_eq!(posts, 2, "one refused batch, one without the bad record");
}

#[tokio::test]
async fn a_429_backs_off_and_the_domain_limit_holds() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let cfg = config(&k, "upsert", "", "concurrency: 2\n    batch: { enabled: false }");
    let app = spawn_app(&cfg).await;
    k.fail_next(1, 429, "GAIA_TO04");
    app.post_json("/hooks/in", json!({"code": "A", "name": "a"})).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "retrying");
    assert!(d["last_error"].as_str().unwrap().contains("GAIA_TO04"), "{d}");
    app.advance(Duration::from_secs(2));
    app.drain().await;
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");

    // Six deliveries at once, at most two requests in flight to the domain.
    for i in 0..6 {
        app.post_json("/hooks/in", json!({"code": format!("B{i}"), "name": "b"})).await;
    }
    k.hold_requests();
    let worker = app.worker.clone();
    let run = tokio::spawn(async move { worker.run_once().await });
    k.wait_for_in_flight(2).await;
    assert_eq!(k.in_flight(), 2);
    k.release_requests();
    run.await.unwrap().unwrap();
    assert_eq!(k.max_in_flight(), 2);
    assert_eq!(k.records(12).len(), 7);
}

#[tokio::test]
async fn guest_space_and_a_token_without_the_right() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    k.guest_space(12, 7);
    let cfg = config(&k, "upsert", "", "guest_space: 7");
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({"code": "G1", "name": "guest"})).await;
    app.drain().await;
    assert_eq!(app.deliveries().await[0]["status"], "succeeded");
    assert!(k.requests().iter().all(|r| r.path.starts_with("/k/guest/7/v1/")));

    let k2 = FakeKintone::start().await;
    customer_app(&k2);
    k2.add_token(12, "view-only", Rights::VIEW);
    let cfg = config(&k2, "upsert", "", "").replace(TOKEN, "view-only");
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({"code": "V1", "name": "v"})).await;
    app.drain().await;
    let d = &app.deliveries().await[0];
    assert_eq!(d["status"], "dead");
    let err = d["last_error"].as_str().unwrap();
    assert!(err.contains("lacks the right") && err.contains("add and edit records"), "{err}");

    let report: serde_json::Value = app.api_post("/destinations/crm/test", json!({})).await.json();
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().unwrap();
    let by = |what: &str| {
        checks.iter().find(|c| c["what"] == what).unwrap_or_else(|| panic!("{what}: {report}"))["ok"].clone()
    };
    assert_eq!(by("open app 12"), true);
    assert_eq!(by("view records"), true);
    assert_eq!(by("add records"), false);
    assert_eq!(by("edit records"), false);
    assert!(report["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "customer_name" && f["label"] == "顧客名"));
    assert_eq!(by("field mapping"), true);
}

#[tokio::test]
async fn check_online_finds_unknown_and_read_only_mapped_fields() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let cfg = config(&k, "upsert", "", "")
        .replace(
            "          lines: \"{{ body.lines | default([]) }}\"",
            "          lines: \"{{ body.lines | default([]) }}\"\n          レコード番号: \"1\"\n          typo_field: x",
        )
        .replace("key: { field: customer_code,", "key: { field: customer_name,");
    let app = spawn_app(&cfg).await;
    let report: serde_json::Value = app.api_post("/destinations/crm/test", json!({})).await.json();
    let checks = report["checks"].as_array().unwrap();
    let mapping = checks.iter().find(|c| c["what"] == "field mapping").unwrap().clone();
    assert_eq!(mapping["ok"], false);
    let detail = mapping["detail"].as_str().unwrap();
    assert!(detail.contains("record.typo_field: the app has no field `typo_field`"), "{detail}");
    assert!(detail.contains("record.レコード番号: `レコード番号` is a read-only RECORD_NUMBER field"), "{detail}");
    assert!(detail.contains("key.field: `customer_name` must be a SINGLE_LINE_TEXT or NUMBER field"), "{detail}");
    assert_eq!(report["ok"], false);
}

#[tokio::test]
async fn delete_status_and_later_steps_by_key() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    k.enable_process(12, vec![StatusAction::new("承認する", "未処理", "承認済み")], "未処理");
    let id = k.seed_record(12, json!({"customer_code": {"value": "S1"}, "customer_name": {"value": "s"}}));
    k.seed_record(12, json!({"customer_code": {"value": "D1"}, "customer_name": {"value": "d"}}));
    let cfg = format!(
        r#"
sources:
  in: {{}}
destinations:
  crm: {{ type: kintone, base_url: "{base}", app: 12, api_token: "{TOKEN}" }}
  back: {{ type: http, base_url: "{base}" }}
flows:
  note:
    source: in
    when: "body.op == 'note'"
    steps:
      - to: crm
        action: comment
        key: {{ field: customer_code, value: "{{{{ body.code }}}}" }}
        comment: "{{{{ body.text }}}}"
  approve:
    source: in
    when: "body.op == 'approve'"
    steps:
      - to: crm
        action: status
        key: {{ field: customer_code, value: "{{{{ body.code }}}}" }}
        status: 承認する
  remove:
    source: in
    when: "body.op == 'delete'"
    steps:
      - to: crm
        action: delete
        key: {{ field: customer_code, value: "{{{{ body.code }}}}" }}
  add-then-report:
    source: in
    when: "body.op == 'add'"
    steps:
      - to: crm
        action: add
        record: {{ customer_code: "{{{{ body.code }}}}", customer_name: 新規 }}
      - to: back
        method: GET
        path: "/k/v1/record.json"
        query: {{ app: "12", id: "{{{{ steps[0].body.id }}}}" }}
        headers: {{ X-Cybozu-API-Token: "{TOKEN}" }}
"#,
        base = k.base_url()
    );
    let app = spawn_app(&cfg).await;
    app.post_json("/hooks/in", json!({"op": "approve", "code": "S1"})).await;
    app.post_json("/hooks/in", json!({"op": "delete", "code": "D1"})).await;
    app.post_json("/hooks/in", json!({"op": "add", "code": "N1"})).await;
    app.post_json("/hooks/in", json!({"op": "note", "code": "S1", "text": "承認しました\n担当: 佐藤"})).await;
    app.drain().await;
    let ds: Vec<serde_json::Value> = app.deliveries().await.into_iter().filter(|d| d["status"] != "skipped").collect();
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:#?}");
    let records = k.records(12);
    let codes: Vec<&str> = records.iter().map(|r| value(r, "customer_code").as_str().unwrap()).collect();
    assert_eq!(codes, ["S1", "N1"]);
    let s1 = records.iter().find(|r| value(r, "$id") == &json!(id.to_string())).unwrap();
    assert_eq!(value(s1, "ステータス"), "承認済み");
    assert_eq!(k.comments(12, id), ["承認しました\n担当: 佐藤"]);
    // The record id kintone gave the new record reached the next step.
    let add = ds.iter().find(|d| d["flow"] == "add-then-report").unwrap();
    let detail = app.delivery(add["id"].as_i64().unwrap()).await;
    assert_eq!(detail["outputs"][1]["body"]["record"]["customer_code"]["value"], "N1");
}

#[tokio::test]
async fn kintone_webhooks_as_a_source() {
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  k: {{ preset: kintone }}
destinations:
  chat: {{ type: http, base_url: "{}" }}
flows:
  notify:
    source: k
    when: "event.type == 'ADD_RECORD'"
    steps: [ {{ to: chat, body: {{ text: "{{{{ body.record.顧客名 }}}} ({{{{ body.record_types.顧客名 }}}})" }} }} ]
"#,
        rx.url
    );
    let app = spawn_app(&cfg).await;
    let hook = json!({"id": "01234567-0123-0123-0123-0123456789ab", "type": "ADD_RECORD", "app": {"id": "1", "name": "案件管理"},
        "record": {"$id": {"type": "__ID__", "value": "2"}, "顧客名": {"type": "SINGLE_LINE_TEXT", "value": "㈱山田"}},
        "recordTitle": "㈱山田", "url": "https://example.cybozu.com/k/1/show#record=2"});
    let first = app.post_json("/hooks/k", hook.clone()).await.json();
    let again = app.post_json("/hooks/k", hook).await.json();
    assert_eq!(again["duplicate"], true, "kintone's notification id is the dedupe key");
    assert_eq!(again["event_id"], first["event_id"]);
    app.drain().await;
    assert_eq!(rx.received()[0].json(), json!({"text": "㈱山田 (SINGLE_LINE_TEXT)"}));
}

#[tokio::test]
async fn polling_turns_changes_without_webhooks_into_events_once() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let rx = Receiver::start().await;
    let cfg = format!(
        r#"
sources:
  changes: {{ preset: kintone, poll: {{ destination: crm, every: 1m }} }}
destinations:
  crm: {{ type: kintone, base_url: "{base}", app: 12, api_token: "{TOKEN}" }}
  out: {{ type: http, base_url: "{rx}" }}
flows:
  forward:
    source: changes
    steps: [ {{ to: out, body: {{ code: "{{{{ body.record.customer_code }}}}", type: "{{{{ event.type }}}}" }} }} ]
"#,
        base = k.base_url(),
        rx = rx.url
    );
    let app = spawn_app(&cfg).await;
    let client = app.app.http();
    let poll = || renkei::poll::poll_once(&app.app, &client, "changes");
    // The first look only sets the cursor.
    assert_eq!(poll().await, Ok(0));
    let id = k.seed_record(12, json!({"customer_code": {"value": "P1"}, "customer_name": {"value": "p1"}}));
    k.seed_record(12, json!({"customer_code": {"value": "P2"}, "customer_name": {"value": "p2"}}));
    assert_eq!(poll().await, Ok(2));
    assert_eq!(poll().await, Ok(0), "records read again at the cursor are recognised");
    // A change kintone sends no webhook for (a bulk write here): picked up as an update.
    let r = app
        .http
        .put(format!("{}/k/v1/records.json", k.base_url()))
        .header("X-Cybozu-API-Token", TOKEN)
        .json(&json!({"app": 12, "records": [{"id": id, "record": {"customer_name": {"value": "changed"}}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(poll().await, Ok(1));
    app.drain().await;
    let mut got: Vec<serde_json::Value> = rx.received().iter().map(|r| r.json()).collect();
    got.sort_by_key(|v| v.to_string());
    assert_eq!(
        got,
        [
            json!({"code": "P1", "type": "ADD_RECORD"}),
            json!({"code": "P1", "type": "UPDATE_RECORD"}),
            json!({"code": "P2", "type": "ADD_RECORD"})
        ]
    );
    assert!(app.app.store.get_state("poll:changes").await.unwrap().is_some());
}

#[tokio::test]
async fn update_by_id_and_by_key_with_more_field_types() {
    let k = FakeKintone::start().await;
    k.add_app(
        12,
        vec![
            Field::new("code", "コード", T::SingleLineText).unique(),
            Field::new("note", "備考", T::MultiLineText),
            Field::new("kind", "区分", T::DropDown).options(["法人", "個人"]),
            Field::new("at", "時刻", T::Time),
            Field::new("labels", "ラベル", T::MultiSelect).options(["A", "B", "C"]),
            Field::new("link", "URL", T::Link),
        ],
    )
    .add_token(TOKEN, Rights::RECORDS);
    let id = k.seed_record(12, json!({"code": {"value": "K1"}}));
    let cfg = format!(
        r#"
sources:
  in: {{}}
destinations:
  crm: {{ type: kintone, base_url: "{base}", app: 12, api_token: "{TOKEN}", batch: {{ enabled: false }} }}
flows:
  by-id:
    source: in
    when: "body.by == 'id'"
    steps: [ {{ to: crm, action: update, id: "{{{{ body.id }}}}", record: {{ note: "{{{{ body.note }}}}", at: "{{{{ body.at }}}}" }} }} ]
  by-key:
    source: in
    when: "body.by == 'key'"
    steps:
      - to: crm
        action: update
        key: {{ field: code, value: "{{{{ body.code }}}}" }}
        record: {{ kind: "{{{{ body.kind }}}}", labels: "{{{{ body.labels }}}}", link: "{{{{ body.link }}}}" }}
"#,
        base = k.base_url()
    );
    let app = spawn_app(&cfg).await;
    app.post_json(
        "/hooks/in",
        json!({"by": "id", "id": id.to_string(), "note": "1行目\n2行目 \"引用\"", "at": "9時5分"}),
    )
    .await;
    app.post_json(
        "/hooks/in",
        json!({"by": "key", "code": "K1", "kind": "法人", "labels": "A、C", "link": "https://example.jp/a?b=1"}),
    )
    .await;
    app.drain().await;
    let ds: Vec<serde_json::Value> = app.deliveries().await.into_iter().filter(|d| d["status"] != "skipped").collect();
    assert!(ds.iter().all(|d| d["status"] == "succeeded"), "{ds:#?}");
    let r = &k.records(12)[0];
    assert_eq!(value(r, "note"), "1行目\n2行目 \"引用\"");
    assert_eq!(value(r, "at"), "09:05");
    assert_eq!(value(r, "kind"), "法人");
    assert_eq!(value(r, "labels"), &json!(["A", "C"]));
    assert_eq!(value(r, "link"), "https://example.jp/a?b=1");
    let puts: Vec<serde_json::Value> = k
        .requests()
        .iter()
        .filter(|q| q.method == "PUT" && q.path.ends_with("/record.json"))
        .map(|q| q.json().unwrap())
        .collect();
    assert_eq!(puts.len(), 2);
    // Two deliveries without an ordering key: either may go first.
    assert!(puts.iter().any(|p| p["id"] == json!(id.to_string())), "{puts:?}");
    assert!(puts.iter().any(|p| p["updateKey"] == json!({"field": "code", "value": "K1"})), "{puts:?}");
}

#[tokio::test]
async fn fields_are_read_once_and_again_after_a_connection_test() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let app = spawn_app(&config(&k, "upsert", "", "batch: { enabled: false }")).await;
    let form_reads = || k.requests().iter().filter(|r| r.path.ends_with("/app/form/fields.json")).count();
    app.post_json("/hooks/in", json!({"code": "F1", "name": "a"})).await;
    app.post_json("/hooks/in", json!({"code": "F2", "name": "b"})).await;
    app.drain().await;
    assert_eq!(form_reads(), 1, "read once, then kept");
    let report: serde_json::Value = app.api_post("/destinations/crm/test", json!({})).await.json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(form_reads(), 2);
    app.post_json("/hooks/in", json!({"code": "F3", "name": "c"})).await;
    app.drain().await;
    assert_eq!(form_reads(), 3, "the connection test made the worker read the app's fields again");
}

/// Two nodes on one PostgreSQL database: the domain's limit of 2 holds across them (slots kept in the store),
/// not 2 per node. On SQLite (one process) there is nothing to share: skipped, saying so.
#[tokio::test]
async fn the_domain_limit_holds_across_nodes() {
    let k = FakeKintone::start().await;
    customer_app(&k);
    let cfg = config(&k, "upsert", "", "concurrency: 2\n    batch: { enabled: false }")
        .replace("worker: { concurrency: 1000 }", "worker: { concurrency: 3 }");
    let app = spawn_app(&cfg).await;
    if !app.app.store.shared() {
        println!("skipped kintone::the_domain_limit_holds_across_nodes: the store is not shared by several nodes");
        return;
    }
    // A second node: its own config, semaphores and worker, the same database.
    let loaded = app.app.loader.load(&app.app.loaded().text).unwrap();
    let home =
        renkei::app::Home { revision: app.app.revision(), key: Some(app.key.clone()), loader: app.app.loader.clone() };
    let other = renkei::app::App::with_revisions(loaded, home, app.app.store.clone(), app.clock.clone(), None);
    let w1 = app.worker.clone();
    let w2 = std::sync::Arc::new(renkei::worker::Worker::new(other));
    // Each node reads the app's fields once (its own cache), before the requests are held.
    for (i, w) in [&w1, &w2].into_iter().enumerate() {
        app.post_json("/hooks/in", json!({"code": format!("W{i}"), "name": "warm"})).await;
        assert_eq!(w.drain().await.unwrap(), 1);
    }

    for i in 0..6 {
        app.post_json("/hooks/in", json!({"code": format!("N{i}"), "name": "n"})).await;
    }
    k.hold_requests();
    let first = tokio::spawn({
        let w = w1.clone();
        async move { w.run_once().await }
    });
    tokio::time::timeout(Duration::from_secs(10), k.wait_for_in_flight(2)).await.expect("two requests in flight");
    let second = tokio::spawn({
        let w = w2.clone();
        async move { w.run_once().await }
    });
    // The second node has its three deliveries and waits for a slot the first holds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w2.slot_waits() == 0 {
        assert!(std::time::Instant::now() < deadline, "the second node never waited for a slot");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(k.in_flight(), 2);
    k.release_requests();
    assert_eq!(first.await.unwrap().unwrap() + second.await.unwrap().unwrap(), 6);
    assert_eq!(k.max_in_flight(), 2, "two at once across both nodes");
    assert_eq!(k.records(12).len(), 8);
}
