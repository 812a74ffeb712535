//! The fleet's decisions as data: read from etcd keys (invalid values are logged,
//! counted and left out), and kept on disk atomically (write, fsync, rename) so that a
//! member restarted while etcd is down starts with the last decisions it saw.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::MAX_WEIGHT;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    /// The etcd revision these decisions are from.
    pub revision: i64,
    /// Weight overrides by site.
    pub weights: HashMap<String, u32>,
    /// Drills by site: until when (Unix ms).
    #[serde(default)]
    pub drills: HashMap<String, u64>,
}

/// What one key under the prefix means.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Weight(&'a str),
    Drill(&'a str),
    Member(&'a str),
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
    match rest.strip_prefix("members/") {
        Some(name) if !name.is_empty() => Key::Member(name),
        _ => Key::Other,
    }
}

/// A weight value as operators write it: a whole number from 0 to `MAX_WEIGHT`.
pub fn weight(value: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let number: i64 = text.parse().ok()?;
    (0..=MAX_WEIGHT).contains(&number).then_some(number as u32)
}

/// A drill value: `{"until": UNIX_MS}`.
pub fn drill(value: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(value).ok()?;
    value["until"].as_u64()
}

pub fn invalid(key: &str, value: &[u8]) {
    metrics::counter!("splitgate_fleet_invalid_values_total").increment(1);
    tracing::warn!(key, value = %String::from_utf8_lossy(value), "fleet: ignoring an invalid value (use a whole number from 0 to 10000)");
}

pub fn load(path: &Path) -> Option<Decisions> {
    let bytes = crate::config::read_bounded(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save(path: &Path, decisions: &Decisions) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(decisions).unwrap_or_default())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_read_strictly() {
        assert_eq!(key("/sg", "/sg/sites/idc-a/weight"), Key::Weight("idc-a"));
        assert_eq!(key("/sg", "/sg/members/edge-1"), Key::Member("edge-1"));
        assert_eq!(key("/sg", "/sg/sites/b/drill"), Key::Drill("b"));
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
    fn decisions_survive_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.json");
        let decisions = Decisions {
            revision: 42,
            weights: HashMap::from([("a".to_string(), 0)]),
            drills: HashMap::from([("b".to_string(), 1_800_000_000_000)]),
        };
        save(&path, &decisions).unwrap();
        assert_eq!(load(&path), Some(decisions));
    }
}
