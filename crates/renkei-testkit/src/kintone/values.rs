//! Written field values: checked against the field's type and options, normalized to what kintone stores, then
//! checked for required and unique fields. One record at a time; the callers decide what a failure means for the
//! rest of a bulk request.
//!
//! Error keys follow kintone: `record.<code>.value` (`records[i].<code>.value` in bulk APIs), CHECK_BOX and
//! MULTI_SELECT items `record.<code>.values[n].value`, subtable cells `record.<t>.value[r].value.<code>.value`,
//! required multi-value fields `record.<code>.values` (`.values.value` for USER_SELECT and the like). A non-numeric
//! NUMBER at the top level is keyed `record[<code>].value` (`records[i][<code>].value`): kintone's own quirk, as
//! observed by an emulator verified against kintone; a connector must read both forms.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::{json, Map, Value};

use super::apps::{user_json, App, Field, FieldType, StoredRecord};
use super::errors::{ApiError, FieldErrors, Text};

/// Who writes: the code stored as CREATOR/MODIFIER, and whether it may set those built-in fields (app admin).
#[derive(Clone, Debug)]
pub(crate) struct Actor {
    pub(crate) code: String,
    pub(crate) admin: bool,
}

/// CREATOR/MODIFIER/CREATED_TIME/UPDATED_TIME given by an admin when adding a record.
#[derive(Default)]
struct BuiltIns {
    creator: Option<String>,
    modifier: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// Checks `input` (a record in write form, `{code: {"value": V}}`) and stores it: a new record when `target` is
/// `None`, else merged into record `target`. Validation messages go to `errors` under `prefix` (`record` or
/// `records[i]`) and the record is then not stored (`Ok(None)`); a missing privilege ends the request at once.
/// Returns the record's id and new revision.
pub(crate) fn write_record(
    app: &mut App,
    input: Option<&Value>,
    target: Option<u64>,
    actor: &Actor,
    prefix: &str,
    errors: &mut FieldErrors,
) -> Result<Option<(u64, u64)>, ApiError> {
    let empty = Map::new();
    let cells = match input {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            errors.add(prefix, Text::invalid_value());
            return Ok(None);
        }
    };
    let fields = app.fields.clone();
    let mut values = target.and_then(|id| app.records.get(&id)).map(|r| r.values.clone()).unwrap_or_default();
    let mut built = BuiltIns::default();
    let mut local = FieldErrors::default();
    let mut failed = HashSet::new();
    for (code, cell) in cells {
        // Unknown field codes are ignored, as kintone documents; `$id` and `$revision` are not fields, so they are
        // ignored the same way.
        let Some(field) = fields.iter().find(|f| &f.code == code) else { continue };
        let base = format!("{prefix}.{code}");
        let Some(raw) = cell_value(cell) else {
            local.add(format!("{base}.value"), Text::invalid_value());
            failed.insert(code.clone());
            continue;
        };
        let normalized = match field.field_type {
            // Computed by kintone, or changed through status.json only. kintone's JavaScript API documents such
            // writes as "not reflected"; its REST answer is not documented, so the fake ignores them the same way
            // instead of failing the record (chosen).
            FieldType::RecordNumber
            | FieldType::Calc
            | FieldType::Status
            | FieldType::StatusAssignee
            | FieldType::Category => continue,
            // Writable when adding, by app administrators only (kintone documents the need for app management
            // rights). On update kintone keeps them to itself; the fake ignores them there (chosen).
            FieldType::Creator | FieldType::Modifier | FieldType::CreatedTime | FieldType::UpdatedTime => {
                if target.is_some() {
                    continue;
                }
                if !actor.admin {
                    return Err(ApiError::no_privilege());
                }
                built_in(field.field_type, raw, &base, &mut built, &mut local);
                continue;
            }
            FieldType::Subtable => {
                normalize_subtable(field, raw, values.get(code), &base, &mut app.next_row_id, &mut local)
            }
            _ => normalize_value(field, raw, prefix, true, &mut local),
        };
        match normalized {
            Some(v) => {
                values.insert(code.clone(), v);
            }
            None => {
                failed.insert(code.clone());
            }
        }
    }
    check_required(&fields, &values, &failed, prefix, &mut local);
    check_unique(app, &fields, &values, target, prefix, &mut local);
    if !local.is_empty() {
        errors.append(local);
        return Ok(None);
    }
    Ok(Some(store(app, values, target, actor, built)))
}

