//! Connection tests (seed 001's 認証 button): can renkei reach a destination, and may it do what the
//! config's flows ask of it? Run by `POST /api/v1/destinations/{id}/test` and `renkei check --online`.
//!
//! The one place besides the worker that calls destinations, and only when an admin asks. It never writes:
//! kintone has no API that lists an API token's rights, so the write rights are probed with writes kintone
//! refuses as empty (`records: []`, no ids): a token without the right is refused for the right
//! (`GAIA_NO01` / `CB_NO02`) before the request is looked at, one with it gets a validation error instead.

use renkei_connectors::http::HttpClient;
use renkei_connectors::kintone::api::{self, KintoneError};
use renkei_connectors::kintone::{Field, Fields};
use renkei_core::config::{Destination, KintoneAction, KintoneDestination, Loaded};
use renkei_core::flow::Request;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub destination: String,
    pub ok: bool,
    pub checks: Vec<Check>,
    /// The app's fields, for mapping (kintone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

/// The kintone actions the config's flows use on a destination.
fn actions_on(loaded: &Loaded, name: &str) -> Vec<KintoneAction> {
    let mut out: Vec<KintoneAction> = loaded
        .config
        .flows
        .values()
        .flat_map(|f| f.steps.iter())
        .filter(|s| s.to.as_str() == name)
        .filter_map(|s| s.action)
        .collect();
    out.sort_by_key(|a| a.to_string());
    out.dedup();
    out
}

