//! What an event means: which flows it starts, and the exact requests each step sends.
//!
//! [`plan`] runs at ingest (inside the request, before the event is stored) and decides, per flow, whether
//! a delivery is pending, skipped (`when` was false) or failed (a template error on this event). [`render_step`]
//! runs in the worker and turns one step into a [`Request`]: method, URL, headers and body bytes. Both are pure;
//! the same functions serve `renkei test`, so a dry run shows exactly what would be sent.

use std::sync::Arc;
use std::time::Duration;

use crate::body::{content_type_for, encode_csv};
use crate::config::{Destination, Flow, HttpAuth, HttpDestination, KintoneAction, Loaded, OutFormat, Step, Tmpl};
use crate::event::EventView;
use crate::template::Steps;
use crate::types::Name;

/// A flow's decision for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub flow: Name,
    pub decision: Decision,
    pub order_key: Option<String>,
    /// The flow's `skip_echo` key for this event: the caller skips the delivery when renkei wrote it.
    pub echo: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Deliver,
    /// `when` was false.
    Skip,
    /// A template failed on this event: recorded as a dead delivery with the message, so it can be fixed and
    /// replayed.
    Fail(String),
}

/// The type and dedupe key of an incoming event, from its source's templates.
pub fn classify(loaded: &Loaded, source: &Name, view: &EventView) -> Result<(String, Option<String>), String> {
    classify_in(loaded, source, &view.context(Arc::default()))
}

/// [`classify`], then [`plan`] with the type it found (set in `view`); the event is made into template values
/// once for both. `Err` as [`classify`]'s.
pub fn classify_and_plan(
    loaded: &Loaded,
    source: &Name,
    view: &mut EventView,
) -> Result<(Option<String>, Vec<Plan>), String> {
    let before = view.context(Arc::default());
    let (event_type, dedupe) = classify_in(loaded, source, &before)?;
    view.event_type = event_type;
    Ok((dedupe, plan_in(loaded, view, &view.retyped(&before))))
}

fn classify_in(loaded: &Loaded, source: &Name, ctx: &minijinja::Value) -> Result<(String, Option<String>), String> {
    let src = &loaded.config.sources[source.as_str()];
    let event_type = match &src.event_type {
        Some(t) => loaded.engine.render(t, ctx).map_err(|e| format!("event_type: {e}"))?,
        None => source.to_string(),
    };
    let dedupe = match &src.dedupe {
        Some(t) => Some(loaded.engine.render(t, ctx).map_err(|e| format!("dedupe: {e}"))?),
        None => None,
    };
    Ok((event_type, dedupe))
}

/// Decides, for every enabled flow of the event's source, what happens to the event.
pub fn plan(loaded: &Loaded, view: &EventView) -> Vec<Plan> {
    plan_in(loaded, view, &view.context(Arc::default()))
}

fn plan_in(loaded: &Loaded, view: &EventView, ctx: &minijinja::Value) -> Vec<Plan> {
    loaded
        .config
        .flows
        .iter()
        .filter(|(_, f)| f.enabled && f.source.as_str() == view.source)
        .map(|(name, flow)| plan_one(loaded, name, flow, ctx))
        .collect()
}

fn plan_one(loaded: &Loaded, name: &Name, flow: &Flow, ctx: &minijinja::Value) -> Plan {
    let mut plan = Plan { flow: name.clone(), decision: Decision::Deliver, order_key: None, echo: None };
    if let Some(when) = &flow.when {
        match loaded.engine.eval_bool(when, ctx) {
            Ok(true) => {}
            Ok(false) => plan.decision = Decision::Skip,
            Err(e) => plan.decision = Decision::Fail(format!("when: {e}")),
        }
    }
    if let Some(t) = &flow.order_key {
        match loaded.engine.render(t, ctx) {
            Ok(k) if !k.is_empty() => plan.order_key = Some(k),
            Ok(_) => {}
            Err(e) if plan.decision == Decision::Deliver => plan.decision = Decision::Fail(format!("order_key: {e}")),
            Err(_) => {}
        }
    }
    if let (Some(t), Decision::Deliver) = (&flow.skip_echo, &plan.decision) {
        match loaded.engine.render(t, ctx) {
            Ok(k) if !k.is_empty() => plan.echo = Some(k),
            Ok(_) => {}
            Err(e) => plan.decision = Decision::Fail(format!("skip_echo: {e}")),
        }
    }
    plan
}

/// The state key under which a step's `echo_key` value is remembered.
pub fn echo_state_key(value: &str) -> String {
    format!("echo:{value}")
}

/// One HTTP request, as it will be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub destination: Name,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// The destination allows plain `http://` (`allow_http: true`), besides `network.allow_http`.
    pub allow_http: bool,
}

