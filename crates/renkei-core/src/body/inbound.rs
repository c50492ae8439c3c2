//! Reading an inbound webhook body: choosing the format from the Content-Type and parsing JSON and text
//! (form data lives in `form`, CSV in `csv_in`).
//!
//! It never rejects a body for its content type when the source's config names a format (the config
//! knows better than a mislabelling sender), never drops bytes (text that does not decode is kept as
//! base64), and never reads anything but the bytes it is given.

use base64::Engine as _;
use encoding_rs::{Encoding, UTF_8};
use serde_json::{Map, Value};

use super::encoding::{decode_error, decode_with_bom, encoding_for_label};
use super::{csv_in, form, BodyError, BodyFormat, CsvInOptions, Parsed, TextEncoding};
use crate::message::Msg;

/// A Content-Type header, split into the lowercase media type and its `charset` parameter.
struct ContentType<'a> {
    raw: &'a str,
    essence: String,
    charset: Option<&'a str>,
}

impl<'a> ContentType<'a> {
    fn parse(raw: &'a str) -> Self {
        let mut parts = raw.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let charset = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches('"'))
        });
        ContentType { raw: raw.trim(), essence, charset }
    }
}

/// Reads `bytes` as `format`, or as the Content-Type says when `format` is [`BodyFormat::Auto`].
pub fn parse_body(
    content_type: Option<&str>,
    bytes: &[u8],
    format: BodyFormat,
    csv: &CsvInOptions,
) -> Result<Parsed, BodyError> {
    let ct = content_type.map(ContentType::parse);
    let kind = match format {
        BodyFormat::Auto => detect(ct.as_ref())?,
        explicit => explicit,
    };
    let mut text = None;
    let value = match kind {
        BodyFormat::Json => {
            let (value, json) = parse_json(bytes, declared_charset(ct.as_ref())?)?;
            text = written_as_renkei_would(&json).then_some(json);
            value
        }
        BodyFormat::Form => form::parse_form(bytes, declared_charset(ct.as_ref())?)?,
        BodyFormat::Text => parse_text(bytes, declared_charset(ct.as_ref())?),
        BodyFormat::Csv => {
            // An explicit csv.encoding is the source's config and beats the sender's label.
            let declared = match csv.encoding {
                TextEncoding::Auto => declared_charset(ct.as_ref())?,
                _ => None,
            };
            csv_in::parse_csv(bytes, declared, csv)?
        }
        BodyFormat::Auto => unreachable!("detect never answers Auto"),
    };
    Ok(Parsed { value, kind, text })
}

/// Picks the format from the media type (case and parameters ignored).
fn detect(ct: Option<&ContentType>) -> Result<BodyFormat, BodyError> {
    let Some(ct) = ct else {
        return Ok(BodyFormat::Text);
    };
    let t = ct.essence.as_str();
    let (top, sub) = t.split_once('/').unwrap_or((t, ""));
    let format = match t {
        "" => BodyFormat::Text,
        "application/json" | "text/json" => BodyFormat::Json,
        _ if sub.ends_with("+json") => BodyFormat::Json,
        "application/x-www-form-urlencoded" => BodyFormat::Form,
        "text/csv" | "application/csv" | "text/comma-separated-values" | "application/vnd.ms-excel" => BodyFormat::Csv,
        "application/octet-stream" | "application/pdf" | "application/zip" => return Err(unsupported(ct)),
        _ if matches!(top, "image" | "audio" | "video" | "multipart") => return Err(unsupported(ct)),
        // text/*, application/xml, */*+xml, and types renkei does not know: text keeps any bytes (as
        // base64 when they do not decode), so reading them as text can lose nothing.
        _ => BodyFormat::Text,
    };
    Ok(format)
}

fn unsupported(ct: &ContentType) -> BodyError {
    BodyError::UnsupportedType(Msg::new(
        format!(
            "unsupported Content-Type `{}`: renkei reads JSON (application/json, */*+json), form data \
             (application/x-www-form-urlencoded), CSV (text/csv) and text (text/*, application/xml); \
             set `format:` on the source to read this body anyway",
            ct.raw
        ),
        format!(
            "Content-Type `{}` には対応していません。受け付けるのは JSON（application/json、*/*+json）、\
             フォームデータ（application/x-www-form-urlencoded）、CSV（text/csv）、テキスト（text/*、\
             application/xml）です。この本文を読むにはソースに `format:` を指定してください",
            ct.raw
        ),
    ))
}

