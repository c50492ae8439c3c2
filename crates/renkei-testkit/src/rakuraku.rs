//! A fake 楽楽販売 / 働くDB (Rakus; the two products share one API scheme) record API for tests: an HTTP server on
//! 127.0.0.1 following `shared/specs/saas.md`, so flows writing into either product can be tested end to end.
//!
//! Modelled (from third-party client code): `POST /{account}/apirecord/{regist|update|delete|view}/version/v1`
//! with header `X-HD-apitoken` and a JSON body `{"dbSchemaId", "keyId", "values"}`, where `values` maps numeric
//! field ids to strings and `details` holds detail-table rows; answers are JSON carrying `"code"` and
//! `"status":"success"`. `regist` adds a record (with the given `keyId`, or a new one), `update` merges values
//! into an existing record and appends `details` rows, `delete` removes one, `view` answers its `items`.
//! `POST /{account}/api/csvdataimport/version/v1` takes multipart form data: a `json` part
//! `{"dbSchemaId", "importId"}` and an `uploadFile` part holding Shift_JIS CSV; the fake decodes the CSV (bytes
//! that are not Shift_JIS are refused) and records the rows for the test ([`FakeRakuraku::imports`]), answering a
//! `processId`. Refusals: no or unknown token 401, unknown account or API 404, not POST 405, a body that is not
//! JSON 400, unknown `dbSchemaId` or field id 400, a missing record 404, a `keyId` that exists on `regist` 409.
//!
//! A guess (the vendor's documentation is not public): the HTTP statuses and `message` texts of the refusals.
//! Their bodies carry `"status":"error"` and the same `code`; some third-party clients check the body's `code`
//! and `status` rather than the HTTP status, so the real API may answer some errors with HTTP 200.
//!
//! Not modelled: field types and their validation (every value is text), DB links (`getSubordinate`), detail-row
//! keys (`updateDetailKeyId`), `fileupload` / `csvimport` / `checkcsvimportprocess` / `csvexport`, the import
//! actually applied to records (the rows are only recorded), workflows and their Webhook通知 (tests post those
//! themselves), rate limits.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::kintone::RecordedRequest;
use crate::shared::ServerTask;

/// A CSV upload the fake received through `csvdataimport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub db_schema_id: String,
    pub import_id: String,
    /// The CSV's lines split into cells, decoded from Shift_JIS.
    pub rows: Vec<Vec<String>>,
}

#[derive(Default)]
struct Db {
    fields: BTreeSet<String>,
    detail_fields: BTreeSet<String>,
    imports: BTreeSet<String>,
    records: BTreeMap<String, Map<String, Value>>,
}

struct State {
    account: String,
    tokens: HashSet<String>,
    dbs: BTreeMap<String, Db>,
    next_key: u64,
    faults: VecDeque<u16>,
    requests: Vec<RecordedRequest>,
    imports: Vec<Import>,
}

type Inner = crate::shared::Inner<State>;

/// The fake 楽楽販売 / 働くDB account. Clones share one server and one state.
#[derive(Clone)]
pub struct FakeRakuraku {
    inner: Arc<Inner>,
    _server: Arc<ServerTask>,
}

impl FakeRakuraku {
    /// Serves account `account` (the path segment after the host) on 127.0.0.1 (a free port).
    pub async fn start(account: &str) -> FakeRakuraku {
        let state = State {
            account: account.to_string(),
            tokens: HashSet::new(),
            dbs: BTreeMap::new(),
            next_key: 1,
            faults: VecDeque::new(),
            requests: Vec::new(),
            imports: Vec::new(),
        };
        let (inner, server) = crate::shared::serve(state, handle).await;
        FakeRakuraku { inner, _server: server }
    }

    /// `http://127.0.0.1:PORT`: the domain.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// `http://127.0.0.1:PORT/{account}`: what the API paths are appended to.
    pub fn account_url(&self) -> String {
        format!("{}/{}", self.base_url(), self.inner.lock().account)
    }

    /// An API token (発行: 管理者設定 > ユーザ設定 > ユーザ管理).
    pub fn add_token(&self, token: &str) {
        self.inner.lock().tokens.insert(token.to_string());
    }

    /// A database with `dbSchemaId` `id`, its field ids and its detail-table field ids.
    pub fn add_db(&self, id: &str, fields: &[&str], detail_fields: &[&str]) {
        let mut st = self.inner.lock();
        let db = st.dbs.entry(id.to_string()).or_default();
        db.fields.extend(fields.iter().map(|f| f.to_string()));
        db.detail_fields.extend(detail_fields.iter().map(|f| f.to_string()));
    }

    /// An import setting (`importId`) of database `db`, for `csvdataimport`.
    pub fn add_import(&self, db: &str, import_id: &str) {
        self.with_db(db, |d| {
            d.imports.insert(import_id.to_string());
        });
    }

    /// Stores a record bypassing HTTP (`values` as the API takes them).
    pub fn seed(&self, db: &str, key_id: &str, values: Value) {
        let Value::Object(values) = values else { panic!("fake 楽楽販売: values are a JSON object") };
        self.with_db(db, |d| {
            d.records.insert(key_id.to_string(), values);
        });
    }

