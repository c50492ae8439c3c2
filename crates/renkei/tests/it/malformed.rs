//! A corpus of malformed and hostile requests, one row per case: every one is answered with a clear 4xx JSON
//! error, kept as a rejected event, and the hub keeps serving.

use serde_json::json;

use crate::harness::*;

const CFG: &str = r#"
server: { body_limit: 64KiB }
sources:
  json: { format: json }
  form: { format: form }
  sjis: { format: csv, csv: { encoding: shift_jis, split: rows } }
  csv: { format: csv, csv: { split: rows } }
  auto: {}
  locked: { auth: { token: "${T}" } }
"#;

/// (case, source, content type, body, expected status, expected error code)
type Case = (&'static str, &'static str, &'static str, Vec<u8>, u16, &'static str);

fn corpus() -> Vec<Case> {
    let mut bad_sjis = encoding_rs::SHIFT_JIS.encode("顧客名,電話\r\n").0.into_owned();
    bad_sjis.extend_from_slice(&[0x81, 0x20, b',', b'1', b'\r', b'\n']); // a lead byte without its trail byte
    vec![
        ("truncated JSON", "json", "application/json", br#"{"a": "#.to_vec(), 400, "malformed_body"),
        (
            "unescaped quote (seed 004)",
            "json",
            "application/json",
            br#"{"name": "a"b"}"#.to_vec(),
            400,
            "malformed_body",
        ),
        ("trailing garbage", "json", "application/json", br#"{"a": 1} x"#.to_vec(), 400, "malformed_body"),
        ("empty JSON body", "json", "application/json", Vec::new(), 400, "malformed_body"),
        ("JSON that is not UTF-8", "json", "application/json", vec![b'"', 0xff, 0xfe, b'"'], 400, "malformed_body"),
        (
            "deeply nested JSON",
            "json",
            "application/json",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            400,
            "malformed_body",
        ),
        (
            "form with invalid UTF-8",
            "form",
            "application/x-www-form-urlencoded",
            b"a=%ff%fe".to_vec(),
            400,
            "malformed_body",
        ),
        ("ragged CSV row", "csv", "text/csv", b"a,b\n1,2\n3\n".to_vec(), 400, "malformed_body"),
        ("broken Shift_JIS", "sjis", "text/csv", bad_sjis, 400, "malformed_body"),
        ("binary upload", "auto", "application/octet-stream", vec![0, 1, 2, 3], 415, "unsupported_media_type"),
        ("image", "auto", "image/png", b"\x89PNG\r\n".to_vec(), 415, "unsupported_media_type"),
        ("unknown charset", "auto", "text/plain; charset=klingon", b"x".to_vec(), 415, "unsupported_media_type"),
        (
            "too large",
            "json",
            "application/json",
            format!("{{\"a\": \"{}\"}}", "x".repeat(70_000)).into_bytes(),
            413,
            "body_too_large",
        ),
        ("no token", "locked", "application/json", b"{}".to_vec(), 401, "unauthorized"),
        ("unknown source", "nope", "application/json", b"{}".to_vec(), 404, "unknown_source"),
        ("path traversal as source", "..%2F..%2Fetc", "application/json", b"{}".to_vec(), 404, "unknown_source"),
    ]
}

#[tokio::test]
async fn every_malformed_request_gets_a_clear_4xx_and_nothing_crashes() {
    let app = spawn_app_env(CFG, &[("T", "the-token-1")]).await;
    let mut rejected = 0;
    for (case, source, ct, body, status, code) in corpus() {
        let r = app.post(&format!("/hooks/{source}"), ct, body).await;
        assert_eq!(r.status, status, "{case}: {}", r.text);
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{case}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap_or("").is_empty(), "{case}: the error says what is wrong");
        rejected += 1;
    }
    // Every refused request is kept for inspection, and the hub still takes good ones.
    let kept = app.api(&format!("/events?status=rejected&limit={}", rejected + 10)).await;
    assert_eq!(kept["items"].as_array().unwrap().len(), rejected);
    assert_eq!(app.post_json("/hooks/json", json!({"ok": true})).await.status, 202);
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}
