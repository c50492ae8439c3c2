//! Writing rows as a CSV body for outbound steps, in the shape Japanese business systems import:
//! 働くDB's システム連携 and similar expect CRLF, usually Shift_JIS, and sometimes a free header or
//! footer line around the CSV.
//!
//! It never replaces a character Shift_JIS cannot hold with `?` (the step fails, naming the row, column
//! and character), and never reorders or drops a configured column.

use std::borrow::Cow;

use indexmap::IndexSet;
use serde_json::{Map, Value};

use super::encoding::{encode_sjis, to_cp932_repertoire, UTF8_BOM};
use super::{delimiter_byte, CsvOutOptions, LineEnding, OutEncoding};
use crate::message::Msg;

/// Why rows could not be written as CSV.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CsvEncodeError(pub Msg);

/// The Content-Type header that goes with [`encode_csv`]'s output.
pub fn content_type_for(opts: &CsvOutOptions) -> &'static str {
    match opts.encoding {
        OutEncoding::ShiftJis => "text/csv; charset=Shift_JIS",
        OutEncoding::Utf8 | OutEncoding::Utf8Bom => "text/csv; charset=utf-8",
    }
}

/// Writes `rows` (an array of objects, or one object as one row) as CSV bytes.
pub fn encode_csv(rows: &Value, opts: &CsvOutOptions) -> Result<Vec<u8>, CsvEncodeError> {
    let delimiter = delimiter_byte(opts.delimiter).map_err(CsvEncodeError)?;
    let rows = as_rows(rows)?;
    let columns: Vec<String> = match &opts.columns {
        Some(c) => c.clone(),
        None => rows.iter().flat_map(|r| r.keys().cloned()).collect::<IndexSet<String>>().into_iter().collect(),
    };
    let sjis = opts.encoding == OutEncoding::ShiftJis;
    let (eol, terminator) = match opts.line_ending {
        LineEnding::Crlf => ("\r\n", csv::Terminator::CRLF),
        LineEnding::Lf => ("\n", csv::Terminator::Any(b'\n')),
    };

    let mut text = String::new();
    if let Some(line) = &opts.header_line {
        text.push_str(&fit(line, sjis, || Place::Option("csv.header_line"))?);
        text.push_str(eol);
    }
    let mut writer = csv::WriterBuilder::new().delimiter(delimiter).terminator(terminator).from_writer(Vec::new());
    // With no columns at all there is nothing to write per row; csv would write `""` for an empty record.
    if !columns.is_empty() {
        if opts.header {
            let names = columns.iter().map(|c| fit(c, sjis, || Place::ColumnName(c))).collect::<Result<Vec<_>, _>>()?;
            writer.write_record(names.iter().map(|n| n.as_ref())).map_err(write_failed)?;
        }
        for (i, row) in rows.iter().enumerate() {
            let cells = columns
                .iter()
                .map(|c| {
                    let raw = cell_text(row.get(c));
                    fit(&raw, sjis, || Place::Cell { row: i + 1, column: c }).map(Cow::into_owned)
                })
                .collect::<Result<Vec<String>, _>>()?;
            writer.write_record(&cells).map_err(write_failed)?;
        }
    }
    let body = writer.into_inner().map_err(|e| write_failed(e.into_error().into()))?;
    // The writer only ever saw Rust strings, so its output is UTF-8.
    text.push_str(&String::from_utf8_lossy(&body));
    if let Some(line) = &opts.footer_line {
        text.push_str(&fit(line, sjis, || Place::Option("csv.footer_line"))?);
        text.push_str(eol);
    }

    match opts.encoding {
        OutEncoding::Utf8 => Ok(text.into_bytes()),
        OutEncoding::Utf8Bom => Ok([UTF8_BOM, text.as_bytes()].concat()),
        // Every piece was checked by `fit`, so this cannot find an unmappable character.
        OutEncoding::ShiftJis => encode_sjis(&text).map_err(|c| unencodable(c, Place::Option("csv"))),
    }
}

fn as_rows(rows: &Value) -> Result<Vec<&Map<String, Value>>, CsvEncodeError> {
    match rows {
        Value::Object(row) => Ok(vec![row]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object().ok_or_else(|| {
                    let (en, ja) = kind(item);
                    CsvEncodeError(Msg::new(
                        format!("CSV row {} must be an object, but it is {en}", i + 1),
                        format!("CSV の {} 行目はオブジェクトでなければなりませんが、{ja}です", i + 1),
                    ))
                })
            })
            .collect(),
        other => {
            let (en, ja) = kind(other);
            Err(CsvEncodeError(Msg::new(
                format!("CSV rows must be an array of objects or one object, but got {en}"),
                format!("CSV の行はオブジェクトの配列か 1 つのオブジェクトでなければなりませんが、{ja}が渡されました"),
            )))
        }
    }
}

