//! Row ↔ record mapping, and the numbered binds of queries built from a filter.
//!
//! Column types are the SQLite ones in PostgreSQL form (see the migration): BIGINT where SQLite has INTEGER,
//! except the HTTP status columns (INTEGER, decoded as `i32`), BOOLEAN flags, BYTEA bodies, JSON as TEXT.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::db;
use crate::*;

use crate::rows::Columns;
pub(super) use crate::rows::{
    attempt_from_row, delivery_from_row, event_from_row, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS,
};

impl Columns for PgRow {
    fn text(&self, col: &str) -> Result<String> {
        self.try_get(col).map_err(db)
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(db)
    }

    fn int(&self, col: &str) -> Result<i64> {
        self.try_get(col).map_err(db)
    }

    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).map_err(db)
    }

    fn small(&self, col: &str) -> Result<i64> {
        self.try_get::<i32, _>(col).map(i64::from).map_err(db)
    }

    fn opt_small(&self, col: &str) -> Result<Option<i64>> {
        self.try_get::<Option<i32>, _>(col).map(|v| v.map(i64::from)).map_err(db)
    }

    fn flag(&self, col: &str) -> Result<bool> {
        self.try_get(col).map_err(db)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        self.try_get(col).map_err(db)
    }
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
