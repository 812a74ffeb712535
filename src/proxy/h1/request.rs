//! Reading a client's HTTP/1.1 request head, strictly and once: httparse finds the
//! lines, then every framing rule of the contract is applied here, as the head is
//! read, before anything of the request moves. Refused with 400 (the connection then
//! closes): a head httparse rejects (obs-fold, a bare CR, a bad name or value, a bad
//! request line), a method or target that does not parse, Content-Length together with
//! Transfer-Encoding, a Transfer-Encoding other than one `chunked`, differing or
//! unreadable Content-Length values. Refused with 431: more than `max_headers` fields or
//! a head of more than `max_header_bytes`; with 414: a request line that alone fills
//! `max_header_bytes`. The checks that do not concern framing (Host, the target's form)
//! are the proxy's, shared with HTTP/2 (`proxy::headers::refusal`).
//!
//! Header values are slices of the one frozen buffer the head was read into: no field
//! is copied.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::fields::Seen;

/// The most header fields `[limits].max_headers` may allow (its checked range).
pub const MAX_HEADERS: usize = 1000;

/// How the request's body is delimited (RFC 9112 6.3: a request without either header
/// has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// A complete, accepted request head.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    pub framing: Framing,
    /// The client may send another request on this connection after this one
    /// (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0 asked for keep-alive: the answer must say `Connection: keep-alive`.
    pub keep_alive_asked: bool,
    /// `Expect: 100-continue` on a request with a body: the client waits for a 100.
    pub expects_continue: bool,
    /// Which framing and connection fields it carries.
    pub seen: Seen,
}

/// A head answered by the proxy itself, before any of it moves; the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub text: &'static str,
}

// Returned once per head and moved straight on: boxing the head would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// Not a complete head yet: read more.
    Partial,
    Complete(Head),
    Refused(Refusal),
}

/// `[limits]` as they bound a head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

const fn refused(status: StatusCode, text: &'static str) -> Parsed {
    Parsed::Refused(Refusal { status, text })
}

const MALFORMED: Parsed = refused(StatusCode::BAD_REQUEST, "malformed request head\n");
const TOO_LARGE: Parsed = refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large\n");
pub const URI_TOO_LONG: Refusal = Refusal {
    status: StatusCode::URI_TOO_LONG,
    text: "request URI too long\n",
};

/// Parses the head at the start of `buf`; a complete head is split off it (what follows,
/// a body or a pipelined request, stays).
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Parsed {
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS);
    // Where each part lies in the head, so that the values become slices of it (on the
    // stack for the default limit and below).
    let mut small = [(0u32, 0u32, 0u32, 0u32); 128];
    let mut large = Vec::new();
    let ranges: &mut [(u32, u32, u32, u32)] = match small.get_mut(..max_headers) {
        Some(ranges) => ranges,
        None => {
            large.resize(max_headers, (0, 0, 0, 0));
            &mut large
        }
    };
    let (len, method, target, version, count) = {
        let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buf,
            &mut fields[..max_headers],
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return too_large(buf, limits),
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(httparse::Error::TooManyHeaders) => {
                return refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields\n")
            }
            Err(_) => return MALFORMED,
        };
        if len > limits.max_bytes {
            return too_large(buf, limits);
        }
        let base = buf.as_ptr() as usize;
        let at = |s: &str| (s.as_ptr() as usize - base) as u32;
        for (range, field) in ranges.iter_mut().zip(request.headers.iter()) {
            let (name, value) = (at(field.name), field.value.as_ptr() as usize - base);
            *range = (
                name,
                name + field.name.len() as u32,
                value as u32,
                (value + field.value.len()) as u32,
            );
        }
        let (Some(method), Some(path)) = (request.method, request.path) else {
            return MALFORMED;
        };
        let method = (at(method), at(method) + method.len() as u32);
        let target = (at(path), at(path) + path.len() as u32);
        (len, method, target, request.version.unwrap_or(1), request.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let slice = |(start, end): (u32, u32)| head.slice(start as usize..end as usize);
    let Ok(method) = Method::from_bytes(&slice(method)) else {
        return MALFORMED;
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(target)) else {
        return refused(StatusCode::BAD_REQUEST, "invalid request target\n");
    };
    let mut headers = HeaderMap::with_capacity(count);
    let mut seen = Seen::default();
    for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&slice((name_start, name_end))),
            HeaderValue::from_maybe_shared(slice((value_start, value_end))),
        ) else {
            return MALFORMED;
        };
        seen.note(&name);
        headers.append(name, value);
    }
    let framing = match framing(&headers, seen) {
        Ok(framing) => framing,
        Err(text) => return refused(StatusCode::BAD_REQUEST, text),
    };
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let connection = |token| seen.has(Seen::CONNECTION) && has_token(&headers, header::CONNECTION, token);
    let keep_alive_asked = version == Version::HTTP_10 && connection("keep-alive");
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_asked && framing != Framing::Chunked,
        _ => !connection("close"),
    };
    let expects_continue = version == Version::HTTP_11
        && framing != Framing::Empty
        && seen.has(Seen::EXPECT)
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Parsed::Complete(Head {
        request,
        framing,
        keep_alive,
        keep_alive_asked,
        expects_continue,
        seen,
    })
}

/// A head beyond `max_header_bytes`: 414 when its request line alone reaches the limit
/// (empty lines before it do not count), 431 otherwise.
fn too_large(buf: &[u8], limits: Limits) -> Parsed {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line_end = buf[start..].iter().position(|&b| b == b'\n');
    match line_end {
        Some(end) if end < limits.max_bytes => TOO_LARGE,
        _ => Parsed::Refused(URI_TOO_LONG),
    }
}

/// The body's framing, or why the head must be refused (request smuggling lives where
/// two readings are possible).
fn framing(headers: &HeaderMap, seen: Seen) -> Result<Framing, &'static str> {
    if !seen.has(Seen::TRANSFER_ENCODING) && !seen.has(Seen::CONTENT_LENGTH) {
        return Ok(Framing::Empty);
    }
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    let chunked = match codings.next() {
        None if headers.contains_key(header::TRANSFER_ENCODING) => {
            return Err("unsupported Transfer-Encoding; only chunked is accepted\n")
        }
        None => false,
        Some(_) if headers.contains_key(header::CONTENT_LENGTH) => {
            return Err("Content-Length and Transfer-Encoding together\n")
        }
        Some(first) if first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none() => true,
        Some(_) => return Err("unsupported Transfer-Encoding; only chunked is accepted\n"),
    };
    if chunked {
        return Ok(Framing::Chunked);
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed = (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or("invalid Content-Length\n")?;
            if length.is_some_and(|l| l != parsed) {
                return Err("two different Content-Length values\n");
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// Whether a comma-separated header of `name` has `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests;
