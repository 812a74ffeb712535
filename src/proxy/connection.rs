//! Serving one client connection: the PROXY protocol header when the listener expects
//! one, the TLS handshake when it has TLS (within `client_header`), then HTTP/1.1 by
//! the proxy's own code (`h1_conn`), or HTTP/2 (ALPN, or the preface sent with prior
//! knowledge) through hyper's HTTP/2 server, with its timeouts (see `activity`). An
//! HTTP/2 client whose preface is wrong gets SETTINGS + GOAWAY(PROTOCOL_ERROR).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::HeaderValue;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::activity::{Activity, Watched};
use super::client_ip;
use super::h1_conn::{self, Ended, DRAIN_GRACE};
use super::h1_connection::Connection;
use super::headers::ClientInfo;
use super::Proxy;
use crate::body::ClientBody;
use crate::clock::ms_of;
use crate::config::Timeouts;
use crate::proxy::h1::{ClientStream, Rewound};
use crate::shutdown::fired;

pub type Http2Builder = http2::Builder<TokioExecutor>;

/// What an HTTP/2 client sends first (RFC 9113 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a client whose connection preface is not HTTP/2's gets (RFC 9113 3.4: a
/// connection error of type PROTOCOL_ERROR), before the connection closes: the server's
/// own preface (an empty SETTINGS frame), then GOAWAY(last stream 0, PROTOCOL_ERROR,
/// "invalid preface").
const INVALID_PREFACE: &[u8] = b"\0\0\0\x04\0\0\0\0\0\
    \0\0\x17\x07\0\0\0\0\0\0\0\0\0\0\0\0\x01invalid preface";

/// Serves an accepted connection: with TLS when the listener bound to `bind` has TLS
/// in the current config, else plain.
pub async fn serve_accepted(
    stream: TcpStream,
    peer: SocketAddr,
    bind: SocketAddr,
    proxy: Arc<Proxy>,
    http2: Arc<Http2Builder>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stream = stream;
    let mut peer = peer;
    let (timeouts, tls, proxy_protocol, limits) = {
        let routing = proxy.routing.load();
        let listener = routing.config.listeners.iter().find(|l| l.bind == bind);
        let limits = crate::proxy::h1::Limits {
            max_bytes: routing.config.limits.max_header_bytes,
            max_headers: routing.config.limits.max_headers,
        };
        (
            routing.config.timeouts.clone(),
            listener.and_then(|l| l.tls.clone()),
            listener.is_some_and(|l| l.proxy_protocol),
            limits,
        )
    };
    if proxy_protocol {
        // Before anything else (TLS included): the header says who the client is.
        // Boxed: its buffer would otherwise stay in every connection's task.
        match Box::pin(client_ip::read_header(&mut stream, timeouts.client_header)).await {
            Ok(Some(client)) => peer = client,
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("splitgate_proxy_protocol_rejected_total", "reason" => e.label()).increment(1);
                tracing::debug!(peer = %peer, error = %e, "connection closed: no valid PROXY protocol header");
                return;
            }
        }
    }
    let token = proxy.tracker.token();
    let open = proxy.client_metrics.open.clone();
    open.increment(1.0);
    let _ = stream.set_nodelay(true);
    let client = |proto: &'static str| {
        Arc::new(ClientInfo {
            addr: peer.ip(),
            ip: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(proto),
        })
    };
    let (stream, client) = match tls {
        None => (ClientStream::Plain(stream), client("http")),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
            let handshake = Box::pin(tokio::time::timeout(timeouts.client_header, acceptor.accept(stream)));
            match handshake.await {
                Ok(Ok(stream)) => (ClientStream::Tls(Box::new(stream)), client("https")),
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    open.decrement(1.0);
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TLS handshake timed out");
                    open.decrement(1.0);
                    return;
                }
            }
        }
    };
    let activity = Activity::new();
    let (stream, first) = if stream.alpn_h2() {
        (stream, BytesMut::new())
    } else {
        let conn = Connection {
            stream: Some(stream),
            buf: None,
            activity: activity.clone(),
            client: client.clone(),
            proxy: &proxy,
            timeouts: &timeouts,
            limits,
            shutdown: &mut shutdown,
            draining: None,
        };
        match Box::pin(h1_conn::serve(conn)).await {
            Ended::Closed => {
                open.decrement(1.0);
                drop(token);
                return;
            }
            Ended::Http2(stream, first) => (stream, first),
        }
    };
    Box::pin(serve_h2(
        stream, first, client, activity, &timeouts, &proxy, &http2, shutdown,
    ))
    .await;
    open.decrement(1.0);
    drop(token);
}

/// Serves an HTTP/2 client: its preface checked first (read whole within
/// `client_header`; `first`: what was read of it already), then hyper's HTTP/2 server
/// until the client leaves, a timeout closes it, or the drain ends it with GOAWAY.
#[allow(clippy::too_many_arguments)]
async fn serve_h2(
    mut stream: ClientStream,
    mut first: BytesMut,
    client: Arc<ClientInfo>,
    activity: Arc<Activity>,
    timeouts: &Timeouts,
    proxy: &Arc<Proxy>,
    builder: &Http2Builder,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = client.addr;
    proxy.client_metrics.received.increment(first.len() as u64);
    let preface = async {
        while first.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(&first) {
            first.reserve(HTTP2_PREFACE.len());
            match stream.read_buf(&mut first).await {
                Ok(n) if n > 0 => proxy.client_metrics.received.increment(n as u64),
                _ => return false,
            }
        }
        first.starts_with(HTTP2_PREFACE)
    };
    match tokio::time::timeout(timeouts.client_header, preface).await {
        Ok(true) => {}
        Ok(false) if first.is_empty() => return,
        Ok(false) => {
            tracing::debug!(client = %peer, "invalid HTTP/2 preface");
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(INVALID_PREFACE)).await;
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => return,
    }
    let io = TokioIo::new(Watched::new(
        Rewound::new(first.freeze(), stream),
        activity.clone(),
        proxy.client_metrics.received.clone(),
        proxy.client_metrics.sent.clone(),
    ));
    let service = {
        let activity = activity.clone();
        let proxy = proxy.clone();
        service_fn(move |request: http::Request<hyper::body::Incoming>| {
            // The request's one clock read: arrival, in-flight mark and first try share it.
            let arrived = Instant::now();
            let in_flight = activity.begin(ms_of(arrived));
            let request = request.map(ClientBody::Http2);
            // Boxed: hyper keeps a slot the size of this future per stream.
            Box::pin(proxy.clone().forward(request, client.clone(), in_flight, arrived))
        })
    };
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut close_idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            // Draining: GOAWAY after a grace (a request racing the drain still lands).
            _ = fired(&mut shutdown), if !closing => {
                closing = true;
                close_idle = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE.min(timeouts.drain))));
            }
            _ = grace_over(&mut close_idle) => {
                close_idle = None;
                connection.as_mut().graceful_shutdown();
            }
            reason = activity.expired(timeouts) => {
                tracing::debug!(client = %peer, reason, "closing client connection");
                return;
            }
        }
    }
}

/// Waits out the drain's grace for idle connections; never, before the drain.
async fn grace_over(grace: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match grace {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}
