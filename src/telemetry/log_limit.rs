//! Rate limits for log lines that a remote peer can trigger once per request: an
//! outage or a flood must not flood the log. What is held back is counted and
//! reported with the next line let through.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most `per_second` lines a second for a message that can repeat once per request
/// (an outage must not flood the log); the rest are counted and reported with the next
/// line that is let through.
pub struct LogLimit {
    per_second: u64,
    window: AtomicU64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

/// The limit for "request failed" warnings.
pub static FAILURE_LOGS: LogLimit = LogLimit::new(10);

impl LogLimit {
    pub const fn new(per_second: u64) -> Self {
        LogLimit {
            per_second,
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one let through)` when this one may be logged.
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let window = now_ms / 1000;
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.in_window.store(0, Ordering::Relaxed);
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimit;

    #[test]
    fn a_repeating_message_is_limited_per_second_and_the_rest_counted() {
        let limit = LogLimit::new(3);
        let allowed: Vec<_> = (0..10).map(|_| limit.allow(5_000)).collect();
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(
            limit.allow(6_000),
            Some(7),
            "the next second reports what was held back"
        );
    }
}
