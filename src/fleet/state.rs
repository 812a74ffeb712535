//! The fleet's decisions as data, read from etcd keys: an invalid value never changes
//! what is applied (the key keeps its last valid value, and the key is listed as an
//! alarm). They are kept in the state file (`crate::state`), so that a member restarted
//! while etcd is down starts with the last decisions it saw.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::Weight;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    /// The etcd revision these decisions are from.
    pub revision: i64,
    /// Weight overrides by site.
    pub weights: HashMap<String, u32>,
    /// Drills by site: until when (Unix ms).
    #[serde(default)]
    pub drills: HashMap<String, u64>,
    /// Each drill's fleet-wide id: the etcd revision that wrote it.
    #[serde(default)]
    pub drill_ids: HashMap<String, u64>,
    /// The etcd cluster these decisions came from (0: not known).
    #[serde(default)]
    pub cluster_id: u64,
    /// The fleet's epoch (`{prefix}/epoch`) these decisions belong to (0: none seen).
    /// An operator's confirmation of a changed etcd history raises it.
    #[serde(default)]
    pub epoch: u64,
    /// The id written with that epoch: tells a re-created epoch of the same number apart.
    #[serde(default)]
    pub epoch_id: String,
    /// With `failover = "quorum"`: the sites the fleet last saw down (held while etcd
    /// is unreachable, and across a restart then).
    #[serde(default)]
    pub fleet_down: std::collections::BTreeSet<String>,
}

/// Keys whose value in etcd is invalid: key -> what it holds (shortened for display).
pub type Invalid = BTreeMap<String, String>;

/// The longest part of an invalid value that is logged or shown.
const SHOWN_BYTES: usize = 64;

/// A remote party's value, for a log line or `/status`: at most `SHOWN_BYTES`,
/// control characters escaped, with the full length when it was cut.
pub fn shown(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(SHOWN_BYTES)]);
    let mut out: String = text.chars().flat_map(char::escape_default).collect();
    if value.len() > SHOWN_BYTES {
        out.push_str(&format!("... ({} bytes)", value.len()));
    }
    out
}

impl Decisions {
    /// Takes one key's value (`None`: the key was deleted) into these decisions. An
    /// invalid value leaves the key at its value in `last` (the decisions applied
    /// before) and lists it in `invalid`; a valid value or a delete clears it there.
    pub fn take(
        &mut self,
        last: &Decisions,
        key: &str,
        meaning: &Key<'_>,
        value: Option<&[u8]>,
        invalid: &mut Invalid,
    ) {
        let valid = match (meaning, value) {
            (Key::Weight(site), None) => {
                self.weights.remove(*site);
                true
            }
            (Key::Weight(site), Some(v)) => set_or_keep(&mut self.weights, &last.weights, site, weight(v)),
            (Key::Drill(site), None) => {
                self.drills.remove(*site);
                true
            }
            (Key::Drill(site), Some(v)) => set_or_keep(&mut self.drills, &last.drills, site, drill(v)),
            // A deleted epoch key is seen at the next full read (see `session`).
            (Key::Epoch, None) => true,
            (Key::Epoch, Some(v)) => match Epoch::parse(v) {
                Some(e) => {
                    self.epoch = e.number;
                    self.epoch_id = e.id;
                    true
                }
                None => false,
            },
            (Key::Member(_) | Key::Failback(_) | Key::Health(_) | Key::Report(_) | Key::Leader | Key::Other, _) => {
                return
            }
        };
        if valid {
            invalid.remove(key);
        } else {
            let shown = shown(value.unwrap_or_default());
            if invalid.get(key) != Some(&shown) {
                metrics::counter!("splitgate_fleet_invalid_values_total").increment(1);
                tracing::warn!(
                    key = %shown_key(key),
                    value = %shown,
                    "fleet: an invalid value in etcd is not applied; the key keeps its last valid value \
                     (a weight is a whole number from 0 to 10000; a drill is {{\"until\": UNIX_MS}})"
                );
            }
            invalid.insert(key.to_string(), shown);
        }
    }
}

/// A valid value is set; an invalid one (`None`) leaves the site at its value in
/// `last`. Says whether the value was valid.
fn set_or_keep<T: Copy>(map: &mut HashMap<String, T>, last: &HashMap<String, T>, site: &str, value: Option<T>) -> bool {
    match value.or_else(|| last.get(site).copied()) {
        Some(v) => map.insert(site.to_string(), v),
        None => map.remove(site),
    };
    value.is_some()
}

fn shown_key(key: &str) -> String {
    shown(key.as_bytes())
}

/// The epoch key's value as read: its number and the id written with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Epoch {
    pub number: u64,
    pub id: String,
}

