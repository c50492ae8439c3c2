//! The web console through the real server: sign-in and sessions, every screen in Japanese and English, CSRF,
//! secrets never shown, retry and replay reaching the receiver; then (in `browser`) the same in headless
//! Chromium over WebDriver, taking the screenshots in docs/console/ when RENKEI_SCREENSHOTS=1.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use crate::harness::*;

const HOOK_TOKEN: &str = "hook-secret-token-5150";
const DEST_TOKEN: &str = "dest-bearer-secret-7788";

/// A config with one of everything the console shows; the secrets come from the environment, as in production.
fn config(rx: &Receiver, extra: &str) -> String {
    format!(
        r#"
sources:
  rakuraku:
    auth: {{ token: "${{HOOK_TOKEN}}" }}
    event_type: "{{{{ body.processType }}}}"
    dedupe: "{{{{ body.keyId }}}}:{{{{ body.processType }}}}"
destinations:
  sink:
    type: http
    base_url: "{rx}"
    auth: {{ bearer: "${{DEST_TOKEN}}" }}
flows:
  approval:
    source: rakuraku
    when: "event.type is startingwith('rakuraku_')"
    order_key: "{{{{ body.keyId }}}}"
    retry: {{ max_attempts: 1, initial: 1s, max: 1s }}
    steps:
      - to: sink
        method: PUT
        path: "/deal/{{{{ body.keyId }}}}"
        body:
          status: "{{{{ {{'rakuraku_submission': '申請中', 'rakuraku_approval': '承認済'}}[event.type] }}}}"
          approver: "{{{{ lookup('approvers', body.applicant).approver1 }}}}"
tables:
  approvers:
    key: applicant
    rows:
      - {{ applicant: 山田太郎, approver1: 佐藤花子, approver2: 鈴木一郎 }}
      - {{ applicant: 高橋一郎, approver1: "①丸数字", approver2: "" }}
{extra}
"#,
        rx = rx.url
    )
}

async fn spawn(rx: &Receiver, extra: &str) -> TestApp {
    spawn_app_env(&config(rx, extra), &[("HOOK_TOKEN", HOOK_TOKEN), ("DEST_TOKEN", DEST_TOKEN)]).await
}

