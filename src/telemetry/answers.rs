//! What clients were answered while a drill runs, for the drill's abort watch: all
//! answers, the 5xx among them, and the proxy errors of requests whose split could
//! have used a drilled site. The request path adds to them only while a watch is on
//! (one relaxed load otherwise); the control plane reads them a few times a second.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::StatusCode;

/// Shared by the proxy (which counts) and the control plane (which watches).
#[derive(Debug, Default)]
pub struct ClientAnswers {
    /// Watches on now; nothing is counted while there are none.
    watches: AtomicUsize,
    answered: AtomicU64,
    server_errors: AtomicU64,
    drill_errors: AtomicU64,
}

/// The counts at one moment; later minus earlier is what happened between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerCounts {
    pub answered: u64,
    /// 5xx answers, the backends' own and the proxy's.
    pub server_errors: u64,
    /// Proxy errors (502/504) of requests whose split gives weight to a drilled site.
    pub drill_errors: u64,
}

impl AnswerCounts {
    pub fn since(self, earlier: AnswerCounts) -> AnswerCounts {
        AnswerCounts {
            answered: self.answered.saturating_sub(earlier.answered),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            drill_errors: self.drill_errors.saturating_sub(earlier.drill_errors),
        }
    }
}

/// Counting is on while this is held.
pub struct Watch(Arc<ClientAnswers>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Relaxed);
    }
}

impl ClientAnswers {
    /// One answer to a client (`drill_error`: a proxy error while a site of the
    /// request's split was drilled).
    #[inline]
    pub fn record(&self, status: StatusCode, drill_error: bool) {
        if self.watches.load(Relaxed) == 0 {
            return;
        }
        self.answered.fetch_add(1, Relaxed);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Relaxed);
            if drill_error {
                self.drill_errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// Turns counting on until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watches.fetch_add(1, Relaxed);
        Watch(self.clone())
    }

    pub fn counts(&self) -> AnswerCounts {
        AnswerCounts {
            answered: self.answered.load(Relaxed),
            server_errors: self.server_errors.load(Relaxed),
            drill_errors: self.drill_errors.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_only_while_watched() {
        let answers = Arc::new(ClientAnswers::default());
        answers.record(StatusCode::BAD_GATEWAY, true);
        assert_eq!(answers.counts(), AnswerCounts::default());
        let watch = answers.watch();
        let start = answers.counts();
        answers.record(StatusCode::OK, false);
        answers.record(StatusCode::SERVICE_UNAVAILABLE, false);
        answers.record(StatusCode::BAD_GATEWAY, true);
        answers.record(StatusCode::NOT_FOUND, true);
        let seen = answers.counts().since(start);
        assert_eq!(
            seen,
            AnswerCounts {
                answered: 4,
                server_errors: 2,
                drill_errors: 1
            }
        );
        drop(watch);
        answers.record(StatusCode::OK, false);
        assert_eq!(answers.counts().answered, 4);
    }
}
