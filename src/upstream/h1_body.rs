//! The body of a backend's HTTP/1.1 response, read in the request's own task as the
//! client side asks for it: by length, chunked (decoded; trailers read and dropped),
//! or until the backend closes. Data frames are slices of the connection's read buffer.
//! Read to its end on a connection that stays open, the connection goes back to its
//! backend's idle list; dropped early or broken, it closes. After a 101 the connection
//! waits here for the tunnel to take it. When the backend answered before the request
//! body was through, the rest of the upload is moved along here too, between reads.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::h1::{H1Conn, HEAD_READ};
use super::h1_head::Framing;
use super::h1_upload::Upload;
use super::idle::Idle;
use crate::body::BoxError;

/// Largest read of body bytes at once: bounds the memory of a streamed response per
/// connection (hyper's default grows to ~400 KB).
const BODY_READ: usize = 64 * 1024;
/// Longest chunk-size line, and most trailer bytes and fields, accepted from a backend.
const MAX_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;
const MAX_TRAILER_FIELDS: usize = 64;

pub struct H1Body {
    conn: Option<H1Conn>,
    state: State,
    /// Where the connection goes when the body has been read to its end; `None` when
    /// it cannot carry another request.
    home: Option<Arc<Idle>>,
    /// The rest of a request body the backend answered before it was through (boxed:
    /// rare, and it would make every response body larger).
    upload: Option<Box<Upload>>,
}

enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    /// Waiting for a tunnel (101).
    Upgrade,
    Done,
}

#[derive(Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

