//! The routing snapshot: an immutable picture of sites, backends and the precomputed
//! splits (the default one and one per route), built from a checked config plus live
//! health, swapped atomically. Requests only read it; choosing a backend is two atomic
//! adds and two indexings, or, with affinity, one hash and a score per site.

pub mod affinity;
mod plan;
mod route_table;
mod split;
mod swrr;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::health::Backend;
use crate::telemetry::SiteMetrics;

pub use plan::Plan;
pub use split::Split;
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
    /// The default split's mode (requests that match no route).
    pub mode: Mode,
    /// Requests that match no route.
    pub default: Split,
    /// One split per `[[route]]`, in config order.
    pub routes: Vec<Split>,
    route_table: route_table::RouteTable,
}

pub struct SiteRoute {
    pub name: String,
    /// Weight from the config file.
    pub config_weight: u32,
    /// Run-time override from the admin API, if any.
    pub weight_override: Option<u32>,
    pub priority: u32,
    pub healthy: bool,
    /// Healthy backends / all backends.
    pub healthy_fraction: f64,
    /// `min(1, overprovision x healthy_fraction)`: how much of its weight it can carry.
    pub capacity: f64,
    /// Slow start: 0..1 while ramping after an outage, 1 at full weight.
    pub ramp: f64,
    /// What the site gets in the default split now, in units of its weight.
    pub effective_weight: u32,
    /// True while slow start is still ramping this site up.
    pub ramping: bool,
    /// Taken out by a drill (then `healthy` is false).
    pub drilled: bool,
    /// Recovered, but held by the failback policy (no traffic but as a last resort).
    pub held: bool,
    /// Until when (Unix ms) it is held; `None` while held: until released by hand.
    pub held_until: Option<u64>,
    pub flaps: u32,
    /// `max_requests`, `queue`, `queue_timeout`.
    pub admission: crate::config::Admission,
    /// The backends' runtime objects (health, pool, metrics), owned by the registry.
    pub backends: Vec<Arc<Backend>>,
    /// Indices of the backends that take requests (the healthy ones; all in panic mode).
    usable: Vec<u32>,
    next: AtomicUsize,
    pub metrics: SiteMetrics,
    /// Hash of the name, for rendezvous: the same across reloads, processes and builds.
    seed: u64,
    /// Hash of each backend's address, aligned with `backends`.
    backend_seeds: Vec<u64>,
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

/// Run-time decisions that shape a snapshot beside the config and health.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    /// Weight overrides from the admin API, by site.
    pub weights: HashMap<String, u32>,
    /// Sites taken out by a drill: treated exactly as if all their backends were down.
    pub drilled: HashSet<String>,
    /// Sites whose drill ended at this process-clock ms: slow start counts from there.
    pub ramp_from: HashMap<String, u64>,
    /// Sites that recovered from a failure and are held (failback policy): healthy,
    /// but given traffic only when no other site of any tier can serve. The value is
    /// until when (Unix ms), `None` until an operator releases it.
    pub held: HashMap<String, Option<u64>>,
    /// How many times each site flapped in a row (failed again soon after its traffic
    /// returned); its next hold grows with it.
    pub flaps: HashMap<String, u32>,
    /// With `[fleet] failover = "quorum"`: the sites the fleet sees down (a majority of
    /// its live members); the tier in use follows them. `None`: each member alone.
    pub fleet_down: Option<HashSet<String>>,
}

/// Everything a snapshot is built from.
pub struct Inputs<'a> {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Live backends, aligned with `config.sites[i]` (a name: one per address).
    pub backends: Vec<Vec<Arc<Backend>>>,
    pub decisions: &'a Decisions,
    pub now_ms: u64,
}

