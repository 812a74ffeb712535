//! What the client-side timeouts of one connection watch: when bytes last moved, when
//! an unfinished request head started, and how many requests are in flight (from the
//! request head until the end of its response body).
//!
//! Rules: with nothing in flight, a connection closes after `idle` without bytes, and
//! an HTTP/1 request head must complete within `client_header` (a head pipelined
//! behind another too, from the moment that request ends); with requests in
//! flight, it closes only when no byte moved for the longer of `idle` and `response`
//! (a stalled upload or download). HTTP/2 frames that start no request (PINGs, a
//! HEADERS frame trickled byte by byte) do not keep a connection open: with no stream
//! in flight, it closes `idle` after its last request ended, or `client_header` after
//! it opened if no request ever started.
//!
//! The watched socket also answers in hyper's place where hyper would answer wrongly or
//! not at all: 408 for a head too slow, 414 for a first request line too long, and
//! SETTINGS + GOAWAY(PROTOCOL_ERROR) for an HTTP/2 client whose preface is wrong.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head_scan::HeadScan;
use crate::clock::now_ms;
use crate::config::Timeouts;

/// Times are `now_ms` values.
#[derive(Default)]
pub struct Activity {
    last_io: AtomicU64,
    /// When the first byte of a request head arrived with nothing in flight, or when the
    /// request ended that a partial pipelined head waited behind; 0 = none.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    /// HTTP/2 frames (PING, WINDOW_UPDATE) are not request heads: no header timer.
    http2: AtomicBool,
    /// When a request last began or ended; 0 = none yet (then: when the connection opened).
    last_request: AtomicU64,
    /// For each HTTP/1 head scanned and not yet begun, oldest in the lowest bit: it had
    /// a Content-Length line. hyper drops that line when the head also has
    /// Transfer-Encoding, so the proxy can only see it here. (HTTP/1 is served by the
    /// connection's one task: these are read and written in turn, never at once.)
    heads: AtomicU64,
    /// How many heads `heads` holds (at most 64; a deeper pipeline's later heads count
    /// as having no Content-Length line).
    heads_queued: AtomicU32,
    /// The head did not arrive within `client_header`: the next read answers 408 and
    /// ends the connection.
    timed_out: AtomicBool,
    /// Part of a head has been read and not its end (while a request is in flight: a
    /// pipelined head waiting in hyper's buffer; its `client_header` starts when the
    /// request in flight ends).
    partial_head: AtomicBool,
    /// The connection is a tunnel now (after a 101): its bytes are not scanned.
    tunnel: AtomicBool,
    opened: u64,
}

/// What a client whose request head did not arrive in time gets (as NGINX and HAProxy
/// answer), before the connection closes.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\nrequest head too slow\n";

/// What a client gets whose request line alone fills `max_header_bytes` (hyper would
/// answer 431, the answer for a head too large as a whole), before the connection
/// closes.
const URI_TOO_LONG: &[u8] =
    b"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\nrequest URI too long\n";

/// What a client whose connection preface is not HTTP/2's gets (RFC 9113 3.4: a
/// connection error of type PROTOCOL_ERROR), before the connection closes: the server's
/// own preface (an empty SETTINGS frame), then GOAWAY(last stream 0, PROTOCOL_ERROR,
/// "invalid preface").
const INVALID_PREFACE: &[u8] = b"\0\0\0\x04\0\0\0\0\0\
    \0\0\x17\x07\0\0\0\0\0\0\0\0\0\0\0\0\x01invalid preface";

/// The reason `expired` gives when an HTTP/1 request head did not arrive in time.
pub const CLIENT_HEADER_TIMEOUT: &str = "client header timeout";

/// Marks one request in flight for as long as it lives; the proxy keeps it inside the
/// response body, so it ends when the last byte of the response is sent.
pub struct InFlight(Arc<Activity>, bool);

impl InFlight {
    /// The request's head had a Content-Length line.
    pub fn head_had_content_length(&self) -> bool {
        self.1
    }