impl H1Body {
    /// `upload`: the rest of the request body, when the backend answered before it
    /// was through (the connection then closes after this response: pass no `home`).
    pub(super) fn new(conn: H1Conn, framing: Framing, home: Option<Arc<Idle>>, upload: Option<Upload>) -> H1Body {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::UntilClose => State::UntilClose,
            Framing::Upgrade => State::Upgrade,
        };
        let mut body = H1Body {
            conn: Some(conn),
            state,
            home,
            upload: upload.map(Box::new),
        };
        if matches!(body.state, State::Done | State::Length(0)) {
            body.finish();
        }
        body
    }

    /// The connection after a 101, for the tunnel (with any bytes read past the head).
    pub(crate) fn take_upgrade(&mut self) -> Option<H1Conn> {
        if matches!(self.state, State::Upgrade) {
            self.state = State::Done;
            return self.conn.take();
        }
        None
    }

    /// What of the body can move with `splice` now: the bytes left of a plain-TCP body of
    /// known length with nothing of it buffered and no upload running beside it.
    pub(crate) fn spliceable(&self) -> Option<u64> {
        let conn = self.conn.as_ref()?;
        match self.state {
            State::Length(left)
                if left >= super::splice::SPLICE_MIN
                    && conn.buf.is_empty()
                    && self.upload.is_none()
                    && conn.plain_tcp().is_some() =>
            {
                Some(left)
            }
            _ => None,
        }
    }

    /// Moves the rest of the body (see `spliceable`) straight to `client`; then the
    /// body has ended (its connection goes home), or failed and closes.
    pub(crate) async fn splice_to(
        &mut self,
        client: &tokio::net::TcpStream,
        stall: std::time::Duration,
        moved: impl FnMut(usize),
    ) -> std::io::Result<()> {
        let (Some(left), Some(backend)) = (self.spliceable(), self.conn.as_ref().and_then(H1Conn::plain_tcp)) else {
            return Err(std::io::Error::other("the body cannot be spliced"));
        };
        match super::splice::splice_exact(backend, client, left, stall, moved).await {
            Ok(()) => {
                self.finish();
                Ok(())
            }
            Err(e) => {
                self.state = State::Done;
                self.conn = None;
                Err(e)
            }
        }
    }

    /// The body ended cleanly: the connection goes back to its idle list if it can.
    fn finish(&mut self) {
        self.state = State::Done;
        self.upload = None;
        let conn = self.conn.take();
        if let (Some(home), Some(mut conn)) = (self.home.take(), conn) {
            if conn.buf.is_empty() {
                // An idle connection keeps a head-sized buffer, not the last body read.
                if conn.buf.capacity() > HEAD_READ {
                    conn.buf = BytesMut::new();
                }
                home.give_back(conn);
            }
        }
    }

    /// Moves a pending upload along; a failed one just stops (the answer is what counts
    /// now, and the connection closes after it anyway).
    fn poll_upload(&mut self, cx: &mut Context<'_>) {
        if let (Some(upload), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) {
            if let Poll::Ready(result) = upload.poll_send(conn.io_mut(), cx) {
                self.upload = None;
                if result.is_err() {
                    self.home = None;
                }
            }
        }
    }

    fn fail(&mut self, error: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.poll_upload(cx);
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = conn.buf.len();
            match this.state {
                State::Done | State::Upgrade => return Poll::Ready(None),
                State::Length(left) | State::Chunked(Chunk::Data(left)) if buffered > 0 => {
                    let take = left.min(buffered as u64);
                    let data = conn.buf.split_to(take as usize).freeze();
                    let left = left - take;
                    match &mut this.state {
                        State::Length(n) => *n = left,
                        state => *state = State::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) }),
                    }
                    if matches!(this.state, State::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if buffered > 0 => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::Size) => match chunk_size(&conn.buf) {
                    Ok(Some((line, size))) => {
                        conn.buf.advance(line);
                        let next = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                        this.state = State::Chunked(next);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return this.fail(e),
                },
                State::Chunked(Chunk::DataEnd) => {
                    if conn.buf.starts_with(b"\r\n") || conn.buf.starts_with(b"\n") {
                        let end = if conn.buf[0] == b'\r' { 2 } else { 1 };
                        conn.buf.advance(end);
                        this.state = State::Chunked(Chunk::Size);
                        continue;
                    }
                    if buffered >= 2 || conn.buf.first().is_some_and(|&b| b != b'\r') {
                        return this.fail("invalid chunk ending from backend");
                    }
                }
                State::Chunked(Chunk::Trailers) => match trailer_section(&conn.buf) {
                    Ok(Some((len, fields))) => {
                        conn.buf.advance(len);
                        this.finish();
                        return Poll::Ready(fields.map(|f| Ok(Frame::trailers(f))));
                    }
                    Ok(None) => {}
                    Err(e) => return this.fail(e),
                },
                State::Length(_) | State::Chunked(Chunk::Data(_)) | State::UntilClose => {}
            }
            // Everything buffered is used: read more.
            let room = match this.state {
                State::Length(left) | State::Chunked(Chunk::Data(left)) => (left as usize).clamp(1, BODY_READ),
                State::UntilClose => BODY_READ,
                _ => MAX_LINE,
            };
            let read = ready!(conn.poll_read_more(cx, room));
            match read {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    // The body's end; such a connection has no `home`: it closes.
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail("backend closed the connection inside the response body"),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The trailer section at the start of `buf`, once complete (up to its empty line):
/// its length and its fields (`None` when there are none). At most `MAX_TRAILERS`
/// bytes and `MAX_TRAILER_FIELDS` fields; shared with the client side's chunked bodies
/// (`proxy::h1::reader`).
pub(crate) fn trailer_section(buf: &[u8]) -> Result<Option<(usize, Option<HeaderMap>)>, &'static str> {
    if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
        return Ok(Some((if buf[0] == b'\r' { 2 } else { 1 }, None)));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid trailer name")?;
                let value = HeaderValue::from_bytes(field.value).map_err(|_| "invalid trailer value")?;
                map.append(name, value);
            }
            Ok(Some((len, Some(map))))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => Err("trailers too large"),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err("invalid trailers"),
    }
}

/// A complete chunk-size line at the start of `buf`: its length (line end included)
/// and the size. Extensions (";name=value") are ignored.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err("chunk size line too long")
        } else {
            Ok(None)
        };
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err("invalid chunk size from backend");
    }
    let mut size = 0u64;
    for &b in digits {
        let digit = (b as char).to_digit(16).ok_or("invalid chunk size from backend")?;
        size = size * 16 + u64::from(digit);
    }
    Ok(Some((end + 1, size)))
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunk_size_lines_are_read_with_extensions_and_bounded() {
        assert_eq!(chunk_size(b"1a\r\nrest"), Ok(Some((4, 26))));
        assert_eq!(chunk_size(b"0;name=value\r\n"), Ok(Some((14, 0))));
        assert_eq!(chunk_size(b"A \r\n"), Ok(Some((4, 10))));
        assert_eq!(chunk_size(b"10"), Ok(None));
        assert!(chunk_size(b"zz\r\n").is_err());
        assert!(chunk_size(b"\r\n").is_err());
        assert!(
            chunk_size(b"1000000000000000\r\n").is_err(),
            "16 hex digits can overflow"
        );
        assert!(chunk_size(&[b'1'; 5000]).is_err(), "a line without end is bounded");
    }
}
