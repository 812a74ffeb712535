//! HTTP/1.1 to a backend, run inside the request's own task (no connection task, no
//! channels): write the request head and body, read the response head into an
//! `http::Response`, and say how its body is framed. Header values are slices of the
//! one buffer the head was read into (no copy per header). Bounded: the head must fit
//! in `MAX_HEAD` bytes and `MAX_HEADERS` fields, and at most `MAX_INTERIM` 1xx answers
//! are skipped before the final one.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::ext::ReasonPhrase;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use super::connect::Conn;
use super::h1_upload::{Upload, UploadError};
use crate::body::{BoxError, RequestBody};

/// Largest response head (status line and fields).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head (hyper's default).
const MAX_HEADERS: usize = 100;
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

/// The transport: plain TCP or TLS over it (boxed: TLS state is large and rare).
pub(crate) enum Io {
    Plain(Conn),
    Tls(Box<tokio_rustls::client::TlsStream<Conn>>),
}

/// How the response body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes; the connection cannot be reused.
    UntilClose,
    /// 101: the connection now belongs to a tunnel.
    Upgrade,
}

/// A response head read from the backend.
pub(super) struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry another request once this response has ended.
    pub keep_alive: bool,
}

/// Why a request head could not be written, and whether any of it left.
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

/// What the start of the read buffer holds.
enum Buffered {
    /// A complete interim (1xx, not 101) head of this length.
    Interim(usize),
    /// Not a complete head yet.
    Partial,
    /// A complete final head, or bytes that are not a response head at all.
    Final,
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
        Ok(upload.map(|chunked| Upload::new(body, chunked)))
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
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
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

/// What the start of `buf` holds (see `Buffered`).
fn buffered(buf: &[u8]) -> Buffered {
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields) {
        Ok(httparse::Status::Partial) => Buffered::Partial,
        Ok(httparse::Status::Complete(len)) => match response.code {
            Some(code) if (100..200).contains(&code) && code != 101 => Buffered::Interim(len),
            _ => Buffered::Final,
        },
        Err(_) => Buffered::Final,
    }
}

/// Parses a complete head off the front of `buf` (`None`: not complete yet).
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, BoxError> {
    // Where each field's name and value lie in the head: the values become slices of
    // the frozen head, so no field is copied.
    let mut ranges = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, version, count, reason) = {
        let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut fields);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("invalid response head from backend: {e}").into()),
        };
        let base = buf.as_ptr() as usize;
        for (range, field) in ranges.iter_mut().zip(response.headers.iter()) {
            // Offsets inside the head (at most `MAX_HEAD` plus one read): they fit in u32.
            let name = (field.name.as_ptr() as usize - base) as u32;
            let value = (field.value.as_ptr() as usize - base) as u32;
            *range = (
                name,
                name + field.name.len() as u32,
                value,
                value + field.value.len() as u32,
            );
        }
        let code = response.code.unwrap_or(0);
        // A reason other than the standard one is passed on (hyper's server writes it).
        let canonical = StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason());
        let reason = response
            .reason
            .filter(|r| !r.is_empty() && canonical != Some(*r))
            .and_then(|r| ReasonPhrase::try_from(r.as_bytes()).ok());
        (len, code, response.version.unwrap_or(1), response.headers.len(), reason)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code} from backend"))?;
    let mut headers = HeaderMap::with_capacity(count);
    for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))?;
        headers.append(name, value);
    }
    // Transfer-Encoding in HTTP/1.0, or beside Content-Length, is suspect framing: the
    // connection closes after this response (RFC 9112 6.1, 6.3).
    let odd_framing = headers.contains_key(header::TRANSFER_ENCODING)
        && (version == 0 || headers.contains_key(header::CONTENT_LENGTH));
    let keep_alive = keeps_alive(&headers, version) && !odd_framing;
    let framing = framing(status, &headers, head_request)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    *response.headers_mut() = headers;
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
    Ok(Some(Head {
        response,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
    }))
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
/// `Connection: keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: u8) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version == 0 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// RFC 9112 6.3: no body for HEAD, 1xx, 204 and 304; Transfer-Encoding wins over
/// Content-Length (chunked when it is the last coding, else until close); differing
/// Content-Length values are an error; neither: until close.
fn framing(status: StatusCode, headers: &HeaderMap, head_request: bool) -> Result<Framing, BoxError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Framing::Upgrade);
    }
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        let chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed = std::str::from_utf8(part)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or("invalid Content-Length from backend")?;
            if length.is_some_and(|l| l != parsed) {
                return Err("conflicting Content-Length values from backend".into());
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, data),
            Io::Tls(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(bytes: &[u8], head_request: bool) -> Result<Option<Head>, BoxError> {
        parse_head(&mut BytesMut::from(bytes), head_request)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing_of = |head: &str, head_request| parse(head.as_bytes(), head_request).unwrap().unwrap().framing;
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false),
            Framing::UntilClose
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n", false), Framing::UntilClose);
        assert_eq!(
            framing_of("HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Framing::Upgrade
        );
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5", false).unwrap().is_none(),
            "not complete yet"
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_framing() {
        let keeps = |head: &str| parse(head.as_bytes(), false).unwrap().unwrap().keep_alive;
        assert!(keeps("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keeps("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keeps(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keeps(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!keeps("HTTP/1.1 200 OK\r\n\r\n"), "a body delimited by close");
    }

    proptest! {
        /// Whatever a backend sends, parsing a head gives a head, "not yet" or an error:
        /// never a panic.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), head_request: bool) {
            let _ = parse(&bytes, head_request);
        }

        /// Every field of a head arrives with its value (trimmed), and the body's bytes
        /// stay in the buffer.
        #[test]
        fn generated_heads_keep_every_field(values in proptest::collection::vec("[a-zA-Z0-9 ;=,]{0,40}", 0..20)) {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for (i, value) in values.iter().enumerate() {
                head.push_str(&format!("x-field-{i}: {value}\r\n"));
            }
            head.push_str("Content-Length: 3\r\n\r\nabc");
            let mut buf = BytesMut::from(head.as_bytes());
            let parsed = parse_head(&mut buf, false).unwrap().unwrap();
            prop_assert_eq!(parsed.framing, Framing::Length(3));
            prop_assert_eq!(&buf[..], b"abc", "the body stays in the buffer");
            for (i, value) in values.iter().enumerate() {
                let got = parsed.response.headers().get(format!("x-field-{i}")).unwrap();
                prop_assert_eq!(got.as_bytes(), value.trim().as_bytes());
            }
        }
    }
}
