//! Listening sockets this process was given rather than bound: by systemd socket
//! activation or by the splitgate it replaces (`LISTEN_FDS`, fds from 3), matched to the
//! configured addresses by their local address. What no listener claims is closed with
//! a warning. After start, the process it replaces is told to go (`SIGTERM` to
//! `SPLITGATE_UPGRADE_FROM`).

use std::net::{SocketAddr, TcpListener};

/// The process a new binary replaces names itself here.
pub const UPGRADE_FROM: &str = "SPLITGATE_UPGRADE_FROM";

#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(SocketAddr, TcpListener)>,
}

impl Inherited {
    /// Takes the sockets of `LISTEN_FDS` (and clears those variables, so that no child
    /// process sees them). Call once, first thing in `main`.
    pub fn from_env() -> Inherited {
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for index in 0..fds.len() {
            match fds.take_tcp_listener(index) {
                Ok(Some(socket)) => match socket.local_addr() {
                    Ok(addr) => sockets.push((addr, socket)),
                    Err(e) => tracing::warn!(fd = index + 3, error = %e, "inherited socket without an address; closed"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(fd = index + 3, error = %e, "inherited file descriptor is not a TCP listener; closed")
                }
            }
        }
        if !sockets.is_empty() {
            let addrs: Vec<String> = sockets.iter().map(|(a, _)| a.to_string()).collect();
            tracing::info!(sockets = ?addrs, "listening sockets inherited");
        }
        Inherited { sockets }
    }

    /// Every inherited socket listening on `addr`, made non-blocking.
    pub fn take(&mut self, addr: SocketAddr) -> Vec<TcpListener> {
        let (mine, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(a, _)| *a == addr);
        self.sockets = rest;
        mine.into_iter()
            .filter_map(|(_, socket)| socket.set_nonblocking(true).ok().map(|()| socket))
            .collect()
    }

    /// Closes what no listener took.
    pub fn close_rest(&mut self) {
        for (addr, _) in self.sockets.drain(..) {
            tracing::warn!(listen = %addr, "an inherited socket matches no listener in the config; closed");
        }
    }
}

/// Makes `sockets` (inherited for one address) into exactly one per accept loop where
/// there are fewer: the extra loops share a copy of the first.
pub fn fit(mut sockets: Vec<TcpListener>, loops: usize) -> std::io::Result<Vec<TcpListener>> {
    let wanted = loops.max(1);
    while sockets.len() < wanted {
        let copy = sockets
            .first()
            .ok_or_else(|| std::io::Error::other("no socket"))?
            .try_clone()?;
        sockets.push(copy);
    }
    Ok(sockets)
}

/// This process is serving: tells systemd (its main PID is now this one) and the
/// process it replaces, which then stops accepting and drains.
pub fn announce_ready() {
    let pid = std::process::id();
    super::notify_systemd(&format!("READY=1\nMAINPID={pid}"));
    let Some(old) = std::env::var(UPGRADE_FROM).ok().and_then(|p| p.parse::<i32>().ok()) else {
        return;
    };
    let Some(old) = rustix::process::Pid::from_raw(old) else {
        return;
    };
    match rustix::process::kill_process(old, rustix::process::Signal::TERM) {
        Ok(()) => tracing::info!(
            old = old.as_raw_nonzero().get(),
            "upgrade: serving; the old process was told to drain"
        ),
        Err(e) => tracing::warn!(error = %e, "upgrade: cannot tell the old process to drain"),
    }
}
