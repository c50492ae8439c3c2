use renkei_core::types::{Secret, Span};
use serde_json::json;

use super::*;

fn dest() -> KintoneDestination {
    KintoneDestination {
        base_url: Some("https://example.cybozu.com/".into()),
        subdomain: None,
        app: 12,
        guest_space: None,
        api_token: Some(Secret::new("tok1")),
        api_tokens: vec![Secret::new("tok2")],
        login: None,
        basic: None,
        lang: "ja".into(),
        timeout: Span(Duration::from_secs(30)),
        concurrency: 10,
        batch: Default::default(),
        allow_http: false,
    }
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn single_requests() {
    let d = dest();
    let rec = || Some(json!({"name": {"value": "x"}}).as_object().unwrap().clone());
    let add = single_request(&d, "t", KintoneAction::Add, &Target::None, rec(), None, None, None);
    assert_eq!((add.method.as_str(), add.url.as_str()), ("POST", "https://example.cybozu.com/k/v1/record.json"));
    assert_eq!(body(&add), json!({"app": "12", "record": {"name": {"value": "x"}}}));
    assert!(add.headers.contains(&("X-Cybozu-API-Token".into(), "tok1,tok2".into())));
    assert!(add.headers.contains(&("Content-Type".into(), "application/json".into())));

    let key = Target::Key("code".into(), "C-1".into());
    let up = single_request(&d, "t", KintoneAction::Upsert, &key, rec(), None, None, None);
    assert_eq!((up.method.as_str(), up.url.as_str()), ("PUT", "https://example.cybozu.com/k/v1/records.json"));
    assert_eq!(
        body(&up),
        json!({"app": "12", "upsert": true, "records": [{"updateKey": {"field": "code", "value": "C-1"}, "record": {"name": {"value": "x"}}}]})
    );

    let del = single_request(&d, "t", KintoneAction::Delete, &Target::Id("7".into()), None, None, None, None);
    assert_eq!(
        (del.method.as_str(), del.url.as_str()),
        ("DELETE", "https://example.cybozu.com/k/v1/records.json?app=12&ids%5B0%5D=7")
    );
    assert!(del.body.is_empty());

    let st = single_request(
        &d,
        "t",
        KintoneAction::Status,
        &Target::Id("7".into()),
        None,
        Some("承認する"),
        Some("sato"),
        None,
    );
    assert_eq!(st.url, "https://example.cybozu.com/k/v1/record/status.json");
    assert_eq!(body(&st), json!({"app": "12", "id": "7", "action": "承認する", "assignee": "sato"}));
}

#[test]
fn guest_space_paths_and_password_auth() {
    let mut d = dest();
    d.guest_space = Some(3);
    d.api_token = None;
    d.api_tokens = vec![];
    d.login = Some(renkei_core::config::BasicAuth { username: "admin".into(), password: Secret::new("pw") });
    let r = fields_request(&d, "t");
    assert_eq!(r.url, "https://example.cybozu.com/k/guest/3/v1/app/form/fields.json?app=12&lang=ja");
    assert!(r.headers.contains(&("X-Cybozu-Authorization".into(), "YWRtaW46cHc=".into())));
}

#[test]
fn lookups_quote_values() {
    let r = lookup_request(&dest(), "t", "code", "A\"1\\");
    let query: Vec<(String, String)> =
        form_urlencoded::parse(r.url.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    assert!(query.contains(&("query".into(), "code = \"A\\\"1\\\\\" limit 2".into())), "{query:?}");
    assert_eq!(lookup_ids(&json!({"records": [{"$id": {"type": "__ID__", "value": "5"}}]})), ["5"]);
}

#[test]
fn bulk_requests_and_results() {
    let d = dest();
    let items = vec![
        (Target::Key("code".into(), "A".into()), json!({"n": {"value": "1"}}).as_object().unwrap().clone()),
        (Target::Key("code".into(), "B".into()), json!({"n": {"value": "2"}}).as_object().unwrap().clone()),
    ];
    let r = bulk_request(&d, "t", KintoneAction::Upsert, &items);
    assert_eq!(r.method, "PUT");
    assert_eq!(body(&r)["upsert"], true);
    assert_eq!(body(&r)["records"][1]["updateKey"]["value"], "B");
    let add = bulk_request(&d, "t", KintoneAction::Add, &items);
    assert_eq!(body(&add)["records"][0], json!({"n": {"value": "1"}}));
    let res = bulk_results(KintoneAction::Add, &json!({"ids": ["10", "11"], "revisions": ["1", "1"]}), 2);
    assert_eq!(res[1], json!({"id": "11", "revision": "1"}));
}

#[test]
fn errors_are_classified_with_what_to_do() {
    let d = dest();
    let body = |code: &str| json!({"code": code, "id": "x", "message": "m"}).to_string().into_bytes();
    let kind = |o: Outcome| match o {
        Outcome::Success => "success".to_owned(),
        Outcome::Transient { reason, .. } => format!("transient: {reason}"),
        Outcome::Permanent { reason } => format!("permanent: {reason}"),
    };
    assert!(kind(classify(&d, KintoneAction::Add, 429, &body("GAIA_TO04"), None)).starts_with("transient"));
    assert!(kind(classify(&d, KintoneAction::Add, 400, &body("GAIA_DA02"), None)).starts_with("transient"));
    assert!(kind(classify(&d, KintoneAction::Add, 503, b"oops", None)).starts_with("transient"));
    let no_right = kind(classify(&d, KintoneAction::Upsert, 403, &body("GAIA_NO01"), None));
    assert!(
        no_right.starts_with("permanent") && no_right.contains("add and edit records") && no_right.contains("app 12"),
        "{no_right}"
    );
    let guest = kind(classify(&d, KintoneAction::Add, 400, &body("GAIA_IL23"), None));
    assert!(guest.contains("guest_space"), "{guest}");
    let va = json!({"code": "CB_VA01", "message": "入力内容が正しくありません。", "errors": {
        "records[1].金額.value": {"messages": ["数字でなければなりません。"]},
        "records[3].名前.value": {"messages": ["必須です。"]},
        "records[4][数量].value": {"messages": ["数字でなければなりません。"]}
    }});
    let e = KintoneError::parse(va.to_string().as_bytes()).unwrap();
    assert_eq!(e.by_record().keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(e.by_record()[&4], "CB_VA01: 数量: 数字でなければなりません。");
    assert_eq!(e.by_record()[&1], "CB_VA01: 金額: 数字でなければなりません。");
    assert!(kind(classify(&d, KintoneAction::Add, 400, va.to_string().as_bytes(), None))
        .contains("records[3].名前.value: 必須です。"));
}
