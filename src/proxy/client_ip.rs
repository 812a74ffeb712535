//! Who the client is when splitgate sits behind something: the PROXY protocol header
//! (v1 text, v2 binary) that an L4 load balancer puts first on a connection, and
//! `X-Forwarded-For` from trusted forwarders (`[client_ip] trusted`, NGINX's
//! `real_ip_recursive`). Reads exactly the header's bytes and nothing of what follows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::HeaderMap;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::Cidr;

/// The v2 signature.
const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (the spec's 107 bytes).
const V1_MAX: usize = 107;
/// The longest v2 header we take (16 bytes, addresses and TLVs).
const V2_MAX: usize = 16 + 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("no complete PROXY protocol header within the client_header timeout")]
    Timeout,
    #[error("the connection closed before its PROXY protocol header ended")]
    Closed,
}

impl ProxyHeaderError {
    pub fn label(&self) -> &'static str {
        match self {
            ProxyHeaderError::Missing => "missing",
            ProxyHeaderError::Malformed(_) => "malformed",
            ProxyHeaderError::Timeout => "timeout",
            ProxyHeaderError::Closed => "closed",
        }
    }
}

/// Reads the PROXY header that must start `stream`, within `limit`: the client's
/// address it carries, or `None` for a header without one (v1 `UNKNOWN`, v2 `LOCAL`:
/// a health check of the load balancer itself; the peer is the client then).
pub async fn read_header(stream: &mut TcpStream, limit: Duration) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match tokio::time::timeout(limit, read(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::Timeout),
    }
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut peeked = [0u8; V2_MAX];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut peeked).await.map_err(|_| ProxyHeaderError::Closed)?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        match parse(&peeked[..n])? {
            Some((length, client)) => {
                let mut header = vec![0u8; length];
                stream
                    .read_exact(&mut header)
                    .await
                    .map_err(|_| ProxyHeaderError::Closed)?;
                return Ok(client);
            }
            // Not all of it yet: wait for more bytes (rare; a header comes in one
            // segment), bounded by the caller's timeout.
            None if n > seen => seen = n,
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Parses the start of a connection: `Some((header length, client))` when the header
/// is complete, `None` when more bytes are needed.
pub fn parse(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    // A prefix of either signature may be all that arrived yet.
    let starts = |signature: &[u8]| bytes.starts_with(signature) || signature.starts_with(bytes);
    if starts(b"PROXY ") {
        return parse_v1(bytes);
    }
    if starts(V2) {
        return parse_v2(bytes);
    }
    Err(ProxyHeaderError::Missing)
}

fn parse_v1(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(ProxyHeaderError::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyHeaderError::Malformed("v1 line too long"));
    }
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| ProxyHeaderError::Malformed("v1 not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let client = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", family @ ("TCP4" | "TCP6"), source, _destination, port, _destination_port] => {
            let ip: IpAddr = source
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source address"))?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(ProxyHeaderError::Malformed("v1 address of the other family"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source port"))?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyHeaderError::Malformed("v1 fields")),
    };
    Ok(Some((end + 2, client)))
}

fn parse_v2(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    if bytes.len() < 16 {
        return Ok(None);
    }
    let (version_command, family) = (bytes[12], bytes[13]);
    let length = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version"));
    }
    if length > V2_MAX {
        return Err(ProxyHeaderError::Malformed("v2 header too long"));
    }
    if bytes.len() < length {
        return Ok(None);
    }
    let body = &bytes[16..length];
    let client = match (version_command & 0x0f, family) {
        // LOCAL: the load balancer's own connection (a health check).
        (0x0, _) => None,
        (0x1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([body[8], body[9]])))
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        // UNSPEC or a family without an IP address (UNIX): no client address.
        (0x1, 0x00 | 0x31 | 0x32) => None,
        (0x1, _) => return Err(ProxyHeaderError::Malformed("v2 family or length")),
        _ => return Err(ProxyHeaderError::Malformed("v2 command")),
    };
    Ok(Some((length, client)))
}

/// The client of a request from `peer`: when `peer` is a trusted forwarder, the
/// rightmost `X-Forwarded-For` address that is not trusted (or the leftmost one, if
/// all are); otherwise `peer` itself.
pub fn real_client(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    if trusted.is_empty() || !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    let listed = headers
        .get_all(http::header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for text in listed.iter().rev() {
        let Ok(ip) = text.parse::<IpAddr>() else {
            // A value that is not an address ends what can be believed.
            break;
        };
        client = ip;
        if !trusted.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_give_the_source_address() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET /";
        assert_eq!(parse(line), Ok(Some((41, Some("203.0.113.7:5555".parse().unwrap())))));
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse(six).unwrap().unwrap().1,
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((15, None))));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(None), "more to come");
        assert_eq!(parse(b"PRO"), Ok(None));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 80\r\n").is_err());
        assert!(parse(b"PROXY TCP4 2001:db8::1 5.6.7.8 1 80\r\n").is_err());
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::Missing));
        assert!(parse(&[b'P'; 200]).is_err());
    }

    #[test]
    fn v2_headers_give_the_source_address_and_local_gives_none() {
        let mut v4 = V2.to_vec();
        v4.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0, 80]);
        v4.extend_from_slice(b"GET");
        assert_eq!(parse(&v4), Ok(Some((28, Some("198.51.100.9:8080".parse().unwrap())))));
        assert_eq!(parse(&v4[..20]), Ok(None), "more to come");
        let mut local = V2.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Some((16, None))));
        let mut bad = V2.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn trusted_forwarders_are_skipped_from_the_right() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "127.0.0.1/32"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.5, 10.1.2.3".parse().unwrap(),
        );
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            real_client(local, &headers, &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            real_client(stranger, &headers, &trusted),
            stranger,
            "an untrusted peer is the client"
        );
        assert_eq!(real_client(local, &HeaderMap::new(), &trusted), local);
        assert_eq!(real_client(local, &headers, &[]), local);
    }
}
