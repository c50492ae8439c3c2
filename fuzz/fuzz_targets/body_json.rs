//! parse_body as JSON: any bytes, under any Content-Type (charset, BOM, Shift_JIS), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_core::body::{parse_body, BodyFormat, CsvInOptions};

#[path = "body_common.rs"]
#[allow(dead_code)]
mod body_common;

fuzz_target!(|data: &[u8]| {
    let Some((ct, body)) = body_common::content_type(data) else { return };
    let result = parse_body(ct, body, BodyFormat::Json, &CsvInOptions::default());
    body_common::check(BodyFormat::Json, &result);

    // Without a Content-Type or BOM, UTF-8 JSON must read exactly as serde_json reads it.
    if ct.is_none() && !body.starts_with(b"\xEF\xBB\xBF") && !body.starts_with(b"\xFE\xFF") && !body.starts_with(b"\xFF\xFE") {
        if let Ok(text) = std::str::from_utf8(body) {
            let plain = serde_json::from_str::<serde_json::Value>(text).ok();
            assert_eq!(result.ok().map(|p| p.value), plain, "parse_body and serde_json disagree");
        }
    }
});
