//! Character encodings of bodies: charset labels, strict decoding that says where it failed (including
//! the choice of encoding for inbound CSV), and strict encoding into Shift_JIS (Windows-31J / cp932).
//!
//! Every function here either succeeds exactly or reports the first bad spot; nothing decodes with
//! U+FFFD or encodes with `?`, because a webhook hub that quietly changes a customer name is worse than
//! one that refuses the request. `encoding_rs::SHIFT_JIS` is the WHATWG Shift_JIS, which is cp932: it
//! includes the NEC special characters (①, ㈱, №) and the NEC-selected / IBM extensions (髙, 﨑).

use std::borrow::Cow;

use encoding_rs::{DecoderResult, EncoderResult, Encoding, REPLACEMENT, SHIFT_JIS, UTF_8};

use super::{BodyError, TextEncoding};
use crate::message::Msg;

pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where strict decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DecodeFailure {
    /// 1-based physical line of the bad byte in the decoded prefix.
    pub line: usize,
    /// 0-based offset of the first bad byte in the bytes given to [`decode_with_bom`] / [`decode_strict`].
    pub byte_offset: usize,
    /// The encoding that was tried, for the message.
    pub encoding: &'static Encoding,
}

/// Resolves a `charset=` label: the WHATWG labels (`shift_jis`, `sjis`, `windows-31j`, `ms932`,
/// `utf-8`, ...) plus `cp932`, which Windows and Java users write but WHATWG does not list. The
/// `replacement` encoding is refused: it decodes every body to a single U+FFFD.
pub(crate) fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().trim_matches('"').trim();
    if label.eq_ignore_ascii_case("cp932") {
        return Some(SHIFT_JIS);
    }
    Encoding::for_label(label.as_bytes()).filter(|e| *e != REPLACEMENT)
}

/// Decodes all of `bytes` with `enc`, failing at the first malformed sequence.
pub(crate) fn decode_strict(enc: &'static Encoding, bytes: &[u8]) -> Result<String, DecodeFailure> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let cap = decoder.max_utf8_buffer_length_without_replacement(bytes.len()).unwrap_or(bytes.len().saturating_mul(3));
    let mut out = String::with_capacity(cap);
    let mut read_total = 0;
    loop {
        let (result, read) = decoder.decode_to_string_without_replacement(&bytes[read_total..], &mut out, true);
        read_total += read;
        match result {
            DecoderResult::InputEmpty => return Ok(out),
            // Only reachable if the capacity estimate was short; grow and go on where it stopped.
            DecoderResult::OutputFull => out.reserve(bytes.len() - read_total + 16),
            DecoderResult::Malformed(bad, extra) => {
                let byte_offset = read_total.saturating_sub(bad as usize + extra as usize);
                let line = out.matches('\n').count() + 1;
                return Err(DecodeFailure { line, byte_offset, encoding: enc });
            }
        }
    }
}

/// Decodes like a browser does with a declared charset: a BOM overrides the label (it is the stronger
/// evidence) and is removed. Offsets in a failure count from the start of `bytes`, BOM included.
pub(crate) fn decode_with_bom(enc: &'static Encoding, bytes: &[u8]) -> Result<String, DecodeFailure> {
    match Encoding::for_bom(bytes) {
        Some((bom_enc, len)) => decode_strict(bom_enc, &bytes[len..]).map_err(|mut f| {
            f.byte_offset += len;
            f
        }),
        None => decode_strict(enc, bytes),
    }
}

/// Characters that JIS X 0208 defines and Shift_JIS text from macOS, Linux or Java carries with the
/// Unicode "JIS" mapping, but which cp932 maps to other code points. Writing them as the cp932 code
/// points produces the very bytes JIS X 0208 assigns to them (〜 is 0x8160 in both), so nothing is lost;
/// refusing them instead would reject every 〜 typed on a Mac (the "wave dash problem").
const JIS_TO_CP932: [(char, char); 6] = [
    ('\u{301C}', '\u{FF5E}'), // WAVE DASH -> FULLWIDTH TILDE
    ('\u{2016}', '\u{2225}'), // DOUBLE VERTICAL LINE -> PARALLEL TO
    ('\u{2014}', '\u{2015}'), // EM DASH -> HORIZONTAL BAR
    ('\u{00A2}', '\u{FFE0}'), // CENT SIGN -> FULLWIDTH CENT SIGN
    ('\u{00A3}', '\u{FFE1}'), // POUND SIGN -> FULLWIDTH POUND SIGN
    ('\u{00AC}', '\u{FFE2}'), // NOT SIGN -> FULLWIDTH NOT SIGN
];

