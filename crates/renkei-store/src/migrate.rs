//! Moving an installation from SQLite to PostgreSQL (`renkei migrate-store`): every row of every table, history
//! included, as stored.
//!
//! Rows are copied as they are, not through the [`crate::Store`] trait, which would give them new ids and new
//! times: events keep their ids, deliveries and attempts theirs (so a delivery's place in its ordering key,
//! and every link and URL an admin kept, stay the same), and the id sequences are set past the copied ids.
//! Deliveries keep their state: a retrying one stays due when it was, a dead one stays dead with its attempts,
//! and dedupe keys, config revisions (sealed as they are: the nodes need the same master key), named state
//! and counters, API tokens and console users (as hashes) and the audit log come along.
//!
//! Safety: the source is an open [`SqliteStore`], whose lock file proves no renkei runs on it (and whose
//! opening released the claims a crashed run left). The whole copy is one PostgreSQL transaction, with the
//! target's tables locked against writes: the target ends with all of it or, on any error, none of it. A target
//! that already holds rows is refused unless [`Options::replace`] says to delete them first.
//!
//! Never writes to the source, never prints: progress goes to the caller's callback.

use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, QueryBuilder, Row};

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError};

/// How a column is read from SQLite and written to PostgreSQL (the schemas have the same columns; see the
/// PostgreSQL migration).
#[derive(Clone, Copy)]
enum Kind {
    Text,
    /// BIGINT.
    Int,
    /// INTEGER (HTTP statuses).
    Int4,
    /// SQLite 0/1, PostgreSQL BOOLEAN.
    Bool,
    Bytes,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Has a BIGSERIAL `id`, whose sequence must continue after the copied ids.
    serial_id: bool,
}

/// Every table of the schema but `renkei_migrations`, in copy order: parents before the rows that reference
/// them. A migration that adds a table adds it here too (the migrate test fails until it does).
const TABLES: &[Table] = {
    use Kind::*;
    &[
        Table {
            name: "events",
            columns: &[
                ("id", Text),
                ("source", Text),
                ("event_type", Text),
                ("status", Text),
                ("reason", Text),
                ("http_status", Int4),
                ("received_at", Int),
                ("request_id", Text),
                ("row_no", Int),
                ("content_type", Text),
                ("headers", Text),
                ("query", Text),
                ("body", Text),
                ("raw", Bytes),
                ("raw_truncated", Bool),
                ("dedupe_key", Text),
            ],
            serial_id: false,
        },
        Table {
            name: "dedupe",
            columns: &[("source", Text), ("key", Text), ("event_id", Text), ("expires_at", Int)],
            serial_id: false,
        },
        Table {
            name: "deliveries",
            columns: &[
                ("id", Int),
                ("event_id", Text),
                ("flow", Text),
                ("status", Text),
                ("order_key", Text),
                ("step", Int),
                ("tries", Int),
                ("attempts", Int),
                ("outputs", Text),
                ("next_at", Int),
                ("lease_owner", Text),
                ("lease_until", Int),
                ("last_error", Text),
                ("created_at", Int),
                ("updated_at", Int),
                ("held", Bool),
            ],
            serial_id: true,
        },
        Table {
            name: "attempts",
            columns: &[
                ("id", Int),
                ("delivery_id", Int),
                ("step", Int),
                ("try_no", Int),
                ("started_at", Int),
                ("duration_ms", Int),
                ("outcome", Text),
                ("method", Text),
                ("url", Text),
                ("request_headers", Text),
                ("request_body", Bytes),
                ("response_status", Int4),
                ("response_headers", Text),
                ("response_body", Bytes),
                ("response_truncated", Bool),
                ("error", Text),
            ],
            serial_id: true,
        },
        Table {
            name: "config_revisions",
            columns: &[("id", Int), ("loaded_at", Int), ("text", Text), ("origin", Text)],
            serial_id: true,
        },
        Table { name: "kv_state", columns: &[("key", Text), ("value", Text), ("updated_at", Int)], serial_id: false },
        Table {
            name: "console_sessions",
            columns: &[("id_hash", Text), ("data", Text), ("created_at", Int), ("last_seen", Int)],
            serial_id: false,
        },
        Table { name: "counters", columns: &[("key", Text), ("value", Int)], serial_id: false },
        Table {
            name: "api_tokens",
            columns: &[("name", Text), ("role", Text), ("hash", Text), ("created_at", Int), ("expires_at", Int)],
            serial_id: false,
        },
        Table {
            name: "users",
            columns: &[("name", Text), ("role", Text), ("password_hash", Text), ("created_at", Int)],
            serial_id: false,
        },
        Table {
            name: "audit_log",
            columns: &[("id", Int), ("at", Int), ("actor", Text), ("action", Text), ("target", Text), ("detail", Text)],
            serial_id: true,
        },
    ]
};

/// PostgreSQL takes at most this many bound values per statement.
const MAX_BINDS: usize = 65_535;
/// How long the copy waits for a running node's transactions before giving up (the target should be idle).
const LOCK_TIMEOUT: &str = "10s";

