//! The delivery worker: claims due deliveries, runs their steps against destinations, records every try.
//!
//! The only part of renkei that talks to destinations. A delivery runs its steps in order; a step's
//! success is stored before the next one starts (so a retry resumes at the failed step, not at the first),
//! and a failure ends the run with a retry time or as dead, per the flow's policy. Per-destination
//! semaphores cap concurrent requests to each system.
//!
//! [`Worker::run`] is the long-running loop; [`Worker::drain`] runs until nothing is due, which is how
//! tests make progress deterministically (with a manual clock deciding what "due" means).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use minijinja::Value;
use rand::Rng;
use renkei_connectors::http::{HttpClient, Response, SendError};
use renkei_core::config::Destination;
use renkei_core::delivery::{after_failure, classify_status, parse_retry_after, AfterFailure, Outcome};
use renkei_core::event::EventView;
use renkei_core::flow::{render_step, Request};
use renkei_core::template::Steps;
use renkei_store::{Claimed, EventRecord, NewAttempt, RecordedResponse, StoreError, Transition};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::app::App;

pub struct Worker {
    app: Arc<App>,
    owner: String,
    client: HttpClient,
    per_destination: HashMap<String, Arc<Semaphore>>,
}

impl Worker {
    pub fn new(app: Arc<App>) -> Worker {
        let per_destination = app
            .loaded
            .config
            .destinations
            .iter()
            .map(|(name, d)| {
                let n = match d {
                    Destination::Http(h) => h.concurrency,
                    Destination::Kintone(_) => 1,
                };
                (name.to_string(), Arc::new(Semaphore::new(n)))
            })
            .collect();
        let owner = format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple());
        Worker { app, owner, client: HttpClient::new(), per_destination }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Claims one batch of due deliveries and runs them to the end of this try; returns how many.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, StoreError> {
        let limit = self.app.loaded.config.worker.concurrency;
        let batch = self.claim(limit).await?;
        let n = batch.len();
        let mut set = JoinSet::new();
        for c in batch {
            let me = self.clone();
            set.spawn(async move { me.deliver(c).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Runs until nothing is due at the clock's current time.
    pub async fn drain(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        let now = self.app.clock.now();
        let lease =
            chrono::Duration::from_std(self.app.loaded.config.worker.lease.0).unwrap_or(chrono::Duration::minutes(2));
        self.app.store.claim(&self.owner, now, now + lease, limit).await
    }

    /// The worker loop: keeps up to `worker.concurrency` deliveries running, sleeps when nothing is due,
    /// and on `shutdown` stops claiming, lets running deliveries finish for `worker.shutdown_grace`, then
    /// releases the rest so the next start (or another node) takes them at once.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let cfg = &self.app.loaded.config.worker;
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while running.try_join_next().is_some() {}
            let free = slots.available_permits();
            let mut claimed = 0;
            if free > 0 {
                match self.claim(free).await {
                    Ok(batch) => {
                        claimed = batch.len();
                        for c in batch {
                            let permit = slots.clone().acquire_owned().await.expect("semaphore is never closed");
                            let me = self.clone();
                            running.spawn(async move {
                                me.deliver(c).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming deliveries failed; will try again"),
                }
            }
            if free > 0 && claimed == free {
                continue; // more may be due
            }
            let idle = self.idle_wait(cfg.poll.0).await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.app.wake.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        let grace = tokio::time::sleep(cfg.shutdown_grace.0);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    running.abort_all();
                    break;
                }
            }
        }
        match self.app.store.release(&self.owner, self.app.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released unfinished deliveries"),
            Err(e) => tracing::warn!(error = %e, "releasing deliveries failed; their leases will expire"),
        }
    }

    /// How long to sleep when idle: until the next retry is due, at most `poll`.
    async fn idle_wait(&self, poll: Duration) -> Duration {
        match self.app.store.next_due().await {
            Ok(Some(at)) => (at - self.app.clock.now()).to_std().unwrap_or(Duration::ZERO).min(poll),
            _ => poll,
        }
    }

    /// Runs a claimed delivery from its current step until it succeeds or a step fails.
    async fn deliver(&self, c: Claimed) {
        let d = &c.delivery;
        let loaded = &self.app.loaded;
        let Some(flow) = loaded.config.flows.get(d.flow.as_str()) else {
            let error = format!("flow `{}` is not in the current config", d.flow);
            self.finish_without_request(&c, Transition::Dead { tries: d.tries, error }).await;
            return;
        };
        let view = event_view(&c.event);
        let mut outputs: Vec<serde_json::Value> = d.outputs.as_array().cloned().unwrap_or_default();
        for index in (d.step as usize)..flow.steps.len() {
            let steps = Arc::new(Steps {
                outputs: outputs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (flow.steps.get(i).and_then(|s| s.name.clone()), Value::from_serialize(o)))
                    .collect(),
            });
            let req = match render_step(loaded, flow, index, &view, steps) {
                Ok(r) => r,
                Err(e) => {
                    // A template that fails on this event fails this delivery only; the event is kept for replay.
                    let error = format!("step {index}: {e}");
                    self.finish_without_request(&c, Transition::Dead { tries: d.tries + 1, error }).await;
                    return;
                }
            };
            let tries = if index == d.step as usize { d.tries + 1 } else { 1 };
            let started = self.app.clock.now();
            let result = {
                let _permit = match self.per_destination.get(req.destination.as_str()) {
                    Some(s) => Some(s.acquire().await.expect("semaphore is never closed")),
                    None => None,
                };
                self.client.send(&req).await
            };
            let (outcome, response) = judge(&result, self.app.clock.now());
            if let Ok(resp) = &result {
                self.app.metrics.attempt(req.destination.as_str(), resp.elapsed.as_secs_f64());
            }
            let last = index + 1 == flow.steps.len();
            let transition = match &outcome {
                Outcome::Success => {
                    outputs.push(step_output(result.as_ref().ok()));
                    let all = serde_json::Value::Array(outputs.clone());
                    if last {
                        Transition::Succeeded { outputs: all }
                    } else {
                        Transition::Advance { step: index as u32 + 1, outputs: all }
                    }
                }
                failure => match after_failure(&flow.retry, tries, failure, self.app.clock.now(), rand::rng().random())
                {
                    AfterFailure::Retry { at } => {
                        Transition::Retry { at, tries, error: format!("step {index}: {}", reason(failure)) }
                    }
                    AfterFailure::Dead { reason } => {
                        Transition::Dead { tries, error: format!("step {index}: {reason}") }
                    }
                },
            };
            let attempt = self.attempt_record(&c, index, tries, started, &req, response, &result, &outcome);
            let done = !matches!(transition, Transition::Advance { .. });
            let label = transition_label(&transition);
            match self.record(attempt, transition).await {
                Ok(()) => {}
                Err(StoreError::Conflict(msg)) => {
                    tracing::warn!(delivery = d.id, %msg, "lease lost; another worker owns this delivery now");
                    return;
                }
                Err(e) => {
                    tracing::error!(delivery = d.id, error = %e, "recording an attempt failed; the lease will expire and the delivery run again");
                    return;
                }
            }
            if let Some(label) = label {
                self.app.metrics.delivery(&d.flow, label);
            }
            if done {
                return;
            }
        }
    }

    async fn finish_without_request(&self, c: &Claimed, transition: Transition) {
        let error = match &transition {
            Transition::Dead { error, .. } | Transition::Retry { error, .. } => Some(error.clone()),
            _ => None,
        };
        let attempt = NewAttempt {
            delivery_id: c.delivery.id,
            step: c.delivery.step,
            try_no: c.delivery.tries + 1,
            started_at: self.app.clock.now(),
            duration_ms: 0,
            outcome: "permanent",
            method: String::new(),
            url: String::new(),
            request_headers: Vec::new(),
            request_body: Vec::new(),
            response: None,
            error: error.map(|e| self.app.loaded.redactor.text(&e).into_owned()),
        };
        tracing::warn!(delivery = c.delivery.id, flow = %c.delivery.flow, "delivery failed before sending: {}", attempt.error.as_deref().unwrap_or(""));
        if let Err(e) = self.record(attempt, transition).await {
            tracing::error!(delivery = c.delivery.id, error = %e, "recording a failed delivery failed");
            return;
        }
        self.app.metrics.delivery(&c.delivery.flow, "dead");
    }

    /// Stores an attempt and its transition. A store that is briefly unavailable (locked, I/O hiccup) is tried
    /// again a few times: giving up means the delivery waits for its lease to run out and is sent again.
    async fn record(&self, attempt: NewAttempt, transition: Transition) -> Result<(), StoreError> {
        let mut wait = Duration::from_millis(50);
        for _ in 0..5 {
            match self
                .app
                .store
                .record_attempt(&self.owner, attempt.clone(), transition.clone(), self.app.clock.now())
                .await
            {
                Err(StoreError::Unavailable(e)) => {
                    tracing::warn!(delivery = attempt.delivery_id, error = %e, "storage unavailable; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        self.app.store.record_attempt(&self.owner, attempt, transition, self.app.clock.now()).await
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt_record(
        &self,
        c: &Claimed,
        step: usize,
        tries: u32,
        started: chrono::DateTime<chrono::Utc>,
        req: &Request,
        response: Option<&Response>,
        result: &Result<Response, SendError>,
        outcome: &Outcome,
    ) -> NewAttempt {
        let r = &self.app.loaded.redactor;
        let max = self.app.loaded.config.history.max_body.as_usize();
        let clip = |b: &[u8]| -> (Vec<u8>, bool) { (r.bytes(&b[..b.len().min(max)]), b.len() > max) };
        let (request_body, _) = clip(&req.body);
        NewAttempt {
            delivery_id: c.delivery.id,
            step: step as u32,
            try_no: tries,
            started_at: started,
            duration_ms: match result {
                Ok(resp) => resp.elapsed.as_millis() as u64,
                Err(_) => (self.app.clock.now() - started).num_milliseconds().max(0) as u64,
            },
            outcome: match outcome {
                Outcome::Success => "success",
                Outcome::Transient { .. } => "transient",
                Outcome::Permanent { .. } => "permanent",
            },
            method: req.method.clone(),
            url: r.text(&req.url).into_owned(),
            request_headers: req.headers.iter().map(|(k, v)| (k.clone(), r.header(k, v))).collect(),
            request_body,
            response: response.map(|resp| {
                let (body, clipped) = clip(&resp.body);
                RecordedResponse {
                    status: resp.status,
                    headers: resp.headers.iter().map(|(k, v)| (k.clone(), r.header(k, v))).collect(),
                    body,
                    truncated: clipped || resp.truncated,
                }
            }),
            error: match (outcome, result) {
                (_, Err(e)) => Some(r.text(&e.to_string()).into_owned()),
                (Outcome::Success, _) => None,
                (o, _) => Some(reason(o).to_owned()),
            },
        }
    }
}

/// Decides how a try ended.
fn judge(result: &Result<Response, SendError>, now: chrono::DateTime<chrono::Utc>) -> (Outcome, Option<&Response>) {
    match result {
        Ok(resp) => {
            let retry_after = resp
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| parse_retry_after(v, now));
            (classify_status(resp.status, retry_after), Some(resp))
        }
        Err(e) => (Outcome::Transient { reason: e.to_string(), retry_after: None }, None),
    }
}

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Success => "success",
        Outcome::Transient { reason, .. } | Outcome::Permanent { reason } => reason,
    }
}

fn transition_label(t: &Transition) -> Option<&'static str> {
    match t {
        Transition::Advance { .. } => None,
        Transition::Succeeded { .. } => Some("succeeded"),
        Transition::Retry { .. } => Some("retrying"),
        Transition::Dead { .. } => Some("dead"),
    }
}

/// What later steps see of a response: `status`, `headers` (lower-case names), and `body`, parsed as JSON
/// when it is JSON, else text.
fn step_output(resp: Option<&Response>) -> serde_json::Value {
    let Some(resp) = resp else { return serde_json::Value::Null };
    let headers: serde_json::Map<String, serde_json::Value> =
        resp.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone()))).collect();
    let body = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&resp.body).into_owned()));
    serde_json::json!({ "status": resp.status, "headers": headers, "body": body })
}

/// The template view of a stored event.
pub fn event_view(e: &EventRecord) -> EventView {
    let obj = |v: &serde_json::Value| v.as_object().cloned().unwrap_or_default();
    EventView {
        id: e.id.clone(),
        event_type: e.event_type.clone(),
        source: e.source.clone(),
        received_at: e.received_at,
        body: e.body.clone().unwrap_or(serde_json::Value::Null),
        row: e.row,
        headers: obj(&e.headers),
        query: obj(&e.query),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "renkei".to_owned())
}
