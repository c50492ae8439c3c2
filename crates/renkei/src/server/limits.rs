//! Abuse limits at the door: requests per second per source and per client address (token buckets), answered
//! 429 with `Retry-After` before the body is read, so a flood on one source neither fills the disk nor starves
//! the others.
//!
//! Buckets live in memory, per node. A refused request is counted in the metrics but not stored: storing
//! every request of a flood would be the flood's goal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use renkei_core::config::RateLimit;

#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets not touched for this long are forgotten, so addresses seen once do not accumulate.
const IDLE: Duration = Duration::from_secs(600);

impl Limiter {
    /// Takes one token from `key`'s bucket; `Err(wait)` when there is none, with how long until there is.
    pub fn take(&self, key: &str, limit: &RateLimit, now: Instant) -> Result<(), Duration> {
        let rate = limit.per_second.max(f64::MIN_POSITIVE);
        let burst = f64::from(limit.burst.max(1));
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.at) < IDLE);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::default();
        let limit = RateLimit { per_second: 2.0, burst: 3 };
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take("s", &limit, t), Ok(()));
        }
        let wait = l.take("s", &limit, t).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(l.take("other", &limit, t), Ok(()), "buckets are per key");
        assert_eq!(l.take("s", &limit, t + Duration::from_millis(500)), Ok(()));
        assert!(l.take("s", &limit, t + Duration::from_millis(500)).is_err());
    }
}
