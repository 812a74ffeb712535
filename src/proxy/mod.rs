//! The data path: listeners accept (`listener`), each connection is served
//! (`connection`): HTTP/1.1 by the proxy's own code (`h1_conn`, one exchange at a time
//! in `h1_exchange`, on `crate::proxy::h1`'s wire format), HTTP/2 by hyper with its timeouts
//! (`activity`); each request is forwarded with retries (`forward`) under the header
//! rules (`headers`), and upgrades become byte tunnels (`upgrade`).

mod activity;
mod admission;
mod client_ip;
mod connection;
mod forward;
pub mod h1;
mod h1_conn;
mod h1_connection;
mod h1_exchange;
pub mod headers;
mod listener;
mod response_body;
mod upgrade;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::retry::RetryBudget;
use crate::routing::Routing;
use crate::shutdown::Tracker;
use crate::telemetry::{ClientAnswers, ClientMetrics};

pub use activity::InFlight;
pub use listener::{bind_listener, spawn_listener, ListenerHandle};
pub use response_body::{PendingLog, ResponseBody};

/// State shared by every connection of every listener.
pub struct Proxy {
    /// The current routing snapshot; loaded once per request.
    pub routing: Arc<ArcSwap<Routing>>,
    /// Live retry accounting; outlives snapshots.
    pub budget: RetryBudget,
    /// Counts connections and tunnels for the shutdown drain.
    pub tracker: Tracker,
    /// Where finished requests are logged (when `[access_log]` is configured).
    pub access_log: AccessLog,
    pub client_metrics: ClientMetrics,
    /// One permit per open client connection (`[limits].max_connections`); a listener
    /// waits for a permit before it accepts, so a flood waits in the kernel's backlog.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Client answers counted for a running drill's abort watch (the control plane's).
    pub answers: Arc<ClientAnswers>,
}

impl Proxy {
    pub fn new(routing: Arc<ArcSwap<Routing>>, answers: Arc<ClientAnswers>, tracker: Tracker) -> Arc<Proxy> {
        let current = routing.load();
        let backends = current.sites.iter().map(|s| s.backends.len()).sum();
        let admin = current.config.admin.as_ref().map_or(0, |a| a.max_connections);
        let max_connections =
            crate::descriptors::max_client_connections(current.config.limits.max_connections, backends, admin);
        Arc::new(Proxy {
            routing,
            budget: RetryBudget::new(),
            tracker,
            access_log: AccessLog::default(),
            client_metrics: ClientMetrics::new(),
            connections: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            answers,
        })
    }
}
