//! The data path: listeners accept (`listener`), each connection is served with its
//! timeouts (`connection`), each request is forwarded with retries (`forward`) under the
//! header rules (`headers`), and upgrades become byte tunnels (`upgrade`).

mod connection;
mod forward;
pub mod headers;
mod listener;
mod upgrade;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::retry::RetryBudget;
use crate::routing::Routing;
use crate::shutdown::Tracker;

pub use listener::{bind_listener, spawn_listener, ListenerHandle};

/// What the proxy answers with: the backend's body streamed through, or a short error.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// State shared by every connection of every listener.
pub struct Proxy {
    /// The current routing snapshot; loaded once per request.
    pub routing: Arc<ArcSwap<Routing>>,
    /// Live retry accounting; outlives snapshots.
    pub budget: RetryBudget,
    /// Counts connections and tunnels for the shutdown drain.
    pub tracker: Tracker,
}

impl Proxy {
    pub fn new(routing: Arc<ArcSwap<Routing>>, tracker: Tracker) -> Arc<Proxy> {
        Arc::new(Proxy {
            routing,
            budget: RetryBudget::new(),
            tracker,
        })
    }
}
