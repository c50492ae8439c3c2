//! Whether a webhook really comes from its sender: shared token, HTTP Basic, Standard Webhooks and HMAC
//! signatures (with a timestamp window against replays), source IP allow-lists, and a callback to the sender
//! (Shopらん's `validateWebhookToken`). Every method a source configures must pass.
//!
//! Secrets are compared in constant time. The callback is the one request ingress makes to another system,
//! made before anything is stored, because an unconfirmed event must not be trusted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use renkei_core::config::{SourceAuth, Verify};
use renkei_core::event::EventView;
use renkei_core::flow::Request;
use renkei_core::net::Cidr;
use renkei_core::signing::{hmac_digest, signature_matches, standard_verify};
use renkei_core::types::Name;
use renkei_core::Msg;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app::App;

fn unauthorized(en: impl Into<String>, ja: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", Msg::new(en, ja))
}

/// The address a request came from: the peer, or, when the peer is a trusted proxy, the nearest address in
/// `X-Forwarded-For` that is not one.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("");
    forwarded
        .split(',')
        .rev()
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.iter().any(|c| c.contains(*ip)))
        .or(Some(peer))
}

/// Checks everything that needs only the request: address, token, Basic, signatures.
pub fn check(
    auth: &SourceAuth,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<(), ApiError> {
    if !auth.ip_allow.is_empty() {
        let allowed = ip.is_some_and(|ip| auth.ip_allow.iter().any(|c| c.contains(ip)));
        if !allowed {
            let shown = ip.map(|i| i.to_string()).unwrap_or_else(|| "unknown".into());
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "address_not_allowed",
                Msg::new(
                    format!("requests from {shown} are not allowed for this source"),
                    format!("{shown} からのリクエストはこのソースでは許可されていません"),
                ),
            ));
        }
    }
    token_or_basic(auth, headers, query)?;
    if let Some(w) = &auth.standard_webhooks {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let secrets: Vec<&str> = w.secrets.iter().map(|s| s.expose()).collect();
        let tolerance = w.tolerance.0.as_secs() as i64;
        standard_verify(
            &secrets,
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            body,
            now,
            tolerance,
        )
        .map_err(|e| unauthorized(format!("signature check failed: {e}"), format!("署名の検証に失敗しました: {e}")))?;
    }
    if let Some(hm) = &auth.hmac {
        let got = headers.get(hm.header.as_str()).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            unauthorized(
                format!("the signature header `{}` is missing", hm.header),
                format!("署名ヘッダー `{}` がありません", hm.header),
            )
        })?;
        let got = match &hm.prefix {
            Some(p) => got.strip_prefix(p.as_str()).unwrap_or(""),
            None => got,
        };
        let timestamp = match &hm.timestamp_header {
            Some(th) => {
                let ts = headers.get(th.as_str()).and_then(|v| v.to_str().ok()).unwrap_or("");
                let t: i64 = ts.trim().parse().map_err(|_| {
                    unauthorized(
                        format!("the timestamp header `{th}` is missing or not a number"),
                        format!("タイムスタンプヘッダー `{th}` がないか数値ではありません"),
                    )
                })?;
                if now.abs_diff(t) > hm.tolerance.0.as_secs() {
                    return Err(unauthorized(
                        "the request's timestamp is outside the allowed window (a replay?)",
                        "リクエストのタイムスタンプが許容範囲外です（再送攻撃の可能性）",
                    ));
                }
                Some(ts.trim().to_owned())
            }
            None => None,
        };
        let template = hm.payload.clone().unwrap_or_else(|| {
            if timestamp.is_some() {
                "{timestamp}.{body}".into()
            } else {
                "{body}".into()
            }
        });
        let message = signed_payload(&template, timestamp.as_deref().unwrap_or(""), body);
        let expected = hmac_digest(hm.algorithm, hm.secret.expose().as_bytes(), &message, hm.encoding);
        if !signature_matches(got, &expected) {
            return Err(unauthorized("the signature does not match the body", "署名が本文と一致しません"));
        }
    }
    Ok(())
}