/// The encoding named by `charset=`, if any; a name renkei cannot decode is a 415, not a guess.
fn declared_charset(ct: Option<&ContentType>) -> Result<Option<&'static Encoding>, BodyError> {
    let Some((ct, label)) = ct.and_then(|ct| ct.charset.map(|l| (ct, l))) else {
        return Ok(None);
    };
    match encoding_for_label(label) {
        Some(enc) => Ok(Some(enc)),
        None => Err(BodyError::UnsupportedType(Msg::new(
            format!("unsupported charset `{label}` in Content-Type `{}`: use utf-8 or Shift_JIS", ct.raw),
            format!(
                "Content-Type `{}` の文字コード `{label}` には対応していません。utf-8 か Shift_JIS を使ってください",
                ct.raw
            ),
        ))),
    }
}

/// Any JSON value. JSON is UTF-8 by RFC 8259, but a declared charset is honoured, and a UTF-8 BOM
/// (which Windows tools add) is tolerated.
fn parse_json(bytes: &[u8], declared: Option<&'static Encoding>) -> Result<(Value, String), BodyError> {
    let text = decode_with_bom(declared.unwrap_or(UTF_8), bytes)
        .map_err(|f| decode_error("the JSON body", "JSON の本文", f))?;
    if text.trim().is_empty() {
        return Err(BodyError::Malformed(Msg::new(
            "the body is empty, but this source expects JSON",
            "本文が空です。このソースは JSON を受け付けます",
        )));
    }
    let value = serde_json::from_str(&text).map_err(|e| {
        // serde_json's Display appends " at line L column C"; the position goes in front instead.
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&suffix).unwrap_or(&full);
        BodyError::Malformed(Msg::new(
            format!("invalid JSON at line {}, column {}: {what}", e.line(), e.column()),
            format!("JSON の形式が正しくありません（{} 行 {} 列）: {what}", e.line(), e.column()),
        ))
    })?;
    Ok((value, text))
}

/// Whether valid JSON `text` reads as renkei would write its value (`serde_json::to_string`) wherever a search
/// can tell: no space between tokens, and no `\u` or `\/` escape (renkei writes the character itself, so an
/// event sent as `"\u5c71\u7530"` must be stored as `"山田"` for a search of the history to find it). A
/// number's form (`1.50`, `1e3`) and a repeated key may still differ; the stored text parses to the same value.
///
/// It may say no to text that is written so (a string holding `", "` or `\\u`): the body is then written out,
/// as any other. It never says yes to text that is not: a tab, newline or carriage return can only stand between
/// tokens (inside a string JSON escapes them), and a space between tokens always touches a bracket, brace, comma
/// or colon, or an end of the text, since two values never stand side by side. A few passes of `memchr`, no
/// state per byte: a byte-by-byte walk cost ~12 instructions a byte, more than writing the value out.
fn written_as_renkei_would(text: &str) -> bool {
    let b = text.as_bytes();
    let structural = |i: Option<usize>| i.and_then(|i| b.get(i)).is_none_or(|c| b"{}[],:".contains(c));
    !text.contains('\n')
        && !text.contains('\r')
        && !text.contains('\t')
        && !text.contains("\\u")
        && !text.contains("\\/")
        && !text.match_indices(' ').any(|(i, _)| structural(i.checked_sub(1)) || structural(Some(i + 1)))
}

