//! Row → record mapping shared by the backends: the same columns, read through [`Columns`], which each
//! backend implements for its row type (with its own error mapping and integer widths).

use renkei_core::delivery::Status;

use crate::*;

/// Typed reads of a row's columns, by name.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    /// BIGINT (PostgreSQL) / INTEGER (SQLite).
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    /// The HTTP status columns (INTEGER on PostgreSQL).
    fn small(&self, col: &str) -> Result<i64>;
    fn opt_small(&self, col: &str) -> Result<Option<i64>>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>>;
}

fn from_ms(v: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, source, event_type, status, reason, http_status, received_at, request_id, row_no,
    content_type, headers, query, body, raw, raw_truncated, dedupe_key";

pub(crate) const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, d.flow, d.status, d.order_key, d.step, d.tries, d.attempts, d.outputs,
    d.next_at, d.lease_owner, d.lease_until, d.last_error, d.created_at, d.updated_at, e.source, e.event_type";

pub(crate) const ATTEMPT_COLUMNS: &str = "a.id, a.delivery_id, a.step, a.try_no, a.started_at, a.duration_ms, a.outcome, a.method, a.url,
    a.request_headers, a.request_body, a.response_status, a.response_headers, a.response_body, a.response_truncated, a.error";

fn json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

pub(crate) fn event_from_row(r: &impl Columns) -> Result<EventRecord> {
    Ok(EventRecord {
        id: r.text("id")?,
        source: r.text("source")?,
        event_type: r.text("event_type")?,
        status: r.text("status")?,
        reason: r.opt_text("reason")?,
        http_status: r.small("http_status")? as u16,
        received_at: from_ms(r.int("received_at")?),
        request_id: r.text("request_id")?,
        row: r.opt_int("row_no")?.map(|v| v as u32),
        content_type: r.opt_text("content_type")?,
        headers: json(r.opt_text("headers")?),
        query: json(r.opt_text("query")?),
        body: r.opt_text("body")?.map(|b| json(Some(b))),
        raw: r.opt_bytes("raw")?,
        raw_truncated: r.flag("raw_truncated")?,
        dedupe_key: r.opt_text("dedupe_key")?,
    })
}

pub(crate) fn delivery_from_row(r: &impl Columns) -> Result<DeliveryRecord> {
    let status = r.text("status")?;
    Ok(DeliveryRecord {
        id: r.int("id")?,
        event_id: r.text("event_id")?,
        flow: r.text("flow")?,
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("unknown delivery status {status}").into()))?,
        order_key: r.opt_text("order_key")?,
        step: r.int("step")? as u32,
        tries: r.int("tries")? as u32,
        attempts: r.int("attempts")? as u32,
        outputs: json(r.opt_text("outputs")?),
        next_at: from_ms(r.int("next_at")?),
        lease_owner: r.opt_text("lease_owner")?,
        lease_until: r.opt_int("lease_until")?.map(from_ms),
        last_error: r.opt_text("last_error")?,
        created_at: from_ms(r.int("created_at")?),
        updated_at: from_ms(r.int("updated_at")?),
        source: r.text("source")?,
        event_type: r.text("event_type")?,
    })
}

pub(crate) fn attempt_from_row(r: &impl Columns) -> Result<AttemptRecord> {
    let status: Option<i64> = r.opt_small("response_status")?;
    let response = match status {
        Some(s) => Some(ResponseView {
            status: s as u16,
            headers: pairs(r.opt_text("response_headers")?),
            body: r.opt_bytes("response_body")?.unwrap_or_default(),
            truncated: r.flag("response_truncated")?,
        }),
        None => None,
    };
    Ok(AttemptRecord {
        id: r.int("id")?,
        delivery_id: r.int("delivery_id")?,
        step: r.int("step")? as u32,
        try_no: r.int("try_no")? as u32,
        started_at: from_ms(r.int("started_at")?),
        duration_ms: r.int("duration_ms")? as u64,
        outcome: r.text("outcome")?,
        request: RequestView {
            method: r.text("method")?,
            url: r.text("url")?,
            headers: pairs(r.opt_text("request_headers")?),
            body: r.opt_bytes("request_body")?.unwrap_or_default(),
        },
        response,
        error: r.opt_text("error")?,
    })
}

pub(crate) fn revision_from_row(r: &impl Columns) -> Result<ConfigRevision> {
    Ok(ConfigRevision {
        id: r.int("id")?,
        loaded_at: from_ms(r.int("loaded_at")?),
        text: r.text("text")?,
        origin: r.text("origin")?,
    })
}

pub(crate) fn session_from_row(r: &impl Columns) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id_hash: r.text("id_hash")?,
        data: r.text("data")?,
        created_at: from_ms(r.int("created_at")?),
        last_seen: from_ms(r.int("last_seen")?),
    })
}
