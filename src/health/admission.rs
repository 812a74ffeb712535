//! The counters behind `[[site]] max_requests` and `queue`: each backend counts its
//! requests in flight, and a try holds a [`Slot`] of its backend until the response's
//! body ends; the backends of a site share one [`SiteQueue`], where a request that
//! found every one of them full waits to be woken by a slot coming free. Both outlive
//! config snapshots (they sit with the backend in the registry). With no limit set, a
//! try costs one atomic add and one subtract.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::Backend;

/// One site's waiting room, shared by all its backends.
#[derive(Default)]
pub struct SiteQueue {
    /// Requests waiting now.
    waiting: AtomicU32,
    /// Requests refused since start: the queue was full, or they waited too long.
    rejected_full: AtomicU64,
    rejected_timeout: AtomicU64,
    /// Woken (one waiter at a time, oldest first) when a slot of the site comes free.
    freed: Notify,
}

/// Why a request was refused a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Every backend full and the queue too (or no queue).
    Full,
    /// Waited `queue_timeout` without a backend coming free.
    Timeout,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Full => "full",
            Rejection::Timeout => "timeout",
        }
    }
}

/// A place in the queue; leaving it (served, refused or the client gone) drops it.
pub struct Waiting<'a>(&'a SiteQueue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SiteQueue {
    /// Joins the queue if it holds fewer than `capacity`.
    pub fn join(&self, capacity: u32) -> Option<Waiting<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(self);
        (before < capacity).then_some(place)
    }

    /// A future that completes when a slot of the site comes free. Enable it (poll
    /// once or `Notified::enable`) before looking for room, so no wake-up is lost.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn reject(&self, why: Rejection) {
        match why {
            Rejection::Full => &self.rejected_full,
            Rejection::Timeout => &self.rejected_timeout,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals since start: (queue full, waited too long).
    pub fn rejected(&self) -> (u64, u64) {
        (
            self.rejected_full.load(Ordering::Relaxed),
            self.rejected_timeout.load(Ordering::Relaxed),
        )
    }
}

/// A request in flight at a backend; the count drops, and a waiter of its site is
/// woken, when this drops.
pub struct Slot(Arc<Backend>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.0.queue.waiting() > 0 {
            self.0.queue.freed.notify_one();
        }
    }
}

/// What a backend counts for admission.
#[derive(Default)]
pub struct InFlightCount(AtomicU32);

impl InFlightCount {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn fetch_add(&self, n: u32, order: Ordering) -> u32 {
        self.0.fetch_add(n, order)
    }

    fn fetch_sub(&self, n: u32, order: Ordering) -> u32 {
        self.0.fetch_sub(n, order)
    }
}

impl Backend {
    /// A slot for one try, if fewer than `limit` are in flight (`0` = no limit).
    pub fn try_enter(self: &Arc<Self>, limit: u32) -> Option<Slot> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if limit == 0 || before < limit {
            return Some(Slot(self.clone()));
        }
        // Full: undo without waking anyone (no slot came free).
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Requests in flight here now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
}
