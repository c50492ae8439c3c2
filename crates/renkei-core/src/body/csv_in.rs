//! Reading an inbound CSV body into a JSON array of objects, one per data row.
//!
//! It decodes (UTF-8, UTF-8 with BOM or Shift_JIS / cp932), drops the configured header and footer
//! lines, and checks that every row has as many fields as the header, naming the physical line of the
//! original file when one does not. It never pads or truncates a ragged row, never converts field
//! values (everything stays a string), and never splits the result into events.

use std::collections::HashSet;

use encoding_rs::Encoding;
use serde_json::{Map, Value};

use super::encoding::decode_csv;
use super::{delimiter_byte, BodyError, CsvInOptions};
use crate::message::Msg;

/// Where the column names came from, for the ragged-row message.
#[derive(Clone, Copy)]
enum NamesFrom {
    Header,
    Columns,
    FirstRow,
}

/// `declared` is the Content-Type charset, already resolved, and only passed when `csv.encoding` is auto.
pub(crate) fn parse_csv(
    bytes: &[u8],
    declared: Option<&'static Encoding>,
    opts: &CsvInOptions,
) -> Result<Value, BodyError> {
    let delimiter = delimiter_byte(opts.delimiter).map_err(BodyError::Malformed)?;
    let text = decode_csv(bytes, declared, opts.encoding)?;
    let (start, end) = data_range(&text, opts.skip_lines, opts.skip_footer);
    let data = &text[start..end];
    // Line numbers are physical lines of the original file, so the skipped lines count too.
    let lines = LineIndex::new(data, text[..start].matches('\n').count());

    // flexible: a ragged row is reported by us, with its line, instead of csv's record index.
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(data.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut names: Option<(Vec<String>, NamesFrom)> =
        opts.columns.as_ref().map(|c| (unique_names(c.iter().map(String::as_str)), NamesFrom::Columns));
    let mut header_pending = opts.header;
    let mut rows = Vec::new();
    let mut searched_to = 0;
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            BodyError::Malformed(Msg::new(
                format!("the CSV body could not be read near line {}: {e}", lines.line_of(searched_to)),
                format!("CSV の本文を読めませんでした（{} 行目付近）: {e}", lines.line_of(searched_to)),
            ))
        })?;
        if !more {
            break;
        }
        // csv's own line counter skips blank lines, so the record's line is found from where the
        // previous record ended: csv skips line breaks (blank lines) before a record and nothing else.
        let record_start = skip_line_breaks(data, searched_to);
        searched_to = (reader.position().byte() as usize).max(record_start);
        let line = lines.line_of(record_start);

        if std::mem::take(&mut header_pending) {
            match &names {
                Some((cols, from)) => check_width(record.len(), cols.len(), *from, line)?,
                None => names = Some((unique_names(record.iter()), NamesFrom::Header)),
            }
            continue;
        }
        let (cols, from) = names.get_or_insert_with(|| {
            let generated: Vec<String> = (1..=record.len()).map(|i| format!("col{i}")).collect();
            (generated, NamesFrom::FirstRow)
        });
        check_width(record.len(), cols.len(), *from, line)?;
        let row: Map<String, Value> =
            cols.iter().zip(record.iter()).map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect();
        rows.push(Value::Object(row));
    }
    Ok(Value::Array(rows))
}

/// The byte range of `text` left after dropping `skip_lines` physical lines at the start, trailing
/// empty lines, and `skip_footer` non-empty lines at the end. Lines are counted before CSV parsing
/// because header and footer lines are free text that need not be valid CSV (an odd quote in them would
/// otherwise swallow the rows).
fn data_range(text: &str, skip_lines: usize, skip_footer: usize) -> (usize, usize) {
    let mut start = 0;
    for _ in 0..skip_lines {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => start = text.len(),
        }
    }
    let mut end = trim_line_breaks(text, start, text.len());
    for _ in 0..skip_footer {
        end = text[start..end].rfind('\n').map_or(start, |i| start + i);
        end = trim_line_breaks(text, start, end);
    }
    (start, end)
}

