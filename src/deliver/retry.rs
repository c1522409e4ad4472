//! Backoff for sink requests: exponential with full jitter, `Retry-After` honoured.

use std::time::Duration;

/// The longest `Retry-After` honoured within a sync. A sink asking for more is left pending until the
/// next sync rather than holding this one (and the daemon's schedule) hostage.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

const BASE: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(30);

/// Whether an HTTP status is worth retrying: timeouts, rate limits and server errors.
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Delay before retry number `attempt` (0-based): uniformly random in [d/2, d] with
/// d = min(CAP, BASE·2^attempt), so many clients that failed together do not retry together.
pub fn backoff(attempt: u32) -> Duration {
    let d = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
    let half = d / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

/// `Retry-After` as delta-seconds or an HTTP date, relative to `now_unix` seconds.
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::from_secs(
        (at.unix_timestamp() - now_unix).max(0) as u64
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..30 {
            let d = backoff(attempt);
            let full = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert!(backoff(40) <= CAP);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3", 0), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4),
            Some(Duration::from_secs(6))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(s));
        }
        for s in [200, 400, 401, 403, 404, 413, 422] {
            assert!(!is_retryable(s));
        }
    }
}
