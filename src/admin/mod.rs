//! The admin API on `[admin].bind`: `/status`, `/metrics`, the status page and its
//! rate history (`/status/rates`), run-time weight overrides, `/reload`, failover
//! `/events` and drills. Who may call it is
//! `guard`'s; here are the routes and the bounds on its connections (a cap, header and
//! body deadlines), so that the admin API never takes what traffic and probes need.

mod drill;
mod guard;
mod rates;
mod status;
mod weights;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::ConfigError;
use crate::control::Control;
use crate::fleet::Fleet;
use crate::shutdown::fired;
use crate::telemetry;
use rates::RateHistory;

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
    /// Where the process is in its life (`/ready`).
    fn phase(&self) -> crate::lifecycle::Phase;
    /// Re-reads and applies the config file: the new generation, or why nothing changed.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<u64, ReloadError>> + Send + '_>>;
}

/// Why a reload changed nothing (the running config keeps serving). `Display` is one
/// line per problem: the log lines and `POST /reload`'s `errors`.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0} (the running config is unchanged)")]
    NeedsRestart(String),
    #[error("cannot listen on {addr}: {source} (the running config is unchanged)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("no config file to reload (started without --config)")]
    NoFile,
}

const STATUS_PAGE: &str = include_str!("page.html");

pub(crate) type AdminResponse = Response<Full<Bytes>>;

/// A request's head must arrive within this; so must its whole body.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// An admin connection is closed (after the answer in flight) once it is this old.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves the admin API until shutdown.
pub fn spawn(listener: TcpListener, server: Arc<dyn Operator>, mut shutdown: watch::Receiver<bool>) {
    let limit = server
        .control()
        .current()
        .config
        .admin
        .as_ref()
        .map_or(crate::config::Admin::DEFAULT_MAX_CONNECTIONS as usize, |a| {
            a.max_connections
        });
    let room = Arc::new(Semaphore::new(limit));
    let history = Arc::new(RateHistory::default());
    rates::spawn(history.clone(), server.control().clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, max_connections = limit, "admin API started");
        }
        loop {
            let (mut stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = fired(&mut shutdown) => return,
            };
            let Ok(permit) = room.clone().try_acquire_owned() else {
                // Full: a short answer and the descriptor is free again at once.
                metrics::counter!("splitgate_admin_refused_connections_total").increment(1);
                tokio::spawn(async move {
                    let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(busy)).await;
                });
                continue;
            };
            let (server, history) = (server.clone(), history.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let service = service_fn(move |request| {
                    let (server, history) = (server.clone(), history.clone());
                    async move { Ok::<_, std::convert::Infallible>(route(request, server.as_ref(), &history, peer).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(REQUEST_DEADLINE)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = tokio::time::sleep(CONNECTION_LIFETIME) => connection.as_mut().graceful_shutdown(),
                }
                let _ = tokio::time::timeout(REQUEST_DEADLINE, connection).await;
            });
        }
    });
}

/// The request's body, at most `limit` bytes, all of it within `REQUEST_DEADLINE`.
pub(crate) async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, AdminResponse> {
    match tokio::time::timeout(REQUEST_DEADLINE, Limited::new(request.into_body(), limit).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "body too large or unreadable")),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the body did not arrive within {REQUEST_DEADLINE:?}"),
        )),
    }
}

async fn route(
    request: Request<Incoming>,
    server: &dyn Operator,
    history: &RateHistory,
    peer: SocketAddr,
) -> AdminResponse {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        if let Some(denied) = guard::may_read(&request, server) {
            return denied;
        }
    }
    // HEAD is answered as GET: hyper sends the head only.
    match (request.method().clone(), segments.as_slice()) {
        (Method::GET | Method::HEAD, [""]) => {
            let mut page = respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_string());
            guard::harden(page.headers_mut(), true);
            page
        }
        (Method::GET | Method::HEAD, ["status"]) => json(StatusCode::OK, &full_status(server)),
        (Method::GET | Method::HEAD, ["status", "rates"]) => match query_number(&request, "since") {
            Some(Err(_)) => error(
                StatusCode::BAD_REQUEST,
                "since must be Unix milliseconds (a whole number)",
            ),
            since => json(StatusCode::OK, &history.doc(since.and_then(Result::ok).unwrap_or(0))),
        },
        (Method::GET | Method::HEAD, ["ready"]) => ready(server),
        (Method::GET | Method::HEAD, ["metrics"]) => {
            status::sample_gauges(&server.control().current());
            respond(StatusCode::OK, "text/plain; version=0.0.4", telemetry::render())
        }
        (Method::PUT | Method::DELETE, ["sites", name, "weight"]) => {
            let name = name.to_string();
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            weights::set_weight(request, server, &name, peer).await
        }
        (Method::POST, ["reload"]) => {
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            tracing::info!(client = %peer, "reload requested through the admin API");
            match server.reload().await {
                Ok(generation) => json(StatusCode::OK, &serde_json::json!({ "generation": generation })),
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "errors": e.to_string().lines().collect::<Vec<_>>() }),
                ),
            }
        }
        (Method::GET | Method::HEAD, ["events"]) => match query_number(&request, "since") {
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
        },
        (Method::POST | Method::DELETE, ["sites", name, "drill"]) => {
            let name = name.to_string();
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            drill::handle(request, server, &name, peer).await
        }
        (Method::POST, ["sites", name, "failback"]) => {
            let name = name.to_string();
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            weights::fail_back(server, &name, peer).await
        }
        (Method::PUT, ["weights"]) => {
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            weights::set_weights(request, server, peer).await
        }
        (Method::POST, ["fleet", "confirm"]) => {
            if let Some(denied) = guard::authorize(&request, server) {
                return denied;
            }
            weights::confirm(request, server, peer).await
        }
        (_, [endpoint @ ("status" | "ready" | "metrics" | "reload" | "weights" | "events" | "")])
        | (_, ["status", endpoint @ "rates"])
        | (_, ["sites", _, endpoint @ ("weight" | "drill" | "failback")])
        | (_, ["fleet", endpoint @ "confirm"]) => {
            let allow = match *endpoint {
                "reload" | "confirm" | "failback" => "POST",
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

/// `?KEY=N` in the query: none, or the number (or why not).
fn query_number<B>(request: &Request<B>, key: &str) -> Option<Result<u64, std::num::ParseIntError>> {
    request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key))
            .map(|(_, v)| v.parse::<u64>())
    })
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
    guard::harden(response.headers_mut(), false);
    response
}

/// `GET /ready`: 200 while accepting with a site that can serve, else 503 with why.
fn ready(server: &dyn Operator) -> AdminResponse {
    use crate::lifecycle::Phase;
    let routing = server.control().current();
    let reason = match server.phase() {
        Phase::Starting => Some("starting"),
        Phase::Draining => Some("draining"),
        Phase::Serving if !routing.sites.iter().any(|s| s.healthy && s.effective_weight > 0) => {
            Some("no site can serve")
        }
        Phase::Serving => None,
    };
    let pid = std::process::id();
    match reason {
        None => json(StatusCode::OK, &serde_json::json!({ "ready": true, "pid": pid })),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "ready": false, "reason": reason, "pid": pid }),
        ),
    }
}

/// `/status`, with the fleet's link when this proxy is a member.
fn full_status(server: &dyn Operator) -> Status {
    let mut doc = status(&server.control().current(), server.last_reload());
    doc.fleet = server.fleet().map(|f| f.status());
    doc.history = server.control().events.history();
    doc
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
