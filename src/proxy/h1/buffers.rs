//! Read buffers for client connections, lent per worker thread: a connection takes one
//! when bytes arrive and gives it back when a request is over and nothing of the next
//! one is buffered, so an idle keep-alive connection holds no buffer (HAProxy lends its
//! buffers the same way). Each worker is a thread with its own runtime, so the pool is
//! thread-local: no lock, no atomic.

use std::cell::RefCell;

use bytes::BytesMut;

/// What each lent buffer holds at least: a whole ordinary request head, or a large
/// share of a body read.
pub const BUFFER: usize = 16 * 1024;
/// Buffers kept per worker for reuse; beyond it, buffers given back are freed (the pool
/// is memory held even when every connection is idle: 512 KiB at most).
const KEPT: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of at least `BUFFER` bytes of room, empty.
pub fn take() -> BytesMut {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(BUFFER))
}

/// Gives `buf` back: kept for reuse when it is empty, owns its memory alone (no frozen
/// slice of it is still alive) and is of the ordinary size; freed otherwise.
pub fn give(mut buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    // Reclaims the room before the start (after a head was split off) without
    // allocating; fails when a slice of the memory is still alive elsewhere.
    if !buf.try_reclaim(BUFFER) || buf.capacity() > 4 * BUFFER {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < KEPT {
            pool.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_empty_is_lent_again() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let address = buf.as_ptr();
        buf.clear();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), address);
        assert!(again.capacity() >= BUFFER);
    }

    #[test]
    fn a_buffer_whose_slice_is_alive_is_not_kept() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = buf.split_to(10).freeze();
        buf.clear();
        // What a kept buffer would be lent as: its own start, or the reclaimed start.
        let (own, reclaimed) = (buf.as_ptr(), head.as_ptr());
        give(buf);
        let other = take();
        assert!(
            other.as_ptr() != own && other.as_ptr() != reclaimed,
            "a buffer still shared with the head was lent again"
        );
        drop(head);
    }
}
