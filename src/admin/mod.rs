//! The admin API on `[admin].bind`: `/status`, `/metrics`, the status page, run-time
//! weight overrides, `/reload`, failover `/events` and drills. Mutating calls need the bearer token when one is
//! configured; without a token they are allowed only on a loopback admin address.

mod drill;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::{Control, WeightError};
use crate::fleet::Fleet;
use crate::shutdown::fired;
use crate::telemetry;

pub use status::{status, LastReload, Status};

/// What the admin API may do to the running server: a narrow handle, so that admin
/// depends on the control plane and not on the server that starts it.
pub trait Operator: Send + Sync + 'static {
    fn control(&self) -> &Arc<Control>;
    /// The fleet this proxy is a member of, with `[fleet]`.
    fn fleet(&self) -> Option<Arc<Fleet>>;
    fn last_reload(&self) -> Option<LastReload>;
    /// The admin API's own address (a loopback address allows token-less changes).
    fn admin_addr(&self) -> Option<SocketAddr>;
    /// Re-reads and applies the config file: the new generation, or every error.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>>;
}

const STATUS_PAGE: &str = include_str!("page.html");

pub(crate) type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin API until shutdown.
pub fn spawn(listener: TcpListener, server: Arc<dyn Operator>, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "admin API started");
        }
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = fired(&mut shutdown) => return,
            };
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(request, server.as_ref(), peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn route(request: Request<Incoming>, server: &dyn Operator, peer: SocketAddr) -> AdminResponse {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // HEAD is answered as GET: hyper sends the head only.
    match (request.method().clone(), segments.as_slice()) {
        (Method::GET | Method::HEAD, [""]) => {
            respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_string())
        }
        (Method::GET | Method::HEAD, ["status"]) => json(StatusCode::OK, &full_status(server)),
        (Method::GET | Method::HEAD, ["metrics"]) => {
            respond(StatusCode::OK, "text/plain; version=0.0.4", telemetry::render())
        }
        (Method::PUT | Method::DELETE, ["sites", name, "weight"]) => {
            let name = name.to_string();
            if let Some(denied) = authorize(&request, server) {
                return denied;
            }
            set_weight(request, server, &name, peer).await
        }
        (Method::POST, ["reload"]) => {
            if let Some(denied) = authorize(&request, server) {
                return denied;
            }
            tracing::info!(client = %peer, "reload requested through the admin API");
            match server.reload().await {
                Ok(generation) => json(StatusCode::OK, &serde_json::json!({ "generation": generation })),
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "errors": e.lines().collect::<Vec<_>>() }),
                ),
            }
        }
        (Method::GET | Method::HEAD, ["events"]) => {
            let since = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("since=")))
                .map(|v| v.parse::<u64>());
            match since {
                Some(Err(_)) => error(StatusCode::BAD_REQUEST, "since must be an event id (a whole number)"),
                since => {
                    let events: Vec<serde_json::Value> = server
                        .control()
                        .events
                        .since(since.and_then(Result::ok).unwrap_or(0))
                        .iter()
                        .map(|e| e.to_json())
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ "events": events }))
                }
            }
        }
        (Method::POST | Method::DELETE, ["sites", name, "drill"]) => {
            let name = name.to_string();
            if let Some(denied) = authorize(&request, server) {
                return denied;
            }
            drill::handle(request, server.control(), server.fleet(), &name, peer).await
        }
        (Method::PUT, ["weights"]) => {
            if let Some(denied) = authorize(&request, server) {
                return denied;
            }
            set_weights(request, server, peer).await
        }
        (_, [endpoint @ ("status" | "metrics" | "reload" | "weights" | "events" | "")])
        | (_, ["sites", _, endpoint @ ("weight" | "drill")]) => {
            let allow = match *endpoint {
                "reload" => "POST",
                "weights" => "PUT",
                "weight" => "PUT, DELETE",
                "drill" => "POST, DELETE",
                _ => "GET, HEAD",
            };
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            response
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

async fn set_weight(request: Request<Incoming>, server: &dyn Operator, site: &str, peer: SocketAddr) -> AdminResponse {
    let weight = if request.method() == Method::DELETE {
        None
    } else {
        let body = match Limited::new(request.into_body(), 4096).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return error(StatusCode::BAD_REQUEST, "body too large or unreadable"),
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WeightBody {
            weight: i64,
        }
        match serde_json::from_slice::<WeightBody>(&body) {
            Ok(b) => Some(b.weight),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("expected {{\"weight\": N}}: {e}")),
        }
    };
    tracing::info!(client = %peer, site, weight = ?weight, "weight change requested through the admin API");
    let outcome = match fleet_write(server, &[(site.to_string(), weight)], StatusCode::NOT_FOUND).await {
        Some(Err(refused)) => return refused,
        Some(Ok(())) => Ok(()),
        None => server.control().set_weight(site, weight),
    };
    match outcome {
        Ok(()) => {
            let doc = status(&server.control().current(), server.last_reload());
            match doc.sites.into_iter().find(|s| s.name == site) {
                Some(site) => json(StatusCode::OK, &site),
                None => error(StatusCode::NOT_FOUND, "site vanished"),
            }
        }
        Err(e @ WeightError::UnknownSite(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ WeightError::OutOfRange(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `PUT /weights` with `{"site": N, ...}`: all of them in one snapshot, or none.
async fn set_weights(request: Request<Incoming>, server: &dyn Operator, peer: SocketAddr) -> AdminResponse {
    let body = match Limited::new(request.into_body(), 65_536).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "body too large or unreadable"),
    };
    let weights: Vec<(String, i64)> = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
    {
        Ok(map) if map.is_empty() => {
            return error(StatusCode::BAD_REQUEST, "expected {\"site\": N, ...}: no site named")
        }
        Ok(map) => {
            let mut weights = Vec::with_capacity(map.len());
            for (site, value) in map {
                match value.as_i64() {
                    Some(weight) => weights.push((site, weight)),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("weight of \"{site}\" is not a whole number: {value}"),
                        )
                    }
                }
            }
            weights
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("expected {{\"site\": N, ...}}: {e}")),
    };
    tracing::info!(client = %peer, ?weights, "weight changes requested through the admin API");
    let changes: Vec<(String, Option<i64>)> = weights.iter().map(|(s, w)| (s.clone(), Some(*w))).collect();
    // `PUT /weights` answers 400 for an unknown site (nothing changes), as without a fleet.
    let outcome = match fleet_write(server, &changes, StatusCode::BAD_REQUEST).await {
        Some(Err(refused)) => return refused,
        Some(Ok(())) => Ok(()),
        None => server.control().set_weights(&weights),
    };
    match outcome {
        Ok(()) => json(StatusCode::OK, &full_status(server)),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `/status`, with the fleet's link when this proxy is a member.
fn full_status(server: &dyn Operator) -> Status {
    let mut doc = status(&server.control().current(), server.last_reload());
    doc.fleet = server.fleet().map(|f| f.status());
    doc.history = server.control().events.history();
    doc
}

/// With a fleet, weight changes are the fleet's: checked here, written to etcd, and
/// applied by every member from its watch. `None`: no fleet, change locally.
async fn fleet_write(
    server: &dyn Operator,
    changes: &[(String, Option<i64>)],
    unknown_site: StatusCode,
) -> Option<Result<(), AdminResponse>> {
    let fleet = server.fleet()?;
    let current = server.control().current();
    for (site, weight) in changes {
        if !current.sites.iter().any(|s| &s.name == site) {
            return Some(Err(error(
                unknown_site,
                &WeightError::UnknownSite(site.clone()).to_string(),
            )));
        }
        if let Some(w) = weight.filter(|w| !(0..=crate::config::MAX_WEIGHT).contains(w)) {
            return Some(Err(error(
                StatusCode::BAD_REQUEST,
                &WeightError::OutOfRange(w).to_string(),
            )));
        }
    }
    Some(
        fleet
            .write_weights(changes)
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    )
}

/// `None` when the call may proceed, else the refusal to send.
fn authorize(request: &Request<Incoming>, server: &dyn Operator) -> Option<AdminResponse> {
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
        None if server.admin_addr().is_some_and(|a| a.ip().is_loopback()) => {
            (!local_caller(request)).then(|| error(StatusCode::FORBIDDEN, "cross-site or non-local Host refused"))
        }
        None => Some(error(
            StatusCode::FORBIDDEN,
            "mutating calls need [admin].token when the admin API listens beyond loopback",
        )),
    }
}

/// Without a token, loopback is the only guard, so a browser page must not be able to
/// borrow it: the Host must be a loopback name (defeats DNS rebinding) and an Origin,
/// if sent, must be the admin address itself (defeats cross-site form posts).
fn local_caller(request: &Request<Incoming>) -> bool {
    let header = |name| request.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let is_local = |authority: &str| {
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    let host_ok = header(header::HOST).is_none_or(is_local);
    let origin_ok = header(header::ORIGIN).is_none_or(|origin| {
        let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        header(header::HOST) == Some(authority)
    });
    host_ok && origin_ok
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    match serde_json::to_string_pretty(value) {
        Ok(text) => respond(status, "application/json", text + "\n"),
        Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_an_exact_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
