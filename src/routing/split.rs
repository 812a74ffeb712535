//! One split of traffic over the sites (the default one, or a route's): which tier is
//! in use, each site's share after health, degradation and slow start, and the
//! precomputed smooth weighted round-robin table that first tries follow.
//!
//! Degraded sites, Envoy's way: a site's capacity is `min(1, overprovision x
//! healthy/total)` of its backends. The tier in use carries the weighted mean capacity
//! of its healthy sites; what it cannot carry spills to the next tier, and so on; with
//! no tier left the tiers in use keep it all. A site that is down altogether gives its
//! share to its healthy peers, as before: the dual-active design sizes each site for
//! its peer's loss, while a standby takes the load a damaged tier can no longer carry.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::affinity;
use super::swrr::sequence;
use super::{Mode, Pick, SiteRoute};

/// Resolution of the round-robin table: shares are rounded to 1/10 000.
const TABLE_SCALE: f64 = 10_000.0;

/// A site just back from an outage starts at this fraction of its weight.
const RAMP_FLOOR: f64 = 0.01;

pub struct Split {
    pub mode: Mode,
    /// The weight each site has in this split before health (0 = never here).
    pub weights: Vec<u32>,
    /// What each site gets now, in units of its weight (the `/status` figure).
    pub effective: Vec<u32>,
    /// Sites with a share of first tries, and that share (the shares sum to 1).
    members: Vec<(usize, f64)>,
    /// SWRR sequence of site indices.
    table: Vec<u32>,
    /// The tier the fleet agreed on (`failover = "quorum"`): no try of this split, a
    /// retry's last resort included, goes to another tier.
    pub confined: Option<u32>,
    next: AtomicUsize,
}

