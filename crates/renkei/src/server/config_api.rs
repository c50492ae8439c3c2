//! `/api/v1/config`: the running config, read and edited, whole or one item at a time.
//!
//! What is shown never holds a secret: literal secrets are masked (`[REDACTED]`) and a text sent back with the
//! masks in place keeps the secrets it had ([`renkei_core::config::edit::restore`]). An edit is loaded as a
//! whole before it is kept (422 with every problem and its line when it does not load), is made from the
//! running revision (409 when someone else's edit came first; send `base` to make that explicit), and runs at
//! once on this node and within seconds on the others ([`crate::live`]).
//!
//! Roles: reading is `viewer`; editing destinations, flows and tables is `editor`; sources, subscriptions and
//! the whole text are `admin` (a source decides who may send, a subscription where events go).

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use renkei_core::config::edit::{self, EditError};
use renkei_core::config::Problem;
use renkei_core::{Lang, Msg};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::access::{Caller, Role};
use crate::app::App;
use crate::live::{self, EditFailure, Editor};

#[derive(Debug, Deserialize)]
pub struct Change {
    /// YAML: the whole config, or one item's value.
    text: String,
    /// The revision the text was made from; the edit is refused when another has run since.
    #[serde(default)]
    base: Option<i64>,
}

/// The role an edit of `section` needs.
pub fn role_to_edit(section: &str) -> Role {
    match section {
        "destinations" | "flows" | "tables" => Role::Editor,
        _ => Role::Admin,
    }
}

fn forbidden(role: Role, has: Role) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        Msg::new(
            format!("this needs the {role} role; this token has the {has} role"),
            format!("この操作には {role} ロールが必要です（このトークンのロールは {has} です）"),
        ),
    )
}

/// The answer to an edit that was not kept.
pub fn failure(f: EditFailure) -> ApiError {
    match f {
        EditFailure::Edit(e @ EditError::NotFound { .. }) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.message())
        }
        EditFailure::Edit(e @ EditError::Mask { .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "secret_mask", e.message())
        }
        EditFailure::Edit(e) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.message()),
        EditFailure::Problems(problems) => {
            let n = problems.len();
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                Msg::new(
                    format!("the config would not load ({n} problem(s)); nothing was changed"),
                    format!("設定を読み込めません（{n} 件の問題）。何も変更していません"),
                ),
            );
            e.extra = Some(Box::new(move |lang| problems_json(&problems, lang)));
            e
        }
        EditFailure::Conflict(m) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            Msg::new(
                format!("{m}; load the config again and redo the change"),
                format!("設定は他の変更で更新されています（{m}）。読み込み直してから変更してください"),
            ),
        ),
        EditFailure::NoKey => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_master_key",
            Msg::new(
                "this hub runs without a master key, so it cannot keep config edits",
                "このハブはマスターキーなしで動いているため、設定の変更を保存できません",
            ),
        ),
        EditFailure::Store(e) => ApiError::from(e),
    }
}

fn problems_json(problems: &[Problem], lang: Lang) -> serde_json::Map<String, Value> {
    let items: Vec<Value> =
        problems.iter().map(|p| json!({ "path": p.path, "line": p.line, "message": p.message.get(lang) })).collect();
    serde_json::Map::from_iter([("problems".to_owned(), Value::Array(items))])
}

fn section_error(e: EditError, headers: &HeaderMap) -> ApiError {
    failure(EditFailure::Edit(e)).lang(headers)
}

/// `GET /config`: the running config's text, secrets masked, and its revision.
pub async fn get_config(State(app): State<Arc<App>>) -> Json<Value> {
    let loaded = app.loaded();
    Json(json!({ "revision": app.revision(), "text": live::shown_text(&loaded) }))
}

/// `PUT /config` (admin): replaces the whole text.
pub async fn put_config(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(change): Json<Change>,
) -> Result<Json<Value>, ApiError> {
    let by = Editor { actor: &caller.actor, origin: "api", action: "config.edit", why: None };
    let id = live::edit(&app, by, "config", change.base, |current| {
        Ok(edit::restore(&change.text, &current.text, &current.redactor)?)
    })
    .await
    .map_err(|f| failure(f).lang(&headers))?;
    Ok(Json(json!({ "revision": id })))
}

/// `GET /config/revisions` (admin): every revision, newest first, without its text.
pub async fn list_revisions(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let revs = app.store.config_revisions().await?;
    let running = app.revision();
    let items: Vec<Value> = revs
        .iter()
        .rev()
        .map(|r| json!({ "id": r.id, "loaded_at": r.loaded_at, "origin": r.origin, "running": r.id == running }))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /config/{section}`: the names of its items.
pub async fn list_items(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(section): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let loaded = app.loaded();
    let names = edit::names(&loaded.text, &section).map_err(|e| section_error(e, &headers))?;
    Ok(Json(json!({ "revision": app.revision(), "section": section, "items": names })))
}

/// `GET /config/{section}/{name}`: one item's value as written, secrets masked.
pub async fn get_item(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((section, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let loaded = app.loaded();
    let text = edit::item(&loaded.text, &section, &name)
        .map_err(|e| section_error(e, &headers))?
        .ok_or_else(|| section_error(EditError::NotFound { section: section.clone(), name: name.clone() }, &headers))?;
    let text = edit::redact(&text, &loaded.redactor);
    Ok(Json(json!({ "revision": app.revision(), "section": section, "name": name, "text": text })))
}

/// `PUT /config/{section}/{name}`: creates or replaces one item. 201 when it is new.
pub async fn put_item(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path((section, name)): Path<(String, String)>,
    Json(change): Json<Change>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let need = role_to_edit(&section);
    if caller.role < need {
        return Err(forbidden(need, caller.role).lang(&headers));
    }
    let mut created = false;
    let by = Editor { actor: &caller.actor, origin: "api", action: "config.edit", why: None };
    let id = live::edit(&app, by, &format!("{section}/{name}"), change.base, |current| {
        let old = edit::item(&current.text, &section, &name)?;
        created = old.is_none();
        let value = edit::restore(&change.text, old.as_deref().unwrap_or(""), &current.redactor)?;
        Ok(edit::set_item(&current.text, &section, &name, &value)?)
    })
    .await
    .map_err(|f| failure(f).lang(&headers))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "revision": id }))))
}

/// `DELETE /config/{section}/{name}`: removes one item (refused with 422 while something still uses it).
pub async fn delete_item(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path((section, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let need = role_to_edit(&section);
    if caller.role < need {
        return Err(forbidden(need, caller.role).lang(&headers));
    }
    let by = Editor { actor: &caller.actor, origin: "api", action: "config.edit", why: None };
    let id = live::edit(&app, by, &format!("{section}/{name}"), None, |current| {
        Ok(edit::remove_item(&current.text, &section, &name)?)
    })
    .await
    .map_err(|f| failure(f).lang(&headers))?;
    Ok(Json(json!({ "revision": id })))
}