/// `{"value": V}`; a cell without `value` means null. Anything but an object is malformed.
fn cell_value(cell: &Value) -> Option<&Value> {
    match cell {
        Value::Object(c) => Some(c.get("value").unwrap_or(&Value::Null)),
        _ => None,
    }
}

/// One field's value in stored form, or `None` after adding its error. `prefix` is the record's key prefix.
fn normalize_value(
    field: &Field,
    raw: &Value,
    prefix: &str,
    top_level: bool,
    errors: &mut FieldErrors,
) -> Option<Value> {
    let code = &field.code;
    let key = format!("{prefix}.{code}.value");
    let result = match field.field_type {
        FieldType::SingleLineText | FieldType::MultiLineText | FieldType::RichText | FieldType::Link => match raw {
            Value::Null => Some(json!("")),
            Value::String(_) => Some(raw.clone()),
            // A JSON number is taken as its text (kintone accepts numbers where strings are expected).
            Value::Number(n) => Some(json!(n.to_string())),
            _ => None,
        },
        FieldType::Number => {
            return match number_text(raw) {
                Some(s) => Some(json!(s)),
                None => {
                    let key = if top_level { format!("{prefix}[{code}].value") } else { key };
                    errors.add(key, Text::not_a_number());
                    None
                }
            };
        }
        FieldType::RadioButton | FieldType::DropDown => {
            let empty = if field.field_type == FieldType::DropDown { Value::Null } else { json!("") };
            match raw {
                Value::Null => Some(empty),
                Value::String(s) if s.is_empty() => Some(empty),
                Value::String(s) if field.options.contains(s) => Some(raw.clone()),
                Value::String(s) => {
                    errors.add(key, Text::not_in_options(s));
                    return None;
                }
                _ => None,
            }
        }
        FieldType::CheckBox | FieldType::MultiSelect => match raw {
            Value::Null => Some(json!([])),
            Value::Array(items) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let item_key = format!("{prefix}.{code}.values[{i}].value");
                    match item.as_str() {
                        Some(s) if field.options.iter().any(|o| o == s) => {}
                        Some(s) => {
                            errors.add(item_key, Text::not_in_options(s));
                            ok = false;
                        }
                        None => {
                            errors.add(item_key, Text::invalid_value());
                            ok = false;
                        }
                    }
                }
                return ok.then(|| raw.clone());
            }
            _ => None,
        },
        FieldType::Date => match raw {
            Value::Null => Some(Value::Null),
            Value::String(s) if s.is_empty() => Some(Value::Null),
            Value::String(s) if is_date(s) => Some(raw.clone()),
            _ => None,
        },
        FieldType::Time => match raw {
            Value::Null => Some(Value::Null),
            Value::String(s) if s.is_empty() => Some(Value::Null),
            Value::String(s) if is_time(s) => Some(raw.clone()),
            _ => None,
        },
        FieldType::DateTime => match raw {
            Value::Null => Some(json!("")),
            Value::String(s) if s.is_empty() => Some(json!("")),
            Value::String(s) => to_utc(s).map(Value::String),
            _ => None,
        },
        FieldType::UserSelect | FieldType::OrganizationSelect | FieldType::GroupSelect => {
            // Any code is taken: the fake keeps no user/organization/group directory (kintone answers GAIA_IL26 and
            // the like for unknown ones).
            entity_codes(raw, "code").map(|codes| Value::Array(codes.iter().map(|c| user_json(c)).collect()))
        }
        FieldType::File => entity_codes(raw, "fileKey").map(|keys| {
            // Uploads (file.json) are not modelled: any fileKey is taken and read back as an empty file.
            let files = keys
                .iter()
                .map(|k| json!({ "contentType": "application/octet-stream", "fileKey": k, "name": k, "size": "0" }));
            Value::Array(files.collect())
        }),
        _ => None,
    };
    if result.is_none() {
        errors.add(key, Text::invalid_value());
    }
    result
}

