//! The routing snapshot: an immutable picture of sites, backends and the precomputed
//! selection table, built from a checked config plus live health, swapped atomically.
//! Requests only read it; choosing a backend is two atomic adds and two indexings.

mod swrr;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::health::Backend;
use crate::telemetry::SiteMetrics;

pub use swrr::sequence;

/// How requests are routed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Healthy sites of this priority share the traffic.
    Normal { priority: u32 },
    /// No site is healthy: the lowest tier's backends are tried anyway (Envoy's panic mode).
    Panic { priority: u32 },
    /// Every site is drained (weight 0): nothing to route to.
    NoRoute,
}

pub struct Routing {
    /// Grows by one per applied config (not per health change).
    pub generation: u64,
    pub config: Arc<Config>,
    pub sites: Vec<SiteRoute>,
    pub mode: Mode,
    /// SWRR sequence of site indices for the tier in use.
    table: Vec<u16>,
    next: AtomicUsize,
}

pub struct SiteRoute {
    pub name: String,
    /// Weight from the config file.
    pub config_weight: u32,
    /// Run-time override from the admin API, if any.
    pub weight_override: Option<u32>,
    pub priority: u32,
    pub healthy: bool,
    /// What the site gets now: weight in force scaled by slow start, 0 when down/unused.
    pub effective_weight: u32,
    /// True while slow start is still ramping this site up.
    pub ramping: bool,
    /// The backends' runtime objects (health, pool, metrics), owned by the registry.
    pub backends: Vec<Arc<Backend>>,
    /// Indices of the backends that take requests (the healthy ones; all in panic mode).
    usable: Vec<u16>,
    next: AtomicUsize,
    pub metrics: SiteMetrics,
}

/// A chosen backend: its site index and position, so retries can avoid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub site: usize,
    pub backend: usize,
}

impl SiteRoute {
    /// The weight in force: the override if set, else the file's.
    pub fn weight(&self) -> u32 {
        self.weight_override.unwrap_or(self.config_weight)
    }
}

/// Everything a snapshot is built from.
pub struct Inputs<'a> {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Live backends, aligned with `config.sites[i].backends[j]`.
    pub backends: Vec<Vec<Arc<Backend>>>,
    pub overrides: &'a HashMap<String, u32>,
    pub now_ms: u64,
}

impl Routing {
    pub fn build(inputs: Inputs<'_>) -> Routing {
        let mut sites: Vec<SiteRoute> = inputs
            .config
            .sites
            .iter()
            .zip(inputs.backends)
            .map(|(site, backends)| {
                let usable: Vec<u16> = (0..backends.len() as u16)
                    .filter(|&i| backends[i as usize].is_healthy())
                    .collect();
                let weight_override = inputs.overrides.get(&site.name).copied();
                let weight = weight_override.unwrap_or(site.weight);
                let factor = slow_start_factor(&backends, &usable, site.health.slow_start, inputs.now_ms);
                let healthy = !usable.is_empty();
                SiteRoute {
                    name: site.name.clone(),
                    config_weight: site.weight,
                    weight_override,
                    priority: site.priority,
                    healthy,
                    effective_weight: if healthy && weight > 0 {
                        ((f64::from(weight) * factor).round() as u32).max(1)
                    } else {
                        0
                    },
                    ramping: healthy && weight > 0 && factor < 1.0,
                    backends,
                    usable,
                    next: AtomicUsize::new(0),
                    metrics: SiteMetrics::new(&site.name),
                }
            })
            .collect();
        let mode = choose_mode(&sites);
        let table = match mode {
            Mode::Normal { priority } => {
                for site in sites.iter_mut().filter(|s| s.priority != priority) {
                    site.effective_weight = 0;
                }
                sequence(&sites.iter().map(|s| s.effective_weight).collect::<Vec<_>>())
            }
            Mode::Panic { priority } => {
                for site in sites.iter_mut() {
                    site.usable = (0..site.backends.len() as u16).collect();
                    site.effective_weight = if site.priority == priority { site.weight() } else { 0 };
                }
                sequence(&sites.iter().map(|s| s.effective_weight).collect::<Vec<_>>())
            }
            Mode::NoRoute => Vec::new(),
        };
        Routing {
            generation: inputs.generation,
            config: inputs.config,
            sites,
            mode,
            table,
            next: AtomicUsize::new(0),
        }
    }