/// Replaces the JIS-mapped characters of [`JIS_TO_CP932`] by their cp932 twins; borrows when there are none.
pub(crate) fn to_cp932_repertoire(s: &str) -> Cow<'_, str> {
    let maps = |c: char| JIS_TO_CP932.iter().any(|(from, _)| *from == c);
    if !s.chars().any(maps) {
        return Cow::Borrowed(s);
    }
    let mapped = s.chars().map(|c| JIS_TO_CP932.iter().find(|(from, _)| *from == c).map_or(c, |(_, to)| *to)).collect();
    Cow::Owned(mapped)
}

/// Encodes `s` into Shift_JIS (cp932); `Err` carries the first character it cannot represent.
/// Callers pass text through [`to_cp932_repertoire`] first.
pub(crate) fn encode_sjis(s: &str) -> Result<Vec<u8>, char> {
    let mut encoder = SHIFT_JIS.new_encoder();
    let cap = encoder.max_buffer_length_from_utf8_without_replacement(s.len()).unwrap_or(s.len().saturating_mul(2));
    let mut out = Vec::with_capacity(cap);
    let mut read_total = 0;
    loop {
        let (result, read) = encoder.encode_from_utf8_to_vec_without_replacement(&s[read_total..], &mut out, true);
        read_total += read;
        match result {
            EncoderResult::InputEmpty => return Ok(out),
            EncoderResult::OutputFull => out.reserve(s.len() - read_total + 16),
            EncoderResult::Unmappable(c) => return Err(c),
        }
    }
}

/// A 400 for bytes that do not decode; `what_en` / `what_ja` name the body ("the CSV body", "CSV の本文").
pub(crate) fn decode_error(what_en: &str, what_ja: &str, f: DecodeFailure) -> BodyError {
    let name = display_name(f.encoding);
    BodyError::Malformed(Msg::new(
        format!("{what_en} is not valid {name}: bad byte at line {}, byte offset {}", f.line, f.byte_offset),
        format!("{what_ja}が {name} として正しくありません（{} 行目、バイト位置 {}）", f.line, f.byte_offset),
    ))
}

/// Decodes a CSV body as `csv.encoding` says; `declared` is the Content-Type charset, only passed when
/// `csv.encoding` is auto. Failures name the line, since CSV users find rows by line.
pub(crate) fn decode_csv(
    bytes: &[u8],
    declared: Option<&'static Encoding>,
    encoding: TextEncoding,
) -> Result<String, BodyError> {
    const WHAT: (&str, &str) = ("the CSV body", "CSV の本文");
    match encoding {
        TextEncoding::Utf8 => {
            let bom = if bytes.starts_with(UTF8_BOM) { UTF8_BOM.len() } else { 0 };
            decode_strict(UTF_8, &bytes[bom..]).map_err(|mut f| {
                f.byte_offset += bom;
                decode_error(WHAT.0, WHAT.1, f)
            })
        }
        TextEncoding::ShiftJis => decode_strict(SHIFT_JIS, bytes).map_err(|f| decode_error(WHAT.0, WHAT.1, f)),
        TextEncoding::Auto => {
            // A BOM is stronger evidence than the sender's label; the label beats guessing.
            if Encoding::for_bom(bytes).is_some() {
                return decode_with_bom(UTF_8, bytes).map_err(|f| decode_error(WHAT.0, WHAT.1, f));
            }
            if let Some(enc) = declared {
                return decode_strict(enc, bytes).map_err(|f| decode_error(WHAT.0, WHAT.1, f));
            }
            if let Ok(s) = std::str::from_utf8(bytes) {
                return Ok(s.to_owned());
            }
            decode_strict(SHIFT_JIS, bytes).map_err(|f| {
                BodyError::Malformed(Msg::new(
                    format!(
                        "the CSV body is neither UTF-8 nor Shift_JIS: bad byte for Shift_JIS at line {}, byte \
                         offset {}; set csv.encoding on the source if the sender uses another encoding",
                        f.line, f.byte_offset
                    ),
                    format!(
                        "CSV の本文が UTF-8 でも Shift_JIS でもありません（Shift_JIS として {} 行目、バイト位置 {} \
                         が不正）。送信側が別の文字コードならソースに csv.encoding を指定してください",
                        f.line, f.byte_offset
                    ),
                ))
            })
        }
    }
}

