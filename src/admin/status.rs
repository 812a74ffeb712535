//! The `/status` document: generation, routing mode, and each site with its configured,
//! overridden and effective weight, health and backends (the contract in INTERFACE.md).

use serde::Serialize;

use crate::routing::{Mode, Routing};

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
    pub last_reload: Option<LastReload>,
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
    pub backends: Vec<BackendStatus>,
}

#[derive(Serialize)]
pub struct BackendStatus {
    pub addr: String,
    pub healthy: bool,
}

pub fn status(routing: &Routing, last_reload: Option<LastReload>) -> Status {
    let lowest = routing.sites.iter().map(|s| s.priority).min().unwrap_or(0);
    let (mode, active_priority) = match routing.mode {
        Mode::Normal { priority } if priority == lowest => ("normal", Some(priority)),
        Mode::Normal { priority } => ("failover", Some(priority)),
        Mode::Panic { priority } => ("panic", Some(priority)),
        Mode::NoRoute => ("no_route", None),
    };
    Status {
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
                backends: site
                    .backends
                    .iter()
                    .map(|b| BackendStatus {
                        addr: b.authority.to_string(),
                        healthy: b.is_healthy(),
                    })
                    .collect(),
            })
            .collect(),
        last_reload,
    }
}
