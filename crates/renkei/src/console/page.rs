//! What every page needs: the reader's language, who is signed in, the CSRF token for its forms, the one
//! template environment, and the error page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::value::Value;
use minijinja::{context, Environment, State, UndefinedBehavior};
use renkei_core::{Lang, Msg};
use renkei_store::StoreError;

use super::session::{self, Session};
use super::Console;
use crate::access::Role;

/// Every template, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("dashboard.html", include_str!("templates/dashboard.html")),
    ("sources.html", include_str!("templates/sources.html")),
    ("source.html", include_str!("templates/source.html")),
    ("destinations.html", include_str!("templates/destinations.html")),
    ("destination.html", include_str!("templates/destination.html")),
    ("flows.html", include_str!("templates/flows.html")),
    ("flow.html", include_str!("templates/flow.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("tables.html", include_str!("templates/tables.html")),
    ("table.html", include_str!("templates/table.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("edit.html", include_str!("templates/edit.html")),
    ("config.html", include_str!("templates/config.html")),
];

/// The environment, built on first use. `.html` templates auto-escape everything they print; undefined
/// values are errors, so a misspelt variable fails the page (and the tests) instead of printing nothing.
fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("console template {name}: {e:#}"));
        }
        env.add_function("tr", tr);
        env.add_filter("jst", super::view::jst_filter);
        env
    })
}

/// `tr("English", "日本語")`: the text in the page's language. Both are written side by side in the
/// template, so no screen can lack one of them.
fn tr(state: &State, en: String, ja: String) -> String {
    match state.lookup("lang").as_ref().and_then(Value::as_str) {
        Some("ja") => ja,
        _ => en,
    }
}

/// One request to a console page.
pub struct Page {
    pub console: Arc<Console>,
    pub lang: Lang,
    /// Path and query of this request: where a language switch or a sign-in comes back to.
    pub here: String,
    /// The signed-in session and its id.
    pub session: Option<(String, Session)>,
    /// A short note after a POST (`?done=...`), in the page's language.
    pub flash: Option<String>,
    /// `Host`, for the webhook URL when `server.public_url` is not set.
    pub host: Option<String>,
}

impl FromRequestParts<Arc<Console>> for Page {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let lang = match session::cookie(headers, session::LANG_COOKIE).as_deref() {
            Some("ja") => Lang::Ja,
            Some("en") => Lang::En,
            _ => Lang::from_header(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())),
        };
        let now = console.app.clock.now();
        let session = session::cookie(headers, session::SESSION_COOKIE).map(|id| async move {
            let s = console.sessions.touch(&id, now).await;
            s.map(|s| (id, s))
        });
        let session = match session {
            Some(f) => f.await,
            None => None,
        };
        let here = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/console/".into());
        let query: HashMap<String, String> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        let flash = query.get("done").and_then(|d| flash(d, query.get("n").and_then(|n| n.parse().ok())));
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Page { console: console.clone(), lang, here, session, flash: flash.map(|m| m.get(lang).to_owned()), host })
    }
}

/// The notes a POST's redirect may ask for; only these, so a link cannot put words on the page.
fn flash(done: &str, n: Option<i64>) -> Option<Msg> {
    let n = n.unwrap_or(0);
    Some(match done {
        "retried" => Msg::new(format!("Delivery #{n} is due again."), format!("配信 #{n} を再送待ちにしました。")),
        "replayed" => Msg::new(
            format!("The event was run through the current flows again: {n} new deliveries."),
            format!("イベントを現在のフローで再実行しました（新しい配信 {n} 件）。"),
        ),
        "bulk" => Msg::new(
            format!("{n} dead deliveries are due again."),
            format!("停止中の配信 {n} 件を再送待ちにしました。"),
        ),
        "tested" => Msg::new("Connection test finished.", "接続テストが終わりました。"),
        "saved" => Msg::new(
            "Saved: the change runs now, on every node.",
            "保存しました。変更はすべてのノードですぐに有効になります。",
        ),
        "deleted" => Msg::new("Deleted.", "削除しました。"),
        "signed_out" => Msg::new("Signed out.", "サインアウトしました。"),
        _ => return None,
    })
}

/// Words for the states of events, deliveries and attempts, as the page's language says them.
fn labels(lang: Lang) -> Value {
    let words: &[(&str, &str, &str)] = &[
        ("pending", "pending", "配信待ち"),
        ("in_flight", "sending", "送信中"),
        ("retrying", "retrying", "再試行中"),
        ("succeeded", "succeeded", "成功"),
        ("dead", "dead", "停止"),
        ("skipped", "skipped", "対象外"),
        ("accepted", "accepted", "受理"),
        ("rejected", "rejected", "拒否"),
        ("success", "success", "成功"),
        ("transient", "temporary error", "一時的なエラー"),
        ("permanent", "permanent error", "恒久的なエラー"),
    ];
    Value::from_iter(words.iter().map(|(k, en, ja)| (*k, if lang == Lang::Ja { *ja } else { *en })))
}

