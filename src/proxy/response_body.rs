//! The proxy's response body: streams the backend's answer (or a short error text) to
//! the client and, when it ends or is dropped, counts the bytes, submits the
//! access-log record and marks the request no longer in flight. (An HTTP/1.1 upstream
//! connection goes back to its pool from the backend's body itself, when read to its
//! end.)

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use super::activity::InFlight;
use crate::access_log::{AccessLog, Record};
use crate::body::BoxError;
use crate::health::Slot;
use crate::upstream::UpstreamBody;

/// An access-log record waiting for its response body to end.
pub struct PendingLog {
    pub record: Box<Record>,
    pub started: Instant,
    pub sink: AccessLog,
}

/// The proxy's answer: the backend's body (or a short error text) streamed to the
/// client. When it ends (or is dropped, e.g. the client left) it counts its bytes and
/// submits the access-log record.
pub struct ResponseBody {
    inner: Either<UpstreamBody, Full<Bytes>>,
    bytes: u64,
    counter: Option<metrics::Counter>,
    log: Option<PendingLog>,
    /// The request counts as in flight (for the connection's timeouts) until this drops.
    in_flight: Option<InFlight>,
    /// Its place at the backend (`max_requests`), given up when the body ends.
    slot: Option<Slot>,
}

impl ResponseBody {
    pub fn new(
        inner: Either<UpstreamBody, Full<Bytes>>,
        counter: Option<metrics::Counter>,
        log: Option<PendingLog>,
        in_flight: InFlight,
    ) -> Self {
        ResponseBody {
            inner,
            bytes: 0,
            counter,
            log,
            in_flight: Some(in_flight),
            slot: None,
        }
    }

    /// Holds the try's slot at its backend until the body ends.
    pub(crate) fn holding(mut self, slot: Option<Slot>) -> Self {
        self.slot = slot;
        self
    }

    /// Bytes of the backend's body that can move with `splice` now (see
    /// `H1Body::spliceable`).
    pub(crate) fn spliceable(&mut self) -> Option<u64> {
        match &mut self.inner {
            Either::Left(body) => body.as_http1()?.spliceable(),
            Either::Right(_) => None,
        }
    }

    /// Moves the rest of the backend's body straight to `client` (counted as sent).
    pub(crate) async fn splice_to(
        &mut self,
        client: &tokio::net::TcpStream,
        stall: std::time::Duration,
        mut moved: impl FnMut(usize),
    ) -> std::io::Result<()> {
        let Some(body) = (match &mut self.inner {
            Either::Left(body) => body.as_http1(),
            Either::Right(_) => None,
        }) else {
            return Err(std::io::Error::other("the body cannot be spliced"));
        };
        let bytes = &mut self.bytes;
        body.splice_to(client, stall, |n| {
            *bytes += n as u64;
            moved(n);
        })
        .await
    }

    /// The body ended, failed or was dropped: count, log, and no longer in flight.
    fn finish(&mut self) {
        self.in_flight = None;
        self.slot = None;
        if let Some(counter) = self.counter.take() {
            counter.increment(self.bytes);
        }
        if let Some(pending) = self.log.take() {
            let PendingLog {
                mut record,
                started,
                sink,
            } = pending;
            record.bytes = self.bytes;
            record.total_ms = started.elapsed().as_secs_f64() * 1000.0;
            sink.submit(record);
        }
    }
}
impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
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
