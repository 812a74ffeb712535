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

use http::uri::{PathAndQuery, Scheme};
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
            let outcome = probe(&backend, &check.path, check.timeout).await;
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
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if backend.pool.connector().is_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(backend.authority.clone());
        uri.path_and_query = Some(path.clone());
        Uri::from_parts(uri).map_err(|e| SendError::Connect(Box::new(e)))?
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

/// A number in [0, 1); std's per-instance random keys are enough for jitter.
pub(crate) fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}
