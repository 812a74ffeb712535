//! Guard rails on operators' actions (`[safety] min_serving_sites`): a drain, a weight
//! change or a drill that would leave fewer sites able to serve (healthy, with weight,
//! not drilled, not held) than the rule asks, and fewer than now, is refused before
//! anything changes. `force` lets it through, logged and recorded as an event. Failures
//! are never judged here: the rule is about what operators do. With a fleet's quorum a
//! site's health is the fleet's view of it.

use std::collections::HashMap;

use serde_json::Map;

use super::Control;
use crate::clock::unix_ms;
use crate::events::{Kind, Pending};

/// What an operator asks for.
pub enum Action<'a> {
    /// New weight overrides (`None`: cleared).
    Weights(&'a [(String, Option<i64>)]),
    /// A drill on a site.
    Drill(&'a str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refused by the guard rails: this would leave {after} site(s) able to serve ({serving}), fewer than \
     [safety] min_serving_sites = {min}; nothing was changed (add ?force=true to override)"
)]
pub struct Refused {
    pub after: usize,
    pub min: usize,
    /// The sites that would still serve.
    pub serving: String,
}

impl Control {
    /// `Ok` when `action` keeps enough sites able to serve (or does not lower their
    /// count), else why not.
    pub fn check_rails(&self, action: &Action<'_>) -> Result<(), Refused> {
        let current = self.current();
        let min = current.config.safety.min_serving_sites;
        let drilled: Vec<String> = self.drills().into_iter().map(|(site, _)| site).collect();
        // With a fleet's quorum, a site can serve when the fleet sees it up, whatever
        // this member alone sees.
        let fleet_down = self.lock_state().decisions.fleet_down.clone();
        let changed: HashMap<&str, Option<i64>> = match action {
            Action::Weights(changes) => changes.iter().map(|(s, w)| (s.as_str(), *w)).collect(),
            Action::Drill(_) => HashMap::new(),
        };
        let serves = |after: bool, site: &crate::routing::SiteRoute| {
            let weight = match changed.get(site.name.as_str()) {
                Some(Some(w)) if after => *w,
                Some(None) if after => i64::from(site.config_weight),
                _ => i64::from(site.weight()),
            };
            let drilled =
                drilled.contains(&site.name) || (after && matches!(action, Action::Drill(s) if *s == site.name));
            let up = match &fleet_down {
                Some(down) => !down.contains(&site.name),
                None => site.healthy_fraction > 0.0,
            };
            up && weight > 0 && !drilled && !site.held
        };
        let before = current.sites.iter().filter(|s| serves(false, s)).count();
        let serving: Vec<&str> = current
            .sites
            .iter()
            .filter(|s| serves(true, s))
            .map(|s| s.name.as_str())
            .collect();
        let after = serving.len();
        if after < min && after < before {
            return Err(Refused {
                after,
                min,
                serving: if serving.is_empty() {
                    "none".into()
                } else {
                    serving.join(", ")
                },
            });
        }
        Ok(())
    }

    /// An action let through the rails with `force`: a WARN and a `forced` event.
    pub fn record_forced(&self, what: &str, refused: &Refused) {
        tracing::warn!(action = what, overridden = %refused, "guard rails overridden with force");
        let mut detail = Map::new();
        detail.insert("action".into(), what.into());
        detail.insert("overridden".into(), refused.to_string().into());
        self.events.observe(Pending {
            kind: Kind::Forced,
            site: None,
            at_ms: unix_ms(),
            detail,
            outage: None,
        });
    }
}
