//! What the client-side timeouts of one connection watch: when bytes last moved, and
//! how many requests are in flight (from the request head until the end of its response
//! body). HTTP/1.1 connections keep their own head and idle timers
//! (`h1_conn`) and read only the in-flight rule from here; HTTP/2 connections are
//! watched entirely here.
//!
//! Rules: with requests in flight, a connection closes only when no byte moved for the
//! longer of `idle` and `response` (a stalled upload or download). HTTP/2 frames that
//! start no request (PINGs, a HEADERS frame trickled byte by byte) do not keep a
//! connection open: with no stream in flight, it closes `idle` after its last request
//! ended, or `client_header` after it opened if no request ever started.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::now_ms;
use crate::config::Timeouts;

/// Times are `now_ms` values.
pub struct Activity {
    /// When a byte last moved either way (shared with an HTTP/1.1 request's body reader).
    pub(super) last_io: Arc<AtomicU64>,
    in_flight: AtomicUsize,
    /// When a request last began or ended; 0 = none yet (then: when the connection opened).
    last_request: AtomicU64,
    opened: u64,
}

/// Marks one request in flight for as long as it lives; the proxy keeps it inside the
/// response body, so it ends when the last byte of the response is sent.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Activity> {
        let opened = now_ms();
        Arc::new(Activity {
            last_io: Arc::new(AtomicU64::new(opened)),
            in_flight: AtomicUsize::new(0),
            last_request: AtomicU64::new(0),
            opened,
        })
    }

    /// A request began at `now_ms`.
    pub fn begin(self: &Arc<Self>, now_ms: u64) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_request.store(now_ms, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn touch(&self) {
        self.last_io.store(now_ms(), Ordering::Relaxed);
    }

    pub fn opened(&self) -> u64 {
        self.opened
    }

    pub fn last_io(&self) -> u64 {
        self.last_io.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When a connection with requests in flight closes for want of progress.
    pub fn stalled_at(&self, timeouts: &Timeouts) -> u64 {
        self.last_io.load(Ordering::Relaxed) + millis(timeouts.idle.max(timeouts.response))
    }

    /// Resolves when an HTTP/2 connection should be closed, with the reason.
    pub async fn expired(&self, timeouts: &Timeouts) -> &'static str {
        loop {
            let now = now_ms();
            let (deadline, reason) = if self.in_flight() {
                (self.stalled_at(timeouts), "no progress on a request in flight")
            } else {
                match self.last_request.load(Ordering::Relaxed) {
                    0 => (
                        self.opened + millis(timeouts.client_header),
                        "no HTTP/2 request within client_header",
                    ),
                    last => (last + millis(timeouts.idle), "idle timeout"),
                }
            };
            if now >= deadline {
                return reason;
            }
            // A request may start or end at any moment, so look again within half of
            // `client_header` even when the deadline is further away.
            let wait = deadline
                .saturating_sub(now)
                .min(millis(timeouts.client_header) / 2)
                .max(10);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = now_ms();
        self.0.last_io.store(now, Ordering::Relaxed);
        self.0.last_request.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An HTTP/2 client's socket, noting reads and writes for the timeouts and the byte
/// counters.
pub struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
    received: metrics::Counter,
    sent: metrics::Counter,
}

impl<S> Watched<S> {
    pub fn new(stream: S, activity: Arc<Activity>, received: metrics::Counter, sent: metrics::Counter) -> Self {
        Watched {
            stream,
            activity,
            received,
            sent,
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.activity.touch();
            self.sent.increment(n as u64);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.touch();
            self.received.increment(read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