pub async fn test_destination(loaded: &Loaded, client: &HttpClient, name: &str) -> Option<Report> {
    let dest = loaded.config.destinations.get(name)?;
    let mut report = Report { destination: name.to_owned(), ok: true, checks: Vec::new(), fields: Vec::new() };
    match dest {
        Destination::Http(h) => {
            let Some(base) = &h.base_url else {
                report.checks.push(Check {
                    what: "reachable".into(),
                    ok: true,
                    detail: "no base_url: each step names its URL".into(),
                });
                return Some(report);
            };
            let req = Request {
                destination: renkei_core::types::Name::parse(name).ok()?,
                method: "HEAD".into(),
                url: base.clone(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout: h.timeout.0,
                allow_http: h.allow_http,
            };
            let (ok, detail) = match client.send(&req).await {
                Ok(resp) => (true, format!("answered HTTP {}", resp.status)),
                Err(e) => (false, e.to_string()),
            };
            report.checks.push(Check { what: format!("reachable ({})", loaded.redactor.text(base)), ok, detail });
        }
        Destination::Kintone(k) => kintone(loaded, client, name, k, &mut report).await,
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    Some(report)
}

/// The flows' field mappings against the app: every mapped code exists and is writable, and every `key` is a
/// unique field kintone can find records by.
fn mapping_check(loaded: &Loaded, name: &str, fields: &Fields) -> Check {
    let mut problems = Vec::new();
    for (flow_name, flow) in &loaded.config.flows {
        for (i, step) in flow.steps.iter().enumerate().filter(|(_, s)| s.to.as_str() == name) {
            let at = format!("flows.{flow_name}.steps[{i}]");
            if let Some(serde_json::Value::Object(record)) = &step.record {
                for code in record.keys() {
                    match fields.get(code) {
                        None => problems.push(format!("{at}.record.{code}: the app has no field `{code}`")),
                        Some(f) if f.read_only() => {
                            problems.push(format!("{at}.record.{code}: `{code}` is a read-only {} field", f.kind))
                        }
                        Some(_) => {}
                    }
                }
            }
            if let Some(key) = &step.key {
                match fields.get(&key.field) {
                    None => problems.push(format!("{at}.key.field: the app has no field `{}`", key.field)),
                    Some(f) if !(f.unique && matches!(f.kind.as_str(), "SINGLE_LINE_TEXT" | "NUMBER")) => problems.push(
                        format!("{at}.key.field: `{}` must be a SINGLE_LINE_TEXT or NUMBER field with 値の重複を禁止する (unique) set", key.field),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    Check {
        what: "field mapping".into(),
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            "every mapped field exists and is writable".into()
        } else {
            problems.join("; ")
        },
    }
}

async fn kintone(loaded: &Loaded, client: &HttpClient, name: &str, k: &KintoneDestination, report: &mut Report) {
    let redact = |s: &str| loaded.redactor.text(s).into_owned();
    // 1. The token opens the app and its form can be read.
    let fields = match client.send(&api::fields_request(k, name)).await {
        Ok(resp) if resp.status == 200 => {
            match serde_json::from_slice(&resp.body).map_err(|e| e.to_string()).and_then(|v| Fields::parse(&v)) {
                Ok(f) => f,
                Err(e) => {
                    report.checks.push(Check { what: format!("app {} fields", k.app), ok: false, detail: e });
                    return;
                }
            }
        }
        Ok(resp) => {
            let detail = match api::classify(k, KintoneAction::Add, resp.status, &resp.body, None) {
                renkei_core::delivery::Outcome::Permanent { reason }
                | renkei_core::delivery::Outcome::Transient { reason, .. } => reason,
                renkei_core::delivery::Outcome::Success => String::new(),
            };
            report.checks.push(Check { what: format!("open app {}", k.app), ok: false, detail: redact(&detail) });
            return;
        }
        Err(e) => {
            report.checks.push(Check {
                what: format!("reach {}", k.base()),
                ok: false,
                detail: redact(&e.to_string()),
            });
            return;
        }
    };
    report.checks.push(Check {
        what: format!("open app {}", k.app),
        ok: true,
        detail: format!("{} fields", fields.fields.len()),
    });
    report.fields = fields.fields.values().cloned().collect();
    report.checks.push(mapping_check(loaded, name, &fields));

    // 2. The rights the configured actions need.
    let actions = actions_on(loaded, name);
    let mut rights: Vec<(&str, Request)> = Vec::new();
    if actions.iter().any(|a| {
        matches!(
            a,
            KintoneAction::Update
                | KintoneAction::Upsert
                | KintoneAction::Delete
                | KintoneAction::Status
                | KintoneAction::Comment
        )
    }) {
        rights.push(("view records", api::lookup_request(k, name, "$id", "0")));
    }
    if actions.iter().any(|a| matches!(a, KintoneAction::Add | KintoneAction::Upsert)) {
        rights.push(("add records", api::bulk_request(k, name, KintoneAction::Add, &[])));
    }
    if actions.iter().any(|a| matches!(a, KintoneAction::Update | KintoneAction::Upsert | KintoneAction::Status)) {
        rights.push(("edit records", api::bulk_request(k, name, KintoneAction::Update, &[])));
    }
    if actions.contains(&KintoneAction::Delete) {
        let mut del = api::single_request(
            k,
            name,
            KintoneAction::Delete,
            &api::Target::Id(String::new()),
            None,
            None,
            None,
            None,
        );
        del.url = del.url.replace("&ids%5B0%5D=", "");
        rights.push(("delete records", del));
    }
    for (right, req) in rights {
        let (ok, detail) = match client.send(&req).await {
            Ok(resp) => {
                let code = KintoneError::parse(&resp.body).map(|e| e.code).unwrap_or_default();
                match (resp.status, code.as_str()) {
                    (200, _) => (true, "allowed".to_owned()),
                    (_, "GAIA_NO01" | "CB_NO02") => (
                        false,
                        format!("the API token lacks this right: add it in the app's settings (アプリの設定 > APIトークン), then update the app ({code})"),
                    ),
                    (401, _) | (_, "CB_AU01" | "CB_WA01" | "GAIA_IA02") => (false, format!("credentials refused ({code})")),
                    // Refused for what it asked (empty), not for who asked: the right is there.
                    (400, _) => (true, "allowed".to_owned()),
                    (status, _) => (false, format!("HTTP {status} {code}")),
                }
            }
            Err(e) => (false, e.to_string()),
        };
        report.checks.push(Check { what: right.to_owned(), ok, detail: redact(&detail) });
    }
}

/// A kintone app's fields for the console's mapping editor: from the cache the worker fills, else read once
/// (and cached). `Err` says why they could not be read.
pub async fn kintone_fields(
    app: &crate::app::App,
    name: &str,
    dest: &renkei_core::config::KintoneDestination,
) -> Result<std::sync::Arc<Fields>, String> {
    let key = renkei_connectors::kintone::FieldCache::key(dest);
    if let Some(f) = app.kintone_fields.get(&key) {
        return Ok(f);
    }
    let _reading = app.kintone_fields_read.lock().await;
    if let Some(f) = app.kintone_fields.get(&key) {
        return Ok(f);
    }
    let resp = app
        .http()
        .send(&renkei_connectors::kintone::api::fields_request(dest, name))
        .await
        .map_err(|e| e.to_string())?;
    if resp.status != 200 {
        let detail = renkei_connectors::kintone::api::KintoneError::parse(&resp.body)
            .map(|e| e.describe())
            .unwrap_or_else(|| format!("HTTP {}", resp.status));
        return Err(format!("reading the app's fields failed: {detail}"));
    }
    let body: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
    Ok(app.kintone_fields.put(key, Fields::parse(&body)?))
}
