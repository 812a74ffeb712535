//! One backend's idle HTTP/1.1 connections: a LIFO list (the warmest first) that a
//! response body gives its connection back to when it has been read to its end. A
//! connection is checked before it leaves the list (a close or stray bytes that arrived
//! while it sat idle), and the list closes for good when its backend leaves the config.
//! One list per worker (`workers::slot`): a connection is only ever used on the
//! runtime whose reactor it is registered with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::h1::H1Conn;
use crate::clock::now_ms;
use crate::workers;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// An idle connection unused for this long is closed.
const IDLE_TIMEOUT_MS: u64 = 90_000;

/// Idle connections with the time each came back (`now_ms`).
type List = Mutex<Vec<(H1Conn, u64)>>;

pub(crate) struct Idle {
    /// Indexed by worker slot.
    lists: Box<[List]>,
    closed: AtomicBool,
}

impl Default for Idle {
    fn default() -> Idle {
        Idle {
            lists: (0..workers::slots()).map(|_| Mutex::default()).collect(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Idle {
    /// This thread's list.
    fn list(&self) -> &List {
        let (lists, slot) = (&self.lists, workers::slot());
        // Pools are built after the workers start, so every slot has its list.
        debug_assert!(slot < lists.len(), "slot {slot} of {}", lists.len());
        &lists[slot % lists.len()]
    }

    /// The warmest connection still usable, if any.
    pub(super) fn take(&self) -> Option<H1Conn> {
        let mut list = self.list().lock().ok()?;
        while let Some((mut conn, _)) = list.pop() {
            if conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// A connection whose response has been read to its end.
    pub(super) fn give_back(&self, conn: H1Conn) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut list) = self.list().lock() {
            if list.len() < MAX_IDLE {
                list.push((conn, now_ms()));
            }
        }
    }

    /// Closes connections unused for longer than the idle timeout, or closed by the
    /// backend. Never waits for the list.
    pub(super) fn close_expired(&self) {
        let now = now_ms();
        for list in &self.lists {
            if let Ok(mut list) = list.try_lock() {
                list.retain_mut(|(conn, since)| now.saturating_sub(*since) < IDLE_TIMEOUT_MS && conn.is_reusable());
            }
        }
    }

    /// The backend left the config: idle connections close now, busy ones when done.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for list in &self.lists {
            if let Ok(mut list) = list.lock() {
                list.clear();
            }
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
