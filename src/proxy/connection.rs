//! Serving one client connection: TLS handshake when the listener has TLS, then
//! HTTP/1.1 or HTTP/2 (ALPN or prior knowledge) through hyper's auto builder, with the
//! client-side timeouts: a TLS handshake and a request head must each complete within
//! `client_header`, and a connection with nothing in flight closes after `idle`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::headers::ClientInfo;
use super::Proxy;
use crate::config::Timeouts;
use crate::health::now_ms;
use crate::shutdown::fired;

/// What the timeouts of one connection watch. Times are `now_ms` values.
#[derive(Default)]
struct Activity {
    last_io: AtomicU64,
    /// When the first byte of a request head arrived with nothing in flight; 0 = none.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
}

/// Marks one request in flight for as long as it lives.
struct Busy(Arc<Activity>);

impl Activity {
    fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        Busy(self.clone())
    }

    fn saw_read(&self) {
        let now = now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now, Ordering::Release);
        }
    }

    /// Resolves when the connection should be closed, with the reason.
    async fn expired(&self, timeouts: &Timeouts) -> &'static str {
        loop {
            let now = now_ms();
            let (deadline, reason) = if self.in_flight.load(Ordering::Acquire) > 0 {
                (now + timeouts.idle.as_millis() as u64, "")
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    0 => (
                        self.last_io.load(Ordering::Relaxed) + timeouts.idle.as_millis() as u64,
                        "idle timeout",
                    ),
                    started => (
                        started + timeouts.client_header.as_millis() as u64,
                        "client header timeout",
                    ),
                }
            };
            if now >= deadline && !reason.is_empty() {
                return reason;
            }
            // A request head may start at any moment, so look again within half of
            // `client_header` even when the idle deadline is further away.
            let recheck = timeouts.client_header.as_millis() as u64 / 2;
            let wait = deadline.saturating_sub(now).min(recheck).max(10);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_io.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client socket, noting reads and writes for the timeouts.
struct Watched<S> {
    stream: S,
    activity: Arc<Activity>,
    received: metrics::Counter,
    sent: metrics::Counter,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            self.activity.saw_read();
            self.received.increment(read as u64);
        }
        polled
    }
}

impl<S> Watched<S> {
    fn wrote(&self, n: usize) {
        if n > 0 {
            self.activity.last_io.store(now_ms(), Ordering::Relaxed);
            self.sent.increment(n as u64);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

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
    let token = proxy.tracker.token();
    let open = proxy.client_metrics.open.clone();
    open.increment(1.0);
    let _ = stream.set_nodelay(true);
    let (timeouts, tls) = {
        let routing = proxy.routing.load();
        let tls = routing
            .config
            .listeners
            .iter()
            .find(|l| l.bind == bind)
            .and_then(|l| l.tls.clone());
        (routing.config.timeouts.clone(), tls)
    };
    match tls {
        None => {
            serve(
                stream,
                peer,
                HeaderValue::from_static("http"),
                timeouts,
                proxy,
                builder,
                shutdown,
            )
            .await
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
            match tokio::time::timeout(timeouts.client_header, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let https = HeaderValue::from_static("https");
                    serve(stream, peer, https, timeouts, proxy, builder, shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        }
    }
    open.decrement(1.0);
    drop(token);
}

/// Serves `stream` until the client leaves, a timeout closes it, or shutdown drains it.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    proto: HeaderValue,
    timeouts: Timeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (received, sent) = (
        proxy.client_metrics.received.clone(),
        proxy.client_metrics.sent.clone(),
    );
    let activity = Arc::new(Activity::default());
    activity.last_io.store(now_ms(), Ordering::Relaxed);
    let client = Arc::new(ClientInfo {
        addr: peer.ip(),
        ip: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        proto,
    });
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            let busy = activity.busy();
            let proxy = proxy.clone();
            let client = client.clone();
            async move {
                let response = proxy.forward(request, &client).await;
                drop(busy);
                response
            }
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
        received,
        sent,
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = fired(&mut shutdown), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            reason = activity.expired(&timeouts) => {
                tracing::debug!(client = %peer, reason, "closing client connection");
                return;
            }
        }
    }
}
