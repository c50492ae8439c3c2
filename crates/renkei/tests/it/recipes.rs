//! The recipes in `examples/` (the five seed integrations), end to end: each test loads the recipe's own
//! `renkei.yaml`, points its URLs at fakes of both ends through the environment, posts the recipe's own sample
//! events, drains the worker and checks what arrived. The last tests run `renkei check` and `renkei test` on every
//! recipe and every sample event, as an admin following a README would.

use std::path::{Path, PathBuf};
use std::process::Command;

use renkei_core::signing::standard_verify;
use renkei_testkit::esm::FakeEsm;
use renkei_testkit::kintone::{FakeKintone, Field, FieldType as T, Rights};
use renkei_testkit::questetra::{DataType, FakeQuestetra};
use renkei_testkit::rakuraku::FakeRakuraku;
use renkei_testkit::shopran::FakeShopran;
use serde_json::{json, Value};

use crate::harness::*;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The recipe's `renkei.yaml`, as written.
fn recipe(name: &str) -> String {
    std::fs::read_to_string(examples().join(name).join("renkei.yaml")).unwrap()
}

/// A sample event of a recipe, as bytes.
fn sample(recipe: &str, file: &str) -> Vec<u8> {
    std::fs::read(examples().join(recipe).join("events").join(file)).unwrap()
}

fn sample_json(recipe: &str, file: &str) -> Value {
    serde_json::from_slice(&sample(recipe, file)).unwrap()
}

/// Posts `body` to `path` with `content_type`, and optionally Basic credentials.
async fn send(app: &TestApp, path: &str, content_type: &str, basic: Option<(&str, &str)>, body: Vec<u8>) -> Answer {
    let mut req = app.http.post(app.url(path)).header("content-type", content_type).body(body);
    if let Some((user, password)) = basic {
        req = req.basic_auth(user, Some(password));
    }
    let r = req.send().await.unwrap();
    Answer { status: r.status().as_u16(), text: r.text().await.unwrap() }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn value<'a>(record: &'a Value, code: &str) -> &'a Value {
    &record[code]["value"]
}

// ---------------------------------------------------------------------------------------------------------------
// seed 000: 楽楽販売 ⇄ eセールスマネージャー

const ESM_TOKEN: &str = "esm-api-token-000";
const RR_TOKEN: &str = "rakuraku-api-token-000";

