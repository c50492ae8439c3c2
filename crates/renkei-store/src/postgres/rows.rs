//! Row ↔ record mapping, and the numbered binds of queries built from a filter.
//!
//! Column types are the SQLite ones in PostgreSQL form (see the migration): BIGINT where SQLite has INTEGER,
//! except the HTTP status columns (INTEGER, decoded as `i32`), BOOLEAN flags, BYTEA bodies, JSON as TEXT.

use renkei_core::delivery::Status;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::{db, from_ms};
use crate::*;

pub(super) const EVENT_COLUMNS: &str =
    "id, source, event_type, status, reason, http_status, received_at, request_id, row_no,
    content_type, headers, query, body, raw, raw_truncated, dedupe_key";

pub(super) const DELIVERY_COLUMNS: &str =
    "d.id, d.event_id, d.flow, d.status, d.order_key, d.step, d.tries, d.attempts, d.outputs,
    d.next_at, d.lease_owner, d.lease_until, d.last_error, d.created_at, d.updated_at, e.source, e.event_type";

pub(super) const ATTEMPT_COLUMNS: &str = "a.id, a.delivery_id, a.step, a.try_no, a.started_at, a.duration_ms, a.outcome, a.method, a.url,
    a.request_headers, a.request_body, a.response_status, a.response_headers, a.response_body, a.response_truncated, a.error";

fn json(text: Option<String>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null)
}

fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

pub(super) fn event_from_row(r: &PgRow) -> Result<EventRecord> {
    Ok(EventRecord {
        id: r.try_get("id").map_err(db)?,
        source: r.try_get("source").map_err(db)?,
        event_type: r.try_get("event_type").map_err(db)?,
        status: r.try_get("status").map_err(db)?,
        reason: r.try_get("reason").map_err(db)?,
        http_status: r.try_get::<i32, _>("http_status").map_err(db)? as u16,
        received_at: from_ms(r.try_get("received_at").map_err(db)?),
        request_id: r.try_get("request_id").map_err(db)?,
        row: r.try_get::<Option<i64>, _>("row_no").map_err(db)?.map(|v| v as u32),
        content_type: r.try_get("content_type").map_err(db)?,
        headers: json(r.try_get("headers").map_err(db)?),
        query: json(r.try_get("query").map_err(db)?),
        body: r.try_get::<Option<String>, _>("body").map_err(db)?.map(|b| json(Some(b))),
        raw: r.try_get("raw").map_err(db)?,
        raw_truncated: r.try_get("raw_truncated").map_err(db)?,
        dedupe_key: r.try_get("dedupe_key").map_err(db)?,
    })
}

pub(super) fn delivery_from_row(r: &PgRow) -> Result<DeliveryRecord> {
    let status: String = r.try_get("status").map_err(db)?;
    Ok(DeliveryRecord {
        id: r.try_get("id").map_err(db)?,
        event_id: r.try_get("event_id").map_err(db)?,
        flow: r.try_get("flow").map_err(db)?,
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("unknown delivery status {status}").into()))?,
        order_key: r.try_get("order_key").map_err(db)?,
        step: r.try_get::<i64, _>("step").map_err(db)? as u32,
        tries: r.try_get::<i64, _>("tries").map_err(db)? as u32,
        attempts: r.try_get::<i64, _>("attempts").map_err(db)? as u32,
        outputs: json(r.try_get("outputs").map_err(db)?),
        next_at: from_ms(r.try_get("next_at").map_err(db)?),
        lease_owner: r.try_get("lease_owner").map_err(db)?,
        lease_until: r.try_get::<Option<i64>, _>("lease_until").map_err(db)?.map(from_ms),
        last_error: r.try_get("last_error").map_err(db)?,
        created_at: from_ms(r.try_get("created_at").map_err(db)?),
        updated_at: from_ms(r.try_get("updated_at").map_err(db)?),
        source: r.try_get("source").map_err(db)?,
        event_type: r.try_get("event_type").map_err(db)?,
    })
}

pub(super) fn attempt_from_row(r: &PgRow) -> Result<AttemptRecord> {
    let status: Option<i32> = r.try_get("response_status").map_err(db)?;
    let response = match status {
        Some(s) => Some(ResponseView {
            status: s as u16,
            headers: pairs(r.try_get("response_headers").map_err(db)?),
            body: r.try_get::<Option<Vec<u8>>, _>("response_body").map_err(db)?.unwrap_or_default(),
            truncated: r.try_get("response_truncated").map_err(db)?,
        }),
        None => None,
    };
    Ok(AttemptRecord {
        id: r.try_get("id").map_err(db)?,
        delivery_id: r.try_get("delivery_id").map_err(db)?,
        step: r.try_get::<i64, _>("step").map_err(db)? as u32,
        try_no: r.try_get::<i64, _>("try_no").map_err(db)? as u32,
        started_at: from_ms(r.try_get("started_at").map_err(db)?),
        duration_ms: r.try_get::<i64, _>("duration_ms").map_err(db)? as u64,
        outcome: r.try_get("outcome").map_err(db)?,
        request: RequestView {
            method: r.try_get("method").map_err(db)?,
            url: r.try_get("url").map_err(db)?,
            headers: pairs(r.try_get("request_headers").map_err(db)?),
            body: r.try_get::<Option<Vec<u8>>, _>("request_body").map_err(db)?.unwrap_or_default(),
        },
        response,
        error: r.try_get("error").map_err(db)?,
    })
}

/// A value bound to a placeholder of a query built from a filter.
pub(super) enum Bind {
    Text(String),
    Int(i64),
}

/// The binds of a query built from a filter. PostgreSQL numbers its placeholders (`$1`), so each bind is
/// pushed with [`Args::arg`], which answers the placeholder to write in its place.
pub(super) struct Args {
    /// Placeholders the statement uses before these (`$1`..`$first`).
    first: usize,
    binds: Vec<Bind>,
}

impl Args {
    /// Binds that follow `first` fixed ones.
    pub(super) fn after(first: usize) -> Args {
        Args { first, binds: Vec::new() }
    }

    pub(super) fn arg(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.first + self.binds.len())
    }

    pub(super) fn text(&mut self, s: &str) -> String {
        self.arg(Bind::Text(super::text(s).into_owned()))
    }

    pub(super) fn int(&mut self, i: i64) -> String {
        self.arg(Bind::Int(i))
    }

    /// Binds the values, in order, to a query whose fixed binds are already there.
    pub(super) fn bind_all<'q>(self, mut q: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        for b in self.binds {
            q = match b {
                Bind::Text(s) => q.bind(s),
                Bind::Int(i) => q.bind(i),
            };
        }
        q
    }
}

/// `col LIKE pattern` as SQLite matches it: ASCII letters in any case, other characters exactly, `\` escapes.
/// PostgreSQL's LIKE is case-sensitive and its ILIKE folds every script by locale, so both sides are folded
/// to ASCII lower case here (the pattern by [`contains`]) and compared with LIKE.
pub(super) fn like(col: &str, pattern: &str) -> String {
    format!("translate({col}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') LIKE {pattern} ESCAPE '\\'")
}

/// `LIKE` pattern for "contains", with the wildcards in the text escaped, in ASCII lower case (see [`like`]).
pub(super) fn contains(q: &str) -> String {
    let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{}%", escaped.to_ascii_lowercase())
}
