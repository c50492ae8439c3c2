//! The `http` connector: any REST API or webhook.
//!
//! Redirects are not followed (a redirect to another host could carry credentials where they were not
//! meant to go, or hand the request on to an address the SSRF guard refuses); the 3xx is returned and, being
//! neither 2xx nor transient, fails the step with its status.
//!
//! Every request passes the SSRF guard ([`guard`]): the scheme and a literal address before sending, every
//! resolved address at connect time. A refusal is [`SendError::Refused`], a permanent failure.

pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use renkei_core::delivery::Outcome;
use renkei_core::flow::Request;

pub use guard::{Policy, Refused};

/// Largest response body read; the rest is dropped and the response marked truncated.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Other(String),
    /// The SSRF guard refused the URL or every address its host resolved to.
    #[error("{0}")]
    Refused(Refused),
}

impl SendError {
    /// How a failure to send is judged: a refusal is permanent (the same request would be refused again);
    /// anything else may pass on a later try.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendError::Refused(r) => Outcome::Permanent { reason: r.to_string() },
            other => Outcome::Transient { reason: other.to_string(), retry_after: None },
        }
    }
}

impl HttpClient {
    /// A client that sends only what `policy` allows (see [`guard`]).
    pub fn new(policy: Policy) -> HttpClient {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, where the guard cannot see the addresses.
            .no_proxy()
            .dns_resolver(Arc::new(guard::GuardedResolver { policy: policy.clone() }))
            .user_agent(concat!("renkei/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client's fixed settings are valid");
        HttpClient { client, policy }
    }

    pub async fn send(&self, req: &Request) -> Result<Response, SendError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| SendError::Other(e.to_string()))?;
        let url = reqwest::Url::parse(&req.url).map_err(|e| SendError::Other(format!("not a valid URL: {e}")))?;
        self.policy.check_url(&url, req.allow_http).map_err(SendError::Refused)?;
        let mut builder = self.client.request(method, url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let started = Instant::now();
        let mut resp = builder.send().await.map_err(|e| classify(e, req.timeout))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY.saturating_sub(body.len());
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(classify(e, req.timeout)),
            }
        }
        Ok(Response { status, headers, body, truncated, elapsed: started.elapsed() })
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> SendError {
    if let Some(r) = refusal(&e) {
        SendError::Refused(r.clone())
    } else if e.is_timeout() {
        SendError::Timeout(timeout)
    } else if e.is_connect() {
        SendError::Connect(source_chain(&e))
    } else {
        SendError::Other(source_chain(&e))
    }
}

/// The guard's refusal, when that is why connecting failed (it comes back from the resolver, wrapped).
fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// reqwest's top-level message is generic ("error sending request"); the cause says what happened.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str) -> Request {
        Request {
            destination: renkei_core::types::Name::parse("d").unwrap(),
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(5),
            allow_http: true,
        }
    }

    #[tokio::test]
    async fn a_refusal_at_connect_time_is_told_apart_from_a_network_error() {
        let client = HttpClient::new(Policy::default());
        // `localhost` goes through the resolver, which refuses what it resolves to.
        match client.send(&get("http://localhost:9/")).await {
            Err(SendError::Refused(r)) => assert!(r.0.starts_with("localhost resolves to "), "{r}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(matches!(client.send(&get("http://127.0.0.1:9/")).await, Err(SendError::Refused(_))));
        let outcome = client.send(&get("http://[::1]:9/")).await.unwrap_err().outcome();
        assert!(matches!(outcome, Outcome::Permanent { .. }), "{outcome:?}");
    }
}
