//! The fleet's view of health at work on this member: every member's view (its own
//! included) is kept here as the watch brings it; after each change the sites a
//! majority of live members see down are worked out again and, with
//! `failover = "quorum"`, handed to the control plane, where they decide the tier in
//! use. While etcd is unreachable nothing is decided: the last decision holds, and it
//! is kept in the state file for a restart.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::views::{self, View};
use super::Fleet;
use crate::clock::{rfc3339, unix_ms};

/// How long after connecting a member waits to hear the fleet before it lets a site
/// go down for the fleet (members announce themselves within a keep-alive).
pub(super) const HEAR_MS: u64 = 2_000;

impl Fleet {
    /// This member's view now, from the snapshot in force.
    pub(super) fn own_view(&self) -> View {
        View::of(&self.control.current(), unix_ms())
    }

    /// Takes a member's view as etcd holds it (`None`: gone); `decide` acts on it.
    pub(super) fn take_view(&self, member: &str, view: Option<View>) {
        let mut link = self.lock_link();
        match view {
            Some(view) => link.views.insert(member.to_string(), view),
            None => link.views.remove(member),
        };
    }

    /// Works out the sites the fleet sees down from the live members' views, and with
    /// `quorum` applies them. Does nothing while etcd is unreachable.
    pub(super) fn decide(&self) {
        let routing = self.control.current();
        let (down, cut_off) = {
            let mut link = self.lock_link();
            if !link.connected {
                return;
            }
            let live: BTreeSet<String> = link.members.keys().cloned().chain([self.name.clone()]).collect();
            let mut down = views::fleet_down(routing.sites.iter().map(|s| s.name.as_str()), &link.views, &live);
            // Just connected, a member has not heard the fleet yet (members starting
            // with it may not have announced themselves): sites may come back, none
            // goes down for the fleet until then.
            if unix_ms().saturating_sub(link.since_ms) < HEAR_MS {
                down.retain(|site| link.fleet_down.contains(site));
            }
            if down != link.fleet_down {
                tracing::info!(fleet_down = ?down, members = live.len(), "fleet: the sites a majority of members see down");
            }
            // Cut off alone: every site of the tier in use is down here and not for the fleet.
            let own = link.views.get(&self.name);
            let tier = routing.mode_priority();
            let alone = own.is_some_and(|own| {
                let in_tier: Vec<&str> = routing
                    .sites
                    .iter()
                    .filter(|s| Some(s.priority) == tier && s.weight() > 0)
                    .map(|s| s.name.as_str())
                    .collect();
                !in_tier.is_empty() && in_tier.iter().all(|s| own.down.contains(*s) && !down.contains(*s))
            });
            let cut_off = (alone && !link.cut_off).then(|| {
                let seeing = link
                    .views
                    .iter()
                    .filter(|(m, v)| live.contains(*m) && !v.down.is_empty())
                    .count();
                (seeing, live.len())
            });
            link.cut_off = alone;
            link.fleet_down = down.clone();
            (down, cut_off)
        };
        if let (true, Some((seeing, members))) = (self.settings.quorum, cut_off) {
            tracing::warn!(
                seeing,
                members,
                "fleet: this member sees every site of the tier in use down, but the fleet does not: it keeps \
                 trying them (its clients get its errors) rather than send traffic to a standby alone"
            );
        }
        let changed = {
            let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
            let changed = decisions.fleet_down != down;
            decisions.fleet_down = down.clone();
            changed.then(|| decisions.clone())
        };
        if let (Some(decisions), Some(file)) = (changed, &self.state_file) {
            file.set_fleet(serde_json::to_value(&decisions).unwrap_or_default());
        }
        if self.settings.quorum {
            self.control.set_fleet_down(Some(down.into_iter().collect()));
        }
        self.voice_changed.notify_one();
    }

    /// `"views"` and `"fleet_down"` for `/status`.
    pub(super) fn views_status(&self) -> (Value, Value) {
        let link = self.lock_link();
        let views: serde_json::Map<String, Value> = link
            .views
            .iter()
            .map(|(member, view)| {
                (
                    member.clone(),
                    json!({ "down": view.down, "at": rfc3339(view.at), "live": member == &self.name || link.members.contains_key(member) }),
                )
            })
            .collect();
        (Value::Object(views), json!(link.fleet_down))
    }
}
