//! Creating, editing and deleting sources, destinations, flows, tables and subscriptions, the mapping editor
//! of a flow's step, and the whole config (admins): every change goes through [`crate::live::edit`], as the
//! API's do, so it is checked whole, kept as a revision, audited, and runs at once on every node.
//!
//! An item is edited as the YAML written under its name, secrets masked; a mask left in place keeps the
//! secret. The mapping editor writes one step's `record:` (kintone) or `body:` (http) from a table of target
//! fields (kintone's field codes, with labels and types, read from the app) and values (templates, with the
//! fields of the source's latest event offered as `{{ body.… }}`).

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use renkei_core::config::edit::{self, EditError};
use renkei_core::config::{Destination, Loaded};
use renkei_core::Msg;
use renkei_store::EventFilter;
use serde::Deserialize;

use super::page::{Answer, Page, Posted, Signed};
use crate::access::Role;
use crate::live::{self, EditFailure, Editor};

/// Sections as the console names them, and who may change them (the API's rule).
fn section_words(section: &str) -> Option<(&'static str, &'static str, Role)> {
    let (en, ja) = match section {
        "sources" => ("Source", "受信元"),
        "destinations" => ("Destination", "連携先"),
        "flows" => ("Flow", "フロー"),
        "tables" => ("Table", "テーブル"),
        "subscriptions" => ("Subscription", "購読"),
        _ => return None,
    };
    Some((en, ja, crate::server::config_api::role_to_edit(section)))
}

/// Where an item is shown after it is saved.
fn shown_at(section: &str, name: &str) -> String {
    match section {
        "subscriptions" => "/console/config".to_owned(),
        _ => format!("/console/{section}/{name}"),
    }
}

/// What a new item starts as.
fn starter(loaded: &Loaded, section: &str) -> String {
    let first = |names: Vec<&str>, default: &'static str| names.first().copied().unwrap_or(default).to_owned();
    let source = first(loaded.config.sources.keys().map(|n| n.as_str()).collect(), "SOURCE");
    let dest = first(loaded.config.destinations.keys().map(|n| n.as_str()).collect(), "DESTINATION");
    match section {
        "sources" => "format: json\n# auth: { token: \"${SHOP_HOOK_TOKEN}\" }\n".to_owned(),
        "destinations" => "# kintone: type: kintone, subdomain: example, app: 12, api_token: \"${KINTONE_TOKEN}\"\ntype: http\nbase_url: \"https://example.com/api\"\ntimeout: 10s\n".to_owned(),
        "flows" => format!("source: {source}\nsteps:\n  - to: {dest}\n    path: /\n    body: {{}}\n"),
        "tables" => "key: code\nrows:\n  - { code: \"A01\", name: \"本社\" }\n".to_owned(),
        _ => format!("url: \"https://example.com/webhooks\"\nsource: {source}\n"),
    }
}

fn words_or_404(p: &Page, section: &str) -> Result<(&'static str, &'static str, Role), super::page::Fail> {
    section_words(section).ok_or_else(|| p.not_found("Section", "セクション"))
}

fn may_change(p: &Page, role: Role) -> Result<(), super::page::Fail> {
    if p.principal().is_some_and(|w| w.may(role)) {
        return Ok(());
    }
    Err(p.fail(
        StatusCode::FORBIDDEN,
        Msg::new(format!("This needs the {role} role."), format!("この操作には {role} ロールが必要です。")),
    ))
}

/// The signed-in reader as the audit log names them.
fn actor(p: &Page) -> String {
    p.principal().map(|w| w.actor.clone()).unwrap_or_default()
}

/// The problems of an edit that was not kept, as plain messages (for an error page rather than the editor).
fn problem_texts(p: &Page, f: &EditFailure) -> Vec<String> {
    problems(p, f).iter().map(|v| v.get_attr("message").map(|m| m.to_string()).unwrap_or_default()).collect()
}

