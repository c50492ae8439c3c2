//! The record APIs: record.json, records.json, record/status.json and records/status.json, on an app the caller was
//! already allowed into. A failing call leaves the app as it was: the dispatcher restores it, which is what makes the
//! bulk APIs all-or-nothing as in kintone.

use serde_json::{json, Value};

use super::apps::{App, FieldType};
use super::errors::{ApiError, FieldErrors, Text};
use super::query;
use super::values::{id_text, now, same_value, write_record, Actor};

/// Records per bulk write, ids per delete, records per status change.
const MAX_BULK: usize = 100;

/// (record id, new revision, `INSERT`/`UPDATE`).
type Written = (u64, u64, &'static str);

pub(crate) fn get_record(app: &App, p: &Value) -> Result<Value, ApiError> {
    let id = id_param(p, "id", "")?;
    let rec = app.records.get(&id).ok_or_else(|| ApiError::record_not_found(id))?;
    Ok(json!({ "record": app.record_json(rec, None) }))
}

pub(crate) fn add_record(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    let mut errors = FieldErrors::default();
    match write_record(app, p.get("record"), None, actor, "record", &mut errors)? {
        Some((id, revision)) => Ok(json!({ "id": id.to_string(), "revision": revision.to_string() })),
        None => Err(ApiError::invalid(errors)),
    }
}

pub(crate) fn update_record(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    let mut errors = FieldErrors::default();
    match update_one(app, actor, p, false, "record", "", &mut errors)? {
        Some((_, revision, _)) => Ok(json!({ "revision": revision.to_string() })),
        None => Err(ApiError::invalid(errors)),
    }
}

pub(crate) fn get_records(app: &App, p: &Value) -> Result<Value, ApiError> {
    let q = query::parse(p.get("query").and_then(Value::as_str).unwrap_or(""))?;
    let only: Option<Vec<String>> = match p.get("fields") {
        Some(Value::Array(codes)) if !codes.is_empty() => {
            Some(codes.iter().filter_map(Value::as_str).map(str::to_string).collect())
        }
        _ => None,
    };
    let rows = query::run(app, &q)?;
    let total = rows.len();
    let records: Vec<Value> = rows
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|r| match (r, &only) {
            (Value::Object(m), Some(only)) => Value::Object(m.into_iter().filter(|(k, _)| only.contains(k)).collect()),
            (r, _) => r,
        })
        .collect();
    let total_count = if flag(p.get("totalCount")) { json!(total.to_string()) } else { Value::Null };
    Ok(json!({ "records": records, "totalCount": total_count }))
}

