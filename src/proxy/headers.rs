//! Header rules for proxied messages: hop-by-hop headers removed both ways (RFC 9110
//! 7.6.1), forwarding headers (X-Forwarded-*, Via) set on requests, Host preserved (an
//! absolute-form target's authority replaces it), and the request heads refused with 400.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::Version;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 7.6.1, plus the Proxy-* headers meant for this hop. `Connection` first,
/// `TE` second (kept when it only says `trailers`, as gRPC needs). `Trailer` is
/// end-to-end and stays, except on a response whose trailers the client will not get
/// (see `Trailers`).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// What one pass over a message's header names found: which hop-by-hop headers (in
/// `HOP_BY_HOP` order) and which of the headers the rules look at are present, so that
/// the rules look up only what is there (most messages carry no hop-by-hop header).
#[derive(Default)]
struct Survey {
    hop: [bool; HOP_BY_HOP.len()],
    host: bool,
    forwarded_for: bool,
    trailer: bool,
}

impl Survey {
    fn of(headers: &HeaderMap) -> Survey {
        let mut survey = Survey::default();
        for name in headers.keys() {
            match name.as_str() {
                "connection" => survey.hop[0] = true,
                "te" => survey.hop[1] = true,
                "keep-alive" => survey.hop[2] = true,
                "transfer-encoding" => survey.hop[3] = true,
                "upgrade" => survey.hop[4] = true,
                "proxy-connection" => survey.hop[5] = true,
                "proxy-authenticate" => survey.hop[6] = true,
                "proxy-authorization" => survey.hop[7] = true,
                "host" => survey.host = true,
                "x-forwarded-for" => survey.forwarded_for = true,
                "trailer" => survey.trailer = true,
                _ => {}
            }
        }
        survey
    }
}

/// Removes Connection and every header it names, plus those of the fixed hop-by-hop
/// set a survey found `present`.
fn strip_present(headers: &mut HeaderMap, mut present: [bool; HOP_BY_HOP.len()]) {
    if present[1]
        && headers
            .get_all(header::TE)
            .iter()
            .all(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
    {
        present[1] = false;
    }
    if present[0] {
        let named = || {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|list| list.split(','))
                .map(str::trim)
                .filter(|token| {
                    // Host is end to end and required: a Connection header never removes it.
                    !["keep-alive", "close", "upgrade", "host", ""]
                        .iter()
                        .any(|t| token.eq_ignore_ascii_case(t))
                })
        };
        // Most say only `keep-alive` or `close`: nothing to collect then.
        if named().next().is_some() {
            let named: Vec<HeaderName> = named()
                .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 client asks to switch to (`Connection: upgrade` + `Upgrade`).
pub fn upgrade_request(parts: &Parts) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11 {
        return None;
    }
    let wants = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    wants.then(|| parts.headers.get(header::UPGRADE).cloned()).flatten()
}

/// What a connection knows about its client, computed once per connection.
#[derive(Clone)]
pub struct ClientInfo {
    pub addr: std::net::IpAddr,
    /// The client's IP as a header value, for X-Forwarded-For.
    pub ip: HeaderValue,
    /// "http" or "https", for X-Forwarded-Proto.
    pub proto: HeaderValue,
}

/// Rewrites a client request's head for the backend: HTTP/1.1, Host kept (taken from
/// the HTTP/2 authority when there is no Host header), hop-by-hop headers removed,
/// forwarding headers set, and the upgrade headers restored for an upgrade.
pub fn prepare_request(parts: &mut Parts, client: &ClientInfo, upgrade: Option<&HeaderValue>) {
    let received = match parts.version {
        Version::HTTP_2 => HeaderValue::from_static("2.0 splitgate"),
        Version::HTTP_10 => HeaderValue::from_static("1.0 splitgate"),
        _ => HeaderValue::from_static("1.1 splitgate"),
    };
    let headers = &mut parts.headers;
    headers.reserve(5);
    if parts.version == Version::HTTP_2 {
        join_cookies(headers);
    }
    let survey = Survey::of(headers);
    let host = match survey.host {
        true => headers.get(header::HOST).cloned(),
        false => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    strip_present(headers, survey.hop);
    if let Some(host) = host {
        if !survey.host {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    match survey.forwarded_for {
        true => append_forwarded_for(headers, &client.ip),
        false => {
            headers.insert(X_FORWARDED_FOR.clone(), client.ip.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), client.proto.clone());
    headers.append(header::VIA, received);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    parts.version = Version::HTTP_11;
}

/// HTTP/2 may split cookies into several fields; HTTP/1.1 backends expect one line,
/// joined with "; " (RFC 9113 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Why a request head must be refused with 400 before anything of it moves: its target
/// is not a path (`GET foo`, never rewritten to `/`), or in absolute form with user
/// information or a scheme other than http(s); it names its host twice, in HTTP/1.1 not
/// at all, or not as one `host[:port]` (`Host: a, b`, `Host: a b`: RFC 9112 3.2); in
/// HTTP/2 its `host` names another entity than its `:authority` (RFC 9113 8.3.1). The
/// strictest reading that no legitimate client notices. (A body that could be framed
/// two ways is refused as the HTTP/1.1 head is read, by `h1::request`; HTTP/2 frames
/// its bodies itself.)
pub fn refusal<B>(request: &http::Request<B>) -> Option<&'static str> {
    let uri = request.uri();
    if uri.path_and_query().is_none() {
        return Some("the request target must be a path, e.g. /index.html\n");
    }
    let headers = request.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Some("two Host headers\n"),
        (None, _) if request.version() == Version::HTTP_11 => {
            return Some("an HTTP/1.1 request must have a Host header\n")
        }
        (host, _) => host,
    };
    if host.is_some_and(|host| !is_host(host.as_bytes())) {
        return Some("the Host header must be one host[:port]\n");
    }
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            return Some("the request target must not carry user information\n");
        }
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Some("the request target's scheme must be http or https\n");
        }
        let contradicted =
            host.is_some_and(|host| !same_authority(host.as_bytes(), authority.as_str().as_bytes(), uri.scheme_str()));
        if request.version() == Version::HTTP_2 && contradicted {
            return Some("the host header names another host than :authority\n");
        }
    }
    None
}

/// RFC 9112 3.2.2: an HTTP/1 request in absolute form (`GET http://host/path`) is
/// addressed by its target's authority, whatever its Host says: the authority becomes
/// its Host, for routing and for the backend. (Checked by `refusal` first.)
pub fn host_from_target<B>(request: &mut http::Request<B>) {
    if request.version() == Version::HTTP_2 {
        return;
    }
    let authority = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(authority) = authority {
        request.headers_mut().insert(header::HOST, authority);
    }
}

/// A Host value is `uri-host [":" port]` (RFC 9110 7.2, RFC 3986 3.2.2): an IP literal
/// in brackets, or a name or IPv4 address of unreserved characters, %-escapes and
/// sub-delimiters other than the comma (a comma is what joins two Host values into one,
/// and no name has one); the port is digits. Empty is valid (a target without
/// authority).
fn is_host(value: &[u8]) -> bool {
    let (host, port) = split_port(value);
    let name_byte = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(b);
    let host_ok = match host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        Some(literal) => !literal.is_empty() && literal.iter().all(|b| name_byte(b) || *b == b':'),
        None => !host.starts_with(b"[") && host.iter().all(name_byte),
    };
    host_ok && port.is_none_or(|port| port.iter().all(u8::is_ascii_digit))
}

