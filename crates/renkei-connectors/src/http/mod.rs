//! The `http` connector: any REST API or webhook.
//!
//! Redirects are not followed (a redirect to another host could carry credentials where they were not
//! meant to go); the 3xx is returned and, being neither 2xx nor transient, fails the step with its status.

use std::time::{Duration, Instant};

use renkei_core::flow::Request;

/// Largest response body read; the rest is dropped and the response marked truncated.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
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
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("renkei/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("the HTTP client's fixed settings are valid");
        HttpClient { client }
    }

    pub async fn send(&self, req: &Request) -> Result<Response, SendError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| SendError::Other(e.to_string()))?;
        let mut builder = self.client.request(method, &req.url).timeout(req.timeout);
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
    if e.is_timeout() {
        SendError::Timeout(timeout)
    } else if e.is_connect() {
        SendError::Connect(source_chain(&e))
    } else {
        SendError::Other(source_chain(&e))
    }
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
