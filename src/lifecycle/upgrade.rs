//! SIGUSR2: the running process starts the binary at its own path (the newly installed
//! one) with the same arguments and hands it the listening sockets as systemd does
//! (`LISTEN_FDS`, fds from 3, `LISTEN_PID` set to the new process by `sh`'s exec).
//! The new process tells this one when it serves (`inherit::announce_ready`: SIGTERM),
//! and this one drains as for any SIGTERM. If the new one cannot start, exits, or is
//! not serving within `READY_WITHIN`, this one keeps serving unchanged and says why.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

use super::inherit::UPGRADE_FROM;

/// How long the new process has to start serving.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot find this process's binary: {0}")]
    Binary(std::io::Error),
    #[error("cannot hand over the listening sockets: {0}")]
    Sockets(String),
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("the new process exited ({0}) before it was serving; this one keeps serving (its log says why)")]
    Exited(std::process::ExitStatus),
    #[error("the new process was not serving within {READY_WITHIN:?}; it was stopped and this one keeps serving")]
    NotReady,
}

/// The binary at this process's own path: where `/proc/self/exe` points, without the
/// " (deleted)" that Linux appends once a new binary was installed over it.
fn own_binary() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Starts the new process with `sockets` as its fds 3, 4, ... and waits until it says
/// it serves (this process then gets SIGTERM, and the caller drops this future) or
/// fails. Returns only on failure.
pub async fn start_successor(sockets: Vec<OwnedFd>) -> UpgradeError {
    let binary = match own_binary() {
        Ok(binary) => binary,
        Err(e) => return UpgradeError::Binary(e),
    };
    let count = sockets.len();
    let mappings = sockets
        .into_iter()
        .enumerate()
        .map(|(i, fd)| FdMapping {
            parent_fd: fd,
            child_fd: 3 + i as i32,
        })
        .collect();
    // `sh -c 'LISTEN_PID=$$ exec ...'`: the exec keeps the shell's pid, so LISTEN_PID
    // names the new process itself, as systemd's protocol asks.
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(&binary)
        .args(std::env::args_os().skip(1))
        .env("LISTEN_FDS", count.to_string())
        .env_remove("LISTEN_FDNAMES")
        .env(UPGRADE_FROM, std::process::id().to_string());
    if let Err(e) = command.fd_mappings(mappings) {
        return UpgradeError::Sockets(e.to_string());
    }
    let mut child = match tokio::process::Command::from(command).spawn() {
        Ok(child) => child,
        Err(source) => return UpgradeError::Spawn { binary, source },
    };
    tracing::info!(binary = %binary.display(), sockets = count, pid = ?child.id(), "upgrade: new process started");
    match tokio::time::timeout(READY_WITHIN, child.wait()).await {
        Ok(Ok(status)) => UpgradeError::Exited(status),
        Ok(Err(e)) => UpgradeError::Spawn { binary, source: e },
        Err(_) => {
            let _ = child.kill().await;
            UpgradeError::NotReady
        }
    }
}