/// NUMBER accepts a JSON number or a string of digits with an optional sign, decimal part and exponent
/// (half-width only, no leading `.`); `""` and null are empty. Stored as the text given, without a leading `+`.
fn number_text(raw: &Value) -> Option<String> {
    match raw {
        Value::Null => Some(String::new()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Some(String::new())
            } else if is_kintone_number(t) {
                Some(t.strip_prefix('+').unwrap_or(t).to_string())
            } else {
                None
            }
        }
        _ => None,
    }
}

fn is_kintone_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn is_date(s: &str) -> bool {
    s.len() == 10
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-'
        && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

fn is_time(s: &str) -> bool {
    s.len() == 5 && s.as_bytes()[2] == b':' && NaiveTime::parse_from_str(s, "%H:%M").is_ok()
}

/// A DATETIME as kintone stores it: UTC, `YYYY-MM-DDTHH:MM:00Z`. Writes may carry `Z` or an offset, with or without
/// seconds; kintone's DATETIME has minute precision, so seconds are dropped.
pub(crate) fn to_utc(s: &str) -> Option<String> {
    if s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let parsed = DateTime::parse_from_rfc3339(s).ok().or_else(|| {
        let (head, zone) = s.split_at_checked(16)?;
        DateTime::parse_from_rfc3339(&format!("{head}:00{zone}")).ok()
    })?;
    Some(parsed.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:00Z").to_string())
}

/// `[{"code": ...}]` (or `[{"fileKey": ...}]`): the codes, or `None` when the shape is wrong.
fn entity_codes(raw: &Value, key: &str) -> Option<Vec<String>> {
    match raw {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.get(key).and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Subtable rows: a row whose `id` names an existing row is merged into it (cells not sent keep their value), a row
/// without id, or with an id kintone does not know, is added with a new id, and existing rows left out are deleted.
fn normalize_subtable(
    field: &Field,
    raw: &Value,
    old: Option<&Value>,
    base: &str,
    next_row_id: &mut u64,
    errors: &mut FieldErrors,
) -> Option<Value> {
    let rows = match raw {
        Value::Null => return Some(json!([])),
        Value::Array(rows) => rows,
        _ => {
            errors.add(format!("{base}.value"), Text::invalid_value());
            return None;
        }
    };
    let old_rows = old.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut ok = true;
    for (i, row) in rows.iter().enumerate() {
        let row_prefix = format!("{base}.value[{i}].value");
        let sent_id = row.get("id").and_then(id_text);
        let existing = sent_id.as_ref().and_then(|id| old_rows.iter().find(|r| r["id"].as_str() == Some(id)));
        let mut cells = existing.and_then(|r| r["value"].as_object().cloned()).unwrap_or_default();
        let sent = match row.get("value") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                errors.add(row_prefix, Text::invalid_value());
                ok = false;
                continue;
            }
        };
        for (code, cell) in &sent {
            // Unknown codes are ignored as at the top level, and so are computed cells (CALC in a table).
            let Some(sub) = field.fields.iter().find(|f| &f.code == code && f.field_type.is_input()) else { continue };
            let Some(raw) = cell_value(cell) else {
                errors.add(format!("{row_prefix}.{code}.value"), Text::invalid_value());
                ok = false;
                continue;
            };
            match normalize_value(sub, raw, &row_prefix, false, errors) {
                Some(v) => {
                    cells.insert(code.clone(), v);
                }
                None => ok = false,
            }
        }
        let id = match (existing, sent_id) {
            (Some(_), Some(id)) => id,
            _ => {
                *next_row_id += 1;
                (*next_row_id - 1).to_string()
            }
        };
        out.push(json!({ "id": id, "value": cells }));
    }
    ok.then_some(Value::Array(out))
}

/// An id sent as a JSON number or a string of digits.
pub(crate) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Some(s.clone()),
        _ => None,
    }
}

