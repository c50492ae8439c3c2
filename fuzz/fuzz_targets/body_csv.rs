//! parse_body as CSV with options derived from the input (encoding auto / UTF-8 / Shift_JIS, delimiter,
//! header, columns, skip_lines, skip_footer) under any Content-Type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_core::body::{parse_body, BodyFormat};
use serde_json::Value;

#[path = "body_common.rs"]
#[allow(dead_code)]
mod body_common;

fuzz_target!(|data: &[u8]| {
    let Some((ct, rest)) = body_common::content_type(data) else { return };
    let [a, b, body @ ..] = rest else { return };
    let opts = body_common::csv_options(*a, *b);
    let result = parse_body(ct, body, BodyFormat::Csv, &opts);
    body_common::check(BodyFormat::Csv, &result);
    if let Ok(p) = &result {
        let Value::Array(rows) = &p.value else { panic!("CSV did not give an array: {:?}", p.value) };
        let mut width = None;
        for row in rows {
            let Value::Object(fields) = row else { panic!("CSV row is not an object: {row:?}") };
            assert!(fields.values().all(Value::is_string), "CSV field is not a string: {row:?}");
            // Every row is checked against the same column names, so all rows have the same width.
            assert_eq!(*width.get_or_insert(fields.len()), fields.len(), "ragged rows accepted: {rows:?}");
        }
    }
});
