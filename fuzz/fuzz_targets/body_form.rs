//! parse_body as application/x-www-form-urlencoded (UTF-8 or a declared charset such as Shift_JIS).
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_core::body::{parse_body, BodyFormat, CsvInOptions};
use serde_json::Value;

#[path = "body_common.rs"]
#[allow(dead_code)]
mod body_common;

fuzz_target!(|data: &[u8]| {
    let Some((ct, body)) = body_common::content_type(data) else { return };
    let result = parse_body(ct, body, BodyFormat::Form, &CsvInOptions::default());
    body_common::check(BodyFormat::Form, &result);
    if let Ok(p) = &result {
        let Value::Object(map) = &p.value else { panic!("a form is not an object: {:?}", p.value) };
        for v in map.values() {
            match v {
                Value::String(_) => {}
                Value::Array(items) => assert!(items.len() >= 2 && items.iter().all(Value::is_string), "{v:?}"),
                other => panic!("form value is neither a string nor a list of strings: {other:?}"),
            }
        }
    }
});
