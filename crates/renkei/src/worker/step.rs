//! One delivery, step by step: render, send, judge, record, move on.

use std::time::Duration;

use rand::Rng;
use renkei_connectors::http::{Response, SendError};
use renkei_core::config::Flow;
use renkei_core::delivery::{after_failure, classify_status, parse_retry_after, AfterFailure, Outcome};
use renkei_core::event::EventView;
use renkei_core::flow::{render_step, Rendered, Request};
use renkei_core::template::Steps;
use renkei_store::{Claimed, EventRecord, NewAttempt, RecordedResponse, StoreError, Transition};

use super::{LaterStep, Worker};

/// What one try of one step did.
#[derive(Clone, Debug)]
pub(super) struct Tried {
    /// What was sent (for a kintone batch, the batch request); `None` when the step failed before sending.
    pub request: Option<Request>,
    pub response: Option<Response>,
    /// Why it failed, when it did, for the history.
    pub error: Option<String>,
    pub outcome: Outcome,
    /// What later steps see of this step (`steps[i]`), when it succeeded.
    pub output: serde_json::Value,
    pub duration_ms: u64,
}

impl Tried {
    /// A step that failed before anything was sent (a template or a value that does not fit): permanent.
    pub fn refused(error: String) -> Tried {
        Tried {
            request: None,
            response: None,
            error: Some(error.clone()),
            outcome: Outcome::Permanent { reason: error },
            output: serde_json::Value::Null,
            duration_ms: 0,
        }
    }

    /// A request that was sent, judged by `outcome`.
    pub fn sent(
        request: Request,
        result: Result<Response, SendError>,
        outcome: Outcome,
        output: serde_json::Value,
    ) -> Tried {
        let (response, error, duration_ms) = match result {
            Ok(resp) => {
                let error = match &outcome {
                    Outcome::Success => None,
                    Outcome::Transient { reason, .. } | Outcome::Permanent { reason } => Some(reason.clone()),
                };
                let ms = resp.elapsed.as_millis() as u64;
                (Some(resp), error, ms)
            }
            Err(e) => (None, Some(e.to_string()), 0),
        };
        Tried { request: Some(request), response, error, outcome, output, duration_ms }
    }
}

/// How an http step's answer is judged.
pub(super) fn judge_http(result: &Result<Response, SendError>, now: chrono::DateTime<chrono::Utc>) -> Outcome {
    match result {
        Ok(resp) => classify_status(resp.status, retry_after(resp, now)),
        Err(e) => e.outcome(),
    }
}

pub(super) fn retry_after(resp: &Response, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    resp.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| parse_retry_after(v, now))
}

/// What later steps see of a response: `status`, `headers` (lower-case names), and `body`, parsed as JSON
/// when it is JSON, else text.
pub(super) fn step_output(resp: &Response) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> =
        resp.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone()))).collect();
    let body = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&resp.body).into_owned()));
    serde_json::json!({ "status": resp.status, "headers": headers, "body": body })
}

impl Worker {
    /// Runs a claimed delivery from its current step until it succeeds or a step fails. `first`, when given,
    /// is the current step's try already made (by a kintone batch).
    /// `ahead`: the current step's count against its limit (see the module's notes), given up once answered.
    pub(super) async fn deliver(&self, c: Claimed, mut first: Option<Tried>, mut ahead: Option<super::Ahead>) {
        let d = &c.delivery;
        let loaded = self.app.loaded();
        let Some(flow) = loaded.config.flows.get(d.flow.as_str()) else {
            let error = format!("flow `{}` is not in the current config", d.flow);
            self.finish(&c, d.step as usize, d.tries + 1, Tried::refused(error), None).await;
            return;
        };
        let view = event_view(&c.event);
        let mut outputs: Vec<serde_json::Value> = d.outputs.as_array().cloned().unwrap_or_default();
        for index in (d.step as usize)..flow.steps.len() {
            let tries = if index == d.step as usize { d.tries + 1 } else { 1 };
            let tried = match first.take() {
                Some(t) => t,
                None => {
                    let _ahead = match ahead.take() {
                        Some(a) => Some(a),
                        None if index > d.step as usize => match self.ahead_for(d.id, &d.flow, index).await {
                            LaterStep::Counted(a) => Some(a),
                            LaterStep::Uncounted => None,
                            LaterStep::GivenBack => return, // its limit is full
                        },
                        None => None,
                    };
                    self.try_step(flow, index, &view, &outputs, d.id).await
                }
            };
            let success = matches!(tried.outcome, Outcome::Success);
            if success {
                outputs.push(tried.output.clone());
                self.remember_echo(flow, index, &view, &outputs, d.id).await;
            }
            let keep_going = self.finish(&c, index, tries, tried, Some((flow, &outputs))).await;
            if !(success && keep_going) {
                return;
            }
        }
    }