#[tokio::test]
async fn rakuraku_esm_approvals_reach_esm_in_order_and_esm_changes_come_back_without_echo() {
    let esm = FakeEsm::start("acme", ESM_TOKEN).await;
    esm.add_sheet("deal", &["deals.deal.approval_date", "deals.deal.expected_order_date"]);
    for id in [1001, 1002, 1003, 1004] {
        esm.seed("deal", id, json!({"deals.deal.name": format!("案件{id}")}));
    }
    let rr = FakeRakuraku::start("acme").await;
    rr.add_token(RR_TOKEN);
    rr.add_db("101455", &["101", "102", "103", "104"], &[]);
    for key in ["1001", "1003", "1004"] {
        rr.seed("101455", key, json!({"101": "旧名"}));
    }
    let approvers = examples().join("rakuraku-esm/approvers.csv").display().to_string();
    let (esm_url, rr_url) = (esm.api_url(), rr.account_url());
    let app = spawn_app_env(
        &recipe("rakuraku-esm"),
        &[
            ("RENKEI_ADMIN_TOKEN", ADMIN),
            ("ESM_API_URL", &esm_url),
            ("ESM_API_TOKEN", ESM_TOKEN),
            ("RAKURAKU_API_URL", &rr_url),
            ("RAKURAKU_API_TOKEN", RR_TOKEN),
            ("RAKURAKU_HOOK_TOKEN", "rr-hook-secret"),
            ("ESM_HOOK_TOKEN", "esm-hook-secret"),
            ("APPROVERS_CSV", &approvers),
        ],
    )
    .await;

    // 楽楽販売 → eSM: submission, first and second approval of deal 1001, rejection of 1002.
    for file in
        ["rakuraku_submission.json", "rakuraku_approval1.json", "rakuraku_approval2.json", "rakuraku_rejection.json"]
    {
        let r =
            app.post("/hooks/rakuraku?token=rr-hook-secret", "application/json", sample("rakuraku-esm", file)).await;
        assert_eq!(r.status, 202, "{file}: {}", r.text);
    }
    assert_eq!(app.post_json("/hooks/rakuraku", json!({"processType": "rakuraku_submission"})).await.status, 401);
    // An applicant missing from 申請者-承認者対応: that delivery fails, saying which value is missing.
    let stranger = json!({"processType": "rakuraku_submission", "keyId": "1003", "applicant": "未登録の人"});
    app.post_json("/hooks/rakuraku?token=rr-hook-secret", stranger).await;
    app.drain().await;
    let dead = app.api("/deliveries?flow=approval-to-esm&status=dead").await;
    let error = dead["items"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("一次承認者") && error.contains("undefined"), "{error}");
    let puts: Vec<_> = esm.requests().into_iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 4, "{puts:#?}");
    for r in &puts {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {ESM_TOKEN}").as_str()));
        assert_eq!(r.header("x-esm-timezone"), Some("Asia/Tokyo"));
    }
    let deal_1001: Vec<Value> =
        puts.iter().filter(|r| r.path == "/acme/pub/esms/v1/sheet/deal/1001").map(|r| r.json().unwrap()).collect();
    let statuses: Vec<&str> = deal_1001.iter().map(|b| b["deals.deal.approval_status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["申請中", "一次承認済", "承認済"], "in order per deal");
    let next: Vec<&str> = deal_1001.iter().map(|b| b["deals.deal.next_approver"].as_str().unwrap()).collect();
    assert_eq!(next, ["佐藤花子", "鈴木一郎", ""], "the next approver from 申請者-承認者対応 (approvers.csv)");
    let d1001 = esm.record("deal", 1001).unwrap();
    assert_eq!(d1001["deals.deal.approval_status"], "承認済");
    assert_eq!(d1001["deals.deal.approval_date"], "2026/11/22", "yyyy/mm/dd, in JST");
    assert_eq!(d1001["deals.deal.name"], "案件1001", "items not sent are kept");
    let d1002 = esm.record("deal", 1002).unwrap();
    assert_eq!(d1002["deals.deal.approval_status"], "否認");
    assert_eq!(d1002["deals.deal.applicant"], "髙橋次郎", "a Windows-31J character from the Shift_JIS table");
    assert_eq!(d1002["deals.deal.approver1"], "渡辺直美");

    // eSM → 楽楽販売. The webhook eSM sends about renkei's own first write comes back: not written back.
    let echo =
        app.post("/hooks/esm?token=esm-hook-secret", "application/json", sample("rakuraku-esm", "esm_echo.json"));
    assert_eq!(echo.await.status, 207);
    // A person changes the approval status in eSM: written back.
    let mut by_hand = sample_json("rakuraku-esm", "esm_echo.json");
    by_hand["fields"] = json!({"deals.deal.approval_status": "差戻し"});
    app.post_json("/hooks/esm?token=esm-hook-secret", by_hand).await;
    for file in ["esm_update.json", "esm_bulk_update.json", "esm_register.json"] {
        let r = app.post("/hooks/esm?token=esm-hook-secret", "application/json", sample("rakuraku-esm", file)).await;
        assert_eq!(r.status, 207, "{file}: {}", r.text);
    }
    let bulk = app.api("/events?source=esm&type=bulk_update").await;
    assert_eq!(bulk["items"].as_array().unwrap().len(), 2, "a bulk event becomes one event per record");
    app.drain().await;

    let calls = rr.requests();
    assert!(calls.iter().all(|r| r.header("x-hd-apitoken") == Some(RR_TOKEN)));
    let mut paths: Vec<&str> = calls.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/acme/apirecord/regist/version/v1",
            "/acme/apirecord/update/version/v1",
            "/acme/apirecord/update/version/v1",
            "/acme/apirecord/update/version/v1",
            "/acme/apirecord/update/version/v1"
        ],
        "register → regist, the rest → update; the echo is not sent"
    );
    // Deal 1001's two changes arrive in the order eSM sent them.
    let for_1001: Vec<Value> =
        calls.iter().map(|r| r.json().unwrap()).filter(|b| b["keyId"] == "1001").map(|b| b["values"].clone()).collect();
    assert_eq!(for_1001.len(), 2);
    assert_eq!(for_1001[0], json!({"104": "差戻し"}));
    let r1001 = rr.record("101455", "1001").unwrap();
    assert_eq!(r1001["104"], "差戻し", "the status a person set in eSM");
    assert_eq!(r1001["101"], "見積 \"特急\" 対応\n(2 行目)", "quotes and newlines arrive intact");
    assert_eq!(r1001["102"], "1200000");
    assert_eq!(r1001["103"], "2026/12/15");
    assert!(!r1001.contains_key("deals.deal.memo") && r1001.len() == 4, "unmapped items are not sent: {r1001:?}");
    assert_eq!(rr.record("101455", "1003").unwrap()["102"], "500000");
    assert_eq!(rr.record("101455", "1004").unwrap()["103"], "2027/01/10");
    assert_eq!(rr.record("101455", "1005").unwrap()["101"], "新規案件 ㈱山田商事", "register → regist");

    let back = app.api("/deliveries?flow=esm-to-rakuraku").await;
    let skipped: Vec<&Value> = back["items"].as_array().unwrap().iter().filter(|d| d["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 1);
    let reason = skipped[0]["last_error"].as_str().unwrap();
    assert!(reason.starts_with("loop guard: renkei wrote this change itself (flow `approval-to-esm`"), "{reason}");
    let history = app.api("/deliveries?limit=500").await.to_string();
    assert!(!history.contains(ESM_TOKEN) && !history.contains(RR_TOKEN), "tokens are not in the history");
}

// ---------------------------------------------------------------------------------------------------------------
// seed 001: Re:lation → kintone

fn tickets_app(k: &FakeKintone, token: &str) {
    // The seed asks only for レコード追加; kintone also lets that token read the form (cybozu.dev: fields.json needs
    // view, add or app-management rights), but the fake asks for the view right, so the test token has both.
    let rights = Rights { view: true, add: true, edit: false, delete: false, manage_app: false };
    k.add_app(
        15,
        vec![
            Field::new("ticket_id", "チケットID", T::Number),
            Field::new("inbox", "受信箱", T::SingleLineText),
            Field::new("action_type", "行動", T::SingleLineText),
            Field::new("title", "件名", T::SingleLineText),
            Field::new("status", "ステータス", T::DropDown).options(["未対応", "対応中", "対応完了"]),
            Field::new("assignee", "担当者", T::SingleLineText),
            Field::new("channel", "チャネル", T::SingleLineText),
            Field::new("customer_name", "お客様名", T::SingleLineText),
            Field::new("customer_email", "メールアドレス", T::SingleLineText),
            Field::new("content", "本文", T::MultiLineText),
            Field::new("acted_at", "日時", T::DateTime),
            Field::new("ticket_url", "チケットURL", T::Link),
        ],
    )
    .add_token(token, rights);
}

#[tokio::test]
async fn relation_ticket_actions_become_kintone_records_after_the_connection_test() {
    let k = FakeKintone::start().await;
    tickets_app(&k, "relation-add-token");
    let base = k.base_url();
    let env = [
        ("RENKEI_ADMIN_TOKEN", ADMIN),
        ("KINTONE_BASE_URL", base.as_str()),
        ("KINTONE_APP", "15"),
        ("KINTONE_API_TOKEN", "relation-add-token"),
        ("RELATION_HOOK_TOKEN", "relation-secret"),
    ];
    let app = spawn_app_env(&recipe("relation-kintone"), &env).await;

    // 認証: the token opens the app and may add records; the fields are listed for the mapping.
    let report = app.api_post("/destinations/tickets/test", json!({})).await.json();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["checks"].as_array().unwrap().iter().any(|c| c["what"] == "add records" && c["ok"] == true));
    assert!(report["fields"].as_array().unwrap().iter().any(|f| f["code"] == "status" && f["label"] == "ステータス"));
    // A wrong token fails the test and writes nothing.
    let wrong = [env[0], env[1], env[2], ("KINTONE_API_TOKEN", "not-a-token"), env[4]];
    let other = spawn_app_env(&recipe("relation-kintone"), &wrong).await;
    let report = other.api_post("/destinations/tickets/test", json!({})).await.json();
    assert_eq!(report["ok"], false, "{report}");

    for file in ["mail_received.json", "reply_sent.json", "status_closed.json"] {
        let r = app.post("/hooks/relation?token=relation-secret", "application/json", sample("relation-kintone", file));
        assert_eq!(r.await.status, 202, "{file}");
    }
    let again = app
        .post(
            "/hooks/relation?token=relation-secret",
            "application/json",
            sample("relation-kintone", "mail_received.json"),
        )
        .await;
    assert_eq!(again.json()["duplicate"], true, "the same action is registered once");
    app.drain().await;
    let records = k.records(15);
    assert_eq!(records.len(), 3);
    let first = &records[0];
    assert_eq!(value(first, "ticket_id"), "1234");
    assert_eq!(value(first, "status"), "未対応");
    assert_eq!(value(first, "content"), "お世話になっております。\n\"特急\"の見積をお願いします。\n㈱山田商事 山田");
    assert_eq!(value(first, "acted_at"), "2026-11-22T01:30:00Z", "+09:00 converted for kintone");
    let statuses: Vec<&Value> = records.iter().map(|r| value(r, "status")).collect();
    assert_eq!(statuses, ["未対応", "対応中", "対応完了"]);
    let adds = k.requests().into_iter().filter(|r| r.method == "POST" && r.path.starts_with("/k/v1/record")).count();
    assert!((1..=3).contains(&adds), "{adds} add requests");
    assert!(k.requests().iter().all(|r| r.method != "PUT" && r.method != "DELETE"), "create-only");
}

