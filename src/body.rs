//! Bodies on the way through. `RequestBody` streams the client's body upstream
//! untouched; a `Replay` handle can take it back if the body was never polled (the
//! backend could not be reached), so such a request is retried elsewhere with its body
//! intact. `ResponseBody` streams the answer back and, when it ends, counts its bytes
//! and hands the access-log record over.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Slot = Arc<Mutex<Option<Incoming>>>;

pub struct RequestBody(Inner);

enum Inner {
    Empty,
    Streaming(Incoming),
    /// Not polled yet: the body still sits in the slot shared with a `Replay`.
    Parked(Slot, SizeHint),
}

/// Hands the body to the next attempt, if no byte of it was read by the previous one.
pub struct Replay {
    slot: Slot,
    hint: SizeHint,
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody(Inner::Empty)
    }

    /// A body that streams through and cannot be replayed.
    pub fn streaming(body: Incoming) -> Self {
        if body.is_end_stream() {
            return Self::empty();
        }
        RequestBody(Inner::Streaming(body))
    }

    /// A body that can be taken back by the returned `Replay` until its first poll.
    pub fn replayable(body: Incoming) -> (Self, Replay) {
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        let replay = Replay {
            slot: slot.clone(),
            hint,
        };
        (RequestBody(Inner::Parked(slot, hint)), replay)
    }
}

impl Replay {
    /// The body again, for another attempt; `None` once any of it was sent.
    pub fn again(&self) -> Option<RequestBody> {
        let untouched = self.slot.lock().map(|slot| slot.is_some()).unwrap_or(false);
        untouched.then(|| RequestBody(Inner::Parked(self.slot.clone(), self.hint)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.0 {
                Inner::Empty => return Poll::Ready(None),
                Inner::Streaming(body) => {
                    return Pin::new(body).poll_frame(cx).map_err(|e| e.into())
                }
                Inner::Parked(slot, _) => {
                    let taken = slot.lock().ok().and_then(|mut s| s.take());
                    match taken {
                        Some(body) => self.0 = Inner::Streaming(body),
                        None => {
                            return Poll::Ready(Some(Err("request body was already sent".into())))
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Empty => true,
            Inner::Streaming(body) => body.is_end_stream(),
            Inner::Parked(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Streaming(body) => body.size_hint(),
            Inner::Parked(_, hint) => *hint,
        }
    }
}

/// An access-log record waiting for its response body to end.
pub struct PendingLog {
    pub record: crate::access_log::Record,
    pub started: std::time::Instant,
    pub sink: crate::access_log::AccessLog,
}

/// The proxy's answer: the backend's body (or a short error text) streamed to the
/// client. When it ends (or is dropped, e.g. the client left) it counts its bytes and
/// submits the access-log record.
pub struct ResponseBody {
    inner: http_body_util::Either<Incoming, http_body_util::Full<Bytes>>,
    bytes: u64,
    counter: Option<metrics::Counter>,
    log: Option<Box<PendingLog>>,
}

impl ResponseBody {
    pub fn new(
        inner: http_body_util::Either<Incoming, http_body_util::Full<Bytes>>,
        counter: Option<metrics::Counter>,
        log: Option<Box<PendingLog>>,
    ) -> Self {
        ResponseBody {
            inner,
            bytes: 0,
            counter,
            log,
        }
    }

    fn finish(&mut self) {
        if let Some(counter) = self.counter.take() {
            counter.increment(self.bytes);
        }
        if let Some(pending) = self.log.take() {
            let PendingLog {
                mut record,
                started,
                sink,
            } = *pending;
            record.bytes = self.bytes;
            record.total_ms = started.elapsed().as_secs_f64() * 1000.0;
            sink.submit(record);
        }
    }
}
impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish();
    }
}