pub(crate) fn add_records(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    let limit =
        Text::new("一度に100件までのレコードを追加できます。", "A maximum of 100 records can be added at one time.");
    let items = bulk_items(p, "records", limit)?;
    let mut errors = FieldErrors::default();
    let (mut ids, mut revisions) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        if let Some((id, revision)) = write_record(app, Some(item), None, actor, &format!("records[{i}]"), &mut errors)?
        {
            ids.push(id.to_string());
            revisions.push(revision.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(json!({ "ids": ids, "revisions": revisions }))
}

pub(crate) fn update_records(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    let limit =
        Text::new("一度に100件までのレコードを更新できます。", "A maximum of 100 records can be updated at one time.");
    let items = bulk_items(p, "records", limit)?;
    let upsert = flag(p.get("upsert"));
    let mut errors = FieldErrors::default();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let written =
            update_one(app, actor, item, upsert, &format!("records[{i}]"), &format!("records[{i}]."), &mut errors)?;
        if let Some((id, revision, operation)) = written {
            let mut r = json!({ "id": id.to_string(), "revision": revision.to_string() });
            if upsert {
                r["operation"] = json!(operation);
            }
            out.push(r);
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(json!({ "records": out }))
}

pub(crate) fn delete_records(app: &mut App, p: &Value) -> Result<Value, ApiError> {
    let items = bulk_items(p, "ids", Text::at_most(MAX_BULK))?;
    let revisions = p.get("revisions").and_then(Value::as_array);
    let mut ids = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let id = id_text(v).and_then(|s| s.parse::<u64>().ok());
        ids.push(id.ok_or_else(|| ApiError::invalid_at(format!("ids[{i}]"), Text::invalid_value()))?);
    }
    for (i, id) in ids.iter().enumerate() {
        let rec = app.records.get(id).ok_or_else(|| ApiError::record_not_found(id))?;
        let expected = revision_param(revisions.and_then(|r| r.get(i)), &format!("revisions[{i}]"))?;
        if expected.is_some_and(|r| r != rec.revision) {
            return Err(ApiError::revision_conflict());
        }
    }
    for id in ids {
        app.records.remove(&id);
    }
    Ok(json!({}))
}

pub(crate) fn update_status(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    let (_, revision) = change_status(app, actor, p, "")?;
    Ok(json!({ "revision": revision.to_string() }))
}

pub(crate) fn update_statuses(app: &mut App, actor: &Actor, p: &Value) -> Result<Value, ApiError> {
    if app.process.is_none() {
        return Err(ApiError::process_disabled());
    }
    let items = bulk_items(p, "records", Text::at_most(MAX_BULK))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (id, revision) = change_status(app, actor, item, &format!("records[{i}]."))?;
        out.push(json!({ "id": id.to_string(), "revision": revision.to_string() }));
    }
    Ok(json!({ "records": out }))
}

/// Runs a process-management action. The action must start from the record's current status (a wrong or stale
/// action is GAIA_IL03). Running the action and changing the status are two entries of the record's history, so the
/// revision goes up by 2, as kintone documents.
fn change_status(app: &mut App, actor: &Actor, p: &Value, key_prefix: &str) -> Result<(u64, u64), ApiError> {
    let process = app.process.clone().ok_or_else(ApiError::process_disabled)?;
    let id = id_param(p, "id", key_prefix)?;
    let action = match p.get("action").and_then(Value::as_str) {
        Some(a) if !a.is_empty() => a,
        _ => return Err(ApiError::invalid_at(format!("{key_prefix}action"), Text::required())),
    };
    let expected = revision_param(p.get("revision"), &format!("{key_prefix}revision"))?;
    let rec = app.records.get_mut(&id).ok_or_else(|| ApiError::record_not_found(id))?;
    if expected.is_some_and(|r| r != rec.revision) {
        return Err(ApiError::revision_conflict());
    }
    let current = rec.status.clone().unwrap_or(process.initial);
    let step = process
        .actions
        .iter()
        .find(|a| a.name == action && a.from == current)
        .ok_or_else(ApiError::status_action_failed)?;
    rec.status = Some(step.to.clone());
    rec.assignees =
        p.get("assignee").and_then(Value::as_str).filter(|a| !a.is_empty()).map(str::to_string).into_iter().collect();
    rec.revision += 2;
    rec.modifier = actor.code.clone();
    rec.updated_at = now();
    Ok((id, rec.revision))
}

/// One update of PUT record.json / records.json: by `id` or by `updateKey` (exclusive), with the revision check, or
/// with `upsert` an insert when no record matches (an id not found gets a new id, as kintone does).
fn update_one(
    app: &mut App,
    actor: &Actor,
    item: &Value,
    upsert: bool,
    prefix: &str,
    key_prefix: &str,
    errors: &mut FieldErrors,
) -> Result<Option<Written>, ApiError> {
    let id = item.get("id").filter(|v| !v.is_null());
    let key = item.get("updateKey").filter(|v| !v.is_null());
    let mut record = item.get("record").cloned();
    let target = match (id, key) {
        // Text not confirmed; kintone documents the two as exclusive.
        (Some(_), Some(_)) => {
            let text = Text::new("idとupdateKeyは同時に指定できません。", "You cannot specify both id and updateKey.");
            return Err(ApiError::invalid_at(format!("{key_prefix}id"), text));
        }
        (None, None) => return Err(ApiError::invalid_at(format!("{key_prefix}id"), Text::required())),
        (Some(_), None) => {
            let id = id_param(item, "id", key_prefix)?;
            match app.records.contains_key(&id) {
                true => Some(id),
                false if upsert => None,
                false => return Err(ApiError::record_not_found(id)),
            }
        }
        (None, Some(k)) => {
            let (code, field_type, value) = update_key(app, k, key_prefix)?;
            let found = app.records.values().find(|r| {
                r.values.get(&code).and_then(Value::as_str).is_some_and(|v| same_value(field_type, v, &value))
            });
            match found.map(|r| r.id) {
                Some(id) => Some(id),
                None if upsert => {
                    // The inserted record carries the key's value unless the record itself sets the field.
                    if let Some(m) = record.get_or_insert_with(|| json!({})).as_object_mut() {
                        m.entry(code).or_insert_with(|| json!({ "value": value }));
                    }
                    None
                }
                None => return Err(ApiError::record_not_found(value)),
            }
        }
    };
    if let Some(t) = target {
        let expected = revision_param(item.get("revision"), &format!("{key_prefix}revision"))?;
        if expected.is_some_and(|r| Some(r) != app.records.get(&t).map(|rec| rec.revision)) {
            return Err(ApiError::revision_conflict());
        }
    }
    let operation = if target.is_some() { "UPDATE" } else { "INSERT" };
    Ok(write_record(app, record.as_ref(), target, actor, prefix, errors)?.map(|(id, rev)| (id, rev, operation)))
}

/// `updateKey` must name a SINGLE_LINE_TEXT or NUMBER field with 「値の重複を禁止する」 set, as kintone documents.
fn update_key(app: &App, k: &Value, key_prefix: &str) -> Result<(String, FieldType, String), ApiError> {
    let key = format!("{key_prefix}updateKey.field");
    let code = k.get("field").and_then(Value::as_str).ok_or_else(|| ApiError::invalid_at(&key, Text::required()))?;
    let field_type = match app.field(code) {
        Some(f) if f.unique && matches!(f.field_type, FieldType::SingleLineText | FieldType::Number) => f.field_type,
        // Text not confirmed.
        _ => {
            let text = Text::new(
                "重複禁止が設定された文字列（1行）または数値フィールドを指定してください。",
                "Specify a Text or Number field with \"Prohibit duplicate values\" enabled.",
            );
            return Err(ApiError::invalid_at(key, text));
        }
    };
    let value = match k.get("value") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(ApiError::invalid_at(format!("{key_prefix}updateKey.value"), Text::required())),
    };
    Ok((code.to_string(), field_type, value))
}

