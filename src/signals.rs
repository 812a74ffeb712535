//! Process signals for `splitgate run`: SIGHUP reloads the config file (reloads that
//! arrive while one is applied coalesce into one more, never a queue), SIGUSR1 reopens
//! the access log (logrotate), SIGTERM and SIGINT start the graceful drain.

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::server::Server;

/// Runs `server` until SIGTERM/SIGINT, reloading on SIGHUP; then drains it.
pub async fn run_until_stopped(server: Arc<Server>) -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut user1 = signal(SignalKind::user_defined1())?;
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
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
        }
    };
    reloader.abort();
    let drain = server.control().current().config.timeouts.drain;
    tracing::info!(signal = which, drain = ?drain, "shutting down: no new connections, draining open ones");
    let left = server.shutdown().await;
    if left > 0 {
        tracing::warn!(
            left,
            "drain timeout reached; closing the remaining connections"
        );
    } else {
        tracing::info!("all connections drained; bye");
    }
    Ok(())
}
