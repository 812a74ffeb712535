//! One HTTP/1.1 request and its answer on a client connection: the body handed to a
//! reader that owns the connection's read half while it is read (`h1::reader`), the
//! request forwarded, a `100 Continue` sent when the client waits for one and the
//! upstream side starts reading, then the response written with its framing (small
//! bodies copied behind the head into one write, large ones written from the backend's
//! own buffers), and the connection's fate decided: kept alive, closed, or handed to a
//! tunnel after a 101.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::activity::InFlight;
use super::h1_connection::Connection;
use super::headers::{upgrade_request, ClientInfo};
use super::{Proxy, ResponseBody};
use crate::body::ClientBody;
use crate::clock::{ms_of, now_ms};
use crate::fields::Seen;
use crate::proxy::h1::request::has_token;
use crate::proxy::h1::response::{self, Framing, Persist};
use crate::proxy::h1::{buffers, ClientStream, ClientUpgrade, Decoder, Home, Refusal, RequestReader, Upgraded};

/// Data frames up to this size are copied behind what is queued (one write for a small
/// response); larger ones are written from their own buffer.
const COPY_MAX: usize = 8 * 1024;
/// Queued bytes written out once they reach this.
const QUEUE_MAX: usize = 32 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A chunked body already invalid in the bytes that came with its head.
const INVALID_BODY: Refusal = Refusal {
    status: StatusCode::BAD_REQUEST,
    text: "request body could not be read\n",
};

/// What the connection does after an exchange.
pub(super) enum Exchanged {
    KeepAlive,
    Close,
    /// Over already (the client left, a tunnel took it, or it failed).
    Gone,
}

/// The connection's write side during an exchange: the whole stream, or its write half
/// while a body reader holds the read half.
enum Writer {
    Whole(ClientStream),
    Split(tokio::io::WriteHalf<ClientStream>, Arc<Home>),
}

impl Writer {
    fn io(&mut self) -> Pin<&mut (dyn AsyncWrite + Send + Unpin)> {
        match self {
            Writer::Whole(stream) => Pin::new(stream),
            Writer::Split(write, _) => Pin::new(write),
        }
    }
}

