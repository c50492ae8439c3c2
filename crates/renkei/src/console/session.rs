//! Signing in to the console, sessions, CSRF tokens and the language switch.
//!
//! One signs in with a console user's name and password (`renkei user add`), or with a token pasted into the
//! form: the admin token (`server.admin_token` / `RENKEI_ADMIN_TOKEN`) or an API token (`renkei token
//! create`). Either way [`authenticate`] gives a [`Principal`]: a name, the name the audit log uses, and a role
//! (`crate::access::Role`: viewer reads; editor also retries, replays and tests connections; admin also reads
//! the audit log), the same roles the admin API checks.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when `server.public_url`
//! is https), kept in the store as the id's SHA-256 with its principal and the CSRF token every form of the
//! session carries, so every node behind a load balancer knows it and a restart keeps it. Sessions end on
//! sign-out, after [`IDLE`] without a request, and after [`MAX_AGE`]. Sign-in attempts are limited per client
//! address ([`SIGN_IN_LIMIT`]), so passwords cannot be guessed at speed.
//! What a session may do is decided by its principal's role at each request, in one place
//! (`super::page::Posted` for changes, [`Principal::may`] for pages).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, Utc};
use minijinja::context;
use renkei_core::Msg;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::page::{Page, Submitted};
use super::Console;
use crate::access::{self, Role};
use crate::app::App;

pub const SESSION_COOKIE: &str = "renkei_session";
pub const LANG_COOKIE: &str = "renkei_lang";
/// The sign-in form's own CSRF token (double submit: cookie and field must match), since there is no
/// session yet to hold one.
const LOGIN_COOKIE: &str = "renkei_login";

/// A session unused this long ends.
pub const IDLE: Duration = Duration::hours(12);
/// A session ends this long after sign-in, used or not.
pub const MAX_AGE: Duration = Duration::days(7);
/// Sign-in attempts per client address: a burst of 10, then one every 6 seconds.
pub const SIGN_IN_LIMIT: renkei_core::config::RateLimit =
    renkei_core::config::RateLimit { per_second: 1.0 / 6.0, burst: 10 };

/// Who signed in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Principal {
    /// Shown in the header.
    pub name: String,
    /// As the audit log names it: `user:NAME`, `token:NAME` or `admin_token`.
    pub actor: String,
    pub role: Role,
    /// How: `password` or `token`.
    pub method: String,
}