fn built_in(t: FieldType, raw: &Value, base: &str, built: &mut BuiltIns, errors: &mut FieldErrors) {
    let key = format!("{base}.value");
    match t {
        FieldType::Creator | FieldType::Modifier => match raw.get("code").and_then(Value::as_str) {
            Some(code) if !code.is_empty() => {
                let slot = if t == FieldType::Creator { &mut built.creator } else { &mut built.modifier };
                *slot = Some(code.to_string());
            }
            _ => errors.add(key, Text::invalid_value()),
        },
        _ => match raw.as_str().and_then(to_utc) {
            Some(at) => {
                let slot = if t == FieldType::CreatedTime { &mut built.created_at } else { &mut built.updated_at };
                *slot = Some(at);
            }
            None => errors.add(key, Text::invalid_value()),
        },
    }
}

/// Not given, null, `""` or `[]`: what a required field may not be.
fn is_empty(v: Option<&Value>) -> bool {
    v.is_none_or(|v| v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(Vec::is_empty))
}

fn check_required(
    fields: &[Field],
    values: &Map<String, Value>,
    failed: &HashSet<String>,
    prefix: &str,
    errors: &mut FieldErrors,
) {
    for f in fields.iter().filter(|f| !failed.contains(&f.code)) {
        if f.field_type == FieldType::Subtable {
            let rows = values.get(&f.code).and_then(Value::as_array).cloned().unwrap_or_default();
            for (i, row) in rows.iter().enumerate() {
                for sub in f.fields.iter().filter(|s| s.required) {
                    if is_empty(row["value"].get(&sub.code)) {
                        errors
                            .add(format!("{prefix}.{}.value[{i}].value.{}.value", f.code, sub.code), Text::required());
                    }
                }
            }
        } else if f.required && f.field_type.is_input() && is_empty(values.get(&f.code)) {
            let suffix = match f.field_type {
                FieldType::CheckBox | FieldType::MultiSelect | FieldType::File => ".values",
                FieldType::UserSelect | FieldType::OrganizationSelect | FieldType::GroupSelect => ".values.value",
                _ => ".value",
            };
            errors.add(format!("{prefix}.{}{suffix}", f.code), Text::required());
        }
    }
}

fn check_unique(
    app: &App,
    fields: &[Field],
    values: &Map<String, Value>,
    target: Option<u64>,
    prefix: &str,
    errors: &mut FieldErrors,
) {
    for f in fields.iter().filter(|f| f.unique && f.field_type.can_be_unique()) {
        let Some(v) = values.get(&f.code).and_then(Value::as_str).filter(|s| !s.is_empty()) else { continue };
        let taken = app.records.values().any(|r| {
            Some(r.id) != target
                && r.values.get(&f.code).and_then(Value::as_str).is_some_and(|o| same_value(f.field_type, o, v))
        });
        if taken {
            errors.add(format!("{prefix}.{}.value", f.code), Text::duplicate());
        }
    }
}

/// Equality as kintone sees it for unique checks and updateKey: numerically for NUMBER, textually otherwise.
pub(crate) fn same_value(t: FieldType, a: &str, b: &str) -> bool {
    match (t, a.parse::<f64>(), b.parse::<f64>()) {
        (FieldType::Number, Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// kintone's clock for CREATED_TIME/UPDATED_TIME: UTC to the minute.
pub(crate) fn now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:00Z").to_string()
}

fn store(app: &mut App, values: Map<String, Value>, target: Option<u64>, actor: &Actor, built: BuiltIns) -> (u64, u64) {
    let now = now();
    if let Some(rec) = target.and_then(|id| app.records.get_mut(&id)) {
        rec.values = values;
        rec.revision += 1;
        rec.modifier = actor.code.clone();
        rec.updated_at = now;
        return (rec.id, rec.revision);
    }
    let id = app.next_id;
    app.next_id += 1;
    let created_at = built.created_at.unwrap_or(now);
    let rec = StoredRecord {
        id,
        revision: 1,
        values,
        creator: built.creator.unwrap_or_else(|| actor.code.clone()),
        modifier: built.modifier.unwrap_or_else(|| actor.code.clone()),
        updated_at: built.updated_at.unwrap_or_else(|| created_at.clone()),
        created_at,
        status: app.process.as_ref().map(|p| p.initial.clone()),
        assignees: Vec::new(),
    };
    app.records.insert(id, rec);
    (id, 1)
}
