//! Tests of the fake 楽楽販売 / 働くDB record API over HTTP: regist, update, view, delete, the token, field ids,
//! and the multipart CSV import with Shift_JIS.

use renkei_testkit::rakuraku::{FakeRakuraku, Import};
use serde_json::{json, Value};

const TOKEN: &str = "hd-token-1";

async fn fake() -> FakeRakuraku {
    let r = FakeRakuraku::start("acme").await;
    r.add_token(TOKEN);
    r.add_db("101455", &["101", "102", "103"], &["201", "202"]);
    r
}

async fn call(r: &FakeRakuraku, op: &str, token: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/apirecord/{op}/version/v1", r.account_url()))
        .header("X-HD-apitoken", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn regist_update_view_delete() {
    let r = fake().await;
    let (status, added) =
        call(&r, "regist", TOKEN, json!({"dbSchemaId": "101455", "keyId": "1001", "values": {"101": "見積A"}})).await;
    assert_eq!((status, added["status"].as_str()), (200, Some("success")), "{added}");
    assert_eq!(added["code"], 200);
    let update = json!({"dbSchemaId": "101455", "keyId": "1001",
        "values": {"102": "1200000", "details": [{"201": "りんご", "202": "3"}]}});
    assert_eq!(call(&r, "update", TOKEN, update).await.0, 200);
    let more = json!({"dbSchemaId": "101455", "keyId": "1001", "values": {"details": [{"201": "みかん"}]}});
    assert_eq!(call(&r, "update", TOKEN, more).await.0, 200);
    let (status, view) = call(&r, "view", TOKEN, json!({"dbSchemaId": "101455", "keyId": "1001"})).await;
    assert_eq!(status, 200);
    assert_eq!(view["items"]["101"], "見積A");
    assert_eq!(view["items"]["102"], "1200000");
    assert_eq!(view["items"]["details"], json!([{"201": "りんご", "202": "3"}, {"201": "みかん"}]));
    let (_, auto) = call(&r, "regist", TOKEN, json!({"dbSchemaId": "101455", "values": {"101": "B"}})).await;
    assert!(auto["keyId"].is_string(), "a new key when none is given: {auto}");
    assert_eq!(call(&r, "delete", TOKEN, json!({"dbSchemaId": "101455", "keyId": "1001"})).await.0, 200);
    assert!(r.record("101455", "1001").is_none());
    assert_eq!(r.records("101455").len(), 1);
}

#[tokio::test]
async fn refusals() {
    let r = fake().await;
    r.seed("101455", "1", json!({"101": "x"}));
    let (status, body) = call(&r, "update", "wrong", json!({"dbSchemaId": "101455", "keyId": "1", "values": {}})).await;
    assert_eq!((status, body["status"].as_str()), (401, Some("error")));
    let cases = [
        ("update", json!({"dbSchemaId": "999", "keyId": "1", "values": {}}), 400),
        ("update", json!({"dbSchemaId": "101455", "keyId": "1", "values": {"999": "x"}}), 400),
        ("update", json!({"dbSchemaId": "101455", "keyId": "1", "values": {"101": {"a": 1}}}), 400),
        ("update", json!({"dbSchemaId": "101455", "keyId": "1"}), 400),
        ("update", json!({"dbSchemaId": "101455", "keyId": "2", "values": {}}), 404),
        ("regist", json!({"dbSchemaId": "101455", "keyId": "1", "values": {}}), 409),
        ("delete", json!({"dbSchemaId": "101455"}), 400),
    ];
    for (op, body, expected) in cases {
        let (status, answer) = call(&r, op, TOKEN, body.clone()).await;
        assert_eq!(status, expected, "{op} {body}: {answer}");
        assert_eq!(answer["status"], "error");
        assert_eq!(answer["code"], expected);
    }
    assert_eq!(r.record("101455", "1").unwrap()["101"], "x", "nothing changed");
    let get = reqwest::Client::new()
        .get(format!("{}/apirecord/view/version/v1", r.account_url()))
        .header("X-HD-apitoken", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let other = reqwest::Client::new().post(format!("{}/other/apirecord/view/version/v1", r.base_url())).send().await;
    assert_eq!(other.unwrap().status(), 404);
}

fn multipart(boundary: &str, json_part: &str, csv: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let json_head = "Content-Disposition: form-data; name=\"json\"\r\nContent-Type: application/json";
    body.extend_from_slice(format!("--{boundary}\r\n{json_head}\r\n\r\n{json_part}\r\n").as_bytes());
    let file_head =
        "Content-Disposition: form-data; name=\"uploadFile\"; filename=\"upload.csv\"\r\nContent-Type: text/csv";
    body.extend_from_slice(format!("--{boundary}\r\n{file_head}\r\n\r\n").as_bytes());
    body.extend_from_slice(csv);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn csv_data_import_takes_shift_jis() {
    let r = fake().await;
    r.add_import("101455", "5");
    let (csv, _, _) = encoding_rs::SHIFT_JIS.encode("顧客コード,顧客名\r\nC001,\"㈱山田商事, 本社\"\r\n");
    let send = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("{}/api/csvdataimport/version/v1", r.account_url()))
            .header("X-HD-apitoken", TOKEN)
            .header("content-type", "multipart/form-data; boundary=BOUNDARY")
            .body(body)
            .send()
    };
    let ok = send(multipart("BOUNDARY", r#"{"dbSchemaId":"101455","importId":"5"}"#, &csv)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let answer: Value = ok.json().await.unwrap();
    assert_eq!(answer["status"], "success");
    assert!(answer["processId"].is_string());
    assert_eq!(
        r.imports(),
        [Import {
            db_schema_id: "101455".into(),
            import_id: "5".into(),
            rows: vec![vec!["顧客コード".into(), "顧客名".into()], vec!["C001".into(), "㈱山田商事, 本社".into()]],
        }]
    );
    let unknown = send(multipart("BOUNDARY", r#"{"dbSchemaId":"101455","importId":"6"}"#, &csv)).await.unwrap();
    assert_eq!(unknown.status(), 400);
    // 0x81 0x7F is no Shift_JIS character (0x7F is never a trail byte).
    let bad = send(multipart("BOUNDARY", r#"{"dbSchemaId":"101455","importId":"5"}"#, b"C001,\x81\x7f\r\n")).await;
    assert_eq!(bad.unwrap().status(), 400);
    assert_eq!(r.imports().len(), 1);
}
