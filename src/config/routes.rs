//! Checks `[affinity]` and `[[route]]` into the model: known sites only, unique names,
//! host and path patterns in the form the router matches without allocating, and no
//! route hidden behind an earlier one that catches all its requests.

use std::collections::{HashMap, HashSet};

use http::HeaderName;

use super::file::{AffinityFile, RouteFile};
use super::model::{AffinityKey, CookieSigner, HostPattern, Route, Site};
use super::problems::{Problems, MAX_WEIGHT};

/// `{ key = "header:NAME" | "cookie:NAME" | "client_ip", insert, secret, max_age }`.
pub(super) fn affinity(prefix: &str, file: &AffinityFile, problems: &mut Problems) -> Option<AffinityKey> {
    let key = parse_key(&format!("{prefix}.key"), &file.key, problems)?;
    if file.insert != Some(true) {
        if file.secret.is_some() || file.max_age.is_some() {
            problems.add(
                format!("{prefix}.insert"),
                "secret and max_age apply only with insert = true",
            );
        }
        return Some(key);
    }
    let AffinityKey::Cookie(name) = key else {
        problems.add(
            format!("{prefix}.insert"),
            "insert = true needs a key of the form \"cookie:NAME\"",
        );
        return None;
    };
    let secret = match file.secret.as_deref() {
        Some(s) if s.len() >= 16 => s.as_bytes().to_vec(),
        _ => {
            problems.add(
                format!("{prefix}.secret"),
                "insert = true needs a secret of at least 16 characters (the same on every proxy of a fleet)",
            );
            return None;
        }
    };
    let max_age = file
        .max_age
        .as_deref()
        .and_then(|text| match super::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.add(
                    format!("{prefix}.max_age"),
                    "must be more than 0; remove it for a session cookie",
                );
                None
            }
            Err(e) => {
                problems.add(format!("{prefix}.max_age"), e);
                None
            }
        });
    Some(AffinityKey::SignedCookie(Box::new(CookieSigner::new(
        name, &secret, max_age,
    ))))
}

/// `"header:NAME"`, `"cookie:NAME"` or `"client_ip"`.
fn parse_key(key: &str, text: &str, problems: &mut Problems) -> Option<AffinityKey> {
    let hint = "use \"header:NAME\", \"cookie:NAME\" or \"client_ip\"";
    let parsed = match text.split_once(':') {
        None if text == "client_ip" => Ok(AffinityKey::ClientIp),
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
            .map(AffinityKey::Header)
            .map_err(|_| format!("\"{name}\" is not a header name")),
        Some(("cookie", name)) if valid_cookie_name(name) => Ok(AffinityKey::Cookie(name.to_string())),
        Some(("cookie", name)) => Err(format!("\"{name}\" is not a cookie name")),
        _ => Err(format!("\"{text}\" is not an affinity key; {hint}")),
    };
    parsed.map_err(|reason| problems.add(key, reason)).ok()
}

fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

pub(super) fn validate_routes(routes: &[RouteFile], sites: &[Site], problems: &mut Problems) -> Vec<Route> {
    let index: HashMap<&str, usize> = sites.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut names: HashSet<String> = HashSet::new();
    let mut checked: Vec<Route> = Vec::new();
    for (i, file) in routes.iter().enumerate() {
        let key = format!("route[{i}]");
        let name = match file.name.as_deref().map(str::trim) {
            None | Some("") => {
                problems.add(format!("{key}.name"), "every route needs a non-empty name");
                format!("route[{i}]")
            }
            Some(n) if !names.insert(n.to_string()) => {
                problems.add(
                    format!("{key}.name"),
                    format!("\"{n}\" is already the name of another route; names must be unique"),
                );
                n.to_string()
            }
            Some(n) => n.to_string(),
        };
        let host = file.host.as_deref().and_then(|h| host_pattern(&key, h, problems));
        let path_prefix = file.path_prefix.as_deref().and_then(|p| {
            if p.starts_with('/') && !p.contains(['?', '#', ' ']) {
                Some(p.to_string())
            } else {
                problems.add(
                    format!("{key}.path_prefix"),
                    format!("\"{p}\" must be a path starting with '/', without a query"),
                );
                None
            }
        });
        let weights = file
            .weights
            .as_ref()
            .map(|w| route_weights(&key, w, &index, sites.len(), problems));
        let affinity = file
            .affinity
            .as_ref()
            .and_then(|a| affinity(&format!("{key}.affinity"), a, problems));
        let route = Route {
            name,
            host,
            path_prefix,
            weights,
            affinity,
        };
        if let Some((j, earlier)) = checked.iter().enumerate().find(|(_, e)| covers(e, &route)) {
            problems.add(
                key,
                format!(
                    "can never match: route \"{}\" (route[{j}]) before it takes every request it would",
                    earlier.name
                ),
            );
        }
        checked.push(route);
    }
    checked
}

fn route_weights(
    key: &str,
    weights: &std::collections::BTreeMap<String, i64>,
    index: &HashMap<&str, usize>,
    sites: usize,
    problems: &mut Problems,
) -> Vec<u32> {
    let mut aligned = vec![0; sites];
    for (site, &weight) in weights {
        let wkey = format!("{key}.weights.{site}");
        match index.get(site.as_str()) {
            None => problems.add(wkey, format!("no site is named \"{site}\"")),
            Some(_) if super::Weight::new(weight).is_err() => {
                problems.add(wkey, format!("{weight} is out of range; use 0 to {MAX_WEIGHT}"))
            }
            Some(&i) => aligned[i] = weight as u32,
        }
    }
    if aligned.iter().all(|&w| w == 0) && weights.keys().all(|s| index.contains_key(s.as_str())) {
        problems.add(
            format!("{key}.weights"),
            "no site has a weight above 0 here, so the route could never be served",
        );
    }
    aligned
}

fn host_pattern(key: &str, text: &str, problems: &mut Problems) -> Option<HostPattern> {
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let (pattern, bare) = match host.strip_prefix("*.") {
        Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest),
        None => (HostPattern::Exact(host.clone()), host.as_str()),
    };
    let valid = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]".contains(&b) || (b == b':' && bare.starts_with('[')));
    if valid {
        Some(pattern)
    } else {
        problems.add(
            format!("{key}.host"),
            format!("\"{text}\" is not a host or \"*.domain\" pattern (no port, no path)"),
        );
        None
    }
}

/// True when every request `later` matches is already taken by `earlier`.
fn covers(earlier: &Route, later: &Route) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(HostPattern::Exact(a)), Some(HostPattern::Exact(b))) => a == b,
        (Some(HostPattern::Suffix(a)), Some(HostPattern::Exact(b) | HostPattern::Suffix(b))) => b.ends_with(a.as_str()),
        (Some(HostPattern::Exact(_)), Some(HostPattern::Suffix(_))) => false,
    };
    let path = match (&earlier.path_prefix, &later.path_prefix) {
        (None, _) => true,
        (Some(a), _) if a == "/" => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => path_matches(a, b),
    };
    host && path
}

/// `prefix` matches `path` on a segment boundary: `/batch` takes `/batch`, `/batch/`
/// and `/batch/x`, never `/batchx`.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
    }
}
