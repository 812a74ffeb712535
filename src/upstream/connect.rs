//! Opening one connection to a backend: TCP (no Nagle, keep-alive probes, quick ACKs),
//! TLS with the site's settings when it has them, then, for HTTP/2, hyper's handshake
//! (HTTP/1.1 needs none: our client runs on the open transport), all within
//! `[timeouts].connect`. Connects to an address given (names are resolved by the control
//! plane, never here); the configured host is the TLS name. Counts open connections in
//! the `splitgate_upstream_connections` gauge. Knows nothing of pools or health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Gauge;
use rustls::pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h1::H1Conn;
use super::transport::{Conn, Io};
use super::SendError;
use crate::body::RequestBody;
use crate::config::SiteTls;

/// How a site's backends are reached; shared by all backends of the site.
pub struct Connector {
    tls: Option<TlsSettings>,
    http2: bool,
    open: Gauge,
}

struct TlsSettings {
    connector: TlsConnector,
    /// SNI and verified name; `None` = the backend's host.
    server_name: Option<ServerName<'static>>,
}

/// A request sender on one open connection: HTTP/1.1 is ours (run in the caller's
/// task), HTTP/2 is hyper's (its connection task is spawned).
pub(crate) enum Sender {
    Http1(H1Conn),
    Http2(http2::SendRequest<RequestBody>),
}

impl Connector {
    /// `h2c`: HTTP/2 with prior knowledge to plain backends.
    pub fn new(tls: Option<&SiteTls>, h2c: bool) -> Arc<Connector> {
        let settings = tls.map(|tls| {
            let mut config = (*tls.client).clone();
            config.alpn_protocols = vec![if tls.http2 {
                b"h2".to_vec()
            } else {
                b"http/1.1".to_vec()
            }];
            TlsSettings {
                connector: TlsConnector::from(Arc::new(config)),
                server_name: tls
                    .server_name
                    .as_ref()
                    .and_then(|name| ServerName::try_from(name.clone()).ok()),
            }
        });
        Arc::new(Connector {
            tls: settings,
            http2: tls.is_some_and(|t| t.http2) || (h2c && tls.is_none()),
            open: metrics::gauge!("splitgate_upstream_connections"),
        })
    }

    pub fn is_http2(&self) -> bool {
        self.http2
    }

    /// The `:scheme` of an HTTP/2 request to these backends.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Connects and handshakes within `limit`; an HTTP/2 connection's task is spawned on
    /// the current runtime and ends when the connection closes.
    pub(crate) async fn connect(
        &self,
        authority: &Authority,
        addr: SocketAddr,
        limit: Duration,
    ) -> Result<Sender, SendError> {
        match tokio::time::timeout(limit, self.open_connection(authority, addr)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Connect(
                format!("connect (TCP and TLS) took longer than {limit:?}").into(),
            )),
        }
    }

    async fn open_connection(&self, authority: &Authority, addr: SocketAddr) -> Result<Sender, SendError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let socket = SockRef::from(&tcp);
        let _ = socket.set_tcp_nodelay(true);
        let _ = socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(Duration::from_secs(60)));
        let _ = socket.set_tcp_quickack(true);
        let conn = Conn::new(tcp, self.open.clone(), self.tls.is_some());
        match &self.tls {
            None if self.http2 => handshake_http2(conn).await,
            None => Ok(Sender::Http1(H1Conn::new(Io::Plain(conn)))),
            Some(tls) => {
                let name = match &tls.server_name {
                    Some(name) => name.clone(),
                    None => ServerName::try_from(authority.host().trim_matches(['[', ']']).to_string())
                        .map_err(|e| SendError::Connect(Box::new(e)))?,
                };
                let stream = tls
                    .connector
                    .connect(name, conn)
                    .await
                    .map_err(|e| SendError::Connect(Box::new(e)))?;
                if self.http2 {
                    handshake_http2(stream).await
                } else {
                    Ok(Sender::Http1(H1Conn::new(Io::Tls(Box::new(stream)))))
                }
            }
        }
    }
}

async fn handshake_http2<S>(io: S) -> Result<Sender, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(Sender::Http2(sender))
}
