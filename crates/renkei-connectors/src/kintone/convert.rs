//! Rendered values → what each kintone field type takes.
//!
//! Templates produce whatever the sender had: numbers, Japanese dates, comma-separated choices, user codes.
//! kintone wants strings for numbers, `YYYY-MM-DD` dates, UTC date-times, lists for check boxes and
//! `[{"code"}]` for users. This converts by the field's type from `app/form/fields.json`, and refuses, naming
//! the field, the value and the reason, whatever would not fit, including field codes the app does not have
//! (kintone itself would silently drop those: data lost without a word).

use renkei_core::dates::{parse_date, parse_datetime};
use serde_json::{json, Map, Value};

use super::fields::{Field, Fields};

/// A value that does not fit its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertError {
    pub field: String,
    /// The field's name on the form, when it differs from its code.
    pub label: Option<String>,
    pub value: String,
    pub why: String,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(label) => write!(f, "field `{}` (`{label}`): value {} {}", self.field, self.value, self.why),
            None => write!(f, "field `{}`: value {} {}", self.field, self.value, self.why),
        }
    }
}

/// Converts a record (field code → rendered value) into kintone's write form (`{code: {"value": V}}`).
pub fn convert_record(fields: &Fields, record: &Map<String, Value>) -> Result<Map<String, Value>, ConvertError> {
    convert_fields(&fields.fields, record, "")
}

fn convert_fields(
    defs: &indexmap::IndexMap<String, Field>,
    record: &Map<String, Value>,
    prefix: &str,
) -> Result<Map<String, Value>, ConvertError> {
    let mut out = Map::with_capacity(record.len());
    for (code, value) in record {
        let name = format!("{prefix}{code}");
        let Some(field) = defs.get(code) else {
            return Err(ConvertError {
                field: name,
                label: None,
                value: show(value),
                why: "cannot be written: the app has no field with this code".into(),
            });
        };
        let converted = convert_value(field, value, &name).map_err(|why| ConvertError {
            field: name.clone(),
            label: (!field.label.is_empty() && field.label != *code).then(|| field.label.clone()),
            value: show(value),
            why,
        })?;
        out.insert(code.clone(), json!({ "value": converted }));
    }
    Ok(out)
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn convert_value(field: &Field, v: &Value, name: &str) -> Result<Value, String> {
    if field.read_only() {
        return Err(format!("cannot be written: {} is a read-only field", field.kind));
    }
    match field.kind.as_str() {
        "SINGLE_LINE_TEXT" | "MULTI_LINE_TEXT" | "RICH_TEXT" | "LINK" => text(v).map(Value::String),
        "NUMBER" => number(v).map(Value::String),
        "DATE" => empty_or(v, |s| parse_date(s).map(|d| d.format("%Y-%m-%d").to_string()), "is not a date"),
        "DATETIME" => empty_or(
            v,
            |s| parse_datetime(s).map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "is not a date-time",
        ),
        "TIME" => empty_or(v, time, "is not a time (HH:MM)"),
        "DROP_DOWN" | "RADIO_BUTTON" => {
            let s = text(v)?;
            if s.is_empty() && field.kind == "DROP_DOWN" {
                return Ok(Value::Null);
            }
            choose(field, &s).map(Value::String)
        }
        "CHECK_BOX" | "MULTI_SELECT" => {
            let items = list(v)?;
            items.iter().map(|s| choose(field, s).map(Value::String)).collect::<Result<Vec<_>, _>>().map(Value::Array)
        }
        "USER_SELECT" | "ORGANIZATION_SELECT" | "GROUP_SELECT" => match v {
            Value::Array(items) if items.iter().all(|i| i.get("code").is_some()) => {
                Ok(Value::Array(items.iter().map(|i| json!({ "code": i["code"] })).collect()))
            }
            _ => Ok(Value::Array(list(v)?.into_iter().map(|c| json!({ "code": c })).collect())),
        },
        "FILE" => match v {
            Value::Array(items) if items.iter().all(|i| i.get("fileKey").is_some()) => Ok(v.clone()),
            Value::Null => Ok(Value::Array(Vec::new())),
            _ => Err("is not a list of uploaded files ([{\"fileKey\": ...}])".into()),
        },
        "SUBTABLE" => subtable(field, v, name),
        _ => Ok(v.clone()),
    }
}

fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err("is a list or a map, not text".into()),
    }
}

/// A NUMBER value: numbers as their text; strings with full-width digits or thousands separators accepted.
fn number(v: &Value) -> Result<String, String> {
    let raw = match v {
        Value::Number(n) => return Ok(n.to_string()),
        Value::Null => return Ok(String::new()),
        Value::String(s) => s,
        _ => return Err("is not a number".into()),
    };
    let normal: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | '，' | ' '))
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            '．' => '.',
            '－' | '−' => '-',
            other => other,
        })
        .collect();
    if normal.is_empty() {
        return Ok(String::new());
    }
    match normal.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(normal),
        _ => Err("is not a number".into()),
    }
}

fn empty_or(v: &Value, parse: impl Fn(&str) -> Option<String>, why: &str) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
        Value::String(s) => parse(s.trim()).map(Value::String).ok_or_else(|| why.to_owned()),
        _ => Err(why.to_owned()),
    }
}

fn time(s: &str) -> Option<String> {
    let s = s.replace('時', ":").replace('分', "").replace('：', ":");
    let mut parts = s.trim().split(':');
    let h: u32 = parts.next()?.trim().parse().ok()?;
    let m: u32 = parts.next().map(|m| m.trim()).filter(|m| !m.is_empty()).map_or(Some(0), |m| m.parse().ok())?;
    (h < 24 && m < 60).then(|| format!("{h:02}:{m:02}"))
}

/// A list from a JSON array, or from text separated by commas, 、 or new lines.
fn list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Null => Ok(Vec::new()),
        Value::String(s) => {
            Ok(s.split([',', '、', '\n']).map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect())
        }
        other => Ok(vec![text(other)?]),
    }
}

fn choose(field: &Field, s: &str) -> Result<String, String> {
    if field.options.is_empty() || field.options.iter().any(|o| o == s) {
        Ok(s.to_owned())
    } else {
        Err(format!("is not one of the choices ({})", field.options.join(", ")))
    }
}

/// Rows as `[{"id"?, "value": {...}}]` or plain maps of the subtable's field codes.
fn subtable(field: &Field, v: &Value, name: &str) -> Result<Value, String> {
    let rows = match v {
        Value::Array(rows) => rows,
        Value::Null => return Ok(Value::Array(Vec::new())),
        _ => return Err("is not a list of rows".into()),
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(obj) = row else { return Err(format!("row {} is not a map of field codes", i + 1)) };
        let (id, values) = match obj.get("value") {
            Some(Value::Object(values)) => (obj.get("id").cloned(), values.clone()),
            _ => (None, obj.clone()),
        };
        // Rows given in read form ({code: {"value": V}}) are taken as they are.
        let plain: Map<String, Value> = values
            .into_iter()
            .map(|(k, v)| match v {
                Value::Object(mut o) if o.contains_key("value") && o.len() <= 2 => {
                    (k, o.remove("value").unwrap_or_default())
                }
                other => (k, other),
            })
            .collect();
        let converted =
            convert_fields(&field.fields, &plain, &format!("{name}[{}].", i + 1)).map_err(|e| e.to_string())?;
        let mut row = Map::new();
        if let Some(id) = id {
            row.insert("id".into(), id);
        }
        row.insert("value".into(), Value::Object(converted));
        out.push(Value::Object(row));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests;
