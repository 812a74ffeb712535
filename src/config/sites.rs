//! Checks the `[[site]]`s and the `[health]` settings they inherit: names, weights,
//! tiers, backends as `host:port`, per-site probe overrides, overprovisioning, and
//! upstream TLS.

use std::collections::HashSet;
use std::path::Path;

use http::uri::{Authority, PathAndQuery};

use super::file::{HealthFile, SiteFile};
use super::model::{Admission, Backend, Failback, HealthCheck, Protocol, Site};
use super::problems::{Problems, MAX_WEIGHT};
use super::tls;

/// Envoy's default overprovisioning factor: a site keeps its full weight while 1/1.4
/// (71%) of its backends are healthy.
pub(super) const DEFAULT_OVERPROVISION: f64 = 1.4;

/// HAProxy's `timeout queue` defaults to the connect timeout; one second is as short.
const DEFAULT_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn health_check(
    file: &HealthFile,
    base: &HealthCheck,
    prefix: &str,
    problems: &mut Problems,
) -> HealthCheck {
    let path = match &file.path {
        None => base.path.clone(),
        Some(p) if p.starts_with('/') => match p.parse::<PathAndQuery>() {
            Ok(path) => path,
            Err(_) => {
                problems.add(format!("{prefix}.path"), format!("\"{p}\" is not a valid request path"));
                base.path.clone()
            }
        },
        Some(p) => {
            problems.add(format!("{prefix}.path"), format!("\"{p}\" must start with '/'"));
            base.path.clone()
        }
    };
    let check = HealthCheck {
        path,
        interval: problems.duration(&format!("{prefix}.interval"), file.interval.as_ref(), base.interval),
        timeout: problems.duration(&format!("{prefix}.timeout"), file.timeout.as_ref(), base.timeout),
        fall: problems.count(&format!("{prefix}.fall"), file.fall, base.fall, (1, 1000)),
        rise: problems.count(&format!("{prefix}.rise"), file.rise, base.rise, (1, 1000)),
        slow_start: problems.duration(
            &format!("{prefix}.slow_start"),
            file.slow_start.as_ref(),
            base.slow_start,
        ),
        consecutive_5xx: problems.count(
            &format!("{prefix}.consecutive_5xx"),
            file.consecutive_5xx,
            base.consecutive_5xx,
            (0, 1000),
        ),
        grpc: file.grpc.unwrap_or(base.grpc),
    };
    if check.interval.is_zero() {
        problems.add(format!("{prefix}.interval"), "must be greater than zero");
    }
    if check.timeout.is_zero() {
        problems.add(format!("{prefix}.timeout"), "must be greater than zero");
    }
    check
}

pub(super) fn overprovision(file: &HealthFile, base: f64, prefix: &str, problems: &mut Problems) -> f64 {
    match file.overprovision {
        None => base,
        Some(v) if (1.0..=100.0).contains(&v) => v,
        Some(v) => {
            problems.add(
                format!("{prefix}.overprovision"),
                format!("{v} is out of range; use 1.0 (scale with every lost backend) to 100.0"),
            );
            base
        }
    }
}

