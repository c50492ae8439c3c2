//! Apps as the fake holds them: field definitions (what `app/form/fields.json` answers and what written values are
//! checked against), process management, and stored records with kintone's read format.
//!
//! Every app gets kintone's built-in fields (レコード番号, 作成者, 作成日時, 更新者, 更新日時, ステータス, 作業者,
//! カテゴリー) under their default Japanese codes unless the test defines a field of that type itself.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// kintone field types (the `type` strings of the API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    SingleLineText,
    MultiLineText,
    RichText,
    Number,
    Calc,
    RadioButton,
    CheckBox,
    MultiSelect,
    DropDown,
    Date,
    Time,
    DateTime,
    Link,
    UserSelect,
    OrganizationSelect,
    GroupSelect,
    File,
    Subtable,
    RecordNumber,
    Creator,
    CreatedTime,
    Modifier,
    UpdatedTime,
    Status,
    StatusAssignee,
    Category,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        use FieldType::*;
        match self {
            SingleLineText => "SINGLE_LINE_TEXT",
            MultiLineText => "MULTI_LINE_TEXT",
            RichText => "RICH_TEXT",
            Number => "NUMBER",
            Calc => "CALC",
            RadioButton => "RADIO_BUTTON",
            CheckBox => "CHECK_BOX",
            MultiSelect => "MULTI_SELECT",
            DropDown => "DROP_DOWN",
            Date => "DATE",
            Time => "TIME",
            DateTime => "DATETIME",
            Link => "LINK",
            UserSelect => "USER_SELECT",
            OrganizationSelect => "ORGANIZATION_SELECT",
            GroupSelect => "GROUP_SELECT",
            File => "FILE",
            Subtable => "SUBTABLE",
            RecordNumber => "RECORD_NUMBER",
            Creator => "CREATOR",
            CreatedTime => "CREATED_TIME",
            Modifier => "MODIFIER",
            UpdatedTime => "UPDATED_TIME",
            Status => "STATUS",
            StatusAssignee => "STATUS_ASSIGNEE",
            Category => "CATEGORY",
        }
    }

    /// Types whose options are a fixed list of choices.
    pub(crate) fn has_options(self) -> bool {
        matches!(self, FieldType::RadioButton | FieldType::CheckBox | FieldType::MultiSelect | FieldType::DropDown)
    }

    /// Types that can be set to 「値の重複を禁止する」.
    pub(crate) fn can_be_unique(self) -> bool {
        matches!(
            self,
            FieldType::SingleLineText | FieldType::Number | FieldType::Link | FieldType::Date | FieldType::DateTime
        )
    }

    /// Types a user types a value into (required/unique apply, `app/form/fields.json` shows those flags).
    pub(crate) fn is_input(self) -> bool {
        !matches!(
            self,
            FieldType::Calc
                | FieldType::RecordNumber
                | FieldType::Creator
                | FieldType::CreatedTime
                | FieldType::Modifier
                | FieldType::UpdatedTime
                | FieldType::Status
                | FieldType::StatusAssignee
                | FieldType::Category
        )
    }
}

/// A field definition for `FakeKintone::add_app`.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub code: String,
    pub label: String,
    /// The label `app/form/fields.json?lang=en` answers; the default label when absent.
    pub label_en: Option<String>,
    pub field_type: FieldType,
    pub required: bool,
    pub unique: bool,
    /// Choices of RADIO_BUTTON, CHECK_BOX, MULTI_SELECT and DROP_DOWN.
    pub options: Vec<String>,
    /// Fields inside a SUBTABLE.
    pub fields: Vec<Field>,
}

impl Field {
    pub fn new(code: &str, label: &str, field_type: FieldType) -> Field {
        Field {
            code: code.to_string(),
            label: label.to_string(),
            label_en: None,
            field_type,
            required: false,
            unique: false,
            options: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// A SUBTABLE holding `fields`.
    pub fn subtable(code: &str, label: &str, fields: Vec<Field>) -> Field {
        Field { fields, ..Field::new(code, label, FieldType::Subtable) }
    }

    pub fn required(mut self) -> Field {
        self.required = true;
        self
    }

    pub fn unique(mut self) -> Field {
        self.unique = true;
        self
    }

    pub fn options<I, S>(mut self, options: I) -> Field
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options = options.into_iter().map(Into::into).collect();
        self
    }

    pub fn label_en(mut self, label: &str) -> Field {
        self.label_en = Some(label.to_string());
        self
    }
}

/// What an API token may do in its app (kintone's per-token checkboxes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    pub view: bool,
    pub add: bool,
    pub edit: bool,
    pub delete: bool,
    /// アプリ管理: lets the token set CREATOR/MODIFIER/CREATED_TIME/UPDATED_TIME when adding records.
    pub manage_app: bool,
}