    /// The connection became a tunnel (a 101 answer): what follows is not HTTP/1, so
    /// the head scan stops.
    pub fn tunnelled(&self) {
        self.0.tunnel.store(true, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn new(http2: bool) -> Arc<Activity> {
        let activity = Activity {
            opened: now_ms(),
            ..Activity::default()
        };
        activity.last_io.store(activity.opened, Ordering::Relaxed);
        activity.http2.store(http2, Ordering::Relaxed);
        Arc::new(activity)
    }

    /// A request began at `now_ms`.
    pub fn begin(self: &Arc<Self>, now_ms: u64) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.last_request.store(now_ms, Ordering::Relaxed);
        InFlight(self.clone(), self.next_head_had_length())
    }

    /// Queues the verdict of a head the scan saw end.
    fn head_ended(&self, had_length: bool) {
        let queued = self.heads_queued.load(Ordering::Relaxed);
        if queued < u64::BITS {
            let heads = self.heads.load(Ordering::Relaxed) | (u64::from(had_length) << queued);
            self.heads.store(heads, Ordering::Relaxed);
            self.heads_queued.store(queued + 1, Ordering::Relaxed);
        }
    }

    /// The verdict of the oldest head not begun yet (none scanned: no length line seen).
    fn next_head_had_length(&self) -> bool {
        let queued = self.heads_queued.load(Ordering::Relaxed);
        if queued == 0 {
            return false;
        }
        let heads = self.heads.load(Ordering::Relaxed);
        self.heads.store(heads >> 1, Ordering::Relaxed);
        self.heads_queued.store(queued - 1, Ordering::Relaxed);
        heads & 1 == 1
    }

    /// Notes a read of `bytes` (with it, the connection's first bytes spelled the HTTP/2
    /// preface if `preface_complete`), and feeds HTTP/1 bytes to `scan`.
    fn saw_read(&self, bytes: &[u8], preface_complete: bool, scan: &mut HeadScan) {
        let now = now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if preface_complete {
            self.http2.store(true, Ordering::Relaxed);
        }
        if self.http2.load(Ordering::Relaxed) || self.tunnel.load(Ordering::Relaxed) {
            return;
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            if self.head_started.load(Ordering::Relaxed) == 0 {
                self.head_started.store(now, Ordering::Release);
            }
            if scan.lost() {
                // It lost the thread: what comes with nothing in flight starts a head.
                *scan = HeadScan::default();
                self.heads_queued.store(0, Ordering::Relaxed);
            }
        }
        scan.feed(bytes, |had_length| self.head_ended(had_length));
        self.partial_head.store(scan.in_head(), Ordering::Relaxed);
    }

    /// No request has begun on this connection yet (none in flight, none before).
    fn first_head(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.last_request.load(Ordering::Relaxed) == 0
    }

    /// The client's head timed out: its connection answers 408 at the next read.
    pub fn time_out_head(&self) {
        self.timed_out.store(true, Ordering::Release);
    }

    /// Resolves when the connection should be closed, with the reason.
    pub async fn expired(&self, timeouts: &Timeouts) -> &'static str {
        let millis = |d: Duration| d.as_millis() as u64;
        loop {
            let now = now_ms();
            let last_io = self.last_io.load(Ordering::Relaxed);
            let (deadline, reason) = if self.in_flight.load(Ordering::Acquire) > 0 {
                (
                    last_io + millis(timeouts.idle.max(timeouts.response)),
                    "no progress on a request in flight",
                )
            } else if self.http2.load(Ordering::Relaxed) {
                match self.last_request.load(Ordering::Relaxed) {
                    0 => (
                        self.opened + millis(timeouts.client_header),
                        "no HTTP/2 request within client_header",
                    ),
                    last => (last + millis(timeouts.idle), "idle timeout"),
                }
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    // Nothing sent since the connection opened: it gets `client_header`
                    // to send its first head, not `idle` (as NGINX and HAProxy do).
                    0 if self.last_request.load(Ordering::Relaxed) == 0 => (
                        self.opened + millis(timeouts.client_header),
                        "no request within client_header",
                    ),
                    0 => (last_io + millis(timeouts.idle), "idle timeout"),
                    started => (started + millis(timeouts.client_header), CLIENT_HEADER_TIMEOUT),
                }
            };
            if now >= deadline {
                return reason;
            }
            // A request head may start at any moment, so look again within half of
            // `client_header` even when the other deadline is further away.
            let wait = deadline
                .saturating_sub(now)
                .min(millis(timeouts.client_header) / 2)
                .max(10);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = now_ms();
        self.0.last_io.store(now, Ordering::Relaxed);
        self.0.last_request.store(now, Ordering::Relaxed);
        if self.0.partial_head.load(Ordering::Relaxed) {
            // hyper reads the buffered part of the next head now: its timer starts.
            self.0.head_started.store(now, Ordering::Release);
        }
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client socket, noting reads and writes for the timeouts and the byte counters.
pub struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
    /// Bytes of `HTTP2_PREFACE` the connection's first bytes matched so far, in however
    /// many reads they came; `usize::MAX` once they differ.
    preface: usize,
    /// The client chose HTTP/2 by ALPN: its first bytes must be the preface.
    alpn_h2: bool,
    scan: HeadScan,
    /// `max_header_bytes`: a request line this long is refused with 414.
    head_limit: usize,
    /// The answer written before the connection ends (408 or 414), once decided.
    refusal: Option<&'static [u8]>,
    /// Bytes of `refusal` written so far.
    refusal_sent: usize,
    received: metrics::Counter,
    sent: metrics::Counter,
}

/// What an HTTP/2 client sends first (RFC 9113 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The start of the preface that no HTTP/1 request line has (its version is 2.0): a
/// client that sent it speaks HTTP/2.
const HTTP2_START: usize = b"PRI * HTTP/2.0".len();

/// What a read told of the connection's first bytes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Preface {
    /// Nothing new (still matching, or decided before).
    Same,
    /// The client speaks HTTP/2: the start of the preface is complete.
    Http2,
    /// A client speaking HTTP/2 (it sent the start, or chose h2 by ALPN) sent bytes that
    /// are not the preface.
    Invalid,
}

