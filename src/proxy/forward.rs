//! Forwarding one request: pick a backend from the snapshot the request started with,
//! send it, and on failure report to health and retry elsewhere when the rules and the
//! budget allow. Errors the proxy makes itself are short plain-text 502/504 answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::headers::{prepare_request, prepare_response, upgrade_request, ClientInfo};
use super::upgrade::spawn_tunnel;
use super::Proxy;
use super::{InFlight, PendingLog, ResponseBody};
use crate::access_log::Record;
use crate::body::{Replay, RequestBody};
use crate::health::now_ms;
use crate::retry::{costs_budget, may_retry};
use crate::routing::{Pick, Routing};
use crate::telemetry;
use crate::upstream::SendError;

/// Upper bound of `[retry].attempts`, so tried backends fit in a fixed array.
const MAX_ATTEMPTS: usize = 10;

/// How a request went, for metrics and the access log.
struct Outcome {
    last_pick: Option<Pick>,
    attempts: u32,
    upstream: Option<std::time::Duration>,
}

impl Proxy {
    /// Serves one client request; never fails (errors become 502/504 responses).
    pub async fn forward(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: Arc<ClientInfo>,
        in_flight: InFlight,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let routing = self.routing.load_full();
        self.budget.record_request(now_ms());
        if request.method() == Method::CONNECT {
            // A forward-proxy tunnel request: not something a reverse proxy serves.
            let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
            let allow = HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
            response.headers_mut().insert(header::ALLOW, allow);
            return Ok(response.map(|body| ResponseBody::new(body, None, None, in_flight)));
        }
        let log = self
            .access_log
            .is_enabled()
            .then(|| Box::new(log_record(&request, &client)));
        let (response, outcome) = self.try_backends(&routing, request, &client).await;
        let site = outcome.last_pick.map(|p| &routing.sites[p.site]);
        let counter = site.map(|s| s.metrics.response_bytes.clone());
        let log = log.map(|mut record| {
            record.status = response.status().as_u16();
            record.site = site.map(|s| s.name.clone());
            record.backend = outcome.last_pick.map(|p| routing.backend(p).authority.to_string());
            record.attempts = outcome.attempts;
            record.upstream_ms = outcome.upstream.map(|d| d.as_secs_f64() * 1000.0);
            PendingLog {
                record,
                started,
                sink: self.access_log.clone(),
            }
        });
        Ok(response.map(|body| ResponseBody::new(body, counter, log, in_flight)))
    }

