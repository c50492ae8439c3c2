//! An app's fields, as `app/form/fields.json` describes them: what the converter needs to know.

use indexmap::IndexMap;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Field {
    pub code: String,
    pub label: String,
    /// kintone's type name: `SINGLE_LINE_TEXT`, `NUMBER`, `SUBTABLE`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub unique: bool,
    /// Choices of DROP_DOWN, RADIO_BUTTON, CHECK_BOX and MULTI_SELECT.
    pub options: Vec<String>,
    /// The fields of a SUBTABLE.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, Field>,
}

impl Field {
    /// Fields no API write may set (status changes go through `status.json`; the rest kintone computes).
    pub fn read_only(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "RECORD_NUMBER"
                | "__ID__"
                | "__REVISION__"
                | "CALC"
                | "STATUS"
                | "STATUS_ASSIGNEE"
                | "CATEGORY"
                | "CREATOR"
                | "MODIFIER"
                | "CREATED_TIME"
                | "UPDATED_TIME"
        )
    }

    /// Layout-only entries that hold no value.
    fn holds_value(&self) -> bool {
        !matches!(self.kind.as_str(), "LABEL" | "SPACER" | "HR" | "GROUP" | "REFERENCE_TABLE")
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Fields {
    pub revision: String,
    pub fields: IndexMap<String, Field>,
}

impl Fields {
    /// Reads the body of `GET app/form/fields.json`.
    pub fn parse(body: &serde_json::Value) -> Result<Fields, String> {
        let props = body
            .get("properties")
            .and_then(|p| p.as_object())
            .ok_or("the answer of app/form/fields.json has no `properties`")?;
        Ok(Fields {
            revision: body.get("revision").and_then(|r| r.as_str()).unwrap_or_default().to_owned(),
            fields: parse_props(props),
        })
    }

    pub fn get(&self, code: &str) -> Option<&Field> {
        self.fields.get(code)
    }
}

fn parse_props(props: &serde_json::Map<String, serde_json::Value>) -> IndexMap<String, Field> {
    let mut out = IndexMap::new();
    for (code, p) in props {
        let text = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let mut options: Vec<(i64, String)> = p
            .get("options")
            .and_then(|o| o.as_object())
            .map(|o| {
                o.iter()
                    .map(|(label, v)| {
                        let index = v.get("index").and_then(|i| i.as_str()?.parse().ok().or(i.as_i64())).unwrap_or(0);
                        (index, label.clone())
                    })
                    .collect()
            })
            .unwrap_or_default();
        options.sort();
        let field = Field {
            code: code.clone(),
            label: text("label"),
            kind: text("type"),
            required: p.get("required").and_then(|v| v.as_bool()).unwrap_or(false),
            unique: p.get("unique").and_then(|v| v.as_bool()).unwrap_or(false),
            options: options.into_iter().map(|(_, l)| l).collect(),
            fields: p.get("fields").and_then(|f| f.as_object()).map(parse_props).unwrap_or_default(),
        };
        if field.holds_value() {
            out.insert(code.clone(), field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_fields_json() {
        let body = json!({"revision": "5", "properties": {
            "顧客名": {"type": "SINGLE_LINE_TEXT", "code": "顧客名", "label": "顧客名", "required": true, "unique": false},
            "区分": {"type": "DROP_DOWN", "code": "区分", "label": "区分", "options": {"B": {"label": "B", "index": "1"}, "A": {"label": "A", "index": "0"}}},
            "明細": {"type": "SUBTABLE", "code": "明細", "fields": {"品名": {"type": "SINGLE_LINE_TEXT", "code": "品名", "label": "品名"}}},
            "ラベル": {"type": "LABEL", "label": "x"},
            "レコード番号": {"type": "RECORD_NUMBER", "code": "レコード番号", "label": "レコード番号"}
        }});
        let f = Fields::parse(&body).unwrap();
        assert_eq!(f.revision, "5");
        assert_eq!(f.fields.keys().collect::<Vec<_>>(), ["顧客名", "区分", "明細", "レコード番号"]);
        assert!(f.get("顧客名").unwrap().required);
        assert_eq!(f.get("区分").unwrap().options, ["A", "B"]);
        assert_eq!(f.get("明細").unwrap().fields["品名"].kind, "SINGLE_LINE_TEXT");
        assert!(f.get("レコード番号").unwrap().read_only());
        assert!(Fields::parse(&json!({})).is_err());
    }
}
