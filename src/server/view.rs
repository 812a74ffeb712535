//! What a program that embeds a `Server` (the tests, the demo) may read of its live
//! state, as plain values: the sites as routing sees them now, the events, the drills
//! running and the holds. The same facts `/status` and `/events` show; the routing
//! snapshot and the control plane behind them stay inside the crate.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::events::Event;

/// One site as the proxy routes to it at this moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteState {
    pub name: String,
    /// Serving: up, not drilled.
    pub healthy: bool,
    /// Taken out by a drill (then `healthy` is false).
    pub drilled: bool,
    /// Recovered, but held by the failback policy.
    pub held: bool,
    /// The weight from the config file.
    pub config_weight: u32,
    /// The run-time override (admin API, fleet), if any.
    pub weight_override: Option<u32>,
    /// What the site gets in the default split now (health, capacity, slow start).
    pub effective_weight: u32,
    /// Its backends' addresses (resolved, for DNS-named backends).
    pub backends: Vec<String>,
}

impl SiteState {
    /// The weight in force: the override, else the config's.
    pub fn weight(&self) -> u32 {
        self.weight_override.unwrap_or(self.config_weight)
    }
}

/// A drill running on one site.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillState {
    pub site: String,
    /// The `drill_started` event's id.
    pub id: u64,
    /// How long it was asked to run (a drill "for ever" is cut to 24 hours).
    pub duration: Duration,
}

impl Server {
    /// Every site in config order, as routed now.
    pub fn sites(&self) -> Vec<SiteState> {
        let routing = self.control.current();
        routing
            .sites
            .iter()
            .map(|s| SiteState {
                name: s.name.clone(),
                healthy: s.healthy,
                drilled: s.drilled,
                held: s.held,
                config_weight: s.config_weight,
                weight_override: s.weight_override,
                effective_weight: s.effective_weight,
                backends: s.backends.iter().map(|b| b.addr.clone()).collect(),
            })
            .collect()
    }

    /// One site by name.
    pub fn site(&self, name: &str) -> Option<SiteState> {
        self.sites().into_iter().find(|s| s.name == name)
    }

    /// The routing generation: 1 at start, one more per applied reload.
    pub fn generation(&self) -> u64 {
        self.control.current().generation
    }

    /// The events still in the ring (`/events`), oldest first.
    pub fn events(&self) -> Vec<Arc<Event>> {
        self.control.events.since(0)
    }

    /// The drills running now.
    pub fn drills(&self) -> Vec<DrillState> {
        self.control
            .drills()
            .into_iter()
            .map(|(site, drill)| DrillState {
                site,
                id: drill.id,
                duration: drill.duration,
            })
            .collect()
    }

    /// The sites held by the failback policy now.
    pub fn held_sites(&self) -> Vec<String> {
        let mut held: Vec<String> = self.control.holds().into_keys().collect();
        held.sort();
        held
    }

    /// Stops the health probers: the server is going away (a test's teardown).
    pub fn stop_probing(&self) {
        self.control.stop();
    }
}
