//! Destinations: where requests go. For each, where it points and how it signs in (kinds only), the flows
//! that use it, and the connection test (seed 001's 認証 button): for kintone, whether the token opens the
//! app and has the rights the flows need, and the app's fields (code, label, type) for mapping.
//!
//! The test is the one thing in the console that calls a destination, and only when its button is pressed;
//! it writes nothing there (see `crate::connection`). Its last result is kept in memory for the page.

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use minijinja::context;
use renkei_core::config::{Destination, HttpAuth};
use renkei_core::Msg;

use super::page::{Answer, Page, Posted, Signed};
use super::view;
use crate::connection::Report;

/// The last connection test of a destination.
pub struct LastTest {
    pub at: DateTime<Utc>,
    pub report: Report,
}

/// How the destination signs in; kinds and non-secret names only.
fn auth_text(p: &Page, d: &Destination) -> String {
    let m = match d {
        Destination::Http(h) => match &h.auth {
            None if h.headers.keys().any(|k| renkei_core::redact::Redactor::is_secret_header(k)) => {
                Msg::new("credentials in headers (not shown)", "ヘッダーに認証情報（表示しません）")
            }
            None => Msg::new("none", "なし"),
            Some(HttpAuth::Basic(b)) => Msg::new(
                format!("HTTP Basic, user `{}` (password not shown)", b.username),
                format!("Basic 認証、ユーザー `{}`（パスワードは表示しません）", b.username),
            ),
            Some(HttpAuth::Bearer(_)) => Msg::new("Bearer token (not shown)", "Bearer トークン（表示しません）"),
            Some(HttpAuth::Header { name, .. }) => {
                Msg::new(format!("header {name} (value not shown)"), format!("ヘッダー {name}（値は表示しません）"))
            }
        },
        Destination::Kintone(k) => {
            let mut en = Vec::new();
            let mut ja = Vec::new();
            let tokens = k.api_token.iter().count() + k.api_tokens.len();
            if tokens > 0 {
                en.push(format!("{tokens} API token(s)"));
                ja.push(format!("API トークン {tokens} 件"));
            }
            if let Some(l) = &k.login {
                en.push(format!("password sign-in as `{}`", l.username));
                ja.push(format!("パスワード認証（`{}`）", l.username));
            }
            if k.basic.is_some() {
                en.push("Basic認証 in front of the domain".into());
                ja.push("ドメインの Basic認証あり".into());
            }
            Msg::new(format!("{} (not shown)", en.join(", ")), format!("{}（値は表示しません）", ja.join("、")))
        }
    };
    p.app().loaded().redactor.text(p.t(&m)).into_owned()
}

fn summary(p: &Page, name: &str, d: &Destination) -> minijinja::Value {
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let flows: Vec<String> = p
        .app()
        .loaded()
        .config
        .flows
        .iter()
        .filter(|(_, f)| f.steps.iter().any(|s| s.to.as_str() == name))
        .map(|(n, _)| n.to_string())
        .collect();
    match d {
        Destination::Http(h) => context! {
            name => name, kind => "http",
            base_url => h.base_url.as_deref().map(|u| view::text(r, u)),
            app => None::<u64>, guest_space => None::<u64>,
            auth => auth_text(p, d),
            timeout => view::span(h.timeout.0), concurrency => h.concurrency,
            headers => view::headers(r, &h.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()),
            flows => flows,
        },
        Destination::Kintone(k) => context! {
            name => name, kind => "kintone",
            base_url => Some(view::text(r, &k.base())),
            app => Some(k.app), guest_space => k.guest_space,
            auth => auth_text(p, d),
            timeout => view::span(k.timeout.0), concurrency => k.concurrency,
            headers => Vec::<(String, String)>::new(),
            batch => context! { enabled => k.batch.enabled, max => k.batch.max, window => view::span(k.batch.window.0) },
            flows => flows,
        },
    }
}

pub async fn list(Signed(p): Signed) -> Answer {
    let items: Vec<_> = p.app().loaded().config.destinations.iter().map(|(n, d)| summary(&p, n.as_str(), d)).collect();
    Ok(p.render("destinations.html", "destinations", context! { items => items }))
}

pub async fn show(Signed(p): Signed, Path(name): Path<String>) -> Answer {
    let loaded = p.app().loaded();
    let Some(d) = loaded.config.destinations.get(name.as_str()) else {
        return Err(p.not_found("Destination", "連携先"));
    };
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let last = {
        let tests = p.console.tests.lock().expect("tests lock");
        tests.get(&name).map(|t| {
            let fields: Vec<_> = t
                .report
                .fields
                .iter()
                .map(|f| {
                    let sub: Vec<_> = f
                        .fields
                        .values()
                        .map(|s| context! { code => s.code, label => s.label, kind => s.kind, required => s.required })
                        .collect();
                    context! {
                        code => f.code, label => f.label, kind => f.kind, required => f.required, unique => f.unique,
                        options => f.options, read_only => f.read_only(), sub => sub,
                    }
                })
                .collect();
            let checks: Vec<_> = t
                .report
                .checks
                .iter()
                .map(|c| context! { what => view::text(r, &c.what), ok => c.ok, detail => view::text(r, &c.detail) })
                .collect();
            context! { at => t.at, ok => t.report.ok, checks => checks, fields => fields }
        })
    };
    Ok(p.render("destination.html", "destinations", context! { d => summary(&p, &name, d), last => last }))
}

/// The 認証 button: runs the connection test now, keeps the result, and shows the page with it.
pub async fn test(Path(name): Path<String>, Posted { page: p, .. }: Posted) -> Answer {
    let app = p.app();
    app.forget_kintone_fields(&name);
    let Some(report) = crate::connection::test_destination(&app.loaded(), &app.http(), &name).await else {
        return Err(p.not_found("Destination", "連携先"));
    };
    tracing::info!(destination = %name, ok = report.ok, "console: connection test");
    let at = app.clock.now();
    p.console.tests.lock().expect("tests lock").insert(name.clone(), LastTest { at, report });
    Ok(Redirect::to(&format!("/console/destinations/{name}?done=tested#test")).into_response())
}
