//! Tests of the fake kintone, over HTTP with reqwest as the connector will talk to it: each endpoint's happy path,
//! kintone's errors and limits, auth, guest spaces, concurrency (with the hold/release gate, no sleeps), fault
//! injection and field validation.

mod access;
mod records;
mod writes;

use renkei_testkit::kintone::{FakeKintone, Field, FieldType, Rights};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The token of app 1 with view/add/edit/delete rights.
pub const TOKEN: &str = "tok-app1";

/// Fields of app 1: one of each kind the connector writes to.
pub fn fields() -> Vec<Field> {
    vec![
        Field::new("title", "件名", FieldType::SingleLineText).required().unique().label_en("Title"),
        Field::new("amount", "金額", FieldType::Number),
        Field::new("code", "コード", FieldType::Number).unique(),
        Field::new("note", "備考", FieldType::MultiLineText),
        Field::new("kind", "種別", FieldType::DropDown).options(["A", "B"]),
        Field::new("radio", "ラジオ", FieldType::RadioButton).options(["yes", "no"]),
        Field::new("tags", "タグ", FieldType::CheckBox).options(["x", "y"]),
        Field::new("multi", "複数選択", FieldType::MultiSelect).options(["m1", "m2"]),
        Field::new("due", "期日", FieldType::Date),
        Field::new("at", "時刻", FieldType::Time),
        Field::new("when", "日時", FieldType::DateTime),
        Field::new("url", "URL", FieldType::Link),
        Field::new("owner", "担当者", FieldType::UserSelect),
        Field::new("org", "組織", FieldType::OrganizationSelect),
        Field::new("group", "グループ", FieldType::GroupSelect),
        Field::new("total", "合計", FieldType::Calc),
        Field::subtable(
            "items",
            "明細",
            vec![
                Field::new("name", "品名", FieldType::SingleLineText).required(),
                Field::new("qty", "数量", FieldType::Number),
            ],
        ),
    ]
}

/// A fake with app 1 (`fields()`) and its token `TOKEN`.
pub async fn fake_with_app() -> FakeKintone {
    let fake = FakeKintone::start().await;
    fake.add_app(1, fields()).add_token(TOKEN, Rights::RECORDS);
    fake
}

/// An answer: status, body as JSON (a JSON string holding the text when it is not JSON), headers.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The messages of validation key `key`, panicking with the whole body when the key is absent.
    pub fn messages(&self, key: &str) -> Vec<String> {
        let messages = self.body["errors"][key]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no error key {key} in {}", self.body));
        messages.iter().map(|m| m.as_str().unwrap_or_default().to_string()).collect()
    }
}

/// Sends `method path` (path with its query string) with `headers` and an optional JSON body.
pub async fn send(
    fake: &FakeKintone,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", fake.base_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request to the fake kintone");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body, headers }
}

/// Sends with the token of app 1.
pub async fn call(fake: &FakeKintone, method: &str, path: &str, body: Option<&Value>) -> Answer {
    send(fake, method, path, &[("X-Cybozu-API-Token", TOKEN)], body).await
}

/// `query=...` for GET records.json, URL-encoded.
pub fn query(q: &str) -> String {
    format!("query={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>())
}