fn kind(v: &Value) -> (&'static str, &'static str) {
    match v {
        Value::Null => ("null", "null"),
        Value::Bool(_) => ("a boolean", "真偽値"),
        Value::Number(_) => ("a number", "数値"),
        Value::String(_) => ("a string", "文字列"),
        Value::Array(_) => ("an array", "配列"),
        Value::Object(_) => ("an object", "オブジェクト"),
    }
}

/// Strings as they are, numbers and booleans as their JSON text, null or missing as empty, arrays and
/// objects as compact JSON (so nothing is lost, and the receiver can still parse them).
fn cell_text(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    }
}

/// Where a piece of text goes, for the message about a character Shift_JIS lacks.
enum Place<'a> {
    Cell { row: usize, column: &'a str },
    ColumnName(&'a str),
    Option(&'static str),
}

/// The text as it will be written: for Shift_JIS, with JIS-mapped characters moved to their cp932 twins
/// and checked to be encodable.
fn fit<'s, 'p>(s: &'s str, sjis: bool, place: impl FnOnce() -> Place<'p>) -> Result<Cow<'s, str>, CsvEncodeError> {
    if !sjis {
        return Ok(Cow::Borrowed(s));
    }
    let mapped = to_cp932_repertoire(s);
    match encode_sjis(&mapped) {
        Ok(_) => Ok(mapped),
        Err(c) => Err(unencodable(c, place())),
    }
}

fn unencodable(c: char, place: Place) -> CsvEncodeError {
    let code = format!("U+{:04X}", c as u32);
    let (where_en, where_ja) = match place {
        Place::Cell { row, column } => {
            (format!("in row {row}, column \"{column}\""), format!("{row} 行目の列「{column}」"))
        }
        Place::ColumnName(name) => (format!("in the column name \"{name}\""), format!("列名「{name}」")),
        Place::Option(name) => (format!("in {name}"), format!("{name} ")),
    };
    CsvEncodeError(Msg::new(
        format!(
            "cannot write the CSV in Shift_JIS: the character '{c}' ({code}) {where_en} has no Shift_JIS code; \
             remove it or use encoding: utf8"
        ),
        format!(
            "CSV を Shift_JIS で書けません: {where_ja}の文字「{c}」({code}) は Shift_JIS にありません。\
             取り除くか encoding: utf8 を使ってください"
        ),
    ))
}

fn write_failed(e: csv::Error) -> CsvEncodeError {
    CsvEncodeError(Msg::new(format!("could not write the CSV: {e}"), format!("CSV を書けませんでした: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::SHIFT_JIS;
    use serde_json::json;

    fn opts() -> CsvOutOptions {
        CsvOutOptions::default()
    }

    fn sjis() -> CsvOutOptions {
        CsvOutOptions { encoding: OutEncoding::ShiftJis, ..opts() }
    }

    fn utf8(rows: Value, o: &CsvOutOptions) -> String {
        String::from_utf8(encode_csv(&rows, o).unwrap()).unwrap()
    }

    fn err(rows: Value, o: &CsvOutOptions) -> Msg {
        encode_csv(&rows, o).unwrap_err().0
    }

    #[test]
    fn defaults_crlf_with_header_and_quoting() {
        let rows = json!([{"id": 1, "name": "山田"}, {"id": 2, "name": "a,b"}, {"id": 3, "name": "say \"hi\"\nbye"}]);
        assert_eq!(utf8(rows, &opts()), "id,name\r\n1,山田\r\n2,\"a,b\"\r\n3,\"say \"\"hi\"\"\nbye\"\r\n");
    }

    #[test]
    fn header_and_footer_lines() {
        let o =
            CsvOutOptions { header_line: Some("#IMPORT 社員".into()), footer_line: Some("#END".into()), ..opts() };
        assert_eq!(utf8(json!([{"a": "1"}]), &o), "#IMPORT 社員\r\na\r\n1\r\n#END\r\n");
        let o = CsvOutOptions { line_ending: LineEnding::Lf, header: false, ..o };
        assert_eq!(utf8(json!([{"a": "1"}, {"a": "2"}]), &o), "#IMPORT 社員\n1\n2\n#END\n");
    }

    #[test]
    fn shift_jis_round_trip() {
        let rows = json!([{"氏名": "山田太郎", "会社": "㈱髙﨑", "備考": "①№ ～"}]);
        let bytes = encode_csv(&rows, &CsvOutOptions { footer_line: Some("合計1件".into()), ..sjis() }).unwrap();
        let (text, _, had_errors) = SHIFT_JIS.decode(&bytes);
        assert!(!had_errors);
        assert_eq!(text, "氏名,会社,備考\r\n山田太郎,㈱髙﨑,①№ ～\r\n合計1件\r\n");
        // The exact cp932 bytes for ㈱ and 髙, as Windows writes them.
        let row = &bytes[bytes.iter().position(|b| *b == b'\n').unwrap() + 1..];
        assert!(row.windows(4).any(|w| w == [0x87, 0x8A, 0xFB, 0xFC]), "{row:02X?}");
    }

    #[test]
    fn shift_jis_unencodable_character_is_an_error() {
        let m = err(json!([{"id": 1, "name": "ok"}, {"id": 2, "name": "笑顔😀"}]), &sjis());
        assert_eq!(
            m.en,
            "cannot write the CSV in Shift_JIS: the character '😀' (U+1F600) in row 2, column \"name\" has no \
             Shift_JIS code; remove it or use encoding: utf8"
        );
        assert_eq!(
            m.ja,
            "CSV を Shift_JIS で書けません: 2 行目の列「name」の文字「😀」(U+1F600) は Shift_JIS にありません。\
             取り除くか encoding: utf8 を使ってください"
        );
        let m = err(json!({"店名": "𠮷野家"}), &sjis());
        assert!(m.en.contains("'𠮷' (U+20BB7) in row 1, column \"店名\""), "{}", m.en);
        let m = err(json!({"😀": "x"}), &sjis());
        assert!(m.en.contains("in the column name \"😀\""), "{}", m.en);
        let m = err(json!({"a": "x"}), &CsvOutOptions { footer_line: Some("end 😀".into()), ..sjis() });
        assert!(m.en.contains("'😀' (U+1F600) in csv.footer_line"), "{}", m.en);
        // The same rows are fine in UTF-8.
        assert_eq!(utf8(json!({"店名": "𠮷野家😀"}), &opts()), "店名\r\n𠮷野家😀\r\n");
    }

    #[test]
    fn shift_jis_wave_dash_is_written_as_cp932() {
        let bytes = encode_csv(&json!({"t": "10〜20"}), &sjis()).unwrap();
        assert_eq!(bytes, b"t\r\n10\x81\x6020\r\n");
        assert_eq!(SHIFT_JIS.decode(&bytes).0, "t\r\n10～20\r\n");
    }

    #[test]
    fn explicit_columns_order() {
        let o = CsvOutOptions { columns: Some(vec!["name".into(), "missing".into(), "id".into()]), ..opts() };
        let rows = json!([{"id": 1, "name": "a", "extra": "dropped"}]);
        assert_eq!(utf8(rows, &o), "name,missing,id\r\na,,1\r\n");
        assert_eq!(utf8(json!([]), &o), "name,missing,id\r\n");
    }

    #[test]
    fn first_seen_columns_across_rows() {
        let rows = json!([{"b": 1}, {"a": 2, "b": 3}, {"c": 4}]);
        assert_eq!(utf8(rows, &opts()), "b,a,c\r\n1,,\r\n3,2,\r\n,,4\r\n");
    }

    #[test]
    fn single_object_is_one_row() {
        assert_eq!(utf8(json!({"x": "1", "y": "2"}), &opts()), "x,y\r\n1,2\r\n");
    }

    #[test]
    fn value_kinds() {
        let rows = json!({"s": "t", "i": 42, "f": 1.5, "b": true, "n": null, "a": [1, "x"], "o": {"k": 1, "j": [2]}});
        assert_eq!(
            utf8(rows, &CsvOutOptions { header: false, ..opts() }),
            "t,42,1.5,true,,\"[1,\"\"x\"\"]\",\"{\"\"k\"\":1,\"\"j\"\":[2]}\"\r\n"
        );
    }

    #[test]
    fn bom_and_tab() {
        let o = CsvOutOptions { encoding: OutEncoding::Utf8Bom, delimiter: '\t', ..opts() };
        assert_eq!(encode_csv(&json!({"a": "1", "b": "x,y"}), &o).unwrap(), b"\xEF\xBB\xBFa\tb\r\n1\tx,y\r\n");
    }

    #[test]
    fn no_columns_writes_only_the_free_lines() {
        let o = CsvOutOptions { header_line: Some("H".into()), ..opts() };
        assert_eq!(utf8(json!([{}, {}]), &o), "H\r\n");
        assert_eq!(utf8(json!([]), &opts()), "");
    }

    #[test]
    fn rows_that_are_not_objects() {
        let m = err(json!([{"a": 1}, "x"]), &opts());
        assert_eq!(m.en, "CSV row 2 must be an object, but it is a string");
        assert_eq!(m.ja, "CSV の 2 行目はオブジェクトでなければなりませんが、文字列です");
        let m = err(json!(3), &opts());
        assert_eq!(m.en, "CSV rows must be an array of objects or one object, but got a number");
        assert!(err(json!(null), &opts()).en.ends_with("but got null"));
        let m = err(json!({"a": 1}), &CsvOutOptions { delimiter: 'é', ..opts() });
        assert!(m.en.starts_with("csv.delimiter 'é' is not usable"), "{}", m.en);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for(&sjis()), "text/csv; charset=Shift_JIS");
        assert_eq!(content_type_for(&opts()), "text/csv; charset=utf-8");
        let bom = CsvOutOptions { encoding: OutEncoding::Utf8Bom, ..opts() };
        assert_eq!(content_type_for(&bom), "text/csv; charset=utf-8");
    }
}
