//! Sources: where events come in. Each one's webhook URL to paste into the sender's admin screen (seed 000's
//! WebhookURL), a `curl` to try it, how senders are checked (the kinds, never the secrets), and the last
//! events received, refused ones with why.

use axum::extract::Path;
use minijinja::context;
use renkei_core::config::{Source, SourceAuth};
use renkei_core::Msg;
use renkei_store::EventFilter;

use super::page::{Answer, Page, Signed};
use super::view;

/// The URL senders post to: `server.public_url` + `/hooks/NAME`, else what this browser reached.
pub fn hook_url(p: &Page, name: &str) -> (String, bool) {
    match &p.app().loaded().config.server.public_url {
        Some(base) => (format!("{}/hooks/{name}", base.trim_end_matches('/')), true),
        None => (format!("http://{}/hooks/{name}", p.host.as_deref().unwrap_or("127.0.0.1:8080")), false),
    }
}

/// How senders are checked, one line per method; kinds and non-secret settings only.
fn auth_lines(p: &Page, src: &Source) -> Vec<String> {
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let mut out: Vec<Msg> = Vec::new();
    match &src.auth {
        None => out.push(Msg::new(
            "None: anyone who knows the URL can send. Add auth: (a token at least).",
            "なし: URL を知っていれば誰でも送信できます。auth:（少なくともトークン）を設定してください。",
        )),
        Some(SourceAuth { token, basic, standard_webhooks, hmac, ip_allow, .. }) => {
            if token.is_some() {
                out.push(Msg::new(
                    "Token: the X-Renkei-Token header or ?token= (value not shown)",
                    "トークン: X-Renkei-Token ヘッダーまたは ?token=（値は表示しません）",
                ));
            }
            if let Some(b) = basic {
                let user = r.text(&b.username).into_owned();
                out.push(Msg::new(
                    format!("HTTP Basic, user `{user}` (password not shown)"),
                    format!("Basic 認証、ユーザー `{user}`（パスワードは表示しません）"),
                ));
            }
            if let Some(w) = standard_webhooks {
                let (n, tol) = (w.secrets.len(), view::span(w.tolerance.0));
                out.push(Msg::new(
                    format!("Standard Webhooks signature: {n} secret(s), timestamps within {tol}"),
                    format!("Standard Webhooks 署名: シークレット {n} 件、タイムスタンプの許容 {tol}"),
                ));
            }
            if let Some(h) = hmac {
                let alg = match h.algorithm {
                    renkei_core::signing::Algorithm::Sha1 => "sha1",
                    renkei_core::signing::Algorithm::Sha256 => "sha256",
                };
                let enc = match h.encoding {
                    renkei_core::signing::DigestEncoding::Hex => "hex",
                    renkei_core::signing::DigestEncoding::Base64 => "base64",
                };
                let ts = h.timestamp_header.as_deref().map(|t| format!(", {t}")).unwrap_or_default();
                out.push(Msg::new(
                    format!("HMAC signature in {} ({alg}, {enc}{ts}); secret not shown", h.header),
                    format!("HMAC 署名 {}（{alg}、{enc}{ts}）。シークレットは表示しません", h.header),
                ));
            }
            if !ip_allow.is_empty() {
                let list = ip_allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                out.push(Msg::new(format!("IP allow-list: {list}"), format!("許可する IP: {list}")));
            }
        }
    }
    if let Some(v) = &src.verify {
        let url = r.text(&v.url).into_owned();
        out.push(Msg::new(
            format!("Sender callback: {} {url}, valid when {}", v.method, v.valid_when.0),
            format!("送信元への確認: {} {url}、成功条件 {}", v.method, v.valid_when.0),
        ));
    }
    out.iter().map(|m| p.t(m).to_owned()).collect()
}

/// A `curl` that sends `body` the way this source checks senders; secrets as shell variables to fill in.
fn curl(url: &str, src: &Source, content_type: &str, body: &str) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut lines = vec![format!("curl -X POST {}", q(url))];
    if let Some(auth) = &src.auth {
        if auth.token.is_some() {
            lines.push("  -H \"X-Renkei-Token: $RENKEI_HOOK_TOKEN\"".to_owned());
        }
        if let Some(b) = &auth.basic {
            lines.push(format!("  -u \"{}:$HOOK_PASSWORD\"", b.username.replace(['"', '$', '`', '\\'], "")));
        }
    }
    lines.push(format!("  -H {}", q(&format!("Content-Type: {content_type}"))));
    lines.push(format!("  --data-binary {}", q(body)));
    lines.join(" \\\n")
}

