//! # splitgate
//! A weighted-traffic L7 proxy for active-active and disaster-recovery deployments.
//!
//! # Layout
//! - `config`: TOML -> plain data -> checked model, every problem reported with its key;
//!   TLS files become ready rustls configs there (`config::tls`).
//! - `routing`: the immutable snapshot (sites, backends, SWRR table) read per request.
//! - `health`: one runtime object per backend (address, connection pool, metrics, live
//!   health), kept across reloads by the registry; the active prober; passive reports.
//! - `control`: the single writer of the snapshot: config applies, weight overrides,
//!   health changes and slow-start ticks all publish through it.
//!   Drills too: their abort watch and the drill programs (cron) run there; and the
//!   task that resolves backend names every `[dns] refresh`.
//! - `upstream` + `body`: per-backend connection pools over hyper's connection-level
//!   client (plain or TLS, HTTP/1.1 or h2, counted, with a connect deadline, quick ACKs
//!   for Nagle backends), typed failures, replayable request bodies; `upstream::dns`
//!   resolves backend names for the control plane (a connect never resolves).
//! - `clock`: the process clock (ms since start) that stamps all live state.
//! - `retry`: which failures may be retried, and the retry budget.
//! - `proxy`: listeners, TLS termination, per-connection serving: HTTP/1.1 by its own
//!   code (`h1`: the strict head parser, the body reader, the response writer, buffers
//!   lent per worker; `h1_conn`: the connection's life), HTTP/2 through hyper with its
//!   timeouts (`activity`); forwarding, header rules, upgrades, the response body.
//! - `admin`: `/status`, `/metrics`, the status page and its rate history
//!   (`/status/rates`), weight overrides, `/reload`;
//!   it reaches the server only through the narrow `admin::Operator` handle.
//! - `telemetry` + `access_log`: metric handles, operational logs and their rate
//!   limits, the access log.
//! - `state`: the state file (decisions, drills, backends' health, the fleet's part),
//!   written after every change and read at start.
//! - `lifecycle`: readiness (`/ready`), sockets inherited (systemd socket activation,
//!   or the process being replaced) and handed to a new binary on SIGUSR2.
//! - `server`: starts and stops all of the above; `signals` (SIGHUP, SIGUSR1,
//!   SIGTERM) and `shutdown` (the drain) drive it.
//! - `workers`: thread per core (one current-thread runtime per worker, each with its
//!   own `SO_REUSEPORT` accept loops); the control plane stays on the main thread.
//! - `demo`: built-in demo sites for `splitgate demo`, their kill/revive control port
//!   and background traffic.
//! - `descriptors`: the open-file limit's share for client connections; a local
//!   EMFILE is never held against a backend.
//! - `events`: failover events measured off the request path (a ring for `/events`,
//!   the notifiers, the SQLite history and its writer).
//! - `fleet`: decisions shared through etcd (its own small v3 client, `fleet::etcd`),
//!   each member's view of health and the quorum, the leader that speaks for the fleet.
//! - `report`: the DR report (`splitgate report`) replayed from the history.
//! - `rehearsal`: `splitgate drill`, a drill run from the command line and its report.
//! - `fields`: which framing and connection fields a head carries, noted by both
//!   HTTP/1.1 parsers as they read it (an absent one costs no look-up).
//! - `preflight`: what `splitgate check` finds beyond the config's own problems (the
//!   state file's directory, the history, backend names that do not resolve).
//!
//! Visibility: the library's surface is what the binary uses (`server::Server` and its
//! read-only views `SiteState`/`DrillState`, `config`, `events` and the history,
//! `report`, `rehearsal`, `preflight`, `demo`, `lifecycle`, `signals`, `telemetry`,
//! `workers`, `clock`). Everything else is `pub(crate)`: tests reach a running proxy
//! through `Server` and its admin API; the benches and the fuzz targets through the
//! `internals` re-exports, which are not a stable API.

#![forbid(unsafe_code)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod body;
pub mod clock;
pub mod config;
pub(crate) mod control;
pub mod demo;
pub(crate) mod descriptors;
pub mod events;
pub(crate) mod fields;
pub(crate) mod fleet;
pub(crate) mod health;
pub mod lifecycle;
pub mod preflight;
#[cfg(test)]
mod properties;
pub(crate) mod proxy;
pub mod rehearsal;
pub mod report;
pub(crate) mod retry;
pub(crate) mod routing;
pub mod server;
pub(crate) mod shutdown;
pub mod signals;
pub(crate) mod state;
pub mod telemetry;
pub(crate) mod upstream;
pub mod workers;

/// For the benches and the fuzz targets only: the pieces of the request path they drive
/// directly (the head parser and decoder, the header rules, the weighted table and the
/// router). Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::health::HealthRegistry;
    pub use crate::proxy::h1::{parse, Decoder, Framing, Limits, Parsed};
    pub use crate::proxy::headers::{prepare_request, refusal, upgrade_request, ClientInfo};
    pub use crate::routing::{affinity, sequence, Routing};
}
