//! Dates and date-times as Japanese business systems write them.
//!
//! Webhook values arrive as `2026/11/22`, `令和8年11月22日`, `R8.11.22`, `２０２６－１１－２２`,
//! `2026-11-22T10:30:00+09:00` and more; targets want one fixed form (kintone `YYYY-MM-DD` and UTC ISO
//! datetimes, eセールスマネージャー `yyyy/mm/dd`, Questetra `2011-10-27 12:34`). This module reads all
//! of those forms and formats dates back out, including as 和暦 (Japanese era) text.
//!
//! It never does I/O and never reads the clock: every function is a pure conversion of its arguments,
//! and nothing here needs "now".

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime};

/// An imperial era (元号). `first`/`last` are (year, month, day) so they can be compared as tuples.
struct Era {
    name: &'static str,
    letter: char,
    /// The western year of era year 1 (元年).
    base: i32,
    first: (i32, u32, u32),
    last: Option<(i32, u32, u32)>,
}

impl Era {
    fn contains(&self, d: NaiveDate) -> bool {
        let ymd = (d.year(), d.month(), d.day());
        self.first <= ymd && self.last.is_none_or(|last| ymd <= last)
    }
}

/// Newest first, so the most common eras are tried first. Meiji starts on 1868-01-01 because its year 1
/// is 1868; Japan used the lunar calendar until 1872, and those dates are taken as proleptic Gregorian.
const ERAS: [Era; 5] = [
    Era { name: "令和", letter: 'R', base: 2019, first: (2019, 5, 1), last: None },
    Era { name: "平成", letter: 'H', base: 1989, first: (1989, 1, 8), last: Some((2019, 4, 30)) },
    Era { name: "昭和", letter: 'S', base: 1926, first: (1926, 12, 25), last: Some((1989, 1, 7)) },
    Era { name: "大正", letter: 'T', base: 1912, first: (1912, 7, 30), last: Some((1926, 12, 24)) },
    Era { name: "明治", letter: 'M', base: 1868, first: (1868, 1, 1), last: Some((1912, 7, 29)) },
];

const JST_SECONDS: i32 = 9 * 3600;

/// Japan Standard Time (+09:00): assumed when a datetime has no offset.
pub fn jst() -> FixedOffset {
    FixedOffset::east_opt(JST_SECONDS).expect("+09:00 is within chrono's offset range")
}

/// Parses a date in any common Japanese or ISO form; None if it is not one (or not a real date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    parse_parts(s).map(|(date, _, _)| date)
}

/// Parses a date-time; a value without an offset is taken as JST. A date alone is midnight JST.
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    let (date, time, offset) = parse_parts(s)?;
    let local = date.and_time(time.unwrap_or(NaiveTime::MIN));
    local.and_local_timezone(offset.unwrap_or_else(jst)).single()
}

/// Formats with chrono's strftime syntax, e.g. "%Y/%m/%d".
///
/// A format chrono cannot apply to a date (an unknown specifier, or a time one such as `%H`) yields the
/// ISO date `YYYY-MM-DD` instead: this is called from template filters with user-written formats, and a
/// panic there (which `to_string()` on a failing chrono format would cause) must not take down delivery.
pub fn format_date(d: NaiveDate, fmt: &str) -> String {
    let mut out = String::new();
    match write!(out, "{}", d.format(fmt)) {
        Ok(()) => out,
        Err(_) => d.format("%Y-%m-%d").to_string(),
    }
}

/// The date in Japanese era form: `令和8年11月22日` (year 1 written 元: `令和元年5月1日`).
pub fn wareki(d: NaiveDate) -> Option<String> {
    let era = ERAS.iter().find(|e| e.contains(d))?;
    let year = d.year() - era.base + 1;
    let year = if year == 1 { "元".to_string() } else { year.to_string() };
    Some(format!("{}{}年{}月{}日", era.name, year, d.month(), d.day()))
}