/// The name people know an encoding by, for messages.
pub(crate) fn display_name(enc: &'static Encoding) -> &'static str {
    if enc == UTF_8 {
        "UTF-8"
    } else {
        enc.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAPANESE: &str = "山田太郎 ①㈱№ 髙橋 﨑 ～∥－￠￡￢ ｶﾅ";

    #[test]
    fn labels() {
        for label in
            ["shift_jis", "Shift_JIS", "sjis", "windows-31j", "ms932", "cp932", "CP932", "x-sjis", "\"Shift_JIS\""]
        {
            assert_eq!(encoding_for_label(label), Some(SHIFT_JIS), "{label}");
        }
        for label in ["utf-8", "UTF8", " utf-8 "] {
            assert_eq!(encoding_for_label(label), Some(UTF_8), "{label}");
        }
        assert_eq!(encoding_for_label("euc-jp"), Some(encoding_rs::EUC_JP));
        assert_eq!(encoding_for_label("iso-2022-kr"), None);
        assert_eq!(encoding_for_label("klingon"), None);
    }

    #[test]
    fn sjis_round_trip_with_nec_and_ibm_extensions() {
        let bytes = encode_sjis(JAPANESE).unwrap();
        assert_eq!(decode_strict(SHIFT_JIS, &bytes).unwrap(), JAPANESE);
    }

    #[test]
    fn sjis_exact_bytes_of_extension_characters() {
        // NEC special characters (row 13) and IBM extensions (0xFA-0xFC), as Windows writes them.
        for (c, want) in [
            ("①", [0x87, 0x40]),
            ("㈱", [0x87, 0x8A]),
            ("№", [0x87, 0x82]),
            ("髙", [0xFB, 0xFC]),
            ("﨑", [0xFA, 0xB1]),
            ("山", [0x8E, 0x52]),
        ] {
            assert_eq!(encode_sjis(c).unwrap(), want, "encode {c}");
            assert_eq!(decode_strict(SHIFT_JIS, &want).unwrap(), c, "decode {c}");
        }
        // The NEC-selected IBM extension copies (rows 89-92) decode to the same characters; encoding
        // picks the IBM code, as Windows does.
        assert_eq!(decode_strict(SHIFT_JIS, &[0xEE, 0xE0]).unwrap(), "髙");
        assert_eq!(decode_strict(SHIFT_JIS, &[0xED, 0x95]).unwrap(), "﨑");
    }

    #[test]
    fn sjis_unencodable_characters_are_reported() {
        assert_eq!(encode_sjis("ok😀no"), Err('😀'));
        assert_eq!(encode_sjis("𠮷野家"), Err('𠮷'));
        assert_eq!(encode_sjis("〜"), Err('〜'));
    }

    #[test]
    fn wave_dash_and_friends_map_to_cp932() {
        let mapped = to_cp932_repertoire("10〜20‖—¢£¬");
        assert_eq!(mapped, "10～20∥―￠￡￢");
        assert_eq!(encode_sjis(&mapped).unwrap()[2..4], [0x81, 0x60]);
        assert!(matches!(to_cp932_repertoire("山田"), Cow::Borrowed("山田")));
    }

    #[test]
    fn strict_decode_reports_line_and_offset() {
        let mut bytes = b"a,b\r\nc,d\r\n".to_vec();
        bytes.extend_from_slice(&[b'x', 0xFF, b'y']);
        let f = decode_strict(UTF_8, &bytes).unwrap_err();
        assert_eq!((f.line, f.byte_offset), (3, 11));
        // 0x81 followed by a newline is a truncated double-byte character in Shift_JIS.
        let f = decode_strict(SHIFT_JIS, b"ab\n\x81\n").unwrap_err();
        assert_eq!((f.line, f.byte_offset, f.encoding), (2, 3, SHIFT_JIS));
        assert_eq!(display_name(f.encoding), "Shift_JIS");
    }

    #[test]
    fn bom_overrides_label_and_is_removed() {
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice("名前".as_bytes());
        assert_eq!(decode_with_bom(SHIFT_JIS, &bytes).unwrap(), "名前");
        bytes.push(0xFF);
        let f = decode_with_bom(SHIFT_JIS, &bytes).unwrap_err();
        assert_eq!((f.byte_offset, f.encoding), (9, UTF_8));
        assert_eq!(decode_with_bom(UTF_8, b"plain").unwrap(), "plain");
    }
}