    /// A first snapshot of `config` with the registry's backends and no overrides: for
    /// benches and tests, which need no control plane.
    pub fn standalone(config: Arc<Config>, registry: &crate::health::HealthRegistry) -> Routing {
        let synced = registry.sync(&config);
        Routing::build(Inputs {
            generation: 1,
            config,
            backends: synced.backends,
            overrides: &HashMap::new(),
            now_ms: crate::clock::now_ms(),
        })
    }

    /// The live backends of this snapshot, to rebuild it after a health or weight change.
    pub fn backends(&self) -> Vec<Vec<Arc<Backend>>> {
        self.sites.iter().map(|s| s.backends.clone()).collect()
    }

    pub fn is_ramping(&self) -> bool {
        self.sites.iter().any(|s| s.ramping)
    }

    pub fn backend(&self, pick: Pick) -> &Arc<Backend> {
        &self.sites[pick.site].backends[pick.backend]
    }

    /// Chooses a backend for one try, never one in `tried`. The first try follows the
    /// weighted table exactly; retries walk on from there to other backends and sites,
    /// then to any healthy backend of another tier, then to any backend at all.
    pub fn pick(&self, tried: &[Pick]) -> Option<Pick> {
        if self.table.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if tried.is_empty() {
            let site = self.table[start % self.table.len()] as usize;
            return self.sites[site].next_usable(site, tried);
        }
        (0..self.table.len())
            .find_map(|step| {
                let site = self.table[(start + step) % self.table.len()] as usize;
                self.sites[site].next_usable(site, tried)
            })
            .or_else(|| self.any_backend(tried, true))
            .or_else(|| self.any_backend(tried, false))
    }

    fn any_backend(&self, tried: &[Pick], healthy_only: bool) -> Option<Pick> {
        let mut order: Vec<usize> = (0..self.sites.len()).filter(|&s| self.sites[s].weight() > 0).collect();
        order.sort_by_key(|&s| self.sites[s].priority);
        order.into_iter().find_map(|site| {
            (0..self.sites[site].backends.len())
                .map(|backend| Pick { site, backend })
                .find(|p| !tried.contains(p) && (!healthy_only || self.backend(*p).is_healthy()))
        })
    }
}

impl SiteRoute {
    fn next_usable(&self, site: usize, tried: &[Pick]) -> Option<Pick> {
        let n = self.usable.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| Pick {
                site,
                backend: self.usable[(start + k) % n] as usize,
            })
            .find(|p| !tried.contains(p))
    }
}

/// A site recovering from an outage ramps from small to full weight over `window`,
/// measured from when its earliest healthy backend came up. 1.0 = full weight.
fn slow_start_factor(backends: &[Arc<Backend>], usable: &[u16], window: std::time::Duration, now_ms: u64) -> f64 {
    if window.is_zero() || usable.is_empty() {
        return 1.0;
    }
    let up_since = usable
        .iter()
        .map(|&i| backends[i as usize].up_since_ms())
        .min()
        .unwrap_or(0);
    if up_since == 0 {
        return 1.0;
    }
    let elapsed = now_ms.saturating_sub(up_since) as f64;
    (elapsed / window.as_millis() as f64).clamp(0.0, 1.0)
}

fn choose_mode(sites: &[SiteRoute]) -> Mode {
    let lowest = |ok: &dyn Fn(&SiteRoute) -> bool| sites.iter().filter(|s| ok(s)).map(|s| s.priority).min();
    if let Some(priority) = lowest(&|s| s.healthy && s.weight() > 0) {
        Mode::Normal { priority }
    } else if let Some(priority) = lowest(&|s| s.weight() > 0) {
        Mode::Panic { priority }
    } else {
        Mode::NoRoute
    }
}

#[cfg(test)]
mod tests;
