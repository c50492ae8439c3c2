//! Shared by the body_* targets: the first bytes of the input choose the Content-Type and the CSV
//! options, the rest is the body.

use renkei_core::body::{BodyError, BodyFormat, CsvInOptions, Parsed, Split, TextEncoding};

/// Content-Type headers a sender might send, including odd spellings, unknown and unusable charsets.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(""),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/json; charset=Shift_JIS"),
    Some("application/vnd.api+json"),
    Some("application/x-www-form-urlencoded"),
    Some("application/x-www-form-urlencoded; charset=Shift_JIS"),
    Some("application/x-www-form-urlencoded; charset=\"windows-31j\""),
    Some("text/csv"),
    Some("text/csv; charset=utf-8"),
    Some("text/csv; charset=shift_jis"),
    Some("text/csv; charset=cp932"),
    Some(" Text/CSV ; header=present; CHARSET=\"Shift_JIS\" "),
    Some("application/vnd.ms-excel"),
    Some("text/plain"),
    Some("text/plain; charset=euc-jp"),
    Some("text/plain; charset=utf-16le"),
    Some("text/plain; charset=iso-2022-jp"),
    Some("text/plain; charset=klingon"),
    Some("text/plain; charset=replacement"),
    Some("text/plain; charset="),
    Some("text/xml; charset=utf-8"),
    Some("application/octet-stream"),
    Some("image/png"),
    Some("multipart/form-data; boundary=x"),
    Some(";;;charset=utf-8;charset=sjis"),
];

/// Splits the input into (content type, body); one selector byte.
pub fn content_type(data: &[u8]) -> Option<(Option<&'static str>, &[u8])> {
    let (&sel, body) = data.split_first()?;
    Some((CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()], body))
}

/// CSV options from two selector bytes (all combinations a config can express, plus unusable delimiters).
pub fn csv_options(a: u8, b: u8) -> CsvInOptions {
    const DELIMITERS: [char; 8] = [',', '\t', ';', '|', ' ', '"', '\n', '、'];
    let encoding = match a % 3 {
        0 => TextEncoding::Auto,
        1 => TextEncoding::Utf8,
        _ => TextEncoding::ShiftJis,
    };
    let columns = match (a / 3) % 4 {
        0 => None,
        1 => Some(vec!["a".to_string(), "b".to_string()]),
        2 => Some(vec![String::new(), "x".into(), "x".into(), " x ".into()]),
        _ => Some(Vec::new()),
    };
    CsvInOptions {
        encoding,
        split: if a & 0x80 != 0 { Split::Rows } else { Split::None },
        delimiter: DELIMITERS[(b & 7) as usize],
        header: b & 8 == 0,
        columns,
        skip_lines: ((b >> 4) & 3) as usize,
        skip_footer: ((b >> 6) & 3) as usize,
    }
}

/// What must hold for any result of an explicit format.
pub fn check(format: BodyFormat, result: &Result<Parsed, BodyError>) {
    match result {
        Ok(p) => assert_eq!(p.kind, format, "parse_body answered another format than the one asked for"),
        Err(e) => {
            // Both variants carry a message in both languages.
            let m = e.msg();
            assert!(!m.en.is_empty() && !m.ja.is_empty(), "empty error message: {e:?}");
            let _ = e.http_status();
        }
    }
}
