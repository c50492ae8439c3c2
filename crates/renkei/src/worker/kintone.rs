//! kintone steps: field types, key lookups, and several events' records in one request.

use std::sync::Arc;

use renkei_connectors::kintone::api::{self, Target};
use renkei_connectors::kintone::{convert_record, FieldCache, Fields, KintoneError};
use renkei_core::config::{Destination, KintoneAction, KintoneDestination};
use renkei_core::delivery::Outcome;
use renkei_core::flow::{render_step, KintoneOp, Rendered, Request};
use renkei_core::template::Steps;
use renkei_core::types::Name;
use renkei_store::Claimed;
use serde_json::{Map, Value};

use super::step::{event_view, retry_after, step_output, Tried};
use super::Worker;

impl Worker {
    fn kintone_destination(&self, name: &str) -> Option<KintoneDestination> {
        match self.app.loaded().config.destinations.get(name) {
            Some(Destination::Kintone(k)) => Some(k.clone()),
            _ => None,
        }
    }

    /// Sends one kintone call and judges it by kintone's error codes.
    async fn kintone_call(&self, dest: &KintoneDestination, action: KintoneAction, req: Request) -> Tried {
        let result = self.send(&req).await;
        self.app.metrics.kintone_request(req.destination.as_str(), dest.app);
        // Kept in the store, so every node's requests count against the app's daily limit.
        let counter = crate::metrics::kintone_counter(self.app.clock.now(), req.destination.as_str(), dest.app);
        if let Err(e) = self.app.store.add_count(&counter, 1).await {
            tracing::warn!(error = %e, "counting a kintone request failed");
        }
        let outcome = match &result {
            Ok(resp) => api::classify(dest, action, resp.status, &resp.body, retry_after(resp, self.app.clock.now())),
            Err(e) => e.outcome(),
        };
        let output = match (&outcome, &result) {
            (Outcome::Success, Ok(resp)) => step_output(resp),
            _ => Value::Null,
        };
        Tried::sent(req, result, outcome, output)
    }

    /// The app's fields, read once and kept; a failed read is the step's try.
    async fn fields(
        &self,
        name: &str,
        dest: &KintoneDestination,
        action: KintoneAction,
    ) -> Result<Arc<Fields>, Box<Tried>> {
        let key = FieldCache::key(dest);
        if let Some(f) = self.app.kintone_fields.get(&key) {
            return Ok(f);
        }
        let _reading = self.app.kintone_fields_read.lock().await;
        // Another delivery may have read them while this one waited.
        if let Some(f) = self.app.kintone_fields.get(&key) {
            return Ok(f);
        }
        let tried = self.kintone_call(dest, action, api::fields_request(dest, name)).await;
        if !matches!(tried.outcome, Outcome::Success) {
            return Err(Box::new(tried));
        }
        let body = tried.response.as_ref().map(|r| r.body.as_slice()).unwrap_or_default();
        match serde_json::from_slice(body).map_err(|e| e.to_string()).and_then(|v| Fields::parse(&v)) {
            Ok(fields) => Ok(self.app.kintone_fields.put(key, fields)),
            Err(e) => Err(Box::new(Tried {
                outcome: Outcome::Transient { reason: e.clone(), retry_after: None },
                error: Some(e),
                ..tried
            })),
        }
    }

    /// Converts an operation's record to the app's field types (refusing what does not fit).
    async fn converted(
        &self,
        op: &KintoneOp,
        dest: &KintoneDestination,
    ) -> Result<Option<Map<String, Value>>, Box<Tried>> {
        if !matches!(op.action, KintoneAction::Add | KintoneAction::Update | KintoneAction::Upsert) {
            return Ok(None);
        }
        let fields = self.fields(op.destination.as_str(), dest, op.action).await?;
        convert_record(&fields, &op.record)
            .map(Some)
            .map_err(|e| Box::new(Tried::refused(format!("kintone app {}: {e}", dest.app))))
    }

    /// A kintone step for one event.
    pub(super) async fn kintone_single(&self, op: KintoneOp) -> Tried {
        let name = op.destination.as_str();
        let Some(dest) = &self.kintone_destination(name) else {
            return Tried::refused(format!("`{name}` is not a kintone destination"));
        };
        let record = match self.converted(&op, dest).await {
            Ok(r) => r,
            Err(t) => return *t,
        };
        let target = match (&op.id, &op.key, op.action) {
            (Some(id), _, _) => Target::Id(id.clone()),
            // delete, status and comment take an id: find it by the key first.
            (None, Some((field, value)), KintoneAction::Delete | KintoneAction::Status | KintoneAction::Comment) => {
                let lookup = self.kintone_call(dest, op.action, api::lookup_request(dest, name, field, value)).await;
                if !matches!(lookup.outcome, Outcome::Success) {
                    return lookup;
                }
                let ids = api::lookup_ids(&lookup.output["body"]);
                match ids.as_slice() {
                    [id] => Target::Id(id.clone()),
                    [] => return Tried::refused(format!("kintone app {}: no record has {field} = {value}", dest.app)),
                    _ => {
                        return Tried::refused(format!(
                            "kintone app {}: several records have {field} = {value}",
                            dest.app
                        ))
                    }
                }
            }
            (None, Some((field, value)), _) => Target::Key(field.clone(), value.clone()),
            (None, None, _) => Target::None,
        };
        let req = api::single_request(
            dest,
            name,
            op.action,
            &target,
            record,
            op.status.as_deref(),
            op.assignee.as_deref(),
            op.comment.as_deref(),
        );
        let mut tried = self.kintone_call(dest, op.action, req).await;
        self.after_kintone_error(dest, &tried);
        // An upsert answers `{"records": [...]}`: later steps get the one record's id and revision directly.
        if op.action == KintoneAction::Upsert && matches!(tried.outcome, Outcome::Success) {
            if let Some(rec) = tried.output["body"]["records"].get(0).cloned() {
                tried.output["body"] = rec;
            }
        }
        tried
    }

