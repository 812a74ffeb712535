//! Where one request goes before any backend is chosen: the first route that matches
//! its host and path (else the default split), and its affinity key's hash. Done once
//! per request, on borrowed bytes: no allocation, no lock; nothing at all when the
//! config has no routes and no affinity.

use std::net::IpAddr;

use http::{header, request::Parts, HeaderValue};

use super::affinity::{hash, key_hash};
use super::Routing;
use crate::config::AffinityKey;

/// The split and key of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// 0 = the default split; r + 1 = route r.
    route: u32,
    key: Option<u64>,
    /// A signed affinity cookie to give the client (it had no valid one).
    pub set_cookie: Option<HeaderValue>,
}

impl Plan {
    pub fn route(&self) -> Option<usize> {
        self.route.checked_sub(1).map(|r| r as usize)
    }

    pub fn key(&self) -> Option<u64> {
        self.key
    }
}

impl Routing {
    /// Matches a request against the routes, then reads its affinity key (the route's
    /// own, else the default `[affinity]`).
    pub fn plan(&self, parts: &Parts, client: IpAddr) -> Plan {
        let config = &self.config;
        if config.routes.is_empty() && config.affinity.is_none() {
            return Plan::default();
        }
        let route = if config.routes.is_empty() {
            None
        } else {
            let host = request_host(parts);
            let path = parts.uri.path();
            self.route_table.find(&config.routes, host, path)
        };
        let affinity = route
            .and_then(|r| config.routes[r].affinity.as_ref())
            .or(config.affinity.as_ref());
        let mut key = affinity.and_then(|key| key_hash(key, &parts.headers, client));
        let mut set_cookie = None;
        if let (None, Some(AffinityKey::SignedCookie(signer))) = (key, affinity) {
            let (id, cookie) = signer.issue();
            key = Some(hash(id.as_bytes()));
            set_cookie = cookie;
        }
        Plan {
            route: route.map_or(0, |r| r as u32 + 1),
            key,
            set_cookie,
        }
    }

    /// The route's name for logs and tests: `None` for the default split.
    pub fn route_name(&self, plan: &Plan) -> Option<&str> {
        plan.route().map(|r| self.config.routes[r].name.as_str())
    }
}

/// The request's host without port or trailing dot: the Host header, else the
/// HTTP/2 `:authority` (or an absolute-form target's authority).
pub fn request_host(parts: &Parts) -> Option<&str> {
    let host = match parts.headers.get(header::HOST) {
        Some(value) => value.to_str().ok()?,
        None => parts.uri.authority()?.as_str(),
    };
    let host = match host.strip_prefix('[') {
        // [v6]:port -> [v6]
        Some(rest) => &host[..rest.find(']').map_or(host.len(), |end| end + 2)],
        None => host.split(':').next().unwrap_or(host),
    };
    Some(host.strip_suffix('.').unwrap_or(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(host: Option<&str>, uri: &str) -> Parts {
        let mut builder = http::Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_host_loses_its_port_and_trailing_dot() {
        assert_eq!(
            request_host(&parts(Some("api.example.com:8443"), "/")),
            Some("api.example.com")
        );
        assert_eq!(
            request_host(&parts(Some("API.example.com."), "/")),
            Some("API.example.com")
        );
        assert_eq!(request_host(&parts(Some("[::1]:80"), "/")), Some("[::1]"));
        assert_eq!(request_host(&parts(None, "https://h2.example/x")), Some("h2.example"));
        assert_eq!(request_host(&parts(None, "/x")), None);
    }
}
