//! Why a fleet session ended: each step's failure, said as `/status`'s
//! `fleet.last_error` shows it (the etcd error after the step that met it).

use crate::fleet::etcd;
use crate::fleet::voice::VoiceError;

/// Why a session ended; `Display` is `/status`'s `fleet.last_error`.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    #[error("connect: {0}")]
    Connect(#[source] etcd::Error),
    #[error("read: {0}")]
    Read(#[source] etcd::Error),
    #[error("epoch: {0}")]
    Epoch(#[source] etcd::Error),
    #[error("lease: {0}")]
    Lease(#[source] etcd::Error),
    /// A put under the lease; `what` names the key (`member key`, `health view`, ...).
    #[error("{what}: {source}")]
    Put { what: &'static str, source: etcd::Error },
    #[error("keep-alive: {0}")]
    KeepAlive(#[source] etcd::Error),
    #[error("lease lost")]
    LeaseLost,
    #[error("the lease expired; announcing this member again")]
    LeaseExpired,
    #[error("watch: {0}")]
    Watch(#[source] etcd::Error),
    #[error("watch ended")]
    WatchEnded,
    #[error("watch cancelled ({0}); reading again")]
    WatchCancelled(String),
    #[error("the fleet's epoch changed; reading again")]
    EpochChanged,
    #[error("the control plane went away")]
    ControlGone,
    #[error(transparent)]
    Voice(#[from] VoiceError),
}