// ---------------------------------------------------------------------------------------------------------------
// seed 002: 働くDB

#[tokio::test]
async fn htdb_csv_rows_upsert_into_kintone_go_out_as_shift_jis_csv_and_one_sms_per_record() {
    let k = FakeKintone::start().await;
    k.add_app(
        21,
        vec![
            Field::new("customer_code", "顧客コード", T::SingleLineText).unique().required(),
            Field::new("customer_name", "顧客名", T::SingleLineText),
            Field::new("phone", "電話番号", T::SingleLineText),
            Field::new("email", "メールアドレス", T::SingleLineText),
            Field::new("since", "取引開始日", T::Date),
            Field::new("rank", "ランク", T::DropDown).options(["A", "B", "C"]),
        ],
    )
    .add_token("htdb-kintone-token", Rights::RECORDS);
    k.seed_record(21, json!({"customer_code": {"value": "C001"}, "customer_name": {"value": "旧社名"}}));
    let core = Receiver::start().await;
    let sms = Receiver::start().await;
    sms.answer_by_default(Reply::json(200, json!({"id": "sms-001", "status": "queued"})));
    let htdb = FakeRakuraku::start("acme").await;
    htdb.add_token("htdb-api-token");
    htdb.add_db("201877", &["301", "302", "303"], &[]);
    htdb.seed("201877", "5001", json!({"301": "未送信"}));
    let (base, htdb_url, sms_url) = (k.base_url(), htdb.account_url(), format!("{}/v1", sms.url));
    let env = [
        ("RENKEI_ADMIN_TOKEN", ADMIN),
        ("KINTONE_BASE_URL", base.as_str()),
        ("KINTONE_APP", "21"),
        ("KINTONE_API_TOKEN", "htdb-kintone-token"),
        ("HTDB_HOOK_TOKEN", "htdb-secret"),
        ("CORE_URL", core.url.as_str()),
        ("CORE_USER", "renkei"),
        ("CORE_PASSWORD", "core-password"),
        ("SMS_API_URL", sms_url.as_str()),
        ("SMS_API_TOKEN", "sms-token"),
        ("HTDB_API_URL", htdb_url.as_str()),
        ("HTDB_API_TOKEN", "htdb-api-token"),
    ];
    let app = spawn_app_env(&recipe("htdb"), &env).await;
    let csv = sample("htdb", "customers.csv");
    assert!(std::str::from_utf8(&csv).is_err(), "the sample is Shift_JIS, as 働くDB sends it");

    // システム連携 → one kintone upsert per row; the header and footer lines are not rows.
    let r = app.post("/hooks/htdb-customers?token=htdb-secret", "text/csv", csv.clone()).await;
    assert_eq!(r.status, 207, "{}", r.text);
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 3);
    assert_eq!(app.post("/hooks/htdb-customers?token=wrong", "text/csv", csv.clone()).await.status, 401);
    app.drain().await;
    let records = k.records(21);
    assert_eq!(records.len(), 3, "C001 updated, C002 and C003 added");
    let by_code = |code: &str| records.iter().find(|r| value(r, "customer_code") == code).unwrap().clone();
    assert_eq!(value(&by_code("C001"), "customer_name"), "㈱山田商事");
    assert_eq!(value(&by_code("C001"), "since"), "2026-04-01");
    assert_eq!(value(&by_code("C002"), "customer_name"), "髙橋工業, 本社");
    assert_eq!(value(&by_code("C002"), "since"), "2025-10-01", "令和7年10月1日");
    assert_eq!(value(&by_code("C003"), "customer_name"), "ﾀﾅｶ \"特急\" 便");

    // The same CSV out to the core system, as Shift_JIS CSV with its own header and footer lines.
    assert_eq!(app.post("/hooks/htdb-to-core?token=htdb-secret", "text/csv", csv).await.status, 202);
    app.drain().await;
    let got = core.received();
    assert_eq!(got.len(), 1);
    let out = &got[0];
    assert_eq!(out.path, "/import/customers");
    assert_eq!(out.header("content-type"), Some("text/csv; charset=Shift_JIS"));
    assert_eq!(out.header("authorization"), Some("Basic cmVua2VpOmNvcmUtcGFzc3dvcmQ="), "renkei:core-password");
    let (text, _, bad) = encoding_rs::SHIFT_JIS.decode(&out.body);
    assert!(!bad && std::str::from_utf8(&out.body).is_err(), "Shift_JIS on the wire");
    assert_eq!(
        text,
        "#CUSTOMERS,renkei\r\n顧客コード,顧客名,電話番号,ランク\r\nC001,㈱山田商事,03-1234-5678,A\r\n\
         C002,\"髙橋工業, 本社\",06-2345-6789,B\r\nC003,\"ﾀﾅｶ \"\"特急\"\" 便\",092-345-6789,C\r\n#END\r\n"
    );

    // One record from the list screen's button: one SMS, then the result into 働くDB through its record API.
    let r = app.post("/hooks/htdb-sms?token=htdb-secret", "application/json", sample("htdb", "sms_request.json"));
    assert_eq!(r.await.status, 202);
    let again = app.post("/hooks/htdb-sms?token=htdb-secret", "application/json", sample("htdb", "sms_request.json"));
    assert_eq!(again.await.json()["duplicate"], true);
    app.drain().await;
    let sent = sms.received();
    assert_eq!(sent.len(), 1, "one API call per record");
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].header("authorization"), Some("Bearer sms-token"));
    assert_eq!(sent[0].json()["to"], "+819012345678");
    assert!(sent[0].json()["text"].as_str().unwrap().starts_with("山田様"));
    let update = htdb.requests().into_iter().last().unwrap();
    assert_eq!(update.path, "/acme/apirecord/update/version/v1");
    assert_eq!(update.header("x-hd-apitoken"), Some("htdb-api-token"));
    let record = htdb.record("201877", "5001").unwrap();
    assert_eq!(record["301"], "送信済");
    assert_eq!(record["302"], "2026/11/22 09:00");
    assert_eq!(record["303"], "sms-001", "the SMS id from the first step's answer");
}

