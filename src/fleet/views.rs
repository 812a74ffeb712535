//! Each member's view of the sites' health, and the fleet's view drawn from them.
//! A member publishes, under its lease, `{prefix}/health/{member}` =
//! `{"down": [SITE, ...], "sites": [SITE, ...], "at": UNIX_MS}`: the sites it cannot
//! serve from (no healthy backend, or held after a failure) among the sites it knows.
//! For the fleet, a site is down when a majority of the live members that know it see
//! it down; with `[fleet] failover = "quorum"` only that moves traffic to a standby
//! tier (`routing::split`), so one member cut off from the active sites does not split
//! the fleet's writes between two sites.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use crate::routing::Routing;

/// One member's view, as published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Sites it cannot serve from.
    pub down: BTreeSet<String>,
    /// Sites its config has (`None`: the member did not say; it is taken to know all).
    pub sites: Option<BTreeSet<String>>,
    /// When it was written (Unix ms).
    pub at: u64,
    /// The tier its default split uses (`None`: none healthy, or nothing to route).
    pub tier: Option<u32>,
}

impl View {
    /// This member's view now: a site is down when none of its backends is healthy,
    /// or it is held after a failure (recovered, not serving yet). Drills are left out:
    /// they are the fleet's own decision, applied alike on every member.
    pub fn of(routing: &Routing, at: u64) -> View {
        let down = routing
            .sites
            .iter()
            .filter(|s| s.healthy_fraction == 0.0 || s.held)
            .map(|s| s.name.clone())
            .collect();
        let sites = Some(routing.sites.iter().map(|s| s.name.clone()).collect());
        let tier = match routing.mode {
            crate::routing::Mode::Normal { priority } => Some(priority),
            crate::routing::Mode::Panic { priority } if routing.default.confined == Some(priority) => Some(priority),
            _ => None,
        };
        View { down, sites, at, tier }
    }

    /// Same sites seen down, of the same sites: nothing new to publish.
    pub fn same_as(&self, other: &View) -> bool {
        self.down == other.down && self.sites == other.sites && self.tier == other.tier
    }

    pub fn to_value(&self) -> String {
        json!({ "down": self.down, "sites": self.sites, "at": self.at, "tier": self.tier }).to_string()
    }

    /// A view as another member (or an operator with etcdctl) wrote it; `None` when
    /// it is not one.
    pub fn parse(bytes: &[u8]) -> Option<View> {
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let names = |v: &serde_json::Value| -> Option<BTreeSet<String>> {
            v.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
        };
        Some(View {
            down: names(&value["down"])?,
            sites: names(&value["sites"]),
            at: value["at"].as_u64().unwrap_or(0),
            tier: value["tier"].as_u64().and_then(|t| u32::try_from(t).ok()),
        })
    }

    fn knows(&self, site: &str) -> bool {
        self.sites.as_ref().is_none_or(|s| s.contains(site))
    }
}

/// The sites a majority of the live members that know them see down. `views` holds
/// every published view; only those of `live` members count (a member whose lease
/// ended has no say). A live member that has published no view yet (it is starting)
/// counts as seeing every site up: the fleet does not fail over before it has heard
/// its members.
pub fn fleet_down<'a>(
    sites: impl Iterator<Item = &'a str>,
    views: &BTreeMap<String, View>,
    live: &BTreeSet<String>,
) -> BTreeSet<String> {
    sites
        .filter(|site| {
            let (mut knowing, mut down) = (0usize, 0usize);
            for member in live {
                match views.get(member) {
                    Some(view) if !view.knows(site) => {}
                    Some(view) => {
                        knowing += 1;
                        down += usize::from(view.down.contains(*site));
                    }
                    None => knowing += 1,
                }
            }
            knowing > 0 && down * 2 > knowing
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(down: &[&str], sites: &[&str]) -> View {
        View {
            down: down.iter().map(|s| s.to_string()).collect(),
            sites: Some(sites.iter().map(|s| s.to_string()).collect()),
            at: 1,
            tier: Some(0),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_site_is_down_for_the_fleet_only_when_a_majority_of_live_members_see_it_down() {
        let all = ["a", "dr"];
        let views = BTreeMap::from([
            ("m1".to_string(), view(&["a"], &all)),
            ("m2".to_string(), view(&[], &all)),
            ("m3".to_string(), view(&[], &all)),
        ]);
        let live = set(&["m1", "m2", "m3"]);
        assert!(
            fleet_down(all.into_iter(), &views, &live).is_empty(),
            "one of three is no majority"
        );
        let mut two = views.clone();
        two.insert("m2".into(), view(&["a"], &all));
        assert_eq!(fleet_down(all.into_iter(), &two, &live), set(&["a"]));
        // A member whose lease ended has no say: one of the two left sees it down.
        assert!(fleet_down(all.into_iter(), &two, &set(&["m1", "m3"])).is_empty());
        // A live member that has not spoken yet counts as seeing it up.
        assert!(fleet_down(all.into_iter(), &two, &set(&["m1", "m2", "m3", "m4", "m5"])).is_empty());
        // Half is not a majority.
        assert!(fleet_down(all.into_iter(), &two, &set(&["m2", "m3"])).is_empty());
    }

    #[test]
    fn only_the_members_that_know_a_site_vote_on_it() {
        let views = BTreeMap::from([
            ("m1".to_string(), view(&["new"], &["a", "new"])),
            ("m2".to_string(), view(&[], &["a"])),
            ("m3".to_string(), view(&[], &["a"])),
        ]);
        let live = set(&["m1", "m2", "m3"]);
        assert_eq!(fleet_down(["a", "new"].into_iter(), &views, &live), set(&["new"]));
    }

    #[test]
    fn views_are_read_strictly_and_round_trip() {
        let v = view(&["a"], &["a", "b"]);
        assert_eq!(View::parse(v.to_value().as_bytes()), Some(v));
        assert_eq!(View::parse(b"down"), None);
        assert_eq!(View::parse(br#"{"down": [1]}"#), None);
        let bare = View::parse(br#"{"down": ["a"]}"#).expect("a view without sites");
        assert!(bare.knows("anything"));
    }
}
