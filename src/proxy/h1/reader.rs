//! A client's HTTP/1.1 request body, read off its connection as the request's upstream
//! side asks for it: by length or chunked (decoded; trailers passed on as a trailers
//! frame). Data frames are slices of the connection's read buffer. The reader holds the
//! connection's read half and buffer while the body is read; when the body has been
//! read to its end, or the reader is dropped, they go back to the connection (`Home`),
//! with whether the body was read whole (if not, the connection cannot carry another
//! request and closes). Chunk sizes of 2^60 bytes or more, a chunk without its CRLF, a
//! size line or trailers beyond their bounds (4 KiB; 64 KiB and 64 fields), and a client that closes mid-body are
//! errors: the upstream request is cut and never completes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::ReadHalf;
use tokio_util::io::poll_read_buf;

use super::request::Framing;
use super::ClientStream;
use crate::clock::now_ms;
use crate::upstream::trailer_section;

/// Largest data frame handed on at once (and room made before each read).
const FRAME: usize = 64 * 1024;
/// Longest chunk-size line (extensions included); trailers are bounded by the parser
/// they share with the backend side (`upstream::trailer_section`).
const MAX_LINE: usize = 4 * 1024;
/// Significant hex digits of the largest chunk size accepted (2^60 - 1, as HAProxy).
const MAX_CHUNK_DIGITS: usize = 15;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed its connection before the end of the body")]
    Closed,
    #[error("reading the client's body failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("invalid chunked body: {0}")]
    Chunk(&'static str),
    #[error("the request body was already taken back by the connection")]
    Gone,
}

/// What goes back to the connection when the reader is done with it.
pub struct Returned {
    pub read: ReadHalf<ClientStream>,
    pub buf: BytesMut,
    /// The body was read to its end: the connection may carry another request.
    pub whole: bool,
}

/// Where the read half waits for the connection, and what the reader asks of it.
#[derive(Default)]
pub struct Home {
    returned: Mutex<Option<Returned>>,
    /// The client waits for `100 Continue` before its body; the reader was polled.
    continue_wanted: AtomicBool,
    /// Woken when the reader wants a 100 sent.
    pub wake: tokio::sync::Notify,
}

impl Home {
    /// The read half and buffer, once the reader gave them back.
    pub fn take(&self) -> Option<Returned> {
        self.returned.lock().ok()?.take()
    }

    /// A `100 Continue` is due (once).
    pub fn continue_wanted(&self) -> bool {
        self.continue_wanted.swap(false, Ordering::AcqRel)
    }
}

pub struct RequestReader {
    conn: Option<(ReadHalf<ClientStream>, BytesMut)>,
    decoder: Decoder,
    home: Arc<Home>,
    /// The connection's clock of the last byte moved (its timeouts read it).
    last_io: Arc<AtomicU64>,
    /// Received bytes, for the connection's byte counter.
    received: metrics::Counter,
    expects_continue: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkDataEnd,
    Trailers,
    Done,
}

impl RequestReader {
    /// Reads a body of `framing` (not `Empty`) from `read`, `buf` holding what was read
    /// after the head.
    pub fn new(
        read: ReadHalf<ClientStream>,
        buf: BytesMut,
        framing: Framing,
        expects_continue: bool,
        home: Arc<Home>,
        last_io: Arc<AtomicU64>,
        received: metrics::Counter,
    ) -> Self {
        let mut reader = RequestReader {
            conn: Some((read, buf)),
            decoder: Decoder::new(framing),
            home,
            last_io,
            received,
            expects_continue,
        };
        if reader.decoder.done() {
            reader.go_home();
        }
        reader
    }

    fn go_home(&mut self) {
        if let Some((read, buf)) = self.conn.take() {
            let whole = self.decoder.done();
            if let Ok(mut slot) = self.home.returned.lock() {
                *slot = Some(Returned { read, buf, whole });
            }
        }
    }

