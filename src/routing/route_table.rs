//! Route matching without a scan: routes are indexed at snapshot build by exact host
//! and by host suffix, so a request looks up its host once and each of its parent
//! domains once, then checks path prefixes only of the routes that can match. First
//! match wins: the lowest route index among the candidates whose path matches.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::config::{path_matches, HostPattern, Route};

use super::affinity;

/// Longest host looked up (a DNS name has at most 253 characters).
const MAX_HOST: usize = 255;

#[derive(Default)]
pub struct RouteTable {
    /// Lower-case host -> routes naming it exactly, in config order.
    exact: HashMap<Box<str>, Vec<u32>, Fixed>,
    /// ".example.com" -> routes with `*.example.com`, in config order.
    suffix: HashMap<Box<str>, Vec<u32>, Fixed>,
    /// Routes without a host, in config order.
    any_host: Vec<u32>,
}

impl RouteTable {
    pub fn build(routes: &[Route]) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, route) in routes.iter().enumerate() {
            let i = i as u32;
            match &route.host {
                None => table.any_host.push(i),
                Some(HostPattern::Exact(host)) => table.exact.entry(host.as_str().into()).or_default().push(i),
                Some(HostPattern::Suffix(suffix)) => table.suffix.entry(suffix.as_str().into()).or_default().push(i),
            }
        }
        table
    }

    /// The first route (by config order) that takes `host` (no port) and `path`.
    pub fn find(&self, routes: &[Route], host: Option<&str>, path: &str) -> Option<usize> {
        let mut best = u32::MAX;
        let mut consider = |list: &[u32]| {
            if let Some(&r) = list.iter().take_while(|&&r| r < best).find(|&&r| {
                routes[r as usize]
                    .path_prefix
                    .as_deref()
                    .is_none_or(|p| path_matches(p, path))
            }) {
                best = r;
            }
        };
        consider(&self.any_host);
        let mut buffer = [0u8; MAX_HOST];
        if let Some(host) = host.and_then(|h| lower_case(h, &mut buffer)) {
            if let Some(list) = self.exact.get(host) {
                consider(list);
            }
            if !self.suffix.is_empty() {
                for (dot, _) in host.match_indices('.').filter(|&(at, _)| at > 0) {
                    if let Some(list) = self.suffix.get(&host[dot..]) {
                        consider(list);
                    }
                }
            }
        }
        (best != u32::MAX).then_some(best as usize)
    }
}

/// `host` in lower case, in `buffer`; `None` when too long to be a host name.
fn lower_case<'a>(host: &str, buffer: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    let bytes = host.as_bytes();
    let out = buffer.get_mut(..bytes.len())?;
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b.to_ascii_lowercase();
    }
    // ASCII lower-casing keeps UTF-8 valid; the check is only for the type.
    std::str::from_utf8(out).ok()
}

/// A fixed hasher (our own), for tables keyed by config strings and probed with
/// request strings: lookups only, so no flooding concern, and cheaper than SipHash.
#[derive(Default, Clone, Copy)]
pub struct Fixed;

impl BuildHasher for Fixed {
    type Hasher = FixedHasher;
    fn build_hasher(&self) -> FixedHasher {
        FixedHasher(0)
    }
}

pub struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = affinity::mix(self.0 ^ affinity::hash(bytes));
    }
    /// `str` hashes end with a 0xff marker; one key per table needs no mixing for it.
    fn write_u8(&mut self, byte: u8) {
        self.0 ^= u64::from(byte);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<HostPattern>, path_prefix: Option<&str>) -> Route {
        Route {
            name: name.into(),
            host,
            path_prefix: path_prefix.map(str::to_string),
            weights: None,
            affinity: None,
        }
    }

    #[test]
    fn the_first_matching_route_wins_whichever_index_finds_it() {
        let exact = |h: &str| Some(HostPattern::Exact(h.into()));
        let suffix = |s: &str| Some(HostPattern::Suffix(s.into()));
        let routes = vec![
            route("deep", suffix(".b.example"), Some("/x")),
            route("api-exact", exact("api.b.example"), Some("/api")),
            route("any-api", None, Some("/api")),
            route("wide", suffix(".example"), None),
            route("rest", None, None),
        ];
        let table = RouteTable::build(&routes);
        let find = |host: Option<&str>, path: &str| table.find(&routes, host, path).map(|r| routes[r].name.as_str());
        assert_eq!(find(Some("API.b.example"), "/api/v1"), Some("api-exact"));
        assert_eq!(find(Some("api.b.example"), "/x/1"), Some("deep"));
        assert_eq!(find(Some("other.example"), "/api"), Some("any-api"));
        assert_eq!(find(Some("other.example"), "/home"), Some("wide"));
        assert_eq!(
            find(Some("example"), "/home"),
            Some("rest"),
            "a suffix never takes the bare domain"
        );
        assert_eq!(find(None, "/home"), Some("rest"));
        assert_eq!(
            find(Some(&"a".repeat(300)), "/api"),
            Some("any-api"),
            "an overlong host matches no host"
        );
    }
}