    /// Record `key_id` of database `db` (its values as stored), if any.
    pub fn record(&self, db: &str, key_id: &str) -> Option<Map<String, Value>> {
        self.inner.lock().dbs.get(db).and_then(|d| d.records.get(key_id).cloned())
    }

    /// The records of database `db` by key, in key order.
    pub fn records(&self, db: &str) -> Vec<(String, Map<String, Value>)> {
        let st = self.inner.lock();
        st.dbs.get(db).map(|d| d.records.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }

    /// The CSV uploads received, in arrival order.
    pub fn imports(&self) -> Vec<Import> {
        self.inner.lock().imports.clone()
    }

    /// Every request received so far, in arrival order (refused ones included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// The next `n` requests fail with HTTP `status` before any check.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inner.lock().faults.extend(std::iter::repeat_n(status, n));
    }

    fn with_db<T>(&self, db: &str, f: impl FnOnce(&mut Db) -> T) -> T {
        let mut st = self.inner.lock();
        f(st.dbs.get_mut(db).unwrap_or_else(|| panic!("fake 楽楽販売: no database {db}")))
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "status": "error", "message": message.into() });
    (status, Json(body)).into_response()
}

fn success(extra: Value) -> Response {
    let mut body = json!({ "code": 200, "status": "success" });
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    (StatusCode::OK, Json(body)).into_response()
}

async fn handle(AxumState(inner): AxumState<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let mut st = inner.lock();
    st.requests.push(RecordedRequest::new(&parts, &body));
    if let Some(status) = st.faults.pop_front() {
        return refuse(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure");
    }
    let path = parts.uri.path().to_string();
    let Some(rest) = path.strip_prefix(&format!("/{}/", st.account)) else {
        return refuse(StatusCode::NOT_FOUND, format!("no account at {path}"));
    };
    let api = match rest.split('/').collect::<Vec<_>>()[..] {
        ["apirecord", op @ ("regist" | "update" | "delete" | "view"), "version", "v1"] => op.to_string(),
        ["api", "csvdataimport", "version", "v1"] => "csvdataimport".to_string(),
        _ => return refuse(StatusCode::NOT_FOUND, format!("no API at {path}")),
    };
    if parts.method.as_str() != "POST" {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "the API is called with POST");
    }
    let token = parts.headers.get("x-hd-apitoken").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !st.tokens.contains(token) {
        return refuse(StatusCode::UNAUTHORIZED, "APIトークンが正しくありません");
    }
    if api == "csvdataimport" {
        return csv_data_import(&mut st, &parts.headers, &body);
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("リクエストがJSONではありません: {e}")),
    };
    record_api(&mut st, &api, &value)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn record_api(st: &mut State, api: &str, body: &Value) -> Response {
    let Some(db_id) = body.get("dbSchemaId").and_then(text) else {
        return refuse(StatusCode::BAD_REQUEST, "dbSchemaId は必須です");
    };
    let next_key = st.next_key;
    let Some(db) = st.dbs.get_mut(&db_id) else {
        return refuse(StatusCode::BAD_REQUEST, format!("dbSchemaId {db_id} のDBがありません"));
    };
    let key = body.get("keyId").and_then(text).filter(|k| !k.is_empty());
    let values = match (api, body.get("values")) {
        ("regist" | "update", Some(Value::Object(v))) => match check_values(db, v) {
            Ok(()) => v.clone(),
            Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
        },
        ("regist" | "update", _) => return refuse(StatusCode::BAD_REQUEST, "values は必須です"),
        _ => Map::new(),
    };
    match (api, key) {
        ("regist", key) => {
            let key = key.unwrap_or_else(|| next_key.to_string());
            if db.records.contains_key(&key) {
                return refuse(StatusCode::CONFLICT, format!("keyId {key} のレコードはすでにあります"));
            }
            db.records.insert(key.clone(), values);
            st.next_key += 1;
            success(json!({ "keyId": key }))
        }
        (_, None) => refuse(StatusCode::BAD_REQUEST, "keyId は必須です"),
        (api, Some(key)) => {
            let Some(record) = db.records.get_mut(&key) else {
                return refuse(StatusCode::NOT_FOUND, format!("keyId {key} のレコードがありません"));
            };
            match api {
                "update" => {
                    for (field, value) in values {
                        if let (Value::Array(rows), Some(Value::Array(existing))) = (&value, record.get_mut(&field)) {
                            // Detail rows without a detail key are appended.
                            existing.extend(rows.iter().cloned());
                        } else {
                            record.insert(field, value);
                        }
                    }
                    success(json!({ "keyId": key }))
                }
                "view" => success(json!({ "keyId": key, "items": record.clone() })),
                _ => {
                    db.records.remove(&key);
                    success(json!({ "keyId": key }))
                }
            }
        }
    }
}

