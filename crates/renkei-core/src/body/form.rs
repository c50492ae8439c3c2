//! Reading an application/x-www-form-urlencoded body into a JSON object.
//!
//! Percent-decoding happens on bytes and the bytes are then decoded with the declared charset, so a
//! Shift_JIS form (still common from older Japanese systems) reads correctly. It never decodes lossily:
//! a field that is not valid in its charset is a 400 naming the field and its byte offset.

use encoding_rs::{Encoding, UTF_8};
use indexmap::IndexMap;
use serde_json::Value;

use super::encoding::display_name;
use super::BodyError;
use crate::message::Msg;

/// application/x-www-form-urlencoded into an object; a repeated key becomes a list. Percent-decoding is
/// done here on bytes because `form_urlencoded` decodes as UTF-8 lossily, which would turn a Shift_JIS
/// form into U+FFFD.
pub(crate) fn parse_form(bytes: &[u8], declared: Option<&'static Encoding>) -> Result<Value, BodyError> {
    let enc = declared.unwrap_or(UTF_8);
    let mut fields: IndexMap<String, Vec<String>> = IndexMap::new();
    let mut offset = 0;
    for pair in bytes.split(|b| *b == b'&') {
        let start = offset;
        offset += pair.len() + 1;
        if pair.is_empty() {
            continue;
        }
        let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let key = decode_component(enc, raw_key).ok_or_else(|| form_error(enc, declared, None, start))?;
        let value = decode_component(enc, raw_value).ok_or_else(|| form_error(enc, declared, Some(&key), start))?;
        fields.entry(key).or_default().push(value);
    }
    let object = fields
        .into_iter()
        .map(|(k, mut vs)| {
            let v =
                if vs.len() == 1 { Value::String(vs.remove(0)) } else { vs.into_iter().map(Value::String).collect() };
            (k, v)
        })
        .collect();
    Ok(Value::Object(object))
}

fn decode_component(enc: &'static Encoding, raw: &[u8]) -> Option<String> {
    enc.decode_without_bom_handling_and_without_replacement(&percent_decode(raw)).map(|s| s.into_owned())
}

/// `+` is a space; `%XX` is a byte; a `%` not followed by two hex digits stays as it is (WHATWG).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn form_error(enc: &'static Encoding, declared: Option<&'static Encoding>, key: Option<&str>, at: usize) -> BodyError {
    let name = display_name(enc);
    let (what_en, what_ja) = match key {
        Some(k) => (format!("the value of form field `{k}`"), format!("フォーム項目 `{k}` の値")),
        None => ("a form field name".to_string(), "フォーム項目名".to_string()),
    };
    let (hint_en, hint_ja) = match declared {
        Some(_) => (String::new(), String::new()),
        None => (
            "; if the sender uses Shift_JIS it must say `charset=Shift_JIS` in the Content-Type".to_string(),
            "。送信側が Shift_JIS の場合は Content-Type に `charset=Shift_JIS` が必要です".to_string(),
        ),
    };
    BodyError::Malformed(Msg::new(
        format!("{what_en} at byte offset {at} is not valid {name} after percent-decoding{hint_en}"),
        format!("バイト位置 {at} の{what_ja}が、パーセントデコード後に {name} として正しくありません{hint_ja}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{parse_body, BodyFormat, CsvInOptions, Parsed};
    use encoding_rs::SHIFT_JIS;
    use serde_json::json;

    fn parse(ct: Option<&str>, body: &[u8]) -> Result<Parsed, BodyError> {
        parse_body(ct, body, BodyFormat::Auto, &CsvInOptions::default())
    }

    fn malformed(r: Result<Parsed, BodyError>) -> Msg {
        match r {
            Err(BodyError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    fn percent_encode_all(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("%{b:02X}")).collect()
    }

    #[test]
    fn form_repeated_keys_plus_and_percent() {
        let p =
            parse(Some("application/x-www-form-urlencoded"), b"a=1&b=2&name=%E5%B1%B1+%E7%94%B0&b=3&&flag").unwrap();
        assert_eq!(p.kind, BodyFormat::Form);
        assert_eq!(p.value, json!({"a": "1", "b": ["2", "3"], "name": "山 田", "flag": ""}));
        assert_eq!(p.value.as_object().unwrap().keys().collect::<Vec<_>>(), ["a", "b", "name", "flag"]);
    }

    #[test]
    fn form_literal_percent_and_encoded_separators() {
        let p = parse(Some("application/x-www-form-urlencoded"), b"q=100%&r=%zz&s=a%26b%3Dc%2B").unwrap();
        assert_eq!(p.value, json!({"q": "100%", "r": "%zz", "s": "a&b=c+"}));
        assert_eq!(parse(Some("application/x-www-form-urlencoded"), b"").unwrap().value, json!({}));
    }

    #[test]
    fn form_shift_jis_charset() {
        let (name, _, _) = SHIFT_JIS.encode("山田太郎 ①㈱髙﨑");
        let (key, _, _) = SHIFT_JIS.encode("氏名");
        let body = format!("{}={}&x=1", percent_encode_all(&key), percent_encode_all(&name));
        let p = parse(Some("application/x-www-form-urlencoded; charset=Shift_JIS"), body.as_bytes()).unwrap();
        assert_eq!(p.value, json!({"氏名": "山田太郎 ①㈱髙﨑", "x": "1"}));
        // The same bytes without a charset are not UTF-8: refused, with the offset and a hint.
        let m = malformed(parse(Some("application/x-www-form-urlencoded"), body.as_bytes()));
        assert_eq!(
            m.en,
            "a form field name at byte offset 0 is not valid UTF-8 after percent-decoding; \
             if the sender uses Shift_JIS it must say `charset=Shift_JIS` in the Content-Type"
        );
        let m = malformed(parse(Some("application/x-www-form-urlencoded"), b"ok=1&v=%82%A0"));
        assert!(m.en.starts_with("the value of form field `v` at byte offset 5 is not valid UTF-8"), "{}", m.en);
        assert!(m.ja.starts_with("バイト位置 5 のフォーム項目 `v` の値が"), "{}", m.ja);
    }

    #[test]
    fn form_keys_without_values() {
        let v = parse_form(b"a&b=&=c&a=2", None).unwrap();
        assert_eq!(v, json!({"a": ["", "2"], "b": "", "": "c"}));
    }

    #[test]
    fn form_shift_jis_trail_bytes_that_look_like_ascii() {
        // ソ and 表 end in 0x5C (backslash) and 能 in 0x5C too; 0x7C-trail ポ checks the `|` range.
        let text = "ソ表能ポ";
        let (bytes, _, _) = SHIFT_JIS.encode(text);
        let body = format!("k={}", percent_encode_all(&bytes));
        assert_eq!(parse_form(body.as_bytes(), Some(SHIFT_JIS)).unwrap(), json!({"k": text}));
    }

    #[test]
    fn percent_decoding_rules() {
        assert_eq!(percent_decode(b"a+b%20c%2b%"), b"a b c+%");
        assert_eq!(percent_decode(b"%e5%B1%b1"), "山".as_bytes());
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%%41"), b"%A");
    }
}