/// Problems of an edit that was not kept, as the editor lists them.
fn problems(p: &Page, f: &EditFailure) -> Vec<minijinja::Value> {
    let one = |m: &Msg| vec![context! { message => p.t(m) }];
    match f {
        EditFailure::Problems(list) => {
            list.iter().map(|x| context! { line => x.line, path => x.path, message => p.t(&x.message) }).collect()
        }
        EditFailure::Edit(e) => one(&e.message()),
        EditFailure::Conflict(m) => one(&Msg::new(
            format!("{m}. Open the editor again to start from the newest config."),
            format!("設定は他の変更で更新されています（{m}）。編集画面を開き直してください。"),
        )),
        EditFailure::NoKey => one(&Msg::new(
            "This hub runs without a master key and cannot keep edits.",
            "このハブはマスターキーなしで動いているため、変更を保存できません。",
        )),
        EditFailure::Store(e) => {
            tracing::error!(error = %e, "console: storing a config edit failed");
            one(&Msg::new(
                "The database did not take the change; try again.",
                "データベースに保存できませんでした。もう一度お試しください。",
            ))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditParams {
    step: Option<usize>,
}

/// `GET /console/config/{section}/new`.
pub async fn new_item(Signed(p): Signed, Path(section): Path<String>) -> Answer {
    let (en, ja, role) = words_or_404(&p, &section)?;
    may_change(&p, role)?;
    let loaded = p.app().loaded();
    let text = starter(&loaded, &section);
    Ok(editor(&p, &section, (None, None), &text, (en, ja), Vec::new(), None, StatusCode::OK))
}

/// `GET /console/config/{section}/{name}/edit`.
pub async fn edit_item(
    Signed(p): Signed,
    Path((section, name)): Path<(String, String)>,
    Query(q): Query<EditParams>,
) -> Answer {
    let (en, ja, role) = words_or_404(&p, &section)?;
    may_change(&p, role)?;
    let loaded = p.app().loaded();
    let text = match edit::item(&loaded.text, &section, &name) {
        Ok(Some(t)) => edit::redact(&t, &loaded.redactor),
        Ok(None) => return Err(p.not_found(en, ja)),
        Err(e) => return Err(p.fail(StatusCode::BAD_REQUEST, e.message())),
    };
    let mapping = if section == "flows" { mapping_view(&p, &loaded, &name, q.step.unwrap_or(0)).await } else { None };
    Ok(editor(&p, &section, (Some(&name), None), &text, (en, ja), Vec::new(), mapping, StatusCode::OK))
}

#[allow(clippy::too_many_arguments)]
fn editor(
    p: &Page,
    section: &str,
    // The item's name, or for a new item the name typed so far.
    (name, typed): (Option<&str>, Option<&str>),
    text: &str,
    (en, ja): (&str, &str),
    problems: Vec<minijinja::Value>,
    mapping: Option<minijinja::Value>,
    status: StatusCode,
) -> Response {
    let nav = if section == "subscriptions" { "config" } else { section };
    p.render_status(
        status,
        "edit.html",
        nav,
        context! {
            section => section, name => name, typed => typed.unwrap_or(""), text => text, what => if p.lang == renkei_core::Lang::Ja { ja } else { en },
            base => p.app().revision(), problems => problems, mapping => mapping,
            rows => (text.lines().count() + 4).max(12),
            back => name.map(|n| shown_at(section, n)).unwrap_or_else(|| format!("/console/{}", if section == "subscriptions" { "config" } else { section })),
        },
    )
}

/// `POST /console/config/{section}` (a new item, named by the form) and `/console/config/{section}/{name}`.
pub async fn save_new(Path(section): Path<String>, posted: Posted) -> Answer {
    let name = posted.field("name").unwrap_or_default();
    save(section, name, posted, true).await
}

pub async fn save_item(Path((section, name)): Path<(String, String)>, posted: Posted) -> Answer {
    save(section, name, posted, false).await
}

async fn save(section: String, name: String, posted: Posted, new: bool) -> Answer {
    let p = &posted.page;
    let (en, ja, role) = words_or_404(p, &section)?;
    may_change(p, role)?;
    let text = posted.fields.get("text").cloned().unwrap_or_default().replace("\r\n", "\n");
    let base = posted.field("base").and_then(|b| b.parse().ok());
    let who = actor(p);
    let by = Editor { actor: &who, origin: "console", action: "config.edit", why: None };
    let result = live::edit(p.app(), by, &format!("{section}/{name}"), base, |current| {
        if new && edit::item(&current.text, &section, &name)?.is_some() {
            return Err(EditFailure::Conflict(format!("there is already a `{name}` in `{section}`")));
        }
        let old = edit::item(&current.text, &section, &name)?;
        let value = edit::restore(&text, old.as_deref().unwrap_or(""), &current.redactor)?;
        Ok(edit::set_item(&current.text, &section, &name, &value)?)
    })
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("{}?done=saved", shown_at(&section, &name))).into_response()),
        Err(f) => {
            let list = problems(p, &f);
            // A new item's form comes back with the name as typed.
            let (shown, typed) = if new { (None, Some(name.as_str())) } else { (Some(name.as_str()), None) };
            Ok(editor(p, &section, (shown, typed), &text, (en, ja), list, None, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

/// `POST /console/config/{section}/{name}/delete`.
pub async fn delete_item(Path((section, name)): Path<(String, String)>, posted: Posted) -> Answer {
    let p = &posted.page;
    let (_, _, role) = words_or_404(p, &section)?;
    may_change(p, role)?;
    let who = actor(p);
    let by = Editor { actor: &who, origin: "console", action: "config.edit", why: None };
    let result = live::edit(p.app(), by, &format!("{section}/{name}"), None, |c| {
        Ok(edit::remove_item(&c.text, &section, &name)?)
    })
    .await;
    match result {
        Ok(_) => {
            let list = if section == "subscriptions" { "config" } else { section.as_str() };
            Ok(Redirect::to(&format!("/console/{list}?done=deleted")).into_response())
        }
        Err(f) => {
            let msgs = problem_texts(p, &f);
            Err(p.fail(
                StatusCode::UNPROCESSABLE_ENTITY,
                Msg::new(
                    format!("`{name}` was not deleted: {}", msgs.join(" / ")),
                    format!("`{name}` を削除できませんでした: {}", msgs.join(" / ")),
                ),
            ))
        }
    }
}

// ----- the mapping editor -----

/// Empty rows offered below the existing ones.
const BLANK_ROWS: usize = 5;

/// What the mapping editor shows for step `index` of flow `name`; `None` when there is no such step.
async fn mapping_view(p: &Page, loaded: &Loaded, name: &str, index: usize) -> Option<minijinja::Value> {
    let flow = loaded.config.flows.get(name)?;
    let steps: Vec<_> =
        flow.steps.iter().enumerate().map(|(i, s)| context! { index => i, to => s.to.as_str() }).collect();
    let step = flow.steps.get(index)?;
    let dest = loaded.config.destinations.get(step.to.as_str());
    let kintone = matches!(dest, Some(Destination::Kintone(_)));
    let (key, current) = if kintone { ("record", step.record.as_ref()) } else { ("body", step.body.as_ref()) };
    // Only a flat mapping of field → template fits a table; anything else is edited as YAML.
    let rows: Option<Vec<(String, String)>> = match current {
        None => Some(Vec::new()),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Some((k.clone(), v.to_string())),
                _ => None,
            })
            .collect(),
        Some(_) => None,
    };
    let (targets, fields_error) = match dest {
        Some(Destination::Kintone(k)) => match crate::connection::kintone_fields(p.app(), step.to.as_str(), k).await {
            Ok(fields) => (
                fields
                    .fields
                    .values()
                    .filter(|f| !f.read_only() && f.kind != "SUBTABLE")
                    .map(|f| context! { code => f.code, label => f.label, kind => f.kind, required => f.required })
                    .collect(),
                None,
            ),
            Err(e) => (Vec::new(), Some(loaded.redactor.text(&e).into_owned())),
        },
        _ => (Vec::new(), None),
    };
    Some(context! {
        steps => steps, index => index, key => key, usable => rows.is_some(), kintone => kintone,
        rows => rows_view(rows.unwrap_or_default()), targets => targets, fields_error => fields_error,
        sample => event_fields(p, &flow.source, loaded).await,
    })
}

fn rows_view(rows: Vec<(String, String)>) -> Vec<minijinja::Value> {
    let n = rows.len();
    rows.into_iter()
        .chain(std::iter::repeat_n((String::new(), String::new()), BLANK_ROWS))
        .enumerate()
        .map(|(i, (field, value))| context! { i => i, field => field, value => value, blank => i >= n })
        .collect()
}

/// The fields of the source's latest accepted event, as template expressions with a sample value.
async fn event_fields(p: &Page, source: &renkei_core::types::Name, loaded: &Loaded) -> minijinja::Value {
    let filter = EventFilter {
        source: Some(source.to_string()),
        status: Some("accepted".into()),
        limit: 1,
        ..Default::default()
    };
    let none = || context! { event_id => None::<String>, fields => Vec::<minijinja::Value>::new() };
    let Ok(events) = p.app().store.list_events(&filter).await else { return none() };
    let Some(event) = events.first() else { return none() };
    let mut out = Vec::new();
    if let Some(body) = &event.body {
        flatten("body", body, &mut out);
    }
    out.truncate(200);
    // A field whose value is a key of a lookup table offers that table's columns (`lookup('approvers',
    // body.applicant).approver1`), with the value they give for this event.
    let mut lookups = Vec::new();
    for (path, v) in &out {
        let key = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => continue,
        };
        for (table, t) in &loaded.config.tables {
            let Some(row) = t.rows.get(&key) else { continue };
            for (col, value) in row.iter().filter(|(c, _)| **c != t.key) {
                let sample = super::view::one_line(&loaded.redactor, value, 60);
                let expr = format!("{{{{ lookup('{table}', {path}).{col} }}}}");
                lookups.push(context! { expr => expr, sample => sample });
            }
        }
    }
    let fields: Vec<_> = out
        .into_iter()
        .map(|(path, v)| {
            let sample = super::view::one_line(&loaded.redactor, &v, 60);
            context! { expr => format!("{{{{ {path} }}}}"), path => path, sample => sample }
        })
        .chain(lookups)
        .collect();
    context! { event_id => event.id, fields => fields }
}

/// Leaf paths of a JSON value: `body.customer.name`, `body.items[0].sku`; keys that are not identifiers are
/// written `body["お客様名"]`.
fn flatten(path: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let plain = k.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_alphanumeric() || c == '_');
                let next = if plain {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{}]", serde_json::Value::from(k.as_str()))
                };
                flatten(&next, v, out);
            }
        }
        serde_json::Value::Array(a) => {
            if let Some(first) = a.first() {
                flatten(&format!("{path}[0]"), first, out);
            }
        }
        leaf => out.push((path.to_owned(), leaf.clone())),
    }
}

