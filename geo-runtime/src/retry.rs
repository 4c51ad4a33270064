//! Retrying after a failure, shared by the sync and the verification workers: Geo's backoff and
//! the cut of a failure message to its column.
//!
//! The backoff is Geo's formula, `n⁴ + 15 + rand(30)·(n+1)` seconds after the n-th consecutive
//! failure, capped at one hour (four when the object is missing on the primary) plus a
//! first-retry delay. Geo draws whole seconds; here the random part has microsecond resolution,
//! so a burst of failures spreads out instead of retrying in lockstep.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The usual cap on the wait between retries.
pub const RETRY_CAP: Duration = Duration::from_secs(3600);
/// The cap when the primary reported the object missing: such rows rarely heal quickly.
pub const MISSING_ON_PRIMARY_CAP: Duration = Duration::from_secs(4 * 3600);

/// The wait after the `n`-th consecutive failure (n ≥ 1), before the cap.
pub fn delay(n: u32) -> Duration {
    let n = u64::from(n.max(1));
    let fixed = n.saturating_pow(4).saturating_add(15);
    // rand(0..30 s) · (n + 1), drawn in microseconds.
    let jitter_us = fastrand::u64(0..30_000_000).saturating_mul(n + 1);
    Duration::from_secs(fixed).saturating_add(Duration::from_micros(jitter_us))
}

/// When a row that has now failed `retry_count` times in a row may be retried.
pub fn next_retry_at(
    now: DateTime<Utc>,
    retry_count: u32,
    missing_on_primary: bool,
) -> DateTime<Utc> {
    let cap = if missing_on_primary {
        MISSING_ON_PRIMARY_CAP
    } else {
        RETRY_CAP
    };
    let wait = delay(retry_count).min(cap.saturating_add(delay(1)));
    // Truncated to microseconds: what both databases store.
    let wait = TimeDelta::microseconds(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
    now.checked_add_signed(wait).unwrap_or(now)
}

/// Longest `last_sync_failure` / `verification_failure` kept, as Geo's `varchar(255)`.
pub const LAST_SYNC_FAILURE_MAX: usize = 255;

/// Cuts a failure message to [`LAST_SYNC_FAILURE_MAX`] characters (not bytes), so it always
/// fits its column and never splits a character.
pub fn truncate_failure(message: &str) -> String {
    match message.char_indices().nth(LAST_SYNC_FAILURE_MAX) {
        Some((at, _)) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_as_geo_and_is_capped() {
        let now = Utc::now();
        let secs =
            |n, missing| (next_retry_at(now, n, missing) - now).num_milliseconds() as f64 / 1000.0;
        // Geo's bands (16–74 s, 31–118 s, 96–212 s, 271–416 s), widened by the continuous
        // jitter to the top of its last second: 16–76, 31–121, 96–216, 271–421.
        for (n, lo, hi) in [
            (1, 16.0, 76.0),
            (2, 31.0, 121.0),
            (3, 96.0, 216.0),
            (4, 271.0, 421.0),
        ] {
            for _ in 0..200 {
                let s = secs(n, false);
                assert!((lo..hi).contains(&s), "n={n}: {s} s outside {lo}..{hi}");
            }
        }
        // From n = 8 the one-hour cap (plus a first-retry delay) applies.
        for n in [8, 20, 1000, u32::MAX] {
            let s = secs(n, false);
            assert!((3616.0..3676.0).contains(&s), "n={n}: {s} s");
            let s = secs(n, true);
            if n >= 11 {
                assert!((14416.0..14476.0).contains(&s), "missing, n={n}: {s} s");
            }
        }
        // Monotone in expectation: the lower bound of n+1 is above the lower bound of n.
        assert!(delay(5) >= Duration::from_secs(640));
    }

    #[test]
    fn a_burst_of_failures_spreads_out() {
        let now = Utc::now();
        let mut at: Vec<_> = (0..100).map(|_| next_retry_at(now, 3, false)).collect();
        at.sort();
        at.dedup();
        // Two of 100 microsecond draws coincide about once in 6,000 runs: a few shared times are
        // chance, lockstep would share nearly all.
        assert!(
            at.len() >= 98,
            "failures share retry times: {} distinct",
            at.len()
        );
        let spread = *at.last().expect("100") - at[0];
        assert!(spread > TimeDelta::seconds(30), "spread only {spread}");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate_failure("short"), "short");
        let long = "é".repeat(300);
        let cut = truncate_failure(&long);
        assert_eq!(cut.chars().count(), 255);
        assert!(long.starts_with(&cut));
        assert_eq!(truncate_failure(&"a".repeat(255)).len(), 255);
    }
}