/// Sends a 楽楽販売-style webhook with the source's token; returns the event id.
async fn send(app: &TestApp, key: &str, applicant: &str) -> String {
    let r = app
        .http
        .post(app.url("/hooks/rakuraku"))
        .header("X-Renkei-Token", HOOK_TOKEN)
        .json(&json!({"processType": "rakuraku_submission", "keyId": key, "applicant": applicant}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned()
}

/// A browser as far as the console cares: a cookie jar (reqwest's `cookies` feature is not enabled, so the
/// `Cookie` header is kept by hand), no automatic redirects, and a language.
pub(crate) struct Visitor {
    base: String,
    http: reqwest::Client,
    cookies: Mutex<HashMap<String, String>>,
    lang: Mutex<&'static str>,
}

pub(crate) struct Got {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    content_type: String,
    bytes: Vec<u8>,
}

impl Got {
    /// The page as sent (escaped).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The page with HTML's escapes undone, for looking for text a reader sees.
    pub(crate) fn plain(&self) -> String {
        unescape(&self.text())
    }
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Visitor {
    pub(crate) fn new(app: &TestApp) -> Visitor {
        Visitor {
            base: app.url(""),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            cookies: Mutex::default(),
            lang: Mutex::new("en-US,en;q=0.9"),
        }
    }

    fn accept_language(&self, v: &'static str) {
        *self.lang.lock().unwrap() = v;
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().unwrap().get(name).cloned()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Got {
        let jar = self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let lang = *self.lang.lock().unwrap();
        let req = req.header("accept-language", lang);
        let req = if jar.is_empty() { req } else { req.header("cookie", jar) };
        let r = req.send().await.unwrap();
        let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let set_cookies: Vec<String> =
            r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.lock().unwrap().remove(k);
            } else {
                self.cookies.lock().unwrap().insert(k.to_owned(), v.to_owned());
            }
        }
        Got {
            status: r.status().as_u16(),
            location: header("location"),
            content_type: header("content-type").unwrap_or_default(),
            set_cookies,
            bytes: r.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get(&self, path: &str) -> Got {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// GET, following redirects as a browser would.
    pub(crate) async fn open(&self, path: &str) -> Got {
        let mut got = self.get(path).await;
        for _ in 0..5 {
            match (got.status, &got.location) {
                (301..=308, Some(to)) => got = self.get(&to.clone()).await,
                _ => break,
            }
        }
        got
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Got {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Signs in through the form; panics unless it worked.
    async fn sign_in(&self, fields: &[(&str, &str)]) {
        let got = self.sign_in_answer(fields).await;
        assert_eq!(got.status, 303, "sign-in: {}", got.text());
        assert!(self.cookie("renkei_session").is_some());
    }

    async fn sign_in_answer(&self, fields: &[(&str, &str)]) -> Got {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200);
        let csrf = csrf_of(&form.text());
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post("/console/login", &all).await
    }

    pub(crate) async fn sign_in_as_admin(&self) {
        self.sign_in(&[("token", ADMIN)]).await;
    }
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn assert_no_secret(path: &str, text: &str) {
    for secret in [HOOK_TOKEN, DEST_TOKEN, ADMIN] {
        assert!(!text.contains(secret), "{path} shows the secret {secret}");
    }
}

#[tokio::test]
async fn every_screen_answers_in_japanese_and_english_and_never_shows_a_secret() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let id = send(&app, "1001", "山田太郎").await;
    // Refused: the right token in the query with a malformed body, so the secret is in what was received.
    let r = app.post(&format!("/hooks/rakuraku?token={HOOK_TOKEN}"), "application/json", "{broken").await;
    assert_eq!(r.status(), 400);
    app.drain().await;
    assert_eq!(rx.received().len(), 1);
    assert_eq!(rx.received()[0].header("authorization"), Some(format!("Bearer {DEST_TOKEN}").as_str()));

    let rejected = app.api("/events?status=rejected").await["items"][0]["id"].as_str().unwrap().to_owned();
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let screens = [
        "/console/".to_owned(),
        format!("/console/events/{rejected}"),
        "/console/sources".into(),
        "/console/sources/rakuraku".into(),
        "/console/destinations".into(),
        "/console/destinations/sink".into(),
        "/console/flows".into(),
        "/console/flows/approval".into(),
        format!("/console/flows/approval?event={id}"),
        "/console/events".into(),
        "/console/events?status=rejected&q=broken".into(),
        format!("/console/events/{id}"),
        "/console/deliveries".into(),
        "/console/deliveries?status=succeeded&flow=approval&since=2026-11-22T08:00".into(),
        "/console/deliveries/1".into(),
        "/console/tables".into(),
        "/console/tables/approvers".into(),
        "/console/audit".into(),
        "/console/audit?action=console.signed_in".into(),
    ];
    for (lang, header, word) in [("ja", "ja,en;q=0.5", "ダッシュボード"), ("en", "en-US,en;q=0.9", "Dashboard")]
    {
        v.accept_language(header);
        for path in &screens {
            let got = v.get(path).await;
            let text = got.text();
            assert_eq!(got.status, 200, "{lang} {path}: {text}");
            assert!(got.content_type.starts_with("text/html"), "{path}");
            assert!(text.contains(&format!(r#"<html lang="{lang}">"#)), "{lang} {path}");
            assert!(text.contains(word), "{lang} {path} lacks {word}");
            assert_no_secret(path, &text);
        }
    }
    // What is not there is a page in the reader's language, not a bare error.
    let missing = v.get("/console/deliveries/999").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("Delivery not found."), "{}", missing.text());
    assert_eq!(v.get("/console/flows/nope").await.status, 404);
    // The rejected request is listed with why, and its body as sent; the token it carried is masked.
    let events = v.get("/console/events/").await;
    assert_eq!(events.status, 404, "an id is needed after the slash");
    let list = v.get("/console/events?status=rejected").await.text();
    assert!(list.contains("HTTP 400"), "{list}");
    assert!(list.contains("{broken"), "{list}");
    // The delivery shows the request as sent, with the credential masked, and the JSON pretty.
    let d = v.get("/console/deliveries/1").await.plain();
    assert!(d.contains("PUT http://127.0.0.1:"), "{d}");
    assert!(d.contains("Authorization: [REDACTED]"), "{d}");
    assert!(d.contains("{\n  \"status\": \"申請中\",\n  \"approver\": \"佐藤花子\"\n}"), "{d}");
    // The preview renders the same request without sending it.
    let preview = v.get(&format!("/console/flows/approval?event={id}")).await.plain();
    assert!(preview.contains("/deal/1001"), "{preview}");
    assert_eq!(rx.received().len(), 1, "a preview sends nothing");
    // Dates are JST, named.
    assert!(d.contains("2026-11-22 09:00:00 JST"), "{d}");
    // The source page has the webhook URL and a curl without the token.
    let src = v.get("/console/sources/rakuraku").await.plain();
    assert!(src.contains(&format!("{}/hooks/rakuraku", app.url(""))), "{src}");
    assert!(src.contains("X-Renkei-Token: $RENKEI_HOOK_TOKEN"), "{src}");
}

#[tokio::test]
async fn visitors_who_are_not_signed_in_are_sent_to_the_sign_in_page() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    let root = v.get("/").await;
    assert_eq!((root.status, root.location.as_deref()), (303, Some("/console/")));
    let page = v.get("/console/deliveries?status=dead").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/console/login?next=%2Fconsole%2Fdeliveries%3Fstatus%3Ddead"));
    // A wrong token: refused, no session.
    let wrong = v.sign_in_answer(&[("token", "not-the-token")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("did not sign you in"), "{}", wrong.text());
    assert!(v.cookie("renkei_session").is_none());
    // A sign-in form without its CSRF token is refused even with the right token.
    let forged = v.post("/console/login", &[("token", ADMIN)]).await;
    assert_eq!(forged.status, 403);
    assert!(v.cookie("renkei_session").is_none());
    // The right one, brought back where the visitor was going.
    let form = v.get("/console/login?next=%2Fconsole%2Fdeliveries%3Fstatus%3Ddead").await;
    let csrf = csrf_of(&form.text());
    let ok = v
        .post("/console/login", &[("csrf", &csrf), ("next", "/console/deliveries?status=dead"), ("token", ADMIN)])
        .await;
    assert_eq!((ok.status, ok.location.as_deref()), (303, Some("/console/deliveries?status=dead")));
    // And never anywhere else.
    let v = Visitor::new(&app);
    let form = v.get("/console/login").await;
    let elsewhere = v
        .post(
            "/console/login",
            &[("csrf", &csrf_of(&form.text())), ("next", "https://evil.example/"), ("token", ADMIN)],
        )
        .await;
    assert_eq!(elsewhere.location.as_deref(), Some("/console/"));
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_secure_behind_https() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    let got = v.sign_in_answer(&[("token", ADMIN)]).await;
    let session = got.set_cookies.iter().find(|c| c.starts_with("renkei_session=")).unwrap();
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
    assert!(!session.contains("Secure"), "plain http here: {session}");
    // Pages may not be framed or cached, and load nothing from elsewhere.
    let page = v.http.get(app.url("/console/login")).send().await.unwrap();
    let h = page.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(h["cache-control"], "no-store");

    let https = spawn_app_env(
        &format!("server: {{ public_url: \"https://hub.example.co.jp\" }}\n{}", config(&rx, "")),
        &[("HOOK_TOKEN", HOOK_TOKEN), ("DEST_TOKEN", DEST_TOKEN)],
    )
    .await;
    let v = Visitor::new(&https);
    let got = v.sign_in_answer(&[("token", ADMIN)]).await;
    let session = got.set_cookies.iter().find(|c| c.starts_with("renkei_session=")).unwrap();
    assert!(session.contains("Secure"), "{session}");
    let src = v.get("/console/sources/rakuraku").await.plain();
    assert!(src.contains("https://hub.example.co.jp/hooks/rakuraku"), "the webhook URL uses server.public_url");
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    let app = spawn(&rx, "").await;
    let id = send(&app, "1001", "山田太郎").await;
    app.drain().await;
    assert_eq!(app.delivery(1).await["status"], "dead");
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    for fields in [vec![], vec![("csrf", "forged")]] {
        for path in ["/console/deliveries/1/retry".to_owned(), format!("/console/events/{id}/replay")] {
            let got = v.post(&path, &fields).await;
            assert_eq!(got.status, 403, "{path} {fields:?}");
            assert!(got.text().contains("did not come from this console"), "{}", got.text());
        }
        let got = v.post("/console/deliveries/retry-dead", &fields).await;
        assert_eq!(got.status, 403);
        let got = v.post("/console/logout", &fields).await;
        assert_eq!(got.status, 403, "signing out needs the token too");
    }
    assert_eq!(app.delivery(1).await["status"], "dead");
    assert_eq!(app.deliveries().await.len(), 1, "no replay happened");
    // Another session's token is not this one's.
    let other = Visitor::new(&app);
    other.sign_in_as_admin().await;
    let theirs = csrf_of(&other.get("/console/deliveries/1").await.text());
    assert_eq!(v.post("/console/deliveries/1/retry", &[("csrf", &theirs)]).await.status, 403);
}

#[tokio::test]
async fn retry_replay_and_bulk_retry_from_the_console_reach_the_receiver() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500), Reply::status(503)]);
    let app = spawn(&rx, "").await;
    let first = send(&app, "1001", "山田太郎").await;
    send(&app, "1002", "高橋一郎").await;
    app.drain().await;
    assert_eq!(rx.received().len(), 2);
    assert_eq!(app.delivery(1).await["status"], "dead");
    assert_eq!(app.delivery(2).await["status"], "dead");

    let v = Visitor::new(&app);
    v.accept_language("ja");
    v.sign_in_as_admin().await;
    // Retry one from its page: the form carries the session's token.
    let page = v.get("/console/deliveries/1").await.text();
    assert!(page.contains("今すぐ再送"), "{page}");
    let got = v.post("/console/deliveries/1/retry", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!((got.status, got.location.as_deref()), (303, Some("/console/deliveries/1?done=retried&n=1")));
    assert!(v.open(got.location.as_deref().unwrap()).await.text().contains("配信 #1 を再送待ちにしました。"));
    app.drain().await;
    assert_eq!(rx.received().len(), 3);
    assert_eq!(rx.received()[2].path, "/deal/1001");
    assert_eq!(app.delivery(1).await["status"], "succeeded");

    // Replay the first event: a new delivery, sent.
    let page = v.get(&format!("/console/events/{first}")).await.text();
    let got = v.post(&format!("/console/events/{first}/replay"), &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(got.status, 303);
    assert!(got.location.as_deref().unwrap().ends_with("?done=replayed&n=1"), "{:?}", got.location);
    app.drain().await;
    assert_eq!(rx.received().len(), 4);
    assert_eq!(rx.received()[3].json()["status"], "申請中");

    // Bulk retry of the dead deliveries of a filter: only those matching.
    let list = v.get("/console/deliveries?status=dead&q=1002").await.text();
    assert!(list.contains(r#"id="bulk-retry""#), "{list}");
    let got = v
        .post("/console/deliveries/retry-dead", &[("csrf", &csrf_of(&list)), ("flow", "approval"), ("q", "1002")])
        .await;
    assert_eq!(got.status, 303);
    let back = got.location.unwrap();
    assert!(back.contains("done=bulk&n=1"), "{back}");
    assert!(v.open(&back).await.text().contains("停止中の配信 1 件を再送待ちにしました。"));
    app.drain().await;
    assert_eq!(rx.received().len(), 5);
    assert_eq!(rx.received()[4].path, "/deal/1002");

    // Each action is in the audit log, by who did it.
    let audit = app.api("/audit").await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    for a in ["console.signed_in", "delivery.retried", "event.replayed", "deliveries.retried"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let by_console = audit["items"].as_array().unwrap().iter().filter(|a| a["action"] != "config.changed");
    assert!(by_console.clone().count() >= 4 && by_console.into_iter().all(|a| a["actor"] == "admin_token"));
    let page = v.get("/console/audit").await.text();
    assert!(page.contains("delivery.retried") && page.contains("admin_token"), "{page}");
}

#[tokio::test]
async fn a_viewer_token_can_look_but_not_change_anything() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    let app = spawn(&rx, "").await;
    send(&app, "1001", "山田太郎").await;
    app.post(&format!("/hooks/rakuraku?token={HOOK_TOKEN}"), "application/json", "{viewer-should-not-see").await;
    app.drain().await;
    let token = crate::access::token(&app, "watcher", "viewer", None).await;
    let v = Visitor::new(&app);
    v.sign_in(&[("token", &token)]).await;
    let page = v.get("/console/deliveries/1").await.text();
    assert!(page.contains("token:watcher (viewer)"), "{page}");
    assert!(!page.contains(r#"id="retry""#), "no retry button for a viewer");
    assert!(!v.get("/console/events?status=rejected").await.text().contains("viewer-should-not-see"));
    let rejected = app.api("/events?status=rejected").await["items"][0]["id"].as_str().unwrap().to_owned();
    let page_of_rejected = v.get(&format!("/console/events/{rejected}")).await.text();
    assert!(!page_of_rejected.contains("viewer-should-not-see"));
    assert!(page_of_rejected.contains("shown to editors and admins only"), "{page_of_rejected}");
    let got = v.post("/console/deliveries/1/retry", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(got.status, 403);
    assert_eq!(app.delivery(1).await["status"], "dead");
    assert_eq!(v.get("/console/audit").await.status, 403, "the audit log is for admins");
    assert!(!page.contains("/console/audit"), "nor is it in a viewer's menu");
    // Signing out is allowed to everyone.
    let got = v.post("/console/logout", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!((got.status, got.location.as_deref()), (303, Some("/console/login?done=signed_out")));
    assert!(v.cookie("renkei_session").is_none());
    assert_eq!(v.get("/console/").await.status, 303, "the session is gone");
}

#[tokio::test]
async fn items_are_edited_by_role_with_problems_shown_and_secrets_kept() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let editor = Visitor::new(&app);
    editor.sign_in(&[("token", &crate::access::token(&app, "ed", "editor", None).await)]).await;
    let viewer = Visitor::new(&app);
    viewer.sign_in(&[("token", &crate::access::token(&app, "vi", "viewer", None).await)]).await;

    // A viewer opens no editor; an editor edits flows and destinations, not sources or the whole config.
    assert_eq!(viewer.get("/console/config/flows/approval/edit").await.status, 403);
    assert_eq!(editor.get("/console/config/sources/rakuraku/edit").await.status, 403);
    assert_eq!(editor.get("/console/config").await.status, 403);
    let page = editor.get("/console/config/destinations/sink/edit").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let shown = page.plain();
    assert_no_secret("destination editor", &shown);
    let csrf = csrf_of(&page.text());
    let yaml = unescape(
        shown[shown.find(r#"id="yaml""#).unwrap()..].split_once('>').unwrap().1.split("</textarea>").next().unwrap(),
    );
    assert!(yaml.contains("[REDACTED]") || yaml.contains("${DEST_TOKEN}"), "{yaml}");

    // A change with a problem: 422, the problem with its line, nothing changed.
    let before = app.app.revision();
    let bad = yaml.replace("type: http", "type: htp");
    let got = editor.post("/console/config/destinations/sink", &[("csrf", &csrf), ("text", &bad)]).await;
    assert_eq!(got.status, 422);
    assert!(got.plain().contains("line ") && got.plain().contains("htp"), "{}", got.plain());
    assert_eq!(app.app.revision(), before);
    // Without the CSRF token: refused.
    let got = editor.post("/console/config/destinations/sink", &[("text", &yaml)]).await;
    assert_eq!(got.status, 403);

    // A good change runs at once and keeps the masked secret.
    let good = yaml.replace(&format!("base_url: \"{}\"", rx.url), &format!("base_url: \"{}/v2\"", rx.url));
    assert_ne!(good, yaml);
    let got = editor.post("/console/config/destinations/sink", &[("csrf", &csrf), ("text", &good)]).await;
    assert_eq!(
        (got.status, got.location.as_deref()),
        (303, Some("/console/destinations/sink?done=saved")),
        "{}",
        got.plain()
    );
    assert!(app.app.revision() > before);
    send(&app, "1001", "山田太郎").await;
    app.drain().await;
    let got = rx.received();
    assert_eq!(got[0].path, "/v2/deal/1001");
    assert_eq!(got[0].header("authorization"), Some(format!("Bearer {DEST_TOKEN}").as_str()));

    // A destination a flow uses is not deleted; the page says why.
    let got = editor.post("/console/config/destinations/sink/delete", &[("csrf", &csrf)]).await;
    assert_eq!(got.status, 422);
    assert!(got.plain().contains("`sink` was not deleted"), "{}", got.plain());
    let audit = app.api("/audit?action=config.edit").await;
    assert_eq!(audit["items"][0]["actor"], "token:ed");
    assert_eq!(audit["items"][0]["target"], "destinations/sink");

    // The mapping editor offers the latest event's fields, and lookups its values open in a table.
    let page = editor.get("/console/config/flows/approval/edit").await;
    assert_eq!(page.status, 200);
    let shown = page.plain();
    assert!(shown.contains("{{ body.applicant }}"), "{shown}");
    assert!(
        shown.contains("{{ lookup('approvers', body.applicant).approver1 }}") && shown.contains("佐藤花子"),
        "{shown}"
    );

    // A flow turned off plans nothing for new events; turned on again, it does.
    let page = editor.get("/console/flows/approval").await;
    let got =
        editor.post("/console/flows/approval/enabled", &[("csrf", &csrf_of(&page.text())), ("enabled", "false")]).await;
    assert_eq!(got.status, 303);
    assert!(!app.app.loaded().config.flows["approval"].enabled);
    let before = app.deliveries().await.len();
    send(&app, "1002", "山田太郎").await;
    assert_eq!(app.deliveries().await.len(), before, "no delivery for a disabled flow");
    let got =
        editor.post("/console/flows/approval/enabled", &[("csrf", &csrf_of(&page.text())), ("enabled", "true")]).await;
    assert_eq!(got.status, 303);
    send(&app, "1003", "山田太郎").await;
    assert_eq!(app.deliveries().await.len(), before + 1);
}

/// Sessions are kept in the store (as the id's hash): they outlive a restart and any node behind a load
/// balancer knows them. Sign-in attempts are limited per address.
#[tokio::test]
async fn sessions_outlive_a_restart_and_sign_in_attempts_are_limited() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let id = v.cookie("renkei_session").unwrap();
    let store = &app.app.store;
    let now = app.app.clock.now();
    let day = chrono::Duration::days(1);
    assert!(store.touch_session(&id, now, now - day, now - day).await.unwrap().is_none(), "the id is not stored");
    let hash = renkei::access::token_hash(&id);
    assert!(store.touch_session(&hash, now, now - day, now - day).await.unwrap().is_some());

    let app = app.restart().await;
    let again = Visitor::new(&app);
    again.cookies.lock().unwrap().insert("renkei_session".into(), id.clone());
    let page = again.get("/console/").await;
    assert_eq!(page.status, 200, "the session survived the restart");
    assert!(page.plain().contains("admin (admin)"));

    // Ten wrong tries, then even the right token waits.
    let intruder = Visitor::new(&app);
    for _ in 0..10 {
        assert_eq!(intruder.sign_in_answer(&[("token", "guess")]).await.status, 401);
    }
    let refused = intruder.sign_in_answer(&[("token", ADMIN)]).await;
    assert_eq!(refused.status, 429);
    assert!(refused.plain().contains("Too many sign-in attempts"), "{}", refused.plain());
    assert!(intruder.cookie("renkei_session").is_none());
    // Signing out ends the session on every node: the store forgets it.
    let page = again.get("/console/").await;
    let out = again.post("/console/logout", &[("csrf", &csrf_of(&page.text()))]).await;
    assert_eq!(out.status, 303);
    assert!(store_session_gone(&app, &hash).await);
}

async fn store_session_gone(app: &TestApp, hash: &str) -> bool {
    let now = app.app.clock.now();
    let day = chrono::Duration::days(1);
    app.app.store.touch_session(hash, now, now - day, now - day).await.unwrap().is_none()
}

/// A table's rows replaced from a Shift_JIS CSV file (as Excel saves one): the new rows are in the config, run
/// at once (a lookup uses them), and the CSV download gives them back; a file without the key column is refused.
#[tokio::test]
async fn a_table_is_replaced_by_an_uploaded_shift_jis_csv() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let page = v.get("/console/tables/approvers").await;
    let csrf = csrf_of(&page.text());
    let upload = |file: Vec<u8>, csrf: String| {
        let boundary = "renkei-test-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"approvers.csv\"\r\nContent-Type: text/csv\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        v.send(
            v.http
                .post(format!("{}/console/tables/approvers/upload", v.base))
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(body),
        )
    };
    let (sjis, _, _) = encoding_rs::SHIFT_JIS
        .encode("applicant,approver1,approver2\r\n山田太郎,髙橋①,\r\n佐藤花子,鈴木一郎,㈱本社\r\n");
    let got = upload(sjis.to_vec(), csrf.clone()).await;
    assert_eq!(
        (got.status, got.location.as_deref()),
        (303, Some("/console/tables/approvers?done=saved")),
        "{}",
        got.plain()
    );
    let loaded = app.app.loaded();
    let table = &loaded.config.tables["approvers"];
    assert_eq!(table.rows.len(), 2);
    assert_eq!(table.rows["山田太郎"]["approver1"], "髙橋①");
    assert_eq!(table.rows["佐藤花子"]["approver2"], "㈱本社");
    // Runs at once: the flow's lookup finds the new approver.
    send(&app, "1001", "山田太郎").await;
    app.drain().await;
    assert_eq!(rx.received()[0].json()["approver"], "髙橋①");
    // And downloads back as it came.
    let csv = v.get("/console/tables/approvers/csv?encoding=sjis").await;
    let (text, _, _) = encoding_rs::SHIFT_JIS.decode(&csv.bytes);
    assert!(text.contains("山田太郎,髙橋①,"), "{text}");

    let bad = upload(b"name,approver1\r\nx,y\r\n".to_vec(), csrf.clone()).await;
    assert_eq!(bad.status, 422);
    assert!(bad.plain().contains("key column `applicant`"), "{}", bad.plain());
    let forged = upload(b"applicant\r\nx\r\n".to_vec(), "forged".into()).await;
    assert_eq!(forged.status, 403);
    assert_eq!(app.app.loaded().config.tables["approvers"].rows.len(), 2, "nothing changed");
}

#[tokio::test]
async fn a_console_user_signs_in_with_a_password() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let now = app.app.clock.now();
    app.app
        .store
        .add_user(
            renkei_store::NewUser {
                name: "sato".into(),
                role: "editor".into(),
                password_hash: renkei::access::hash_password("correct horse battery").unwrap(),
                created_at: now,
            },
            renkei_store::NewAudit {
                at: now,
                actor: "cli".into(),
                action: "user.added".into(),
                target: "sato".into(),
                detail: json!({}),
            },
        )
        .await
        .unwrap();
    let v = Visitor::new(&app);
    assert_eq!(v.sign_in_answer(&[("name", "sato"), ("password", "wrong password!")]).await.status, 401);
    assert_eq!(v.sign_in_answer(&[("name", "nobody"), ("password", "correct horse battery")]).await.status, 401);
    v.sign_in(&[("name", "sato"), ("password", "correct horse battery")]).await;
    assert!(v.get("/console/").await.text().contains("sato (editor)"));
}

#[tokio::test]
async fn history_pages_with_cursors_and_filters() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    for i in 0..55 {
        send(&app, &format!("k{i:03}"), if i == 7 { "目印さん" } else { "山田太郎" }).await;
    }
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let first = v.get("/console/events").await.plain();
    assert_eq!(first.matches("<tr>").count() - 1, 50, "a page of 50 (and the header row)");
    let older = first.split(r#"id="older""#).next().unwrap();
    let href = older[older.rfind("href=\"").unwrap() + 6..].split('"').next().unwrap().to_owned();
    assert!(href.starts_with("/console/events?before="), "{href}");
    let second = v.get(&href).await.text();
    assert_eq!(second.matches("<tr>").count() - 1, 5);
    assert!(!second.contains(r#"id="older""#), "the last page");
    let found = v.get("/console/events?q=%E7%9B%AE%E5%8D%B0").await.text();
    assert_eq!(found.matches("<tr>").count() - 1, 1, "{found}");
    assert!(found.contains("目印さん"));
    // A time that cannot be read is said, not silently dropped.
    let bad = v.get("/console/deliveries?since=yesterday-ish").await.text();
    assert!(bad.contains("yesterday-ish"), "{bad}");
    assert!(bad.contains("not a date and time"), "{bad}");
    let bad = v.get("/console/deliveries?status=lost").await.text();
    assert!(bad.contains("Unknown status"), "{bad}");
}

#[tokio::test]
async fn text_from_senders_is_escaped() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    send(&app, "<script>alert(1)</script>", "<img src=x onerror=alert(2)>").await;
    app.drain().await;
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    for path in [
        "/console/events",
        "/console/events?q=script",
        "/console/deliveries",
        "/console/deliveries/1",
        "/console/sources/rakuraku",
    ] {
        let text = v.get(path).await.text();
        assert!(!text.contains("<script>alert"), "{path}");
        assert!(!text.contains("<img src=x"), "{path}");
    }
    let d = v.get("/console/deliveries/1").await.text();
    assert!(d.contains("&lt;script&gt;"), "{d}");
}

#[tokio::test]
async fn the_language_switch_remembers_the_choice() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let en = v.get("/console/flows").await.plain();
    assert!(en.contains(r#"<html lang="en">"#));
    let link = en.split(r#"id="lang-switch" href=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert_eq!(link, "/console/lang?to=ja&next=%2Fconsole%2Fflows");
    let got = v.get(&link).await;
    assert_eq!((got.status, got.location.as_deref()), (303, Some("/console/flows")));
    let ja = v.get("/console/flows").await.plain();
    assert!(ja.contains(r#"<html lang="ja">"#), "the cookie wins over Accept-Language");
    assert!(ja.contains("フロー"));
    assert!(ja.contains("時刻はすべて日本標準時（JST、Asia/Tokyo、UTC+09:00）です。"));
    let got = v.get("/console/lang?to=en&next=https%3A%2F%2Fevil.example%2F").await;
    assert_eq!(got.location.as_deref(), Some("/console/"));
}

#[tokio::test]
async fn tables_download_as_shift_jis_or_utf8_with_bom() {
    let rx = Receiver::start().await;
    let app = spawn(&rx, "").await;
    let v = Visitor::new(&app);
    v.sign_in_as_admin().await;
    let utf8 = v.get("/console/tables/approvers/csv?encoding=utf8").await;
    assert_eq!(utf8.status, 200);
    assert_eq!(utf8.content_type, "text/csv; charset=utf-8");
    assert!(utf8.bytes.starts_with(b"\xEF\xBB\xBF"), "a BOM for Excel");
    let text = String::from_utf8(utf8.bytes[3..].to_vec()).unwrap();
    assert_eq!(text, "applicant,approver1,approver2\r\n山田太郎,佐藤花子,鈴木一郎\r\n高橋一郎,①丸数字,\r\n");
    let sjis = v.get("/console/tables/approvers/csv?encoding=sjis").await;
    assert_eq!(sjis.content_type, "text/csv; charset=Shift_JIS");
    let (decoded, _, bad) = encoding_rs::SHIFT_JIS.decode(&sjis.bytes);
    assert!(!bad);
    assert_eq!(decoded, text, "Windows-31J holds ①");
    assert_eq!(v.get("/console/tables/nope/csv").await.status, 404);
}

#[tokio::test]
async fn the_kintone_connection_test_shows_the_apps_fields() {
    use renkei_testkit::kintone::{FakeKintone, Field, FieldType as T, Rights};
    let k = FakeKintone::start().await;
    k.add_app(
        12,
        vec![
            Field::new("customer_code", "顧客コード", T::SingleLineText).unique().required(),
            Field::new("amount", "金額", T::Number),
        ],
    )
    .add_token("kintone-token-secret-99", Rights::RECORDS);
    let rx = Receiver::start().await;
    let extra = format!(
        "  crm: {{ type: kintone, base_url: \"{}\", app: 12, api_token: \"kintone-token-secret-99\", allow_http: true }}\n",
        k.base_url()
    );
    // The destination goes under `destinations:`, which the config above ends with no other key after.
    let cfg = config(&rx, "").replace("destinations:\n", &format!("destinations:\n{extra}"));
    let app = spawn_app_env(&cfg, &[("HOOK_TOKEN", HOOK_TOKEN), ("DEST_TOKEN", DEST_TOKEN)]).await;
    let v = Visitor::new(&app);
    v.accept_language("ja");
    v.sign_in_as_admin().await;
    let page = v.get("/console/destinations/crm").await.text();
    assert!(page.contains("認証（接続テスト）"), "{page}");
    let got = v.post("/console/destinations/crm/test", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(got.status, 303);
    let page = v.open(got.location.as_deref().unwrap()).await.text();
    assert!(page.contains("成功しました"), "{page}");
    for shown in ["customer_code", "顧客コード", "SINGLE_LINE_TEXT", "amount", "金額", "NUMBER", "重複禁止"]
    {
        assert!(page.contains(shown), "{shown} missing");
    }
    assert!(!page.contains("kintone-token-secret-99"));
}

/// End-to-end in headless Chromium (Debian's `chromium` and `chromium-driver`), driven over the WebDriver
/// protocol with plain HTTP. Skipped, with one line, when chromedriver is not installed.
mod browser {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use renkei_testkit::kintone::{FakeKintone, Field, FieldType as T, Rights};
    use serde_json::{json, Value};

    use super::*;

    const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
    const CHROMIUM: &str = "/usr/bin/chromium";
    /// The W3C key of an element reference.
    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
    const WAIT: Duration = Duration::from_secs(15);

    /// chromedriver and one browser session; both are ended on drop, also when a test fails.
    struct Driver {
        child: Child,
        port: u16,
        base: String,
        http: reqwest::Client,
        session: String,
        _profile: tempfile::TempDir,
    }

    impl Driver {
        /// `None` (having said so) when chromedriver is not installed.
        async fn start() -> Option<Driver> {
            if !std::path::Path::new(CHROMEDRIVER).exists() {
                println!(
                    "skipping the browser test: {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
                );
                return None;
            }
            // A free port, chosen by the OS.
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            let http = reqwest::Client::new();
            // Wait until chromedriver listens and says it is ready.
            let deadline = Instant::now() + WAIT;
            loop {
                let ready = match http.get(format!("{base}/status")).send().await {
                    Ok(r) => r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "chromedriver did not become ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let profile = tempfile::TempDir::new().unwrap();
            let args = [
                "--headless".to_owned(),
                "--no-sandbox".into(),
                "--disable-gpu".into(),
                "--disable-quic".into(),
                "--no-first-run".into(),
                "--disable-background-networking".into(),
                "--disable-component-update".into(),
                "--disable-sync".into(),
                "--disable-dev-shm-usage".into(),
                "--hide-scrollbars".into(),
                "--window-size=1280,900".into(),
                "--lang=en-US".into(),
                format!("--user-data-dir={}", profile.path().display()),
            ];
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args, "prefs": {"intl.accept_languages": "en-US,en"}},
            }}});
            let r: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
            let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_owned();
            Some(Driver { child, port, base, http, session, _profile: profile })
        }

        async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Value> {
            let url = format!("{}/session/{}{path}", self.base, self.session);
            let req = self.http.request(method, url);
            let req = match body {
                Some(b) => req.json(&b),
                None => req,
            };
            let r = req.send().await.unwrap();
            let ok = r.status().is_success();
            let v: Value = r.json().await.unwrap();
            if ok {
                Ok(v["value"].clone())
            } else {
                Err(v["value"].clone())
            }
        }

        async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
            self.call(method.clone(), path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        }

        async fn goto(&self, url: &str) {
            self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
        }

        async fn url(&self) -> String {
            self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
        }

        async fn script(&self, script: &str, args: Value) -> Value {
            self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
        }

        /// The element `css` names, once the page has it.
        async fn find(&self, css: &str) -> String {
            let deadline = Instant::now() + WAIT;
            loop {
                let found = self
                    .call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
                    .await;
                if let Ok(v) = found {
                    return v[ELEMENT].as_str().unwrap().to_owned();
                }
                assert!(Instant::now() < deadline, "no `{css}` on {}", self.url().await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn click(&self, css: &str) {
            let id = self.find(css).await;
            self.cmd(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
        }

        async fn type_into(&self, css: &str, text: &str) {
            let id = self.find(css).await;
            self.cmd(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
        }

        /// Empties a field (a textarea's starter text) and types `text` into it.
        async fn replace_text(&self, css: &str, text: &str) {
            let id = self.find(css).await;
            self.cmd(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
            self.cmd(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
        }

        async fn text(&self, css: &str) -> String {
            let id = self.find(css).await;
            self.cmd(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap().to_owned()
        }

        /// Waits until the text of `css` contains `want` (pages load after clicks; forms redirect).
        async fn wait_text(&self, css: &str, want: &str) -> String {
            let deadline = Instant::now() + WAIT;
            loop {
                let found = self
                    .call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
                    .await;
                if let Ok(v) = found {
                    let id = v[ELEMENT].as_str().unwrap().to_owned();
                    if let Ok(t) = self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await {
                        let t = t.as_str().unwrap_or("").to_owned();
                        if t.contains(want) {
                            return t;
                        }
                    }
                }
                assert!(Instant::now() < deadline, "`{css}` never showed `{want}` on {}", self.url().await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Accepts the confirmation the page opened.
        async fn accept_confirm(&self) {
            let deadline = Instant::now() + WAIT;
            while self.call(reqwest::Method::GET, "/alert/text", None).await.is_err() {
                assert!(Instant::now() < deadline, "no confirmation was shown");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.cmd(reqwest::Method::POST, "/alert/accept", Some(json!({}))).await;
        }

        async fn resize(&self, width: u32, height: u32) {
            self.cmd(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
        }

        /// Saves the whole page as docs/console/NAME.png, only when RENKEI_SCREENSHOTS=1 (so CI never rewrites
        /// the committed images). Chromium's own capture (through chromedriver) takes the page beyond the window.
        async fn screenshot(&self, name: &str) {
            if std::env::var("RENKEI_SCREENSHOTS").as_deref() != Ok("1") {
                return;
            }
            let size = self
                .script(
                    "window.scrollTo(0, 0); return [document.documentElement.clientWidth, document.documentElement.scrollHeight];",
                    json!([]),
                )
                .await;
            let params = json!({"format": "png", "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}});
            let shot = self
                .cmd(
                    reqwest::Method::POST,
                    "/goog/cdp/execute",
                    Some(json!({"cmd": "Page.captureScreenshot", "params": params})),
                )
                .await;
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/console");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
        }
    }

    impl Drop for Driver {
        fn drop(&mut self) {
            // Ends the browser through chromedriver (a plain HTTP DELETE; drop cannot await), then chromedriver.
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session, self.port
                );
                let _ = s.write_all(req.as_bytes());
                let _ = s.read_to_end(&mut Vec::new());
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const KINTONE_TOKEN: &str = "kintone-browser-token-31";

    /// The hub the browser looks at: the config of the other tests, plus a kintone app written by a second
    /// flow, with a history: events over the morning, a dead delivery, a refused request.
    async fn hub(rx: &Receiver, k: &FakeKintone) -> TestApp {
        k.add_app(
            12,
            vec![
                Field::new("deal_id", "案件番号", T::SingleLineText).unique().required(),
                Field::new("applicant", "申請者", T::SingleLineText),
                Field::new("status", "承認状況", T::DropDown).options(["申請中", "承認済"]),
                Field::new("approver", "承認者", T::SingleLineText),
                Field::new("amount", "金額", T::Number),
            ],
        )
        .add_token(KINTONE_TOKEN, Rights::RECORDS);
        let dest = format!(
            "  deals:\n    type: kintone\n    base_url: \"{}\"\n    app: 12\n    api_token: \"{KINTONE_TOKEN}\"\n    allow_http: true\n",
            k.base_url()
        );
        let flow = r#"
  approval-to-kintone:
    source: rakuraku
    steps:
      - to: deals
        action: upsert
        key: { field: deal_id, value: "{{ body.keyId }}" }
        record:
          deal_id: "{{ body.keyId }}"
          applicant: "{{ body.applicant }}"
          status: "申請中"
          approver: "{{ lookup('approvers', body.applicant).approver1 }}"
"#;
        let cfg = config(rx, "")
            .replace("destinations:\n", &format!("destinations:\n{dest}"))
            .replace("flows:\n", &format!("flows:{flow}"));
        let app = spawn_app_env(&cfg, &[("HOOK_TOKEN", HOOK_TOKEN), ("DEST_TOKEN", DEST_TOKEN)]).await;
        // A morning of approvals, one every 25 minutes; the receiver refuses the fourth twice.
        rx.script([
            Reply::status(200),
            Reply::status(200),
            Reply::status(200),
            Reply::json(503, json!({"error": "maintenance"})),
        ]);
        for (i, who) in ["山田太郎", "高橋一郎", "山田太郎", "高橋一郎", "山田太郎", "山田太郎"].iter().enumerate()
        {
            send(&app, &format!("{}", 1001 + i), who).await;
            app.drain().await;
            app.advance(Duration::from_secs(25 * 60));
        }
        app.post("/hooks/rakuraku?token=wrong-token", "application/json", r#"{"processType":"rakuraku_approval"}"#)
            .await;
        app
    }

    #[tokio::test]
    async fn sign_in_see_a_webhook_arrive_open_its_attempt_replay_it_and_switch_language() {
        let Some(d) = Driver::start().await else { return };
        let rx = Receiver::start().await;
        let k = FakeKintone::start().await;
        let app = hub(&rx, &k).await;
        let url = |p: &str| app.url(p);

        // Sign in: the console sends a visitor to the form and back.
        d.goto(&url("/console/deliveries")).await;
        d.find("#token").await;
        assert!(d.url().await.contains("/console/login?next="));
        d.screenshot("login").await;
        d.type_into("#token", ADMIN).await;
        d.click("#sign-in").await;
        d.wait_text("h1", "Deliveries").await;

        // The dashboard.
        d.goto(&url("/console/")).await;
        d.wait_text("h1", "Dashboard").await;
        assert_eq!(d.text("#dead-count").await, "1");
        d.screenshot("dashboard-en").await;

        // A source's webhook URL, with a working copy button (the script shows it).
        d.goto(&url("/console/sources")).await;
        d.click("a[href='/console/sources/rakuraku']").await;
        let hook = d.wait_text("#hook-url", "/hooks/rakuraku").await;
        assert_eq!(hook, url("/hooks/rakuraku"));
        d.click("button[data-copy='hook-url']").await;
        d.wait_text("button[data-copy='hook-url']", "Copied").await;

        // Send a webhook to that URL, as the sender would.
        let r = app
            .http
            .post(&hook)
            .header("X-Renkei-Token", HOOK_TOKEN)
            .json(&json!({"processType": "rakuraku_submission", "keyId": "2001", "applicant": "山田太郎"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        app.drain().await;
        let sent = rx.received().len();
        assert_eq!(rx.received().last().unwrap().path, "/deal/2001");

        // See it in the history, open its delivery and the attempt's request and response.
        d.goto(&url("/console/events")).await;
        d.wait_text("#events tbody tr:first-child", "rakuraku_submission").await;
        d.screenshot("events-en").await;
        d.click("#events tbody tr:first-child a").await;
        d.wait_text("#event-deliveries", "approval").await;
        d.click("#event-deliveries a[href^='/console/deliveries/']").await;
        d.wait_text("h1", "Delivery #").await;
        d.click("details.io summary").await;
        let request = d.wait_text("details.io[open] pre", "/deal/2001").await;
        assert!(request.contains("Authorization: [REDACTED]"), "{request}");
        assert!(!request.contains(DEST_TOKEN));

        // Replay the event (the page asks first), and see the receiver get it again.
        d.click("#replay").await;
        d.accept_confirm().await;
        d.wait_text(".flash", "run through the current flows again").await;
        app.drain().await;
        assert_eq!(rx.received().len(), sent + 1);
        assert_eq!(rx.received().last().unwrap().path, "/deal/2001");

        // Switch to Japanese: the choice stays for the next pages.
        d.click("#lang-switch").await;
        d.wait_text("h1", "イベント").await;
        d.goto(&url("/console/")).await;
        d.wait_text("h1", "ダッシュボード").await;
        d.screenshot("dashboard-ja").await;

        // Screens for docs/console, in Japanese.
        d.goto(&url("/console/sources/rakuraku")).await;
        d.wait_text("h1", "rakuraku").await;
        d.screenshot("source-ja").await;
        d.goto(&url("/console/deliveries")).await;
        d.wait_text("#deliveries", "停止").await;
        d.screenshot("deliveries-ja").await;
        d.goto(&url("/console/deliveries?status=dead")).await;
        d.click("#deliveries a[href^='/console/deliveries/']").await;
        d.wait_text("h1", "配信 #").await;
        d.click("details.io summary").await;
        d.wait_text("details.io[open]", "maintenance").await;
        d.screenshot("delivery-ja").await;
        d.goto(&url("/console/flows/approval-to-kintone")).await;
        d.click("#run-preview").await;
        d.wait_text("#preview-result", "records.json").await;
        d.screenshot("flow-preview-ja").await;
        d.goto(&url("/console/destinations/deals")).await;
        d.click("#run-test").await;
        d.wait_text("#fields", "案件番号").await;
        assert!(!d.text("main").await.contains(KINTONE_TOKEN));
        d.screenshot("destination-kintone-ja").await;
        d.goto(&url("/console/tables/approvers")).await;
        d.wait_text("#table-rows", "佐藤花子").await;
        d.screenshot("table-ja").await;
        d.goto(&url("/console/audit")).await;
        d.wait_text("#audit", "event.replayed").await;
        d.screenshot("audit-ja").await;

        // Readable on a phone.
        d.resize(390, 844).await;
        d.goto(&url("/console/")).await;
        d.wait_text("h1", "ダッシュボード").await;
        let overflow =
            d.script("return document.documentElement.scrollWidth > window.innerWidth + 1;", json!([])).await;
        assert_eq!(overflow, json!(false), "the dashboard scrolls sideways on a phone");
        d.screenshot("phone-dashboard-ja").await;
    }

    /// The console as the people in the seed documents use it: a new source, a new kintone destination, and a
    /// new flow whose fields are mapped in the mapping editor (kintone's field codes and labels on one side, the
    /// latest event's fields on the other); then a webhook through it lands in kintone.
    #[tokio::test]
    async fn create_a_source_a_destination_and_a_flow_with_the_mapping_editor() {
        let Some(d) = Driver::start().await else { return };
        let rx = Receiver::start().await;
        let k = FakeKintone::start().await;
        let app = hub(&rx, &k).await;
        let url = |p: &str| app.url(p);
        d.goto(&url("/console/login")).await;
        d.type_into("#token", ADMIN).await;
        d.click("#sign-in").await;
        d.wait_text("h1", "Dashboard").await;

        // A source, with its own token.
        d.goto(&url("/console/sources")).await;
        d.click("#new-item").await;
        d.type_into("#name", "orders").await;
        d.replace_text("#yaml", "format: json\nauth: { token: orders-hook-s3cret }\n").await;
        d.click("#save").await;
        d.wait_text(".flash", "Saved").await;
        let hook = d.wait_text("#hook-url", "/hooks/orders").await;

        // A kintone destination (a broken first try shows the problem with its line, and keeps the text).
        d.goto(&url("/console/destinations")).await;
        d.click("#new-item").await;
        d.type_into("#name", "crm").await;
        d.replace_text("#yaml", "type: kintone\napp: 12\n").await;
        d.click("#save").await;
        d.wait_text("#problems", "line").await;
        let dest = format!(
            "type: kintone\nbase_url: \"{}\"\napp: 12\napi_token: \"{KINTONE_TOKEN}\"\nallow_http: true\n",
            k.base_url()
        );
        d.replace_text("#yaml", &dest).await;
        d.click("#save").await;
        d.wait_text(".flash", "Saved").await;
        assert!(!d.text("main").await.contains(KINTONE_TOKEN), "the token is not shown back");

        // One event first, so the mapping editor can offer its fields.
        let order = |id: &str| json!({"id": id, "customer": {"name": "株式会社髙﨑"}, "total": 54000});
        let post = |body: Value| app.http.post(&hook).header("X-Renkei-Token", "orders-hook-s3cret").json(&body).send();
        assert_eq!(post(order("D-1")).await.unwrap().status(), 202);

        // A flow to it, then its fields mapped in the editor.
        d.goto(&url("/console/flows")).await;
        d.click("#new-item").await;
        d.type_into("#name", "orders-to-crm").await;
        d.replace_text(
            "#yaml",
            "source: orders\nsteps:\n  - to: crm\n    action: upsert\n    key: { field: deal_id, value: \"{{ body.id }}\" }\n    record:\n      deal_id: \"{{ body.id }}\"\n",
        )
        .await;
        d.click("#save").await;
        d.wait_text(".flash", "Saved").await;
        d.click("#edit-item").await;
        d.wait_text("#target-list", "申請者").await;
        d.wait_text("#event-list", "{{ body.customer.name }}").await;
        d.wait_text("#event-list", "株式会社髙﨑").await;
        d.type_into("#f1", "applicant").await;
        d.type_into("#v1", "{{ body.customer.name }}").await;
        d.type_into("#f2", "amount").await;
        d.type_into("#v2", "{{ body.total }}").await;
        d.click("#save-mapping").await;
        d.wait_text(".flash", "Saved").await;
        d.wait_text("main", "body.customer.name").await;

        // A webhook through the new flow reaches kintone with the mapped fields.
        assert_eq!(post(order("D-2")).await.unwrap().status(), 202);
        app.drain().await;
        let records = k.records(12);
        let d2 = records.iter().find(|r| r["deal_id"]["value"] == "D-2").unwrap_or_else(|| panic!("{records:?}"));
        assert_eq!(d2["applicant"]["value"], "株式会社髙﨑");
        assert_eq!(d2["amount"]["value"], "54000");
        // In the history: the event, its delivery, the attempt's request and response; replayed; in Japanese.
        d.goto(&url("/console/events?source=orders")).await;
        d.wait_text("#events tbody tr:first-child", "orders").await;
        d.click("#events tbody tr:first-child a").await;
        d.wait_text("#event-deliveries", "orders-to-crm").await;
        d.click("#event-deliveries a[href^='/console/deliveries/']").await;
        d.wait_text("h1", "Delivery #").await;
        d.click("details.io summary").await;
        let request = d.wait_text("details.io[open] pre", "/k/v1/").await;
        assert!(request.contains("[REDACTED]") && !request.contains(KINTONE_TOKEN), "{request}");
        let before = k.request_count(12);
        d.click("#replay").await;
        d.accept_confirm().await;
        d.wait_text(".flash", "run through the current flows again").await;
        app.drain().await;
        assert!(k.request_count(12) > before, "the replay wrote to kintone again");
        d.click("#lang-switch").await;
        d.wait_text("h1", "イベント").await;
        d.goto(&url("/console/config/flows/orders-to-crm/edit")).await;
        d.wait_text("#mapping", "マッピング").await;
        d.screenshot("mapping-editor-ja").await;
        d.click("#lang-switch").await;
        d.wait_text("#mapping", "Mapping").await;

        // Every change is a revision, by the signed-in admin.
        d.goto(&url("/console/config")).await;
        let revisions = d.wait_text("#revisions", "console").await;
        assert!(revisions.lines().filter(|l| l.contains("console")).count() >= 4, "{revisions}");
        assert!(!d.text("main").await.contains("orders-hook-s3cret"));
        d.screenshot("settings-en").await;
    }
}
