//! From a request to an answer: kintone's authentication (API tokens, password), the API paths, the checks every
//! app-level call goes through (app exists, guest-space path, rights), and bulkRequest.
//!
//! Order of the checks (kintone's where its answers are known, chosen otherwise): credentials first (CB_AU01, CB_WA01, GAIA_IA02 for an unknown
//! token, GAIA_DA03 for two tokens of one app), then the app (GAIA_AP01), its space (GAIA_IL23 for a guest-space app
//! on the normal path, CB_NO02 for an app outside the guest space of the path), then the right (GAIA_IA02 when no
//! token belongs to the app, GAIA_NO01 when the app's token lacks the right). When both a password and tokens are
//! sent, kintone uses the password, and so does the fake.

use axum::http::{HeaderMap, Method};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::apps::{App, Rights};
use super::errors::{ApiError, Text};
use super::records::{self, flag};
use super::values::{id_text, Actor};
use super::State;

/// Who calls, once authenticated.
pub(crate) enum Caller {
    /// A password user (`X-Cybozu-Authorization`). The fake treats every such user as an administrator: it models
    /// no per-user permissions.
    User(String),
    /// The apps and rights of the tokens of `X-Cybozu-API-Token`, at most one per app.
    Tokens(Vec<(u64, Rights)>),
}

#[derive(Clone, Copy)]
enum Right {
    View,
    Add,
    Edit,
    Delete,
    /// Reading the form: a token with view, add or app-management rights may (cybozu.dev, Get Form Fields).
    Form,
}

impl Caller {
    fn check(&self, app: u64, right: Right) -> Result<(), ApiError> {
        let Caller::Tokens(tokens) = self else { return Ok(()) };
        let Some((_, rights)) = tokens.iter().find(|(a, _)| *a == app) else {
            return Err(ApiError::token_mismatch());
        };
        let allowed = match right {
            Right::View => rights.view,
            Right::Add => rights.add,
            Right::Edit => rights.edit,
            Right::Delete => rights.delete,
            Right::Form => rights.view || rights.add || rights.manage_app,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::token_not_allowed())
        }
    }

    /// The writer recorded as CREATOR/MODIFIER: the login, or for API tokens "Administrator", the user kintone
    /// runs token calls as.
    fn actor(&self, app: u64) -> Actor {
        match self {
            Caller::User(login) => Actor { code: login.clone(), admin: true },
            Caller::Tokens(tokens) => Actor {
                code: "Administrator".to_string(),
                admin: tokens.iter().any(|(a, r)| *a == app && r.manage_app),
            },
        }
    }
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn authenticate(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(value) = header(headers, "x-cybozu-authorization") {
        let decoded = STANDARD.decode(value.trim()).ok().and_then(|b| String::from_utf8(b).ok());
        let (login, password) =
            decoded.as_deref().and_then(|s| s.split_once(':')).ok_or_else(ApiError::password_failed)?;
        return match state.users.get(login) {
            Some(p) if p == password => Ok(Caller::User(login.to_string())),
            _ => Err(ApiError::password_failed()),
        };
    }
    if let Some(value) = header(headers, "x-cybozu-api-token") {
        let mut tokens: Vec<(u64, Rights)> = Vec::new();
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (app, rights) = *state.tokens.get(token).ok_or_else(ApiError::token_mismatch)?;
            if tokens.iter().any(|(a, _)| *a == app) {
                return Err(ApiError::duplicate_token());
            }
            tokens.push((app, rights));
        }
        if !tokens.is_empty() {
            return Ok(Caller::Tokens(tokens));
        }
    }
    // OAuth (`Authorization: Bearer`) and session cookies are not modelled: they count as no credentials.
    Err(ApiError::login_required())
}

/// One API call: the method as kintone sees it (after `X-HTTP-Method-Override`), the guest space of the path, the
/// resource (`records.json`, `record/status.json`, ...) and the parameters as JSON.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) space: Option<u64>,
    pub(crate) resource: String,
    pub(crate) params: Value,
}

/// `/k/v1/{resource}` or `/k/guest/{space}/v1/{resource}`.
pub(crate) fn parse_path(path: &str) -> Option<(Option<u64>, String)> {
    if let Some(resource) = path.strip_prefix("/k/v1/") {
        return Some((None, resource.to_string()));
    }
    let (space, rest) = path.strip_prefix("/k/guest/")?.split_once('/')?;
    let resource = rest.strip_prefix("v1/")?;
    Some((Some(space.parse().ok()?), resource.to_string()))
}

