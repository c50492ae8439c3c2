//! Lookup tables: view them, and download them as CSV in Shift_JIS or UTF-8 with a BOM (what Excel opens
//! without mojibake). Editing and uploading are in `editing.rs`, as every config change is.

use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use indexmap::IndexSet;
use minijinja::context;
use renkei_core::body::{encode_csv, CsvOutOptions, OutEncoding};
use renkei_core::config::Table;
use renkei_core::Msg;
use serde::Deserialize;

use super::page::{Answer, Signed};
use super::view;

/// Rows shown on the page; the CSV always has all of them.
const SHOWN_ROWS: usize = 1000;

fn columns(t: &Table) -> Vec<String> {
    let mut cols: IndexSet<String> = IndexSet::new();
    cols.insert(t.key.clone());
    for row in t.rows.values() {
        cols.extend(row.keys().cloned());
    }
    cols.into_iter().collect()
}

/// A cell as text, masked (a table is config, and config may hold a secret).
fn cell(r: &renkei_core::redact::Redactor, v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => r.text(s).into_owned(),
        Some(other) => r.text(&other.to_string()).into_owned(),
    }
}

pub async fn list(Signed(p): Signed) -> Answer {
    let cfg = &p.app().loaded().config;
    let items: Vec<_> = cfg
        .tables
        .iter()
        .map(|(name, t)| context! { name => name.as_str(), key => t.key, rows => t.rows.len(), columns => columns(t) })
        .collect();
    Ok(p.render("tables.html", "tables", context! { items => items }))
}

pub async fn show(Signed(p): Signed, Path(name): Path<String>) -> Answer {
    let loaded = p.app().loaded();
    let Some(t) = loaded.config.tables.get(name.as_str()) else {
        return Err(p.not_found("Table", "テーブル"));
    };
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let cols = columns(t);
    let rows: Vec<Vec<String>> =
        t.rows.values().take(SHOWN_ROWS).map(|row| cols.iter().map(|c| cell(r, row.get(c))).collect()).collect();
    Ok(p.render(
        "table.html",
        "tables",
        context! {
            name => name, key => t.key, columns => cols, rows => rows, total => t.rows.len(),
            clipped => t.rows.len() > SHOWN_ROWS,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct CsvParams {
    encoding: Option<String>,
}

/// The table as a CSV file: `?encoding=sjis` (Shift_JIS) or `utf8` (UTF-8 with BOM, the default).
pub async fn csv(Signed(p): Signed, Path(name): Path<String>, Query(q): Query<CsvParams>) -> Answer {
    let loaded = p.app().loaded();
    let Some(t) = loaded.config.tables.get(name.as_str()) else {
        return Err(p.not_found("Table", "テーブル"));
    };
    let loaded = p.app().loaded();
    let r = &loaded.redactor;
    let sjis = matches!(view::given(&q.encoding).as_deref(), Some("sjis" | "shift_jis" | "cp932"));
    let cols = columns(t);
    let rows: Vec<serde_json::Value> = t
        .rows
        .values()
        .map(|row| {
            let obj: serde_json::Map<String, serde_json::Value> =
                cols.iter().map(|c| (c.clone(), serde_json::Value::String(cell(r, row.get(c))))).collect();
            serde_json::Value::Object(obj)
        })
        .collect();
    let opts = CsvOutOptions {
        encoding: if sjis { OutEncoding::ShiftJis } else { OutEncoding::Utf8Bom },
        columns: Some(cols),
        ..Default::default()
    };
    match encode_csv(&serde_json::Value::Array(rows), &opts) {
        Ok(bytes) => {
            let (ct, suffix) =
                if sjis { ("text/csv; charset=Shift_JIS", "sjis") } else { ("text/csv; charset=utf-8", "utf8") };
            let disposition = format!("attachment; filename=\"{name}-{suffix}.csv\"");
            Ok(([(header::CONTENT_TYPE, ct.to_owned()), (header::CONTENT_DISPOSITION, disposition)], bytes)
                .into_response())
        }
        Err(e) => Err(p.fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            Msg::new(
                format!("This table cannot be written as CSV: {}", e.0.en),
                format!("このテーブルは CSV にできません: {}", e.0.ja),
            ),
        )),
    }
}
