//! Forwarding one request: pick a backend from the snapshot the request started with,
//! send it, and on failure report to health and retry elsewhere when the rules and the
//! budget allow. Errors the proxy makes itself are short plain-text 502/504 answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};

use super::admission::admit;
use super::client_ip;
use super::headers::{
    host_from_target, prepare_request, prepare_response, refusal, upgrade_request, ClientInfo, Trailers,
};
use super::upgrade::spawn_tunnel;
use super::Proxy;
use super::{InFlight, PendingLog, ResponseBody};
use crate::access_log::Record;
use crate::body::{is_too_large, ClientBody, Replay, RequestBody};
use crate::clock::{ms_of, now_ms};
use crate::descriptors;
use crate::health::{Backend, Rejection, Slot};
use crate::proxy::h1::ClientUpgrade;
use crate::retry::{costs_budget, is_idempotent, may_retry};
use crate::routing::{Pick, Routing};
use crate::telemetry;
use crate::upstream::{Failure, SendError, UpstreamBody};

/// Upper bound of `[retry].attempts`, so tried backends fit in a fixed array.
const MAX_ATTEMPTS: usize = 10;

/// How a request went, for metrics and the access log.
struct Outcome {
    last_pick: Option<Pick>,
    attempts: u32,
    upstream: Option<std::time::Duration>,
    /// Answered with a proxy error while a site of the request's split was drilled.
    drill_error: bool,
    /// The answering try's place at its backend, held until the response body ends.
    slot: Option<Slot>,
}

impl Proxy {
    /// Serves one client request; never fails (errors become 502/504 responses).
    pub async fn forward(
        self: Arc<Self>,
        mut request: Request<ClientBody>,
        client: Arc<ClientInfo>,
        in_flight: InFlight,
        started: Instant,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let routing = self.routing.load_full();
        let arrived_ms = ms_of(started);
        self.budget.record_request(arrived_ms);
        // A forward-proxy tunnel request: not something a reverse proxy serves.
        let connect = request.method() == Method::CONNECT;
        let refused = if connect {
            None
        } else {
            refusal(&request)
                .map(|reason| (StatusCode::BAD_REQUEST, reason))
                .or_else(|| too_long(request.headers(), routing.config.limits.max_body_bytes))
        };
        if !connect && refused.is_none() {
            host_from_target(&mut request);
        }
        // Who the client is (a trusted forwarder's X-Forwarded-For), once per request:
        // for the access log and the affinity key alike.
        let client_addr = client_ip::real_client(client.addr, request.headers(), &routing.config.trusted_forwarders);
        let log = self
            .access_log
            .is_enabled()
            .then(|| Box::new(log_record(&request, client_addr)));
        // The record, its status set, handed to the response body to submit at its end.
        let pending_log = |log: Option<Box<Record>>, status: StatusCode| {
            log.map(|mut record| {
                record.status = status.as_u16();
                PendingLog {
                    record,
                    started,
                    sink: self.access_log.clone(),
                }
            })
        };
        if connect {
            let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
            let allow = HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
            response.headers_mut().insert(header::ALLOW, allow);
            let log = pending_log(log, response.status());
            return Ok(response.map(|body| ResponseBody::new(body, None, log, in_flight)));
        }
        if let Some((status, reason)) = refused {
            // Refused before any of it moves, and the connection closed (the body, if
            // any, is not read).
            let mut response = text_response(status, reason);
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            let log = pending_log(log, status);
            return Ok(response.map(|body| ResponseBody::new(body, None, log, in_flight)));
        }
        let (response, outcome) = self
            .try_backends(&routing, request, (&client, client_addr), started)
            .await;
        self.answers.record(response.status(), outcome.drill_error);
        let site = outcome.last_pick.map(|p| &routing.sites[p.site]);
        let counter = site.map(|s| s.metrics.response_bytes.clone());
        let log = log.map(|mut record| {
            record.site = site.map(|s| s.name.clone());
            record.backend = outcome.last_pick.map(|p| routing.backend(p).addr.clone());
            record.attempts = outcome.attempts;
            record.upstream_ms = outcome.upstream.map(|d| d.as_secs_f64() * 1000.0);
            record
        });
        let log = pending_log(log, response.status());
        let slot = outcome.slot;
        Ok(response.map(|body| ResponseBody::new(body, counter, log, in_flight).holding(slot)))
    }

