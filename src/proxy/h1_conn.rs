//! An HTTP/1.1 client connection's life, served by the proxy's own code: heads read one
//! at a time (pipelined ones wait in the buffer, answered in order), each request
//! forwarded and answered (`h1_exchange`), until the client leaves, a timeout or a
//! refusal closes it, or it turns out to be HTTP/2 (its preface), which hyper serves.
//!
//! Between requests the connection holds no buffer: it waits for readability with a
//! buffer lent only while a read is tried (`h1::buffers`), so an idle keep-alive
//! connection costs its task and socket alone.
//!
//! Timeouts: the first head must arrive within `client_header` of the connection's
//! opening, later heads within `client_header` of their first byte (a head pipelined
//! behind another: of that request's end), else 408 and close; with nothing buffered,
//! the connection closes after `idle` without a request. While draining (SIGTERM, an
//! upgrade of the binary), an idle connection stays open up to `DRAIN_GRACE` for a
//! request racing the drain, whose answer says `Connection: close`.

use std::future::poll_fn;
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::io::poll_read_buf;

use super::activity::Activity;
use super::h1_connection::Connection;
use super::h1_exchange::{exchange, Exchanged};
use crate::clock::now_ms;
use crate::proxy::h1::{self, buffers, ClientStream, Parsed, Refusal};
use crate::shutdown::fired;

/// How long a keep-alive connection may stay idle once the process drains, waiting for
/// a request to answer with `Connection: close`.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Room made in the buffer before each read of a head.
const HEAD_READ: usize = 4 * 1024;

/// What a client whose request head did not arrive in time gets (as NGINX and HAProxy
/// answer), before the connection closes.
const REQUEST_TIMEOUT: Refusal = Refusal {
    status: http::StatusCode::REQUEST_TIMEOUT,
    text: "request head too slow\n",
};

/// What the HTTP/2 connection preface starts with; no HTTP/1 request line does (its
/// version is 2.0).
const HTTP2_START: &[u8] = b"PRI * HTTP/2.0";

/// How the HTTP/1.1 side of a connection ended.
pub(super) enum Ended {
    Closed,
    /// The client speaks HTTP/2 (prior knowledge): its connection and what was read.
    Http2(ClientStream, BytesMut),
}

/// Serves `stream` as HTTP/1.1 until it closes (or hands it back for HTTP/2).
pub(super) async fn serve(mut conn: Connection<'_>) -> Ended {
    let mut first = true;
    loop {
        let head = match conn.read_head(first).await {
            Next::Head(head) => head,
            Next::Http2 => {
                let (Some(stream), buf) = (conn.stream.take(), conn.buf.take()) else {
                    return Ended::Closed;
                };
                return Ended::Http2(stream, buf.unwrap_or_default());
            }
            Next::Closed => return Ended::Closed,
        };
        first = false;
        // Boxed: inline, the exchange's state (the response, its writer) would make every
        // idle connection's task as large as a request in flight.
        match Box::pin(exchange(&mut conn, head)).await {
            Exchanged::KeepAlive => {}
            Exchanged::Close => {
                // Boxed, as the refusals below: the closing's timers and buffer are not
                // carried in every connection's state.
                Box::pin(conn.close()).await;
                return Ended::Closed;
            }
            Exchanged::Gone => return Ended::Closed,
        }
        if conn.buf.as_ref().is_some_and(BytesMut::is_empty) {
            if let Some(buf) = conn.buf.take() {
                buffers::give(buf);
            }
        }
    }
}

/// What came next on the connection (the head moved straight on, not boxed).
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(h1::Head),
    /// The HTTP/2 preface.
    Http2,
    Closed,
}

impl Connection<'_> {
    /// Reads the next head, refusing it (and closing) when it must be.
    async fn read_head(&mut self, first: bool) -> Next {
        // Bytes already buffered (a pipelined head): its timer starts now.
        let mut head_started = self.buf.as_ref().is_some_and(|b| !b.is_empty()).then(now_ms);
        loop {
            if let Some(buf) = self.buf.as_mut().filter(|b| !b.is_empty()) {
                if first && HTTP2_START.starts_with(&buf[..buf.len().min(HTTP2_START.len())]) {
                    if buf.len() >= HTTP2_START.len() {
                        return Next::Http2;
                    }
                } else {
                    match h1::parse(buf, self.limits) {
                        Parsed::Complete(head) => return Next::Head(head),
                        Parsed::Refused(refusal) => {
                            Box::pin(self.refuse(refusal)).await;
                            return Next::Closed;
                        }
                        Parsed::Partial => {}
                    }
                }
            }
            let (deadline, answer) = match head_started {
                Some(started) => (started + ms(self.timeouts.client_header), Some(REQUEST_TIMEOUT)),
                None if first => (self.activity.opened() + ms(self.timeouts.client_header), None),
                None => (self.activity.last_io() + ms(self.timeouts.idle), None),
            };
            let deadline = match self.draining {
                Some(since) if head_started.is_none() => deadline.min(since + ms(DRAIN_GRACE.min(self.timeouts.drain))),
                _ => deadline,
            };
            let wait = Duration::from_millis(deadline.saturating_sub(now_ms()));
            let draining = self.draining.is_some();
            let shutdown = &mut *self.shutdown;
            let read = read_more(
                &mut self.stream,
                &mut self.buf,
                &self.activity,
                &self.proxy.client_metrics.received,
            );
            tokio::select! {
                biased;
                read = read => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {
                        head_started.get_or_insert_with(now_ms);
                    }
                },
                _ = tokio::time::sleep(wait) => {
                    if let Some(answer) = answer {
                        tracing::debug!(client = %self.client.addr, "closing client connection: client header timeout");
                        Box::pin(self.refuse(answer)).await;
                    }
                    return Next::Closed;
                }
                _ = fired(shutdown), if !draining => self.draining = Some(now_ms()),
            }
        }
    }
}

/// Reads what the client sent next into `buf`, lending a buffer only while a read is
/// tried (given back at once when nothing came).
async fn read_more(
    stream: &mut Option<ClientStream>,
    buf: &mut Option<BytesMut>,
    activity: &Activity,
    received: &metrics::Counter,
) -> std::io::Result<usize> {
    let Some(stream) = stream.as_mut() else {
        return Ok(0);
    };
    let read = poll_fn(|cx| {
        let lent = buf.get_or_insert_with(buffers::take);
        lent.reserve(HEAD_READ);
        let polled = poll_read_buf(std::pin::Pin::new(&mut *stream), cx, lent);
        if polled.is_pending() && lent.is_empty() {
            if let Some(lent) = buf.take() {
                buffers::give(lent);
            }
        }
        polled
    })
    .await;
    if let Ok(n) = read {
        if n > 0 {
            activity.touch();
            received.increment(n as u64);
        }
    }
    read
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