/// A step rendered for an event: an HTTP request as it will be sent, or a kintone operation that the kintone
/// connector turns into requests (it needs the app's field types, which only it can fetch).
#[derive(Clone, Debug, PartialEq)]
pub enum Rendered {
    Http(Request),
    Kintone(KintoneOp),
}

/// One kintone record operation, with values as the templates produced them (not yet converted to the
/// fields' types).
#[derive(Clone, Debug, PartialEq)]
pub struct KintoneOp {
    pub destination: Name,
    pub action: KintoneAction,
    pub id: Option<String>,
    /// `(field code, value)` of a unique field.
    pub key: Option<(String, String)>,
    pub record: serde_json::Map<String, serde_json::Value>,
    pub status: Option<String>,
    pub assignee: Option<String>,
    pub comment: Option<String>,
}

/// Renders step `index` of `flow` for an event, with earlier steps' outputs.
pub fn render_step(
    loaded: &Loaded,
    flow: &Flow,
    index: usize,
    view: &EventView,
    steps: Arc<Steps>,
) -> Result<Rendered, String> {
    let step = &flow.steps[index];
    let ctx = view.context(steps);
    match &loaded.config.destinations[step.to.as_str()] {
        Destination::Http(dest) => render_http(loaded, step, dest, &ctx).map(Rendered::Http),
        Destination::Kintone(_) => render_kintone(loaded, step, &ctx).map(Rendered::Kintone),
    }
}

fn render_kintone(loaded: &Loaded, step: &Step, ctx: &minijinja::Value) -> Result<KintoneOp, String> {
    let engine = &loaded.engine;
    let text = |name: &str, t: &Option<Tmpl>| -> Result<Option<String>, String> {
        t.as_ref().map(|t| engine.render(t, ctx).map_err(|e| format!("{name}: {e}"))).transpose()
    };
    let record = match &step.record {
        Some(tree) => match engine.render_tree(tree, ctx).map_err(|e| format!("record: {e}"))? {
            serde_json::Value::Object(map) => map,
            _ => return Err("record: must map field codes to values".into()),
        },
        None => serde_json::Map::new(),
    };
    let key = match &step.key {
        Some(k) => Some((k.field.clone(), engine.render(&k.value, ctx).map_err(|e| format!("key.value: {e}"))?)),
        None => None,
    };
    let id = text("id", &step.id)?.map(|s| s.trim().to_owned());
    if let Some(id) = &id {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("id: `{id}` is not a record id (a number)"));
        }
    }
    if let Some((field, value)) = &key {
        if value.is_empty() {
            return Err(format!("key.value: the value of `{field}` is empty, so no record can be found by it"));
        }
    }
    Ok(KintoneOp {
        destination: step.to.clone(),
        action: step.action.ok_or("a kintone step needs an action")?,
        id,
        key,
        record,
        status: text("status", &step.status)?,
        assignee: text("assignee", &step.assignee)?.filter(|a| !a.is_empty()),
        comment: text("comment", &step.comment)?,
    })
}

fn render_http(
    loaded: &Loaded,
    step: &Step,
    dest: &HttpDestination,
    ctx: &minijinja::Value,
) -> Result<Request, String> {
    let ctx = ctx.clone();
    let engine = &loaded.engine;

    let mut url = match (&step.url, &step.path) {
        (Some(u), _) => engine.render(u, &ctx).map_err(|e| format!("url: {e}"))?,
        (None, path) => {
            let base = dest.base_url.as_deref().unwrap_or("").trim_end_matches('/');
            let path = match path {
                Some(p) => engine.render(p, &ctx).map_err(|e| format!("path: {e}"))?,
                None => String::new(),
            };
            if path.is_empty() || path.starts_with('/') {
                format!("{base}{path}")
            } else {
                format!("{base}/{path}")
            }
        }
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any_query = false;
    for (k, v) in &dest.query {
        query.append_pair(k, v);
        any_query = true;
    }
    for (k, t) in &step.query {
        let v = engine.render(t, &ctx).map_err(|e| format!("query.{k}: {e}"))?;
        query.append_pair(k, &v);
        any_query = true;
    }
    if any_query {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.finish());
    }

    let mut headers: Vec<(String, String)> = dest.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    match &dest.auth {
        Some(HttpAuth::Basic(b)) => {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.username, b.password.expose()));
            headers.push(("Authorization".into(), format!("Basic {token}")));
        }
        Some(HttpAuth::Bearer(t)) => headers.push(("Authorization".into(), format!("Bearer {}", t.expose()))),
        Some(HttpAuth::Header { name, value }) => headers.push((name.clone(), value.expose().to_owned())),
        None => {}
    }
    for (k, t) in &step.headers {
        let v = engine.render(t, &ctx).map_err(|e| format!("headers.{k}: {e}"))?;
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        headers.push((k.clone(), v));
    }

    let (body, content_type) = match &step.body {
        None => (Vec::new(), None),
        Some(spec) => render_body(loaded, step, spec, &ctx).map_err(|e| format!("body: {e}"))?,
    };
    if let Some(ct) = content_type {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            headers.push(("Content-Type".into(), ct.to_owned()));
        }
    }

    Ok(Request {
        destination: step.to.clone(),
        method: step.method().to_ascii_uppercase(),
        url,
        headers,
        body,
        timeout: dest.timeout.0,
        allow_http: dest.allow_http,
    })
}

