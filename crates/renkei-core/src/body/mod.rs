//! Request and response bodies as bytes: reading what a sender posted, and writing CSV for systems that want it.
//!
//! Inbound, [`parse_body`] turns a webhook body (JSON, form data, CSV or text, in UTF-8 or Shift_JIS) into a
//! `serde_json::Value` that the rest of renkei works on. Outbound, [`encode_csv`] writes rows as CSV in the
//! encoding a Japanese business system expects (働くDB's システム連携 and friends want Shift_JIS, CRLF, and
//! sometimes a free header or footer line).
//!
//! This module never does I/O, never guesses silently where data would be lost (undecodable text becomes
//! base64, an unencodable character is an error, not `?`), and never splits a CSV body into several
//! events: [`Split`] is only carried for the caller.

mod csv_in;
mod csv_out;
mod encoding;
mod form;
mod inbound;

pub use csv_out::{content_type_for, encode_csv, CsvEncodeError};
pub use inbound::parse_body;

use crate::message::Msg;

/// How a source's body is read (config value `format:`): json | form | csv | text | auto (default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// Decided by the request's Content-Type.
    #[default]
    Auto,
    Json,
    Form,
    Csv,
    Text,
}

/// The character encoding of an inbound CSV body (config `csv.encoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// A BOM means UTF-8 (or UTF-16); else a `charset=` of the Content-Type; else UTF-8 when the bytes are
    /// valid UTF-8; else Shift_JIS.
    #[default]
    Auto,
    #[serde(alias = "utf-8")]
    Utf8,
    /// Windows-31J (cp932), which is what Japanese Windows software means by "Shift_JIS".
    #[serde(alias = "sjis", alias = "cp932", alias = "shift-jis", alias = "windows-31j")]
    ShiftJis,
}

/// Whether the caller turns one CSV body into one event per row (config `csv.split`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// One event carrying all rows.
    #[default]
    None,
    /// One event per data row.
    Rows,
}

/// Config `csv:` of a source.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvInOptions {
    pub encoding: TextEncoding,
    /// Carried for the caller; [`parse_body`] always returns all rows in one array.
    pub split: Split,
    /// One ASCII character; `','` by default, `'\t'` for TSV.
    pub delimiter: char,
    /// The first line after `skip_lines` names the columns.
    pub header: bool,
    /// Column names. With `header: false` they name the fields (else `col1`, `col2`, ...); with
    /// `header: true` they replace the names in the header row, which is still read and dropped.
    pub columns: Option<Vec<String>>,
    /// Physical lines dropped before the header row (働くDB can send a custom header line).
    pub skip_lines: usize,
    /// Non-empty physical lines dropped at the end (a footer line such as a record count).
    pub skip_footer: usize,
}

impl Default for CsvInOptions {
    fn default() -> Self {
        CsvInOptions {
            encoding: TextEncoding::Auto,
            split: Split::None,
            delimiter: ',',
            header: true,
            columns: None,
            skip_lines: 0,
            skip_footer: 0,
        }
    }
}

impl CsvInOptions {
    /// Checks what serde cannot: that the delimiter is usable. Meant for config loading, so that a bad
    /// delimiter is reported once at startup rather than on every request.
    pub fn validate(&self) -> Result<(), Msg> {
        delimiter_byte(self.delimiter).map(|_| ())
    }
}

/// The encoding of an outbound CSV body (config `csv.encoding` of a step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutEncoding {
    #[default]
    #[serde(alias = "utf-8")]
    Utf8,
    /// UTF-8 starting with a BOM, which Excel needs to open UTF-8 CSV without mojibake.
    #[serde(alias = "utf-8-bom")]
    Utf8Bom,
    /// Windows-31J (cp932).
    #[serde(alias = "sjis", alias = "cp932", alias = "shift-jis", alias = "windows-31j")]
    ShiftJis,
}

/// Line breaks between records and around the header/footer lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineEnding {
    /// What Japanese business systems (and RFC 4180) expect.
    #[default]
    Crlf,
    Lf,
}

/// Config `csv:` of an outbound step.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOutOptions {
    pub encoding: OutEncoding,
    /// Write the column-name row.
    pub header: bool,
    /// Column order; by default the keys in first-seen order across rows.
    pub columns: Option<Vec<String>>,
    /// A free text line written first, before the column row, as is (not CSV-quoted).
    pub header_line: Option<String>,
    /// A free text line written after the last row, as is.
    pub footer_line: Option<String>,
    /// One ASCII character; `','` by default.
    pub delimiter: char,
    pub line_ending: LineEnding,
}

impl Default for CsvOutOptions {
    fn default() -> Self {
        CsvOutOptions {
            encoding: OutEncoding::Utf8,
            header: true,
            columns: None,
            header_line: None,
            footer_line: None,
            delimiter: ',',
            line_ending: LineEnding::Crlf,
        }
    }
}

impl CsvOutOptions {
    /// Checks what serde cannot (the delimiter), for config loading.
    pub fn validate(&self) -> Result<(), Msg> {
        delimiter_byte(self.delimiter).map(|_| ())
    }
}

/// The parsed body.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub value: serde_json::Value,
    /// The format actually used; never [`BodyFormat::Auto`].
    pub kind: BodyFormat,
    /// A JSON body's text, decoded, when it is already written as renkei would write `value` (compact, characters
    /// unescaped): stored as it came, with no writing out. `None` for other formats and other JSON.
    pub text: Option<String>,
}

/// Why a body could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// HTTP 400: the body does not match its format; the message says what is wrong and where.
    #[error("{0}")]
    Malformed(Msg),
    /// HTTP 415: the content type (or its charset) is not one renkei reads; the message names it and the
    /// accepted ones.
    #[error("{0}")]
    UnsupportedType(Msg),
}