fn trim_line_breaks(text: &str, start: usize, mut end: usize) -> usize {
    while end > start && matches!(text.as_bytes()[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    end
}

fn skip_line_breaks(data: &str, mut at: usize) -> usize {
    while at < data.len() && matches!(data.as_bytes()[at], b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// Maps a byte offset in the parsed data to a 1-based physical line of the original text.
struct LineIndex {
    newlines: Vec<usize>,
    lines_before: usize,
}

impl LineIndex {
    fn new(data: &str, lines_before: usize) -> Self {
        LineIndex { newlines: data.match_indices('\n').map(|(i, _)| i).collect(), lines_before }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.lines_before + self.newlines.partition_point(|&n| n < offset) + 1
    }
}

/// Trimmed names; an empty one becomes `colN` (its 1-based position) and a repeated one gets `_2`, `_3`,
/// so no field is overwritten by another with the same name.
fn unique_names<'a>(raw: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for (i, name) in raw.into_iter().enumerate() {
        let base = match name.trim() {
            "" => format!("col{}", i + 1),
            t => t.to_string(),
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while seen.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        seen.insert(candidate.clone());
        names.push(candidate);
    }
    names
}

fn check_width(found: usize, expected: usize, from: NamesFrom, line: usize) -> Result<(), BodyError> {
    if found == expected {
        return Ok(());
    }
    let (en, ja) = match from {
        NamesFrom::Header => ("the header has", "ヘッダーは"),
        NamesFrom::Columns => ("csv.columns names", "csv.columns は"),
        NamesFrom::FirstRow => ("the first row has", "最初の行は"),
    };
    Err(BodyError::Malformed(Msg::new(
        format!("CSV line {line} has {found} field{}, but {en} {expected}", if found == 1 { "" } else { "s" }),
        format!("CSV の {line} 行目は {found} 項目ですが、{ja} {expected} 項目です"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::encoding::UTF8_BOM;
    use crate::body::{parse_body, BodyFormat, TextEncoding};
    use encoding_rs::SHIFT_JIS;
    use serde_json::json;

    fn opts() -> CsvInOptions {
        CsvInOptions::default()
    }

    fn parse(bytes: &[u8], opts: &CsvInOptions) -> Result<Value, BodyError> {
        parse_csv(bytes, None, opts)
    }

    fn malformed(r: Result<Value, BodyError>) -> Msg {
        match r {
            Err(BodyError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    const SJIS_TEXT: &str = "氏名,会社,備考\r\n山田太郎,㈱髙﨑商事,①№\r\n";

    fn sjis_expected() -> Value {
        json!([{"氏名": "山田太郎", "会社": "㈱髙﨑商事", "備考": "①№"}])
    }

    #[test]
    fn utf8_rows_keep_header_order() {
        let v = parse("name,age\r\n山田太郎,30\r\n佐藤,25\r\n".as_bytes(), &opts()).unwrap();
        assert_eq!(v, json!([{"name": "山田太郎", "age": "30"}, {"name": "佐藤", "age": "25"}]));
        assert_eq!(v[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["name", "age"]);
    }

    #[test]
    fn utf8_bom_is_stripped() {
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice("id,名前\n1,a\n".as_bytes());
        assert_eq!(parse(&bytes, &opts()).unwrap(), json!([{"id": "1", "名前": "a"}]));
        let utf8 = CsvInOptions { encoding: TextEncoding::Utf8, ..opts() };
        assert_eq!(parse(&bytes, &utf8).unwrap(), json!([{"id": "1", "名前": "a"}]));
    }

    #[test]
    fn shift_jis_auto_detected() {
        let (bytes, _, unmappable) = SHIFT_JIS.encode(SJIS_TEXT);
        assert!(!unmappable);
        assert!(std::str::from_utf8(&bytes).is_err(), "the test needs bytes that are not UTF-8");
        assert_eq!(parse(&bytes, &opts()).unwrap(), sjis_expected());
    }

    #[test]
    fn shift_jis_configured() {
        let (bytes, _, _) = SHIFT_JIS.encode(SJIS_TEXT);
        let sjis = CsvInOptions { encoding: TextEncoding::ShiftJis, ..opts() };
        assert_eq!(parse(&bytes, &sjis).unwrap(), sjis_expected());
        // Bytes that are also valid UTF-8 are still read as Shift_JIS when configured: "ｱ" is 0xB1.
        assert_eq!(parse(b"k\n\xB1\n", &sjis).unwrap(), json!([{"k": "ｱ"}]));
    }

    #[test]
    fn shift_jis_declared_by_content_type() {
        let (bytes, _, _) = SHIFT_JIS.encode(SJIS_TEXT);
        let p = parse_body(Some("text/csv; charset=Shift_JIS"), &bytes, BodyFormat::Auto, &opts()).unwrap();
        assert_eq!((p.value, p.kind), (sjis_expected(), BodyFormat::Csv));
        // An explicit csv.encoding beats the sender's label.
        let utf8 = CsvInOptions { encoding: TextEncoding::Utf8, ..opts() };
        let p = parse_body(Some("text/csv; charset=Shift_JIS"), "名前\n値\n".as_bytes(), BodyFormat::Csv, &utf8);
        assert_eq!(p.unwrap().value, json!([{"名前": "値"}]));
    }

    #[test]
    fn invalid_bytes_name_the_line() {
        let (bytes, _, _) = SHIFT_JIS.encode("name\r\n山田\r\n");
        let utf8 = CsvInOptions { encoding: TextEncoding::Utf8, ..opts() };
        let m = malformed(parse(&bytes, &utf8));
        assert_eq!(m.en, "the CSV body is not valid UTF-8: bad byte at line 2, byte offset 6");
        assert_eq!(m.ja, "CSV の本文が UTF-8 として正しくありません（2 行目、バイト位置 6）");
        let m = malformed(parse(b"a\n\x81\n", &opts()));
        assert!(
            m.en.starts_with(
                "the CSV body is neither UTF-8 nor Shift_JIS: bad byte for Shift_JIS at line 2, byte offset 2"
            ),
            "{}",
            m.en
        );
    }

    #[test]
    fn quoted_fields_with_comma_newline_and_quote() {
        let text = "a,b,c\r\n\"x, y\",\"line1\r\nline2\",\"say \"\"hi\"\"\"\r\n";
        let v = parse(text.as_bytes(), &opts()).unwrap();
        assert_eq!(v, json!([{"a": "x, y", "b": "line1\r\nline2", "c": "say \"hi\""}]));
    }

    #[test]
    fn skip_lines_and_footer() {
        let text = "\"働くDB export (unbalanced quote\r\nid,name\r\n1,a\r\n2,\"b\r\nc\"\r\nTOTAL,2,rows\r\n\r\n\r\n";
        let o = CsvInOptions { skip_lines: 1, skip_footer: 1, ..opts() };
        let v = parse(text.as_bytes(), &o).unwrap();
        assert_eq!(v, json!([{"id": "1", "name": "a"}, {"id": "2", "name": "b\r\nc"}]));
        // Without skip_footer the footer is a ragged row on its physical line (6: the quoted field spans 4-5).
        let o = CsvInOptions { skip_lines: 1, ..opts() };
        assert_eq!(malformed(parse(text.as_bytes(), &o)).en, "CSV line 6 has 3 fields, but the header has 2");
        // Skipping more lines than there are leaves no rows.
        let o = CsvInOptions { skip_lines: 10, skip_footer: 10, ..opts() };
        assert_eq!(parse(text.as_bytes(), &o).unwrap(), json!([]));
    }

    #[test]
    fn ragged_row_names_its_physical_line() {
        let text = "# export\nid,name\n1,\"multi\nline\"\n\n2\n";
        let o = CsvInOptions { skip_lines: 1, ..opts() };
        let m = malformed(parse(text.as_bytes(), &o));
        assert_eq!(m.en, "CSV line 6 has 1 field, but the header has 2");
        assert_eq!(m.ja, "CSV の 6 行目は 1 項目ですが、ヘッダーは 2 項目です");
        let m = malformed(parse(b"a,b\r\n\r\n1,2\r\n\r\n\r\n3,4,5\r\n", &opts()));
        assert_eq!(m.en, "CSV line 6 has 3 fields, but the header has 2");
    }

    #[test]
    fn duplicate_and_empty_header_names() {
        let v = parse(b"a, a ,,a,a_2\n1,2,3,4,5\n", &opts()).unwrap();
        assert_eq!(v, json!([{"a": "1", "a_2": "2", "col3": "3", "a_3": "4", "a_2_2": "5"}]));
        assert_eq!(v[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["a", "a_2", "col3", "a_3", "a_2_2"]);
    }

    #[test]
    fn tab_delimiter() {
        let o = CsvInOptions { delimiter: '\t', ..opts() };
        assert_eq!(parse(b"a\tb\n1\t2,3\n", &o).unwrap(), json!([{"a": "1", "b": "2,3"}]));
    }

    #[test]
    fn no_header_generated_or_configured_names() {
        let o = CsvInOptions { header: false, ..opts() };
        assert_eq!(parse(b"1,2\n3,4\n", &o).unwrap(), json!([{"col1": "1", "col2": "2"}, {"col1": "3", "col2": "4"}]));
        assert_eq!(malformed(parse(b"1,2\n3\n", &o)).en, "CSV line 2 has 1 field, but the first row has 2");
        let o = CsvInOptions { header: false, columns: Some(vec!["x".into(), "y".into()]), ..opts() };
        assert_eq!(parse(b"1,2\n", &o).unwrap(), json!([{"x": "1", "y": "2"}]));
        assert_eq!(malformed(parse(b"1,2,3\n", &o)).en, "CSV line 1 has 3 fields, but csv.columns names 2");
        // With a header row, columns rename it.
        let o = CsvInOptions { columns: Some(vec!["x".into(), "y".into()]), ..opts() };
        assert_eq!(parse(b"a,b\n1,2\n", &o).unwrap(), json!([{"x": "1", "y": "2"}]));
    }

    #[test]
    fn empty_bodies_and_blank_lines() {
        assert_eq!(parse(b"", &opts()).unwrap(), json!([]));
        assert_eq!(parse(b"a,b\r\n", &opts()).unwrap(), json!([]));
        assert_eq!(parse(b"\r\na,b\r\n\r\n1,2\r\n\r\n", &opts()).unwrap(), json!([{"a": "1", "b": "2"}]));
        // A row of empty fields is data, not a blank line.
        assert_eq!(parse(b"a,b\n,\n", &opts()).unwrap(), json!([{"a": "", "b": ""}]));
    }

    #[test]
    fn bad_delimiter_is_refused() {
        let o = CsvInOptions { delimiter: '、', ..opts() };
        assert!(malformed(parse(b"a", &o)).en.starts_with("csv.delimiter '、' is not usable"));
    }

    #[test]
    fn data_range_counts_physical_lines() {
        let t = "h1\nh2\nd1\nd2\n\nf1\n\n";
        assert_eq!(&t[data_range_pair(t, 2, 1)], "d1\nd2");
        assert_eq!(&t[data_range_pair(t, 0, 0)], "h1\nh2\nd1\nd2\n\nf1");
        assert_eq!(&t[data_range_pair(t, 0, 9)], "");
    }

    fn data_range_pair(t: &str, skip: usize, footer: usize) -> std::ops::Range<usize> {
        let (a, b) = data_range(t, skip, footer);
        a..b
    }
}
