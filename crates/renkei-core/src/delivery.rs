//! The delivery state machine and the retry policy.
//!
//! ```text
//! Pending ──claim──▶ InFlight ──2xx, last step──▶ Succeeded
//!    ▲                  │ ├────transient, tries left──▶ Retrying { at } ──claim──▶ InFlight
//!    │                  │ └────permanent or no tries left──▶ Dead { reason } ──retry/replay──▶ Pending
//!    └──release/lease───┘
//! Skipped: `when` was false at ingest; never claimed.
//! ```
//! Each transition is one stored write (see `renkei-store`); this module only decides which one.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RetryPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    InFlight,
    Retrying,
    Succeeded,
    Dead,
    Skipped,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::Pending, Status::InFlight, Status::Retrying, Status::Succeeded, Status::Dead, Status::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InFlight => "in_flight",
            Status::Retrying => "retrying",
            Status::Succeeded => "succeeded",
            Status::Dead => "dead",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Still owed to its destination: blocks later deliveries with the same ordering key.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::InFlight | Status::Retrying)
    }
}

/// How one HTTP try ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Network error, timeout, 408, 429, 5xx: try again later.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other 4xx, or a request that cannot be built: trying again would not help.
    Permanent {
        reason: String,
    },
}

/// Classifies a response status.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        408 | 429 | 500..=599 => Outcome::Transient { reason: format!("HTTP {status}"), retry_after },
        _ => Outcome::Permanent { reason: format!("HTTP {status}") },
    }
}

/// Parses `Retry-After`: seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Where a delivery goes after a failed try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    Retry { at: DateTime<Utc> },
    Dead { reason: String },
}

/// Longest wait a `Retry-After` may impose, so a confused server cannot park a delivery for a year.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

/// Decides what follows failed try number `tries` (1-based) of a step. `jitter` is uniform in [0, 1):
/// the wait is the exponential delay scaled into [delay/2, delay] ("equal jitter"), so retries of many
/// deliveries that failed together spread out, yet never come sooner than half the schedule.
pub fn after_failure(
    policy: &RetryPolicy,
    tries: u32,
    outcome: &Outcome,
    now: DateTime<Utc>,
    jitter: f64,
) -> AfterFailure {
    let (reason, retry_after) = match outcome {
        Outcome::Success => unreachable!("after_failure called with a success"),
        Outcome::Permanent { reason } => return AfterFailure::Dead { reason: reason.clone() },
        Outcome::Transient { reason, retry_after } => (reason, *retry_after),
    };
    if tries >= policy.max_attempts {
        return AfterFailure::Dead { reason: format!("{reason} (gave up after {tries} tries)") };
    }
    let wait = match retry_after {
        Some(ra) => ra.min(RETRY_AFTER_CAP),
        None => {
            let delay = backoff(policy, tries);
            delay.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
        }
    };
    AfterFailure::Retry { at: now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX) }
}

/// The un-jittered delay after try number `tries`: initial × 2^(tries−1), at most `max`.
pub fn backoff(policy: &RetryPolicy, tries: u32) -> Duration {
    let exp = 2f64.powi(tries.saturating_sub(1).min(62) as i32);
    policy.initial.0.mul_f64(exp).min(policy.max.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Span;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 5, initial: Span(Duration::from_secs(1)), max: Span(Duration::from_secs(10)) }
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify_status(204, None), Outcome::Success);
        for s in [408, 429, 500, 502, 503] {
            assert!(matches!(classify_status(s, None), Outcome::Transient { .. }), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(matches!(classify_status(s, None), Outcome::Permanent { .. }), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let p = policy();
        let secs: Vec<u64> = (1..=6).map(|t| backoff(&p, t).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let p = policy();
        let now = Utc::now();
        let t = Outcome::Transient { reason: "HTTP 500".into(), retry_after: None };
        let AfterFailure::Retry { at: lo } = after_failure(&p, 3, &t, now, 0.0) else { panic!() };
        let AfterFailure::Retry { at: hi } = after_failure(&p, 3, &t, now, 0.999_999) else { panic!() };
        assert_eq!((lo - now).num_milliseconds(), 2000);
        assert!((hi - now).num_milliseconds() >= 3999 && (hi - now).num_milliseconds() <= 4000);
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let now = Utc::now();
        let t = Outcome::Transient { reason: "HTTP 429".into(), retry_after: Some(Duration::from_secs(30)) };
        assert_eq!(
            after_failure(&policy(), 1, &t, now, 0.5),
            AfterFailure::Retry { at: now + chrono::Duration::seconds(30) }
        );
    }

    #[test]
    fn dead_after_max_attempts_or_permanent() {
        let now = Utc::now();
        let t = Outcome::Transient { reason: "HTTP 500".into(), retry_after: None };
        assert!(matches!(after_failure(&policy(), 5, &t, now, 0.5), AfterFailure::Dead { .. }));
        let p = Outcome::Permanent { reason: "HTTP 404".into() };
        assert_eq!(after_failure(&policy(), 1, &p, now, 0.5), AfterFailure::Dead { reason: "HTTP 404".into() });
    }

    #[test]
    fn parses_retry_after() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