// ---------------------------------------------------------------------------------------------------------------
// seed 003: Shopらん

const WHSEC_MAIL: &str = "whsec_bWFpbC1yZWxheS1zZWNyZXQtZm9yLXRlc3Rz";
const WHSEC_STORE: &str = "whsec_c3RvcmUtc3lzdGVtLXNlY3JldC1mb3ItdGVzdHM=";

#[tokio::test]
async fn shopran_notices_are_confirmed_with_the_sender_then_fanned_out_by_type_and_priority() {
    let shop = FakeShopran::start("webapi-key-003").await;
    let samples =
        ["publish_critical.json", "update_important.json", "publish_normal.json", "delete.json", "verify.json"];
    for file in samples {
        shop.issue_token(sample_json("shopran", file)["token"].as_str().unwrap());
    }
    let (chat, mail, store) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let (scheme, host) = store.url.split_once("://").unwrap();
    let store_url = format!("{scheme}://stores:p%40ss@{host}/api/notices");
    let (shop_url, chat_url, mail_url) =
        (shop.base_url(), format!("{}/hooks/notices", chat.url), format!("{}/notices", mail.url));
    let env = [
        ("RENKEI_ADMIN_TOKEN", ADMIN),
        ("SHOPRAN_URL", shop_url.as_str()),
        ("SHOPRAN_WEBAPI_KEY", "webapi-key-003"),
        ("SHOPRAN_HOOK_PASSWORD", "hook-password"),
        ("CHAT_WEBHOOK_URL", chat_url.as_str()),
        ("MAIL_RELAY_URL", mail_url.as_str()),
        ("MAIL_RELAY_SECRET", WHSEC_MAIL),
        ("STORE_SYSTEM_URL", store_url.as_str()),
        ("STORE_SYSTEM_SECRET", WHSEC_STORE),
    ];
    let app = spawn_app_env(&recipe("shopran"), &env).await;
    let shopran = Some(("shopran", "hook-password"));
    for file in samples {
        let r = send(&app, "/hooks/shopran", "application/json; charset=utf-8", shopran, sample("shopran", file)).await;
        assert_eq!(r.status, 202, "{file}: {}", r.text);
    }
    // A forged notice: Shopらん does not confirm its token, so it is refused and recorded.
    let mut forged = sample_json("shopran", "publish_critical.json");
    forged["token"] = json!("forged-token");
    let r = send(&app, "/hooks/shopran", "application/json", shopran, forged.to_string().into_bytes()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "not_confirmed");
    // Wrong Basic credentials: refused before Shopらん is asked.
    let asked = shop.validated_tokens().len();
    let wrong = Some(("shopran", "guess"));
    assert_eq!(
        send(&app, "/hooks/shopran", "application/json", wrong, sample("shopran", "verify.json")).await.status,
        401
    );
    assert_eq!(shop.validated_tokens().len(), asked);
    let calls = shop.requests();
    let params = form(&calls[0].body);
    assert_eq!(params[0], ("func".to_string(), "validateWebhookToken".to_string()));
    assert_eq!(params[1], ("key".to_string(), "webapi-key-003".to_string()));
    assert_eq!(shop.validated_tokens().last().map(String::as_str), Some("forged-token"));
    app.drain().await;

    // Chat: PUBLISH and UPDATE, IMPORTANT (4) and CRITICAL (7) only.
    let mut texts: Vec<String> =
        chat.received().iter().map(|r| r.json()["text"].as_str().unwrap().to_owned()).collect();
    // Deliveries without an ordering key run side by side: the order they arrive in is not promised.
    texts.sort();
    assert_eq!(
        texts,
        [
            "【緊急】【至急】商品回収のお願い \"ロット A-12\"（No.1501）公開 11/22 09:00 対象 3 店舗",
            "【重要】年末年始の営業時間（No.1502・更新）公開 11/22 09:00 対象 2 店舗"
        ]
    );
    let now = t0().timestamp();
    let verified = |r: &Received, secret: &str| {
        standard_verify(
            &[secret],
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            r.header("webhook-signature"),
            &r.body,
            now,
            60,
        )
    };
    // Mail relay: every notice, VERIFY included, signed, in renkei's envelope.
    let relayed = mail.received();
    let mut types: Vec<String> = relayed.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(types, ["DELETE", "PUBLISH", "PUBLISH", "UPDATE", "VERIFY"]);
    for r in &relayed {
        assert_eq!(verified(r, WHSEC_MAIL), Ok(()));
        assert_eq!(r.json()["source"], "shopran");
    }
    let recall = relayed.iter().find(|r| r.json()["data"]["priority"] == 7).expect("the CRITICAL notice");
    assert_eq!(recall.json()["data"]["title"], "【至急】商品回収のお願い \"ロット A-12\"");
    // Store system: PUBLISH, UPDATE and DELETE, signed, with the credentials of its URL, in its own shape.
    let stores = store.received();
    let mut events: Vec<(String, String)> = stores
        .iter()
        .map(|r| (r.json()["event"].as_str().unwrap().to_owned(), r.json()["priority"].as_str().unwrap().to_owned()))
        .collect();
    events.sort();
    let expected = [("DELETE", "IMPORTANT"), ("PUBLISH", "CRITICAL"), ("PUBLISH", "NORMAL"), ("UPDATE", "IMPORTANT")];
    assert_eq!(events, expected.map(|(e, p)| (e.to_owned(), p.to_owned())));
    for r in &stores {
        assert_eq!(verified(r, WHSEC_STORE), Ok(()));
        assert!(verified(r, WHSEC_MAIL).is_err(), "each subscriber has its own secret");
        assert_eq!(r.header("authorization"), Some("Basic c3RvcmVzOnBAc3M="), "stores:p@ss");
        assert_eq!(r.path, "/api/notices");
    }
    let critical = stores.iter().find(|r| r.json()["priority"] == "CRITICAL").unwrap();
    assert_eq!(critical.json()["stores"], json!(["S001", "S002", "S003"]));
    assert_eq!(critical.json()["tasks"][0]["name"], "売場変更");

    let rejected = app.api("/events?status=rejected").await;
    assert_eq!(rejected["items"].as_array().unwrap().len(), 2, "the forged notice and the bad credentials");
    let history = format!("{}{}", rejected, app.api("/deliveries?limit=500").await);
    assert!(!history.contains("webapi-key-003") && !history.contains("hook-password") && !history.contains("p@ss"));
}

