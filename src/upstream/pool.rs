//! One backend's connections: idle HTTP/1.1 connections (`idle`, the warmest first),
//! or one shared HTTP/2 connection. HTTP/1.1 requests run in the caller's task on our
//! own client (`h1`); HTTP/2 goes through hyper. A request that never left (no
//! connection could be made, or a pooled one was found closed) comes back whole to the
//! caller. Closing the pool drops every idle connection at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use http::{Method, Request, Response};
use hyper::client::conn::http2;

use super::connect::{Connector, Sender};
use super::h1::{BodyEnd, H1Conn, WriteError};
use super::h1_body::H1Body;
use super::h1_upload::UploadError;
use super::idle::Idle;
use super::response::UpstreamBody;
use super::SendError;
use crate::body::RequestBody;
use http_body::Body as _;

pub struct Pool {
    /// The backend as configured: Host, SNI and the HTTP/2 authority.
    authority: Authority,
    /// Where to connect: the IP literal, or one address its name resolved to.
    addr: SocketAddr,
    connector: Arc<Connector>,
    /// `[timeouts].connect` in ms; reloads may change it.
    connect_timeout_ms: AtomicU64,
    idle: Arc<Idle>,
    /// The shared connection of an HTTP/2 backend.
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

/// A try that failed; `request` is the request itself when none of it was sent.
pub struct Failure {
    pub error: SendError,
    pub request: Option<Request<RequestBody>>,
    /// When it left (HTTP/1.1): its header fields, given back so that a retry rebuilds
    /// the request without a copy made before every try.
    pub headers: Option<http::HeaderMap>,
}

impl Pool {
    pub fn new(authority: Authority, addr: SocketAddr, connector: Arc<Connector>, connect_timeout: Duration) -> Pool {
        Pool {
            authority,
            addr,
            connector,
            connect_timeout_ms: AtomicU64::new(connect_timeout.as_millis() as u64),
            idle: Arc::default(),
            shared: Mutex::new(None),
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    pub fn set_connect_timeout(&self, timeout: Duration) {
        self.connect_timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }

    /// A connection of its own, never pooled: what a health probe uses, so that kept-alive
    /// connections cannot hide a backend that stopped accepting new ones.
    pub(crate) async fn connect_fresh(&self) -> Result<Sender, SendError> {
        self.connector
            .connect(&self.authority, self.addr, self.connect_timeout())
            .await
    }

    /// Sends one try. The response timeout runs from the moment the request (body
    /// included) was sent in full until the response headers arrive: a slow upload is
    /// not a slow backend.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, Failure> {
        if self.connector.is_http2() {
            // Boxed: inline, the HTTP/2 path's state would make every HTTP/1.1 request's
            // future larger by about 1 KB (moved at least once per request).
            return Box::pin(self.send_http2(request, timeout)).await;
        }
        let mut request = request;
        let mut pooled = self.idle.take();
        // At most twice: a pooled connection, then a fresh one (one place that awaits
        // an exchange: one slot for its state in this future).
        loop {
            let reused = pooled.is_some();
            let conn = match pooled.take() {
                Some(conn) => conn,
                None => match self.connect_boxed().await {
                    Ok(Sender::Http1(conn)) => conn,
                    Ok(Sender::Http2(_)) => {
                        return Err(not_sent(
                            SendError::Connect("HTTP/2 connection for an HTTP/1.1 site".into()),
                            request,
                        ))
                    }
                    Err(error) => return Err(not_sent(error, request)),
                },
            };
            match exchange(conn, request, timeout, &self.idle).await {
                // The pooled connection had closed before the request left: go fresh.
                Err(Failure {
                    request: Some(back), ..
                }) if reused => request = back,
                done => return done,
            }
        }
    }

    /// Boxed: connecting (TCP, TLS handshake) is the cold path, and inline its state
    /// would make every request's future larger (moved at least once per request).
    async fn connect_boxed(&self) -> Result<Sender, SendError> {
        Box::pin(self.connect_fresh()).await
    }

    async fn send_http2(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let request = match self.shared_http2() {
            Some(sender) => match send_http2(sender, request, timeout).await {
                Err(Failure {
                    request: Some(back), ..
                }) => back,
                done => return done,
            },
            None => request,
        };
        let sender = match self.connect_boxed().await {
            Ok(Sender::Http2(sender)) => sender,
            Ok(Sender::Http1(_)) => {
                return Err(not_sent(
                    SendError::Connect("HTTP/1.1 connection for an HTTP/2 site".into()),
                    request,
                ))
            }
            Err(error) => return Err(not_sent(error, request)),
        };
        if let Ok(mut shared) = self.shared.lock() {
            if !self.idle.is_closed() {
                *shared = Some(sender.clone());
            }
        }
        send_http2(sender, request, timeout).await
    }

    fn shared_http2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut shared = self.shared.lock().ok()?;
        match shared.as_ref() {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            _ => {
                *shared = None;
                None
            }
        }
    }

    /// Closes idle connections unused for longer than the idle timeout. Called by the
    /// backend's prober; never waits for the list.
    pub fn close_expired(&self) {
        self.idle.close_expired();
    }

