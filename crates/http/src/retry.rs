//! [`RetryConfig`], the retry decision table ([`RetryPolicy`]) and the backoff with jitter that
//! honours `Retry-After`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest a server's `Retry-After` can make a client wait before one retry (unless
/// [`RetryConfig::max_backoff`] is longer): MLflow's Python client caps its backoff at 120 s too.
/// A larger or absurd value (`Retry-After: 99999999999`, a date centuries ahead) is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Which HTTP status codes are worth retrying. Connection errors and timeouts are always retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Retry exactly these statuses (MLflow: 408, 429, 500, 502, 503, 504).
    Only(BTreeSet<u16>),
    /// Retry every 4xx and 5xx status except these (W&B: all but 400, 401, 402, 403, 404, 409,
    /// 410, 413, 422, 501).
    AllErrorsExcept(BTreeSet<u16>),
}

impl RetryPolicy {
    /// The common set used by MLflow's Python client and most object stores:
    /// 408, 429, 500, 502, 503, 504.
    pub fn standard() -> Self {
        RetryPolicy::Only([408, 429, 500, 502, 503, 504].into_iter().collect())
    }

    /// W&B's rule: every 4xx/5xx except 400, 401, 402, 403, 404, 409, 410, 413, 422 and 501.
    pub fn wandb() -> Self {
        RetryPolicy::AllErrorsExcept(
            [400, 401, 402, 403, 404, 409, 410, 413, 422, 501]
                .into_iter()
                .collect(),
        )
    }

    /// Whether a response with `status` should be retried.
    pub fn is_retryable(&self, status: u16) -> bool {
        match self {
            RetryPolicy::Only(set) => set.contains(&status),
            RetryPolicy::AllErrorsExcept(set) => {
                (400..600).contains(&status) && !set.contains(&status)
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::standard()
    }
}

/// Retry and timeout settings shared by every request of a client.
///
/// The wait before retry `n` (0-based) is `min(initial_backoff * backoff_factor^n, max_backoff)`
/// plus a uniformly random jitter in `[0, jitter)`, or the server's `Retry-After` when it sent one.
/// A request is given up when `max_retries` retries were made or when the next wait would end
/// after `retry_timeout` has elapsed since the first attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The longest backoff (without jitter).
    pub max_backoff: Duration,
    /// Growth factor between consecutive backoffs (≥ 1).
    pub backoff_factor: f64,
    /// Upper bound of the random jitter added to each backoff.
    pub jitter: Duration,
    /// Timeout of one attempt (connect + send + receive headers and body).
    pub request_timeout: Duration,
    /// Total time budget for one logical request, all attempts and waits included.
    pub retry_timeout: Duration,
    /// Which statuses are retried.
    pub policy: RetryPolicy,
}

impl Default for RetryConfig {
    /// Close to MLflow's Python client: 7 retries, backoff 1 s doubling up to 120 s, up to 1 s
    /// jitter, 120 s request timeout, 5 minutes in total, the [`RetryPolicy::standard`] statuses.
    fn default() -> Self {
        RetryConfig {
            max_retries: 7,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(120),
            backoff_factor: 2.0,
            jitter: Duration::from_secs(1),
            request_timeout: Duration::from_secs(120),
            retry_timeout: Duration::from_secs(300),
            policy: RetryPolicy::standard(),
        }
    }
}

impl RetryConfig {
    /// No retries at all (one attempt), other settings default.
    pub fn no_retries() -> Self {
        RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// The backoff before retry number `retry` (0-based), without jitter and without
    /// `Retry-After`.
    pub fn base_backoff(&self, retry: u32) -> Duration {
        let factor = if self.backoff_factor.is_finite() && self.backoff_factor >= 1.0 {
            self.backoff_factor
        } else {
            1.0
        };
        let exp = factor.powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let secs = self.initial_backoff.as_secs_f64() * exp;
        let max = self.max_backoff.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The wait before retry number `retry`: the server's `Retry-After` if given (at most
    /// [`MAX_RETRY_AFTER`] or `max_backoff`, whichever is longer), else the base backoff plus
    /// jitter drawn from `[0, jitter)` using `unit` in `[0, 1)`.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(MAX_RETRY_AFTER.max(self.max_backoff));
        }
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.base_backoff(retry) + self.jitter.mul_f64(unit)
    }

