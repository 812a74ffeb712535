//! Connections to backends: one `Pool` per backend (`connect`: TCP, TLS, HTTP/1.1 or
//! h2 by the site's settings; `pool`: idle lists and the shared h2 connection). HTTP/1.1
//! is our own client, run in the request's task (`h1`, `h1_body`, `idle`); HTTP/2 is
//! hyper's connection-level client; `dns`: backend names resolved for the control
//! plane (a connect never resolves). Failures are typed (`SendError`: what the retry rules
//! need, plus the source), and formatted only when someone logs them.

mod connect;
pub mod dns;
mod h1;
mod h1_body;
mod h1_head;
mod h1_upload;
mod idle;
mod pool;
mod response;
pub(crate) mod splice;
mod transport;

use std::fmt;

pub use connect::Connector;
pub(crate) use connect::Sender;
pub(crate) use h1::H1Conn;
pub(crate) use h1_body::trailer_section;
pub use pool::{Failure, Pool};
pub use response::UpstreamBody;

use crate::body::BoxError;

/// Why a try failed, in the terms the retry rules use.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made, or the request was not sent: nothing of it reached
    /// the backend.
    Connect(BoxError),
    /// No response headers within the per-try response timeout.
    Timeout,
    /// The connection broke after the request may have been (partly) sent.
    Failed(BoxError),
    /// The client's request body failed (reset, malformed): not the backend's fault.
    ClientBody(BoxError),
}

impl SendError {
    /// A short label for metrics and the retry counter.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Connect(_) => "connect",
            SendError::Timeout => "timeout",
            SendError::Failed(_) => "reset",
            SendError::ClientBody(_) => "client",
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(e) | SendError::Failed(e) | SendError::ClientBody(e) => {
                f.write_str(&error_chain(e.as_ref()))
            }
            SendError::Timeout => f.write_str("timed out waiting for response headers"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) | SendError::Failed(e) | SendError::ClientBody(e) => Some(e.as_ref()),
            SendError::Timeout => None,
        }
    }
}

/// "outer: inner: root cause" in one line, for logs and health reasons.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
