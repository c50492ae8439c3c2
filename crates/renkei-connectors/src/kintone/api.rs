//! kintone's REST API as requests and answers: building each call, reading each error.
//!
//! Pure: nothing here sends anything. The worker sends what these functions build, so every kintone call is
//! recorded in the delivery's history exactly like an http step's.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use renkei_core::config::{KintoneAction, KintoneDestination};
use renkei_core::delivery::Outcome;
use renkei_core::flow::Request;
use serde_json::{json, Map, Value};

/// Headers of every call: credentials, language, and the JSON content type when there is a body.
pub fn headers(dest: &KintoneDestination, with_body: bool) -> Vec<(String, String)> {
    let b64 = |user: &str, pass: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut h = Vec::new();
    let tokens: Vec<&str> = dest.api_token.iter().chain(&dest.api_tokens).map(|t| t.expose()).collect();
    if !tokens.is_empty() {
        h.push(("X-Cybozu-API-Token".to_owned(), tokens.join(",")));
    }
    if let Some(login) = &dest.login {
        h.push(("X-Cybozu-Authorization".to_owned(), b64(&login.username, login.password.expose())));
    }
    if let Some(basic) = &dest.basic {
        h.push(("Authorization".to_owned(), format!("Basic {}", b64(&basic.username, basic.password.expose()))));
    }
    h.push(("Accept-Language".to_owned(), dest.lang.clone()));
    if with_body {
        h.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    h
}

fn request(dest: &KintoneDestination, name: &str, method: &str, url: String, body: Option<Value>) -> Request {
    Request {
        destination: renkei_core::types::Name::parse(name).unwrap_or_else(|_| unreachable_name()),
        method: method.to_owned(),
        url,
        headers: headers(dest, body.is_some()),
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        timeout: dest.timeout.0,
        allow_http: dest.allow_http,
    }
}

fn unreachable_name() -> renkei_core::types::Name {
    renkei_core::types::Name::parse("kintone").expect("a valid name")
}

fn query_url(dest: &KintoneDestination, resource: &str, params: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    format!("{}?{}", dest.api_path(resource), q.finish())
}

/// `GET app/form/fields.json`.
pub fn fields_request(dest: &KintoneDestination, name: &str) -> Request {
    let url = query_url(dest, "app/form/fields", &[("app", dest.app.to_string()), ("lang", dest.lang.clone())]);
    request(dest, name, "GET", url, None)
}

/// A value inside a kintone query string: double-quoted, with `"` and `\` escaped.
pub fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `GET records.json` for the id of the record whose unique `field` is `value`.
pub fn lookup_request(dest: &KintoneDestination, name: &str, field: &str, value: &str) -> Request {
    let query = format!("{field} = {} limit 2", quote(value));
    let url =
        query_url(dest, "records", &[("app", dest.app.to_string()), ("query", query), ("fields[0]", "$id".to_owned())]);
    request(dest, name, "GET", url, None)
}

/// The record ids a lookup found.
pub fn lookup_ids(body: &Value) -> Vec<String> {
    body.get("records")
        .and_then(|r| r.as_array())
        .map(|rs| rs.iter().filter_map(|r| r.get("$id")?.get("value")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Where an operation's record is: by id, or by a unique field.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    None,
    Id(String),
    Key(String, String),
}

impl Target {
    fn put_into(&self, body: &mut Map<String, Value>) {
        match self {
            Target::None => {}
            Target::Id(id) => {
                body.insert("id".into(), Value::String(id.clone()));
            }
            Target::Key(field, value) => {
                body.insert("updateKey".into(), json!({ "field": field, "value": value }));
            }
        }
    }
}

/// The one request of a single-record operation. `target` is an id for delete, status and comment (a key has
/// been looked up by then).
#[allow(clippy::too_many_arguments)]
pub fn single_request(
    dest: &KintoneDestination,
    name: &str,
    action: KintoneAction,
    target: &Target,
    record: Option<Map<String, Value>>,
    status: Option<&str>,
    assignee: Option<&str>,
    comment: Option<&str>,
) -> Request {
    let app = dest.app.to_string();
    let mut body = Map::new();
    body.insert("app".into(), Value::String(app.clone()));
    match action {
        KintoneAction::Add => {
            body.insert("record".into(), Value::Object(record.unwrap_or_default()));
            request(dest, name, "POST", dest.api_path("record"), Some(Value::Object(body)))
        }
        KintoneAction::Update => {
            target.put_into(&mut body);
            body.insert("record".into(), Value::Object(record.unwrap_or_default()));
            request(dest, name, "PUT", dest.api_path("record"), Some(Value::Object(body)))
        }
        KintoneAction::Upsert => {
            // record.json has no upsert; records.json with one record does.
            let mut item = Map::new();
            target.put_into(&mut item);
            item.insert("record".into(), Value::Object(record.unwrap_or_default()));
            body.insert("upsert".into(), Value::Bool(true));
            body.insert("records".into(), Value::Array(vec![Value::Object(item)]));
            request(dest, name, "PUT", dest.api_path("records"), Some(Value::Object(body)))
        }
        KintoneAction::Delete => {
            let id = match target {
                Target::Id(id) => id.clone(),
                _ => String::new(),
            };
            let url = query_url(dest, "records", &[("app", app), ("ids[0]", id)]);
            request(dest, name, "DELETE", url, None)
        }
        KintoneAction::Status => {
            target.put_into(&mut body);
            body.insert("action".into(), Value::String(status.unwrap_or_default().to_owned()));
            if let Some(a) = assignee {
                body.insert("assignee".into(), Value::String(a.to_owned()));
            }
            request(dest, name, "PUT", dest.api_path("record/status"), Some(Value::Object(body)))
        }
        KintoneAction::Comment => {
            if let Target::Id(id) = target {
                body.insert("record".into(), Value::String(id.clone()));
            }
            body.insert("comment".into(), json!({ "text": comment.unwrap_or_default() }));
            request(dest, name, "POST", dest.api_path("record/comment"), Some(Value::Object(body)))
        }
    }
}

/// One `records.json` request for the records of several events (add, update or upsert; at most 100).
pub fn bulk_request(
    dest: &KintoneDestination,
    name: &str,
    action: KintoneAction,
    items: &[(Target, Map<String, Value>)],
) -> Request {
    let mut body = Map::new();
    body.insert("app".into(), Value::String(dest.app.to_string()));
    let records: Vec<Value> = items
        .iter()
        .map(|(target, record)| match action {
            KintoneAction::Add => Value::Object(record.clone()),
            _ => {
                let mut item = Map::new();
                target.put_into(&mut item);
                item.insert("record".into(), Value::Object(record.clone()));
                Value::Object(item)
            }
        })
        .collect();
    if action == KintoneAction::Upsert {
        body.insert("upsert".into(), Value::Bool(true));
    }
    body.insert("records".into(), Value::Array(records));
    let method = if action == KintoneAction::Add { "POST" } else { "PUT" };
    request(dest, name, method, dest.api_path("records"), Some(Value::Object(body)))
}

/// What each record of a successful bulk write became: `{id?, revision, operation?}` per record, in order.
pub fn bulk_results(action: KintoneAction, body: &Value, n: usize) -> Vec<Value> {
    match action {
        KintoneAction::Add => {
            let ids = body.get("ids").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            let revs = body.get("revisions").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            (0..n)
                .map(|i| json!({ "id": ids.get(i).cloned().unwrap_or_default(), "revision": revs.get(i).cloned().unwrap_or_default() }))
                .collect()
        }
        _ => {
            let records = body.get("records").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            (0..n).map(|i| records.get(i).cloned().unwrap_or(Value::Null)).collect()
        }
    }
}

/// kintone's error body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KintoneError {
    pub code: String,
    pub message: String,
    /// `record.<code>.value` or `records[i].<code>.value` → messages.
    pub errors: BTreeMap<String, Vec<String>>,
}

impl KintoneError {
    pub fn parse(body: &[u8]) -> Option<KintoneError> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let code = v.get("code")?.as_str()?.to_owned();
        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        let errors = v
            .get("errors")
            .and_then(|e| e.as_object())
            .map(|e| {
                e.iter()
                    .map(|(k, v)| {
                        let msgs = v
                            .get("messages")
                            .and_then(|m| m.as_array())
                            .map(|m| m.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        (k.clone(), msgs)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(KintoneError { code, message, errors })
    }

    /// `CB_VA01: 入力内容が正しくありません。 (record.金額.value: 数字でなければなりません。)`
    pub fn describe(&self) -> String {
        let mut s = format!("{}: {}", self.code, self.message);
        if !self.errors.is_empty() {
            let details: Vec<String> = self.errors.iter().map(|(k, m)| format!("{k}: {}", m.join(" "))).collect();
            s.push_str(&format!(" ({})", details.join("; ")));
        }
        s
    }

    /// For a failed bulk write: the messages of each record that failed, by its index in the request.
    pub fn by_record(&self) -> BTreeMap<usize, String> {
        let mut out: BTreeMap<usize, String> = BTreeMap::new();
        for (key, msgs) in &self.errors {
            let Some(rest) = key.strip_prefix("records[") else { continue };
            let Some((index, field)) = rest.split_once(']') else { continue };
            let Ok(i) = index.parse::<usize>() else { continue };
            // kintone writes `records[1].金額.value`, and for some types `records[1][金額].value`.
            let field = field.trim_start_matches('.').trim_end_matches(".value");
            let field = field.strip_prefix('[').map(|f| f.replacen(']', "", 1)).unwrap_or_else(|| field.to_owned());
            let field = field.as_str();
            let text = format!("{}: {field}: {}", self.code, msgs.join(" "));
            out.entry(i).and_modify(|t| t.push_str(&format!("; {field}: {}", msgs.join(" ")))).or_insert(text);
        }
        out
    }
}

/// Decides how a kintone answer ended, with a reason that says what to do about it.
pub fn classify(
    dest: &KintoneDestination,
    action: KintoneAction,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    let err = KintoneError::parse(body);
    let code = err.as_ref().map(|e| e.code.as_str()).unwrap_or("");
    let what = match &err {
        Some(e) => format!("HTTP {status} {}", e.describe()),
        None => format!("HTTP {status}"),
    };
    let transient = |reason: String| Outcome::Transient { reason, retry_after };
    let permanent = |reason: String| Outcome::Permanent { reason };
    match code {
        "GAIA_TO04" => transient(format!("{what} (kintone's concurrency limit per domain; backing off)")),
        "GAIA_DA02" => transient(format!("{what} (kintone's database lock; trying again)")),
        "GAIA_CO02" => transient(format!("{what} (the record changed meanwhile; trying again)")),
        "CB_NO02" | "GAIA_NO01" => permanent(format!(
            "{what}: the API token of app {} lacks the right this step needs ({}); add it in the app's settings (アプリの設定 > APIトークン)",
            dest.app,
            right_needed(action)
        )),
        "GAIA_IA02" => permanent(format!("{what}: an API token belongs to another app than {}", dest.app)),
        "CB_AU01" | "CB_WA01" => permanent(format!("{what}: check the destination's credentials")),
        "GAIA_IL23" => permanent(format!("{what}: app {} is in a guest space: set `guest_space`", dest.app)),
        "GAIA_AP01" => permanent(format!("{what}: there is no app {} (or the token cannot see it)", dest.app)),
        _ if status == 401 && err.is_none() => permanent(format!("{what}: the domain asks for HTTP Basic credentials (`basic`)")),
        _ if status == 429 || status == 408 || status >= 500 => transient(what),
        _ => permanent(what),
    }
}

fn right_needed(action: KintoneAction) -> &'static str {
    match action {
        KintoneAction::Add => "レコード追加 / add records",
        KintoneAction::Update | KintoneAction::Status => "レコード編集 / edit records",
        KintoneAction::Upsert => "レコード追加 and レコード編集 / add and edit records",
        KintoneAction::Delete => "レコード削除 / delete records",
        KintoneAction::Comment => "レコード閲覧 / view records",
    }
}

#[cfg(test)]
mod tests;
