//! Failback: when a site that failed gets its traffic back. A site taken out by a
//! failure (health; not a drain or a drill) that recovers is held (healthy, no traffic
//! but as a last resort) for `hold`, or until an operator releases it (`manual`), or,
//! when it flaps (fails again within `flap_window` of getting its traffic back), for
//! `flap_hold` doubled per flap up to `max_hold`. Judged before each snapshot is built,
//! from the backends' own health; it never blocks a failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Control, State};
use crate::clock::{rfc3339, unix_ms};
use crate::events::{Kind, Pending};
use crate::health::Backend;
use crate::routing::Routing;

/// One site's failback state.
#[derive(Debug, Default, Clone)]
pub(super) struct SiteFailback {
    /// Has a healthy backend (as of the last snapshot).
    usable: bool,
    /// Taken out by a failure since its traffic last returned.
    failed: bool,
    /// Unix ms its traffic last returned after a failure.
    returned_at: Option<u64>,
    /// Unix ms it was held at.
    held_since: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FailbackError {
    #[error("no site is named \"{0}\"")]
    UnknownSite(String),
    #[error("\"{0}\" is not held: its traffic is not waiting for a failback")]
    NotHeld(String),
}

impl State {
    /// Updates every site's failback state from its backends' health now, before a
    /// snapshot is built; returns the holds that need a timer, and the events to send.
    pub(super) fn judge_failback(&mut self, old: &Routing, backends: &[Vec<Arc<Backend>>]) -> Judged {
        let now = unix_ms();
        let mut judged = Judged::default();
        for ((site, backends), before) in old.config.sites.iter().zip(backends).zip(&old.sites) {
            let usable = backends.iter().any(|b| b.is_healthy());
            // First seen: as the snapshot before this one had it.
            let entry = self.failback.entry(site.name.clone()).or_insert_with(|| SiteFailback {
                usable: before.healthy_fraction > 0.0,
                ..SiteFailback::default()
            });
            let policy = &site.failback;
            if entry.usable && !usable {
                entry.failed = true;
                let flapped = entry
                    .returned_at
                    .is_some_and(|at| now.saturating_sub(at) < policy.flap_window.as_millis() as u64);
                let flaps = self.decisions.flaps.entry(site.name.clone()).or_insert(0);
                *flaps = if flapped { flaps.saturating_add(1) } else { 0 };
            } else if !entry.usable && usable && entry.failed && !self.decisions.drilled.contains(&site.name) {
                let flaps = self.decisions.flaps.get(&site.name).copied().unwrap_or(0);
                let mut hold = policy.hold;
                if flaps > 0 {
                    let doubled = policy.flap_hold.saturating_mul(1u32 << (flaps - 1).min(20));
                    hold = hold.max(doubled.min(policy.max_hold));
                }
                let until = (!policy.manual).then(|| now + hold.as_millis() as u64);
                if policy.manual || !hold.is_zero() {
                    let until = match self.decisions.held.get(&site.name) {
                        Some(Some(earlier)) => until.map(|u| u.max(*earlier)),
                        _ => until,
                    };
                    self.decisions.held.insert(site.name.clone(), until);
                    entry.held_since = now;
                    tracing::warn!(site = %site.name, flaps, until = ?until.map(rfc3339),
                        "site recovered; its traffic is held (failback policy)");
                    judged.events.push(recovered(&site.name, until, flaps, now));
                    if let Some(until) = until {
                        judged.timers.push((site.name.clone(), until));
                    }
                } else {
                    entry.failed = false;
                    entry.returned_at = Some(now);
                }
            }
            entry.usable = usable;
            // A full window without a failure ends the run of flaps.
            if usable && !entry.failed {
                if let Some(at) = entry.returned_at {
                    if now.saturating_sub(at) >= policy.flap_window.as_millis() as u64 {
                        self.decisions.flaps.remove(&site.name);
                    }
                }
            }
        }
        judged
    }

    /// Ends the hold on `site` (`only`: if it is still the one that ends at this time);
    /// returns how long it was held, in ms.
    pub(super) fn release_hold(&mut self, site: &str, only: Option<Option<u64>>) -> Option<u64> {
        match self.decisions.held.get(site) {
            Some(until) if only.is_none_or(|o| o == *until) => {}
            _ => return None,
        }
        self.decisions.held.remove(site);
        let now = unix_ms();
        let entry = self.failback.entry(site.to_string()).or_default();
        entry.failed = false;
        entry.returned_at = Some(now);
        Some(now.saturating_sub(entry.held_since))
    }

    /// A hold kept in the state file: the site starts held, as a failed one.
    pub(super) fn resume_hold(&mut self, site: &str, until: Option<u64>, flaps: u32) {
        self.decisions.held.insert(site.to_string(), until);
        if flaps > 0 {
            self.decisions.flaps.insert(site.to_string(), flaps);
        }
        let entry = self.failback.entry(site.to_string()).or_default();
        entry.failed = true;
        entry.held_since = unix_ms();
    }
}

/// What one judgement asks of the caller.
#[derive(Default)]
pub(super) struct Judged {
    pub timers: Vec<(String, u64)>,
    pub events: Vec<Pending>,
}

fn recovered(site: &str, until: Option<u64>, flaps: u32, now: u64) -> Pending {
    let mut detail = Map::new();
    detail.insert("held".into(), true.into());
    detail.insert("held_until".into(), until.map_or(Value::Null, |u| rfc3339(u).into()));
    detail.insert("flaps".into(), flaps.into());
    Pending {
        kind: Kind::SiteRecovered,
        site: Some(site.to_string()),
        at_ms: now,
        detail,
        outage: None,
    }
}

impl Control {
    /// Releases a held site now (`POST /sites/{name}/failback`): its traffic returns.
    pub fn fail_back(&self, site: &str) -> Result<(), FailbackError> {
        if !self.current().sites.iter().any(|s| s.name == site) {
            return Err(FailbackError::UnknownSite(site.to_string()));
        }
        let mut state = self.lock_state();
        let Some(held_ms) = state.release_hold(site, None) else {
            return Err(FailbackError::NotHeld(site.to_string()));
        };
        tracing::warn!(
            site,
            held_ms,
            "failback: an operator released the site; its traffic returns"
        );
        state.observer.held(site, held_ms);
        self.publish(&mut state);
        Ok(())
    }

    /// Releases the hold on `site` that ends at `until`, when it does.
    pub(super) fn release_at(&self, site: String, until: u64) {
        let Some(control) = self.me.get().cloned() else { return };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(until.saturating_sub(unix_ms()))).await;
            let Some(control) = control.upgrade() else { return };
            let mut state = control.lock_state();
            if let Some(held_ms) = state.release_hold(&site, Some(Some(until))) {
                tracing::info!(site, held_ms, "failback: the hold is over; the site's traffic returns");
                state.observer.held(&site, held_ms);
                control.publish(&mut state);
            }
        });
    }

    /// The holds in force: site -> until (Unix ms; `None`: until released).
    pub fn holds(&self) -> HashMap<String, Option<u64>> {
        self.lock_state().decisions.held.clone()
    }
}