impl Routing {
    pub fn build(inputs: Inputs<'_>) -> Routing {
        let config = inputs.config;
        let mut sites: Vec<SiteRoute> = config
            .sites
            .iter()
            .zip(inputs.backends)
            .map(|(site, backends)| {
                let mut usable: Vec<u32> = (0..backends.len() as u32)
                    .filter(|&i| backends[i as usize].is_healthy())
                    .collect();
                let decisions = inputs.decisions;
                let weight_override = decisions.weights.get(&site.name).copied();
                let weight = weight_override.unwrap_or(site.weight);
                let ramp_from = decisions.ramp_from.get(&site.name).copied().unwrap_or(0);
                let ramp = slow_start_factor(&backends, &usable, site.health.slow_start, (ramp_from, inputs.now_ms));
                let drilled = decisions.drilled.contains(&site.name);
                let held = decisions.held.contains_key(&site.name) && !usable.is_empty() && !drilled;
                let healthy = !usable.is_empty() && !drilled && !held;
                let healthy_fraction = usable.len() as f64 / backends.len().max(1) as f64;
                if !healthy {
                    // Panic mode tries them all; a split never sends here otherwise.
                    usable = (0..backends.len() as u32).collect();
                }
                SiteRoute {
                    name: site.name.clone(),
                    config_weight: site.weight,
                    weight_override,
                    priority: site.priority,
                    healthy,
                    healthy_fraction,
                    capacity: (site.overprovision * healthy_fraction).min(1.0),
                    ramp,
                    effective_weight: 0,
                    ramping: healthy && weight > 0 && ramp < 1.0,
                    drilled,
                    held,
                    held_until: decisions.held.get(&site.name).copied().flatten(),
                    flaps: decisions.flaps.get(&site.name).copied().unwrap_or(0),
                    admission: site.admission,
                    backend_seeds: backends.iter().map(|b| affinity::hash(b.addr.as_bytes())).collect(),
                    backends,
                    usable,
                    next: AtomicUsize::new(0),
                    metrics: SiteMetrics::new(&site.name),
                    seed: affinity::hash(site.name.as_bytes()),
                }
            })
            .collect();
        // The last resort before panic mode: with no other site able to serve, held
        // sites (healthy, waiting for failback) serve.
        if !sites.iter().any(|s| s.healthy && s.weight() > 0) {
            for site in sites.iter_mut().filter(|s| s.held) {
                site.healthy = true;
            }
        }
        let fleet_down = inputs.decisions.fleet_down.as_ref();
        let default = Split::build(sites.iter().map(SiteRoute::weight).collect(), &sites, fleet_down);
        for (site, &effective) in sites.iter_mut().zip(&default.effective) {
            site.effective_weight = effective;
        }
        // A drain (override 0) takes a site out of every route; other overrides change
        // the default split only.
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let weights = sites
                    .iter()
                    .enumerate()
                    .map(|(i, site)| match (site.weight_override, &route.weights) {
                        (Some(0), _) => 0,
                        (_, Some(weights)) => weights[i],
                        (_, None) => site.weight(),
                    })
                    .collect();
                Split::build(weights, &sites, fleet_down)
            })
            .collect();
        Routing {
            generation: inputs.generation,
            mode: default.mode,
            route_table: route_table::RouteTable::build(&config.routes),
            config,
            sites,
            default,
            routes,
        }
    }

    /// A first snapshot of `config` with the registry's backends and no overrides: for
    /// benches and tests, which need no control plane (nor names: they stay unresolved).
    pub fn standalone(config: Arc<Config>, registry: &crate::health::HealthRegistry) -> Routing {
        let synced = registry.sync(&config, &Default::default());
        Routing::build(Inputs {
            generation: 1,
            config,
            backends: synced.backends,
            decisions: &Decisions::default(),
            now_ms: crate::clock::now_ms(),
        })
    }

    /// The live backends of this snapshot, to rebuild it after a health or weight change.
    pub fn backends(&self) -> Vec<Vec<Arc<Backend>>> {
        self.sites.iter().map(|s| s.backends.clone()).collect()
    }

    /// The tier the default split uses (`None`: nothing to route to).
    pub fn mode_priority(&self) -> Option<u32> {
        match self.mode {
            Mode::Normal { priority } | Mode::Panic { priority } => Some(priority),
            Mode::NoRoute => None,
        }
    }

    pub fn is_ramping(&self) -> bool {
        self.sites.iter().any(|s| s.ramping)
    }

    pub fn backend(&self, pick: Pick) -> &Arc<Backend> {
        &self.sites[pick.site].backends[pick.backend]
    }

    /// The split a plan names: the default one or a route's.
    pub fn split(&self, plan: &Plan) -> &Split {
        plan.route().map_or(&self.default, |r| &self.routes[r])
    }

    /// Chooses a backend for one try of the default split (no route, no key).
    pub fn pick(&self, tried: &[Pick]) -> Option<Pick> {
        self.pick_for(&Plan::default(), tried)
    }

    /// Chooses a backend for one try, never one in `tried`. A first try with an
    /// affinity key goes where the key hashes; without one it follows the weighted
    /// table exactly. Retries walk on from there to other backends and sites of the
    /// split, then to any healthy backend of another tier, then to any backend at all.
    pub fn pick_for(&self, plan: &Plan, tried: &[Pick]) -> Option<Pick> {
        let split = self.split(plan);
        if split.is_empty() {
            return None;
        }
        if tried.is_empty() {
            if let Some(pick) = plan.key().and_then(|key| split.by_key(key, &self.sites)) {
                return Some(pick);
            }
            let (site, _) = split.next_site();
            return self.sites[site].next_usable(site, tried);
        }
        let (_, start) = split.next_site();
        (0..split.period())
            .find_map(|step| {
                let site = split.site_after(start, step);
                self.sites[site].next_usable(site, tried)
            })
            .or_else(|| self.any_backend(split, tried, true))
            .or_else(|| self.any_backend(split, tried, false))
    }

    fn any_backend(&self, split: &Split, tried: &[Pick], healthy_only: bool) -> Option<Pick> {
        let mut order: Vec<usize> = (0..self.sites.len())
            .filter(|&s| split.weights[s] > 0 && split.confined.is_none_or(|tier| self.sites[s].priority == tier))
            .collect();
        order.sort_by_key(|&s| self.sites[s].priority);
        order.into_iter().find_map(|site| {
            (0..self.sites[site].backends.len())
                .map(|backend| Pick { site, backend })
                .find(|p| !tried.contains(p) && (!healthy_only || self.backend(*p).is_healthy()))
        })
    }
}