    async fn try_backends(
        &self,
        routing: &Routing,
        request: Request<Incoming>,
        client: &ClientInfo,
    ) -> (Response<Either<Incoming, Full<Bytes>>>, Outcome) {
        let retry = &routing.config.retry;
        let attempts = (retry.attempts as usize).clamp(1, MAX_ATTEMPTS);
        let (mut parts, body) = request.into_parts();
        let upgrade = upgrade_request(&parts);
        let client_upgrade = upgrade.as_ref().and_then(|_| parts.extensions.remove::<OnUpgrade>());
        prepare_request(&mut parts, client, upgrade.as_ref());
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let (mut body, replay) = split_body(body, attempts > 1);
        let body_was_empty = replay.is_none();

        let mut tried = [Pick { site: 0, backend: 0 }; MAX_ATTEMPTS];
        let mut outcome = Outcome {
            last_pick: None,
            attempts: 0,
            upstream: None,
        };
        let mut last_error: Option<SendError> = None;
        for attempt in 0..attempts {
            let Some(pick) = routing.pick(&tried[..attempt]) else {
                break;
            };
            tried[attempt] = pick;
            outcome.last_pick = Some(pick);
            outcome.attempts += 1;
            let (site, backend) = (&routing.sites[pick.site], routing.backend(pick));
            let last_try = attempt + 1 == attempts;
            let mut headers = if last_try {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            if site.upstream.is_http2() {
                // HTTP/2 carries the host in :authority, which the pooled client sets
                // to the backend's address; a differing Host header would contradict
                // it (RFC 9113 8.3.1). The client's host stays in X-Forwarded-Host.
                headers.remove(header::HOST);
            }
            let request = upstream_request(&parts, site.upstream.scheme(), &backend.authority, &path, headers, body);
            let sent = Instant::now();
            match site.upstream.send(request, routing.config.timeouts.response).await {
                Ok(mut response) => {
                    let waited = sent.elapsed();
                    outcome.upstream = Some(waited);
                    site.metrics.upstream_latency.record(waited.as_secs_f64());
                    backend.state.record_response(response.status());
                    backend.state.metrics.record(&parts.method, response.status());
                    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                    if let (true, Some(client_side)) = (switching, client_upgrade) {
                        let backend_side = hyper::upgrade::on(&mut response);
                        spawn_tunnel(client_side, backend_side, self.tracker.token());
                    }
                    prepare_response(response.headers_mut(), switching);
                    return (response.map(Either::Left), outcome);
                }
                Err(error) => {
                    let reason = error.reason();
                    match &error {
                        SendError::Connect(_) => {
                            site.metrics.connect_errors.increment(1);
                            backend.state.record_connect_failure(&reason);
                        }
                        SendError::ClientBody(_) => {}
                        SendError::Timeout | SendError::Failed(_) => backend.state.record_request_failure(&reason),
                    }
                    let again = if body_was_empty {
                        Some(RequestBody::empty())
                    } else {
                        replay.as_ref().and_then(Replay::again)
                    };
                    let allowed = !last_try
                        && may_retry(&parts.method, &error, again.is_some())
                        && (!costs_budget(&error)
                            || self.budget.try_spend(now_ms(), retry.budget, retry.min_per_second));
                    tracing::debug!(site = %site.name, backend = %backend.authority, %reason, retry = allowed, "try failed");
                    match again {
                        Some(next) if allowed => {
                            telemetry::record_retry(retry_reason(&error));
                            body = next;
                            last_error = Some(error);
                        }
                        _ => {
                            last_error = Some(error);
                            break;
                        }
                    }
                }
            }
        }
        let response = failure_response(last_error.as_ref(), &parts.method, &path);
        match outcome.last_pick {
            Some(pick) => routing
                .backend(pick)
                .state
                .metrics
                .record(&parts.method, response.status()),
            None => telemetry::record_unrouted(&parts.method),
        }
        (response, outcome)
    }
}

/// The request's side of an access-log record; the rest is filled in as it goes.
fn log_record(request: &Request<Incoming>, client: &ClientInfo) -> Record {
    let (method, uri) = (request.method(), request.uri());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(Authority::as_str))
        .unwrap_or("-");
    Record {
        time: SystemTime::now(),
        client: client.addr,
        method: method.to_string(),
        host: host.to_string(),
        path: uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/")
            .to_string(),
        status: 0,
        site: None,
        backend: None,
        attempts: 0,
        upstream_ms: None,
        total_ms: 0.0,
        bytes: 0,
    }
}

fn retry_reason(error: &SendError) -> &'static str {
    match error {
        SendError::Connect(_) => "connect",
        SendError::Timeout => "timeout",
        SendError::Failed(_) => "reset",
        SendError::ClientBody(_) => "client",
    }
}

/// The body for the first try, and a handle to replay it when retries are possible.
fn split_body(body: Incoming, may_retry: bool) -> (RequestBody, Option<Replay>) {
    if body.is_end_stream() {
        (RequestBody::empty(), None)
    } else if may_retry {
        let (body, replay) = RequestBody::replayable(body);
        (body, Some(replay))
    } else {
        (RequestBody::streaming(body), None)
    }
}

fn upstream_request(
    parts: &Parts,
    scheme: Scheme,
    authority: &Authority,
    path: &PathAndQuery,
    headers: HeaderMap,
    body: RequestBody,
) -> Request<RequestBody> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(path.clone());
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

fn failure_response(
    error: Option<&SendError>,
    method: &Method,
    path: &PathAndQuery,
) -> Response<Either<Incoming, Full<Bytes>>> {
    let (status, text) = match error {
        None => (StatusCode::BAD_GATEWAY, "no healthy backend\n"),
        Some(SendError::Timeout) => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        Some(SendError::Connect(_)) => (StatusCode::BAD_GATEWAY, "upstream unreachable\n"),
        Some(SendError::Failed(_)) => (StatusCode::BAD_GATEWAY, "upstream connection failed\n"),
        Some(SendError::ClientBody(_)) => (StatusCode::BAD_REQUEST, "request body could not be read\n"),
    };
    if let Some(suppressed) = telemetry::FAILURE_LOGS.allow(now_ms()) {
        tracing::warn!(%method, path = path.path(), status = status.as_u16(),
            reason = error.map(SendError::reason).unwrap_or_default(), suppressed, "request failed");
    }
    text_response(status, text)
}

/// A short plain-text answer made by the proxy itself.
fn text_response(status: StatusCode, text: &'static str) -> Response<Either<Incoming, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
