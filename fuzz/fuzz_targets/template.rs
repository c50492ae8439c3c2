//! Templates through renkei's Engine: compile (which also runs the load-time probe render) and render
//! against a fixed event context, as a text template, a raw JSON body template, an expression (`when:`)
//! or a YAML-style body tree given as JSON. Errors are fine; panics and hangs are not.
//!
//! MiniJinja has no limit on work per render unless built with `fuel` and given fuel, and Engine's
//! environments are private, so the input is bounded instead by `template_guard::allowed`.
#![no_main]

use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;
use libfuzzer_sys::fuzz_target;
use renkei_core::config::{Expr, Table, Tmpl};
use renkei_core::event::EventView;
use renkei_core::template::{single_expression, Engine, Steps};
use renkei_core::types::Name;
use serde_json::json;

#[path = "template_guard.rs"]
mod template_guard;

fn tables() -> Arc<IndexMap<Name, Table>> {
    let mut rows = IndexMap::new();
    for (applicant, approver) in [("山田太郎", "佐藤花子"), ("田中一郎", "高橋次郎")] {
        let row = json!({"applicant": applicant, "approver1": approver});
        rows.insert(applicant.to_owned(), row.as_object().unwrap().clone());
    }
    let mut tables = IndexMap::new();
    tables.insert(Name::parse("approvers").unwrap(), Table { key: "applicant".into(), rows });
    Arc::new(tables)
}

/// The event every template is rendered against: a 楽楽販売-style webhook with dates, numbers and lists.
fn context() -> &'static minijinja::Value {
    static CTX: OnceLock<minijinja::Value> = OnceLock::new();
    CTX.get_or_init(|| {
        let body = json!({
            "keyId": "12345",
            "processType": "rakuraku_submission",
            "name": "山田太郎",
            "applicant": "山田太郎",
            "note": "急ぎ \"quote\" \\ back\nslash",
            "priority": 4,
            "amount": 1234.5,
            "paid": false,
            "date": "令和8年11月22日",
            "date2": "R8.11.22",
            "date3": "2026/11/22",
            "at": "2026-11-22T10:30:00+09:00",
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
            "tags": ["a", "b", "c"],
            "nested": {"deal": {"id": 7, "status": null}},
        });
        let mut headers = serde_json::Map::new();
        headers.insert("content-type".into(), json!("application/json"));
        headers.insert("webhook-id".into(), json!("msg_1"));
        let mut query = serde_json::Map::new();
        query.insert("src".into(), json!("test"));
        let view = EventView {
            id: "01J000000000000000000000".into(),
            event_type: "rakuraku_submission".into(),
            source: "rakuraku".into(),
            received_at: chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap(),
            body,
            row: None,
            headers,
            query,
        };
        let steps = Arc::new(Steps { outputs: vec![(Some("first".into()), minijinja::Value::from_serialize(json!({"id": 1})))] });
        view.context(steps)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let ctx = context();
    let mut engine = Engine::new(tables());
    match mode % 4 {
        0 => {
            if !template_guard::allowed(text) {
                return;
            }
            let _ = single_expression(text);
            let t = Tmpl(text.to_owned());
            if engine.add(&t).is_ok() {
                let _ = engine.render(&t, ctx);
            }
        }
        1 => {
            if !template_guard::allowed(text) {
                return;
            }
            let t = Tmpl(text.to_owned());
            if engine.add_json(&t).is_ok() {
                let _ = engine.render_json(&t, ctx);
            }
        }
        2 => {
            if !template_guard::allowed(text) {
                return;
            }
            if engine.check_expr(text).is_ok() {
                let _ = engine.eval(text, ctx);
                let _ = engine.eval_bool(&Expr(text.to_owned()), ctx);
            }
        }
        _ => {
            // A body given as a YAML structure (here JSON): leaves are templates, keys literal.
            let Ok(tree) = serde_json::from_str::<serde_json::Value>(text) else { return };
            let mut leaves = String::new();
            collect_strings(&tree, &mut leaves);
            if !template_guard::allowed(&leaves) {
                return;
            }
            if engine.add_tree(&tree).is_ok() {
                let _ = engine.render_tree(&tree, ctx);
            }
        }
    }
});

fn collect_strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        serde_json::Value::Object(m) => m.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}
