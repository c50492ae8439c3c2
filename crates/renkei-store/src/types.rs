//! The values that go into and come out of a [`crate::Store`].

use chrono::{DateTime, Utc};
use renkei_core::delivery::Status;
use serde::Serialize;

/// An accepted event to store.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    pub request_id: String,
    pub row: Option<u32>,
    pub content_type: Option<String>,
    pub headers: serde_json::Value,
    pub query: serde_json::Value,
    pub body: serde_json::Value,
    /// `body` as the sender wrote it, when it is exactly that JSON (a JSON request stored as one event, not
    /// reshaped): SQLite stores it instead of writing `body` out again. `None` otherwise.
    pub body_text: Option<String>,
    pub dedupe: Option<Dedupe>,
    pub deliveries: Vec<NewDelivery>,
}

#[derive(Clone, Debug)]
pub struct Dedupe {
    pub key: String,
    pub expires_at: DateTime<Utc>,
}

/// A delivery to create: `Pending` (due now), `Skipped`, or `Dead` with the reason (a template failed).
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub flow: String,
    pub status: Status,
    pub order_key: Option<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    Stored { event_id: String, deliveries: usize },
    Duplicate { event_id: String },
}

/// A refused request, kept for inspection.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub id: String,
    pub source: String,
    pub received_at: DateTime<Utc>,
    pub http_status: u16,
    pub reason: String,
    pub content_type: Option<String>,
    pub headers: serde_json::Value,
    pub query: serde_json::Value,
    pub raw: Vec<u8>,
    pub raw_truncated: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventRecord {
    pub id: String,
    pub source: String,
    pub event_type: String,
    /// `accepted` or `rejected`.
    pub status: String,
    pub reason: Option<String>,
    pub http_status: u16,
    pub received_at: DateTime<Utc>,
    pub request_id: String,
    pub row: Option<u32>,
    pub content_type: Option<String>,
    pub headers: serde_json::Value,
    pub query: serde_json::Value,
    pub body: Option<serde_json::Value>,
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
    pub raw_truncated: bool,
    pub dedupe_key: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: String,
    pub flow: String,
    pub status: Status,
    pub order_key: Option<String>,
    /// The next step to run (all steps before it succeeded).
    pub step: u32,
    /// Failed tries of that step so far.
    pub tries: u32,
    /// Tries of all steps.
    pub attempts: u32,
    /// Finished steps' responses, in step order.
    pub outputs: serde_json::Value,
    pub next_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// From the event, for listing.
    pub source: String,
    pub event_type: String,
}

/// A step of a flow. A claim can leave out the deliveries whose next step it is ([`crate::Store::claim`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowStep {
    pub flow: String,
    pub step: u32,
}

/// A claimed delivery with its event.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub delivery: DeliveryRecord,
    pub event: EventRecord,
}

/// One try, as recorded. Headers and bodies must already be redacted and clipped by the caller.
#[derive(Clone, Debug)]
pub struct NewAttempt {
    pub delivery_id: i64,
    pub step: u32,
    pub try_no: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// `success`, `transient` or `permanent`.
    pub outcome: &'static str,
    pub method: String,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response: Option<RecordedResponse>,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RecordedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// Where a delivery goes after an attempt.
#[derive(Clone, Debug)]
pub enum Transition {
    /// The step succeeded and another follows: the delivery stays claimed, at `step`.
    Advance {
        step: u32,
        outputs: serde_json::Value,
    },
    Succeeded {
        outputs: serde_json::Value,
    },
    Retry {
        at: DateTime<Utc>,
        tries: u32,
        error: String,
    },
    Dead {
        tries: u32,
        error: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct AttemptRecord {
    pub id: i64,
    pub delivery_id: i64,
    pub step: u32,
    pub try_no: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: String,
    pub request: RequestView,
    pub response: Option<ResponseView>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResponseView {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
    pub truncated: bool,
}

/// Bodies are shown as text: UTF-8 as it is, else Shift_JIS (what Japanese CSV is) when it decodes cleanly,
/// else a note of the size.
fn body_as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if let Ok(text) = std::str::from_utf8(body) {
        return s.serialize_str(text);
    }
    let (text, had_errors) = encoding_rs::SHIFT_JIS.decode_without_bom_handling(body);
    if had_errors {
        s.serialize_str(&format!("[{} bytes, not text]", body.len()))
    } else {
        s.serialize_str(&text)
    }
}

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    pub event_type: Option<String>,
    /// `accepted` or `rejected`.
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Text found in the body, type or id.
    pub q: Option<String>,
    /// Page: events older than this id.
    pub before: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub flow: Option<String>,
    pub source: Option<String>,
    pub status: Option<Status>,
    pub event_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Text found in the last error, the order key or the event's body.
    pub q: Option<String>,
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Clone, Debug, Default)]
pub struct AttemptFilter {
    pub delivery_id: Option<i64>,
    pub flow: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub before: Option<i64>,
    pub limit: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueStats {
    pub pending: u64,
    pub retrying: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// When the oldest open delivery was created.
    pub oldest_open_at: Option<DateTime<Utc>>,
}

// ----- access: API tokens, users, the audit log -----

/// An admin API token to keep. Only its hash is given to the store: the token itself is shown once, to whoever
/// created it, and never stored.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub name: String,
    /// `admin`, `editor` or `viewer`: the store keeps it, the caller decides what it means.
    pub role: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token, without its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A console user to keep.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub name: String,
    pub role: String,
    /// An argon2id PHC string (`$argon2id$v=19$...`); never the password.
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub name: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One line of the audit log: who did what, to what, when.
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    /// The token or user name that acted (`cli` for the command line, `serve` for the hub itself).
    pub actor: String,
    /// What was done, e.g. `token.created`, `delivery.retried`, `event.replayed`.
    pub action: String,
    /// What it was done to: a token or user name, a delivery or event id.
    pub target: String,
    /// The rest, as JSON (a filter, a count, new delivery ids); never a secret.
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Page: entries older than this id.
    pub before: Option<i64>,
    pub limit: u32,
}

/// A console session as kept: its id's hash, never the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id_hash: String,
    /// What the console keeps of it (JSON: who, CSRF token); the store does not look inside.
    pub data: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A config as it was loaded, in the form it was given to the store (renkei seals it first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRevision {
    pub id: i64,
    pub loaded_at: DateTime<Utc>,
    pub text: String,
    /// Where it came from: `file` (the config file at start), `console`, `api` or `apply`.
    pub origin: String,
}
