use std::collections::HashMap;

use super::*;

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("TOKEN", "tok-secret-1"), ("ESM_TOKEN", "esm-secret-2")])
}

fn try_load(text: &str) -> Result<Loaded, Vec<Problem>> {
    let env = env();
    load(text, &|k| env.get(k).map(|v| v.to_string()), &|f| match f {
        "approvers.csv" => Ok("applicant,approver1\r\n山田太郎,佐藤花子\r\n".as_bytes().to_vec()),
        other => Err(format!("no such file {other}")),
    })
}

/// "line: path: message" per problem, in file order.
fn problems(text: &str) -> Vec<String> {
    match try_load(text) {
        Ok(_) => Vec::new(),
        Err(ps) => ps.iter().map(|p| format!("{}: {}: {}", p.line.unwrap_or(0), p.path, p.message.en)).collect(),
    }
}

const GOOD: &str = r#"
server: { listen: "127.0.0.1:9999", admin_token: "${TOKEN}" }
tables:
  approvers: { key: applicant, file: approvers.csv }
sources:
  rakuraku:
    auth: { token: "${TOKEN}" }
    event_type: "{{ body.processType }}"
destinations:
  esm:
    type: http
    base_url: "https://esm.example/pub/esms/v1"
    headers: { Authorization: "Bearer ${ESM_TOKEN}" }
flows:
  approval:
    source: rakuraku
    when: "event.type is startingwith('rakuraku_')"
    retry: { max_attempts: 5, initial: 2s, max: 10m }
    steps:
      - to: esm
        method: put
        path: "/sheet/deal/{{ body.keyId }}"
        body: { deals.deal.approver: "{{ lookup('approvers', body.applicant).approver1 }}" }
"#;

#[test]
fn a_good_config_loads_typed() {
    let l = try_load(GOOD).unwrap();
    assert_eq!(l.config.server.listen.port(), 9999);
    assert_eq!(l.config.flows["approval"].retry.max_attempts, 5);
    assert_eq!(l.config.flows["approval"].retry.initial.0.as_secs(), 2);
    assert_eq!(l.config.tables["approvers"].rows["山田太郎"]["approver1"], "佐藤花子");
    assert_eq!(l.config.storage, "sqlite://renkei.db");
    // Values of credential-named variables are secrets wherever they appear.
    assert_eq!(l.redactor.text("Bearer esm-secret-2 / tok-secret-1"), "Bearer [REDACTED] / [REDACTED]");
    // Others are not: a base URL from the environment stays readable.
    let env = HashMap::from([("ESM_BASE_URL", "https://esm.example/t1"), ("ESM_TOKEN", "esm-secret-2")]);
    let text =
        "destinations:\n  esm: { type: http, base_url: \"${ESM_BASE_URL}\", headers: { X-Key: \"${ESM_TOKEN}\" } }\n";
    let l = load(text, &|k| env.get(k).map(|v| v.to_string()), &|_| Err("no files".into())).unwrap();
    assert_eq!(l.redactor.text("https://esm.example/t1 esm-secret-2"), "https://esm.example/t1 [REDACTED]");
}

#[test]
fn every_problem_is_listed_with_its_line() {
    let text = r#"
sources:
  a:
    formt: json
  b:
    event_type: "{{ body.x "
destinations:
  d: { type: http, base_url: "ftp://x" }
flows:
  f:
    source: nope
    steps:
      - to: d
        methd: GET
  h:
    source: nope
    steps: [ { to: d } ]
  g:
    source: b
    steps:
      - to: missing
        method: FETCH
  "bad name": { source: b, steps: [] }
unknown_section: 1
"#;
    let got = problems(text);
    let expected = [
        "4: sources.a.formt: unknown field `formt`",
        "6: sources.b.event_type: template error:",
        "8: destinations.d.base_url: base_url must start with http:// or https://",
        "14: flows.f.steps[0].methd: unknown field `methd`",
        "16: flows.h.source: there is no source `nope`",
        "21: flows.g.steps[0].to: there is no destination `missing`",
        "23: flows.\"bad name\": `bad name` is not a valid name",
        "24: unknown_section: unknown section `unknown_section`",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "{g:?} should start with {e:?}");
    }
}

#[test]
fn unset_environment_variables_are_problems_without_values() {
    let got = problems("sources:\n  s:\n    auth: { token: \"${NOT_SET}\" }\n");
    assert_eq!(got, ["3: sources.s.auth.token: environment variable NOT_SET is not set"]);
}

#[test]
fn template_typos_are_reported_at_load() {
    let got = problems("sources:\n  s: {}\ndestinations:\n  d: { type: http, base_url: \"http://x\" }\nflows:\n  f:\n    source: s\n    steps:\n      - to: d\n        body: { a: \"{{ body.x | nofilter }}\" }\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("10: flows.f.steps[0].body: template error: a: "), "{got:?}");
    assert!(got[0].contains("nofilter"), "{got:?}");
}

#[test]
fn the_product_example_loads() {
    let text = include_str!("../../../../../examples/product/renkei.yaml");
    let env = HashMap::from([
        ("RAKURAKU_TOKEN", "a"),
        ("SHOPRAN_HOOK_TOKEN", "b"),
        ("SHOPRAN_API_KEY", "c"),
        ("ESM_TOKEN", "d"),
        ("KINTONE_TOKEN", "e"),
        ("CHAT_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ]);
    let loaded = load(text, &|k| env.get(k).map(|v| v.to_string()), &|_| Err("no files".into()))
        .unwrap_or_else(|ps| panic!("{ps:#?}"));
    // The subscription stands as a flow of its own.
    let sub = &loaded.config.flows["subscription-store-chat"];
    assert_eq!(sub.when.as_ref().unwrap().0, "(event.type in [\"PUBLISH\",\"UPDATE\"]) and (body.priority >= 4)");
}

#[test]
fn a_table_row_without_its_key_is_a_problem() {
    let got = problems("tables:\n  t:\n    key: code\n    rows:\n      - { code: A, v: 1 }\n      - { v: 2 }\n");
    assert_eq!(got, ["6: tables.t.rows[1]: row 2 has no `code` column"]);
}

#[test]
fn postgres_pool_settings_in_the_storage_url_are_checked() {
    assert!(try_load("storage: \"postgres://u@h/db?pool_size=20&statement_timeout=10s&schema=hub\"\n").is_ok());
    assert_eq!(
        problems("storage: \"postgres://u:pw@h/db?pool_size=0\"\n"),
        ["1: storage: storage URL: pool_size must be a whole number from 1 to 1000, not `0`"]
    );
}