impl Epoch {
    /// `{"epoch": N, "id": "...", ...}` with N > 0.
    pub fn parse(value: &[u8]) -> Option<Epoch> {
        let value: serde_json::Value = serde_json::from_slice(value).ok()?;
        let number = value["epoch"].as_u64().filter(|&e| e > 0)?;
        let id = value["id"].as_str().unwrap_or_default().to_string();
        Some(Epoch { number, id })
    }
}

/// What one key under the prefix means.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Weight(&'a str),
    Drill(&'a str),
    Member(&'a str),
    /// `{prefix}/sites/{name}/failback`: an operator released a held site (a command,
    /// acted on when it is written, not a standing decision).
    Failback(&'a str),
    /// `{prefix}/epoch`: the fleet's epoch, raised when an operator confirms a changed
    /// etcd history.
    Epoch,
    /// `{prefix}/health/{member}`: that member's view of the sites' health.
    Health(&'a str),
    /// `{prefix}/reports/{member}`: what that member measured of its latest events.
    Report(&'a str),
    /// `{prefix}/leader`: the member that speaks for the fleet (under its lease).
    Leader,
    Other,
}

pub fn key<'a>(prefix: &str, key: &'a str) -> Key<'a> {
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Key::Other;
    };
    if let Some(site) = rest.strip_prefix("sites/").and_then(|r| r.strip_suffix("/weight")) {
        if !site.is_empty() && !site.contains('/') {
            return Key::Weight(site);
        }
    }
    if let Some(site) = rest.strip_prefix("sites/").and_then(|r| r.strip_suffix("/drill")) {
        if !site.is_empty() && !site.contains('/') {
            return Key::Drill(site);
        }
    }
    if let Some(site) = rest.strip_prefix("sites/").and_then(|r| r.strip_suffix("/failback")) {
        if !site.is_empty() && !site.contains('/') {
            return Key::Failback(site);
        }
    }
    if rest == "epoch" {
        return Key::Epoch;
    }
    let member_in = |dir: &str| rest.strip_prefix(dir).filter(|m| !m.is_empty() && !m.contains('/'));
    if let Some(member) = member_in("health/") {
        return Key::Health(member);
    }
    if let Some(member) = member_in("reports/") {
        return Key::Report(member);
    }
    if rest == "leader" {
        return Key::Leader;
    }
    match rest.strip_prefix("members/") {
        Some(name) if !name.is_empty() => Key::Member(name),
        _ => Key::Other,
    }
}

/// A weight value as operators write it: a whole number from 0 to 10 000 (`Weight`).
pub fn weight(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let number: i64 = text.parse().ok()?;
    Weight::new(number).ok().map(Weight::get)
}

/// A drill value: `{"until": UNIX_MS}`.
pub fn drill(value: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
    value["until"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_read_strictly() {
        assert_eq!(key("/sg", "/sg/sites/idc-a/weight"), Key::Weight("idc-a"));
        assert_eq!(key("/sg", "/sg/members/edge-1"), Key::Member("edge-1"));
        assert_eq!(key("/sg", "/sg/sites/b/drill"), Key::Drill("b"));
        assert_eq!(key("/sg", "/sg/health/edge-2"), Key::Health("edge-2"));
        assert_eq!(key("/sg", "/sg/health/a/b"), Key::Other);
        assert_eq!(drill(br#"{"until": 5}"#), Some(5));
        assert_eq!(drill(b"soon"), None);
        assert_eq!(key("/sg", "/sgx/sites/a/weight"), Key::Other);
        assert_eq!(key("/sg", "/sg/sites/a/b/weight"), Key::Other);
        assert_eq!(weight(b"70"), Some(70));
        assert_eq!(weight(b" 0\n"), Some(0));
        assert_eq!(weight(b"-1"), None);
        assert_eq!(weight(b"10001"), None);
        assert_eq!(weight(b"half"), None);
    }

    #[test]
    fn an_invalid_value_keeps_the_last_valid_one_and_is_listed() {
        let last = Decisions {
            weights: HashMap::from([("b".to_string(), 0)]),
            ..Decisions::default()
        };
        let (mut next, mut invalid) = (last.clone(), Invalid::new());
        let key = "/sg/sites/b/weight";
        next.take(&last, key, &Key::Weight("b"), Some(b"zero"), &mut invalid);
        assert_eq!(next.weights.get("b"), Some(&0));
        assert_eq!(invalid.get(key).map(String::as_str), Some("zero"));
        next.take(&last, key, &Key::Weight("b"), Some(b"7"), &mut invalid);
        assert_eq!(next.weights.get("b"), Some(&7));
        assert!(invalid.is_empty());
        let mut fresh = Decisions::default();
        fresh.take(&Decisions::default(), key, &Key::Weight("b"), Some(b"x"), &mut invalid);
        assert!(fresh.weights.is_empty(), "no valid value ever: no override");
        assert_eq!(shown(&[b'a'; 100]).len(), 64 + " (100 bytes)".len() + 3);
        assert_eq!(shown(b"a\nb"), "a\\nb");
    }
}