pub(super) fn validate_site(
    i: usize,
    site: &SiteFile,
    (health, overprovision_default, failback): (&HealthCheck, f64, &Failback),
    base: &Path,
    problems: &mut Problems,
) -> Option<Site> {
    let key = format!("site[{i}]");
    let name = match site.name.as_deref().map(str::trim) {
        None | Some("") => {
            problems.add(format!("{key}.name"), "every site needs a non-empty name");
            None
        }
        Some(n) if !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) => {
            problems.add(
                format!("{key}.name"),
                format!("\"{n}\" may hold only letters, digits, '-', '_' and '.'"),
            );
            None
        }
        Some(n) => Some(n.to_string()),
    };
    let weight = match site.weight {
        None => {
            problems.add(
                format!("{key}.weight"),
                format!("is required: a whole number from 0 (drained) to {MAX_WEIGHT}"),
            );
            0
        }
        Some(w) => problems.count(&format!("{key}.weight"), Some(w), 0, (0, MAX_WEIGHT)),
    };
    let priority = problems.count(&format!("{key}.priority"), site.priority, 0, (0, 1000));
    if site.backends.is_empty() {
        problems.add(format!("{key}.backends"), "needs at least one \"host:port\" backend");
    }
    let mut backends: Vec<Backend> = Vec::new();
    let mut seen: HashSet<Backend> = HashSet::new();
    for (j, text) in site.backends.iter().enumerate() {
        let bkey = format!("{key}.backends[{j}]");
        match parse_backend(text) {
            Ok(backend) if !seen.insert(backend.clone()) => {
                problems.add(bkey, format!("\"{text}\" is listed twice in this site"));
            }
            Ok(backend) => backends.push(backend),
            Err(reason) => problems.add(bkey, reason),
        }
    }
    let (health, overprovision) = match &site.health {
        Some(over) => (
            health_check(over, health, &format!("{key}.health"), problems),
            overprovision(over, overprovision_default, &format!("{key}.health"), problems),
        ),
        None => (health.clone(), overprovision_default),
    };
    let mut tls = site.tls.as_ref().and_then(|t| {
        tls::site_tls(t, base)
            .map_err(|list| {
                list.into_iter()
                    .for_each(|(k, r)| problems.add(format!("{key}.{k}"), r))
            })
            .ok()
    });
    let protocol = match (site.protocol.as_deref(), &mut tls) {
        (None, Some(tls)) if tls.http2 => Protocol::H2,
        (None | Some("http1"), _) => Protocol::Http1,
        (Some("h2c"), None) => Protocol::H2c,
        (Some("h2c"), Some(_)) => {
            problems.add(
                format!("{key}.protocol"),
                "h2c is HTTP/2 without TLS; with tls, use \"h2\"",
            );
            Protocol::H2c
        }
        (Some("h2"), Some(tls)) => {
            tls.http2 = true;
            Protocol::H2
        }
        (Some("h2"), None) => {
            problems.add(
                format!("{key}.protocol"),
                "h2 is HTTP/2 over TLS and needs tls = { ... }; for plain HTTP/2 use \"h2c\"",
            );
            Protocol::H2
        }
        (Some(other), _) => {
            problems.add(
                format!("{key}.protocol"),
                format!("\"{other}\" is not a protocol; use \"http1\", \"h2c\" or \"h2\""),
            );
            Protocol::Http1
        }
    };
    if health.grpc && protocol == Protocol::Http1 {
        problems.add(
            format!("{key}.health.grpc"),
            "gRPC health checks need HTTP/2 to the backends: protocol = \"h2c\" (or \"h2\" with tls)",
        );
    }
    let admission = admission(site, &key, problems);
    Some(Site {
        name: name?,
        admission,
        weight,
        priority,
        backends,
        health,
        tls,
        overprovision,
        protocol,
        failback: match &site.failback {
            Some(own) => super::failback::failback(own, failback, &format!("{key}.failback"), problems),
            None => failback.clone(),
        },
    })
}

/// `max_requests`, `queue`, `queue_timeout`; a queue needs a limit to wait for.
fn admission(site: &SiteFile, key: &str, problems: &mut Problems) -> Admission {
    let admission = Admission {
        max_requests: problems.count(&format!("{key}.max_requests"), site.max_requests, 0, (0, 1_000_000)),
        queue: problems.count(&format!("{key}.queue"), site.queue, 0, (0, 1_000_000)),
        queue_timeout: problems.duration_within(
            &format!("{key}.queue_timeout"),
            site.queue_timeout.as_ref(),
            DEFAULT_QUEUE_TIMEOUT,
            std::time::Duration::from_secs(3600),
        ),
    };
    if admission.queue > 0 && admission.max_requests == 0 {
        problems.add(
            format!("{key}.queue"),
            "a queue waits for a backend with room, so it needs max_requests (requests in flight per backend)",
        );
    }
    admission
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    let hint = "write \"host:port\", e.g. \"10.0.0.5:8080\" or \"app.internal:80\" (no scheme, no path)";
    let authority: Authority = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a valid address; {hint}"))?;
    if authority.as_str().contains('@') {
        return Err(format!("\"{text}\" must not carry user info; {hint}"));
    }
    match authority.port_u16() {
        Some(0) | None => Err(format!("\"{text}\" needs a port from 1 to 65535; {hint}")),
        Some(_) if authority.host().is_empty() => Err(format!("\"{text}\" needs a host; {hint}")),
        Some(_) => Ok(Backend { authority }),
    }
}
