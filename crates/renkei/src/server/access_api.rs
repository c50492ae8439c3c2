//! `/api/v1/tokens` and `/api/v1/users` (admin): what `renkei token` and `renkei user` do, over the API.
//!
//! A new token is answered once, in the creating response; only its hash is kept. A password is taken from
//! the request body and kept as an argon2id hash; neither is ever answered, logged or audited. Every change is
//! stored with its audit entry (actor: the calling token) in one transaction.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use renkei_core::types::Span;
use renkei_store::{NewAudit, NewToken, NewUser, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiError;
use crate::access::{self, Caller, Role};
use crate::app::App;

fn audit(app: &App, caller: &Caller, action: &str, target: &str, detail: Value) -> NewAudit {
    NewAudit { at: app.clock.now(), actor: caller.actor.clone(), action: action.into(), target: target.into(), detail }
}

fn bad(en: String, headers: &HeaderMap) -> ApiError {
    ApiError::bad_request(en.clone(), format!("リクエストが正しくありません: {en}")).lang(headers)
}

fn role_of(s: &str, headers: &HeaderMap) -> Result<Role, ApiError> {
    Role::parse(s).ok_or_else(|| bad(format!("`{s}` is not a role: viewer, editor or admin"), headers))
}

fn store_error(e: StoreError, headers: &HeaderMap) -> ApiError {
    ApiError::from(e).lang(headers)
}

#[derive(Debug, Deserialize)]
pub struct NewTokenBody {
    name: String,
    role: String,
    /// e.g. `30d`; never expires when absent.
    #[serde(default)]
    expires: Option<String>,
}

/// `GET /tokens`: name, role, created, expires (never a token).
pub async fn list_tokens(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let tokens = app.store.list_tokens().await.map_err(|e| store_error(e, &headers))?;
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| json!({ "name": t.name, "role": t.role, "created_at": t.created_at, "expires_at": t.expires_at }))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `POST /tokens`: 201 with the token, shown this once.
pub async fn create_token(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewTokenBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    access::check_name(&body.name).map_err(|e| bad(e, &headers))?;
    let role = role_of(&body.role, &headers)?;
    let now = app.clock.now();
    let expires_at = match &body.expires {
        Some(e) => {
            let span = Span::parse(e).map_err(|e| bad(format!("expires: {e}"), &headers))?;
            Some(now + chrono::Duration::from_std(span.0).map_err(|_| bad("expires is too long".into(), &headers))?)
        }
        None => None,
    };
    let token = access::new_token();
    let record = NewToken {
        name: body.name.clone(),
        role: role.as_str().into(),
        hash: access::token_hash(&token),
        created_at: now,
        expires_at,
    };
    let detail = json!({ "role": role, "expires_at": expires_at });
    app.store
        .create_token(record, audit(&app, &caller, "token.created", &body.name, detail))
        .await
        .map_err(|e| store_error(e, &headers))?;
    let answer = json!({ "name": body.name, "role": role, "expires_at": expires_at, "token": token });
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `DELETE /tokens/{name}`.
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match app.store.revoke_token(&name, audit(&app, &caller, "token.revoked", &name, json!({}))).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found(&format!("token `{name}`")).lang(&headers)),
        Err(e) => Err(store_error(e, &headers)),
    }
}

#[derive(Debug, Deserialize)]
pub struct NewUserBody {
    name: String,
    role: String,
    password: String,
}

/// `GET /users`: name, role, created.
pub async fn list_users(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let users = app.store.list_users().await.map_err(|e| store_error(e, &headers))?;
    let items: Vec<Value> =
        users.iter().map(|u| json!({ "name": u.name, "role": u.role, "created_at": u.created_at })).collect();
    Ok(Json(json!({ "items": items })))
}

/// `POST /users`: a console user with a password (at least [`access::MIN_PASSWORD_CHARS`] characters).
pub async fn add_user(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<NewUserBody>,
) -> Result<StatusCode, ApiError> {
    access::check_name(&body.name).map_err(|e| bad(e, &headers))?;
    let role = role_of(&body.role, &headers)?;
    if body.password.chars().count() < access::MIN_PASSWORD_CHARS {
        return Err(bad(format!("a password needs at least {} characters", access::MIN_PASSWORD_CHARS), &headers));
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || access::hash_password(&password))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "hashing a password failed");
            ApiError::internal()
        })?;
    let user = NewUser {
        name: body.name.clone(),
        role: role.as_str().into(),
        password_hash: hash,
        created_at: app.clock.now(),
    };
    app.store
        .add_user(user, audit(&app, &caller, "user.added", &body.name, json!({ "role": role })))
        .await
        .map_err(|e| store_error(e, &headers))?;
    Ok(StatusCode::CREATED)
}

/// `DELETE /users/{name}`.
pub async fn remove_user(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match app.store.remove_user(&name, audit(&app, &caller, "user.removed", &name, json!({}))).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NotFound) => Err(ApiError::not_found(&format!("user `{name}`")).lang(&headers)),
        Err(e) => Err(store_error(e, &headers)),
    }
}
