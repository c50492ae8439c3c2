//! parse_body as text (any bytes are kept, as base64 when they do not decode), and with format `auto`,
//! which picks the format from the Content-Type.
#![no_main]

use base64_free::decode_base64;
use libfuzzer_sys::fuzz_target;
use renkei_core::body::{parse_body, BodyError, BodyFormat, CsvInOptions};
use serde_json::Value;

#[path = "body_common.rs"]
#[allow(dead_code)]
mod body_common;

mod base64_free {
    /// Standard base64 with padding; enough to check the fallback keeps the bytes.
    pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = s.as_bytes();
        if bytes.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            let mut pad = 0;
            for &c in chunk {
                n <<= 6;
                if c == b'=' {
                    pad += 1;
                } else {
                    n |= A.iter().position(|&x| x == c)? as u32;
                }
            }
            let b = n.to_be_bytes();
            out.extend_from_slice(&b[1..4 - pad]);
        }
        Some(out)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((ct, rest)) = body_common::content_type(data) else { return };
    let Some((&mode, body)) = rest.split_first() else { return };
    if mode & 1 == 0 {
        let result = parse_body(ct, body, BodyFormat::Text, &CsvInOptions::default());
        body_common::check(BodyFormat::Text, &result);
        match result {
            Ok(p) => match p.value {
                Value::String(_) => {}
                Value::Object(m) => {
                    let b64 = m.get("base64").and_then(Value::as_str).expect("text fallback without base64");
                    assert_eq!(decode_base64(b64).as_deref(), Some(body), "base64 fallback lost bytes");
                }
                other => panic!("text body is {other:?}"),
            },
            // Text never rejects bytes; only an unusable charset is refused.
            Err(e) => assert!(matches!(e, BodyError::UnsupportedType(_)), "text body refused: {e:?}"),
        }
    } else {
        let opts = body_common::csv_options(mode >> 1, mode.rotate_left(3));
        let result = parse_body(ct, body, BodyFormat::Auto, &opts);
        if let Ok(p) = &result {
            assert_ne!(p.kind, BodyFormat::Auto, "detection answered Auto");
        }
    }
});