fn render_body(
    loaded: &Loaded,
    step: &Step,
    spec: &serde_json::Value,
    ctx: &minijinja::Value,
) -> Result<(Vec<u8>, Option<&'static str>), String> {
    let engine = &loaded.engine;
    let raw_template = match spec {
        serde_json::Value::String(s) if crate::template::single_expression(s).is_none() => Some(Tmpl(s.clone())),
        _ => None,
    };
    match step.format {
        OutFormat::Json => {
            let value = match &raw_template {
                Some(t) => engine.render_json(t, ctx)?,
                None => engine.render_tree(spec, ctx)?,
            };
            let bytes = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            Ok((bytes, Some("application/json; charset=utf-8")))
        }
        OutFormat::Text => {
            let text = match &raw_template {
                Some(t) => engine.render(t, ctx)?,
                None => match engine.render_tree(spec, ctx)? {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                },
            };
            Ok((text.into_bytes(), Some("text/plain; charset=utf-8")))
        }
        OutFormat::Form => {
            let value = engine.render_tree(spec, ctx)?;
            let serde_json::Value::Object(map) = value else {
                return Err("a form body must be a mapping of names to values".into());
            };
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &map {
                match v {
                    serde_json::Value::Array(items) => {
                        for item in items {
                            form.append_pair(k, &scalar_text(item));
                        }
                    }
                    other => {
                        form.append_pair(k, &scalar_text(other));
                    }
                }
            }
            Ok((form.finish().into_bytes(), Some("application/x-www-form-urlencoded")))
        }
        OutFormat::Csv => {
            let value = engine.render_tree(spec, ctx)?;
            let bytes = encode_csv(&value, &step.csv).map_err(|e| e.to_string())?;
            Ok((bytes, Some(content_type_for(&step.csv))))
        }
    }
}

fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One conversion for both steps decides as `classify` then `plan` with the type set: the `when` and the
    /// ordering key see the new `event.type`, and the body as before.
    #[test]
    fn classify_and_plan_decides_as_classify_then_plan() {
        let text = r#"
storage: "sqlite::memory:"
sources:
  orders:
    auth: { token: "t" }
    event_type: "{{ body.kind }}"
    dedupe: "{{ body.id }}"
destinations:
  d: { type: http, base_url: "https://example.test" }
flows:
  created:
    source: orders
    when: "event.type == 'created' and body.n > 1"
    order_key: "{{ event.type }}-{{ body.id }}"
    steps: [{ to: d, method: POST, path: "/x" }]
  other:
    source: orders
    when: "event.type != 'created'"
    steps: [{ to: d, method: POST, path: "/y" }]
"#;
        let loaded = crate::config::load(text, &|_| None, &|_| Err("no files".into())).expect("loads");
        let source = Name::parse("orders").unwrap();
        for body in [serde_json::json!({"kind": "created", "id": 7, "n": 2}), serde_json::json!({"kind": "x", "id": 1})]
        {
            let view = EventView {
                id: "e".into(),
                event_type: String::new(),
                source: "orders".into(),
                received_at: chrono::Utc::now(),
                body,
                row: None,
                headers: Default::default(),
                query: Default::default(),
            };
            let (event_type, dedupe) = classify(&loaded, &source, &view).unwrap();
            let mut typed = view.clone();
            typed.event_type = event_type.clone();
            let apart = plan(&loaded, &typed);
            let mut together_view = view.clone();
            let (together_dedupe, together) = classify_and_plan(&loaded, &source, &mut together_view).unwrap();
            assert_eq!(together_view.event_type, event_type);
            assert_eq!(together_dedupe, dedupe);
            assert_eq!(together, apart);
            // Not vacuous: the first event goes to `created` with its key, the second to `other`.
            let delivered: Vec<_> =
                together.iter().filter(|p| p.decision == Decision::Deliver).map(|p| p.flow.to_string()).collect();
            assert_eq!(delivered, [if event_type == "created" { "created" } else { "other" }]);
        }
    }
}
