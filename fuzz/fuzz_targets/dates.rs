//! The Japanese date parser (dates.rs): parse_date / parse_datetime on any text, then wareki and
//! format_date with a fuzzed strftime format, as the `date` / `datetime` / `wareki` template filters do.
//! Never panic, and what is written out reads back as the same date.
#![no_main]

use std::fmt::Write as _;

use chrono::Datelike;
use libfuzzer_sys::fuzz_target;
use renkei_core::dates::{format_date, jst, parse_date, parse_datetime, wareki};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // `date|format`: the part after the first NUL is a format, as in `{{ body.d | date('%Y/%m/%d') }}`.
    let (value, fmt) = text.split_once('\0').unwrap_or((text, "%Y/%m/%d"));

    if let Some(d) = parse_date(value) {
        let iso = format_date(d, "%Y-%m-%d");
        assert_eq!(parse_date(&iso), Some(d), "ISO form {iso:?} of {value:?} does not read back");
        let _ = format_date(d, fmt);
        if let Some(w) = wareki(d) {
            assert_eq!(parse_date(&w), Some(d), "wareki {w:?} of {value:?} does not read back");
        }
    }
    if let Some(t) = parse_datetime(value) {
        assert_eq!(parse_date(value), Some(t.date_naive()), "{value:?}: date and datetime disagree");
        let utc = t.with_timezone(&chrono::Utc);
        // Only four-digit years are read, so the round trip holds for UTC years 1000..=9999.
        if (1000..=9999).contains(&utc.year()) {
            let text = utc.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            assert_eq!(parse_datetime(&text).map(|u| u.timestamp()), Some(t.timestamp()), "{text:?} of {value:?}");
        }
        let mut out = String::new();
        let _ = write!(out, "{}", t.with_timezone(&jst()).format(fmt));
    }
});
