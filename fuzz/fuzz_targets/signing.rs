//! Signature checks with fuzzed headers and body (signing.rs): Standard Webhooks verification as a
//! receiver runs it, and the generic HMAC check (hmac_digest + signature_matches). Never panic, and a
//! signature made with standard_sign always verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use renkei_core::signing::{
    hmac_digest, signature_matches, standard_sign, standard_verify, Algorithm, DigestEncoding, VerifyError,
};

/// A real Standard Webhooks secret (the spec's test vector) and a few broken ones.
const SECRETS: &[&str] = &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_b2xk", "whsec_", "whsec_***", "plainbase64=="];

/// Splits the input at 0xFF bytes (never part of UTF-8) into up to `N` fields; the last keeps the rest.
fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[data.len()..]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == 0xFF) {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out[N - 1] = rest;
    out
}

fn header(b: &[u8], present: bool) -> Option<&str> {
    if present {
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else { return };
    // Header values as a receiver gets them: text (`HeaderValue::to_str`), or absent.
    let [id, ts, sig, secret, body] = fields::<5>(data);
    // The clock and the configured tolerance are the receiver's own: realistic values only.
    let now: i64 = 1_795_000_000;
    let tolerance: i64 = [0, 300, 3600, 86_400 * 365][(sel >> 4) as usize & 3];
    let secret_text = std::str::from_utf8(secret).unwrap_or("");
    let secrets: Vec<&str> = match sel & 3 {
        0 => vec![SECRETS[0]],
        1 => SECRETS.to_vec(),
        2 => vec![secret_text],
        _ => vec![],
    };

    let id_h = header(id, sel & 4 == 0);
    let ts_h = header(ts, sel & 8 == 0);
    let result = standard_verify(&secrets, id_h, ts_h, header(sig, true), body, now, tolerance);
    let _ = result.as_ref().map_err(ToString::to_string);

    // A request signed with the secret verifies, whatever id, timestamp and body it carries.
    if let (Some(id), Some(ts_text)) = (id_h, ts_h) {
        if let Ok(t) = ts_text.trim().parse::<i64>() {
            if now.checked_sub(t).and_then(i64::checked_abs).is_some_and(|d| d <= tolerance) {
                for secret in &secrets {
                    if let Ok(good) = standard_sign(secret, id, t, body) {
                        let r = standard_verify(&secrets, Some(id), Some(ts_text), Some(&good), body, now, tolerance);
                        assert!(
                            r.is_ok() || matches!(r, Err(VerifyError::Secret(_))),
                            "own signature refused: {r:?}"
                        );
                    }
                }
            }
        }
    }

    // Generic HMAC (GitHub, Stripe-like): the receiver computes the digest and compares with the header.
    let algorithm = if sel & 0x40 == 0 { Algorithm::Sha256 } else { Algorithm::Sha1 };
    let encoding = if sel & 0x80 == 0 { DigestEncoding::Hex } else { DigestEncoding::Base64 };
    let expected = hmac_digest(algorithm, secret, body, encoding);
    if let Some(received) = header(sig, true) {
        let _ = signature_matches(received, &expected);
    }
    assert!(signature_matches(&expected, &expected));
    if encoding == DigestEncoding::Hex {
        assert!(signature_matches(&expected.to_ascii_uppercase(), &expected), "hex is compared case-insensitively");
    }
});