/// `POST /console/flows/{name}/mapping`: writes the step's `record:` or `body:` from the table's rows.
pub async fn save_mapping(Path(name): Path<String>, posted: Posted) -> Answer {
    let p = &posted.page;
    may_change(p, Role::Editor)?;
    let index: usize = posted.field("step").and_then(|s| s.parse().ok()).unwrap_or(0);
    let key = match posted.field("key").as_deref() {
        Some("record") => "record",
        _ => "body",
    };
    let mut block = String::new();
    for i in 0..1000 {
        let (Some(field), value) = (posted.fields.get(&format!("f{i}")), posted.fields.get(&format!("v{i}"))) else {
            break;
        };
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let value = value.map(|v| v.trim()).unwrap_or("");
        // JSON strings are YAML double-quoted scalars: any code or template is written safely.
        block.push_str(&format!("{}: {}\n", serde_json::Value::from(field), serde_json::Value::from(value)));
    }
    if block.is_empty() {
        block.push_str("{}\n");
    }
    let base = posted.field("base").and_then(|b| b.parse().ok());
    let who = actor(p);
    let by = Editor { actor: &who, origin: "console", action: "config.edit", why: None };
    let result = live::edit(p.app(), by, &format!("flows/{name}"), base, |current| {
        let item = edit::item(&current.text, "flows", &name)?
            .ok_or_else(|| EditError::NotFound { section: "flows".into(), name: name.clone() })?;
        let item = edit::set_in(&item, &format!("steps.{index}"), key, &block)?;
        Ok(edit::set_item(&current.text, "flows", &name, &item)?)
    })
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/console/flows/{name}?done=saved")).into_response()),
        Err(f) => {
            let loaded = p.app().loaded();
            let text = edit::item(&loaded.text, "flows", &name)
                .ok()
                .flatten()
                .map(|t| edit::redact(&t, &loaded.redactor))
                .unwrap_or_default();
            let mapping = mapping_view(p, &loaded, &name, index).await;
            Ok(editor(
                p,
                "flows",
                (Some(&name), None),
                &text,
                ("Flow", "フロー"),
                problems(p, &f),
                mapping,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    }
}

// ----- the whole config (admins) -----

/// `GET /console/config`: the running config, secrets masked, its revisions, subscriptions, and export.
pub async fn whole(Signed(p): Signed) -> Answer {
    may_change(&p, Role::Admin)?;
    whole_page(&p, None, Vec::new(), StatusCode::OK).await
}

async fn whole_page(p: &Page, text: Option<String>, problems: Vec<minijinja::Value>, status: StatusCode) -> Answer {
    let loaded = p.app().loaded();
    let revisions = p.app().store.config_revisions().await.map_err(|e| p.store_fail(e))?;
    let running = p.app().revision();
    let revisions: Vec<_> = revisions
        .iter()
        .rev()
        .take(20)
        .map(|r| context! { id => r.id, at => r.loaded_at, origin => r.origin, running => r.id == running })
        .collect();
    let subscriptions: Vec<_> = loaded
        .config
        .subscriptions
        .iter()
        .map(|(n, s)| context! { name => n.as_str(), url => loaded.redactor.text(&s.url).into_owned() })
        .collect();
    Ok(p.render_status(
        status,
        "config.html",
        "config",
        context! {
            text => text.unwrap_or_else(|| live::shown_text(&loaded)), base => running, revisions => revisions,
            problems => problems, subscriptions => subscriptions,
        },
    ))
}

/// `POST /console/config`: replaces the whole text.
pub async fn save_whole(posted: Posted) -> Answer {
    let p = &posted.page;
    may_change(p, Role::Admin)?;
    let text = posted.fields.get("text").cloned().unwrap_or_default().replace("\r\n", "\n");
    let base = posted.field("base").and_then(|b| b.parse().ok());
    let who = actor(p);
    let by = Editor { actor: &who, origin: "console", action: "config.edit", why: None };
    match live::edit(p.app(), by, "config", base, |c| Ok(edit::restore(&text, &c.text, &c.redactor)?)).await {
        Ok(_) => Ok(Redirect::to("/console/config?done=saved").into_response()),
        Err(f) => {
            let list = problems(p, &f);
            whole_page(p, Some(text), list, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

/// `GET /console/config/export`: the running config as a file, secrets masked (as `renkei export`).
pub async fn export(Signed(p): Signed) -> Answer {
    may_change(&p, Role::Admin)?;
    let text = live::shown_text(&p.app().loaded());
    let name = format!("renkei-revision-{}.yaml", p.app().revision());
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/yaml; charset=utf-8".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        text,
    )
        .into_response())
}

// ----- tables from a CSV file -----

/// Largest CSV accepted (axum's default body limit for multipart is 2 MiB as well).
const TABLE_UPLOAD_LIMIT: usize = 2 * 1024 * 1024;

/// `POST /console/tables/{name}/upload` (multipart: `csrf`, `file`): the table's rows become the file's, written
/// into the config (`rows:`), so every node has them without a file of its own. Shift_JIS or UTF-8, with or
/// without a BOM, a header row naming the columns; the key column must be there and filled.
pub async fn upload_table(Path(name): Path<String>, Signed(p): Signed, mut form: axum::extract::Multipart) -> Answer {
    may_change(&p, Role::Editor)?;
    let (mut csrf, mut file) = (String::new(), Vec::new());
    loop {
        match form.next_field().await {
            Ok(Some(field)) => match field.name() {
                Some("csrf") => csrf = field.text().await.unwrap_or_default(),
                Some("file") => file = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                _ => {}
            },
            Ok(None) => break,
            Err(e) => {
                return Err(p.fail(
                    StatusCode::BAD_REQUEST,
                    Msg::new(
                        format!("The upload could not be read: {e}"),
                        format!("アップロードを読み取れません: {e}"),
                    ),
                ))
            }
        }
    }
    let expected = p.session.as_ref().map(|(_, s)| s.csrf.clone()).unwrap_or_default();
    if !super::session::same(&csrf, &expected) {
        return Err(p.fail(
            StatusCode::FORBIDDEN,
            Msg::new(
                "This form has expired or did not come from this console. Reload the page and try again.",
                "このフォームは期限切れか、このコンソールから送信されたものではありません。ページを再読み込みしてからやり直してください。",
            ),
        ));
    }
    let invalid = |en: String, ja: String| p.fail(StatusCode::UNPROCESSABLE_ENTITY, Msg::new(en, ja));
    if file.len() > TABLE_UPLOAD_LIMIT {
        return Err(invalid("The file is larger than 2 MiB.".into(), "ファイルが 2 MiB を超えています。".into()));
    }
    let loaded = p.app().loaded();
    let Some(table) = loaded.config.tables.get(name.as_str()) else { return Err(p.not_found("Table", "テーブル")) };
    let key = table.key.clone();
    let parsed = renkei_core::body::parse_body(
        Some("text/csv"),
        &file,
        renkei_core::body::BodyFormat::Csv,
        &renkei_core::body::CsvInOptions::default(),
    )
    .map_err(|e| invalid(e.msg().en.clone(), e.msg().ja.clone()))?;
    let rows = parsed.value.as_array().cloned().unwrap_or_default();
    for (i, row) in rows.iter().enumerate() {
        let filled = row.get(&key).and_then(|v| v.as_str()).is_some_and(|v| !v.trim().is_empty());
        if !filled {
            let line = i + 2;
            return Err(invalid(
                format!("Line {line}: the key column `{key}` is missing or empty."),
                format!("{line} 行目: キー列 `{key}` がないか空です。"),
            ));
        }
    }
    let mut item = format!("key: {}\nrows:\n", serde_json::Value::from(key.as_str()));
    for row in &rows {
        item.push_str(&format!("  - {row}\n"));
    }
    if rows.is_empty() {
        item = format!("key: {}\nrows: []\n", serde_json::Value::from(key.as_str()));
    }
    let who = actor(&p);
    let by = Editor {
        actor: &who,
        origin: "console",
        action: "config.edit",
        why: Some(serde_json::json!({ "upload": rows.len() })),
    };
    match live::edit(p.app(), by, &format!("tables/{name}"), None, |c| {
        Ok(edit::set_item(&c.text, "tables", &name, &item)?)
    })
    .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/console/tables/{name}?done=saved")).into_response()),
        Err(f) => {
            let msgs = problem_texts(&p, &f);
            Err(invalid(format!("Not saved: {}", msgs.join(" / ")), format!("保存していません: {}", msgs.join(" / "))))
        }
    }
}

/// `POST /console/flows/{name}/enabled` (`enabled`: `true` or `false`): turns a flow on or off. A flow turned
/// off plans no new deliveries; those already queued keep going.
pub async fn set_flow_enabled(Path(name): Path<String>, posted: Posted) -> Answer {
    let p = &posted.page;
    may_change(p, Role::Editor)?;
    let on = posted.field("enabled").as_deref() == Some("true");
    let who = actor(p);
    let by = Editor {
        actor: &who,
        origin: "console",
        action: "config.edit",
        why: Some(serde_json::json!({ "enabled": on })),
    };
    let result = live::edit(p.app(), by, &format!("flows/{name}"), None, |current| {
        let item = edit::item(&current.text, "flows", &name)?
            .ok_or_else(|| EditError::NotFound { section: "flows".into(), name: name.clone() })?;
        let item = edit::set_in(&item, "", "enabled", if on { "true" } else { "false" })?;
        Ok(edit::set_item(&current.text, "flows", &name, &item)?)
    })
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/console/flows/{name}?done=saved")).into_response()),
        Err(f) => {
            let msgs = problem_texts(p, &f);
            Err(p.fail(StatusCode::UNPROCESSABLE_ENTITY, Msg::new(msgs.join(" / "), msgs.join(" / "))))
        }
    }
}
