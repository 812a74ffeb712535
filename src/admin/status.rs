//! The `/status` document: generation, routing mode, and each site with its configured,
//! overridden and effective weight, health and backends (the contract in INTERFACE.md),
//! and the history file's state.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::events::recorder::HistoryStatus;
use crate::routing::{Mode, Routing, SiteRoute};

/// The outcome of the last reload attempt, for `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct LastReload {
    pub ok: bool,
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[derive(Serialize)]
pub struct Status {
    pub generation: u64,
    /// "normal", "failover" (a standby tier serves), "panic" or "no_route".
    pub mode: &'static str,
    pub active_priority: Option<u32>,
    pub sites: Vec<SiteStatus>,
    /// Each `[[route]]` with the weights in force on it (drains applied).
    pub routes: Vec<RouteStatus>,
    /// With `[fleet]`: `{"connected", "revision", "members", ...}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<serde_json::Value>,
    pub last_reload: Option<LastReload>,
    /// With `[events] history`: `{"path", "ok", "error", "pending", "lost"}`; `ok: false`
    /// while the file cannot be written (events wait in a bounded queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryStatus>,
}

#[derive(Serialize)]
pub struct SiteStatus {
    pub name: String,
    /// The weight in force: the admin override if set, else the file's.
    pub weight: u32,
    pub config_weight: u32,
    pub weight_override: Option<u32>,
    pub effective_weight: u32,
    pub priority: u32,
    pub healthy: bool,
    /// Healthy backends / all backends.
    pub healthy_fraction: f64,
    /// Taken out by a drill right now.
    pub drilled: bool,
    /// The failback policy's hold: `{"held", "until" (RFC 3339, null: manual), "flaps"}`.
    pub failback: serde_json::Value,
    /// `{"in_flight", "max_requests", "queued", "queue", "rejected": {"full", "timeout"}}`.
    pub load: serde_json::Value,
    pub backends: Vec<BackendStatus>,
}

#[derive(Serialize)]
pub struct RouteStatus {
    pub name: String,
    /// The route's weight per site, drains applied.
    pub weights: BTreeMap<String, u32>,
    /// What each site gets on this route now, after health and slow start.
    pub effective_weights: BTreeMap<String, u32>,
    pub mode: &'static str,
}

#[derive(Serialize)]
pub struct BackendStatus {
    /// The address connected to (for a backend behind a name, one it resolved to).
    pub addr: String,
    /// The name it was given by (`"app.internal:8080"`), when not an address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub healthy: bool,
    /// Requests in flight there now.
    pub in_flight: u32,
}

/// "normal", "failover", "panic" or "no_route", and the tier in use.
fn mode_name(mode: Mode, weights: &[u32], routing: &Routing) -> (&'static str, Option<u32>) {
    let lowest = (0..routing.sites.len())
        .filter(|&i| weights[i] > 0)
        .map(|i| routing.sites[i].priority)
        .min()
        .unwrap_or(0);
    match mode {
        Mode::Normal { priority } if priority == lowest => ("normal", Some(priority)),
        Mode::Normal { priority } => ("failover", Some(priority)),
        Mode::Panic { priority } => ("panic", Some(priority)),
        Mode::NoRoute => ("no_route", None),
    }
}

fn by_site(routing: &Routing, values: &[u32]) -> BTreeMap<String, u32> {
    routing
        .sites
        .iter()
        .zip(values)
        .map(|(s, &v)| (s.name.clone(), v))
        .collect()
}

/// A site's requests in flight and waiting, against its limits.
fn load(site: &SiteRoute) -> serde_json::Value {
    let in_flight: u32 = site.backends.iter().map(|b| b.in_flight()).sum();
    let (queued, (full, timeout)) = site
        .backends
        .first()
        .map_or((0, (0, 0)), |b| (b.queue.waiting(), b.queue.rejected()));
    serde_json::json!({
        "in_flight": in_flight,
        "max_requests": site.admission.max_requests,
        "queued": queued,
        "queue": site.admission.queue,
        "rejected": { "full": full, "timeout": timeout },
    })
}

/// Sets the gauges that are read off live counters (requests in flight, queue
/// lengths) just before `/metrics` is rendered: the request path touches no gauge.
pub fn sample_gauges(routing: &Routing) {
    for site in &routing.sites {
        for backend in &site.backends {
            backend.metrics.in_flight.set(f64::from(backend.in_flight()));
        }
        let queued = site.backends.first().map_or(0, |b| b.queue.waiting());
        site.metrics.queue_length.set(f64::from(queued));
    }
}

pub fn status(routing: &Routing, last_reload: Option<LastReload>) -> Status {
    let all: Vec<u32> = routing.sites.iter().map(|s| s.config_weight.max(1)).collect();
    let (mode, active_priority) = mode_name(routing.mode, &all, routing);
    let routes = routing
        .config
        .routes
        .iter()
        .zip(&routing.routes)
        .map(|(route, split)| RouteStatus {
            name: route.name.clone(),
            weights: by_site(routing, &split.weights),
            effective_weights: by_site(routing, &split.effective),
            mode: mode_name(split.mode, &split.weights, routing).0,
        })
        .collect();
    Status {
        routes,
        fleet: None,
        history: None,
        generation: routing.generation,
        mode,
        active_priority,
        sites: routing
            .sites
            .iter()
            .map(|site| SiteStatus {
                name: site.name.clone(),
                weight: site.weight(),
                config_weight: site.config_weight,
                weight_override: site.weight_override,
                effective_weight: site.effective_weight,
                priority: site.priority,
                healthy: site.healthy,
                healthy_fraction: site.healthy_fraction,
                drilled: site.drilled,
                failback: serde_json::json!({
                    "held": site.held,
                    "until": site.held_until.map(crate::clock::rfc3339),
                    "flaps": site.flaps,
                }),
                load: load(site),
                backends: site
                    .backends
                    .iter()
                    .map(|b| BackendStatus {
                        addr: b.addr.clone(),
                        name: b.name.clone(),
                        healthy: b.is_healthy(),
                        in_flight: b.in_flight(),
                    })
                    .collect(),
            })
            .collect(),
        last_reload,
    }
}