    /// [`backoff`](Self::backoff) with a random jitter.
    pub fn backoff_random(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff(retry, retry_after, rand::random::<f64>())
    }
}

/// Parses a `Retry-After` header value: delay-seconds (`"120"`) or an HTTP date
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`, also the obsolete RFC 850 and asctime forms). A date in the
/// past gives zero. Returns `None` for anything unparseable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = parse_http_date(v)?;
    let when = SystemTime::from(when);
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn parse_http_date(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc2822(v) {
        return Some(d.with_timezone(&Utc));
    }
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; asctime: "Sun Nov  6 08:49:37 1994".
    for fmt in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(v, fmt) {
            return Some(n.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_policy_table() {
        let p = RetryPolicy::standard();
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(p.is_retryable(s), "{s}");
        }
        for s in [200, 204, 301, 400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert!(!p.is_retryable(s), "{s}");
        }
    }

    #[test]
    fn wandb_policy_table() {
        let p = RetryPolicy::wandb();
        for s in [400, 401, 402, 403, 404, 409, 410, 413, 422, 501, 200, 302] {
            assert!(!p.is_retryable(s), "{s}");
        }
        for s in [405, 408, 418, 429, 500, 502, 503, 504, 599] {
            assert!(p.is_retryable(s), "{s}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let c = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_factor: 2.0,
            jitter: Duration::from_millis(50),
            ..RetryConfig::default()
        };
        assert_eq!(c.base_backoff(0), Duration::from_millis(100));
        assert_eq!(c.base_backoff(1), Duration::from_millis(200));
        assert_eq!(c.base_backoff(3), Duration::from_millis(800));
        assert_eq!(c.base_backoff(4), Duration::from_secs(1));
        assert_eq!(c.base_backoff(u32::MAX), Duration::from_secs(1));
        assert_eq!(c.backoff(0, None, 0.0), Duration::from_millis(100));
        assert_eq!(c.backoff(0, None, 0.5), Duration::from_millis(125));
        assert_eq!(
            c.backoff(2, Some(Duration::from_secs(7)), 0.9),
            Duration::from_secs(7)
        );
        // A huge Retry-After is capped (it used to overflow `Instant + Duration`).
        assert_eq!(c.backoff(0, Some(Duration::MAX), 0.0), MAX_RETRY_AFTER);
        assert_eq!(
            c.backoff(0, Some(Duration::from_secs(u64::MAX)), 0.0),
            MAX_RETRY_AFTER
        );
        // Nonsense factors do not panic or shrink.
        let odd = RetryConfig {
            backoff_factor: f64::NAN,
            ..c.clone()
        };
        assert_eq!(odd.base_backoff(5), Duration::from_millis(100));
        assert_eq!(c.backoff(0, None, f64::NAN), Duration::from_millis(100));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37Z
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:39 1994", now),
            Some(Duration::from_secs(2))
        );
        // Past dates mean "now".
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "soon", "-5", "1.5", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn retry_after_never_panics(s in ".{0,64}") {
            let _ = parse_retry_after(&s, SystemTime::now());
        }

        #[test]
        fn backoff_is_bounded(retry in 0u32..100, unit in 0.0f64..1.0) {
            let c = RetryConfig::default();
            let b = c.backoff(retry, None, unit);
            proptest::prop_assert!(b <= c.max_backoff + c.jitter);
            proptest::prop_assert!(b >= c.base_backoff(0).min(c.max_backoff));
        }

        #[test]
        fn integer_seconds_roundtrip(n in 0u64..10_000_000) {
            proptest::prop_assert_eq!(
                parse_retry_after(&n.to_string(), SystemTime::now()),
                Some(Duration::from_secs(n))
            );
        }
    }
}