    async fn try_backends(
        &self,
        routing: &Routing,
        request: Request<ClientBody>,
        (client, client_addr): (&ClientInfo, std::net::IpAddr),
        arrived: Instant,
    ) -> (Response<Either<UpstreamBody, Full<Bytes>>>, Outcome) {
        let retry = &routing.config.retry;
        let attempts = (retry.attempts as usize).clamp(1, MAX_ATTEMPTS);
        let (mut parts, body) = request.into_parts();
        let mut plan = routing.plan(&parts, client_addr);
        // An upgrade only where the client's side can hand its connection over (an
        // HTTP/1.1 request without a body that asked for one): otherwise the Upgrade
        // field is dropped with the other hop-by-hop ones, and the backend answers as
        // usual.
        let client_upgrade = parts.extensions.remove::<ClientUpgrade>();
        let upgrade = client_upgrade.as_ref().and_then(|_| upgrade_request(&parts));
        let trailers = Trailers::of(&parts);
        prepare_request(&mut parts, client, upgrade.as_ref());
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let method = parts.method.clone();
        let host = parts.headers.get(header::HOST).cloned();
        let (body, replay) = split_body(body, attempts > 1, routing.config.limits.max_body_bytes);
        let body_was_empty = replay.is_none();
        // A request that never left comes back whole from the pool; a retry after it
        // left (idempotent, body replayable) needs its header fields again: an HTTP/1.1
        // backend gives them back with the failure, for HTTP/2 a copy is kept per try.
        let rebuildable = attempts > 1 && is_idempotent(&method) && (body_was_empty || replay.is_some());
        let mut spare = None;
        parts.uri = Uri::from(path.clone());
        parts.extensions = http::Extensions::new();
        let mut pending = Some(Request::from_parts(parts, body));

        let mut tried = [Pick { site: 0, backend: 0 }; MAX_ATTEMPTS];
        let mut outcome = Outcome {
            last_pick: None,
            attempts: 0,
            upstream: None,
            drill_error: false,
            slot: None,
        };
        let mut last_error: Option<SendError> = None;
        for attempt in 0..attempts {
            let Some(pick) = routing.pick_for(&plan, &tried[..attempt]) else {
                break;
            };
            let (pick, slot) = match admit(routing, pick, &tried[..attempt]).await {
                Ok(admitted) => admitted,
                Err(why) => return (busy(routing, pick, why, &method), outcome),
            };
            let Some(mut request) = pending.take() else {
                break;
            };
            tried[attempt] = pick;
            outcome.last_pick = Some(pick);
            outcome.attempts += 1;
            let (site, backend) = (&routing.sites[pick.site], routing.backend(pick));
            let last_try = attempt + 1 == attempts;
            fit_request(&mut request, backend, host.as_ref(), &path);
            // The first try reuses the arrival's clock read: its upstream latency then
            // includes the planning and header rules before it (microseconds), and,
            // under load, any wait for the task to run.
            let sent = if attempt == 0 { arrived } else { Instant::now() };
            backend.outage.sent(ms_of(sent));
            if rebuildable && !last_try && backend.pool.connector().is_http2() {
                spare = Some(request.headers().clone());
            }
            // A 101 the request did not ask for is the pool's failure (HTTP/2 has none).
            match backend.pool.send(request, routing.config.timeouts.response).await {
                Ok(mut response) => {
                    let waited = sent.elapsed();
                    outcome.upstream = Some(waited);
                    site.metrics.upstream_latency.record(waited.as_secs_f64());
                    backend.record_response(response.status());
                    backend.metrics.record(&method, response.status());
                    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                    // A connection taken over by an upgrade never returns to the pool.
                    let backend_side = response.body_mut().take_upgrade();
                    if let (Some(client_side), Some(backend_side)) = (client_upgrade, backend_side) {
                        spawn_tunnel(client_side, backend_side, self.tracker.token());
                    }
                    prepare_response(response.headers_mut(), switching, trailers);
                    if let Some(cookie) = plan.set_cookie.take() {
                        response.headers_mut().append(header::SET_COOKIE, cookie);
                    }
                    outcome.slot = Some(slot);
                    return (response.map(Either::Left), outcome);
                }
                Err(Failure {
                    error,
                    request: back,
                    headers: sent_headers,
                }) => {
                    drop(slot);
                    match &error {
                        // Out of descriptors is the proxy's trouble, never the backend's.
                        SendError::Connect(e) if descriptors::exhausted(e.as_ref()) => {
                            descriptors::record_exhausted("connect");
                        }
                        SendError::Connect(_) => {
                            site.metrics.connect_errors.increment(1);
                            backend.record_connect_failure(&error);
                        }
                        SendError::ClientBody(_) => {}
                        SendError::Timeout | SendError::Failed(_) => backend.record_request_failure(&error),
                    }
                    let next = back.or_else(|| {
                        let body = if body_was_empty {
                            RequestBody::empty()
                        } else {
                            replay.as_ref().and_then(Replay::again)?
                        };
                        let mut headers = sent_headers.or_else(|| spare.take()).filter(|_| rebuildable)?;
                        if host.is_none() {
                            // The Host the last backend got was its own authority.
                            headers.remove(header::HOST);
                        }
                        Some(rebuild(&method, &path, headers, body))
                    });
                    let retryable = !last_try && may_retry(&method, &error, next.is_some());
                    let allowed = retryable
                        && (!costs_budget(&error)
                            || self.budget.try_spend(now_ms(), retry.budget, retry.min_per_second));
                    if retryable && !allowed {
                        site.metrics.retry_budget_exhausted.increment(1);
                    }
                    tracing::debug!(site = %site.name, backend = %backend.authority, reason = %error, retry = allowed, "try failed");
                    if allowed {
                        backend.outage.retry();
                        telemetry::record_retry(error.kind());
                        pending = next;
                        last_error = Some(error);
                    } else {
                        last_error = Some(error);
                        break;
                    }
                }
            }
        }
        let response = failure_response(last_error.as_ref(), &method, &path);
        outcome.drill_error = !matches!(last_error, Some(SendError::ClientBody(_))) && drilled_in(routing, &plan);
        match outcome.last_pick {
            Some(pick) => {
                let backend = routing.backend(pick);
                backend.metrics.record(&method, response.status());
                if last_error
                    .as_ref()
                    .is_some_and(|e| !matches!(e, SendError::ClientBody(_)))
                {
                    backend.outage.client_error(is_idempotent(&method));
                }
            }
            None => telemetry::record_unrouted(&method),
        }
        (response, outcome)
    }
}