pub async fn list(Signed(p): Signed) -> Answer {
    let cfg = &p.app().loaded().config;
    let items: Vec<_> = cfg
        .sources
        .iter()
        .map(|(name, src)| {
            let flows: Vec<String> =
                cfg.flows.iter().filter(|(_, f)| f.source == *name).map(|(n, _)| n.to_string()).collect();
            context! {
                name => name.as_str(),
                url => hook_url(&p, name.as_str()).0,
                format => view::format_word(src.format),
                auth => auth_lines(&p, src),
                polled => src.poll.is_some(),
                flows => flows,
            }
        })
        .collect();
    Ok(p.render("sources.html", "sources", context! { items => items }))
}

pub async fn show(Signed(p): Signed, Path(name): Path<String>) -> Answer {
    let app = p.app();
    let cfg = &app.loaded().config;
    let Some(src) = cfg.sources.get(name.as_str()) else { return Err(p.not_found("Source", "受信元")) };
    let r = &app.loaded().redactor;
    let events = app
        .store
        .list_events(&EventFilter { source: Some(name.clone()), limit: 20, ..Default::default() })
        .await
        .map_err(|e| p.store_fail(e))?;
    let (url, configured) = hook_url(&p, &name);
    // The example body: the last accepted JSON event, so the curl sends what this sender really sends.
    let sample = events
        .iter()
        .find(|e| e.status == "accepted" && e.content_type.as_deref().is_some_and(|c| c.contains("json")))
        .and_then(|e| e.body.as_ref())
        .map(|b| view::one_line(r, b, 2000))
        .filter(|b| b.len() < 2000);
    let (ct, body) = match (src.format, sample) {
        (_, Some(b)) => ("application/json", b),
        (renkei_core::body::BodyFormat::Csv, None) => ("text/csv; charset=Shift_JIS", "@data.csv".to_owned()),
        (renkei_core::body::BodyFormat::Form, None) => ("application/x-www-form-urlencoded", "a=1&b=2".to_owned()),
        (renkei_core::body::BodyFormat::Text, None) => ("text/plain; charset=utf-8", "hello".to_owned()),
        _ => ("application/json", r#"{"hello": "renkei"}"#.to_owned()),
    };
    let mut example = curl(&url, src, ct, &body);
    if body == "@data.csv" {
        example = example.replace("'@data.csv'", "@data.csv");
    }
    let signed = src.auth.as_ref().is_some_and(|a| a.standard_webhooks.is_some() || a.hmac.is_some());
    let show_raw = p.principal().is_some_and(|who| who.may(crate::access::Role::Editor));
    let events: Vec<_> = events.iter().map(|e| super::history::event_row(r, e, show_raw)).collect();
    let flows: Vec<_> = cfg
        .flows
        .iter()
        .filter(|(_, f)| f.source.as_str() == name)
        .map(|(n, f)| context! { name => n.as_str(), enabled => f.enabled })
        .collect();
    let split = src.json.split == renkei_core::body::Split::Rows || src.csv.split == renkei_core::body::Split::Rows;
    Ok(p.render(
        "source.html",
        "sources",
        context! {
            name => name,
            url => url,
            url_configured => configured,
            curl => example,
            signed => signed,
            auth => auth_lines(&p, src),
            format => view::format_word(src.format),
            split => split,
            preset => src.preset.map(|_| "kintone"),
            event_type => src.event_type.as_ref().map(|t| view::text(r, &t.0)),
            dedupe => src.dedupe.as_ref().map(|t| view::text(r, &t.0)),
            dedupe_window => view::span(src.dedupe_window.0),
            polled => src.poll.as_ref().map(|p| context! { destination => p.destination.as_str(), every => view::span(p.every.0) }),
            events => events,
            flows => flows,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_quotes_for_the_shell() {
        let src: Source = serde_json::from_value(serde_json::json!({"auth": {"token": "x"}})).unwrap();
        let c = curl("https://hub/hooks/a", &src, "application/json", r#"{"name": "O'Brien"}"#);
        assert_eq!(
            c,
            "curl -X POST 'https://hub/hooks/a' \\\n  -H \"X-Renkei-Token: $RENKEI_HOOK_TOKEN\" \\\n  \
             -H 'Content-Type: application/json' \\\n  --data-binary '{\"name\": \"O'\\''Brien\"}'"
        );
    }
}
