//! Signing in to the console, sessions, CSRF tokens and the language switch.
//!
//! One signs in with a console user's name and password (`renkei user add`), or with a token pasted into the
//! form: the admin token (`server.admin_token` / `RENKEI_ADMIN_TOKEN`) or an API token (`renkei token
//! create`). Either way [`authenticate`] gives a [`Principal`]: a name, the name the audit log uses, and a role
//! (`crate::access::Role`: viewer reads; editor also retries, replays and tests connections; admin also reads
//! the audit log), the same roles the admin API checks.
//!
//! A session is a random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when `server.public_url`
//! is https), mapped in memory to its principal and to the CSRF token every form of the session carries.
//! Sessions end on sign-out, after [`IDLE`] without a request, after [`MAX_AGE`], and when the process stops.
//! What a session may do is decided by its principal's role at each request, in one place
//! (`super::page::Posted` for changes, [`Principal::may`] for pages).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

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
/// Sessions kept at most; beyond it the least recently used go (a flood of sign-ins cannot fill memory).
const MAX_SESSIONS: usize = 10_000;

/// Who signed in.
#[derive(Clone, Debug, Serialize)]
pub struct Principal {
    /// Shown in the header.
    pub name: String,
    /// As the audit log names it: `user:NAME`, `token:NAME` or `admin_token`.
    pub actor: String,
    pub role: Role,
    /// How: `password` or `token`.
    pub method: &'static str,
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

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; returns its id.
    pub fn start(&self, principal: Principal, now: DateTime<Utc>) -> String {
        let id = random_token();
        let session = Session { principal, csrf: random_token(), created: now, last_seen: now };
        let mut map = self.map.lock().expect("sessions lock");
        map.retain(|_, s| alive(s, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session with this id, marked as used now.
    pub fn touch(&self, id: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut map = self.map.lock().expect("sessions lock");
        match map.get_mut(id) {
            Some(s) if alive(s, now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, id: &str) {
        self.map.lock().expect("sessions lock").remove(id);
    }
}

fn alive(s: &Session, now: DateTime<Utc>) -> bool {
    now - s.last_seen < IDLE && now - s.created < MAX_AGE
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
            Some(Principal { actor: format!("user:{}", u.name), name: u.name, role, method: "password" })
        }));
    }
    match access::authenticate(app, field("token")).await {
        Ok(caller) => {
            let name =
                if caller.actor == access::CONFIG_TOKEN_ACTOR { "admin".to_owned() } else { caller.actor.clone() };
            Ok(Some(Principal { name, actor: caller.actor, role: caller.role, method: "token" }))
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
    page: Page,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
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
        console.sessions.end(old);
    }
    tracing::info!(who = %principal.actor, method = principal.method, "console sign-in");
    super::audit(
        &console.app,
        &principal,
        "console.signed_in",
        String::new(),
        serde_json::json!({ "method": principal.method }),
    )
    .await;
    let id = console.sessions.start(principal, console.app.clock.now());
    let mut resp = Redirect::to(&safe_next(next)).into_response();
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, SESSION_COOKIE, &id, "/", None));
    resp.headers_mut().append(header::SET_COOKIE, set_cookie(&console, LOGIN_COOKIE, "", "/console/login", Some(0)));
    resp
}

pub async fn logout(State(console): State<std::sync::Arc<Console>>, form: Submitted) -> Response {
    if let Some((id, _)) = &form.page.session {
        console.sessions.end(id);
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
    fn sessions_expire_when_idle_and_when_old() {
        let s = Sessions::default();
        let t0 = Utc::now();
        let p = Principal { name: "admin".into(), actor: "admin_token".into(), role: Role::Admin, method: "token" };
        let id = s.start(p, t0);
        assert!(s.touch(&id, t0 + Duration::hours(11)).is_some());
        assert!(s.touch(&id, t0 + Duration::hours(22)).is_some(), "used 11 h ago");
        assert!(s.touch(&id, t0 + Duration::hours(35)).is_none(), "idle for 13 h");
        let id =
            s.start(Principal { name: "a".into(), actor: "user:a".into(), role: Role::Viewer, method: "password" }, t0);
        for k in 1..28 {
            assert!(s.touch(&id, t0 + Duration::hours(6 * k)).is_some(), "used every 6 h");
        }
        assert!(s.touch(&id, t0 + MAX_AGE).is_none());
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