impl SiteRoute {
    /// The backends that take requests, in table order, that are not in `tried`: where
    /// a try goes when the one chosen is full.
    pub fn usable_picks<'a>(&'a self, site: usize, tried: &'a [Pick]) -> impl Iterator<Item = Pick> + 'a {
        self.usable
            .iter()
            .map(move |&b| Pick {
                site,
                backend: b as usize,
            })
            .filter(move |p| !tried.contains(p))
    }

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

    /// The usable backend a key hashes to (rendezvous: a backend that goes away moves
    /// only its own keys).
    fn backend_by_key(&self, site: usize, key: u64) -> Option<Pick> {
        let backend = self
            .usable
            .iter()
            .map(|&b| b as usize)
            .max_by_key(|&b| affinity::mix(key ^ self.backend_seeds[b]))?;
        Some(Pick { site, backend })
    }
}

/// A site recovering from an outage ramps from small to full weight over `window`,
/// measured from when its earliest healthy backend came up, or its drill ended if that
/// is later (`ramp_from`). 1.0 = full weight.
fn slow_start_factor(
    backends: &[Arc<Backend>],
    usable: &[u32],
    window: std::time::Duration,
    (ramp_from, now_ms): (u64, u64),
) -> f64 {
    if window.is_zero() || usable.is_empty() {
        return 1.0;
    }
    let up_since = usable
        .iter()
        .map(|&i| backends[i as usize].up_since_ms())
        .min()
        .unwrap_or(0)
        .max(ramp_from);
    if up_since == 0 {
        return 1.0;
    }
    let elapsed = now_ms.saturating_sub(up_since) as f64;
    (elapsed / window.as_millis() as f64).clamp(0.0, 1.0)
}

#[cfg(test)]
mod spread_tests;
#[cfg(test)]
mod tests;
