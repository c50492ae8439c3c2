//! An event as templates see it, and the context they are rendered in.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Value;

use crate::template::Steps;

/// What templates may read about one event.
#[derive(Clone, Debug)]
pub struct EventView {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub body: serde_json::Value,
    /// Set when the event is one row of a split file or array; the row is then also `body`.
    pub row: Option<u32>,
    /// Request headers, names lower-cased, credentials removed.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Query parameters, `token` removed.
    pub query: serde_json::Map<String, serde_json::Value>,
}

impl EventView {
    /// The template context: `event`, `body`, `row`, `headers`, `query`, `steps`.
    pub fn context(&self, steps: Arc<Steps>) -> Value {
        let event = self.event_value();
        let row = if self.row.is_some() { Value::from_serialize(&self.body) } else { Value::UNDEFINED };
        minijinja::context! {
            event => event,
            body => Value::from_serialize(&self.body),
            row => row,
            headers => Value::from_serialize(&self.headers),
            query => Value::from_serialize(&self.query),
            steps => Value::from_dyn_object(steps),
        }
    }

    /// `context` again after `event_type` changed: the new `event` over the rest of `before`, which keeps the
    /// body, headers and query already converted into template values (converting them is most of a context's
    /// cost).
    pub fn retyped(&self, before: &Value) -> Value {
        minijinja::context! { event => self.event_value(), ..before.clone() }
    }

    fn event_value(&self) -> Value {
        minijinja::context! {
            id => self.id,
            type => self.event_type,
            source => self.source,
            received_at => self.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            row => self.row,
        }
    }
}