/// `{timestamp}` and `{body}` of a payload template, as bytes (the body need not be UTF-8).
fn signed_payload(template: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + body.len());
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{body}") {
            out.extend_from_slice(body);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{timestamp}") {
            out.extend_from_slice(timestamp.as_bytes());
            rest = r;
        } else {
            let c = rest.chars().next().expect("not empty");
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn token_or_basic(auth: &SourceAuth, headers: &HeaderMap, query: &[(String, String)]) -> Result<(), ApiError> {
    if auth.token.is_none() && auth.basic.is_none() {
        return Ok(());
    }
    if let Some(expected) = &auth.token {
        let given = headers
            .get("x-renkei-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.clone()));
        match given {
            Some(g) if bool::from(g.as_bytes().ct_eq(expected.expose().as_bytes())) => {}
            Some(_) => return Err(unauthorized("the token is wrong", "トークンが正しくありません")),
            None if auth.basic.is_none() => {
                return Err(unauthorized(
                    "a token is required: send it in the X-Renkei-Token header or the token query parameter",
                    "トークンが必要です。X-Renkei-Token ヘッダーか token クエリパラメーターで送ってください",
                ))
            }
            None => {}
        }
        if auth.basic.is_none() {
            return Ok(());
        }
    }
    if let Some(basic) = &auth.basic {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some(given) = given else {
            return Err(unauthorized("HTTP Basic credentials are required", "HTTP Basic 認証の資格情報が必要です"));
        };
        let (user, pass) = given.split_once(':').unwrap_or((&given, ""));
        let ok = user.as_bytes().ct_eq(basic.username.as_bytes())
            & pass.as_bytes().ct_eq(basic.password.expose().as_bytes());
        if !bool::from(ok) {
            return Err(unauthorized(
                "the user name or password is wrong",
                "ユーザー名またはパスワードが正しくありません",
            ));
        }
    }
    Ok(())
}

/// Asks the sender whether it sent this request (`verify:`). `body` is the parsed body.
pub async fn callback(app: &Arc<App>, source: &Name, verify: &Verify, view: &EventView) -> Result<(), ApiError> {
    let loaded = &*app.loaded();
    let ctx = view.context(Arc::default());
    let failed = |why: String| {
        let why = loaded.redactor.text(&why).into_owned();
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "not_confirmed",
            Msg::new(
                format!("the sender did not confirm this request: {why}"),
                format!("送信元がこのリクエストを確認しませんでした: {why}"),
            ),
        )
    };
    let (body, content_type) = if let Some(json) = &verify.json {
        let v = loaded.engine.render_tree(json, &ctx).map_err(|e| failed(format!("verify.json: {e}")))?;
        (v.to_string().into_bytes(), "application/json")
    } else {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, t) in &verify.form {
            let v = loaded.engine.render(t, &ctx).map_err(|e| failed(format!("verify.form.{k}: {e}")))?;
            form.append_pair(k, &v);
        }
        (form.finish().into_bytes(), "application/x-www-form-urlencoded")
    };
    let req = Request {
        destination: source.clone(),
        method: verify.method.to_ascii_uppercase(),
        url: verify.url.clone(),
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
        timeout: verify.timeout.0,
        allow_http: false,
    };
    let resp = app.http().send(&req).await.map_err(|e| failed(format!("calling {}: {e}", verify.url)))?;
    let headers: serde_json::Map<String, serde_json::Value> =
        resp.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone()))).collect();
    let body = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&resp.body).into_owned()));
    let response = serde_json::json!({ "status": resp.status, "headers": headers, "body": body });
    let ctx = minijinja::context! { response => minijinja::Value::from_serialize(&response) };
    match loaded.engine.eval_bool(&verify.valid_when, &ctx) {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed(format!("`{}` is false (HTTP {})", verify.valid_when.0, resp.status))),
        Err(e) => Err(failed(format!("valid_when: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_templates() {
        assert_eq!(signed_payload("{timestamp}.{body}", "17", b"{}"), b"17.{}");
        assert_eq!(signed_payload("v0:{timestamp}:{body}", "1", b"x"), b"v0:1:x");
        assert_eq!(signed_payload("{body}", "", &[0xff, 0xfe]), [0xff, 0xfe]);
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7, 10.0.0.2".parse().unwrap());
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(client_ip(Some(peer), &h, &trusted), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(
            client_ip(Some(peer), &h, &[]),
            Some("10.0.0.1".parse().unwrap()),
            "untrusted peers are taken as they are"
        );
    }
}
