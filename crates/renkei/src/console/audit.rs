//! The audit log, for admins: who did what, to what, when (retries, replays, sign-ins, token and user
//! changes), newest first, with keyset paging. Read-only, as the log is.

use axum::extract::Query;
use axum::http::StatusCode;
use minijinja::context;
use renkei_core::Msg;
use renkei_store::AuditFilter;
use serde::Deserialize;

use super::page::{Answer, Signed};
use super::view;
use crate::access::Role;

const PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    actor: Option<String>,
    action: Option<String>,
    before: Option<String>,
}

pub async fn list(Signed(p): Signed, Query(q): Query<Params>) -> Answer {
    if !p.principal().is_some_and(|who| who.may(Role::Admin)) {
        return Err(p.fail(
            StatusCode::FORBIDDEN,
            Msg::new("The audit log is for admins.", "監査ログは admin のみ閲覧できます。"),
        ));
    }
    let app = p.app();
    let r = &app.loaded().redactor;
    let before = match view::given(&q.before).map(|b| b.parse::<i64>()) {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => {
            return Err(
                p.fail(StatusCode::BAD_REQUEST, Msg::new("Bad page cursor.", "ページの指定が正しくありません。"))
            )
        }
        None => None,
    };
    let filter = AuditFilter {
        actor: view::given(&q.actor),
        action: view::given(&q.action),
        since: None,
        before,
        limit: PAGE + 1,
    };
    let mut items = app.store.list_audit(&filter).await.map_err(|e| p.store_fail(e))?;
    let more = items.len() > PAGE as usize;
    items.truncate(PAGE as usize);
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("actor", &filter.actor), ("action", &filter.action)] {
        if let Some(v) = v {
            query.append_pair(k, v);
        }
    }
    let query = query.finish();
    let next = more.then(|| items.last().map(|a| a.id)).flatten().map(|id| {
        let sep = if query.is_empty() { "" } else { "&" };
        format!("/console/audit?{query}{sep}before={id}")
    });
    let rows: Vec<_> = items
        .iter()
        .map(|a| {
            let detail = match &a.detail {
                serde_json::Value::Object(m) if m.is_empty() => None,
                serde_json::Value::Null => None,
                d => Some(view::one_line(r, d, 300)),
            };
            context! {
                at => a.at, actor => view::text(r, &a.actor), action => a.action, target => view::text(r, &a.target),
                detail => detail,
            }
        })
        .collect();
    Ok(p.render(
        "audit.html",
        "audit",
        context! {
            rows => rows, next => next, paged => before.is_some(), newest => format!("/console/audit?{query}"),
            form => context! {
                actor => filter.actor.clone().unwrap_or_default(), action => filter.action.clone().unwrap_or_default(),
            },
        },
    ))
}