/// The array `key` of a bulk request: present, 1 to 100 items.
fn bulk_items<'a>(p: &'a Value, key: &str, over_limit: Text) -> Result<&'a Vec<Value>, ApiError> {
    match p.get(key) {
        None | Some(Value::Null) => Err(ApiError::invalid_at(key, Text::required())),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::invalid_at(key, Text::at_least_one())),
        Some(Value::Array(items)) if items.len() > MAX_BULK => Err(ApiError::invalid_at(key, over_limit)),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(ApiError::invalid_at(key, Text::invalid_value())),
    }
}

/// A record id given as a number or a string of digits.
fn id_param(p: &Value, key: &str, key_prefix: &str) -> Result<u64, ApiError> {
    match p.get(key) {
        None | Some(Value::Null) => Err(ApiError::invalid_at(format!("{key_prefix}{key}"), Text::required())),
        Some(v) => id_text(v)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::invalid_at(format!("{key_prefix}{key}"), Text::invalid_value())),
    }
}

/// An expected revision: absent, null or -1 means "do not check".
fn revision_param(v: Option<&Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) if v.as_i64() == Some(-1) || v.as_str() == Some("-1") => Ok(None),
        Some(v) => id_text(v)
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid_at(key, Text::invalid_value())),
    }
}

/// A boolean parameter, sent as JSON `true` or as `true` in a query string.
pub(crate) fn flag(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true))) || v.and_then(Value::as_str) == Some("true")
}
