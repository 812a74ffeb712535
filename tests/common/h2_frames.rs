//! Raw HTTP/2 frames over a plain TCP connection, for what no well-behaved client can
//! send (a bad preface, a flow-control window overflowed): frames built by hand,
//! header blocks as HPACK literals without indexing (no table state, no Huffman), and
//! the server's frames read one by one, its SETTINGS acknowledged.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
pub const PROTOCOL_ERROR: u32 = 1;
pub const FLOW_CONTROL_ERROR: u32 = 3;

/// One frame as it came off the wire.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
    }
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A HEADERS frame (END_HEADERS set) carrying `fields` in order, pseudo-headers
/// included, each as an HPACK literal without indexing with a literal name: any bytes
/// go out as they are (HPACK lengths up to 126 bytes).
pub fn headers(stream: u32, end_stream: bool, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127, "short fields only");
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name);
        block.push(value.len() as u8);
        block.extend_from_slice(value);
    }
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// The pseudo-headers of a GET of `path`.
pub fn get(path: &'static str) -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"h2.example"),
    ]
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A raw HTTP/2 client connection (over TCP, or over TLS).
pub struct RawH2<S = TcpStream> {
    stream: S,
    read: Vec<u8>,
}

impl RawH2 {
    /// Connects and sends `first` (normally `PREFACE`) and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr, first: &[u8]) -> RawH2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawH2::over(stream, first).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawH2<S> {
    /// Sends `first` and an empty SETTINGS frame on a connection already open.
    pub async fn over(stream: S, first: &[u8]) -> RawH2<S> {
        let mut raw = RawH2 {
            stream,
            read: Vec::new(),
        };
        raw.send(first).await;
        raw.send(&frame(SETTINGS, 0, 0, &[])).await;
        raw
    }

    /// Writes `bytes`; a connection the server closed is not an error here (what it
    /// sent before is still read).
    pub async fn send(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).await.is_ok() {
            let _ = self.stream.flush().await;
        }
    }

    /// The server's next frame; `None` when it closed the connection or sent nothing
    /// more within `limit`. A SETTINGS frame is acknowledged as it passes.
    pub async fn next_frame(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.read.len() >= 9 {
                let len = u32::from_be_bytes([0, self.read[0], self.read[1], self.read[2]]) as usize;
                if self.read.len() >= 9 + len {
                    let head: Vec<u8> = self.read.drain(..9).collect();
                    let payload = self.read.drain(..len).collect();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                        payload,
                    };
                    if frame.kind == SETTINGS && frame.flags & 1 == 0 {
                        self.send(&self::frame(SETTINGS, 1, 0, &[])).await;
                    }
                    return Some(frame);
                }
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.read.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    }

    /// Frames until the first that `wanted` picks (returned with every frame before it),
    /// or until the connection closes or `limit` passes.
    pub async fn frames_until(&mut self, limit: Duration, wanted: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        while let Some(frame) = self
            .next_frame(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            let done = wanted(&frame);
            frames.push(frame);
            if done {
                break;
            }
        }
        frames
    }
}
