//! The active health check: one task per backend for the whole process, sending
//! `GET <path>` every `interval` (with jitter so probes spread out) and feeding the
//! outcome to the backend's state. Probes go through the site's own client (so a TLS
//! failure fails the check). Stops by itself when a reload retires the backend.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use http::{header, Method, Request, Uri};

use super::state::BackendState;
use crate::body::RequestBody;
use crate::routing::Routing;
use crate::upstream::Upstream;

/// Starts probing `authority` right away (after a random fraction of one interval).
pub fn spawn_prober(state: Arc<BackendState>, authority: Authority, routing: Arc<ArcSwap<Routing>>) {
    tokio::spawn(async move {
        let first = state.check.load().interval;
        tokio::time::sleep(first.mul_f64(random_fraction() * 0.5)).await;
        while !state.is_retired() {
            let check = state.check.load_full();
            let upstream = routing
                .load()
                .sites
                .iter()
                .find(|s| s.name == state.site)
                .map(|s| s.upstream.clone());
            let (ok, reason) = match upstream {
                Some(upstream) => probe(&upstream, &authority, &check.path, check.timeout).await,
                None => (false, "site not in the running config".to_string()),
            };
            if state.is_retired() {
                break;
            }
            state.record_probe(ok, &reason);
            // +-10% so that probes of many backends drift apart instead of bunching.
            let spread = 0.9 + 0.2 * random_fraction();
            tokio::time::sleep(check.interval.mul_f64(spread)).await;
        }
        tracing::debug!(site = %state.site, backend = %state.addr, "prober stopped");
    });
}

async fn probe(
    upstream: &Upstream,
    authority: &Authority,
    path: &http::uri::PathAndQuery,
    timeout: Duration,
) -> (bool, String) {
    let uri = Uri::builder()
        .scheme(upstream.scheme())
        .authority(authority.clone())
        .path_and_query(path.clone())
        .build();
    let request = uri.map_err(|e| e.to_string()).and_then(|uri| {
        Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::USER_AGENT, "splitgate-health-check")
            .body(RequestBody::empty())
            .map_err(|e| e.to_string())
    });
    let request = match request {
        Ok(request) => request,
        Err(reason) => return (false, reason),
    };
    match upstream.send(request, timeout).await {
        Ok(response) => {
            let status = response.status();
            let ok = status.is_success() || status.is_redirection();
            (ok, format!("health check answered {}", status.as_u16()))
        }
        Err(e) => (false, format!("health check failed: {}", e.reason())),
    }
}

/// A number in [0, 1); std's per-instance random keys are enough for jitter.
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(crate::health::now_ms());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