    /// Remembers what a step wrote (its `echo_key`), so the loop guard recognises it coming back.
    async fn remember_echo(
        &self,
        flow: &Flow,
        index: usize,
        view: &EventView,
        outputs: &[serde_json::Value],
        delivery: i64,
    ) {
        let Some(t) = &flow.steps[index].echo_key else { return };
        let steps = Steps::of(flow, outputs);
        let key = match self.app.loaded().engine.render(t, &view.context(steps)) {
            Ok(k) if !k.is_empty() => k,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(delivery, "echo_key: {e}");
                return;
            }
        };
        let now = self.app.clock.now();
        let flow_name =
            self.app.loaded().config.flows.iter().find(|(_, f)| std::ptr::eq(*f, flow)).map(|(n, _)| n.to_string());
        let value = serde_json::json!({ "flow": flow_name, "delivery": delivery, "at": now.timestamp_millis() });
        if let Err(e) =
            self.app.store.put_state(&renkei_core::flow::echo_state_key(&key), &value.to_string(), now).await
        {
            tracing::warn!(delivery, error = %e, "remembering a write for the loop guard failed");
        }
    }

    /// Makes one try of step `index`.
    pub(super) async fn try_step(
        &self,
        flow: &Flow,
        index: usize,
        view: &EventView,
        outputs: &[serde_json::Value],
        delivery_id: i64,
    ) -> Tried {
        let steps = Steps::of(flow, outputs);
        match render_step(&self.app.loaded(), flow, index, view, steps) {
            // A template that fails on this event fails this delivery only; the event is kept for replay.
            Err(e) => Tried::refused(format!("step {index}: {e}")),
            Ok(Rendered::Http(mut req)) => {
                if let Some(sign) = &flow.steps[index].sign {
                    // One message id per delivery and step, the same on every retry, so a receiver can
                    // recognise a repeat; a replay is a new delivery and a new message.
                    let id = format!("msg_{delivery_id}_{index}");
                    if let Err(e) = sign_request(&mut req, sign, &id, self.app.clock.now()) {
                        return Tried::refused(format!("step {index}: signing: {e}"));
                    }
                }
                let mut tried = self.send_http(req).await;
                if let (Some(cond), Outcome::Success) = (&flow.steps[index].success_when, &tried.outcome) {
                    let ctx = minijinja::context! { response => minijinja::Value::from_serialize(&tried.output) };
                    let verdict = self.app.loaded().engine.eval_bool(cond, &ctx);
                    if !matches!(verdict, Ok(true)) {
                        let why = match verdict {
                            Err(e) => format!("step {index}: success_when: {e}"),
                            _ => format!("step {index}: the answer is not a success: `{}` is false", cond.0),
                        };
                        tried.outcome = Outcome::Permanent { reason: why.clone() };
                        tried.error = Some(why);
                    }
                }
                tried
            }
            Ok(Rendered::Kintone(op)) => self.kintone_single(op).await,
        }
    }

    async fn send_http(&self, req: Request) -> Tried {
        let result = self.send(&req).await;
        let outcome = judge_http(&result, self.app.clock.now());
        let output = match (&outcome, &result) {
            (Outcome::Success, Ok(resp)) => step_output(resp),
            _ => serde_json::Value::Null,
        };
        Tried::sent(req, result, outcome, output)
    }

    /// Sends a request within its destination's concurrency limit.
    pub(super) async fn send(&self, req: &Request) -> Result<Response, SendError> {
        let limit = self.limit(req.destination.as_str());
        let _permit = match &limit {
            Some((_, s, _)) => Some(s.acquire().await.expect("semaphore is never closed")),
            None => None,
        };
        // Several nodes: the limit holds across them, through slots kept in the store.
        let slot = match &limit {
            Some((key, _, cap)) if self.app.store.shared() => {
                self.shared_slot(key, *cap, req.timeout).await.map(|s| (key.as_str(), s))
            }
            _ => None,
        };
        let result = self.tools().client.send(req).await;
        if let Some((key, s)) = slot {
            if let Err(e) = self.app.store.free_slot(key, s, self.owner()).await {
                tracing::warn!(error = %e, key, "giving a shared concurrency slot back failed; it frees itself later");
            }
        }
        if let Ok(resp) = &result {
            self.app.metrics.attempt(req.destination.as_str(), resp.elapsed.as_secs_f64());
        }
        result
    }

    /// Records a try and moves the delivery on. Returns whether the delivery continues with its next step.
    pub(super) async fn finish(
        &self,
        c: &Claimed,
        index: usize,
        tries: u32,
        tried: Tried,
        flow: Option<(&Flow, &[serde_json::Value])>,
    ) -> bool {
        let d = &c.delivery;
        let now = self.app.clock.now();
        let transition = match (&tried.outcome, flow) {
            (Outcome::Success, Some((flow, outputs))) => {
                let all = serde_json::Value::Array(outputs.to_vec());
                if index + 1 == flow.steps.len() {
                    Transition::Succeeded { outputs: all }
                } else {
                    Transition::Advance { step: index as u32 + 1, outputs: all }
                }
            }
            (Outcome::Success, None) => Transition::Dead { tries, error: "no flow".into() },
            (failure, flow) => {
                let policy = flow.map(|(f, _)| f.retry).unwrap_or_default();
                let jitter: f64 = rand::rng().random();
                let redacted = self.app.loaded().redactor.text(reason(failure)).into_owned();
                match after_failure(&policy, tries, failure, now, jitter) {
                    AfterFailure::Retry { at } => Transition::Retry { at, tries, error: prefixed(index, &redacted) },
                    AfterFailure::Dead { reason } => {
                        Transition::Dead { tries, error: prefixed(index, &self.app.loaded().redactor.text(&reason)) }
                    }
                }
            }
        };
        let continues = matches!(transition, Transition::Advance { .. });
        let label = match &transition {
            Transition::Advance { .. } => None,
            Transition::Succeeded { .. } => Some("succeeded"),
            Transition::Retry { .. } => Some("retrying"),
            Transition::Dead { .. } => Some("dead"),
        };
        if tried.request.is_none() {
            tracing::warn!(delivery = d.id, flow = %d.flow, "delivery failed before sending: {}", tried.error.as_deref().unwrap_or(""));
        }
        let attempt = self.attempt_record(c, index, tries, now, &tried);
        match self.record(attempt, transition).await {
            Ok(()) => {}
            Err(StoreError::Conflict(msg)) => {
                tracing::warn!(delivery = d.id, %msg, "lease lost; another worker owns this delivery now");
                return false;
            }
            Err(e) => {
                tracing::error!(delivery = d.id, error = %e, "recording an attempt failed; the lease will expire and the delivery run again");
                return false;
            }
        }
        if let Some(label) = label {
            self.app.metrics.delivery(&d.flow, label);
        }
        continues
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

    /// The attempt as history keeps it: secrets masked, bodies clipped to `history.max_body`.
    fn attempt_record(
        &self,
        c: &Claimed,
        step: usize,
        tries: u32,
        now: chrono::DateTime<chrono::Utc>,
        t: &Tried,
    ) -> NewAttempt {
        let r = &self.app.loaded().redactor;
        let max = self.app.loaded().config.history.max_body.as_usize();
        let clip = |b: &[u8]| -> (Vec<u8>, bool) { (r.bytes(&b[..b.len().min(max)]), b.len() > max) };
        let (method, url, request_headers, request_body) = match &t.request {
            Some(req) => (
                req.method.clone(),
                r.text(&req.url).into_owned(),
                req.headers.iter().map(|(k, v)| (k.clone(), r.header(k, v))).collect(),
                clip(&req.body).0,
            ),
            None => (String::new(), String::new(), Vec::new(), Vec::new()),
        };
        NewAttempt {
            delivery_id: c.delivery.id,
            step: step as u32,
            try_no: tries,
            started_at: now - chrono::Duration::milliseconds(t.duration_ms as i64),
            duration_ms: t.duration_ms,
            outcome: match t.outcome {
                Outcome::Success => "success",
                Outcome::Transient { .. } => "transient",
                Outcome::Permanent { .. } => "permanent",
            },
            method,
            url,
            request_headers,
            request_body,
            response: t.response.as_ref().map(|resp| {
                let (body, clipped) = clip(&resp.body);
                RecordedResponse {
                    status: resp.status,
                    headers: resp.headers.iter().map(|(k, v)| (k.clone(), r.header(k, v))).collect(),
                    body,
                    truncated: clipped || resp.truncated,
                }
            }),
            error: t.error.as_ref().map(|e| r.text(e).into_owned()),
        }
    }
}

/// Adds Standard Webhooks headers: `webhook-id`, `webhook-timestamp`, and one `v1,` signature per active
/// secret (old and new both sign during a rotation).
fn sign_request(
    req: &mut Request,
    sign: &renkei_core::config::Signing,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), renkei_core::signing::SignError> {
    let ts = now.timestamp();
    let sigs = sign
        .active(now)
        .into_iter()
        .map(|s| renkei_core::signing::standard_sign(s.expose(), id, ts, &req.body))
        .collect::<Result<Vec<_>, _>>()?;
    req.headers.push(("webhook-id".into(), id.to_owned()));
    req.headers.push(("webhook-timestamp".into(), ts.to_string()));
    req.headers.push(("webhook-signature".into(), sigs.join(" ")));
    Ok(())
}

fn prefixed(index: usize, reason: &str) -> String {
    if reason.starts_with("step ") {
        reason.to_owned()
    } else {
        format!("step {index}: {reason}")
    }
}

fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Success => "success",
        Outcome::Transient { reason, .. } | Outcome::Permanent { reason } => reason,
    }
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
