//! Connections to backends: pooled clients (keep-alive per backend) behind a small
//! interface: plain HTTP/1.1, or HTTPS with the site's TLS settings (HTTP/1.1 or h2 by
//! ALPN, session resumption through the shared rustls config). Classifies failures
//! into what the retry rules need to know.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

mod connect;

use connect::{CountingConnector, Deadline};

use crate::body::RequestBody;
use crate::config::SiteTls;

/// Why a try failed, in the terms the retry rules use.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing of the request reached the backend.
    Connect(String),
    /// No response headers within the per-try response timeout.
    Timeout,
    /// The connection broke after the request may have been (partly) sent.
    Failed(String),
    /// The client's request body failed (reset, malformed): not the backend's fault.
    ClientBody(String),
}

impl SendError {
    pub fn reason(&self) -> String {
        match self {
            SendError::Connect(reason) | SendError::Failed(reason) | SendError::ClientBody(reason) => reason.clone(),
            SendError::Timeout => "timed out waiting for response headers".to_string(),
        }
    }
}

pub struct Upstream {
    client: Connector,
    connect_timeout: Duration,
    /// Identifies the TLS settings (None = plain), to reuse the pool across reloads.
    tls_fingerprint: Option<u64>,
    /// HTTP/2 to the backends (h2 by ALPN).
    http2: bool,
}

enum Connector {
    Plain(Client<CountingConnector, RequestBody>),
    Tls(Client<Deadline<HttpsConnector<CountingConnector>>, RequestBody>),
}

fn tcp(connect_timeout: Duration, tls: bool) -> CountingConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.enforce_http(!tls);
    CountingConnector::new(connector)
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90));
    builder
}

impl Upstream {
    /// Plain HTTP/1.1 to the backends.
    pub fn plain(connect_timeout: Duration) -> Self {
        Upstream {
            client: Connector::Plain(client_builder().build(tcp(connect_timeout, false))),
            connect_timeout,
            tls_fingerprint: None,
            http2: false,
        }
    }

    /// HTTPS to the backends with the site's TLS settings.
    pub fn tls(connect_timeout: Duration, tls: &SiteTls) -> Self {
        let tcp = tcp(connect_timeout, true);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config((*tls.client).clone())
            .https_only();
        let builder = match &tls.server_name {
            Some(name) => match ServerName::try_from(name.clone()) {
                Ok(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
                Err(_) => builder,
            },
            None => builder,
        };
        let connector = if tls.http2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.enable_http1().wrap_connector(tcp)
        };
        let connector = Deadline::new(connector, connect_timeout);
        let mut client = client_builder();
        client.http2_only(tls.http2);
        Upstream {
            client: Connector::Tls(client.build(connector)),
            connect_timeout,
            tls_fingerprint: Some(tls.fingerprint),
            http2: tls.http2,
        }
    }

    /// True when this client can serve a site with these settings (pool reuse).
    pub fn fits(&self, connect_timeout: Duration, tls: Option<&SiteTls>) -> bool {
        self.connect_timeout == connect_timeout && self.tls_fingerprint == tls.map(|t| t.fingerprint)
    }

    pub fn is_http2(&self) -> bool {
        self.http2
    }

    pub fn scheme(&self) -> Scheme {
        match self.client {
            Connector::Plain(_) => Scheme::HTTP,
            Connector::Tls(_) => Scheme::HTTPS,
        }
    }

    /// Sends one try; `request` carries an absolute-form URI naming the backend. The
    /// `timeout` runs from the moment the request (body included) was sent in full
    /// until the response headers arrive: a slow upload is not a slow backend.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let progress = request.body().progress();
        let response = match &self.client {
            Connector::Plain(client) => client.request(request),
            Connector::Tls(client) => client.request(request),
        };
        let result = match &progress {
            None => tokio::time::timeout(timeout, response).await,
            Some(progress) => {
                tokio::pin!(response);
                tokio::select! {
                    result = &mut response => Ok(result),
                    _ = progress.sent.notified() => tokio::time::timeout(timeout, response).await,
                }
            }
        };
        match result {
            Err(_) => Err(SendError::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if progress.is_some_and(|p| p.client_failed.load(Ordering::Acquire)) => {
                Err(SendError::ClientBody(error_chain(&e)))
            }
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
