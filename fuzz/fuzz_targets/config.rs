//! config::load on any text, with no environment variables and no readable files: never panic.
//!
//! Loading compiles every template and expression in the config, and the load-time probe renders each
//! once, so the same bound as the template target applies to every string in the document (see
//! template_guard.rs). The document is read with config::yaml::parse first to find those strings.
//! Values of `when` / `valid_when` / `success_when` are compiled as expressions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_core::config::{load, yaml};

#[path = "template_guard.rs"]
mod template_guard;

fn strings_allowed(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => template_guard::allowed(s),
        serde_json::Value::Array(items) => items.iter().all(strings_allowed),
        serde_json::Value::Object(m) => m.iter().all(|(k, v)| template_guard::allowed(k) && strings_allowed(v)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |_: &str| None;
    let read_file = |name: &str| Err(format!("no file `{name}` in the fuzzer"));
    if let Ok(doc) = yaml::parse(text, &env) {
        if !strings_allowed(&doc.value) {
            return;
        }
    }
    match load(text, &env, &read_file) {
        Ok(loaded) => {
            // What the server and `renkei check` do next with a loaded config.
            let _ = format!("{:?}", loaded.config);
            let _ = loaded.redactor.text(&loaded.text);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "load failed without a problem");
            for p in &problems {
                let _ = p.to_string();
            }
        }
    }
});
