use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::json;

use super::*;

fn engine() -> Engine {
    let mut rows = IndexMap::new();
    rows.insert(
        "山田太郎".to_owned(),
        json!({"applicant": "山田太郎", "approver1": "佐藤花子"}).as_object().unwrap().clone(),
    );
    let mut tables = IndexMap::new();
    tables.insert(Name::parse("approvers").unwrap(), Table { key: "applicant".into(), rows });
    Engine::new(Arc::new(tables))
}

fn ctx(body: serde_json::Value) -> Value {
    minijinja::context! { body => Value::from_serialize(&body), event => minijinja::context! { type => "t" } }
}

/// Renders a body tree: one helper, many small cases.
fn tree(spec: serde_json::Value, body: serde_json::Value) -> Result<serde_json::Value, String> {
    let mut e = engine();
    e.add_tree(&spec)?;
    e.render_tree(&spec, &ctx(body))
}

#[test]
fn a_lone_expression_keeps_its_type() {
    assert_eq!(tree(json!({"n": "{{ body.n }}"}), json!({"n": 5})).unwrap(), json!({"n": 5}));
    assert_eq!(tree(json!({"l": "{{ body.l }}"}), json!({"l": [1, "a"]})).unwrap(), json!({"l": [1, "a"]}));
    assert_eq!(tree(json!({"b": "{{ body.n > 3 }}"}), json!({"n": 5})).unwrap(), json!({"b": true}));
    assert_eq!(tree(json!({"s": "no {{ body.n }}"}), json!({"n": 5})).unwrap(), json!({"s": "no 5"}));
    assert_eq!(tree(json!({"lit": "plain", "k": 1}), json!({})).unwrap(), json!({"lit": "plain", "k": 1}));
}

#[test]
fn quotes_and_newlines_cannot_break_tree_bodies() {
    let v = tree(json!({"name": "{{ body.name }}様"}), json!({"name": "a\"b\nc"})).unwrap();
    assert_eq!(v, json!({"name": "a\"b\nc様"}));
}

#[test]
fn dotted_keys_stay_literal() {
    let v = tree(json!({"deals.deal.status": "{{ event.type }}"}), json!({})).unwrap();
    assert_eq!(v, json!({"deals.deal.status": "t"}));
}

#[test]
fn lookup_reads_tables() {
    let v = tree(json!({"a": "{{ lookup('approvers', body.who).approver1 }}"}), json!({"who": "山田太郎"})).unwrap();
    assert_eq!(v, json!({"a": "佐藤花子"}));
    let missing = tree(json!({"a": "{{ lookup('approvers', body.who).approver1 }}"}), json!({"who": "誰か"}));
    assert!(missing.is_err(), "{missing:?}");
    let err = tree(json!({"a": "{{ lookup('nope', 'x') }}"}), json!({})).unwrap_err();
    assert!(err.contains("there is no table `nope`"), "{err}");
}

#[test]
fn undefined_values_are_errors_with_the_key() {
    let err = tree(json!({"x": {"y": "{{ body.missing }}"}}), json!({})).unwrap_err();
    assert!(err.starts_with("x: y: "), "{err}");
    assert!(err.contains("undefined"), "{err}");
    // ...unless the template says what to do.
    assert_eq!(tree(json!({"y": "{{ body.missing | default('-') }}"}), json!({})).unwrap(), json!({"y": "-"}));
    assert_eq!(
        tree(json!({"y": "{% if body.missing %}a{% else %}b{% endif %}"}), json!({})).unwrap(),
        json!({"y": "b"})
    );
}