#[derive(Clone, Debug)]
pub struct Options {
    /// Rows read and written per statement. Attempts hold bodies (up to `history.max_body` each, twice), so
    /// this bounds the memory the copy needs.
    pub batch: usize,
    /// Delete whatever the target's renkei tables hold before copying, instead of refusing.
    pub replace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { batch: 500, replace: false }
    }
}

/// After each batch: how far the copy of one table is.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub table: &'static str,
    pub copied: u64,
    pub total: u64,
}

/// Rows copied, per table, in copy order. Each count was checked against the target before committing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub tables: Vec<(&'static str, u64)>,
}

/// Copies everything `from` holds into `to` (both already opened, so both schemas are up to date), in one
/// transaction. Fails with [`StoreError::Conflict`] naming what the target holds when it is not empty and
/// `opts.replace` is false.
pub async fn sqlite_to_postgres(
    from: &SqliteStore,
    to: &PgStore,
    opts: &Options,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Report> {
    let pg = crate::postgres::db;
    let lite = crate::sqlite::db;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let mut tx = to.pool().begin().await.map_err(pg)?;
    sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).execute(&mut *tx).await.map_err(pg)?;
    // EXCLUSIVE: nodes may still read, but no write can interleave with the copy or take a sequence value
    // that a copied id needs.
    sqlx::query(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", names.join(", "))).execute(&mut *tx).await.map_err(pg)?;
    let mut held = Vec::new();
    for t in TABLES {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name)).fetch_one(&mut *tx).await.map_err(pg)?;
        if n > 0 {
            held.push(format!("{} {n}", t.name));
        }
    }
    if !held.is_empty() {
        if !opts.replace {
            return Err(StoreError::Conflict(format!("the target already holds rows ({})", held.join(", "))));
        }
        sqlx::query(&format!("TRUNCATE {} RESTART IDENTITY", names.join(", "))).execute(&mut *tx).await.map_err(pg)?;
    }

    let mut report = Report { tables: Vec::new() };
    for t in TABLES {
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name))
            .fetch_one(from.reader())
            .await
            .map_err(lite)?;
        let total = total as u64;
        let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let columns = columns.join(", ");
        let batch = opts.batch.clamp(1, MAX_BINDS / t.columns.len());
        // Paged by rowid (the id itself where there is one): stable, and each page is an index range.
        let select = format!("SELECT rowid, {columns} FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2", t.name);
        let mut after = i64::MIN;
        let mut copied = 0u64;
        progress(Progress { table: t.name, copied, total });
        loop {
            let rows =
                sqlx::query(&select).bind(after).bind(batch as i64).fetch_all(from.reader()).await.map_err(lite)?;
            let Some(last) = rows.last() else { break };
            after = last.try_get(0).map_err(lite)?;
            let values = rows.iter().map(|r| read_row(t, r)).collect::<Result<Vec<_>>>()?;
            let mut insert = QueryBuilder::<Postgres>::new(format!("INSERT INTO {} ({columns}) ", t.name));
            insert.push_values(values, |mut b, row| {
                for v in row {
                    match v {
                        Value::Text(s) => b.push_bind(s),
                        Value::Int(i) => b.push_bind(i),
                        Value::Int4(i) => b.push_bind(i),
                        Value::Bool(x) => b.push_bind(x),
                        Value::Bytes(x) => b.push_bind(x),
                    };
                }
            });
            insert.build().execute(&mut *tx).await.map_err(pg)?;
            copied += rows.len() as u64;
            progress(Progress { table: t.name, copied, total });
        }
        if t.serial_id {
            // The next id handed out follows the largest copied one (1 for an empty table).
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {0}",
                t.name
            ))
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        }
        let landed: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", t.name)).fetch_one(&mut *tx).await.map_err(pg)?;
        if landed as u64 != copied {
            return Err(StoreError::Other(
                format!("{}: {copied} rows copied but the target holds {landed}; nothing was committed", t.name).into(),
            ));
        }
        report.tables.push((t.name, copied));
    }
    tx.commit().await.map_err(pg)?;
    Ok(report)
}

enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Int4(Option<i32>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

/// One SQLite row (`rowid` first, then the table's columns) as PostgreSQL values.
fn read_row(t: &Table, r: &SqliteRow) -> Result<Vec<Value>> {
    let lite = crate::sqlite::db;
    t.columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let i = i + 1;
            Ok(match kind {
                // PostgreSQL text cannot hold U+0000; the PostgreSQL backend stores it as U+FFFD, so do the same.
                Kind::Text => Value::Text(
                    r.try_get::<Option<String>, _>(i).map_err(lite)?.map(|s| crate::postgres::text(&s).into_owned()),
                ),
                Kind::Int => Value::Int(r.try_get(i).map_err(lite)?),
                Kind::Int4 => Value::Int4(
                    r.try_get::<Option<i64>, _>(i)
                        .map_err(lite)?
                        .map(|v| {
                            i32::try_from(v).map_err(|_| {
                                StoreError::Other(format!("{}.{name}: {v} does not fit an INTEGER", t.name).into())
                            })
                        })
                        .transpose()?,
                ),
                Kind::Bool => Value::Bool(r.try_get(i).map_err(lite)?),
                Kind::Bytes => Value::Bytes(r.try_get(i).map_err(lite)?),
            })
        })
        .collect()
}