    /// The backend left the config: idle connections close now, busy ones when done.
    pub fn close(&self) {
        self.idle.close();
        if let Ok(mut shared) = self.shared.lock() {
            *shared = None;
        }
    }
}

/// One request on one HTTP/1.1 connection: head, body, then the response head. The
/// response timeout covers the whole exchange of a request without a body, and starts
/// once the body is through otherwise (a slow upload is not a slow backend). When the
/// backend answers before the body is through, the rest of the upload goes along with
/// the response body. The body that comes back owns the connection and returns it to
/// `idle` when read to its end.
async fn exchange(
    mut conn: H1Conn,
    request: Request<RequestBody>,
    timeout: Duration,
    idle: &Arc<Idle>,
) -> Result<Response<UpstreamBody>, Failure> {
    let (parts, body) = request.into_parts();
    let head_request = parts.method == Method::HEAD;
    let (head, upload) = if body.is_end_stream() {
        let exchanged = tokio::time::timeout(timeout, async {
            let upload = conn.write_head(&parts, body).await?;
            Ok((conn.read_head(head_request).await, upload))
        })
        .await;
        match exchanged {
            Err(_) => return Err(timed_out().with(parts.headers)),
            Ok(Err((error, body))) => return Err(unsent(error, parts, body)),
            Ok(Ok((head, _))) => (head, None),
        }
    } else {
        let mut upload = match conn.write_head(&parts, body).await {
            Ok(upload) => upload,
            Err((error, body)) => return Err(unsent(error, parts, body)),
        };
        let rest = match &mut upload {
            None => None,
            Some(sending) => match conn.send_body(sending).await {
                Ok(BodyEnd::Sent) => None,
                // All of a declared length sent: the answer is a normal one.
                Ok(BodyEnd::Answered) if sending.all_sent() => None,
                Ok(BodyEnd::Answered) => upload,
                Err(UploadError::Client(error)) => {
                    return Err(Failure {
                        error: SendError::ClientBody(error),
                        request: None,
                        headers: None,
                    })
                }
                Err(UploadError::Connection(error)) => return Err(failed(Box::new(error)).with(parts.headers)),
            },
        };
        match tokio::time::timeout(timeout, conn.read_head(head_request)).await {
            Err(_) => return Err(timed_out().with(parts.headers)),
            Ok(head) => (head, rest),
        }
    };
    let head = match head {
        Ok(head) => head,
        Err(error) => return Err(failed(error).with(parts.headers)),
    };
    if head.response.status() == http::StatusCode::SWITCHING_PROTOCOLS
        && !parts.headers.contains_key(http::header::UPGRADE)
    {
        return Err(failed(UNASKED_SWITCH.into()).with(parts.headers));
    }
    // After an early answer the connection is not at a clean boundary: it closes.
    let home = (upload.is_none() && head.keep_alive).then(|| idle.clone());
    let body = H1Body::new(conn, head.framing, home, upload);
    Ok(head.response.map(|()| UpstreamBody::Http1(body)))
}

/// A head that could not be written: the request comes back whole when none of it left.
fn unsent(error: WriteError, parts: http::request::Parts, body: RequestBody) -> Failure {
    if error.nothing_sent {
        not_sent(
            SendError::Connect(Box::new(error.error)),
            Request::from_parts(parts, body),
        )
    } else {
        failed(Box::new(error.error)).with(parts.headers)
    }
}

/// A try that failed before any of `request` left: it comes back whole, to be retried.
fn not_sent(error: SendError, request: Request<RequestBody>) -> Failure {
    Failure {
        error,
        request: Some(request),
        headers: None,
    }
}

fn failed(error: crate::body::BoxError) -> Failure {
    Failure {
        error: SendError::Failed(error),
        request: None,
        headers: None,
    }
}

/// A 101 to a request that asked for no upgrade (no `Upgrade` field went out) leaves
/// nothing to tunnel: the backend's connection now speaks another protocol. A failed
/// try, answered 502 (or retried elsewhere).
const UNASKED_SWITCH: &str = "backend switched protocols without an upgrade request";

impl Failure {
    /// The same failure, with the header fields of the request that left.
    fn with(self, headers: http::HeaderMap) -> Failure {
        Failure {
            headers: Some(headers),
            ..self
        }
    }
}

/// Sends on the shared HTTP/2 connection, under the response timeout.
async fn send_http2(
    mut sender: http2::SendRequest<RequestBody>,
    request: Request<RequestBody>,
    timeout: Duration,
) -> Result<Response<UpstreamBody>, Failure> {
    let progress = request.body().progress();
    let result = timed(sender.try_send_request(request), progress.as_deref(), timeout).await;
    match result {
        Some(Ok(response)) => Ok(response.map(UpstreamBody::Http2)),
        Some(Err(mut e)) => {
            let request = e.take_message();
            Err(classify(e.into_error(), request, progress.as_deref()))
        }
        None => Err(timed_out()),
    }
}

fn timed_out() -> Failure {
    Failure {
        error: SendError::Timeout,
        request: None,
        headers: None,
    }
}

/// `None` when the response timeout ran out.
async fn timed<F: std::future::Future>(
    response: F,
    progress: Option<&crate::body::Progress>,
    timeout: Duration,
) -> Option<F::Output> {
    match progress {
        None => tokio::time::timeout(timeout, response).await.ok(),
        Some(progress) => {
            tokio::pin!(response);
            tokio::select! {
                result = &mut response => Some(result),
                _ = progress.sent.notified() => tokio::time::timeout(timeout, response).await.ok(),
            }
        }
    }
}

fn classify(
    error: hyper::Error,
    request: Option<Request<RequestBody>>,
    progress: Option<&crate::body::Progress>,
) -> Failure {
    let error = if progress.is_some_and(|p| p.client_failed.load(Ordering::Acquire)) {
        SendError::ClientBody(Box::new(error))
    } else if request.is_some() {
        // Nothing was sent: as good as a refused connection.
        SendError::Connect(Box::new(error))
    } else {
        SendError::Failed(Box::new(error))
    };
    Failure {
        error,
        request,
        headers: None,
    }
}