/// Maps the full-width ASCII block (０-９, ／, －, ．, ：, Ｒ, ...) and the ideographic space to ASCII, so
/// the parser below only has to know one spelling of each character. 年月日時分秒 are left alone.
fn normalise(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// The date, the time if one follows, and the offset if the time has one.
fn parse_parts(s: &str) -> Option<(NaiveDate, Option<NaiveTime>, Option<FixedOffset>)> {
    let norm = normalise(s);
    let (date, rest) = parse_date_prefix(norm.trim())?;
    // ISO puts `T` between date and time; everyone else a space, or nothing after a kanji `日`.
    let rest = match rest.strip_prefix(['T', 't']) {
        Some(r) => r,
        None if rest.trim_start().is_empty() => return Some((date, None, None)),
        None => rest.trim_start(),
    };
    let (time, rest) = parse_time(rest)?;
    let (offset, rest) = parse_offset(rest)?;
    rest.is_empty().then_some((date, Some(time), offset))
}

/// A run of ASCII digits whose length is in `min..=max`. Taking the whole run (not just `max` digits)
/// is what rejects `2026-11-2210:30` or a 3-digit month instead of silently splitting them.
fn digits(s: &str, min: usize, max: usize) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if !(min..=max).contains(&n) {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

fn parse_date_prefix(s: &str) -> Option<(NaiveDate, &str)> {
    if let Some((era, rest)) = strip_era(s) {
        let rest = rest.trim_start();
        let (year, rest) = match rest.strip_prefix('元') {
            Some(r) => (1, r),
            None => digits(rest, 1, 4)?,
        };
        let (month, day, rest) = month_day(rest)?;
        // Year 0 or an overlong era year lands outside the era and is rejected by `contains`.
        let date = NaiveDate::from_ymd_opt(era.base + year as i32 - 1, month, day)?;
        return era.contains(date).then_some((date, rest));
    }
    let run = s.bytes().take_while(u8::is_ascii_digit).count();
    if run == 8 {
        let date = NaiveDate::from_ymd_opt(s[..4].parse().ok()?, s[4..6].parse().ok()?, s[6..8].parse().ok()?)?;
        return Some((date, &s[8..]));
    }
    // Only four-digit western years: `26/11/22` could be 2026, 1926 or 平成26, so it is refused.
    let (year, rest) = digits(s, 4, 4)?;
    let (month, day, rest) = month_day(rest)?;
    Some((NaiveDate::from_ymd_opt(year as i32, month, day)?, rest))
}

/// An era name (`令和`) or letter (`R`, `r`) at the start of `s`.
fn strip_era(s: &str) -> Option<(&'static Era, &str)> {
    if let Some((era, rest)) = ERAS.iter().find_map(|e| s.strip_prefix(e.name).map(|r| (e, r))) {
        return Some((era, rest));
    }
    let letter = s.chars().next()?.to_ascii_uppercase();
    let era = ERAS.iter().find(|e| e.letter == letter)?;
    // The letter matched an ASCII era letter, so byte 1 is a char boundary.
    Some((era, &s[1..]))
}

/// Month and day after the year: `年11月22日` (spaces allowed, 日 optional) or `-11-22` with one
/// separator (`-`, `/` or `.`) used twice, so `2026/11-22` is refused as a likely typo.
fn month_day(s: &str) -> Option<(u32, u32, &str)> {
    if let Some(r) = s.trim_start().strip_prefix('年') {
        let (month, r) = digits(r.trim_start(), 1, 2)?;
        let r = r.trim_start().strip_prefix('月')?;
        let (day, r) = digits(r.trim_start(), 1, 2)?;
        let r = r.trim_start();
        return Some((month, day, r.strip_prefix('日').unwrap_or(r)));
    }
    let sep = s.chars().next().filter(|c| matches!(c, '-' | '/' | '.'))?;
    let (month, r) = digits(&s[1..], 1, 2)?;
    let (day, r) = digits(r.strip_prefix(sep)?, 1, 2)?;
    Some((month, day, r))
}

/// `10:30`, `10:30:15`, `10:30:15.123`, or `10時30分15秒` (minutes and seconds optional).
fn parse_time(s: &str) -> Option<(NaiveTime, &str)> {
    let (hour, rest) = digits(s, 1, 2)?;
    if let Some(r) = rest.strip_prefix(':') {
        let (minute, r) = digits(r, 2, 2)?;
        let Some(r) = r.strip_prefix(':') else {
            return Some((NaiveTime::from_hms_opt(hour, minute, 0)?, r));
        };
        let (second, r) = digits(r, 2, 2)?;
        let (nano, r) = fraction(r)?;
        return Some((NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?, r));
    }
    let mut r = rest.trim_start().strip_prefix('時')?.trim_start();
    let mut parts = [0u32; 2];
    for (part, unit) in parts.iter_mut().zip(['分', '秒']) {
        match digits(r, 1, 2) {
            Some((n, after)) => {
                *part = n;
                r = after.trim_start().strip_prefix(unit)?.trim_start();
            }
            None => break,
        }
    }
    Some((NaiveTime::from_hms_opt(hour, parts[0], parts[1])?, r))
}

/// Fractional seconds as nanoseconds; digits past the ninth are below chrono's precision and dropped.
fn fraction(s: &str) -> Option<(u32, &str)> {
    let Some(r) = s.strip_prefix('.') else { return Some((0, s)) };
    let n = r.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let kept = &r[..n.min(9)];
    let nano = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
    Some((nano, &r[n..]))
}

/// `Z`, `+09:00`, `+0900` or `+09`; no offset at all is `None` (the caller then assumes JST).
fn parse_offset(s: &str) -> Option<(Option<FixedOffset>, &str)> {
    if let Some(r) = s.strip_prefix(['Z', 'z']) {
        return Some((FixedOffset::east_opt(0), r));
    }
    let sign = match s.chars().next() {
        Some('+') => 1,
        Some('-') => -1,
        _ => return Some((None, s)),
    };
    let r = &s[1..];
    let (hours, minutes, r) = match r.bytes().take_while(u8::is_ascii_digit).count() {
        4 => (r[..2].parse::<i32>().ok()?, r[2..4].parse::<i32>().ok()?, &r[4..]),
        2 => match r[2..].strip_prefix(':') {
            Some(m) => {
                let (minutes, rest) = digits(m, 2, 2)?;
                (r[..2].parse().ok()?, minutes as i32, rest)
            }
            None => (r[..2].parse().ok()?, 0, &r[2..]),
        },
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((Some(FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))?), r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// Runs `f` over every input and reports all mismatches at once, so one run shows every broken form.
    fn table<T: ToString>(f: impl Fn(&str) -> Option<T>, cases: &[(&str, Option<&str>)]) {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|&(input, want)| {
                let got = f(input).map(|v| v.to_string());
                (got.as_deref() != want).then(|| format!("{input:?}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("test date")
    }

    #[test]
    fn western_dates() {
        table(
            parse_date,
            &[
                ("2026-11-22", Some("2026-11-22")),
                ("2026/11/22", Some("2026-11-22")),
                ("2026.11.22", Some("2026-11-22")),
                ("20261122", Some("2026-11-22")),
                ("2026/1/5", Some("2026-01-05")),
                ("  2026-11-22\n", Some("2026-11-22")),
                ("2026年11月22日", Some("2026-11-22")),
                ("2026年1月5日", Some("2026-01-05")),
                ("2026 年 11 月 22 日", Some("2026-11-22")),
                ("2026年11月22", Some("2026-11-22")),
                ("2028-02-29", Some("2028-02-29")),
            ],
        );
    }

    #[test]
    fn era_dates() {
        table(
            parse_date,
            &[
                ("令和8年11月22日", Some("2026-11-22")),
                ("令和 8年 11月 22日", Some("2026-11-22")),
                ("R8.11.22", Some("2026-11-22")),
                ("R8/11/22", Some("2026-11-22")),
                ("R08.11.22", Some("2026-11-22")),
                ("r8.11.22", Some("2026-11-22")),
                ("R8年11月22日", Some("2026-11-22")),
                ("令和元年5月1日", Some("2019-05-01")),
                ("R1.5.1", Some("2019-05-01")),
                ("R1.4.30", None),
                ("H31.4.30", Some("2019-04-30")),
                ("H31.5.1", None),
                ("平成32年1月1日", None),
                ("平成元年1月8日", Some("1989-01-08")),
                ("H1.1.7", None),
                ("昭和64年1月7日", Some("1989-01-07")),
                ("S64.1.8", None),
                ("S1.12.25", Some("1926-12-25")),
                ("S1.12.24", None),
                ("大正15年12月24日", Some("1926-12-24")),
                ("T1.7.30", Some("1912-07-30")),
                ("T1.7.29", None),
                ("明治45年7月29日", Some("1912-07-29")),
                ("M45.7.30", None),
                ("明治元年1月1日", Some("1868-01-01")),
                ("R0.5.1", None),
                ("X8.11.22", None),
            ],
        );
    }

    #[test]
    fn full_width_input() {
        table(
            parse_date,
            &[
                ("２０２６／１１／２２", Some("2026-11-22")),
                ("２０２６－１１－２２", Some("2026-11-22")),
                ("２０２６．１１．２２", Some("2026-11-22")),
                ("令和８年１１月２２日", Some("2026-11-22")),
                ("Ｒ８．１１．２２", Some("2026-11-22")),
                ("\u{3000}2026年11月22日\u{3000}", Some("2026-11-22")),
            ],
        );
    }

    #[test]
    fn invalid_dates() {
        table(
            parse_date,
            &[
                ("2026-02-30", None),
                ("2027-02-29", None),
                ("2026-13-01", None),
                ("2026-00-10", None),
                ("26/11/22", None),
                ("202611220", None),
                ("2026-1122", None),
                ("2026/11-22", None),
                ("2026-11", None),
                ("2026年11月", None),
                ("2026-11-22x", None),
                ("2026-11-22T", None),
                ("", None),
                ("abc", None),
            ],
        );
    }

    #[test]
    fn date_part_of_datetimes() {
        table(
            parse_date,
            &[
                ("2026-11-22T10:00:00+09:00", Some("2026-11-22")),
                ("2026-11-22T23:30:00-05:00", Some("2026-11-22")),
                ("2026/11/22 10:30", Some("2026-11-22")),
                ("2026年11月22日 10時30分", Some("2026-11-22")),
                ("2026-11-22 25:00", None),
            ],
        );
    }

    #[test]
    fn datetimes() {
        table(
            |s| parse_datetime(s).map(|d| d.to_rfc3339()),
            &[
                ("2026-11-22T01:30:00Z", Some("2026-11-22T01:30:00+00:00")),
                ("2026-11-22T10:30:00+09:00", Some("2026-11-22T10:30:00+09:00")),
                ("2026-11-22T10:30:00+0900", Some("2026-11-22T10:30:00+09:00")),
                ("2026-11-22T10:30:00-05:30", Some("2026-11-22T10:30:00-05:30")),
                ("2026-11-22T10:30:00.123Z", Some("2026-11-22T10:30:00.123+00:00")),
                ("2026-11-22T10:30:00.1234567891+09:00", Some("2026-11-22T10:30:00.123456789+09:00")),
                ("2026-11-22T10:30:00", Some("2026-11-22T10:30:00+09:00")),
                ("2026-11-22 10:30", Some("2026-11-22T10:30:00+09:00")),
                ("2026-11-22 10:30:15", Some("2026-11-22T10:30:15+09:00")),
                ("2026/11/22 10:30", Some("2026-11-22T10:30:00+09:00")),
                ("2026/11/22 9:05:15", Some("2026-11-22T09:05:15+09:00")),
                ("2026年11月22日 10時30分", Some("2026-11-22T10:30:00+09:00")),
                ("2026年11月22日10時30分15秒", Some("2026-11-22T10:30:15+09:00")),
                ("2026年11月22日 10時", Some("2026-11-22T10:00:00+09:00")),
                ("2026年11月22日 10:30", Some("2026-11-22T10:30:00+09:00")),
                ("R8.11.22 10:30", Some("2026-11-22T10:30:00+09:00")),
                ("２０２６／１１／２２　１０：３０", Some("2026-11-22T10:30:00+09:00")),
                ("2026-11-22", Some("2026-11-22T00:00:00+09:00")),
                ("2026-11-22 24:00", None),
                ("2026-11-22 10:60", None),
                ("2026-11-22 10", None),
                ("2026-11-22 10:3", None),
                ("2026-11-22T10:30:00.", None),
                ("2026-11-22T10:30:00+25:00", None),
                ("2026-11-22T10:30:00+09:00 extra", None),
                ("2026-02-30 10:30", None),
            ],
        );
    }

    #[test]
    fn no_offset_means_jst() {
        assert_eq!(jst().local_minus_utc(), 9 * 3600);
        let dt = parse_datetime("2026-11-22 10:30").expect("parses");
        assert_eq!(dt.offset(), &jst());
        assert_eq!(dt.with_timezone(&Utc).to_rfc3339(), "2026-11-22T01:30:00+00:00");
    }

    #[test]
    fn formats() {
        let d = date("2026-01-05");
        table(
            |fmt| Some(format_date(d, fmt)),
            &[
                ("%Y/%m/%d", Some("2026/01/05")),
                ("%Y年%-m月%-d日", Some("2026年1月5日")),
                ("%H:%M", Some("2026-01-05")),
                ("%Q", Some("2026-01-05")),
            ],
        );
    }

    #[test]
    fn wareki_forms() {
        table(
            |s| wareki(date(s)),
            &[
                ("2026-11-22", Some("令和8年11月22日")),
                ("2019-05-01", Some("令和元年5月1日")),
                ("2019-04-30", Some("平成31年4月30日")),
                ("1989-01-08", Some("平成元年1月8日")),
                ("1989-01-07", Some("昭和64年1月7日")),
                ("1926-12-25", Some("昭和元年12月25日")),
                ("1926-12-24", Some("大正15年12月24日")),
                ("1912-07-30", Some("大正元年7月30日")),
                ("1912-07-29", Some("明治45年7月29日")),
                ("1868-01-01", Some("明治元年1月1日")),
                ("1867-12-31", None),
            ],
        );
    }

    #[test]
    fn wareki_round_trips_every_day() {
        let mut d = date("1868-01-01");
        while d <= date("2040-12-31") {
            let text = wareki(d).unwrap_or_else(|| panic!("{d} has no era"));
            assert_eq!(parse_date(&text), Some(d), "{d} -> {text}");
            d = d.succ_opt().expect("in range");
        }
        // Era years of three and four digits read back too (令和100年 is 2118; 令和 has no end, and ISO years go
        // to 9999; found by `fuzz/`'s `dates` target).
        for (iso, text) in [("2118-01-01", "令和100年1月1日"), ("6020-01-02", "令和4002年1月2日")] {
            assert_eq!(wareki(date(iso)).as_deref(), Some(text));
            assert_eq!(parse_date(text), Some(date(iso)));
        }
    }
}
