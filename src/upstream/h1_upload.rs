//! A request body on its way to an HTTP/1.1 backend: as it is (Content-Length) or as
//! chunks (with the client's trailers in the last one). It is driven by polling, so the
//! same upload can first run alone and then, when the backend answers before it is
//! through, alongside the response body (full-duplex backends, early 4xx answers).
//! Written data is flushed whenever the client's body has nothing more for now, so a
//! TLS record never waits in the TLS layer for the next piece.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio_util::io::poll_write_buf;

use super::transport::Io;
use crate::body::{BoxError, RequestBody};

/// Why an upload stopped before its end.
pub(super) enum UploadError {
    /// The client's side of the body failed (reset, malformed, too large).
    Client(BoxError),
    /// The backend connection failed.
    Connection(io::Error),
}

pub(crate) struct Upload {
    body: RequestBody,
    chunked: bool,
    /// Framed bytes not yet accepted by the socket.
    pending: Option<Framed>,
    /// The client's body has ended (its last piece may still be pending).
    finished: bool,
    /// Bytes still owed by a body of declared length.
    left: Option<u64>,
}

impl Upload {
    /// `declared`: the body's length when the head announced one.
    pub(super) fn new(body: RequestBody, chunked: bool, declared: Option<u64>) -> Upload {
        Upload {
            body,
            chunked,
            pending: None,
            finished: false,
            left: declared.filter(|_| !chunked),
        }
    }

    /// Every byte the head announced is on the wire (the client's end-of-body signal
    /// may still be on its way, as when an HTTP/2 client ends its stream with an empty
    /// frame): an answer that comes now is not an early one.
    pub(super) fn all_sent(&self) -> bool {
        self.pending.is_none() && self.left == Some(0)
    }

    /// Moves the body along; `Ready(Ok)` once all of it is written and flushed.
    pub(super) fn poll_send(&mut self, io: &mut Io, cx: &mut Context<'_>) -> Poll<Result<(), UploadError>> {
        loop {
            if let Some(framed) = &mut self.pending {
                while framed.has_remaining() {
                    let written =
                        ready!(poll_write_buf(Pin::new(&mut *io), cx, framed)).map_err(UploadError::Connection)?;
                    if written == 0 {
                        return Poll::Ready(Err(UploadError::Connection(io::ErrorKind::WriteZero.into())));
                    }
                }
                self.pending = None;
            }
            if self.finished {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(UploadError::Connection)?;
                return Poll::Ready(Ok(()));
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    // Nothing more for now: what was written must not wait in TLS.
                    if let Poll::Ready(Err(e)) = Pin::new(&mut *io).poll_flush(cx) {
                        return Poll::Ready(Err(UploadError::Connection(e)));
                    }
                    return Poll::Pending;
                }
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        if let Some(left) = &mut self.left {
                            *left = left.saturating_sub(data.len() as u64);
                        }
                        self.pending = Some(Framed::data(data, self.chunked));
                    }
                    Ok(_) => {}
                    Err(frame) => {
                        // Trailers end the body; they travel in the last chunk.
                        self.finished = true;
                        let trailers = frame.into_trailers().ok();
                        self.pending = self.chunked.then(|| Framed::last(trailers.as_ref()));
                    }
                },
                Some(Err(error)) => return Poll::Ready(Err(UploadError::Client(error))),
                None => {
                    self.finished = true;
                    self.pending = self.chunked.then(|| Framed::last(None));
                }
            }
        }
    }
}

/// Header (or trailer) fields as HTTP/1.1 lines, `name: value\r\n` each.
pub(super) fn write_fields(fields: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// One piece of body on its way out: the data with its chunk framing around it.
struct Framed {
    prefix: Bytes,
    data: Bytes,
    suffix: &'static [u8],
}

impl Framed {
    fn data(data: Bytes, chunked: bool) -> Framed {
        if !chunked {
            return Framed {
                prefix: Bytes::new(),
                data,
                suffix: b"",
            };
        }
        Framed {
            prefix: Bytes::from(format!("{:x}\r\n", data.len())),
            data,
            suffix: b"\r\n",
        }
    }

    /// The last chunk, with trailer fields when the client sent some.
    fn last(trailers: Option<&HeaderMap>) -> Framed {
        let Some(trailers) = trailers.filter(|t| !t.is_empty()) else {
            return Framed {
                prefix: Bytes::from_static(b"0\r\n\r\n"),
                data: Bytes::new(),
                suffix: b"",
            };
        };
        let mut out = b"0\r\n".to_vec();
        write_fields(trailers, &mut out);
        out.extend_from_slice(b"\r\n");
        Framed {
            prefix: Bytes::from(out),
            data: Bytes::new(),
            suffix: b"",
        }
    }
}

impl Buf for Framed {
    fn remaining(&self) -> usize {
        self.prefix.len() + self.data.len() + self.suffix.len()
    }

    fn chunk(&self) -> &[u8] {
        if !self.prefix.is_empty() {
            &self.prefix
        } else if !self.data.is_empty() {
            &self.data
        } else {
            self.suffix
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for part in [&self.prefix[..], &self.data[..], self.suffix] {
            if !part.is_empty() && n < dst.len() {
                dst[n] = io::IoSlice::new(part);
                n += 1;
            }
        }
        n
    }

    fn advance(&mut self, mut count: usize) {
        let from_prefix = count.min(self.prefix.len());
        self.prefix.advance(from_prefix);
        count -= from_prefix;
        let from_data = count.min(self.data.len());
        self.data.advance(from_data);
        count -= from_data;
        self.suffix = &self.suffix[count.min(self.suffix.len())..];
    }
}
