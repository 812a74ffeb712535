//! Reading a backend's response head: httparse into an `http::Response` whose header
//! values are slices of the one frozen buffer the head was read into (no copy per
//! field), with the body's framing (RFC 9112 6.3) and whether the connection may carry
//! another request. Bounded by `MAX_HEADERS` fields (the byte bound is the caller's).

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::ext::ReasonPhrase;

use crate::body::BoxError;
use crate::fields::Seen;

/// Most header fields in one response head (hyper's default).
const MAX_HEADERS: usize = 100;

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

/// What the start of the read buffer holds.
pub(super) enum Buffered {
    /// A complete interim (1xx, not 101) head of this length.
    Interim(usize),
    /// Not a complete head yet.
    Partial,
    /// A complete final head, or bytes that are not a response head at all.
    Final,
}

/// What the start of `buf` holds (see `Buffered`).
pub(super) fn buffered(buf: &[u8]) -> Buffered {
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
pub(super) fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, BoxError> {
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
    let mut seen = Seen::default();
    for &(name_start, name_end, value_start, value_end) in &ranges[..count] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))?;
        seen.note(&name);
        headers.append(name, value);
    }
    // Transfer-Encoding in HTTP/1.0, or beside Content-Length, is suspect framing: the
    // connection closes after this response (RFC 9112 6.1, 6.3).
    let odd_framing = seen.has(Seen::TRANSFER_ENCODING) && (version == 0 || seen.has(Seen::CONTENT_LENGTH));
    let keep_alive = keeps_alive(&headers, seen, version) && !odd_framing;
    let framing = framing(status, &headers, seen, head_request)?;
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
fn keeps_alive(headers: &HeaderMap, seen: Seen, version: u8) -> bool {
    let has = |token: &str| {
        seen.has(Seen::CONNECTION)
            && headers.get_all(header::CONNECTION).iter().any(|value| {
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
fn framing(status: StatusCode, headers: &HeaderMap, seen: Seen, head_request: bool) -> Result<Framing, BoxError> {
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
    if seen.has(Seen::TRANSFER_ENCODING) {
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
