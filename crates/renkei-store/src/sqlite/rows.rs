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

/// A row as a JSON array of its columns, in the order of `names` (what `json_array` over a column list gives;
/// `batch.rs` reads claimed rows that way, so a claim's rows come back as one value, not one hand-off between
/// threads per row). Blobs are hex. An array, not an object keyed by column: no key is written out by SQLite,
/// read, allocated and hashed by serde for every column of every row.
pub(super) struct JsonRow {
    names: &'static [&'static str],
    values: Vec<serde_json::Value>,
}

/// The result columns of `SELECT` of a column list (`d.id, e.source, …` gives `id`, `source`, …).
pub(super) fn column_names(columns: &'static str) -> Vec<&'static str> {
    columns.split(',').map(|c| c.trim()).map(|c| c.rsplit('.').next().unwrap_or(c)).collect()
}

impl JsonRow {
    pub(super) fn new(names: &'static [&'static str], values: Vec<serde_json::Value>) -> Result<JsonRow> {
        if values.len() != names.len() {
            let (got, want) = (values.len(), names.len());
            return Err(StoreError::Other(format!("a row of {got} columns where {want} were read").into()));
        }
        Ok(JsonRow { names, values })
    }

    pub(super) fn get(&self, col: &str) -> Result<&serde_json::Value> {
        let at = self.names.iter().position(|n| *n == col);
        at.map(|i| &self.values[i]).ok_or_else(|| StoreError::Other(format!("no column `{col}` in the row").into()))
    }

    fn wrong(col: &str, want: &str) -> StoreError {
        StoreError::Other(format!("column `{col}` is not {want}").into())
    }
}

impl Columns for JsonRow {
    fn text(&self, col: &str) -> Result<String> {
        self.opt_text(col)?.ok_or_else(|| JsonRow::wrong(col, "text"))
    }

    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        match self.get(col)? {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            _ => Err(JsonRow::wrong(col, "text")),
        }
    }

    fn int(&self, col: &str) -> Result<i64> {
        self.opt_int(col)?.ok_or_else(|| JsonRow::wrong(col, "an integer"))
    }

    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        match self.get(col)? {
            serde_json::Value::Null => Ok(None),
            v => v.as_i64().map(Some).ok_or_else(|| JsonRow::wrong(col, "an integer")),
        }
    }

    fn small(&self, col: &str) -> Result<i64> {
        self.int(col)
    }

    fn opt_small(&self, col: &str) -> Result<Option<i64>> {
        self.opt_int(col)
    }

    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.int(col)? != 0)
    }

    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        let Some(hex) = self.opt_text(col)? else { return Ok(None) };
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(|| JsonRow::wrong(col, "hex"));
        let bytes =
            hex.as_bytes().chunks(2).map(|p| Ok((digit(p[0])? * 16 + digit(*p.get(1).unwrap_or(&b'?'))?) as u8));
        bytes.collect::<Result<Vec<u8>>>().map(Some)
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