/// `host[:port]` split at the port's colon (after the brackets of an IP literal).
fn split_port(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let after_literal = match value.first() {
        Some(b'[') => value.iter().position(|&b| b == b']').map_or(value.len(), |end| end + 1),
        _ => 0,
    };
    match value[after_literal..].iter().position(|&b| b == b':') {
        Some(at) => (&value[..after_literal + at], Some(&value[after_literal + at + 1..])),
        None => (value, None),
    }
}

/// Two authorities name the same entity after scheme-based normalization (RFC 3986
/// 6.2.3, as RFC 9113 8.3.1 asks of a proxy): host names compared without case, an
/// empty or absent port read as the scheme's default.
fn same_authority(a: &[u8], b: &[u8], scheme: Option<&str>) -> bool {
    let default: &[u8] = match scheme {
        Some("https") => b"443",
        _ => b"80",
    };
    let ((host_a, port_a), (host_b, port_b)) = (split_port(a), split_port(b));
    host_a.eq_ignore_ascii_case(host_b) && port_number(port_a, default) == port_number(port_b, default)
}

/// A port's digits without leading zeros; `default` when it is empty or absent.
fn port_number<'a>(port: Option<&'a [u8]>, default: &'a [u8]) -> &'a [u8] {
    let port = port.filter(|p| !p.is_empty()).unwrap_or(default);
    let first = port
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(port.len().saturating_sub(1));
    &port[first..]
}

fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let joined = match headers.get(&X_FORWARDED_FOR) {
        None => None,
        Some(prior) => {
            let mut value = Vec::with_capacity(prior.len() + 2 + ip.len());
            value.extend_from_slice(prior.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&value).ok()
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), joined.unwrap_or_else(|| ip.clone()));
}

/// Whether a client gets its response's trailers (hyper's rule): over HTTP/2 always;
/// over HTTP/1.1 only when it sent `TE: trailers`, and then only in a chunked body
/// (not one framed by Content-Length); over HTTP/1.0 never.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Trailers {
    Sent,
    InChunkedBody,
    Dropped,
}

impl Trailers {
    /// What the client of this request head gets (before `prepare_request` strips TE).
    pub fn of(parts: &Parts) -> Trailers {
        let asked = || {
            parts
                .headers
                .get_all(header::TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|list| list.split(','))
                .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
        };
        match parts.version {
            Version::HTTP_2 => Trailers::Sent,
            Version::HTTP_11 if asked() => Trailers::InChunkedBody,
            _ => Trailers::Dropped,
        }
    }
}