impl<S> Watched<S> {
    /// Follows the connection's first bytes against `HTTP2_PREFACE`.
    fn preface_read(&mut self, bytes: &[u8]) -> Preface {
        let Some(rest) = HTTP2_PREFACE.get(self.preface..).filter(|rest| !rest.is_empty()) else {
            return Preface::Same;
        };
        let n = rest.len().min(bytes.len());
        if let Some(at) = rest[..n].iter().zip(bytes).position(|(want, got)| want != got) {
            let http2 = self.alpn_h2 || self.preface + at >= HTTP2_START;
            self.preface = usize::MAX;
            return if http2 { Preface::Invalid } else { Preface::Same };
        }
        let before = self.preface;
        self.preface += n;
        if before < HTTP2_START && self.preface >= HTTP2_START {
            Preface::Http2
        } else {
            Preface::Same
        }
    }

    pub fn new(
        stream: S,
        activity: Arc<Activity>,
        head_limit: usize,
        received: metrics::Counter,
        sent: metrics::Counter,
    ) -> Self {
        let alpn_h2 = activity.http2.load(Ordering::Relaxed);
        Watched {
            stream,
            activity,
            preface: 0,
            alpn_h2,
            scan: HeadScan::default(),
            head_limit,
            refusal: None,
            refusal_sent: 0,
            received,
            sent,
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.activity.last_io.store(now_ms(), Ordering::Relaxed);
            self.sent.increment(n as u64);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.refusal.is_none() && self.activity.timed_out.load(Ordering::Acquire) {
            self.refusal = Some(REQUEST_TIMEOUT);
        }
        if let Some(answer) = self.refusal {
            return self.refuse(answer, cx);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            let this = &mut *self;
            let bytes = &buf.filled()[before..];
            let preface = this.preface_read(bytes);
            if preface == Preface::Invalid {
                // Nothing was written yet (hyper is still telling HTTP/1 from HTTP/2):
                // the read is taken back and the GOAWAY goes out in its place; hyper
                // then finds the stream ended and closes.
                this.received.increment(read as u64);
                buf.set_filled(before);
                this.refusal = Some(INVALID_PREFACE);
                return this.refuse(INVALID_PREFACE, cx);
            }
            this.activity.saw_read(bytes, preface == Preface::Http2, &mut this.scan);
            if this.scan.oversized_chunk {
                // As hyper fails a malformed chunk: the body errs, the upstream request
                // is cut and the client gets 400. When the size came in the read that
                // carried the head, hyper fails the head: the connection closes unanswered
                // and nothing of the request leaves.
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "chunk size too large")));
            }
            this.received.increment(read as u64);
            if this.scan.request_line_len() >= this.head_limit && this.activity.first_head() {
                // hyper's buffer is full with the request line alone: it would answer
                // 431. Its last read is taken back (hyper never sees it, so it only
                // finds the stream ended and closes) and 414 goes out in its place. Only
                // in the connection's first head: hyper has written nothing yet. Later,
                // an answer could still be in hyper's buffer; hyper's 431 stands then.
                buf.set_filled(before);
                this.refusal = Some(URI_TOO_LONG);
                return this.refuse(URI_TOO_LONG, cx);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// Writes `answer` (hyper is waiting for the rest of a head, so nothing else is
    /// being written), then reports the end of the stream so that hyper closes.
    fn refuse(&mut self, answer: &[u8], cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.refusal_sent < answer.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &answer[self.refusal_sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.refusal_sent += n,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
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