// ---------------------------------------------------------------------------------------------------------------
// seed 004: Questetra ⇄ kintone

#[tokio::test]
async fn questetra_updates_kintone_by_record_number_and_a_kintone_status_change_starts_a_process() {
    let k = FakeKintone::start().await;
    k.add_app(
        31,
        vec![
            Field::new("customerUserName", "顧客担当者名", T::SingleLineText),
            Field::new("customerUserEmail", "顧客メールアドレス", T::SingleLineText),
            Field::new("expireDate", "契約期限", T::Date),
            Field::new("note", "備考", T::MultiLineText),
        ],
    )
    .add_token("contracts-token", Rights::RECORDS);
    for name in ["A", "B", "C"] {
        k.seed_record(31, json!({"customerUserName": {"value": name}}));
    }
    let q = FakeQuestetra::start().await;
    q.add_message_start(
        12,
        3,
        "questetra-key-004",
        vec![
            ("record_no", DataType::Number),
            ("customer", DataType::String),
            ("amount", DataType::Number),
            ("contract_date", DataType::Date),
            ("answer_due", DataType::DateTime),
            ("priority", DataType::Select(vec!["high".into(), "middle".into(), "low".into()])),
            ("owner", DataType::User),
            ("note", DataType::String),
        ],
    );
    let (base, q_url) = (k.base_url(), q.base_url());
    let env = [
        ("RENKEI_ADMIN_TOKEN", ADMIN),
        ("KINTONE_BASE_URL", base.as_str()),
        ("KINTONE_APP", "31"),
        ("KINTONE_API_TOKEN", "contracts-token"),
        ("QUESTETRA_URL", q_url.as_str()),
        ("QUESTETRA_API_KEY", "questetra-key-004"),
        ("QUESTETRA_HOOK_PASSWORD", "q-password"),
        ("KINTONE_HOOK_TOKEN", "kintone-hook-secret"),
    ];
    let app = spawn_app_env(&recipe("questetra-kintone"), &env).await;
    let questetra = Some(("questetra", "q-password"));

    // Questetra's HTTP event (form) → kintone record 3 by its record number.
    let form_ct = "application/x-www-form-urlencoded";
    let r =
        send(&app, "/hooks/questetra", form_ct, questetra, sample("questetra-kintone", "questetra_update.form")).await;
    // renkei acknowledges with 200 (`ack_status: 200`) and the event id: Questetra counts only 200 as success.
    assert_eq!(r.status, 200, "{}", r.text);
    let event_id = r.json()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(send(&app, "/hooks/questetra", form_ct, None, b"record_no=3".to_vec()).await.status, 401);
    app.drain().await;
    let record = k.records(31).into_iter().find(|r| value(r, "$id") == "3").unwrap();
    assert_eq!(value(&record, "customerUserName"), "山田 \"太郎\"");
    assert_eq!(value(&record, "customerUserEmail"), "yamada@example.co.jp");
    assert_eq!(value(&record, "expireDate"), "2027-03-31");
    assert_eq!(value(&record, "note"), "更新の条件:\n・価格 \"据え置き\"\n・支払いは月末 \\ 翌月末");
    // kintone's answer is kept for the process: found by the event id Questetra received.
    let ds = app.api(&format!("/deliveries?event_id={event_id}")).await;
    let detail = app.delivery(ds["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(detail["status"], "succeeded");
    assert!(detail["outputs"][0]["body"]["revision"].is_string(), "{detail}");

    // The seed's own JSON (values escaped by #escapeEcmaScript) → the same record through a raw JSON template.
    let json_ct = "application/json";
    let seed = sample("questetra-kintone", "questetra_seed.json");
    assert_eq!(send(&app, "/hooks/questetra-json", json_ct, questetra, seed).await.status, 200);
    // A body whose quotes Questetra did not escape: refused with a clear 400 and kept for inspection.
    let broken = r#"{"app": "31", "id": "3", "record": {"customerUserName": {"value": "山田 "太郎""}}}"#;
    let r = send(&app, "/hooks/questetra-json", json_ct, questetra, broken.as_bytes().to_vec()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "malformed_body");
    app.drain().await;
    let put = k.requests().into_iter().rfind(|r| r.method == "PUT" && r.path == "/k/v1/record.json").unwrap();
    assert_eq!(put.header("x-cybozu-api-token"), Some("contracts-token"));
    assert_eq!(put.json().unwrap()["record"]["customerUserName"]["value"], "山田 \"太郎\"");
    let record = k.records(31).into_iter().find(|r| value(r, "$id") == "3").unwrap();
    assert_eq!(value(&record, "customerUserName"), "山田 \"太郎\"");
    let rejected = app.api("/events?status=rejected&source=questetra-json").await;
    let id = rejected["items"][0]["id"].as_str().unwrap();
    assert_eq!(app.api(&format!("/events/{id}")).await["raw"], broken, "kept as sent");

    // kintone: the status becomes 審査待ち → a Questetra process starts, in Questetra's value forms.
    let hook = "/hooks/kintone?token=kintone-hook-secret";
    let r = app.post(hook, json_ct, sample("questetra-kintone", "kintone_status.json")).await;
    assert_eq!(r.status, 202);
    let mut other = sample_json("questetra-kintone", "kintone_status.json");
    other["id"] = json!("another-notification");
    other["record"]["ステータス"]["value"] = json!("完了");
    app.post_json(hook, other).await;
    app.drain().await;
    let started = q.processes();
    assert_eq!(started.len(), 1, "only the change to 審査待ち starts a process");
    let p = &started[0];
    assert_eq!((p.app_id, p.node_id), (12, 3));
    assert_eq!(p.value("record_no"), Some("3"));
    assert_eq!(p.value("customer"), Some("㈱山田商事"));
    assert_eq!(p.value("amount"), Some("1200000"));
    assert_eq!(p.value("contract_date"), Some("2026-11-20"));
    assert_eq!(p.value("answer_due"), Some("2026-11-30 12:34"), "kintone's UTC time, in JST");
    assert_eq!(p.value("priority"), Some("high"));
    assert_eq!(p.value("owner"), Some("sato@example.co.jp"));
    assert_eq!(p.value("note"), Some("至急 \"審査\" をお願いします。\n条件は添付のとおり。"));
    let history = app.api("/deliveries?limit=500").await.to_string();
    assert!(!history.contains("questetra-key-004") && !history.contains("contracts-token"));
}

// ---------------------------------------------------------------------------------------------------------------
// The binary on every recipe, as a README tells an admin to run it.

/// Every sample event of every recipe, with the flow it is for.
const SAMPLES: &[(&str, &str, &str)] = &[
    ("rakuraku-esm", "approval-to-esm", "rakuraku_submission.json"),
    ("rakuraku-esm", "approval-to-esm", "rakuraku_approval1.json"),
    ("rakuraku-esm", "approval-to-esm", "rakuraku_approval2.json"),
    ("rakuraku-esm", "approval-to-esm", "rakuraku_rejection.json"),
    ("rakuraku-esm", "esm-to-rakuraku", "esm_update.json"),
    ("rakuraku-esm", "esm-to-rakuraku", "esm_echo.json"),
    ("rakuraku-esm", "esm-to-rakuraku", "esm_bulk_update.json"),
    ("rakuraku-esm", "esm-to-rakuraku", "esm_register.json"),
    ("relation-kintone", "ticket-actions", "mail_received.json"),
    ("relation-kintone", "ticket-actions", "reply_sent.json"),
    ("relation-kintone", "ticket-actions", "status_closed.json"),
    ("htdb", "customers-to-kintone", "customers.csv"),
    ("htdb", "customers-to-core", "customers.csv"),
    ("htdb", "sms", "sms_request.json"),
    ("shopran", "subscription-chat", "publish_critical.json"),
    ("shopran", "subscription-chat", "update_important.json"),
    ("shopran", "subscription-mail-relay", "verify.json"),
    ("shopran", "subscription-store-system", "publish_normal.json"),
    ("shopran", "subscription-store-system", "delete.json"),
    ("questetra-kintone", "questetra-to-kintone", "questetra_update.form"),
    ("questetra-kintone", "questetra-json-to-kintone", "questetra_seed.json"),
    ("questetra-kintone", "kintone-to-questetra", "kintone_status.json"),
];

const RECIPES: &[&str] = &["rakuraku-esm", "relation-kintone", "htdb", "shopran", "questetra-kintone"];

/// The binary with a clean environment: the recipes' defaults, as on a fresh machine.
fn renkei() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_renkei"));
    c.env_clear().env("LANG", "C");
    c
}

#[test]
fn every_recipe_passes_check_and_every_sample_event_passes_renkei_test() {
    for name in RECIPES {
        let config = examples().join(name).join("renkei.yaml");
        let out = renkei().arg("check").arg("--config").arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        // Every file in events/ is tried below.
        for entry in std::fs::read_dir(examples().join(name).join("events")).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(SAMPLES.iter().any(|(r, _, f)| r == name && *f == file), "{name}/events/{file} is not tried");
        }
    }
    for (name, flow, file) in SAMPLES {
        let dir = examples().join(name);
        let out = renkei()
            .arg("test")
            .arg("--config")
            .arg(dir.join("renkei.yaml"))
            .args(["--flow", flow, "--event"])
            .arg(dir.join("events").join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} {flow} {file}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("# step 0 → "), "{name} {flow} {file}: {stdout}");
        assert!(!stdout.contains("# skipped") && !stdout.contains(" fails: "), "{name} {flow} {file}: {stdout}");
    }
}