#[test]
fn raw_json_templates_escape_strings_and_must_parse() {
    let mut e = engine();
    let t = Tmpl(r#"{"name": "{{ body.name }}", "n": {{ body.n }}, "tags": {{ body.tags }}}"#.into());
    e.add_json(&t).unwrap();
    let v = e.render_json(&t, &ctx(json!({"name": "山田 \"特急\"\n\\", "n": 3, "tags": ["a"]}))).unwrap();
    assert_eq!(v, json!({"name": "山田 \"特急\"\n\\", "n": 3, "tags": ["a"]}));

    let broken = Tmpl(r#"{"name": {{ body.name }}}"#.into());
    e.add_json(&broken).unwrap();
    let err = e.render_json(&broken, &ctx(json!({"name": "x"}))).unwrap_err();
    assert!(err.contains("not valid JSON (line 1"), "{err}");
}

#[test]
fn compile_errors_say_where() {
    let mut e = engine();
    let err = e.add(&Tmpl("{{ body.name | nosuchfilter }}".into())).unwrap_err();
    assert!(err.contains("nosuchfilter"), "{err}");
    let err = e.add(&Tmpl("{{ body.name ".into())).unwrap_err();
    assert!(err.contains("line 1"), "{err}");
    assert!(e.check_expr("event.type is startingwith('x')").is_ok());
    assert!(e.check_expr("event.type ==").is_err());
}

#[test]
fn steps_by_index_and_name() {
    let mut e = engine();
    let steps =
        Arc::new(Steps { outputs: vec![(Some("find".into()), Value::from_serialize(json!({"body": {"id": 7}})))] });
    let c = minijinja::context! { steps => Value::from_dyn_object(steps) };
    let t = Tmpl("{{ steps[0].body.id }}-{{ steps.find.body.id }}".into());
    e.add(&t).unwrap();
    assert_eq!(e.render(&t, &c).unwrap(), "7-7");
}

#[test]
fn single_expression_detection() {
    assert_eq!(single_expression("{{ a.b }}"), Some("a.b"));
    assert_eq!(single_expression("  {{a}}  "), Some("a"));
    assert_eq!(single_expression("{{ a }} {{ b }}"), None);
    assert_eq!(single_expression("x{{ a }}"), None);
    assert_eq!(single_expression("{% if a %}{{ a }}{% endif %}"), None);
}

#[test]
fn japanese_dates_in_templates() {
    let cases = [
        ("{{ body.d | date }}", "R8.11.22", "2026-11-22"),
        ("{{ body.d | date('%Y/%m/%d') }}", "2026年1月5日", "2026/01/05"),
        ("{{ body.d | datetime }}", "2026-11-22 10:30", "2026-11-22T01:30:00Z"),
        ("{{ body.d | datetime('%Y-%m-%d %H:%M') }}", "2026-11-22T01:30:00Z", "2026-11-22 10:30"),
        ("{{ body.d | wareki }}", "2019-05-01", "令和元年5月1日"),
    ];
    for (src, input, want) in cases {
        let mut e = engine();
        let t = Tmpl(src.into());
        e.add(&t).unwrap();
        assert_eq!(e.render(&t, &ctx(json!({"d": input}))).unwrap(), want, "{src} with {input}");
    }
    let mut e = engine();
    let t = Tmpl("{{ body.d | date }}".into());
    e.add(&t).unwrap();
    let err = e.render(&t, &ctx(json!({"d": "2026-02-30"}))).unwrap_err();
    assert!(err.contains("`2026-02-30` is not a date"), "{err}");
}

#[test]
fn template_delimiters_in_an_expression_are_an_error_not_a_panic() {
    let mut engine = Engine::new(Default::default());
    for e in ["a }} b", "}},", "oa}}pprerdy.name | u", "{{ body.x }}", "{% if x %}"] {
        let err = engine.check_expr(e).unwrap_err();
        assert!(err.contains("without {{ }}"), "{e}: {err}");
    }
    assert!(engine.check_expr("body.priority >= 4").is_ok());
}

#[test]
fn a_template_that_would_run_for_minutes_runs_out_of_fuel() {
    let mut engine = Engine::new(Default::default());
    let started = std::time::Instant::now();
    let slow = Tmpl("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}".into());
    let err = engine.add(&slow).unwrap_err();
    assert!(err.contains("fuel"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    // Ordinary work is far from the limit.
    let fine = Tmpl("{% for i in range(1000) %}{{ i }},{% endfor %}".into());
    engine.add(&fine).unwrap();
    assert!(engine.render(&fine, &minijinja::Value::from(())).unwrap().starts_with("0,1,2,"));
}

/// A checked expression is evaluated from the template `check_expr` kept; one never checked is compiled on the
/// spot. Both give the same value, the same `when` verdict, and an error for the same expressions, the kept one's
/// naming the expression.
#[test]
fn a_kept_expression_evaluates_as_one_compiled_on_the_spot() {
    let mut kept = engine();
    let fresh = engine();
    let body = json!({ "n": 4, "s": "山田", "list": [1, 2, 3], "map": { "a": null }, "big": 12345678901234u64 });
    let cx = ctx(body);
    let cases = [
        "body.n >= 4",
        "body.n * 2 + 1",
        "body.s ~ '様'",
        "body.list | length",
        "body.list[1:]",
        "body.map",
        "body.map.a",
        "body.big",
        "body.missing",
        "body.missing | default('x')",
        "body.missing is defined",
        "not body.missing",
        "body.s if body.n > 3 else 'no'",
        "lookup('approvers', '山田太郎').approver1",
        "body.s + 1",
        "body.missing.x",
        "event.type == 't'",
    ];
    // Without where it happened: the kept one's says `(line 1 of `EXPR`)`, the other's `of `<expression>``.
    fn what<T>(r: Result<T, String>) -> Result<T, String> {
        r.map_err(|e| e.split(" (line").next().unwrap_or_default().to_owned())
    }
    for e in cases {
        kept.check_expr(e).unwrap();
        let (a, b) = (kept.eval(e, &cx), fresh.eval(e, &cx));
        if let Err(x) = &a {
            assert!(!x.contains("(line") || x.contains(&format!("of `{e}`")), "{e}: {x}");
        }
        assert_eq!(what(a), what(b), "{e}");
        let when = Expr(e.to_owned());
        assert_eq!(what(kept.eval_bool(&when, &cx)), what(fresh.eval_bool(&when, &cx)), "{e}");
    }
    assert_eq!(kept.eval("body.n * 2 + 1", &cx), Ok(json!(9)));
    assert!(kept.eval("body.missing", &cx).unwrap_err().contains("is undefined"));
}

/// A text template, a raw JSON body and an expression of one same text are three templates, none in another's
/// place: a text `expr:true` does not answer for the expression `true`, nor a text `json:…` for a JSON body.
#[test]
fn one_text_as_three_kinds_of_template_stays_three() {
    let mut e = engine();
    let (text_expr, text_json, json) =
        (Tmpl("expr:true".into()), Tmpl(r#"json:"{{ body.s }}""#.into()), Tmpl(r#""{{ body.s }}""#.into()));
    e.add(&text_expr).unwrap();
    e.add(&text_json).unwrap();
    e.check_expr("true").unwrap();
    e.add_json(&json).unwrap();
    let cx = ctx(json!({ "s": "a\"b" }));
    assert_eq!(e.render(&text_expr, &cx).unwrap(), "expr:true");
    assert!(e.eval_bool(&Expr("true".into()), &cx).unwrap());
    assert_eq!(e.render(&text_json, &cx).unwrap(), r#"json:"a"b""#);
    assert_eq!(e.render_json(&json, &cx).unwrap(), json!("a\"b"));
}
