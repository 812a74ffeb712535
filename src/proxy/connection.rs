//! Serving one client connection: TLS handshake when the listener has TLS, then
//! HTTP/1.1 or HTTP/2 (ALPN or prior knowledge) through hyper's auto builder, with the
//! client-side timeouts (see `activity`); a TLS handshake must complete within
//! `client_header`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::activity::{Activity, Watched, CLIENT_HEADER_TIMEOUT};
use super::client_ip;
use super::headers::ClientInfo;
use super::Proxy;
use crate::clock::ms_of;
use crate::config::Timeouts;
use crate::shutdown::fired;

/// How long a keep-alive connection may stay idle once the process drains, waiting for
/// a request to answer with `Connection: close`.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Serves an accepted connection: with TLS when the listener bound to `bind` has TLS
/// in the current config, else plain.
pub async fn serve_accepted(
    stream: TcpStream,
    peer: SocketAddr,
    bind: SocketAddr,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stream = stream;
    let mut peer = peer;
    let (timeouts, tls, proxy_protocol) = {
        let routing = proxy.routing.load();
        let listener = routing.config.listeners.iter().find(|l| l.bind == bind);
        (
            routing.config.timeouts.clone(),
            listener.and_then(|l| l.tls.clone()),
            listener.is_some_and(|l| l.proxy_protocol),
        )
    };
    if proxy_protocol {
        // Before anything else (TLS included): the header says who the client is.
        match client_ip::read_header(&mut stream, timeouts.client_header).await {
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
    // Each branch boxed: the connection's task holds only the one it takes (inline, the
    // task was the size of the TLS branch, handshake and TLS state included).
    match tls {
        None => Box::pin(serve(stream, client("http"), false, timeouts, proxy, builder, shutdown)).await,
        Some(tls) => {
            Box::pin(serve_tls(
                stream,
                tls.config,
                client("https"),
                timeouts,
                proxy,
                builder,
                shutdown,
            ))
            .await
        }
    }
    open.decrement(1.0);
    drop(token);
}

/// Completes the TLS handshake within `client_header`, then serves the connection
/// (HTTP/2 when the client chose it by ALPN).
async fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    client: Arc<ClientInfo>,
    timeouts: Timeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
) {
    let peer = client.addr;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshake = Box::pin(tokio::time::timeout(timeouts.client_header, acceptor.accept(stream)));
    match handshake.await {
        Ok(Ok(stream)) => {
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve(stream, client, http2, timeouts, proxy, builder, shutdown).await
        }
        Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
    }
}

/// Serves `stream` until the client leaves, a timeout closes it, or shutdown drains it.
async fn serve<S>(
    stream: S,
    client: Arc<ClientInfo>,
    http2: bool,
    timeouts: Timeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = client.addr;
    let activity = Activity::new(http2);
    let head_limit = proxy.routing.load().config.limits.max_header_bytes;
    let io = TokioIo::new(Watched::new(
        stream,
        activity.clone(),
        head_limit,
        proxy.client_metrics.received.clone(),
        proxy.client_metrics.sent.clone(),
    ));
    // Set when the process drains: the next HTTP/1 answer says `Connection: close`.
    let closing = Arc::new(AtomicBool::new(false));
    let service = {
        let activity = activity.clone();
        let closing = closing.clone();
        service_fn(move |request: http::Request<hyper::body::Incoming>| {
            // The request's one clock read: arrival, in-flight mark and first try share it.
            let arrived = Instant::now();
            let in_flight = activity.begin(ms_of(arrived));
            let http1 = request.version() < http::Version::HTTP_2;
            let answer = proxy.clone().forward(request, client.clone(), in_flight, arrived);
            let closing = closing.clone();
            // Boxed: hyper keeps a slot the size of this future for the connection's
            // whole life (5.8 KB per idle connection when inline).
            Box::pin(async move {
                let mut response = answer.await?;
                if http1
                    && closing.load(Ordering::Relaxed)
                    && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, std::convert::Infallible>(response)
            })
        })
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    // Boxed, and only once draining: an idle connection carries no timer for it.
    let mut close_idle: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            // In order, with the connection first: no random draw on every wake-up.
            biased;
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            // Draining (SIGTERM, or replaced by a new binary): closing an idle keep-alive
            // connection at once races a request the client is sending on it (it would
            // fail). Its next answer says `Connection: close` instead, as HAProxy's
            // `idle-close-on-response` does; what is still idle after `DRAIN_GRACE` is
            // closed then (HTTP/2 gets its GOAWAY then too).
            _ = fired(&mut shutdown), if !draining => {
                draining = true;
                closing.store(true, Ordering::Relaxed);
                close_idle = Some(Box::pin(tokio::time::sleep(DRAIN_GRACE.min(timeouts.drain))));
            }
            _ = grace_over(&mut close_idle) => {
                close_idle = None;
                connection.as_mut().graceful_shutdown();
            }
            reason = activity.expired(&timeouts) => {
                tracing::debug!(client = %peer, reason, "closing client connection");
                if reason == CLIENT_HEADER_TIMEOUT {
                    // hyper is waiting for the rest of the head: its next read answers
                    // 408 and ends the connection (bounded, for a client that never reads).
                    activity.time_out_head();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection.as_mut()).await;
                }
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