/// Rewrites a backend response's head for the client. A 101 keeps its upgrade headers.
/// A Content-Length received with a Transfer-Encoding is removed (RFC 9112 6.3: the
/// body was framed by the transfer coding, and the length would cut it short). A
/// `Trailer` header announcing trailers that will not reach the client is removed.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool, trailers: Trailers) {
    let survey = Survey::of(headers);
    let upgrade = switching.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    if survey.hop[3] {
        headers.remove(header::CONTENT_LENGTH);
    }
    let unsent = match trailers {
        Trailers::Sent => false,
        Trailers::InChunkedBody => headers.contains_key(header::CONTENT_LENGTH),
        Trailers::Dropped => true,
    };
    if survey.trailer && unsent {
        headers.remove(header::TRAILER);
    }
    strip_present(headers, survey.hop);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(build: http::request::Builder) -> Parts {
        build.body(()).unwrap().into_parts().0
    }

    fn client() -> ClientInfo {
        ClientInfo {
            addr: [10, 1, 2, 3].into(),
            ip: HeaderValue::from_static("10.1.2.3"),
            proto: HeaderValue::from_static("http"),
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut p = parts(
            http::Request::get("/")
                .header("connection", "keep-alive, x-secret")
                .header("keep-alive", "timeout=5")
                .header("x-secret", "1")
                .header("te", "gzip")
                .header("trailer", "x-checksum")
                .header("transfer-encoding", "chunked")
                .header("upgrade", "h2c")
                .header("proxy-authorization", "basic x")
                .header("x-kept", "yes"),
        );
        prepare_request(&mut p, &client(), None);
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(!p.headers.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(p.headers["x-kept"], "yes");
        assert_eq!(p.headers["trailer"], "x-checksum", "Trailer is end-to-end");
    }

    #[test]
    fn te_trailers_is_forwarded_for_grpc() {
        let mut p = parts(http::Request::get("/").header("te", "trailers"));
        prepare_request(&mut p, &client(), None);
        assert_eq!(p.headers["te"], "trailers");
    }

    #[test]
    fn forwarding_headers_are_set_and_appended() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "shop.example")
                .header("x-forwarded-for", "192.0.2.1")
                .header("x-forwarded-proto", "https")
                .header("via", "1.1 edge"),
        );
        prepare_request(&mut p, &client(), None);
        assert_eq!(p.headers["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(
            p.headers["x-forwarded-proto"], "http",
            "the client cannot spoof the scheme"
        );
        assert_eq!(p.headers["x-forwarded-host"], "shop.example");
        let via: Vec<_> = p.headers.get_all("via").iter().collect();
        assert_eq!(via, ["1.1 edge", "1.1 splitgate"]);
    }

    #[test]
    fn an_http2_request_gets_a_host_header_from_its_authority() {
        let mut p = parts(http::Request::get("http://shop.example:8443/x").version(Version::HTTP_2));
        prepare_request(&mut p, &client(), None);
        assert_eq!(p.headers["host"], "shop.example:8443");
        assert_eq!(p.version, Version::HTTP_11);
        assert_eq!(p.headers["via"], "2.0 splitgate");
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_headers() {
        let mut p = parts(
            http::Request::get("/ws")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket"),
        );
        let upgrade = upgrade_request(&p);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        prepare_request(&mut p, &client(), upgrade.as_ref());
        assert_eq!(p.headers["connection"], "upgrade");
        assert_eq!(p.headers["upgrade"], "websocket");
    }

    #[test]
    fn a_host_is_one_host_and_an_optional_port() {
        for good in [
            "a.example",
            "a.example:8080",
            "a.example.",
            "[::1]",
            "[::1]:80",
            "127.0.0.1",
            "",
            "a:",
        ] {
            assert!(is_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a, b", "a,b", "a b", "a\tb", "[::1", "[]:80", "a:b", "a:80:80", "a/b", "u@a", "a\u{e9}",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn authorities_are_compared_after_scheme_based_normalization() {
        let same = |a: &str, b: &str, scheme| same_authority(a.as_bytes(), b.as_bytes(), Some(scheme));
        assert!(same("A.Example", "a.example:80", "http"));
        assert!(same("a.example:443", "a.example", "https"));
        assert!(same("a.example:0080", "a.example:", "http"));
        assert!(same("[::1]:80", "[::1]", "http"));
        assert!(!same("a.example:443", "a.example", "http"));
        assert!(!same("a.example", "b.example", "http"));
        assert!(!same("a.example:8080", "a.example:80", "http"));
    }

    #[test]
    fn the_survey_marks_each_hop_by_hop_header_at_its_own_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            let hop = Survey::of(&headers).hop;
            let marked: Vec<usize> = (0..hop.len()).filter(|&j| hop[j]).collect();
            assert_eq!(marked, [i], "{name}");
        }
    }
}
