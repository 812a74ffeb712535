//! The process's own life, with no knowledge of HTTP: whether it is ready for the load
//! balancer in front (`Readiness`), the listening sockets it inherits (systemd socket
//! activation, or the process it replaces: `inherit`), and handing its sockets to a
//! new binary on SIGUSR2 (`upgrade`).

pub mod inherit;
pub mod upgrade;

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the process is in its life, as `/ready` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Building its snapshot; not accepting yet.
    Starting,
    Serving,
    /// SIGTERM, or replaced by a new binary: still serving for `stop_delay`, then
    /// draining; a load balancer should stop sending.
    Draining,
}

#[derive(Debug, Default)]
pub struct Readiness(AtomicU8);

impl Readiness {
    pub fn set(&self, phase: Phase) {
        let value = match phase {
            Phase::Starting => 0,
            Phase::Serving => 1,
            Phase::Draining => 2,
        };
        self.0.store(value, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Draining,
        }
    }
}

/// Tells systemd (when it started this process with `NOTIFY_SOCKET`, `Type=notify`)
/// what `state` says: `READY=1`, `STOPPING=1`, `MAINPID=N`. Nothing without systemd.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let sent = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
