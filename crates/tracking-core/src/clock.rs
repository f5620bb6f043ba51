//! Instant arithmetic that never panics, whatever duration a caller or a config passes.

use std::time::{Duration, Instant};

/// The longest wait a deadline stands for: durations above it (up to `Duration::MAX`) mean
/// "practically never" and are clamped to it, so adding them to an `Instant` cannot overflow.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `from + d`, clamped to `from + FOREVER` (and to `from` where even that does not fit).
pub(crate) fn add(from: Instant, d: Duration) -> Instant {
    from.checked_add(d.min(FOREVER))
        .or_else(|| from.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(from)
}

/// `Instant::now() + d` without panicking.
pub(crate) fn after(d: Duration) -> Instant {
    add(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_do_not_overflow() {
        let now = Instant::now();
        assert!(add(now, Duration::MAX) > now);
        assert!(after(Duration::from_secs(u64::MAX)) > now);
        assert_eq!(
            add(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
