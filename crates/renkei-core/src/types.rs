//! Small typed values parsed at the edge: names, durations, sizes, secrets.
//!
//! "Parse, don't validate": a config value becomes one of these once, when the file is read, so nothing
//! further in checks strings again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The name of a source, destination, flow or table: letters, digits, `-` and `_`, 1 to 64 characters.
/// It appears in URLs (`/hooks/{source}`) and metric labels, hence the narrow alphabet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, String> {
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Name(s.to_owned()))
        } else {
            Err(format!("`{s}` is not a valid name: use 1 to 64 letters, digits, `-` or `_`"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name renkei makes from a valid one (`subscription-NAME`): same alphabet, may pass 64 characters.
    pub(crate) fn derived(s: &str) -> Name {
        debug_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        Name(s.to_owned())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration written as `500ms`, `30s`, `5m`, `1h`, `30d`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    pub fn parse(s: &str) -> Result<Span, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 30s, 5m, 1h, 7d)"))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("`{s}` is not a duration"));
        }
        Ok(Span(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => {
                let secs = n.as_f64().unwrap_or(-1.0);
                Span::parse(&secs.to_string()).map_err(serde::de::Error::custom)
            }
            serde_json::Value::String(s) => Span::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("expected a duration like 30s, got {other}"))),
        }
    }
}

/// A size in bytes written as `64KiB`, `10MiB`, `1MB`, or a number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size (e.g. 64KiB, 10MiB)"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1024,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1024 * 1024 * 1024,
            _ => return Err(format!("`{s}` has an unknown unit (use B, KiB, MiB, GiB)")),
        };
        Ok(ByteSize(n.saturating_mul(mult)))
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(ByteSize)
                .ok_or_else(|| serde::de::Error::custom("a size must be a whole number of bytes")),
            serde_json::Value::String(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("expected a size like 64KiB, got {other}"))),
        }
    }
}

/// A credential. Its `Debug` never shows the value, so a secret cannot reach a log by `{:?}`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("approval-to-esm").is_ok());
        assert!(Name::parse("htdb_csv2").is_ok());
        assert!(Name::parse("").is_err());
        assert!(Name::parse("a b").is_err());
        assert!(Name::parse("../x").is_err());
    }

    #[test]
    fn spans() {
        assert_eq!(Span::parse("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(Span::parse("1s").unwrap().0, Duration::from_secs(1));
        assert_eq!(Span::parse("1h").unwrap().0, Duration::from_secs(3600));
        assert_eq!(Span::parse("30d").unwrap().0, Duration::from_secs(30 * 86400));
        assert_eq!(Span::parse("90").unwrap().0, Duration::from_secs(90));
        assert!(Span::parse("1 fortnight").is_err());
        assert!(Span::parse("abc").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64KiB").unwrap().0, 65536);
        assert_eq!(ByteSize::parse("10MiB").unwrap().0, 10 * 1024 * 1024);
        assert_eq!(ByteSize::parse("1MB").unwrap().0, 1_000_000);
        assert!(ByteSize::parse("10 parsecs").is_err());
    }

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), "hunter2");
    }
}
