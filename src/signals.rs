//! Process signals for `splitgate run`: SIGHUP reloads the config file (reloads that
//! arrive while one is applied coalesce into one more, never a queue), SIGUSR1 reopens
//! the access log (logrotate), SIGUSR2 starts a new binary on the same sockets
//! (`lifecycle::upgrade`), SIGTERM and SIGINT turn `/ready` to 503, wait `stop_delay`
//! and start the graceful drain.

use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;

use crate::lifecycle::upgrade;
use crate::server::Server;

/// The signal streams, installed before the server starts so that an early SIGHUP
/// is handled rather than killing the process.
pub struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
    user1: Signal,
    user2: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            user1: signal(SignalKind::user_defined1())?,
            user2: signal(SignalKind::user_defined2())?,
        })
    }
}

/// Runs `server` until SIGTERM/SIGINT, reloading on SIGHUP; then drains it. A second
/// SIGTERM/SIGINT during the drain stops waiting.
pub async fn run_until_stopped(server: Arc<Server>, signals: Signals) {
    let Signals {
        mut hangup,
        mut terminate,
        mut interrupt,
        mut user1,
        mut user2,
    } = signals;
    let mut upgrading: Option<tokio::task::JoinHandle<()>> = None;
    let pending = Arc::new(Notify::new());
    let reloader = {
        let server = server.clone();
        let pending = pending.clone();
        tokio::spawn(async move {
            loop {
                pending.notified().await;
                // Errors are logged and counted inside `reload`; the old config keeps serving.
                let _ = server.reload().await;
            }
        })
    };
    let which = loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                pending.notify_one();
            }
            _ = user1.recv() => {
                tracing::info!("SIGUSR1: reopening the access log");
                server.reopen_logs();
            }
            _ = user2.recv() => {
                if upgrading.as_ref().is_some_and(|u| !u.is_finished()) {
                    tracing::warn!("SIGUSR2: an upgrade is already under way; ignored");
                    continue;
                }
                tracing::info!("SIGUSR2: starting the new binary on the same sockets");
                server.keep_state_now();
                let sockets = server.listening_sockets().await;
                upgrading = Some(tokio::spawn(async move {
                    let failure = upgrade::start_successor(sockets).await;
                    metrics::counter!("splitgate_upgrades_failed_total").increment(1);
                    tracing::error!(reason = %failure, "upgrade failed; this process keeps serving unchanged");
                }));
            }
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
        }
    };
    reloader.abort();
    // Replaced by the new binary (it sent the SIGTERM), or stopping anyway: the
    // upgrade's watch ends here; a new process that runs keeps running.
    if let Some(upgrade) = upgrading {
        if !upgrade.is_finished() {
            // The new process is serving (it sent this SIGTERM): the state file is
            // its own now; this one's drain must not write over its decisions.
            if let Some(file) = server.control().state_file() {
                file.retire();
            }
        }
        upgrade.abort();
    }
    server.stop_being_ready();
    let delay = server.control().current().config.timeouts.stop_delay;
    if !delay.is_zero() {
        tracing::info!(signal = which, stop_delay = ?delay, "/ready says draining; still accepting for stop_delay");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    let drain = server.control().current().config.timeouts.drain;
    tracing::info!(signal = which, drain = ?drain, "shutting down: no new connections, draining open ones");
    let left = tokio::select! {
        left = server.shutdown() => left,
        _ = terminate.recv() => usize::MAX,
        _ = interrupt.recv() => usize::MAX,
    };
    match left {
        0 => tracing::info!("all connections drained; bye"),
        usize::MAX => tracing::warn!("second signal: closing the remaining connections now"),
        left => tracing::warn!(left, "drain timeout reached; closing the remaining connections"),
    }
}
