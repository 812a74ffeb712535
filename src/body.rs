//! The request body sent upstream. `RequestBody` streams the client's body upstream
//! untouched; a `Replay` handle can take it back if the body was never polled (the
//! backend could not be reached), so such a request is retried elsewhere with its body
//! intact. Its `Progress` tells hyper's HTTP/2 upstream when the body has been sent in
//! full (the response timeout starts then) and whether it failed on the client's side;
//! the HTTP/1.1 client sends the body itself and knows both without it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Slot = Arc<Mutex<Option<ClientBody>>>;

/// A client's request body as its connection delivers it: HTTP/2's from hyper, HTTP/1.1's
/// read off the connection by the proxy's own reader.
pub enum ClientBody {
    Empty,
    Http2(Incoming),
    Http1(crate::proxy::h1::RequestReader),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Http2(body) => body.is_end_stream(),
            ClientBody::Http1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Http2(body) => body.size_hint(),
            ClientBody::Http1(body) => body.size_hint(),
        }
    }
}

pub struct RequestBody {
    inner: Inner,
    /// Bytes the body may still carry (`[limits].max_body_bytes`; `u64::MAX`: no limit).
    allowed: u64,
    /// `None` for an empty body: it is "sent" at once and cannot fail.
    progress: Option<Arc<Progress>>,
}

/// How far a non-empty body got; shared with hyper's HTTP/2 upstream that sends it.
#[derive(Default)]
pub struct Progress {
    /// Notified once the last byte was handed to the connection.
    pub sent: tokio::sync::Notify,
    /// The client's side of the body failed (it reset or sent a malformed body).
    pub client_failed: AtomicBool,
}

enum Inner {
    Empty,
    Streaming(ClientBody),
    /// Not polled yet: the body still sits in the slot shared with a `Replay`.
    Parked(Slot, SizeHint),
    /// A few bytes of the proxy's own (a gRPC health check's request).
    Fixed(Option<Bytes>),
}

/// Hands the body to the next attempt, if no byte of it was read by the previous one.
pub struct Replay {
    slot: Slot,
    hint: SizeHint,
    limit: u64,
}

/// The client's body went past `[limits].max_body_bytes`: answered 413.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than [limits].max_body_bytes")]
pub struct BodyTooLarge;

/// Whether `error` (or one of its causes) is a `BodyTooLarge`.
pub fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl RequestBody {
    pub fn empty() -> Self {
        RequestBody {
            inner: Inner::Empty,
            allowed: u64::MAX,
            progress: None,
        }
    }

    /// The proxy's own few bytes (a probe's request), sent whole.
    pub fn fixed(bytes: Bytes) -> Self {
        RequestBody {
            inner: Inner::Fixed(Some(bytes)),
            allowed: u64::MAX,
            progress: None,
        }
    }

    fn with(inner: Inner, limit: u64) -> Self {
        RequestBody {
            inner,
            allowed: limit,
            progress: Some(Arc::default()),
        }
    }

    /// A body that streams through and cannot be replayed; at most `limit` bytes
    /// (`u64::MAX`: no limit).
    pub fn streaming(body: ClientBody, limit: u64) -> Self {
        if body.is_end_stream() {
            return Self::empty();
        }
        Self::with(Inner::Streaming(body), limit)
    }

    /// The body's progress, `None` when it is empty.
    pub fn progress(&self) -> Option<Arc<Progress>> {
        self.progress.clone()
    }

    /// A body that can be taken back by the returned `Replay` until its first poll.
    pub fn replayable(body: ClientBody, limit: u64) -> (Self, Replay) {
        let hint = body.size_hint();
        let slot = Arc::new(Mutex::new(Some(body)));
        let replay = Replay {
            slot: slot.clone(),
            hint,
            limit,
        };
        (Self::with(Inner::Parked(slot, hint), limit), replay)
    }
}

impl Replay {
    /// The body again, for another attempt; `None` once any of it was sent.
    pub fn again(&self) -> Option<RequestBody> {
        let untouched = self.slot.lock().map(|slot| slot.is_some()).unwrap_or(false);
        untouched.then(|| RequestBody::with(Inner::Parked(self.slot.clone(), self.hint), self.limit))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match &mut self.inner {
                Inner::Empty => return Poll::Ready(None),
                Inner::Fixed(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
                Inner::Streaming(body) => {
                    let mut polled = Pin::new(&mut *body).poll_frame(cx);
                    let ended = body.is_end_stream();
                    if let Poll::Ready(Some(Ok(frame))) = &polled {
                        let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                        match self.allowed.checked_sub(len) {
                            Some(left) => self.allowed = left,
                            None => polled = Poll::Ready(Some(Err(Box::new(BodyTooLarge)))),
                        }
                    }
                    if let Some(progress) = &self.progress {
                        match &polled {
                            // hyper stops polling once `is_end_stream` says so.
                            Poll::Ready(None) => progress.sent.notify_one(),
                            Poll::Ready(Some(Ok(_))) if ended => progress.sent.notify_one(),
                            Poll::Ready(Some(Err(_))) => progress.client_failed.store(true, Ordering::Release),
                            _ => {}
                        }
                    }
                    return polled;
                }
                Inner::Parked(slot, _) => {
                    let taken = slot.lock().ok().and_then(|mut s| s.take());
                    match taken {
                        Some(body) => self.inner = Inner::Streaming(body),
                        None => return Poll::Ready(Some(Err("request body was already sent".into()))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Fixed(bytes) => bytes.is_none(),
            Inner::Streaming(body) => body.is_end_stream(),
            Inner::Parked(..) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Fixed(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Streaming(body) => body.size_hint(),
            Inner::Parked(_, hint) => *hint,
        }
    }
}