impl Split {
    /// `fleet_down`: with `[fleet] failover = "quorum"`, the sites the fleet sees down;
    /// the tier in use is then the fleet's, not this member's alone.
    pub fn build(weights: Vec<u32>, sites: &[SiteRoute], fleet_down: Option<&HashSet<String>>) -> Split {
        let (mode, agreed) = match fleet_down.and_then(|down| agreed_mode(&weights, sites, down)) {
            Some(mode) => (mode, true),
            None => (choose_mode(&weights, sites), false),
        };
        let members = match mode {
            Mode::Normal { priority } => spill(&weights, sites, priority, agreed),
            Mode::Panic { priority } => {
                let tier: Vec<usize> = (0..sites.len())
                    .filter(|&i| weights[i] > 0 && sites[i].priority == priority)
                    .collect();
                let total: f64 = tier.iter().map(|&i| f64::from(weights[i])).sum();
                tier.iter().map(|&i| (i, f64::from(weights[i]) / total)).collect()
            }
            Mode::NoRoute => Vec::new(),
        };
        let effective = effective_weights(&weights, sites, &members, mode);
        let mut scaled = vec![0u32; sites.len()];
        for &(i, share) in &members {
            scaled[i] = ((share * TABLE_SCALE).round() as u32).max(1);
        }
        Split {
            mode,
            weights,
            effective,
            members,
            table: sequence(&scaled),
            next: AtomicUsize::new(0),
            confined: match mode {
                Mode::Normal { priority } | Mode::Panic { priority } if agreed => Some(priority),
                _ => None,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The next site in the weighted round-robin, and the table position it came from.
    pub fn next_site(&self) -> (usize, usize) {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (self.table[start % self.table.len()] as usize, start)
    }

    /// The site at `step` places after `start` in the table.
    pub fn site_after(&self, start: usize, step: usize) -> usize {
        self.table[(start + step) % self.table.len()] as usize
    }

    pub fn period(&self) -> usize {
        self.table.len()
    }

    /// The site and backend for an affinity key: weighted rendezvous over the sites by
    /// their shares, then plain rendezvous over the site's usable backends.
    pub fn by_key(&self, key: u64, sites: &[SiteRoute]) -> Option<Pick> {
        let mut best: Option<(usize, f64)> = None;
        for &(site, share) in &self.members {
            let score = affinity::score(key, sites[site].seed, share);
            if best.is_none_or(|(_, top)| score > top) {
                best = Some((site, score));
            }
        }
        let site = best?.0;
        sites[site].backend_by_key(site, key)
    }
}

/// The fleet's tier: the lowest with a site that the fleet does not see down (nor a
/// drill takes out). This member serves it from the sites it sees healthy there, and
/// when it sees none, keeps trying them (panic within the tier) rather than send
/// writes to a standby the rest of the fleet is not using. `None` when the fleet sees
/// every tier down: then each member does what it can alone.
fn agreed_mode(weights: &[u32], sites: &[SiteRoute], fleet_down: &HashSet<String>) -> Option<Mode> {
    let priority = (0..sites.len())
        .filter(|&i| weights[i] > 0 && !sites[i].drilled && !fleet_down.contains(&sites[i].name))
        .map(|i| sites[i].priority)
        .min()?;
    let served_here = (0..sites.len()).any(|i| weights[i] > 0 && sites[i].priority == priority && sites[i].healthy);
    Some(if served_here {
        Mode::Normal { priority }
    } else {
        Mode::Panic { priority }
    })
}

fn choose_mode(weights: &[u32], sites: &[SiteRoute]) -> Mode {
    let lowest = |ok: &dyn Fn(usize) -> bool| {
        (0..sites.len())
            .filter(|&i| weights[i] > 0 && ok(i))
            .map(|i| sites[i].priority)
            .min()
    };
    if let Some(priority) = lowest(&|i| sites[i].healthy) {
        Mode::Normal { priority }
    } else if let Some(priority) = lowest(&|_| true) {
        Mode::Panic { priority }
    } else {
        Mode::NoRoute
    }
}

/// Shares of the healthy sites from tier `first` on: each tier takes what its capacity
/// allows of what is left; the rest spills to the next one. A tier the fleet agreed
/// on (`agreed`) keeps it all: spilling to a standby is the fleet's decision too.
fn spill(weights: &[u32], sites: &[SiteRoute], first: u32, agreed: bool) -> Vec<(usize, f64)> {
    let serving = |i: usize| {
        weights[i] > 0 && sites[i].healthy && (sites[i].priority == first || (!agreed && sites[i].priority > first))
    };
    let mut tiers: Vec<u32> = (0..sites.len())
        .filter(|&i| serving(i))
        .map(|i| sites[i].priority)
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    let mut left = 1.0;
    let mut loads: Vec<(u32, f64)> = Vec::new();
    for tier in tiers {
        let in_tier = (0..sites.len()).filter(|&i| serving(i) && sites[i].priority == tier);
        let (weight, capacity) = in_tier.fold((0.0, 0.0), |(w, c), i| {
            let weight = f64::from(weights[i]);
            (w + weight, c + weight * sites[i].capacity)
        });
        let load = f64::min(left, capacity / weight);
        loads.push((tier, load));
        left -= load;
        if left <= 1e-9 {
            break;
        }
    }
    let carried = 1.0 - left;
    let mut members = Vec::new();
    for (tier, load) in loads {
        let in_tier: Vec<usize> = (0..sites.len())
            .filter(|&i| serving(i) && sites[i].priority == tier)
            .collect();
        let raw = |i: usize| f64::from(weights[i]) * sites[i].capacity * sites[i].ramp.max(RAMP_FLOOR);
        let total: f64 = in_tier.iter().map(|&i| raw(i)).sum();
        members.extend(in_tier.iter().map(|&i| (i, load / carried * raw(i) / total)));
    }
    members
}

/// Each member's share expressed in the units of the tier in use's weights, so that
/// nothing degraded or ramping reads exactly as the configured weights (70 and 30).
fn effective_weights(weights: &[u32], sites: &[SiteRoute], members: &[(usize, f64)], mode: Mode) -> Vec<u32> {
    let mut effective = vec![0u32; sites.len()];
    let priority = match mode {
        Mode::Normal { priority } | Mode::Panic { priority } => priority,
        Mode::NoRoute => return effective,
    };
    let ramp = |i: usize| match mode {
        Mode::Panic { .. } => 1.0,
        _ => sites[i].capacity * sites[i].ramp.max(RAMP_FLOOR),
    };
    let in_use = members.iter().filter(|(i, _)| sites[*i].priority == priority);
    let (units, share) = in_use.fold((0.0, 0.0), |(u, s), &(i, share)| {
        (u + f64::from(weights[i]) * ramp(i), s + share)
    });
    if share <= 0.0 {
        return effective;
    }
    for &(i, s) in members {
        effective[i] = ((s * units / share).round() as u32).max(1);
    }
    effective
}