impl Page {
    pub fn lang_code(&self) -> &'static str {
        match self.lang {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    pub fn t<'a>(&self, m: &'a Msg) -> &'a str {
        m.get(self.lang)
    }

    pub fn principal(&self) -> Option<&session::Principal> {
        self.session.as_ref().map(|(_, s)| &s.principal)
    }

    pub fn app(&self) -> &crate::app::App {
        &self.console.app
    }

    /// Renders `template` inside the layout; `nav` marks the menu entry.
    pub fn render(&self, template: &str, nav: &str, ctx: Value) -> Response {
        self.render_status(StatusCode::OK, template, nav, ctx)
    }

    pub fn render_status(&self, status: StatusCode, template: &str, nav: &str, ctx: Value) -> Response {
        let other = if self.lang == Lang::Ja { "en" } else { "ja" };
        let switch = format!(
            "/console/lang?to={other}&next={}",
            form_urlencoded::byte_serialize(self.here.as_bytes()).collect::<String>()
        );
        let (principal, csrf, may_operate, may_admin) = match &self.session {
            Some((_, s)) => (
                Value::from_serialize(&s.principal),
                s.csrf.clone(),
                s.principal.may(Role::Editor),
                s.principal.may(Role::Admin),
            ),
            None => (Value::from(()), String::new(), false, false),
        };
        let base = context! {
            lang => self.lang_code(),
            nav => nav,
            principal => principal,
            csrf => csrf,
            may_operate => may_operate,
            may_admin => may_admin,
            lang_switch => switch,
            flash => self.flash.clone(),
            version => env!("CARGO_PKG_VERSION"),
            labels => labels(self.lang),
        };
        match env().get_template(template).and_then(|t| t.render(context! { ..ctx, ..base })) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template, error = format!("{e:#}"), "console page failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log\n").into_response()
            }
        }
    }

    /// An error page in the reader's language.
    pub fn fail(&self, status: StatusCode, msg: Msg) -> Fail {
        let text = self.t(&msg).to_owned();
        Fail(Box::new(self.render_status(
            status,
            "error.html",
            "",
            context! { status => status.as_u16(), message => text },
        )))
    }

    pub fn not_found(&self, what_en: &str, what_ja: &str) -> Fail {
        self.fail(
            StatusCode::NOT_FOUND,
            Msg::new(format!("{what_en} not found."), format!("{what_ja}が見つかりません。")),
        )
    }

    /// A store failure as the API answers it: not found, conflict with its reason, or opaque (logged).
    pub fn store_fail(&self, e: StoreError) -> Fail {
        match e {
            StoreError::NotFound => self.not_found("Record", "レコード"),
            StoreError::Conflict(reason) => self.fail(
                StatusCode::CONFLICT,
                Msg::new(
                    format!("Not possible in the current state: {reason}"),
                    format!("現在の状態では実行できません: {reason}"),
                ),
            ),
            StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "console: storage unavailable");
                self.fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Msg::new(
                        "The database is unavailable. Try again shortly.",
                        "データベースに接続できません。しばらくしてから再度お試しください。",
                    ),
                )
            }
            StoreError::Other(cause) => {
                tracing::error!(error = %cause, "console: storage error");
                self.fail(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Msg::new(
                        "Internal error; see the server log.",
                        "内部エラーです。サーバーのログを確認してください。",
                    ),
                )
            }
        }
    }
}

/// A finished error page.
pub struct Fail(Box<Response>);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        *self.0
    }
}

pub type Answer = Result<Response, Fail>;

/// A page that needs a signed-in reader; others are sent to the sign-in page and brought back after.
pub struct Signed(pub Page);

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let Ok(page) = Page::from_request_parts(parts, console).await;
        if page.session.is_some() {
            return Ok(Signed(page));
        }
        let next = form_urlencoded::byte_serialize(page.here.as_bytes()).collect::<String>();
        Err(Redirect::to(&format!("/console/login?next={next}")).into_response())
    }
}

/// A submitted form of a signed-in reader whose role may change things (editor or admin), carrying the
/// session's CSRF token. Handlers that change anything take this, so none can forget either check.
pub struct Posted {
    pub page: Page,
    pub fields: HashMap<String, String>,
}

/// Forms here are short fields or a config's text; anything larger is not one of ours.
const FORM_LIMIT: usize = 1024 * 1024;

impl FromRequest<Arc<Console>> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let Submitted { page, fields } = Submitted::from_request(req, console).await?;
        let may = page.session.as_ref().is_some_and(|(_, s)| s.principal.may(Role::Editor));
        if !may {
            return Err(page
                .fail(
                    StatusCode::FORBIDDEN,
                    Msg::new(
                        "Your role may look but not change things (retry, replay and tests need editor).",
                        "このロールでは閲覧のみできます（再送・再実行・接続テストには editor 以上が必要です）。",
                    ),
                )
                .into_response());
        }
        Ok(Posted { page, fields })
    }
}

/// A submitted form of any signed-in reader, with the session's CSRF token checked (signing out).
pub struct Submitted {
    pub page: Page,
    pub fields: HashMap<String, String>,
}

impl FromRequest<Arc<Console>> for Submitted {
    type Rejection = Response;

    async fn from_request(req: Request, console: &Arc<Console>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Signed(page) = Signed::from_request_parts(&mut parts, console).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.unwrap_or_else(|_| Bytes::new());
        let fields: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
        let expected = page.session.as_ref().map(|(_, s)| s.csrf.as_str()).unwrap_or("");
        if !session::same(fields.get("csrf").map(String::as_str).unwrap_or(""), expected) {
            return Err(page
                .fail(
                    StatusCode::FORBIDDEN,
                    Msg::new(
                        "This form has expired or did not come from this console. Reload the page and try again.",
                        "このフォームは期限切れか、このコンソールから送信されたものではありません。ページを再読み込みしてからやり直してください。",
                    ),
                )
                .into_response());
        }
        Ok(Submitted { page, fields })
    }
}

impl Posted {
    /// A field, or `None` when absent or blank.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        let env = super::env();
        for (name, _) in super::TEMPLATES {
            env.get_template(name).unwrap();
        }
    }
}
