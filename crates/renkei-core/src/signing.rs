//! Webhook signatures: Standard Webhooks for what renkei sends, and the common HMAC schemes for what it
//! receives.
//!
//! Standard Webhooks (standardwebhooks.com): headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the base64 part of a
//! `whsec_` secret. Several signatures may be sent, space-separated (secret rotation), and a receiver accepts
//! any one that matches. Pure functions: the caller passes the time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the secret is not a `whsec_` followed by base64")]
    BadSecret,
}

fn key(secret: &str) -> Result<Vec<u8>, SignError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| SignError::BadSecret)
}

/// `v1,<signature>` of one message under one secret.
pub fn standard_sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignError> {
    let mut mac = HmacSha256::new_from_slice(&key(secret)?).map_err(|_| SignError::BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

/// Why an inbound signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header `{0}` is missing")]
    Missing(String),
    #[error("the signature does not match")]
    Mismatch,
    #[error("the timestamp is outside the allowed window ({0} s from now)")]
    Stale(i64),
    #[error("the timestamp `{0}` is not a number of seconds")]
    BadTimestamp(String),
    #[error(transparent)]
    Secret(#[from] SignError),
}

/// Checks a Standard Webhooks request against any of `secrets` (old and new during rotation), with the
/// timestamp within `tolerance_secs` of `now`.
pub fn standard_verify(
    secrets: &[&str],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let id = id.ok_or_else(|| VerifyError::Missing("webhook-id".into()))?;
    let ts_text = timestamp.ok_or_else(|| VerifyError::Missing("webhook-timestamp".into()))?;
    let sigs = signature.ok_or_else(|| VerifyError::Missing("webhook-signature".into()))?;
    let ts: i64 = ts_text.trim().parse().map_err(|_| VerifyError::BadTimestamp(ts_text.into()))?;
    // abs_diff: a timestamp far in the past or future (i64::MIN) must not overflow.
    if now.abs_diff(ts) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::Stale(ts.saturating_sub(now)));
    }
    for secret in secrets {
        let expected = standard_sign(secret, id, ts, body)?;
        if sigs.split(' ').any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes()))) {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// The HMAC algorithm of a generic signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Sha1,
    Sha256,
}

/// How the digest is written in the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestEncoding {
    #[default]
    Hex,
    Base64,
}

/// Computes a generic HMAC digest of `message`, encoded.
pub fn hmac_digest(algorithm: Algorithm, secret: &[u8], message: &[u8], encoding: DigestEncoding) -> String {
    let raw = match algorithm {
        Algorithm::Sha256 => {
            let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha1 => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
    };
    match encoding {
        DigestEncoding::Hex => raw.iter().map(|b| format!("{b:02x}")).collect(),
        DigestEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
    }
}

/// Compares a received signature with the expected one in constant time (hex compared case-insensitively).
pub fn signature_matches(received: &str, expected: &str) -> bool {
    let (r, e) = (received.trim(), expected);
    if r.len() != e.len() {
        return false;
    }
    let lower = r.to_ascii_lowercase();
    let candidate = if e.bytes().all(|b| b.is_ascii_hexdigit()) { lower.as_str() } else { r };
    bool::from(candidate.as_bytes().ct_eq(e.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_test_vector() {
        assert_eq!(standard_sign(SECRET, ID, TS, BODY).unwrap(), SIG);
    }

    #[test]
    fn verify_accepts_any_matching_signature_within_tolerance() {
        let ok = |secrets: &[&str], sig: &str, now: i64| {
            standard_verify(secrets, Some(ID), Some(&TS.to_string()), Some(sig), BODY, now, 300)
        };
        assert_eq!(ok(&[SECRET], SIG, TS), Ok(()));
        assert_eq!(ok(&["whsec_b2xk", SECRET], &format!("v1,bm9wZQ== {SIG}"), TS + 299), Ok(()));
        assert_eq!(ok(&[SECRET], SIG, TS + 301), Err(VerifyError::Stale(-301)));
        // A timestamp at the end of the range is stale, not an overflow (found by `fuzz/`).
        let far = standard_verify(&[SECRET], Some(ID), Some("-9223372036854775808"), Some(SIG), BODY, TS, 300);
        assert!(matches!(far, Err(VerifyError::Stale(_))), "{far:?}");
        assert_eq!(ok(&[SECRET], "v1,bm9wZQ==", TS), Err(VerifyError::Mismatch));
        let body_changed = standard_verify(&[SECRET], Some(ID), Some("1614265330"), Some(SIG), b"{}", TS, 300);
        assert_eq!(body_changed, Err(VerifyError::Mismatch));
        let missing = standard_verify(&[SECRET], Some(ID), None, Some(SIG), BODY, TS, 300);
        assert_eq!(missing, Err(VerifyError::Missing("webhook-timestamp".into())));
    }

    #[test]
    fn generic_hmac() {
        // RFC 4231 test case 2 (HMAC-SHA256, key "Jefe").
        let d = hmac_digest(Algorithm::Sha256, b"Jefe", b"what do ya want for nothing?", DigestEncoding::Hex);
        assert_eq!(d, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // RFC 2202 test case 2 (HMAC-SHA1).
        let d = hmac_digest(Algorithm::Sha1, b"Jefe", b"what do ya want for nothing?", DigestEncoding::Hex);
        assert_eq!(d, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        assert!(signature_matches("EFFCDF6AE5EB2FA2D27416D5F184DF9C259A7C79", &d));
        assert!(!signature_matches("effcdf6ae5eb2fa2d27416d5f184df9c259a7c7a", &d));
        let b = hmac_digest(Algorithm::Sha256, b"Jefe", b"what do ya want for nothing?", DigestEncoding::Base64);
        assert_eq!(b, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    }
}