impl BodyError {
    pub fn msg(&self) -> &Msg {
        match self {
            BodyError::Malformed(m) | BodyError::UnsupportedType(m) => m,
        }
    }

    /// The HTTP status a receiver answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            BodyError::Malformed(_) => 400,
            BodyError::UnsupportedType(_) => 415,
        }
    }
}

/// The csv crate takes a single byte; quotes and line breaks would make every row ambiguous.
pub(crate) fn delimiter_byte(c: char) -> Result<u8, Msg> {
    if c.is_ascii() && !matches!(c, '"' | '\n' | '\r') {
        return Ok(c as u8);
    }
    Err(Msg::new(
        format!("csv.delimiter {c:?} is not usable: it must be one ASCII character other than a quote or a line break, such as \",\" or \"\\t\""),
        format!("csv.delimiter の {c:?} は使えません。\",\" や \"\\t\" のように、引用符と改行以外の ASCII 1 文字にしてください"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv_in(v: serde_json::Value) -> Result<CsvInOptions, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn csv_in_defaults() {
        let o = csv_in(json!({})).unwrap();
        assert_eq!(o, CsvInOptions::default());
        assert_eq!(o.delimiter, ',');
        assert!(o.header);
        assert_eq!(o.encoding, TextEncoding::Auto);
        assert_eq!(o.split, Split::None);
    }

    #[test]
    fn csv_in_full() {
        let o = csv_in(json!({
            "encoding": "sjis", "split": "rows", "delimiter": "\t", "header": false,
            "columns": ["a", "b"], "skip_lines": 1, "skip_footer": 2
        }))
        .unwrap();
        assert_eq!(o.encoding, TextEncoding::ShiftJis);
        assert_eq!(o.split, Split::Rows);
        assert_eq!(o.delimiter, '\t');
        assert!(!o.header);
        assert_eq!(o.columns, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!((o.skip_lines, o.skip_footer), (1, 2));
    }

    #[test]
    fn encoding_aliases() {
        for (label, want) in [
            ("auto", TextEncoding::Auto),
            ("utf8", TextEncoding::Utf8),
            ("utf-8", TextEncoding::Utf8),
            ("shift_jis", TextEncoding::ShiftJis),
            ("sjis", TextEncoding::ShiftJis),
            ("cp932", TextEncoding::ShiftJis),
        ] {
            let o = csv_in(json!({ "encoding": label })).unwrap();
            assert_eq!(o.encoding, want, "{label}");
        }
        assert!(csv_in(json!({ "encoding": "euc-jp" })).is_err());
    }

    #[test]
    fn unknown_csv_field_is_rejected() {
        let err = csv_in(json!({ "delimeter": ";" })).unwrap_err().to_string();
        assert!(err.contains("unknown field `delimeter`"), "{err}");
    }

    #[test]
    fn body_format_names() {
        for (label, want) in [
            ("auto", BodyFormat::Auto),
            ("json", BodyFormat::Json),
            ("form", BodyFormat::Form),
            ("csv", BodyFormat::Csv),
            ("text", BodyFormat::Text),
        ] {
            assert_eq!(serde_json::from_value::<BodyFormat>(json!(label)).unwrap(), want);
        }
        assert!(serde_json::from_value::<BodyFormat>(json!("xml")).is_err());
    }

    #[test]
    fn validate_delimiter() {
        let mut o = CsvInOptions { delimiter: '\t', ..CsvInOptions::default() };
        assert_eq!(o.validate(), Ok(()));
        o.delimiter = '、';
        let m = o.validate().unwrap_err();
        assert!(m.en.starts_with("csv.delimiter '、' is not usable"), "{}", m.en);
        assert!(m.ja.starts_with("csv.delimiter の '、' は使えません"), "{}", m.ja);
        o.delimiter = '"';
        assert!(o.validate().is_err());
    }

    #[test]
    fn error_status() {
        let m = Msg::new("x", "エックス");
        assert_eq!(BodyError::Malformed(m.clone()).http_status(), 400);
        assert_eq!(BodyError::UnsupportedType(m.clone()).http_status(), 415);
        assert_eq!(BodyError::Malformed(m.clone()).to_string(), "x");
        assert_eq!(BodyError::UnsupportedType(m.clone()).msg(), &m);
    }

    #[test]
    fn csv_out_config() {
        let o: CsvOutOptions = serde_json::from_value(json!({})).unwrap();
        assert_eq!(o, CsvOutOptions::default());
        for (label, want) in [
            ("utf8", OutEncoding::Utf8),
            ("utf-8", OutEncoding::Utf8),
            ("utf8_bom", OutEncoding::Utf8Bom),
            ("shift_jis", OutEncoding::ShiftJis),
            ("sjis", OutEncoding::ShiftJis),
            ("cp932", OutEncoding::ShiftJis),
        ] {
            let o: CsvOutOptions = serde_json::from_value(json!({ "encoding": label })).unwrap();
            assert_eq!(o.encoding, want, "{label}");
        }
        let o: CsvOutOptions = serde_json::from_value(json!({
            "header": false, "columns": ["b", "a"], "header_line": "H", "footer_line": "F",
            "delimiter": ";", "line_ending": "lf"
        }))
        .unwrap();
        assert_eq!((o.header, o.delimiter, o.line_ending), (false, ';', LineEnding::Lf));
        assert_eq!((o.header_line.as_deref(), o.footer_line.as_deref()), (Some("H"), Some("F")));
        let e = serde_json::from_value::<CsvOutOptions>(json!({ "line_end": "lf" })).unwrap_err();
        assert!(e.to_string().contains("unknown field `line_end`"), "{e}");
        assert!(CsvOutOptions { delimiter: '\n', ..CsvOutOptions::default() }.validate().is_err());
    }
}