/// Text as a JSON string; bytes that do not decode are kept as `{"base64": ...}`.
fn parse_text(bytes: &[u8], declared: Option<&'static Encoding>) -> Value {
    match decode_with_bom(declared.unwrap_or(UTF_8), bytes) {
        Ok(text) => Value::String(text),
        Err(_) => {
            let mut m = Map::new();
            m.insert("base64".into(), base64::engine::general_purpose::STANDARD.encode(bytes).into());
            Value::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::SHIFT_JIS;
    use serde_json::json;

    fn parse(ct: Option<&str>, body: &[u8]) -> Result<Parsed, BodyError> {
        parse_body(ct, body, BodyFormat::Auto, &CsvInOptions::default())
    }

    fn parse_as(format: BodyFormat, ct: Option<&str>, body: &[u8]) -> Result<Parsed, BodyError> {
        parse_body(ct, body, format, &CsvInOptions::default())
    }

    fn malformed(r: Result<Parsed, BodyError>) -> Msg {
        match r {
            Err(BodyError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn detect_by_content_type() {
        let cases = [
            ("application/json", BodyFormat::Json),
            ("Application/JSON; charset=UTF-8", BodyFormat::Json),
            ("application/vnd.api+json", BodyFormat::Json),
            ("text/json", BodyFormat::Json),
            ("application/x-www-form-urlencoded", BodyFormat::Form),
            ("text/csv; charset=utf-8", BodyFormat::Csv),
            ("application/csv", BodyFormat::Csv),
            ("text/comma-separated-values", BodyFormat::Csv),
            ("application/vnd.ms-excel", BodyFormat::Csv),
            ("text/plain", BodyFormat::Text),
            ("text/xml", BodyFormat::Text),
            ("application/xml", BodyFormat::Text),
            ("application/atom+xml", BodyFormat::Text),
            ("", BodyFormat::Text),
        ];
        for (ct, want) in cases {
            let ct = ContentType::parse(ct);
            assert_eq!(detect(Some(&ct)).unwrap(), want, "{}", ct.raw);
        }
        assert_eq!(detect(None).unwrap(), BodyFormat::Text);
    }

    #[test]
    fn binary_types_are_415() {
        for ct in [
            "image/png",
            "audio/mpeg",
            "video/mp4",
            "application/octet-stream",
            "application/pdf",
            "application/zip",
            "multipart/form-data; boundary=x",
        ] {
            let err = parse(Some(ct), b"x").unwrap_err();
            assert_eq!(err.http_status(), 415, "{ct}");
            let m = err.msg();
            assert!(m.en.starts_with(&format!("unsupported Content-Type `{ct}`")), "{}", m.en);
            assert!(m.en.contains("application/json") && m.en.contains("text/csv"), "{}", m.en);
            assert!(m.ja.contains(&format!("Content-Type `{ct}` には対応していません")), "{}", m.ja);
        }
    }

    /// A JSON body's text is kept only when it is written as renkei would write it (`Parsed::text`).
    #[test]
    fn a_json_text_is_kept_only_when_written_as_renkei_would() {
        let kept = |body: &str| parse(Some("application/json"), body.as_bytes()).unwrap().text;
        for same in [r#"{"a":1,"名前":"山田","s":"a \"q\" \\ \n"}"#, "[1,2]", r#""x y""#] {
            let p = parse(Some("application/json"), same.as_bytes()).unwrap();
            assert_eq!(p.text.as_deref(), Some(same));
            assert_eq!(serde_json::to_string(&p.value).unwrap(), same, "renkei writes it the same");
        }
        for other in [
            r#"{"a": 1}"#,
            "{\"a\":1}\n",
            r#"{"n":"\u5c71\u7530"}"#,
            r#"{"u":"http:\/\/x"}"#,
            " [1]",
            r#"{"a" :1}"#,
            "[1 ,2]",
            "[[1] ]",
            "{\"a\":\t1}",
        ] {
            assert_eq!(kept(other), None, "{other}");
        }
        // Said no to, though written so (the body is then written out): an escaped backslash before a `u`.
        assert_eq!(kept(r#"{"s":"\\u"}"#), None);
        assert_eq!(parse(Some("text/plain"), b"x").unwrap().text, None);
    }

    #[test]
    fn explicit_format_wins_over_content_type() {
        let p = parse_as(BodyFormat::Json, Some("text/plain"), br#"{"a":1}"#).unwrap();
        assert_eq!(p, Parsed { value: json!({"a": 1}), kind: BodyFormat::Json, text: Some(r#"{"a":1}"#.into()) });
        let p = parse_as(BodyFormat::Text, Some("image/png"), b"\x89PNG").unwrap();
        assert_eq!(p.kind, BodyFormat::Text);
        assert_eq!(p.value, json!({"base64": "iVBORw=="}));
        let p = parse_as(BodyFormat::Form, Some("application/json"), b"a=1").unwrap();
        assert_eq!(p.value, json!({"a": "1"}));
    }

    #[test]
    fn json_object_array_and_scalar() {
        let p = parse(Some("application/json"), br#"{"b":1,"a":[true,null]}"#).unwrap();
        assert_eq!(p.kind, BodyFormat::Json);
        assert_eq!(p.value, json!({"b": 1, "a": [true, null]}));
        // preserve_order: the sender's key order survives.
        assert_eq!(p.value.as_object().unwrap().keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(parse(Some("application/json"), b"[1,2]").unwrap().value, json!([1, 2]));
        assert_eq!(parse(Some("application/json"), b" \"x\" ").unwrap().value, json!("x"));
    }

    #[test]
    fn json_malformed_names_line_and_column() {
        let m = malformed(parse(Some("application/json"), b"{\"a\": 1,\n \"b\": 2\n \"c\": 3}"));
        assert_eq!(m.en, "invalid JSON at line 3, column 2: expected `,` or `}`");
        assert_eq!(m.ja, "JSON の形式が正しくありません（3 行 2 列）: expected `,` or `}`");
    }

    #[test]
    fn json_empty_is_malformed() {
        for body in [&b""[..], b"  \r\n"] {
            let m = malformed(parse(Some("application/json"), body));
            assert_eq!(m.en, "the body is empty, but this source expects JSON");
        }
    }

    #[test]
    fn json_with_bom_and_declared_sjis() {
        let mut body = b"\xEF\xBB\xBF".to_vec();
        body.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(parse(Some("application/json"), &body).unwrap().value, json!({"a": 1}));
        let (sjis, _, _) = SHIFT_JIS.encode(r#"{"name":"山田太郎"}"#);
        let p = parse(Some("application/json; charset=Shift_JIS"), &sjis).unwrap();
        assert_eq!(p.value, json!({"name": "山田太郎"}));
        let m = malformed(parse(Some("application/json"), &sjis));
        assert_eq!(m.en, "the JSON body is not valid UTF-8: bad byte at line 1, byte offset 9");
    }

    #[test]
    fn text_with_and_without_charset() {
        let p = parse(Some("text/plain"), "こんにちは".as_bytes()).unwrap();
        assert_eq!(p, Parsed { value: json!("こんにちは"), kind: BodyFormat::Text, text: None });
        assert_eq!(parse(None, b"hello").unwrap().value, json!("hello"));
        let (sjis, _, _) = SHIFT_JIS.encode("株式会社①");
        let p = parse(Some("text/plain; charset=\"shift_jis\""), &sjis).unwrap();
        assert_eq!(p.value, json!("株式会社①"));
        let p = parse(Some("text/plain; charset=windows-31j"), &sjis).unwrap();
        assert_eq!(p.value, json!("株式会社①"));
    }

    #[test]
    fn text_invalid_is_kept_as_base64() {
        let p = parse(Some("text/plain"), b"ab\xff\xfe").unwrap();
        assert_eq!(p.value, json!({"base64": "YWL//g=="}));
        let p = parse(None, b"a\x80").unwrap();
        assert_eq!(p.value, json!({"base64": "YYA="}));
        // A declared charset that the bytes do not match is kept too.
        let p = parse(Some("text/plain; charset=shift_jis"), b"\x81").unwrap();
        assert_eq!(p.value, json!({"base64": "gQ=="}));
    }

    #[test]
    fn text_bom_decides() {
        // A UTF-16LE BOM is stronger evidence than the missing charset.
        assert_eq!(parse(None, b"\xff\xfea\x00").unwrap().value, json!("a"));
        assert_eq!(parse(None, b"\xEF\xBB\xBFa").unwrap().value, json!("a"));
    }

    #[test]
    fn unknown_charset_is_415() {
        let err = parse(Some("text/plain; charset=klingon"), b"x").unwrap_err();
        assert_eq!(err.http_status(), 415);
        assert_eq!(
            err.msg().en,
            "unsupported charset `klingon` in Content-Type `text/plain; charset=klingon`: use utf-8 or Shift_JIS"
        );
    }

    #[test]
    fn content_type_parameters() {
        let ct = ContentType::parse(" Text/CSV ; header=present; CHARSET=\"Shift_JIS\" ");
        assert_eq!(ct.essence, "text/csv");
        assert_eq!(ct.charset, Some("Shift_JIS"));
        assert_eq!(ContentType::parse("text/csv").charset, None);
    }
}