/// Field ids the database has; text values; `details` as a list of rows of detail fields.
fn check_values(db: &Db, values: &Map<String, Value>) -> Result<(), String> {
    for (field, value) in values {
        if field == "details" {
            let Value::Array(rows) = value else {
                return Err("details は配列で指定してください".to_string());
            };
            for row in rows {
                let Value::Object(row) = row else {
                    return Err("details の行はオブジェクトで指定してください".to_string());
                };
                for (f, v) in row {
                    if !db.detail_fields.contains(f) {
                        return Err(format!("明細の項目ID {f} がありません"));
                    }
                    if text(v).is_none() {
                        return Err(format!("項目ID {f} の値は文字列で指定してください"));
                    }
                }
            }
            continue;
        }
        if !db.fields.contains(field) {
            return Err(format!("項目ID {field} がありません"));
        }
        if text(value).is_none() {
            return Err(format!("項目ID {field} の値は文字列で指定してください"));
        }
    }
    Ok(())
}

fn csv_data_import(st: &mut State, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(boundary) = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .filter(|_| content_type.trim_start().starts_with("multipart/form-data"))
    else {
        return refuse(StatusCode::BAD_REQUEST, "multipart/form-data で送信してください");
    };
    let parts = multipart_parts(body, &boundary);
    let part = |name: &str| parts.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice());
    let (Some(json_part), Some(file)) = (part("json"), part("uploadFile")) else {
        return refuse(StatusCode::BAD_REQUEST, "json と uploadFile のパートが必要です");
    };
    let Ok(params) = serde_json::from_slice::<Value>(json_part) else {
        return refuse(StatusCode::BAD_REQUEST, "json パートがJSONではありません");
    };
    let (Some(db_id), Some(import_id)) =
        (params.get("dbSchemaId").and_then(text), params.get("importId").and_then(text))
    else {
        return refuse(StatusCode::BAD_REQUEST, "dbSchemaId と importId は必須です");
    };
    match st.dbs.get(&db_id) {
        None => return refuse(StatusCode::BAD_REQUEST, format!("dbSchemaId {db_id} のDBがありません")),
        Some(db) if !db.imports.contains(&import_id) => {
            return refuse(StatusCode::BAD_REQUEST, format!("importId {import_id} のインポート設定がありません"))
        }
        Some(_) => {}
    }
    let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(file);
    if had_errors {
        return refuse(StatusCode::BAD_REQUEST, "uploadFile が Shift_JIS の CSV ではありません");
    }
    let rows = parse_csv(&text);
    st.imports.push(Import { db_schema_id: db_id, import_id, rows });
    let process_id = format!("P{}", st.imports.len());
    success(json!({ "processId": process_id }))
}

/// The parts of a multipart body: (name, bytes).
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    for chunk in split_bytes(body, delimiter.as_bytes()).into_iter().skip(1) {
        if chunk.starts_with(b"--") {
            break;
        }
        let chunk = chunk.strip_prefix(b"\r\n").or_else(|| chunk.strip_prefix(b"\n")).unwrap_or(chunk);
        let (head, content) = match find(chunk, b"\r\n\r\n") {
            Some(i) => (&chunk[..i], &chunk[i + 4..]),
            None => match find(chunk, b"\n\n") {
                Some(i) => (&chunk[..i], &chunk[i + 2..]),
                None => continue,
            },
        };
        let content = content.strip_suffix(b"\r\n").or_else(|| content.strip_suffix(b"\n")).unwrap_or(content);
        let head = String::from_utf8_lossy(head);
        let disposition = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"));
        let name = disposition.and_then(|d| {
            d.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("name=").map(|n| n.trim_matches(|c| c == '"' || c == '\'').to_string()))
        });
        if let Some(name) = name {
            out.push((name, content.to_vec()));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(body, delimiter) {
        out.push(&body[..i]);
        body = &body[i + delimiter.len()..];
    }
    out.push(body);
    out
}

/// RFC 4180 CSV (quotes, doubled quotes, CRLF or LF); empty lines are dropped.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cell));
                if !(row.len() == 1 && row[0].is_empty()) {
                    rows.push(std::mem::take(&mut row));
                }
                row.clear();
            }
            (c, _) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells() {
        assert_eq!(
            parse_csv("a,\"b,\"\"c\"\"\"\r\n\r\n1,\"x\ny\"\n"),
            vec![vec!["a".to_string(), "b,\"c\"".to_string()], vec!["1".to_string(), "x\ny".to_string()]]
        );
    }

    #[test]
    fn multipart() {
        let body = concat!(
            "--XX\r\nContent-Disposition: form-data; name=\"json\"\r\nContent-Type: application/json\r\n\r\n{}\r\n",
            "--XX\r\nContent-Disposition: form-data; name='uploadFile'; filename='a.csv'\r\nContent-Type: text/csv\r\n",
            "\r\na,b\r\n--XX--\r\n"
        )
        .as_bytes();
        let parts = multipart_parts(body, "XX");
        assert_eq!(parts, vec![("json".to_string(), b"{}".to_vec()), ("uploadFile".to_string(), b"a,b".to_vec())]);
    }
}
