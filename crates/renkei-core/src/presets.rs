//! Source presets: what renkei knows about a sender's body without being told.
//!
//! `preset: kintone` reads kintone's webhook body: `type` (ADD_RECORD, UPDATE_RECORD, DELETE_RECORD,
//! ADD_RECORD_COMMENT, UPDATE_STATUS) becomes the event type unless `event_type` says otherwise, the
//! notification `id` is the dedupe key unless `dedupe` says otherwise, and `record`'s `{code: {type, value}}`
//! is flattened to `{code: value}`, so templates say `body.record.顧客名`. The field types move to
//! `body.record_types`. Subtable rows become `{"$id": ..., code: value}`.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Kintone,
}

impl Preset {
    /// The event type template used when the source sets none.
    pub fn event_type(self) -> &'static str {
        match self {
            Preset::Kintone => "{{ body.type }}",
        }
    }

    /// The dedupe template used when the source sets none.
    pub fn dedupe(self) -> &'static str {
        match self {
            Preset::Kintone => "{{ body.id | default('') }}",
        }
    }

    /// Reshapes a parsed body.
    pub fn apply(self, body: Value) -> Value {
        match self {
            Preset::Kintone => kintone(body),
        }
    }
}

fn kintone(mut body: Value) -> Value {
    let Some(obj) = body.as_object_mut() else { return body };
    if let Some(Value::Object(record)) = obj.remove("record") {
        let (values, types) = flatten(&record);
        obj.insert("record".into(), Value::Object(values));
        obj.insert("record_types".into(), Value::Object(types));
    }
    body
}

fn flatten(record: &Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let mut values = Map::new();
    let mut types = Map::new();
    for (code, field) in record {
        let kind = field.get("type").cloned().unwrap_or(Value::Null);
        let value = field.get("value").cloned().unwrap_or(Value::Null);
        let value = match (kind.as_str(), value) {
            (Some("SUBTABLE"), Value::Array(rows)) => Value::Array(
                rows.into_iter()
                    .map(|row| {
                        let mut flat = match row.get("value") {
                            Some(Value::Object(cells)) => flatten(cells).0,
                            _ => Map::new(),
                        };
                        if let Some(id) = row.get("id") {
                            flat.insert("$id".into(), id.clone());
                        }
                        Value::Object(flat)
                    })
                    .collect(),
            ),
            (_, v) => v,
        };
        values.insert(code.clone(), value);
        types.insert(code.clone(), kind);
    }
    (values, types)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flattens_kintone_records() {
        let body = json!({
            "id": "01234567-0123-0123-0123-0123456789ab", "type": "ADD_RECORD",
            "app": {"id": "1", "name": "案件管理"},
            "record": {
                "$id": {"type": "__ID__", "value": "2"},
                "顧客名": {"type": "SINGLE_LINE_TEXT", "value": "㈱山田"},
                "担当": {"type": "USER_SELECT", "value": [{"code": "sato", "name": "佐藤"}]},
                "明細": {"type": "SUBTABLE", "value": [{"id": "41", "value": {"品名": {"type": "SINGLE_LINE_TEXT", "value": "りんご"}}}]}
            }
        });
        let out = Preset::Kintone.apply(body);
        assert_eq!(out["record"]["顧客名"], "㈱山田");
        assert_eq!(out["record"]["$id"], "2");
        assert_eq!(out["record"]["担当"][0]["code"], "sato");
        assert_eq!(out["record"]["明細"], json!([{"品名": "りんご", "$id": "41"}]));
        assert_eq!(out["record_types"]["顧客名"], "SINGLE_LINE_TEXT");
        assert_eq!(out["type"], "ADD_RECORD");
        // DELETE_RECORD has no record: left as it is.
        let del = json!({"type": "DELETE_RECORD", "recordId": "2"});
        assert_eq!(Preset::Kintone.apply(del.clone()), del);
    }
}
