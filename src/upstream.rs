//! Connections to backends: one pooled HTTP/1.1 client (keep-alive per backend) behind
//! a small interface, so per-backend pools or TLS can replace it without touching the
//! proxy. Classifies failures into what the retry rules need to know.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::RequestBody;

/// Why a try failed, in the terms the retry rules use.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing of the request reached the backend.
    Connect(String),
    /// No response headers within the per-try response timeout.
    Timeout,
    /// The connection broke after the request may have been (partly) sent.
    Failed(String),
}

impl SendError {
    pub fn reason(&self) -> String {
        match self {
            SendError::Connect(reason) | SendError::Failed(reason) => reason.clone(),
            SendError::Timeout => "timed out waiting for response headers".to_string(),
        }
    }
}

pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    connect_timeout: Duration,
}

impl Upstream {
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream {
            client,
            connect_timeout,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Sends one try; `request` carries an absolute-form URI naming the backend.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(SendError::Failed(error_chain(&e))),
        }
    }
}

/// "outer: inner: root cause" in one line, for logs and health reasons.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
