//! When a failed try may be retried, and the retry budget that keeps retries from
//! amplifying an outage (Envoy's idea: retries may add at most a fraction of live traffic).

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;

use crate::upstream::SendError;

/// RFC 9110 idempotent methods: repeating them has the same effect as sending once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether the request may go to another backend after `error`. `body_intact` says the
/// body (if any) can be sent again: it was empty, or no byte of it was read.
pub fn may_retry(method: &Method, error: &SendError, body_intact: bool) -> bool {
    match error {
        // Nothing reached the backend: safe for every method.
        SendError::Connect(_) => body_intact,
        // The backend may have acted on it: only when repeating is harmless.
        SendError::Timeout | SendError::Failed(_) => body_intact && is_idempotent(method),
        // The client broke its own request: nothing to retry.
        SendError::ClientBody(_) => false,
    }
}

/// Whether this retry spends budget. Retries after a refused connection add no load to
/// the failed backend and are already bounded by `attempts`, so they are free.
pub fn costs_budget(error: &SendError) -> bool {
    !matches!(error, SendError::Connect(_))
}

/// Counts requests and retries per one-second window; a retry is allowed while retries
/// stay under `min_per_second + budget x requests` (using the busier of this window and
/// the previous one, so the allowance does not collapse at a window boundary).
#[derive(Default)]
pub struct RetryBudget {
    /// The current one-second window, as seconds since the process started.
    window: AtomicU64,
    requests: AtomicU64,
    previous_requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new() -> Self {
        Self::default()
    }

    fn roll(&self, now_ms: u64) {
        let window = now_ms / 1000;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != window
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.requests.swap(0, Ordering::Relaxed);
            self.previous_requests
                .store(if window == seen + 1 { last } else { 0 }, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Called once per proxied request.
    pub fn record_request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is room.
    pub fn try_spend(&self, now_ms: u64, budget: f64, min_per_second: u32) -> bool {
        self.roll(now_ms);
        let traffic = self
            .requests
            .load(Ordering::Relaxed)
            .max(self.previous_requests.load(Ordering::Relaxed));
        let allowed = u64::from(min_per_second) + (budget * traffic as f64) as u64;
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < allowed).then_some(used + 1)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_retried_for_every_method() {
        let refused = SendError::Connect("refused".into());
        assert!(may_retry(&Method::POST, &refused, true));
        assert!(may_retry(&Method::PATCH, &refused, true));
        assert!(!may_retry(&Method::POST, &refused, false), "not once the body is gone");
    }

    #[test]
    fn failures_after_sending_are_retried_only_when_idempotent() {
        for error in [SendError::Timeout, SendError::Failed("reset".into())] {
            for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
                assert!(may_retry(&method, &error, true), "{method}");
            }
            assert!(!may_retry(&Method::POST, &error, true));
            assert!(!may_retry(&Method::PATCH, &error, true));
            assert!(!may_retry(&Method::GET, &error, false));
        }
        assert!(!may_retry(&Method::PUT, &SendError::ClientBody("reset".into()), true));
    }

    #[test]
    fn the_budget_allows_a_floor_plus_a_fraction_of_traffic() {
        let budget = RetryBudget::new();
        let now = 5_000;
        for _ in 0..100 {
            budget.record_request(now);
        }
        let granted = (0..1000).filter(|_| budget.try_spend(now, 0.2, 10)).count();
        assert_eq!(granted, 10 + 20);
    }

    #[test]
    fn the_budget_refills_in_the_next_window() {
        let budget = RetryBudget::new();
        for _ in 0..50 {
            budget.record_request(1_000);
        }
        assert_eq!((0..100).filter(|_| budget.try_spend(1_000, 0.1, 0)).count(), 5);
        assert_eq!(
            (0..100).filter(|_| budget.try_spend(2_000, 0.1, 0)).count(),
            5,
            "previous window counts"
        );
        assert_eq!(
            (0..100).filter(|_| budget.try_spend(9_000, 0.1, 0)).count(),
            0,
            "idle: nothing"
        );
    }
}
