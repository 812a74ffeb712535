//! The accept loop of one proxy listener. A failed accept (e.g. out of file
//! descriptors) is logged and retried with back-off, never fatal. A listener stops when
//! the process shuts down or a reload removes it; its open connections carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use super::connection::serve_accepted;
use super::Proxy;
use crate::config::Limits;
use crate::shutdown::fired;

/// A running listener; dropping it (or calling `stop`) stops accepting.
pub struct ListenerHandle {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl ListenerHandle {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds with SO_REUSEADDR and a deep backlog, as NGINX and HAProxy do.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The connection settings of `[limits]`. The HTTP/1 buffer bounds the request head
/// (beyond it: 431, or 414 for the URI alone) and the response bytes queued for a slow
/// client (hyper's default grows to ~400 KB), so memory per connection stays bounded.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}

/// Accepts on `listener` until stopped or until `shutdown` fires.
/// `bind` is the configured address: it finds this listener's TLS settings in the
/// current config, so a reload can change them.
pub fn spawn_listener(
    listener: TcpListener,
    bind: SocketAddr,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
) -> ListenerHandle {
    let local_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, mut stopped) = watch::channel(false);
    let builder = Arc::new(builder(&proxy.routing.load().config.limits));
    tokio::spawn(async move {
        let mut process_shutdown = shutdown.clone();
        let mut backoff = Duration::from_millis(5);
        tracing::info!(listen = %local_addr, "proxy listener started");
        loop {
            // Wait for room under `max_connections` before accepting.
            let permit = tokio::select! {
                permit = proxy.connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = fired(&mut stopped) => break,
                _ = fired(&mut process_shutdown) => break,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
                        let serving = serve_accepted(stream, peer, bind, proxy.clone(), builder.clone(), shutdown.clone());
                        tokio::spawn(async move {
                            serving.await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(listen = %local_addr, error = %e, "accept failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                },
                _ = fired(&mut stopped) => break,
                _ = fired(&mut process_shutdown) => break,
            }
        }
        tracing::info!(listen = %local_addr, "proxy listener stopped");
    });
    ListenerHandle { local_addr, stop }
}
