//! Whether what etcd holds now continues the history whose decisions this member
//! applied. etcd restarted with an empty data directory, or restored from an old
//! backup, shows a lower revision, another cluster, or a missing or older fleet epoch
//! (`{prefix}/epoch`, created once per fleet); such a view is not applied (it would
//! drop every drain) until an operator confirms it, which raises the epoch for the
//! whole fleet. Also: who this process is, so that a second member using the same name
//! is noticed.

use serde_json::{json, Value};

use super::state::Decisions;
pub use super::state::Epoch;
use crate::clock::{rfc3339, unix_ms};

/// A new epoch's value, written by `member`.
pub fn epoch_value(number: u64, member: &str, confirmed: bool) -> String {
    json!({"epoch": number, "id": random_id(), "by": member, "at": rfc3339(unix_ms()), "confirmed": confirmed})
        .to_string()
}

/// What etcd's current view is, as the session read it.
pub struct View {
    pub revision: i64,
    pub cluster_id: u64,
    /// `None`: no valid epoch key.
    pub epoch: Option<Epoch>,
}

/// Why the view does not continue what this member applied (`last`, with everything
/// up to `applied` seen), or `None` when it does. An epoch raised past the one kept
/// here to 2 or more is an operator's confirmation and is always taken.
pub fn diverged(last: &Decisions, applied: i64, view: &View) -> Option<String> {
    let etcd_epoch = view.epoch.as_ref().map_or(0, |e| e.number);
    if etcd_epoch > last.epoch && etcd_epoch >= 2 {
        return None;
    }
    let confirm = "the decisions kept here stay in force; POST /fleet/confirm {\"use\": \"etcd\"} (take etcd's view) \
                   or {\"use\": \"kept\"} (write these decisions back to etcd) on any member";
    if view.revision < applied {
        return Some(format!(
            "etcd's revision {} is lower than the {applied} applied here (etcd lost its data or was restored from \
             an older backup): {confirm}",
            view.revision
        ));
    }
    if last.cluster_id != 0 && view.cluster_id != 0 && last.cluster_id != view.cluster_id {
        return Some(format!(
            "etcd's cluster id changed ({:x} -> {:x}): {confirm}",
            last.cluster_id, view.cluster_id
        ));
    }
    if last.epoch > 0 {
        let same = view
            .epoch
            .as_ref()
            .is_some_and(|e| e.number == last.epoch && e.id == last.epoch_id);
        if !same {
            return Some(format!(
                "the fleet's epoch {} (the key {{prefix}}/epoch) is gone from etcd or was replaced by {}: {confirm}",
                last.epoch,
                view.epoch
                    .as_ref()
                    .map_or("nothing".to_string(), |e| e.number.to_string()),
            ));
        }
    }
    None
}

/// 128 random bits as hex (from the system's generator through ring).
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This process, as written in its member key.
pub struct Me {
    pub instance: String,
    pub host: String,
    pub pid: u32,
}

impl Me {
    pub fn new() -> Me {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Me {
            instance: random_id(),
            host,
            pid: std::process::id(),
        }
    }

    /// Whether a member key with this member's name, holding `value`, was written by
    /// another live process. `fresh`: read at the session's start, when the key may
    /// still be this member's previous run (then it counts only if that run lives).
    pub fn other_process(&self, value: &Value, fresh: bool) -> bool {
        let Some(instance) = value["instance"].as_str() else {
            return false;
        };
        if instance == self.instance {
            return false;
        }
        if !fresh {
            return true;
        }
        let host = value["host"].as_str().unwrap_or_default();
        let pid = value["pid"].as_u64().unwrap_or(0);
        host != self.host || (pid != u64::from(self.pid) && std::path::Path::new(&format!("/proc/{pid}")).exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(revision: i64, cluster_id: u64, epoch: u64, id: &str) -> Decisions {
        Decisions {
            revision,
            cluster_id,
            epoch,
            epoch_id: id.into(),
            ..Decisions::default()
        }
    }

    fn view(revision: i64, cluster_id: u64, epoch: Option<(u64, &str)>) -> View {
        View {
            revision,
            cluster_id,
            epoch: epoch.map(|(number, id)| Epoch { number, id: id.into() }),
        }
    }

    #[test]
    fn a_view_that_continues_the_history_is_taken() {
        assert_eq!(diverged(&kept(0, 0, 0, ""), 0, &view(1, 7, None)), None, "a new member");
        assert_eq!(diverged(&kept(40, 7, 1, "x"), 40, &view(55, 7, Some((1, "x")))), None);
        assert_eq!(
            diverged(&kept(40, 0, 0, ""), 40, &view(40, 7, None)),
            None,
            "an older state file"
        );
    }

    #[test]
    fn a_history_that_went_back_or_changed_is_refused() {
        let last = kept(40, 7, 1, "x");
        assert!(diverged(&last, 40, &view(3, 7, None))
            .unwrap()
            .contains("lower than the 40"));
        assert!(diverged(&last, 40, &view(90, 8, Some((1, "x"))))
            .unwrap()
            .contains("cluster id"));
        // etcd emptied, then revisions grew past ours and a new member made a new epoch 1.
        assert!(diverged(&last, 40, &view(90, 7, Some((1, "y"))))
            .unwrap()
            .contains("epoch 1"));
        assert!(diverged(&last, 40, &view(90, 7, None)).unwrap().contains("gone"));
    }

    #[test]
    fn an_operators_confirmation_raises_the_epoch_and_is_taken() {
        assert_eq!(diverged(&kept(40, 7, 1, "x"), 40, &view(3, 8, Some((2, "z")))), None);
        // An epoch 1 made by a new member is no confirmation.
        assert!(diverged(&kept(40, 7, 0, ""), 40, &view(3, 7, Some((1, "z")))).is_some());
        assert_eq!(diverged(&kept(40, 7, 0, ""), 40, &view(3, 7, Some((2, "z")))), None);
    }

    #[test]
    fn a_member_key_of_another_process_is_told_apart_from_this_ones() {
        let me = Me::new();
        let mine = json!({"instance": me.instance, "host": me.host, "pid": me.pid});
        assert!(!me.other_process(&mine, false));
        let elsewhere = json!({"instance": "other", "host": "another-host", "pid": 1});
        assert!(me.other_process(&elsewhere, true));
        // This host's earlier run, no longer alive: not a duplicate.
        let gone = json!({"instance": "other", "host": me.host, "pid": u32::MAX});
        assert!(!me.other_process(&gone, true));
        assert!(me.other_process(&gone, false), "written while this process is alive");
        assert!(
            !me.other_process(&json!({"revision": 3}), false),
            "an older version's key"
        );
    }
}