    /// Reads more into the buffer (asking for the 100 first if the client waits for it).
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        if std::mem::take(&mut self.expects_continue) {
            self.home.continue_wanted.store(true, Ordering::Release);
            self.home.wake.notify_one();
        }
        let Some((read, buf)) = self.conn.as_mut() else {
            return Poll::Ready(Err(BodyError::Gone));
        };
        buf.reserve(FRAME);
        let n = ready!(poll_read_buf(Pin::new(read), cx, buf)).map_err(BodyError::Io)?;
        if n == 0 {
            return Poll::Ready(Err(BodyError::Closed));
        }
        self.received.increment(n as u64);
        self.last_io.store(now_ms(), Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// The body's framing, decoded from whatever bytes are buffered (the reader's state;
/// public so that the fuzz target can drive it a byte at a time).
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
        };
        Decoder { state }
    }

    /// Checks the body bytes that came with the head, without taking them: an invalid
    /// chunk there is found before anything of the request leaves.
    pub fn check(&self, buffered: &[u8]) -> Result<(), BodyError> {
        if self.state != State::ChunkSize {
            return Ok(());
        }
        let mut decoder = *self;
        let mut buf = BytesMut::from(buffered);
        while decoder.step(&mut buf)?.is_some() {}
        Ok(())
    }

    /// The body's end was read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// One step on what is buffered: a frame (data split off `buf`), `None` (more bytes
    /// are needed, or the body is done), or an error.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, BodyError> {
        loop {
            let state = self.state;
            if buf.is_empty() || state == State::Done {
                return Ok(None);
            }
            match state {
                State::Done => return Ok(None),
                State::Length(left) | State::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len()).min(FRAME);
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match (state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), left) => State::Length(left),
                        (_, 0) => State::ChunkDataEnd,
                        (_, left) => State::ChunkData(left),
                    };
                    return Ok(Some(Frame::data(data)));
                }
                State::ChunkSize => match size_line(buf)? {
                    None => return Ok(None),
                    Some(0) => self.state = State::Trailers,
                    Some(size) => self.state = State::ChunkData(size),
                },
                State::ChunkDataEnd => match buf.first() {
                    Some(b'\n') => {
                        buf.advance(1);
                        self.state = State::ChunkSize;
                    }
                    Some(b'\r') if buf.len() < 2 => return Ok(None),
                    Some(b'\r') if buf[1] == b'\n' => {
                        buf.advance(2);
                        self.state = State::ChunkSize;
                    }
                    _ => return Err(BodyError::Chunk("chunk data not followed by CRLF")),
                },
                State::Trailers => match trailer_section(buf).map_err(BodyError::Chunk)? {
                    None => return Ok(None),
                    Some((len, fields)) => {
                        buf.advance(len);
                        self.state = State::Done;
                        if let Some(fields) = fields {
                            return Ok(Some(Frame::trailers(fields)));
                        }
                    }
                },
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A complete chunk-size line at the start of `buf`, consumed: the size; `None` when
/// the line is not complete yet.
fn size_line(buf: &mut BytesMut) -> Result<Option<u64>, BodyError> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return match buf.len() > MAX_LINE {
            true => Err(BodyError::Chunk("chunk-size line too long")),
            false => Ok(None),
        };
    };
    if end > MAX_LINE {
        return Err(BodyError::Chunk("chunk-size line too long"));
    }
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BodyError::Chunk("chunk size is not hexadecimal"));
    }
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > MAX_CHUNK_DIGITS {
        return Err(BodyError::Chunk("chunk size of 2^60 bytes or more"));
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !ext.is_empty() && !ext.starts_with(b";") || ext.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(BodyError::Chunk("invalid chunk extension"));
    }
    let size = line[..digits].iter().fold(0u64, |size, &b| {
        size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0))
    });
    buf.advance(end + 1);
    Ok(Some(size))
}

impl Body for RequestReader {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if this.decoder.done() {
                this.go_home();
                return Poll::Ready(None);
            }
            let Some((_, buf)) = this.conn.as_mut() else {
                return Poll::Ready(Some(Err(BodyError::Gone)));
            };
            match this.decoder.step(buf) {
                Ok(Some(frame)) => {
                    if this.decoder.done() {
                        this.go_home();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.decoder.done() => continue,
                Ok(None) => {
                    if let Err(e) = ready!(this.fill(cx)) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }
}

impl Drop for RequestReader {
    fn drop(&mut self) {
        self.go_home();
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