    /// A validation error may mean the app's fields changed: read them again next time.
    fn after_kintone_error(&self, dest: &KintoneDestination, tried: &Tried) {
        let code = tried.response.as_ref().and_then(|r| KintoneError::parse(&r.body)).map(|e| e.code);
        if code.as_deref() == Some("CB_VA01") {
            self.app.kintone_fields.forget(&FieldCache::key(dest));
        }
    }

    /// Writes the current step of several deliveries (same kintone destination, same action) in as few
    /// `records.json` requests as kintone allows. kintone's bulk writes are all-or-nothing: when records
    /// fail validation, those deliveries fail with kintone's message and the rest are written again without
    /// them. Every delivery then goes on with its own remaining steps.
    /// `ahead`: the batch's count against its limit (see the worker's notes), given up once it is answered.
    pub(super) async fn deliver_batch(
        self: &Arc<Self>,
        name: &Name,
        action: KintoneAction,
        group: Vec<Claimed>,
        ahead: Option<super::Ahead>,
    ) {
        let Some(dest) = self.kintone_destination(name.as_str()) else {
            drop(ahead);
            for c in group {
                self.deliver(c, None, None).await;
            }
            return;
        };
        // Render and convert each delivery's record; a failure there is that delivery's alone.
        let mut ready: Vec<(Claimed, Target, Map<String, Value>)> = Vec::new();
        let mut done: Vec<(Claimed, Tried)> = Vec::new();
        let fields = match self.fields(name.as_str(), &dest, action).await {
            Ok(f) => f,
            Err(tried) => {
                drop(ahead);
                for c in group {
                    self.deliver(c, Some((*tried).clone()), None).await;
                }
                return;
            }
        };
        for c in group {
            match self.render_for_batch(&c, &fields, &dest) {
                Ok((target, record)) => ready.push((c, target, record)),
                Err(tried) => done.push((c, *tried)),
            }
        }
        while !ready.is_empty() {
            let take = ready.len().min(dest.batch.max);
            let mut chunk: Vec<_> = ready.drain(..take).collect();
            loop {
                let items: Vec<(Target, Map<String, Value>)> =
                    chunk.iter().map(|(_, t, r)| (t.clone(), r.clone())).collect();
                let req = api::bulk_request(&dest, name.as_str(), action, &items);
                let tried = self.kintone_call(&dest, action, req).await;
                self.after_kintone_error(&dest, &tried);
                if matches!(tried.outcome, Outcome::Success) {
                    let results = api::bulk_results(action, &tried.output["body"], chunk.len());
                    for ((c, _, _), result) in chunk.into_iter().zip(results) {
                        let mut mine = tried.clone();
                        mine.output["body"] = result;
                        done.push((c, mine));
                    }
                    break;
                }
                let bad = tried
                    .response
                    .as_ref()
                    .and_then(|r| KintoneError::parse(&r.body))
                    .map(|e| e.by_record())
                    .unwrap_or_default();
                if bad.is_empty() || bad.keys().any(|&i| i >= chunk.len()) {
                    // The whole request failed (limits, auth, kintone down): each delivery retries or dies by it.
                    done.extend(chunk.into_iter().map(|(c, _, _)| (c, tried.clone())));
                    break;
                }
                let mut keep = Vec::with_capacity(chunk.len());
                for (i, item) in chunk.into_iter().enumerate() {
                    match bad.get(&i) {
                        Some(msg) => {
                            let reason = format!("kintone app {}: {msg}", dest.app);
                            let mine = Tried {
                                outcome: Outcome::Permanent { reason: reason.clone() },
                                error: Some(reason),
                                ..tried.clone()
                            };
                            done.push((item.0, mine));
                        }
                        None => keep.push(item),
                    }
                }
                if keep.is_empty() {
                    break;
                }
                chunk = keep;
            }
        }
        drop(ahead);
        let mut set = tokio::task::JoinSet::new();
        for (c, tried) in done {
            let me = self.clone();
            set.spawn(async move { me.deliver(c, Some(tried), None).await });
        }
        while set.join_next().await.is_some() {}
    }

    fn render_for_batch(
        &self,
        c: &Claimed,
        fields: &Fields,
        dest: &KintoneDestination,
    ) -> Result<(Target, Map<String, Value>), Box<Tried>> {
        let d = &c.delivery;
        let index = d.step as usize;
        let flow = &self.app.loaded().config.flows[d.flow.as_str()];
        let view = event_view(&c.event);
        let outputs = d.outputs.as_array().cloned().unwrap_or_default();
        let steps = Steps::of(flow, &outputs);
        let op = match render_step(&self.app.loaded(), flow, index, &view, steps) {
            Ok(Rendered::Kintone(op)) => op,
            Ok(Rendered::Http(_)) => return Err(Box::new(Tried::refused(format!("step {index}: not a kintone step")))),
            Err(e) => return Err(Box::new(Tried::refused(format!("step {index}: {e}")))),
        };
        let record = convert_record(fields, &op.record)
            .map_err(|e| Box::new(Tried::refused(format!("kintone app {}: {e}", dest.app))))?;
        let target = match (op.id, op.key) {
            (Some(id), _) => Target::Id(id),
            (None, Some((f, v))) => Target::Key(f, v),
            (None, None) => Target::None,
        };
        Ok((target, record))
    }
}
