//! Row ↔ record mapping, and the filter binds of dynamic queries.

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Row, Sqlite};

use super::db;
use crate::*;

use crate::rows::Columns;
pub(super) use crate::rows::{
    attempt_from_row, delivery_from_row, event_from_row, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS,
};

impl Columns for SqliteRow {
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
        // SQLite integers are all 64-bit.
        self.int(col)
    }

    fn opt_small(&self, col: &str) -> Result<Option<i64>> {
        self.opt_int(col)
    }

    fn flag(&self, col: &str) -> Result<bool> {
        self.try_get(col).map_err(db)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        self.try_get(col).map_err(db)
    }
}

/// A value bound to a `?` of a query built from a filter.
pub(super) enum Bind {
    Text(String),
    Int(i64),
}

impl Bind {
    pub(super) fn bind_to<'q>(
        self,
        q: Query<'q, Sqlite, SqliteArguments<'q>>,
    ) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        match self {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
        }
    }
}

/// `LIKE` pattern for "contains", with the wildcards in the text escaped.
pub(super) fn contains(q: &str) -> String {
    let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}