pub(crate) fn execute(state: &mut State, caller: &Caller, call: &Call) -> Result<Value, ApiError> {
    if call.resource == "bulkRequest.json" && call.method == Method::POST {
        return bulk(state, caller, &call.params);
    }
    execute_one(state, caller, call)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    GetRecord,
    AddRecord,
    UpdateRecord,
    GetRecords,
    AddRecords,
    UpdateRecords,
    DeleteRecords,
    Status,
    Statuses,
    FormFields,
    AddComment,
}

fn execute_one(state: &mut State, caller: &Caller, call: &Call) -> Result<Value, ApiError> {
    use Endpoint::*;
    let (endpoint, right) = match (call.method.as_str(), call.resource.as_str()) {
        ("GET", "record.json") => (GetRecord, Right::View),
        ("POST", "record.json") => (AddRecord, Right::Add),
        ("PUT", "record.json") => (UpdateRecord, Right::Edit),
        ("GET", "records.json") => (GetRecords, Right::View),
        ("POST", "records.json") => (AddRecords, Right::Add),
        ("PUT", "records.json") => (UpdateRecords, Right::Edit),
        ("DELETE", "records.json") => (DeleteRecords, Right::Delete),
        // kintone asks a token for the edit right to run actions (chosen: its page lists view rights for users).
        ("PUT", "record/status.json") => (Status, Right::Edit),
        ("PUT", "records/status.json") => (Statuses, Right::Edit),
        ("GET", "app/form/fields.json") => (FormFields, Right::Form),
        // Commenting needs only the view right (a token cannot have a comment right of its own).
        ("POST", "record/comment.json") => (AddComment, Right::View),
        (method, resource) => return Err(ApiError::unsupported(method, &format!("/k/v1/{resource}"))),
    };
    let p = &call.params;
    let app_id = app_param(p)?;
    let app = state.apps.get_mut(&app_id).ok_or_else(|| ApiError::app_not_found(app_id))?;
    // Every call that reaches an existing app counts against its daily request limit, failed ones included.
    *state.counts.entry(app_id).or_default() += 1;
    check_space(app, call.space)?;
    caller.check(app_id, right)?;
    if endpoint == UpdateRecords && flag(p.get("upsert")) {
        // An upsert may insert: kintone documents both the add and the edit right for it.
        caller.check(app_id, Right::Add)?;
    }
    let actor = caller.actor(app_id);
    let backup = (!matches!(endpoint, GetRecord | GetRecords | FormFields)).then(|| app.clone());
    let result = match endpoint {
        GetRecord => records::get_record(app, p),
        AddRecord => records::add_record(app, &actor, p),
        UpdateRecord => records::update_record(app, &actor, p),
        GetRecords => records::get_records(app, p),
        AddRecords => records::add_records(app, &actor, p),
        UpdateRecords => records::update_records(app, &actor, p),
        DeleteRecords => records::delete_records(app, p),
        Status => records::update_status(app, &actor, p),
        Statuses => records::update_statuses(app, &actor, p),
        FormFields => Ok(app.form_fields_json(p.get("lang").and_then(Value::as_str))),
        AddComment => add_comment(app, p),
    };
    if let (Err(_), Some(backup)) = (&result, backup) {
        *app = backup;
    }
    result
}

/// POST record/comment.json `{"app", "record", "comment": {"text", "mentions"?}}` → `{"id": "1"}`. The text is
/// required and at most 65,535 characters; mentions are not modelled.
fn add_comment(app: &mut App, p: &Value) -> Result<Value, ApiError> {
    let record = p.get("record").and_then(id_text).and_then(|s| s.parse::<u64>().ok());
    let Some(record) = record else { return Err(ApiError::invalid_at("record", Text::required())) };
    if !app.records.contains_key(&record) {
        return Err(ApiError::record_not_found(record));
    }
    let text = p.get("comment").and_then(|c| c.get("text")).and_then(Value::as_str).unwrap_or_default();
    if text.is_empty() || text.chars().count() > 65_535 {
        return Err(ApiError::invalid_at("comment.text", Text::required()));
    }
    let id = app.comments.iter().filter(|(r, _, _)| *r == record).count() as u64 + 1;
    app.comments.push((record, id, text.to_owned()));
    Ok(serde_json::json!({ "id": id.to_string() }))
}

