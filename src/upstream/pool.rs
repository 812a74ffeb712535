//! One backend's connections: idle HTTP/1.1 connections in a LIFO list (the warmest
//! first), or one shared HTTP/2 connection. A request that never left (no connection
//! could be made, or a pooled one was found closed) comes back whole to the caller.
//! An HTTP/1.1 connection returns to the list when its response body has been read to
//! the end (`Lease`). Closing the pool drops every idle connection at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use super::connect::{Connector, Sender};
use super::SendError;
use crate::body::RequestBody;
use crate::clock::now_ms;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// An idle connection unused for this long is closed.
const IDLE_TIMEOUT_MS: u64 = 90_000;

pub struct Pool {
    authority: Authority,
    connector: Arc<Connector>,
    /// `[timeouts].connect` in ms; reloads may change it.
    connect_timeout_ms: AtomicU64,
    idle: Arc<Idle>,
    /// The shared connection of an HTTP/2 backend.
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

struct Idle {
    list: Mutex<Vec<(http1::SendRequest<RequestBody>, u64)>>,
    closed: AtomicBool,
}

/// An HTTP/1.1 connection busy with a response body; `release` it when the body has
/// been read to its end, drop it otherwise (the connection then closes).
pub struct Lease {
    sender: http1::SendRequest<RequestBody>,
    idle: Arc<Idle>,
}

/// A try that failed; `request` is the request itself when none of it was sent.
pub struct Failure {
    pub error: SendError,
    pub request: Option<Request<RequestBody>>,
}

impl Pool {
    pub fn new(authority: Authority, connector: Arc<Connector>, connect_timeout: Duration) -> Pool {
        Pool {
            authority,
            connector,
            connect_timeout_ms: AtomicU64::new(connect_timeout.as_millis() as u64),
            idle: Arc::new(Idle {
                list: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
            shared: Mutex::new(None),
        }
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
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
        self.connector.connect(&self.authority, self.connect_timeout()).await
    }

    /// Sends one try. The response timeout runs from the moment the request (body
    /// included) was sent in full until the response headers arrive: a slow upload is
    /// not a slow backend.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Lease>), Failure> {
        let request = match self.checkout() {
            Some(sender) => match send_on(sender, request, timeout).await {
                // The pooled connection had closed before the request left: go fresh.
                Err(Failure {
                    request: Some(back), ..
                }) => back,
                done => return done.map(|sent| self.lease(sent)),
            },
            None => request,
        };
        // Boxed: connecting (TCP, TLS handshake) is the cold path, and inline its state
        // would make every request's future larger (moved at least once per request).
        let sender = match Box::pin(self.connect_fresh()).await {
            Ok(sender) => sender,
            Err(error) => {
                return Err(Failure {
                    error,
                    request: Some(request),
                })
            }
        };
        if let Sender::Http2(sender) = &sender {
            self.share(sender);
        }
        send_on(sender, request, timeout).await.map(|sent| self.lease(sent))
    }

    fn lease(
        &self,
        (response, sender): (Response<Incoming>, Option<http1::SendRequest<RequestBody>>),
    ) -> (Response<Incoming>, Option<Lease>) {
        let lease = sender.map(|sender| Lease {
            sender,
            idle: self.idle.clone(),
        });
        (response, lease)
    }

    fn checkout(&self) -> Option<Sender> {
        if self.connector.is_http2() {
            let mut shared = self.shared.lock().ok()?;
            match shared.as_ref() {
                Some(sender) if !sender.is_closed() => return Some(Sender::Http2(sender.clone())),
                _ => *shared = None,
            }
            return None;
        }
        let mut list = self.idle.list.lock().ok()?;
        while let Some((sender, _)) = list.pop() {
            if !sender.is_closed() {
                return Some(Sender::Http1(sender));
            }
        }
        None
    }

    /// Closes idle connections unused for longer than the idle timeout. Called by the
    /// backend's prober; never waits for the list.
    pub fn close_expired(&self) {
        let now = now_ms();
        if let Ok(mut list) = self.idle.list.try_lock() {
            list.retain(|(sender, since)| !sender.is_closed() && now.saturating_sub(*since) < IDLE_TIMEOUT_MS);
        }
    }

    /// The backend left the config: idle connections close now, busy ones when done.
    pub fn close(&self) {
        self.idle.closed.store(true, Ordering::Release);
        if let Ok(mut list) = self.idle.list.lock() {
            list.clear();
        }
        if let Ok(mut shared) = self.shared.lock() {
            *shared = None;
        }
    }

    /// Keeps a new HTTP/2 connection for the requests that follow.
    fn share(&self, sender: &http2::SendRequest<RequestBody>) {
        if let Ok(mut shared) = self.shared.lock() {
            if !self.idle.closed.load(Ordering::Acquire) {
                *shared = Some(sender.clone());
            }
        }
    }
}

impl Lease {
    /// The response was read to its end: the connection can take the next request.
    pub fn release(self) {
        if self.sender.is_closed() || self.idle.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut list) = self.idle.list.lock() {
            if list.len() < MAX_IDLE {
                list.push((self.sender, now_ms()));
            }
        }
    }
}

/// Sends on one connection, under the response timeout; an HTTP/1.1 sender comes back
/// with the response for its lease.
async fn send_on(
    sender: Sender,
    request: Request<RequestBody>,
    timeout: Duration,
) -> Result<(Response<Incoming>, Option<http1::SendRequest<RequestBody>>), Failure> {
    let progress = request.body().progress();
    match sender {
        Sender::Http1(mut sender) => {
            let result = timed(sender.try_send_request(request), progress.as_deref(), timeout).await;
            match result {
                Some(Ok(response)) => Ok((response, Some(sender))),
                Some(Err(mut e)) => {
                    let request = e.take_message();
                    Err(classify(e.into_error(), request, progress.as_deref()))
                }
                None => Err(timed_out()),
            }
        }
        Sender::Http2(mut sender) => {
            let result = timed(sender.try_send_request(request), progress.as_deref(), timeout).await;
            match result {
                Some(Ok(response)) => Ok((response, None)),
                Some(Err(mut e)) => {
                    let request = e.take_message();
                    Err(classify(e.into_error(), request, progress.as_deref()))
                }
                None => Err(timed_out()),
            }
        }
    }
}

fn timed_out() -> Failure {
    Failure {
        error: SendError::Timeout,
        request: None,
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
    Failure { error, request }
}
