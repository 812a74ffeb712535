//! Who may call the admin API, and what every answer carries so that a browser cannot
//! be turned against it: the bearer token for changes (or, without one, a loopback
//! caller whose Host and Origin are local, for reads too), and headers that forbid
//! framing, sniffing and any script or style but the page's own.

use std::sync::OnceLock;

use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};

use super::{error, AdminResponse, Operator, STATUS_PAGE};

/// `None` when the change may proceed, else the refusal to send.
pub(super) fn authorize<B>(request: &Request<B>, server: &dyn Operator) -> Option<AdminResponse> {
    let routing = server.control().current();
    match routing.config.admin.as_ref().and_then(|a| a.token.as_deref()) {
        Some(token) => {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.split_once(' ')
                        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                })
                .map(|(_, token)| token.trim())
                .unwrap_or("");
            (!constant_time_eq(given.as_bytes(), token.as_bytes())).then(|| {
                let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            })
        }
        None if loopback_without_token(server) => {
            (!local_caller(request)).then(|| error(StatusCode::FORBIDDEN, "cross-site or non-local Host refused"))
        }
        None => Some(error(
            StatusCode::FORBIDDEN,
            "mutating calls need [admin].token when the admin API listens beyond loopback",
        )),
    }
}

/// Reads (`/status`, `/metrics`, `/events`, the page): open, except that without a
/// token on loopback the Host must be local, so a DNS-rebinding page cannot read them.
pub(super) fn may_read<B>(request: &Request<B>, server: &dyn Operator) -> Option<AdminResponse> {
    let local = host_is_local(request.headers());
    (loopback_without_token(server) && !local).then(|| error(StatusCode::FORBIDDEN, "non-local Host refused"))
}

fn loopback_without_token(server: &dyn Operator) -> bool {
    let routing = server.control().current();
    routing.config.admin.as_ref().is_none_or(|a| a.token.is_none())
        && server.admin_addr().is_some_and(|a| a.ip().is_loopback())
}

/// Without a token, loopback is the only guard, so a browser page must not be able to
/// borrow it: the Host must be a loopback name (defeats DNS rebinding) and an Origin,
/// if sent, must be the admin address itself (defeats cross-site form posts).
fn local_caller<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|origin| {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            host == Some(authority)
        });
    host_is_local(headers) && origin_ok
}

fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(authority) = host.to_str() else {
        return false;
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Headers on every admin answer: never framed (clickjacking), never sniffed; the page
/// may run only its own script and style (by hash) and talk only to this origin.
pub(super) fn harden(headers: &mut HeaderMap, page: bool) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = if page {
        page_policy().clone()
    } else {
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
    };
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
}

/// The page's policy, with the hashes of its one inline script and style.
fn page_policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = |tag: &str| {
            let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
            let body = STATUS_PAGE
                .split_once(open.as_str())
                .and_then(|(_, rest)| rest.split_once(close.as_str()))
                .map_or("", |(body, _)| body);
            let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
            )
        };
        let policy = format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("script"),
            hash("style")
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn only_loopback_names_are_local_hosts() {
        let local = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            host_is_local(&headers)
        };
        assert!(local("127.0.0.1:9901") && local("localhost") && local("[::1]:80") && local("LOCALHOST:1"));
        assert!(!local("attacker.example:9901") && !local("127.0.0.1.nip.io") && !local("10.0.0.1"));
    }

    #[test]
    fn the_page_policy_names_the_pages_own_script_and_style() {
        let policy = page_policy().to_str().unwrap().to_string();
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
    }
}