impl Principal {
    pub fn may(&self, role: Role) -> bool {
        self.role >= role
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub created: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// What the store keeps of a session.
#[derive(Serialize, Deserialize)]
struct Kept {
    principal: Principal,
    csrf: String,
}

/// The console's sessions, kept in the store.
pub struct Sessions {
    store: std::sync::Arc<dyn renkei_store::Store>,
}

impl Sessions {
    pub fn new(store: std::sync::Arc<dyn renkei_store::Store>) -> Sessions {
        Sessions { store }
    }

    /// Starts a session; returns its id (the cookie's value; the store keeps only its hash).
    pub async fn start(&self, principal: Principal, now: DateTime<Utc>) -> Result<String, renkei_store::StoreError> {
        let id = random_token();
        let kept = Kept { principal, csrf: random_token() };
        let record = renkei_store::SessionRecord {
            id_hash: access::token_hash(&id),
            data: serde_json::to_string(&kept).expect("a session serialises"),
            created_at: now,
            last_seen: now,
        };
        self.store.put_session(&record, now - IDLE).await?;
        Ok(id)
    }

    /// The live session with this id, marked as used now. A store that cannot answer signs nobody in.
    pub async fn touch(&self, id: &str, now: DateTime<Utc>) -> Option<Session> {
        match self.store.touch_session(&access::token_hash(id), now, now - IDLE, now - MAX_AGE).await {
            Ok(Some(r)) => {
                let kept: Kept = serde_json::from_str(&r.data).ok()?;
                Some(Session {
                    principal: kept.principal,
                    csrf: kept.csrf,
                    created: r.created_at,
                    last_seen: r.last_seen,
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "console: reading a session failed");
                None
            }
        }
    }

    pub async fn end(&self, id: &str) {
        if let Err(e) = self.store.end_session(&access::token_hash(id)).await {
            tracing::warn!(error = %e, "console: ending a session failed");
        }
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time comparison of a submitted token with the expected one.
pub fn same(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(console: &Console, name: &str, value: &str, path: &str, max_age: Option<i64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if console.secure_cookies {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are URL-safe base64 or fixed words")
}

/// Where to go after signing in or switching language: a console path only, so a crafted link cannot send
/// the reader elsewhere.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.contains("//") && !n.contains('\\') => n.to_owned(),
        _ => "/console/".to_owned(),
    }
}

/// Turns what the sign-in form carried into who is signing in: a user's name and password, or a token
/// (the config's admin token or a stored API token, as the admin API accepts them). `None` when neither
/// opens anything.
pub async fn authenticate(
    app: &App,
    fields: &HashMap<String, String>,
) -> Result<Option<Principal>, renkei_store::StoreError> {
    let field = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(name) = field("name") {
        let password = fields.get("password").cloned().unwrap_or_default();
        let user = match app.store.get_user(name).await {
            Ok(u) => Some(u),
            Err(renkei_store::StoreError::NotFound) => None,
            Err(e) => return Err(e),
        };
        // An unknown name costs the same hash as a known one, so timing does not tell which names exist.
        let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| dummy_hash().to_owned());
        let ok = tokio::task::spawn_blocking(move || access::verify_password(&password, &hash)).await.unwrap_or(false);
        return Ok(user.filter(|_| ok).and_then(|u| {
            // A role this version does not know (written by a newer one) opens nothing.
            let role = Role::parse(&u.role)?;
            Some(Principal { actor: format!("user:{}", u.name), name: u.name, role, method: "password".into() })
        }));
    }
    match access::authenticate(app, field("token")).await {
        Ok(caller) => {
            let name =
                if caller.actor == access::CONFIG_TOKEN_ACTOR { "admin".to_owned() } else { caller.actor.clone() };
            Ok(Some(Principal { name, actor: caller.actor, role: caller.role, method: "token".into() }))
        }
        Err(access::Denied::Store(e)) => Err(e),
        Err(access::Denied::Unknown | access::Denied::Expired { .. }) => Ok(None),
    }
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| access::hash_password("renkei-no-such-user").unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

pub async fn login_form(State(console): State<std::sync::Arc<Console>>, page: Page, q: Query<NextParam>) -> Response {
    if page.session.is_some() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    login_page(&console, &page, q.0.next.as_deref(), StatusCode::OK, None)
}

fn login_page(console: &Console, page: &Page, next: Option<&str>, status: StatusCode, error: Option<Msg>) -> Response {
    let token = random_token();
    let mut resp = page.render_status(
        status,
        "login.html",
        "",
        context! {
            login_csrf => token,
            next => safe_next(next),
            admin_token => console.app.admin_token.is_some(),
            error => error.map(|m| page.t(&m).to_owned()),
        },
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(console, LOGIN_COOKIE, &token, "/console/login", Some(3600)));
    resp
}

pub async fn login(
    State(console): State<std::sync::Arc<Console>>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    page: Page,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let peer = connect.map(|c| c.0 .0);
    let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let next = fields.get("next").map(String::as_str);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same(fields.get("csrf").map(String::as_str).unwrap_or(""), &expected) {
        let msg = Msg::new(
            "The sign-in form expired. Please try again.",
            "サインインのフォームが期限切れです。もう一度お試しください。",
        );
        return login_page(&console, &page, next, StatusCode::FORBIDDEN, Some(msg));
    }
    let ip = crate::server::auth::client_ip(peer, &headers, &console.app.loaded().config.server.trusted_proxies);
    let key = format!("console-sign-in:{}", ip.map(|i| i.to_string()).unwrap_or_default());
    if let Err(wait) = console.app.limiter.take(&key, &SIGN_IN_LIMIT, std::time::Instant::now()) {
        tracing::warn!(client = ?ip, "console sign-in attempts over the limit");
        let secs = wait.as_secs() + 1;
        let msg = Msg::new(
            format!("Too many sign-in attempts from this address. Wait {secs} seconds and try again."),
            format!("このアドレスからのサインインの試行が多すぎます。{secs} 秒待ってからもう一度お試しください。"),
        );
        let mut resp = login_page(&console, &page, next, StatusCode::TOO_MANY_REQUESTS, Some(msg));
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let principal = match authenticate(&console.app, &fields).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::warn!("console sign-in refused");
            let msg = Msg::new(
                "That did not sign you in: check the name and password, or the token.",
                "サインインできませんでした。ユーザー名とパスワード、またはトークンを確認してください。",
            );
            return login_page(&console, &page, next, StatusCode::UNAUTHORIZED, Some(msg));
        }
        Err(e) => return page.store_fail(e).into_response(),
    };
    if let Some((old, _)) = &page.session {
        console.sessions.end(old).await;
    }
    tracing::info!(who = %principal.actor, method = %principal.method, "console sign-in");
    super::audit(
        &console.app,
        &principal,
        "console.signed_in",
        String::new(),
        serde_json::json!({ "method": principal.method }),
    )
    .await;
    let id = match console.sessions.start(principal, console.app.clock.now()).await {
        Ok(id) => id,
        Err(e) => return page.store_fail(e).into_response(),
    };
    let mut resp = Redirect::to(&safe_next(next)).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, SESSION_COOKIE, &id, "/", None));
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, LOGIN_COOKIE, "", "/console/login", Some(0)));
    resp
}

pub async fn logout(State(console): State<std::sync::Arc<Console>>, form: Submitted) -> Response {
    if let Some((id, _)) = &form.page.session {
        console.sessions.end(id).await;
    }
    let mut resp = Redirect::to("/console/login?done=signed_out").into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, SESSION_COOKIE, "", "/", Some(0)));
    resp
}

#[derive(Debug, Default, Deserialize)]
pub struct LangParams {
    to: Option<String>,
    next: Option<String>,
}

/// Remembers the language in a cookie and goes back. A GET: it changes nothing but how pages read.
pub async fn switch_lang(State(console): State<std::sync::Arc<Console>>, Query(p): Query<LangParams>) -> Response {
    let lang = match p.to.as_deref() {
        Some("ja") => "ja",
        _ => "en",
    };
    let mut resp = Redirect::to(&safe_next(p.next.as_deref())).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, LANG_COOKIE, lang, "/", Some(365 * 86400)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/deliveries?status=dead")), "/console/deliveries?status=dead");
        for bad in ["https://evil.example/", "//evil.example/console", "/console/..\\x", "/other"] {
            assert_eq!(safe_next(Some(bad)), "/console/", "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_from_every_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; renkei_lang=ja"));
        h.append(header::COOKIE, HeaderValue::from_static("renkei_session=xyz"));
        assert_eq!(cookie(&h, "renkei_lang").as_deref(), Some("ja"));
        assert_eq!(cookie(&h, "renkei_session").as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