/// A site the plan's split gives weight to is drilled (looked at on failures only).
fn drilled_in(routing: &Routing, plan: &crate::routing::Plan) -> bool {
    let split = routing.split(plan);
    routing
        .sites
        .iter()
        .zip(&split.weights)
        .any(|(site, &weight)| site.drilled && weight > 0)
}

/// Every backend of the chosen site full and no place in its queue, or none in time:
/// 503, and when to come back. Counted with the site's 5xx.
fn busy(routing: &Routing, pick: Pick, why: Rejection, method: &Method) -> Response<Either<UpstreamBody, Full<Bytes>>> {
    let site = &routing.sites[pick.site];
    telemetry::record_refused(&site.name, method);
    if let Some(suppressed) = telemetry::FAILURE_LOGS.allow(now_ms()) {
        tracing::warn!(site = %site.name, reason = why.as_str(), max_requests = site.admission.max_requests,
            queue = site.admission.queue, suppressed, "request refused: every backend of the site is full");
    }
    let text = match why {
        Rejection::Full => "every backend is busy and the queue is full\n",
        Rejection::Timeout => "every backend is busy; waited too long in the queue\n",
    };
    let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A declared body length over `[limits].max_body_bytes` (0 = unlimited): 413 at once.
fn too_long(headers: &HeaderMap, max_bytes: u64) -> Option<(StatusCode, &'static str)> {
    if max_bytes == 0 {
        return None;
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (declared > max_bytes).then_some((StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"))
}

/// The request's side of an access-log record; the rest is filled in as it goes.
fn log_record(request: &Request<ClientBody>, client: std::net::IpAddr) -> Record {
    let (method, uri) = (request.method(), request.uri());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(Authority::as_str))
        .unwrap_or("-");
    let path = uri.path_and_query().map(PathAndQuery::as_str).unwrap_or("/");
    Record::new(client, method.as_str(), host, path)
}

/// The body for the first try, and a handle to replay it when retries are possible.
/// `max_bytes`: `[limits].max_body_bytes`, 0 = unlimited.
fn split_body(body: ClientBody, may_retry: bool, max_bytes: u64) -> (RequestBody, Option<Replay>) {
    let limit = if max_bytes == 0 { u64::MAX } else { max_bytes };
    if body.is_end_stream() {
        (RequestBody::empty(), None)
    } else if may_retry {
        let (body, replay) = RequestBody::replayable(body, limit);
        (body, Some(replay))
    } else {
        (RequestBody::streaming(body, limit), None)
    }
}

/// Addresses one try to its backend: HTTP/1.1 gets the origin-form path and keeps the
/// client's Host (the backend's address when the client sent none); HTTP/2 carries the
/// client's host in `:authority` instead of a Host header (RFC 9113 8.3.1).
fn fit_request(request: &mut Request<RequestBody>, backend: &Backend, host: Option<&HeaderValue>, path: &PathAndQuery) {
    if backend.pool.connector().is_http2() {
        let authority = host
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| backend.authority.clone());
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(backend.pool.connector().scheme());
        uri.authority = Some(authority);
        uri.path_and_query = Some(path.clone());
        *request.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
        request.headers_mut().remove(header::HOST);
        return;
    }
    if request.uri().scheme().is_some() {
        *request.uri_mut() = Uri::from(path.clone());
    }
    if !request.headers().contains_key(header::HOST) {
        let host = host
            .cloned()
            .or_else(|| HeaderValue::from_str(backend.authority.as_str()).ok());
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
    }
}

/// The request again, for a retry after the first one left.
fn rebuild(method: &Method, path: &PathAndQuery, headers: HeaderMap, body: RequestBody) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = Uri::from(path.clone());
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

fn failure_response(
    error: Option<&SendError>,
    method: &Method,
    path: &PathAndQuery,
) -> Response<Either<UpstreamBody, Full<Bytes>>> {
    let (status, text) = match error {
        None => (StatusCode::BAD_GATEWAY, "no healthy backend\n"),
        Some(SendError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        Some(SendError::Connect(_)) => (StatusCode::BAD_GATEWAY, "upstream unreachable\n"),
        Some(SendError::Failed(_)) => (StatusCode::BAD_GATEWAY, "upstream connection failed\n"),
        Some(SendError::ClientBody(e)) if is_too_large(e.as_ref()) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
        }
        Some(SendError::ClientBody(_)) => (StatusCode::BAD_REQUEST, "request body could not be read\n"),
    };
    if let Some(suppressed) = telemetry::FAILURE_LOGS.allow(now_ms()) {
        tracing::warn!(%method, path = path.path(), status = status.as_u16(),
            reason = error.map(tracing::field::display), suppressed, "request failed");
    }
    text_response(status, text)
}

/// A short plain-text answer made by the proxy itself.
fn text_response(status: StatusCode, text: &'static str) -> Response<Either<UpstreamBody, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
