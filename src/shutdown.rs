//! Graceful shutdown: one watch signal that tells listeners to stop accepting and
//! connections to finish, and a tracker that counts connection and tunnel tasks so
//! the drain can wait for the last one, bounded by the drain timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Counts live tasks; `wait_idle` returns when the count reaches zero.
#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by one task for its whole life; dropping it marks the task finished.
pub struct TaskToken {
    inner: Arc<TrackerInner>,
}

impl Tracker {
    pub fn token(&self) -> TaskToken {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        TaskToken {
            inner: self.inner.clone(),
        }
    }

    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Waits until no task is live or `deadline` passes; returns how many are left.
    pub async fn wait_idle(&self, deadline: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.live() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.live()
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

/// The process-wide "stop now" signal. Receivers see `true` once shutdown begins.
#[derive(Clone)]
pub struct Signal {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            sender: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Signal {
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }

    pub fn fire(&self) {
        self.sender.send_replace(true);
    }
}

/// Resolves once `receiver` has seen shutdown (or its sender is gone).
pub async fn fired(receiver: &mut watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_task() {
        let tracker = Tracker::default();
        let token = tracker.token();
        let early = tracker.wait_idle(Duration::from_millis(50)).await;
        assert_eq!(early, 1, "the deadline bounds the wait");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(token);
        });
        assert_eq!(tracker.wait_idle(Duration::from_secs(5)).await, 0);
    }
}