fn app_param(p: &Value) -> Result<u64, ApiError> {
    match p.get("app") {
        None | Some(Value::Null) => Err(ApiError::invalid_at("app", Text::required())),
        Some(v) => {
            id_text(v).and_then(|s| s.parse().ok()).ok_or_else(|| ApiError::invalid_at("app", Text::invalid_value()))
        }
    }
}

fn check_space(app: &App, path_space: Option<u64>) -> Result<(), ApiError> {
    match (app.guest_space, path_space) {
        (Some(_), None) => Err(ApiError::guest_path_required()),
        (Some(space), Some(path)) if space == path => Ok(()),
        (_, Some(_)) => Err(ApiError::no_privilege()),
        (None, None) => Ok(()),
    }
}

/// Up to 20 writes in one transaction: all succeed, or none is kept and the answer names the failing one.
fn bulk(state: &mut State, caller: &Caller, p: &Value) -> Result<Value, ApiError> {
    let requests = match p.get("requests") {
        Some(Value::Array(r)) if r.is_empty() => return Err(ApiError::invalid_at("requests", Text::at_least_one())),
        Some(Value::Array(r)) if r.len() > 20 => return Err(ApiError::invalid_at("requests", Text::at_most(20))),
        Some(Value::Array(r)) => r,
        _ => return Err(ApiError::invalid_at("requests", Text::required())),
    };
    let backup = state.apps.clone();
    let mut results = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        match bulk_one(state, caller, request, i) {
            Ok(answer) => results.push(answer),
            Err(e) => {
                state.apps = backup;
                return Err(e.in_bulk(i, requests.len()));
            }
        }
    }
    Ok(json!({ "results": results }))
}

fn bulk_one(state: &mut State, caller: &Caller, request: &Value, i: usize) -> Result<Value, ApiError> {
    let method = request.get("method").and_then(Value::as_str).map(str::to_ascii_uppercase);
    let api = request.get("api").and_then(Value::as_str);
    let (Some(method), Some(api)) = (method, api) else {
        return Err(ApiError::invalid_at(format!("requests[{i}]"), Text::invalid_value()));
    };
    // bulkRequest takes writes only, and not itself.
    let path = parse_path(api).filter(|(_, resource)| resource != "bulkRequest.json");
    let method =
        Method::from_bytes(method.as_bytes()).ok().filter(|m| [Method::POST, Method::PUT, Method::DELETE].contains(m));
    let (Some((space, resource)), Some(method)) = (path, method) else {
        return Err(ApiError::unsupported(request["method"].as_str().unwrap_or(""), api));
    };
    let params = request.get("payload").cloned().unwrap_or_else(|| json!({}));
    execute_one(state, caller, &Call { method, space, resource, params })
}

/// GET parameters: `app=1&id=2&fields[0]=a&fields[1]=b`; `name[n]` items become arrays in index order.
pub(crate) fn query_params(query: &str) -> Value {
    let mut map = Map::new();
    let mut arrays: Vec<(String, Vec<(usize, String)>)> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let indexed = key
            .strip_suffix(']')
            .and_then(|k| k.split_once('['))
            .and_then(|(name, index)| index.parse::<usize>().ok().map(|index| (name.to_string(), index)));
        match indexed {
            Some((name, index)) => match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, items)) => items.push((index, value.into_owned())),
                None => arrays.push((name, vec![(index, value.into_owned())])),
            },
            None => {
                map.insert(key.into_owned(), Value::String(value.into_owned()));
            }
        }
    }
    for (name, mut items) in arrays {
        items.sort_by_key(|(index, _)| *index);
        map.insert(name, Value::Array(items.into_iter().map(|(_, v)| Value::String(v)).collect()));
    }
    Value::Object(map)
}

/// A JSON body. kintone wants `Content-Type: application/json` on it (CB_IL02 otherwise: code chosen, the answer to
/// a missing content type is not documented) and answers CB_IJ01 to JSON it cannot read.
pub(crate) fn body_params(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let json_type = header(headers, "content-type").is_some_and(|t| t.trim_start().starts_with("application/json"));
    if !json_type {
        return Err(ApiError::illegal_request());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_json()),
    }
}
