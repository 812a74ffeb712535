//! The active health check: one task per backend for the whole process, sending
//! `GET <path>` every `interval` (with jitter so probes spread out) on a connection of
//! its own (so a kept-alive connection cannot hide a backend that stopped accepting new
//! ones, and a TLS failure fails the check), and feeding the outcome to the backend.
//! Also closes the pool's expired idle connections. Stops when the backend is retired.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Method, Request, Uri};

use super::backend::Backend;
use crate::body::RequestBody;
use crate::clock::now_ms;
use crate::upstream::{SendError, Sender};

/// Starts probing `backend` right away (after a random fraction of one interval).
pub fn spawn_prober(backend: Arc<Backend>) {
    tokio::spawn(async move {
        let first = backend.check.load().interval;
        tokio::time::sleep(first.mul_f64(random_fraction() * 0.5)).await;
        while !backend.is_retired() {
            let check = backend.check.load_full();
            let outcome = if check.grpc {
                grpc_probe(&backend, check.timeout).await
            } else {
                probe(&backend, &check.path, check.timeout).await
            };
            if backend.is_retired() {
                break;
            }
            match outcome {
                Ok(status) => {
                    let ok = status.is_success() || status.is_redirection();
                    backend.record_probe(ok, &format_args!("health check answered {}", status.as_u16()));
                }
                Err(SendError::Connect(e)) if crate::descriptors::exhausted(e.as_ref()) => {
                    // The proxy ran out of descriptors: says nothing of the backend.
                    crate::descriptors::record_exhausted("probe");
                    tracing::error!(site = %backend.site, backend = %backend.addr, error = %e,
                        "health check not made: this process is out of file descriptors (the backend is not judged)");
                }
                Err(error) => backend.record_probe(false, &ProbeFailure(&error)),
            }
            backend.pool.close_expired();
            // +-10% so that probes of many backends drift apart instead of bunching.
            let spread = 0.9 + 0.2 * random_fraction();
            tokio::time::sleep(check.interval.mul_f64(spread)).await;
        }
        tracing::debug!(site = %backend.site, backend = %backend.addr, "prober stopped");
    });
}

struct ProbeFailure<'a>(&'a SendError);

impl fmt::Display for ProbeFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "health check failed: {}", self.0)
    }
}

/// One probe: connect (within the connect timeout), send, wait for the status (within
/// `timeout`); the connection closes afterwards.
async fn probe(backend: &Backend, path: &PathAndQuery, timeout: Duration) -> Result<http::StatusCode, SendError> {
    let sender = backend.pool.connect_fresh().await?;
    let http2 = matches!(sender, Sender::Http2(_));
    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = if http2 {
        http2_uri(backend, path.clone())?
    } else {
        Uri::from(path.clone())
    };
    let headers = request.headers_mut();
    headers.insert(header::USER_AGENT, HeaderValue::from_static("splitgate-health-check"));
    if !http2 {
        let host = HeaderValue::from_str(backend.authority.as_str()).map_err(|e| SendError::Connect(Box::new(e)))?;
        headers.insert(header::HOST, host);
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match sender {
        Sender::Http1(conn) => match tokio::time::timeout(timeout, conn.status_of(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(SendError::Failed(e)),
            Ok(Ok(status)) => Ok(status),
        },
        Sender::Http2(mut sender) => match tokio::time::timeout(timeout, sender.send_request(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => Err(SendError::Failed(Box::new(e))),
            Ok(Ok(response)) => Ok(response.status()),
        },
    }
}

/// The gRPC health protocol (`grpc.health.v1.Health/Check` with an empty request, the
/// service "" = the server as a whole): 200 when the answer is `SERVING` with
/// `grpc-status` 0, 503 for any other answer. The messages are tiny and written by hand:
/// a request is the 5-byte gRPC prefix of an empty message; a response's field 1 is the
/// status (1 = SERVING).
async fn grpc_probe(backend: &Backend, timeout: Duration) -> Result<http::StatusCode, SendError> {
    use http_body_util::BodyExt;
    let Sender::Http2(mut sender) = backend.pool.connect_fresh().await? else {
        return Err(SendError::Connect(
            "gRPC health checks need HTTP/2 to the backend".into(),
        ));
    };
    let mut request = Request::new(RequestBody::fixed(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http2_uri(backend, PathAndQuery::from_static("/grpc.health.v1.Health/Check"))?;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("splitgate-health-check"));
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SendError::Failed(Box::new(e)))?;
        let (head, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, 4096)
            .collect()
            .await
            .map_err(|e| SendError::Failed(e.to_string().into()))?;
        let status = body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = body.to_bytes();
        let serving = head.status == http::StatusCode::OK
            && status.as_deref() == Some("0")
            && message.get(5..) == Some(&[0x08, 0x01][..]);
        Ok(if serving {
            http::StatusCode::OK
        } else {
            http::StatusCode::SERVICE_UNAVAILABLE
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(SendError::Timeout))
}

/// An HTTP/2 probe's target: scheme and authority of the backend, and `path`.
fn http2_uri(backend: &Backend, path: PathAndQuery) -> Result<Uri, SendError> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(backend.pool.connector().scheme());
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = Some(path);
    Uri::from_parts(uri).map_err(|e| SendError::Connect(Box::new(e)))
}

/// A number in [0, 1); std's per-instance random keys are enough for jitter.
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
