//! The accept loops of one proxy listener (one per worker, see `workers`). A failed
//! accept (e.g. out of file descriptors) is logged and retried with back-off, never
//! fatal. A listener stops when the process shuts down or a reload removes it; its open
//! connections carry on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::connection::{serve_accepted, Http2Builder};
use super::Proxy;
use crate::config::Limits;
use crate::shutdown::fired;

/// A running listener; dropping it (or calling `stop`) stops accepting.
pub struct ListenerHandle {
    pub local_addr: SocketAddr,
    /// Copies of the listening sockets, to hand to a new binary on upgrade.
    pub sockets: Vec<std::net::TcpListener>,
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

/// Binds `addr` with SO_REUSEADDR and a deep backlog, as NGINX and HAProxy do: one
/// socket, or one per worker (`copies` > 1) with SO_REUSEPORT, the kernel spreading
/// new connections between them. A port where anything listens is refused even then
/// (a second splitgate must not quietly share it): the port is first held by a plain
/// bound socket, which any listener conflicts with and which resolves port 0.
pub fn bind_listener(addr: SocketAddr, copies: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if copies <= 1 {
        return Ok(vec![listening(addr, false)?]);
    }
    let held = socket(addr, false)?;
    let addr = held
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound to a non-IP address"))?;
    (0..copies).map(|_| listening(addr, true)).collect()
}

fn socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn listening(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket(addr, reuse_port)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The HTTP/2 connection settings of `[limits]` (HTTP/1.1 reads its limits per
/// connection from the snapshot).
fn builder(limits: &Limits) -> Http2Builder {
    let mut builder = Http2Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}

/// Accepts on `sockets` (from `bind_listener`, or inherited) until stopped or until
/// `shutdown` fires: copy i on `runtimes[i]` (a worker), or all on the current runtime when
/// `runtimes` is empty. `bind` is the configured address: it finds this listener's TLS
/// settings in the current config, so a reload can change them.
pub fn spawn_listener(
    sockets: Vec<std::net::TcpListener>,
    bind: SocketAddr,
    proxy: Arc<Proxy>,
    shutdown: watch::Receiver<bool>,
    runtimes: &[Handle],
) -> ListenerHandle {
    let local_addr = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let copies = sockets.iter().filter_map(|s| s.try_clone().ok()).collect();
    let (stop, stopped) = watch::channel(false);
    let builder = Arc::new(builder(&proxy.routing.load().config.limits));
    tracing::info!(listen = %local_addr, accept_loops = sockets.len(), "proxy listener started");
    for (index, socket) in sockets.into_iter().enumerate() {
        let accepting = accept_loop(
            socket,
            bind,
            proxy.clone(),
            builder.clone(),
            stopped.clone(),
            shutdown.clone(),
        );
        // More sockets than workers (inherited from a process with more): shared out.
        match runtimes.get(index % runtimes.len().max(1)) {
            Some(runtime) => runtime.spawn(accepting),
            None => tokio::spawn(accepting),
        };
    }
    ListenerHandle {
        local_addr,
        sockets: copies,
        stop,
    }
}

async fn accept_loop(
    socket: std::net::TcpListener,
    bind: SocketAddr,
    proxy: Arc<Proxy>,
    builder: Arc<Http2Builder>,
    mut stopped: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    // Registered with the reactor of the runtime this runs on.
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(listen = %bind, error = %e, "cannot register the listener");
            return;
        }
    };
    let local_addr = listener.local_addr().unwrap_or(bind);
    let mut process_shutdown = shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    tracing::debug!(listen = %local_addr, "proxy listener started");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(e) => {
                    tracing::warn!(listen = %local_addr, error = %e, "accept failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = fired(&mut stopped) => break,
            _ = fired(&mut process_shutdown) => break,
        };
        // Room under `max_connections`: one accepted connection per accept loop waits
        // here, the rest in the kernel's backlog. (Waiting before the accept would let
        // an idle worker's loop sit on the free permit while clients queue on the
        // other workers' sockets.)
        // Biased, the permit first: a connection accepted as the listener stops (a
        // SIGUSR2 hand-over) is served, not dropped with its request unanswered (a
        // random pick between a free permit and the stop dropped one now and then).
        let permit = tokio::select! {
            biased;
            permit = proxy.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = fired(&mut stopped) => break,
            _ = fired(&mut process_shutdown) => break,
        };
        let (proxy, builder, shutdown) = (proxy.clone(), builder.clone(), shutdown.clone());
        // The connection's future is made inside the task: made outside and moved in, the
        // task held it twice (as the block's capture and as what it awaits), 2.8 KB more
        // per open connection.
        // Counted for the drain from the accept on: a drain that looked before the new
        // task first ran would find nothing live and end the process under it.
        let accepted = proxy.tracker.token();
        tokio::spawn(async move {
            serve_accepted(stream, peer, bind, proxy, builder, shutdown).await;
            drop(permit);
            drop(accepted);
        });
    }
    tracing::debug!(listen = %local_addr, "proxy listener stopped");
}