impl Rights {
    pub const ALL: Rights = Rights { view: true, add: true, edit: true, delete: true, manage_app: true };
    /// View, add, edit and delete, without app management: the usual token of an integration.
    pub const RECORDS: Rights = Rights { view: true, add: true, edit: true, delete: true, manage_app: false };
    pub const VIEW: Rights = Rights { view: true, add: false, edit: false, delete: false, manage_app: false };
}

/// A process-management action: `name` moves a record from status `from` to status `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAction {
    pub name: String,
    pub from: String,
    pub to: String,
}

impl StatusAction {
    pub fn new(name: &str, from: &str, to: &str) -> StatusAction {
        StatusAction { name: name.to_string(), from: from.to_string(), to: to.to_string() }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Process {
    pub(crate) actions: Vec<StatusAction>,
    pub(crate) initial: String,
}

/// A stored record. `values` holds the input fields in normalized write form (no `type`); built-in fields live in
/// the typed members and are rendered by `App::record_json`.
#[derive(Clone, Debug)]
pub(crate) struct StoredRecord {
    pub(crate) id: u64,
    pub(crate) revision: u64,
    pub(crate) values: Map<String, Value>,
    pub(crate) creator: String,
    pub(crate) created_at: String,
    pub(crate) modifier: String,
    pub(crate) updated_at: String,
    pub(crate) status: Option<String>,
    pub(crate) assignees: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct App {
    pub(crate) fields: Vec<Field>,
    pub(crate) guest_space: Option<u64>,
    pub(crate) process: Option<Process>,
    pub(crate) records: BTreeMap<u64, StoredRecord>,
    pub(crate) next_id: u64,
    /// Subtable row ids are unique within the app, as kintone's are within the domain.
    pub(crate) next_row_id: u64,
    /// The app settings revision `app/form/fields.json` answers.
    pub(crate) settings_revision: u64,
    /// Record comments as `(record id, comment id, text)`, oldest first.
    pub(crate) comments: Vec<(u64, u64, String)>,
}

const BUILT_IN: [(FieldType, &str, &str); 8] = [
    (FieldType::RecordNumber, "レコード番号", "Record number"),
    (FieldType::Creator, "作成者", "Created by"),
    (FieldType::CreatedTime, "作成日時", "Created datetime"),
    (FieldType::Modifier, "更新者", "Updated by"),
    (FieldType::UpdatedTime, "更新日時", "Updated datetime"),
    (FieldType::Status, "ステータス", "Status"),
    (FieldType::StatusAssignee, "作業者", "Assignee"),
    (FieldType::Category, "カテゴリー", "Categories"),
];

impl App {
    pub(crate) fn new(mut fields: Vec<Field>) -> App {
        for (field_type, code, en) in BUILT_IN {
            if !fields.iter().any(|f| f.field_type == field_type) {
                fields.push(Field::new(code, code, field_type).label_en(en));
            }
        }
        App {
            fields,
            guest_space: None,
            process: None,
            records: BTreeMap::new(),
            next_id: 1,
            next_row_id: 1,
            settings_revision: 1,
            comments: Vec::new(),
        }
    }

    pub(crate) fn field(&self, code: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.code == code)
    }

    /// kintone's read format of one record; `only` is the `fields` parameter of GET records.json.
    pub(crate) fn record_json(&self, rec: &StoredRecord, only: Option<&[String]>) -> Value {
        let wanted = |code: &str| only.is_none_or(|o| o.iter().any(|c| c == code));
        let mut out = Map::new();
        for f in self.fields.iter().filter(|f| wanted(&f.code)) {
            let value = match f.field_type {
                FieldType::RecordNumber => json!(rec.id.to_string()),
                FieldType::Creator => user_json(&rec.creator),
                FieldType::Modifier => user_json(&rec.modifier),
                FieldType::CreatedTime => json!(rec.created_at),
                FieldType::UpdatedTime => json!(rec.updated_at),
                // STATUS and STATUS_ASSIGNEE are only part of a record while process management is on, and the
                // fake does not model categories, which kintone also leaves out unless they are enabled.
                FieldType::Status if self.process.is_some() => json!(rec.status.clone().unwrap_or_default()),
                FieldType::StatusAssignee if self.process.is_some() => {
                    Value::Array(rec.assignees.iter().map(|a| user_json(a)).collect())
                }
                FieldType::Status | FieldType::StatusAssignee | FieldType::Category => continue,
                FieldType::Subtable => subtable_json(f, rec.values.get(&f.code)),
                t => rec.values.get(&f.code).cloned().unwrap_or_else(|| empty_value(t)),
            };
            out.insert(f.code.clone(), json!({ "type": f.field_type.as_str(), "value": value }));
        }
        if wanted("$revision") {
            out.insert("$revision".into(), json!({ "type": "__REVISION__", "value": rec.revision.to_string() }));
        }
        if wanted("$id") {
            out.insert("$id".into(), json!({ "type": "__ID__", "value": rec.id.to_string() }));
        }
        Value::Object(out)
    }

    /// The answer of `app/form/fields.json`. `lang=en` picks the English labels; every other value (`ja`,
    /// `default`, `user`, absent) the default ones, since the fake keeps no per-user language.
    pub(crate) fn form_fields_json(&self, lang: Option<&str>) -> Value {
        let mut properties = Map::new();
        for f in &self.fields {
            properties.insert(f.code.clone(), self.field_properties(f, lang));
        }
        json!({ "properties": properties, "revision": self.settings_revision.to_string() })
    }

    fn field_properties(&self, f: &Field, lang: Option<&str>) -> Value {
        let label = match (lang, &f.label_en) {
            (Some("en"), Some(en)) => en.as_str(),
            _ => f.label.as_str(),
        };
        let mut p = Map::new();
        p.insert("type".into(), json!(f.field_type.as_str()));
        p.insert("code".into(), json!(f.code));
        p.insert("label".into(), json!(label));
        match f.field_type {
            FieldType::Status | FieldType::StatusAssignee => {
                p.insert("enabled".into(), json!(self.process.is_some()));
            }
            FieldType::Category => {
                p.insert("enabled".into(), json!(false));
            }
            FieldType::Subtable => {
                p.insert("noLabel".into(), json!(false));
                let mut inner = Map::new();
                for sub in &f.fields {
                    inner.insert(sub.code.clone(), self.field_properties(sub, lang));
                }
                p.insert("fields".into(), Value::Object(inner));
            }
            t => {
                p.insert("noLabel".into(), json!(false));
                if t.is_input() {
                    p.insert("required".into(), json!(f.required));
                    if t.can_be_unique() {
                        p.insert("unique".into(), json!(f.unique));
                    }
                }
                if t.has_options() {
                    let mut options = Map::new();
                    for (i, o) in f.options.iter().enumerate() {
                        options.insert(o.clone(), json!({ "label": o, "index": i.to_string() }));
                    }
                    p.insert("options".into(), Value::Object(options));
                }
            }
        }
        Value::Object(p)
    }
}

/// USER_SELECT-like values as kintone reads them. The fake keeps no user directory, so a user's name is its code.
pub(crate) fn user_json(code: &str) -> Value {
    json!({ "code": code, "name": code })
}

/// The value kintone reads for a field that was never given one.
pub(crate) fn empty_value(t: FieldType) -> Value {
    match t {
        FieldType::DropDown | FieldType::Date | FieldType::Time => Value::Null,
        FieldType::CheckBox
        | FieldType::MultiSelect
        | FieldType::File
        | FieldType::UserSelect
        | FieldType::OrganizationSelect
        | FieldType::GroupSelect
        | FieldType::Subtable
        | FieldType::StatusAssignee
        | FieldType::Category => json!([]),
        _ => json!(""),
    }
}

/// Subtable rows in read format: each inner field typed, missing ones filled with their empty value.
fn subtable_json(f: &Field, stored: Option<&Value>) -> Value {
    let rows = stored.and_then(Value::as_array).cloned().unwrap_or_default();
    let rows = rows.iter().map(|row| {
        let values = row.get("value").and_then(Value::as_object);
        let mut cells = Map::new();
        for sub in &f.fields {
            let v = values.and_then(|m| m.get(&sub.code)).cloned().unwrap_or_else(|| empty_value(sub.field_type));
            cells.insert(sub.code.clone(), json!({ "type": sub.field_type.as_str(), "value": v }));
        }
        json!({ "id": row.get("id").cloned().unwrap_or(Value::Null), "value": cells })
    });
    Value::Array(rows.collect())
}
