//! Writing a response to an HTTP/1.1 client: the head from the response's parts (the
//! status line, the fields as they are, then the framing the proxy chose and the
//! connection's fate), and the body's framing: its length when known, chunked for an
//! HTTP/1.1 client otherwise (with the trailers when the client takes them), or until
//! the connection closes for an HTTP/1.0 client.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use http::response::Parts;
use http::{header, HeaderMap, StatusCode};
use http_body::SizeHint;

/// How the body goes to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes: HEAD, 1xx, 204, 304.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, a length unknown).
    UntilClose,
}

/// What the connection tells the client in the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 staying open: nothing to say.
    Open,
    /// HTTP/1.0 staying open: `Connection: keep-alive`.
    KeepAlive,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

/// The body's framing for a response to `head_request`, from its fields and its body's
/// size: a `Content-Length` field (which a proxied response keeps), else the exact size
/// (added as a field), else chunked (`http11`) or until close.
pub fn framing(parts: &Parts, head_request: bool, hint: &SizeHint, http11: bool) -> (Framing, Option<u64>) {
    let status = parts.status;
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return (Framing::None, None);
    }
    if let Some(length) = content_length(&parts.headers) {
        return (Framing::Length(length), None);
    }
    match hint.exact() {
        Some(n) => (Framing::Length(n), Some(n)),
        None if http11 => (Framing::Chunked, None),
        None => (Framing::UntilClose, None),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_LENGTH)?;
    std::str::from_utf8(value.as_bytes()).ok()?.trim().parse().ok()
}

/// Writes the head into `out`: the status line (the response's own reason phrase when
/// it carries one), its fields, then the framing field `add_length` or chunked, and
/// the connection's fate.
pub fn write_head(out: &mut BytesMut, parts: &Parts, framing: Framing, add_length: Option<u64>, persist: Persist) {
    let status = parts.status;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or_else(|| status.canonical_reason().map(str::as_bytes))
        .unwrap_or(b"Unknown");
    out.put_slice(reason);
    out.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if let Some(n) = add_length {
        // Writing into a BytesMut cannot fail (it grows).
        let _ = write!(out, "content-length: {n}\r\n");
    }
    if framing == Framing::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    match persist {
        Persist::Open => {}
        Persist::KeepAlive => out.put_slice(b"connection: keep-alive\r\n"),
        Persist::Close => out.put_slice(b"connection: close\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// A chunk's size line.
pub fn chunk_size(out: &mut BytesMut, len: usize) {
    let _ = write!(out, "{len:x}\r\n");
}

/// The last chunk, then `trailers` (when the client takes them), then the end.
pub fn last_chunk(out: &mut BytesMut, trailers: Option<&HeaderMap>) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Response};

    fn parts(status: u16, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().append(*name, HeaderValue::from_static(value));
        }
        response.into_parts().0
    }

    #[test]
    fn a_head_carries_the_fields_then_the_framing_and_the_connection() {
        let p = parts(200, &[("x-a", "1"), ("x-a", "2")]);
        let (framing, add) = framing(&p, false, &SizeHint::with_exact(5), true);
        assert_eq!((framing, add), (Framing::Length(5), Some(5)));
        let mut out = BytesMut::new();
        write_head(&mut out, &p, framing, add, Persist::Close);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_for_http11_and_until_close_for_http10() {
        let p = parts(200, &[]);
        assert_eq!(framing(&p, false, &SizeHint::default(), true).0, Framing::Chunked);
        assert_eq!(framing(&p, false, &SizeHint::default(), false).0, Framing::UntilClose);
        let with_length = parts(200, &[("content-length", "12")]);
        assert_eq!(
            framing(&with_length, false, &SizeHint::default(), false),
            (Framing::Length(12), None)
        );
    }

    #[test]
    fn head_204_and_304_have_no_body_whatever_their_fields() {
        let p = parts(200, &[("content-length", "12")]);
        assert_eq!(framing(&p, true, &SizeHint::default(), true).0, Framing::None);
        for status in [204, 304, 101] {
            assert_eq!(
                framing(&parts(status, &[]), false, &SizeHint::default(), true).0,
                Framing::None
            );
        }
    }

    #[test]
    fn the_last_chunk_carries_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("42"));
        let mut out = BytesMut::new();
        chunk_size(&mut out, 255);
        last_chunk(&mut out, Some(&trailers));
        assert_eq!(&out[..], b"ff\r\n0\r\nx-checksum: 42\r\n\r\n");
    }
}
