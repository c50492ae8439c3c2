//! Keeping secrets out of history, logs and API answers.
//!
//! Two rules: headers that carry credentials by name are masked whatever their value, and every value the
//! config took from the environment or marked as a secret is masked wherever it appears (a token pasted
//! into a URL or a body is found too).

use std::borrow::Cow;

pub const MASK: &str = "[REDACTED]";

/// Header names whose values are credentials, lower-case.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-renkei-token",
    "x-cybozu-api-token",
    "x-cybozu-authorization",
    "x-hd-apitoken",
    "x-api-key",
    "api-key",
];

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        // Very short values would mask ordinary text ("1", "on") without protecting anything.
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn is_secret_header(name: &str) -> bool {
        SECRET_HEADERS.contains(&name.to_ascii_lowercase().as_str())
    }

    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(s);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }

    pub fn header(&self, name: &str, value: &str) -> String {
        if Self::is_secret_header(name) {
            MASK.to_owned()
        } else {
            self.text(value).into_owned()
        }
    }

    pub fn bytes(&self, b: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(b) {
            Ok(s) => self.text(s).into_owned().into_bytes(),
            // Non-UTF-8 (e.g. Shift_JIS CSV): secrets are ASCII tokens in practice, so mask at byte level.
            Err(_) => {
                let mut out = b.to_vec();
                for secret in &self.secrets {
                    out = replace_bytes(&out, secret.as_bytes(), MASK.as_bytes());
                }
                out
            }
        }
    }
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets_everywhere() {
        let r = Redactor::new(["s3cr3t-token".to_owned(), "x".to_owned()]);
        assert_eq!(r.text("url?token=s3cr3t-token&x=1"), "url?token=[REDACTED]&x=1");
        assert_eq!(r.header("Authorization", "Bearer abc"), MASK);
        assert_eq!(r.header("X-Other", "has s3cr3t-token"), "has [REDACTED]");
        assert_eq!(r.header("X-Other", "x"), "x");
        let sjis = [0x82, 0xa0, b's', b'3', b'c', b'r', b'3', b't', b'-', b't', b'o', b'k', b'e', b'n'];
        assert_eq!(r.bytes(&sjis), [&[0x82, 0xa0][..], MASK.as_bytes()].concat());
    }
}