pub(super) async fn exchange(conn: &mut Connection<'_>, head: crate::proxy::h1::Head) -> Exchanged {
    let crate::proxy::h1::Head {
        request,
        framing,
        keep_alive,
        keep_alive_asked,
        expects_continue,
        seen,
    } = head;
    if let (crate::proxy::h1::Framing::Chunked, Some(buf)) = (framing, conn.buf.as_ref()) {
        if let Err(e) = Decoder::new(framing).check(buf) {
            tracing::debug!(client = %conn.client.addr, error = %e, "request refused before it left");
            Box::pin(conn.refuse(INVALID_BODY)).await;
            return Exchanged::Gone;
        }
    }
    let Some(stream) = conn.stream.take() else {
        return Exchanged::Gone;
    };
    let head_request = request.method() == Method::HEAD;
    let http11 = request.version() == Version::HTTP_11;
    let takes_trailers = http11 && seen.has(Seen::TE) && has_token(request.headers(), header::TE, "trailers");
    let (parts, ()) = request.into_parts();
    let upgrade =
        framing == crate::proxy::h1::Framing::Empty && seen.has(Seen::CONNECTION) && upgrade_request(&parts).is_some();
    let mut request = http::Request::from_parts(parts, ());
    let (body, mut writer) = match framing {
        crate::proxy::h1::Framing::Empty => (ClientBody::Empty, Writer::Whole(stream)),
        framing => {
            let (read, write) = tokio::io::split(stream);
            let home = Arc::new(Home::default());
            let buf = conn.buf.take().unwrap_or_else(buffers::take);
            let reader = RequestReader::new(
                read,
                buf,
                framing,
                expects_continue,
                home.clone(),
                conn.activity.last_io.clone(),
                conn.proxy.client_metrics.received.clone(),
            );
            (ClientBody::Http1(reader), Writer::Split(write, home))
        }
    };
    let handover = upgrade.then(|| {
        let (give, take) = tokio::sync::oneshot::channel();
        request.extensions_mut().insert(ClientUpgrade::new(take));
        give
    });
    let arrived = Instant::now();
    let in_flight = conn.activity.begin(ms_of(arrived));
    let request = request.map(|()| body);
    let mut answer = forwarding(conn.proxy.clone(), request, conn.client.clone(), in_flight, arrived);
    let stall = conn.timeouts.idle.max(conn.timeouts.response);
    let mut continued = false;
    let home = match &writer {
        Writer::Split(_, home) => Some(home.clone()),
        Writer::Whole(_) => None,
    };
    let response = loop {
        let wake = async {
            match &home {
                Some(home) => home.wake.notified().await,
                None => std::future::pending().await,
            }
        };
        // With no request body the wait for the head is the backend's, bounded by the
        // response timeout upstream: no timer of our own then (each one registered can
        // cost the runtime a wake-up of its driver, a system call). Made when first
        // polled: a disabled branch's future is still built, and a timer is not free.
        let stalled = async {
            let at = conn.activity.stalled_at(conn.timeouts);
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
        };
        tokio::select! {
            biased;
            answered = &mut answer => match answered {
                Ok(response) => break response,
                Err(never) => match never {},
            },
            _ = wake => {
                let wanted = home.as_ref().is_some_and(|home| home.continue_wanted());
                if wanted && !continued {
                    continued = true;
                    if write(&mut writer, CONTINUE, stall).await.is_err() {
                        return Exchanged::Gone;
                    }
                    conn.proxy.client_metrics.sent.increment(CONTINUE.len() as u64);
                }
            }
            _ = stalled, if home.is_some() => {
                if now_ms() >= conn.activity.stalled_at(conn.timeouts) {
                    tracing::debug!(client = %conn.client.addr, "closing client connection: no progress on a request in flight");
                    return Exchanged::Gone;
                }
            }
        }
    };
    drop(answer);
    let (mut parts, mut body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let refused_close = has_token(&parts.headers, header::CONNECTION, "close");
    if refused_close {
        parts.headers.remove(header::CONNECTION);
    }
    let (framing, add_length) = response::framing(&parts, head_request, &body.size_hint(), http11);
    let mut persist = keep_alive
        && !refused_close
        && conn.draining.is_none()
        && !*conn.shutdown.borrow()
        && framing != Framing::UntilClose
        && (!switching || handover.is_some());
    let said = if switching {
        Persist::Open
    } else if !persist {
        Persist::Close
    } else if keep_alive_asked {
        Persist::KeepAlive
    } else {
        Persist::Open
    };
    let mut out = buffers::take();
    response::write_head(&mut out, &parts, framing, add_length, said);
    if switching {
        // The 101 goes out, then the connection belongs to the tunnel.
        if write(&mut writer, &out, stall).await.is_err() {
            return Exchanged::Gone;
        }
        conn.proxy.client_metrics.sent.increment(out.len() as u64);
        drop(body);
        if let (Some(give), Writer::Whole(stream)) = (handover, writer) {
            let early = conn.buf.take().map(BytesMut::freeze).unwrap_or_default();
            let _ = give.send(Upgraded { stream, early });
        }
        return Exchanged::Gone;
    }
    let sent = send_body(&mut writer, &mut out, &mut body, framing, takes_trailers, stall, conn).await;
    drop(body);
    buffers::give(out);
    let Ok(whole) = sent else {
        return Exchanged::Gone;
    };
    persist &= whole;
    // The body reader is gone with the response: the read half is home.
    let stream = match writer {
        Writer::Whole(stream) => stream,
        Writer::Split(write, home) => match home.take() {
            Some(returned) => {
                persist &= returned.whole;
                conn.buf = Some(returned.buf);
                returned.read.unsplit(write)
            }
            None => return Exchanged::Gone,
        },
    };
    conn.stream = Some(stream);
    if persist {
        Exchanged::KeepAlive
    } else {
        Exchanged::Close
    }
}

/// Writes the body after the head queued in `out`; `Ok(true)` when it went out whole
/// and framed so that the connection can carry another request.
async fn send_body(
    writer: &mut Writer,
    out: &mut BytesMut,
    body: &mut ResponseBody,
    framing: Framing,
    takes_trailers: bool,
    stall: Duration,
    conn: &Connection<'_>,
) -> std::io::Result<bool> {
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut trailers: Option<HeaderMap> = None;
    let mut whole = true;
    loop {
        // A large body between two plain sockets moves in the kernel (what the backend
        // sent with its head, already read, went out as data first).
        if let Some(spliceable) = body.spliceable().filter(|&n| n <= left) {
            if let Writer::Whole(ClientStream::Plain(_)) = writer {
                flush(writer, out, stall, conn).await?;
                let Writer::Whole(ClientStream::Plain(client)) = &*writer else {
                    return Ok(false);
                };
                let metrics = &conn.proxy.client_metrics;
                let spliced = body
                    .splice_to(client, stall, |n| {
                        metrics.sent.increment(n as u64);
                        metrics.spliced.increment(n as u64);
                        conn.activity.touch();
                    })
                    .await;
                if let Err(e) = spliced {
                    tracing::debug!(client = %conn.client.addr, error = %e, "splicing the response body failed; closing");
                    return Ok(false);
                }
                left -= spliceable;
                continue;
            }
        }
        // Whatever is ready now is queued; when the body must wait, the queue goes out.
        let ready = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match ready {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                flush(writer, out, stall, conn).await?;
                match tokio::time::timeout(stall, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => return Ok(false),
                }
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(client = %conn.client.addr, error = %e, "response body failed; closing");
                flush(writer, out, stall, conn).await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(fields) = frame.into_trailers() {
                        trailers = Some(fields);
                    }
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        match framing {
            Framing::None => {}
            Framing::Length(_) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                if n < data.len() {
                    whole = false;
                }
                left -= n as u64;
                queue(writer, out, data.slice(..n), stall, conn).await?;
            }
            Framing::Chunked => {
                response::chunk_size(out, data.len());
                queue(writer, out, data, stall, conn).await?;
                out.extend_from_slice(b"\r\n");
            }
            Framing::UntilClose => queue(writer, out, data, stall, conn).await?,
        }
    }
    if framing == Framing::Chunked {
        response::last_chunk(out, trailers.as_ref().filter(|_| takes_trailers));
    }
    flush(writer, out, stall, conn).await?;
    if matches!(framing, Framing::Length(_)) && left > 0 {
        // The backend's body ended short of its length: the client must not wait for
        // the rest on a connection that goes on.
        whole = false;
    }
    Ok(whole)
}

/// Queues `data` behind `out` (copied when small), writing out what is queued when it
/// grows large or `data` is large.
async fn queue(
    writer: &mut Writer,
    out: &mut BytesMut,
    data: Bytes,
    stall: Duration,
    conn: &Connection<'_>,
) -> std::io::Result<()> {
    if data.len() <= COPY_MAX {
        out.extend_from_slice(&data);
        if out.len() >= QUEUE_MAX {
            flush(writer, out, stall, conn).await?;
        }
        return Ok(());
    }
    flush(writer, out, stall, conn).await?;
    write(writer, &data, stall).await?;
    conn.proxy.client_metrics.sent.increment(data.len() as u64);
    conn.activity.touch();
    Ok(())
}

/// Writes out what is queued.
async fn flush(writer: &mut Writer, out: &mut BytesMut, stall: Duration, conn: &Connection<'_>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    write(writer, out, stall).await?;
    conn.proxy.client_metrics.sent.increment(out.len() as u64);
    conn.activity.touch();
    out.clear();
    Ok(())
}

/// The request's forwarding, boxed. Built here, outside the exchange's own future: a
/// temporary built inside it took the forwarding's size (about 5 KB) in the exchange's
/// state as well, copied with it into its box on every request.
fn forwarding(
    proxy: Arc<Proxy>,
    request: http::Request<ClientBody>,
    client: Arc<ClientInfo>,
    in_flight: InFlight,
    arrived: Instant,
) -> Pin<Box<impl Future<Output = Result<http::Response<ResponseBody>, Infallible>>>> {
    Box::pin(proxy.forward(request, client, in_flight, arrived))
}

/// Writes `bytes` whole and flushes (TLS), each within `stall`. Most writes go out
/// whole at once and a plain TCP flush is nothing: a timer is made only for a client
/// slow to take bytes.
async fn write(writer: &mut Writer, bytes: &[u8], stall: Duration) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "client took no bytes");
    let mut sent = 0;
    while sent < bytes.len() {
        match poll_fn(|cx| Poll::Ready(writer.io().poll_write(cx, &bytes[sent..]))).await {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => sent += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    if sent < bytes.len() {
        tokio::time::timeout(stall, writer.io().write_all(&bytes[sent..]))
            .await
            .map_err(|_| timed_out())??;
    }
    match poll_fn(|cx| Poll::Ready(writer.io().poll_flush(cx))).await {
        Poll::Ready(flushed) => flushed,
        Poll::Pending => tokio::time::timeout(stall, writer.io().flush())
            .await
            .map_err(|_| timed_out())?,
    }
}
