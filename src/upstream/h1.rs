//! HTTP/1.1 to a backend, run inside the request's own task (no connection task, no
//! channels): one connection (`H1Conn`), its request head written in one write, its
//! body sent while watching for an early answer (`h1_upload`), its response head read
//! (parsed in `h1_head`). Bounded: the head must fit in `MAX_HEAD` bytes, and at most
//! `MAX_INTERIM` 1xx answers are skipped before the final one.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use http::header;
use http::{request, Method, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::h1_head::{buffered, parse_head, Buffered, Framing, Head};
use super::h1_upload::{write_fields, Upload, UploadError};
use super::transport::Io;
use crate::body::{BoxError, RequestBody};

/// Largest response head (status line and fields).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most interim (1xx) answers skipped before the final one.
const MAX_INTERIM: usize = 16;
/// Room made in the read buffer before each read of a head.
pub(super) const HEAD_READ: usize = 8 * 1024;

/// One open HTTP/1.1 connection to a backend and the bytes read from it but not used.
pub(crate) struct H1Conn {
    io: Io,
    pub(super) buf: BytesMut,
    /// The request head being written; kept (cleared) for the next request, so a
    /// reused connection allocates nothing for it.
    out: Vec<u8>,
}

pub(super) struct WriteError {
    pub error: io::Error,
    /// Nothing was accepted by the socket: the request can go elsewhere untouched.
    pub nothing_sent: bool,
}

/// How sending the body ended.
pub(super) enum BodyEnd {
    /// Sent in full.
    Sent,
    /// The backend answered before the body was through (a final head is in the
    /// buffer, or it closed, or sent something that is not HTTP): the rest of the
    /// upload goes along with the response body, and the connection closes after it.
    Answered,
}

impl H1Conn {
    pub(super) fn new(io: Io) -> H1Conn {
        H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
        }
    }

    /// The connection is still usable for a new request: no bytes or close arrived while
    /// it sat idle. Checks what the runtime already knows (no system call unless the
    /// socket was reported readable).
    pub(super) fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut probe), Poll::Pending)
    }

    /// Writes the request head, with the body's framing added: the client's
    /// `Content-Length` when it sent one, else the body's exact length, else chunked.
    /// Returns the upload of the body, `None` when there is none to send (as hyper's
    /// client did, a GET, HEAD or CONNECT body of unknown length is not sent).
    pub(super) async fn write_head(
        &mut self,
        head: &request::Parts,
        body: RequestBody,
    ) -> Result<Option<Upload>, (WriteError, RequestBody)> {
        let upload = if body.is_end_stream() {
            None
        } else if head.headers.contains_key(header::CONTENT_LENGTH) || body.size_hint().exact().is_some() {
            Some(false)
        } else if matches!(head.method, Method::GET | Method::HEAD | Method::CONNECT) {
            None
        } else {
            Some(true)
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_head(head, &body, upload, &mut out);
        let mut sent = 0;
        while sent < out.len() {
            let error = match poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, &out[sent..])).await {
                Ok(0) => io::ErrorKind::WriteZero.into(),
                Ok(n) => {
                    sent += n;
                    continue;
                }
                Err(error) => error,
            };
            let nothing_sent = sent == 0;
            return Err((WriteError { error, nothing_sent }, body));
        }
        // TLS may hold the last record back until flushed; TCP flushes at once.
        if let Err(error) = poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await {
            let nothing_sent = false;
            return Err((WriteError { error, nothing_sent }, body));
        }
        if out.capacity() <= HEAD_READ {
            self.out = out;
        }
        Ok(upload.map(|chunked| {
            let declared = head
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok())
                .or_else(|| body.size_hint().exact());
            Upload::new(body, chunked, declared)
        }))
    }

    /// Sends the body. Watches the backend meanwhile: a final answer before the body is
    /// through ends this phase (`Answered`: the caller lets the rest of the upload go
    /// along with the response body); interim answers (100 Continue) are skipped.
    pub(super) async fn send_body(&mut self, upload: &mut Upload) -> Result<BodyEnd, UploadError> {
        let mut interim = 0;
        poll_fn(|cx| {
            if self
                .poll_early_answer(cx, &mut interim)
                .map_err(UploadError::Connection)?
            {
                return Poll::Ready(Ok(BodyEnd::Answered));
            }
            match ready!(upload.poll_send(&mut self.io, cx)) {
                Ok(()) => Poll::Ready(Ok(BodyEnd::Sent)),
                // A backend that answered and closed: its answer counts, not the error.
                Err(UploadError::Connection(_))
                    if matches!(self.poll_early_answer(cx, &mut interim), Ok(true))
                        && matches!(buffered(&self.buf), Buffered::Final) =>
                {
                    Poll::Ready(Ok(BodyEnd::Answered))
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Reads what the backend sent while the body was going out; true once a final
    /// response head is complete in the buffer (or the backend closed, or sent more
    /// than a head may hold, or more than `MAX_INTERIM` interim answers).
    fn poll_early_answer(&mut self, cx: &mut Context<'_>, interim: &mut usize) -> Result<bool, io::Error> {
        loop {
            match buffered(&self.buf) {
                Buffered::Interim(len) if *interim < MAX_INTERIM => {
                    *interim += 1;
                    self.buf.advance(len);
                    continue;
                }
                Buffered::Partial if self.buf.len() <= MAX_HEAD => {}
                _ => return Ok(true),
            }
            match self.poll_read_more(cx, HEAD_READ) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Ok(true),
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Reads the final response head (interim 1xx answers other than 101 skipped).
    /// `head_request`: the request was HEAD, so the response has no body.
    pub(super) async fn read_head(&mut self, head_request: bool) -> Result<Head, BoxError> {
        let mut interim = 0;
        loop {
            if let Some(head) = parse_head(&mut self.buf, head_request)? {
                if head.framing != Framing::Upgrade && head.response.status().is_informational() {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err("backend sent too many interim (1xx) responses".into());
                    }
                    continue;
                }
                return Ok(head);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(format!("response head larger than {MAX_HEAD} bytes").into());
            }
            if self.read_more(HEAD_READ).await? == 0 {
                return Err(if self.buf.is_empty() {
                    "backend closed the connection before responding".into()
                } else {
                    "backend closed the connection inside the response head".into()
                });
            }
        }
    }

    /// One read into the buffer, with at least `room` bytes free; 0 at end of stream.
    pub(super) async fn read_more(&mut self, room: usize) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_more(cx, room)).await
    }

    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < room.clamp(1, 1024) {
            self.buf.reserve(room);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Sends a request without a body and reads the status of the answer (a health
    /// probe: the connection is not kept).
    pub(crate) async fn status_of(mut self, request: http::Request<RequestBody>) -> Result<StatusCode, BoxError> {
        let (parts, body) = request.into_parts();
        self.write_head(&parts, body)
            .await
            .map_err(|(e, _)| BoxError::from(e.error))?;
        let head = self.read_head(parts.method == Method::HEAD).await?;
        Ok(head.response.status())
    }

    pub(super) fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        self.io.plain_tcp()
    }

    pub(super) fn io_mut(&mut self) -> &mut Io {
        &mut self.io
    }

    /// The transport and the bytes already read past the head, for a tunnel.
    pub(crate) fn into_parts(self) -> (Io, BytesMut) {
        (self.io, self.buf)
    }
}

/// `upload`: `Some(chunked)` when a body follows.
fn encode_head(head: &request::Parts, body: &RequestBody, upload: Option<bool>, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(&head.headers, out);
    match upload {
        Some(true) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(false) if !head.headers.contains_key(header::CONTENT_LENGTH) => {
            if let Some(len) = body.size_hint().exact() {
                out.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
            }
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}
