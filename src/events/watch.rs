//! Turns snapshot changes into events: the control plane hands every old and new
//! snapshot here (under its publishing lock, so one at a time), and a site that
//! stopped or started serving, or a tier change, becomes an event with what was
//! measured. Drills are announced by the drill code itself and skipped here.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Events, Kind, Measurements, Outage, Pending};
use crate::clock::now_ms;
use crate::clock::{rfc3339, unix_ms, unix_of};
use crate::routing::{Mode, Routing, SiteRoute};

#[derive(Default)]
pub struct Observer {
    sites: HashMap<String, SiteWatch>,
    /// How long a site's traffic was held after it recovered, for its next `site_up`.
    held: HashMap<String, u64>,
}

#[derive(Default)]
struct SiteWatch {
    /// Process-clock ms when the site was marked down (or its drill began).
    down_at: Option<u64>,
    /// A `site_up`/`drill_ended` event waiting for slow start to end: (id, up at).
    ramping: Option<(u64, u64)>,
}

impl Observer {
    pub fn observe(&mut self, old: &Routing, new: &Routing, events: &Events) {
        let now = now_ms();
        self.sites.retain(|name, _| new.sites.iter().any(|s| &s.name == name));
        for site in &new.sites {
            let watch = self.sites.entry(site.name.clone()).or_default();
            if let Some((id, up_at)) = watch.ramping {
                if site.healthy && !site.ramping {
                    let full_weight = Measurements {
                        full_weight_ms: Some(Some(now.saturating_sub(up_at))),
                        ..Measurements::default()
                    };
                    events.amend(id, full_weight);
                    watch.ramping = None;
                }
            }
            let Some(before) = old.sites.iter().find(|s| s.name == site.name) else {
                continue;
            };
            if before.drilled || site.drilled {
                continue;
            }
            if before.healthy && !site.healthy {
                events.observe(site_down(site, now));
                watch.down_at = Some(now);
                watch.ramping = None;
            } else if !before.healthy && site.healthy {
                let mut up = site_up(site, watch.down_at.take(), now);
                if let Some(held) = self.held.remove(&site.name) {
                    let held = Measurements {
                        held_ms: Some(held),
                        ..Measurements::default()
                    };
                    held.write(&mut up.detail);
                }
                let id = events.observe(up);
                watch.ramping = site.ramping.then_some((id, now));
            }
        }
        if let Some(pending) = tier_change(old, new) {
            events.observe(pending);
        }
    }

    /// The hold on `site` ends now after `ms`: its next `site_up` says so.
    pub fn held(&mut self, site: &str, ms: u64) {
        self.held.insert(site.to_string(), ms);
    }

    /// A drill began on `site` at `now` (its event is announced by the drill code).
    pub fn drill_started(&mut self, site: &str, now: u64) {
        let watch = self.sites.entry(site.to_string()).or_default();
        watch.down_at = Some(now);
        watch.ramping = None;
    }

    /// A drill ended with event `id`; its site ramps back from `now`.
    pub fn drill_ended(&mut self, site: &str, id: u64, now: u64) -> Option<u64> {
        let watch = self.sites.entry(site.to_string()).or_default();
        watch.ramping = Some((id, now));
        watch.down_at.take().map(|at| now.saturating_sub(at))
    }
}

fn site_down(site: &SiteRoute, now: u64) -> Pending {
    // The backend whose loss took the site down is the last one to go; the outage began
    // with the first failure of its run.
    let (last, (down_at, cause)) = site
        .backends
        .iter()
        .map(|b| (b, b.last_down()))
        .max_by_key(|(_, (at, _))| *at)
        .map(|(b, d)| (Some(b), d))
        .unwrap_or((None, (now, String::new())));
    let started = last
        .map(|b| b.outage.failure_started_ms.load(std::sync::atomic::Ordering::Relaxed))
        .filter(|&s| s != 0 && s <= down_at)
        .unwrap_or(down_at);
    let mut detail = Map::new();
    detail.insert("cause".into(), cause.into());
    Measurements {
        first_failure_at: Some(rfc3339(unix_of(started))),
        detect_ms: Some(now.saturating_sub(started)),
        ..Measurements::default()
    }
    .write(&mut detail);
    Pending {
        kind: Kind::SiteDown,
        site: Some(site.name.clone()),
        at_ms: unix_ms(),
        detail,
        outage: Some(Outage {
            backends: site.backends.clone(),
            first_failure_ms: started,
            baseline: None,
        }),
    }
}

fn site_up(site: &SiteRoute, down_at: Option<u64>, now: u64) -> Pending {
    let mut detail = Map::new();
    Measurements {
        down_ms: Some(down_at.map(|at| now.saturating_sub(at))),
        full_weight_ms: Some((!site.ramping).then_some(0)),
        ..Measurements::default()
    }
    .write(&mut detail);
    Pending {
        kind: Kind::SiteUp,
        site: Some(site.name.clone()),
        at_ms: unix_ms(),
        detail,
        outage: None,
    }
}

/// A change of the tier that serves the default split: failover to a higher priority
/// number (or to panic, with no site healthy), failback to a lower one.
fn tier_change(old: &Routing, new: &Routing) -> Option<Pending> {
    // Trying the tier the fleet agreed on with none of it healthy here (quorum) is no
    // change of tier: this member keeps to the fleet's.
    let tier = |routing: &Routing| match routing.mode {
        Mode::Normal { priority } => Some(Some(priority)),
        Mode::Panic { priority } if routing.default.confined == Some(priority) => Some(Some(priority)),
        Mode::Panic { .. } => Some(None),
        Mode::NoRoute => None,
    };
    let (from, to) = (tier(old)?, tier(new)?);
    let kind = match (from, to) {
        (Some(a), Some(b)) if b > a => Kind::Failover,
        (Some(a), Some(b)) if b < a => Kind::Failback,
        (Some(_), None) => Kind::Failover,
        (None, Some(_)) => Kind::Failback,
        _ => return None,
    };
    let serving: Vec<String> = match to {
        Some(priority) => new
            .sites
            .iter()
            .filter(|s| s.priority == priority && s.healthy && s.effective_weight > 0)
            .map(|s| s.name.clone())
            .collect(),
        None => Vec::new(),
    };
    let mut detail = Map::new();
    detail.insert("from_priority".into(), from.map_or(Value::Null, Value::from));
    detail.insert("to_priority".into(), to.map_or(Value::Null, Value::from));
    detail.insert("panic".into(), to.is_none().into());
    detail.insert("sites".into(), serving.clone().into());
    Some(Pending {
        kind,
        site: serving.into_iter().next(),
        at_ms: unix_ms(),
        detail,
        outage: None,
    })
}
