//! Turning stored and configured values into what a page shows: times in JST with the zone named, JSON
//! pretty-printed, secrets masked by the config's redactor, long text clipped. Every string from the store
//! or the config reaches a template through one of these.

use chrono::{DateTime, Utc};
use minijinja::value::Value;
use renkei_core::dates::jst;
use renkei_core::redact::Redactor;
use renkei_core::Lang;

/// More than this of one body is not shown (the API has all of it).
pub const SHOWN_BODY: usize = 256 * 1024;

/// `2026-11-22 09:00:05 JST`.
pub fn jst_text(t: DateTime<Utc>) -> String {
    t.with_timezone(&jst()).format("%Y-%m-%d %H:%M:%S JST").to_string()
}

/// The template filter `jst`: an RFC 3339 time (as records serialise theirs) shown in JST; `—` for none.
pub fn jst_filter(v: Value) -> String {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| jst_text(t.with_timezone(&Utc)))
        .unwrap_or_else(|| "—".to_owned())
}

/// The value of a `datetime-local` input, in JST.
pub fn jst_input(t: DateTime<Utc>) -> String {
    t.with_timezone(&jst()).format("%Y-%m-%dT%H:%M").to_string()
}

/// A time typed into a filter: `2026-11-22T09:00` from the browser's picker, or any form the config's dates
/// take (`2026/11/22 9:00`, `令和8年11月22日`); without an offset it is JST.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    renkei_core::dates::parse_datetime(s.trim()).map(|t| t.with_timezone(&Utc))
}

/// A duration for people: `3h 05m`, `3時間5分`.
pub fn age(seconds: i64, lang: Lang) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    match lang {
        Lang::Ja if d > 0 => format!("{d}日{h}時間"),
        Lang::Ja if h > 0 => format!("{h}時間{m}分"),
        Lang::Ja if m > 0 => format!("{m}分{sec}秒"),
        Lang::Ja => format!("{sec}秒"),
        _ if d > 0 => format!("{d}d {h}h"),
        _ if h > 0 => format!("{h}h {m:02}m"),
        _ if m > 0 => format!("{m}m {sec:02}s"),
        _ => format!("{sec}s"),
    }
}

/// A configured duration as the config writes it: `500ms`, `30s`, `5m`, `1h`, `7d`.
pub fn span(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= n && ms.checked_rem(n) == Some(0) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// Cuts `s` to at most `max` bytes at a character boundary; says whether it did.
pub fn clip(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

fn clipped(s: &str, max: usize) -> String {
    match clip(s, max) {
        (s, false) => s.to_owned(),
        (s, true) => format!("{s}\n… [clipped]"),
    }
}

/// A body for reading: JSON pretty-printed, anything else as it is; masked and clipped.
pub fn body_text(r: &Redactor, text: &str) -> String {
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    let text = pretty.as_deref().unwrap_or(text);
    clipped(&r.text(text), SHOWN_BODY)
}

/// A stored JSON value pretty-printed; masked and clipped.
pub fn json_text(r: &Redactor, v: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    clipped(&r.text(&text), SHOWN_BODY)
}

/// A JSON value on one short line, for listings.
pub fn one_line(r: &Redactor, v: &serde_json::Value, max: usize) -> String {
    let text = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let masked = r.text(&text);
    match clip(&masked, max) {
        (s, false) => s.to_owned(),
        (s, true) => format!("{s}…"),
    }
}

/// Text from the store or the config (an error, a URL, a template), masked.
pub fn text(r: &Redactor, s: &str) -> String {
    clipped(&r.text(s), SHOWN_BODY)
}

/// Headers as pairs, credential headers masked whatever their value.
pub fn headers(r: &Redactor, h: &[(String, String)]) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.clone(), r.header(k, v))).collect()
}

/// An event's stored headers or query (a JSON object) as pairs, masked.
pub fn json_pairs(r: &Redactor, v: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = v.as_object() else { return Vec::new() };
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), r.header(k, &v))
        })
        .collect()
}

/// A body format's config word.
pub fn format_word(f: renkei_core::body::BodyFormat) -> &'static str {
    use renkei_core::body::BodyFormat;
    match f {
        BodyFormat::Auto => "auto",
        BodyFormat::Json => "json",
        BodyFormat::Form => "form",
        BodyFormat::Csv => "csv",
        BodyFormat::Text => "text",
    }
}

/// A filter value from a query string: blank means unset.
pub fn given(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_jst() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T00:00:05Z").unwrap().with_timezone(&Utc);
        assert_eq!(jst_text(t), "2026-11-22 09:00:05 JST");
        assert_eq!(jst_filter(Value::from("2026-11-22T00:00:05Z")), "2026-11-22 09:00:05 JST");
        assert_eq!(jst_filter(Value::from(())), "—");
        assert_eq!(jst_input(t), "2026-11-22T09:00");
        assert_eq!(parse_time("2026-11-22T09:00"), Some(t - chrono::Duration::seconds(5)));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(age(3725, Lang::En), "1h 02m");
        assert_eq!(age(3725, Lang::Ja), "1時間2分");
        assert_eq!(age(59, Lang::En), "59s");
        assert_eq!(span(std::time::Duration::from_secs(300)), "5m");
        assert_eq!(span(std::time::Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn bodies_are_pretty_masked_and_clipped() {
        let r = Redactor::new(["s3cret-value".to_owned()]);
        assert_eq!(body_text(&r, r#"{"a":"s3cret-value"}"#), "{\n  \"a\": \"[REDACTED]\"\n}");
        assert_eq!(body_text(&r, "plain s3cret-value"), "plain [REDACTED]");
        let long = "あ".repeat(SHOWN_BODY);
        assert!(body_text(&r, &long).ends_with("… [clipped]"));
        assert_eq!(clip("あい", 4), ("あ", true));
        assert_eq!(headers(&r, &[("Authorization".into(), "Bearer x".into())])[0].1, "[REDACTED]");
    }
}
