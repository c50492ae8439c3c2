//! Subscriptions: outbound webhooks to endpoints that want a source's events (Shopらん's several webhooks).
//!
//! A subscription is sugar for a flow with one signed http step: it becomes a destination and a flow named
//! `subscription-NAME`, so it gets the same queue, retries, ordering, history and replay as any flow.

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::Deserialize;

use super::*;
use crate::Msg;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The endpoint; `https://user:pass@host/path` sends the credentials as HTTP Basic.
    pub url: String,
    pub source: Name,
    /// Event types sent; all when empty.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A further filter, e.g. `body.priority >= 4`.
    #[serde(default)]
    pub when: Option<Expr>,
    /// The payload; by default `{"type", "timestamp", "source", "event_id", "data": body}`.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: IndexMap<String, Tmpl>,
    /// Standard Webhooks secret (`whsec_...`); `secrets` for a rotation.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secrets: Vec<SigningSecret>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// An endpoint whose every try has failed for this long is disabled (`enabled: false` written into the
    /// config, the admin told in the audit log, the log, the metrics and the console); `0` never disables.
    #[serde(default = "five_days")]
    pub disable_after: Span,
}

fn five_days() -> Span {
    Span(std::time::Duration::from_secs(5 * 24 * 3600))
}

/// Standard Webhooks signing of an http step's requests.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    #[serde(default)]
    pub secret: Option<Secret>,
    /// During a rotation: the new secret and the old one, which signs `until` a time.
    #[serde(default)]
    pub secrets: Vec<SigningSecret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSecret {
    pub secret: Secret,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl Signing {
    /// The secrets that sign at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        self.secret
            .iter()
            .chain(self.secrets.iter().filter(|s| s.until.is_none_or(|u| now < u)).map(|s| &s.secret))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &Secret> {
        self.secret.iter().chain(self.secrets.iter().map(|s| &s.secret))
    }
}

/// The flow (and its destination) a subscription stands for.
pub struct Expanded {
    pub flow_name: Name,
    pub flow: Flow,
    pub destination_name: Name,
    pub destination: Destination,
    /// Passwords from the URL: secrets to mask.
    pub secrets: Vec<String>,
}

/// The name of the flow and destination of subscription `name`.
pub fn flow_name(name: &Name) -> Name {
    Name::derived(&format!("subscription-{name}"))
}

pub fn expand(name: &Name, sub: &Subscription) -> Result<Expanded, Msg> {
    if !(sub.url.starts_with("https://") || sub.url.starts_with("http://")) {
        return Err(Msg::new(
            "url must start with https:// (or http://)",
            "url は https://（または http://）で始めてください",
        ));
    }
    let (url, credentials) = split_userinfo(&sub.url);
    let mut secrets = Vec::new();
    let auth = credentials.map(|(user, pass)| {
        secrets.push(pass.clone());
        HttpAuth::Basic(BasicAuth { username: user, password: Secret::new(pass) })
    });
    let when = match (sub.event_types.is_empty(), &sub.when) {
        (true, None) => None,
        (true, Some(w)) => Some(w.clone()),
        (false, w) => {
            let types = serde_json::to_string(&sub.event_types).expect("strings serialise");
            let types = format!("event.type in {types}");
            Some(Expr(match w {
                Some(w) => format!("({types}) and ({})", w.0),
                None => types,
            }))
        }
    };
    let body = sub.body.clone().unwrap_or_else(|| {
        serde_json::json!({
            "type": "{{ event.type }}",
            "timestamp": "{{ event.received_at }}",
            "source": "{{ event.source }}",
            "event_id": "{{ event.id }}",
            "data": "{{ body }}",
        })
    });
    let fname = flow_name(name);
    let sign = if sub.secret.is_some() || !sub.secrets.is_empty() {
        Some(Signing { secret: sub.secret.clone(), secrets: sub.secrets.clone() })
    } else {
        None
    };
    let step = Step {
        name: None,
        to: fname.clone(),
        method: Some("POST".into()),
        path: None,
        url: Some(Tmpl(url)),
        query: IndexMap::new(),
        headers: sub.headers.clone(),
        body: Some(body),
        format: OutFormat::Json,
        csv: Default::default(),
        sign,
        echo_key: None,
        success_when: None,
        action: None,
        id: None,
        key: None,
        record: None,
        status: None,
        assignee: None,
        comment: None,
    };
    let flow = Flow {
        source: sub.source.clone(),
        description: Some(format!("subscription {name}")),
        enabled: sub.enabled,
        when,
        order_key: None,
        retry: sub.retry,
        skip_echo: None,
        echo_window: Span(std::time::Duration::from_secs(3600)),
        steps: vec![step],
    };
    let destination = Destination::Http(HttpDestination {
        base_url: None,
        headers: IndexMap::new(),
        query: IndexMap::new(),
        auth,
        timeout: sub.timeout,
        concurrency: 4,
        allow_http: false,
    });
    Ok(Expanded { flow_name: fname.clone(), flow, destination_name: fname, destination, secrets })
}

/// `https://user:pass@host/p` → (`https://host/p`, Some((user, pass))), percent-decoded.
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_owned(), None) };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (format!("{scheme}://{host}{tail}"), Some((percent_decode(user), percent_decode(pass))))
        }
        None => (url.to_owned(), None),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        assert_eq!(
            split_userinfo("https://u%40x:p%3Ass@chat.example.com/hooks/abc?x=1"),
            ("https://chat.example.com/hooks/abc?x=1".into(), Some(("u@x".into(), "p:ss".into())))
        );
        assert_eq!(split_userinfo("https://chat.example.com/a@b"), ("https://chat.example.com/a@b".into(), None));
    }

    #[test]
    fn rotation_signs_with_both_until_the_old_expires() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let s = Signing {
            secret: Some(Secret::new("new")),
            secrets: vec![SigningSecret { secret: Secret::new("old"), until: Some(t("2026-12-01T00:00:00Z")) }],
        };
        let names = |now| s.active(now).iter().map(|x| x.expose().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(t("2026-11-30T23:59:59Z")), ["new", "old"]);
        assert_eq!(names(t("2026-12-01T00:00:00Z")), ["new"]);
    }
}
