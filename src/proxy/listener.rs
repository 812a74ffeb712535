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

/// Largest buffer of one HTTP/1 client connection, for the request head (beyond it:
/// 431) and for response bytes queued for a slow client: bounds memory per connection
/// (hyper's default grows to ~400 KB).
const CLIENT_BUFFER: usize = 64 * 1024;

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(CLIENT_BUFFER)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(256);
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
    let builder = Arc::new(builder());
    tokio::spawn(async move {
        let mut process_shutdown = shutdown.clone();
        let mut backoff = Duration::from_millis(5);
        tracing::info!(listen = %local_addr, "proxy listener started");
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        backoff = Duration::from_millis(5);
                        tokio::spawn(serve_accepted(stream, peer, bind, proxy.clone(), builder.clone(), shutdown.clone()));
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
