//! A session's first read: everything under the prefix at one revision, sorted by what
//! each key means, invalid values falling back on their last valid ones in etcd's
//! history; then adopted, unless etcd's history went back (`lineage`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::error::SessionError;
use crate::fleet::etcd::{Client, GetOptions, KeyValue};
use crate::fleet::lineage::{self, Epoch, View as Lineage};
use crate::fleet::state::{self, Decisions, Invalid, Key};
use crate::fleet::views::View;
use crate::fleet::Fleet;

/// Everything under the prefix at one revision, sorted by what each key means.
pub(super) struct FirstRead {
    pub(super) revision: i64,
    /// What this member had applied before (its fallback for invalid values).
    last: Decisions,
    /// The highest revision this member has applied (etcd's must not be lower).
    applied: i64,
    decisions: Decisions,
    invalid: Invalid,
    members: BTreeMap<String, Value>,
    views: BTreeMap<String, Option<View>>,
    reports: BTreeMap<String, Value>,
    leader: Option<String>,
    epoch: Option<Epoch>,
}

impl FirstRead {
    pub(super) async fn read(fleet: &Arc<Fleet>, client: &mut Client, root: &str) -> Result<FirstRead, SessionError> {
        let prefix = &fleet.settings.prefix;
        let read = client
            .get(root, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(SessionError::Read)?;
        let revision = read.header().map_or(0, |h| h.revision());
        let last = fleet.decisions();
        let applied = fleet.lock_link().revision.max(last.revision);
        let mut first = FirstRead {
            revision,
            applied,
            decisions: Decisions {
                revision,
                cluster_id: read.header().map_or(0, |h| h.cluster_id()),
                ..Decisions::default()
            },
            last: fallback(client, prefix, read.kvs(), last).await,
            invalid: Invalid::new(),
            members: BTreeMap::new(),
            views: BTreeMap::new(),
            reports: BTreeMap::new(),
            leader: None,
            epoch: None,
        };
        for kv in read.kvs() {
            first.take(fleet, kv);
        }
        Ok(first)
    }

    /// One key of the read.
    fn take(&mut self, fleet: &Fleet, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let meaning = state::key(&fleet.settings.prefix, &key);
        match meaning {
            Key::Member(name) => {
                let value = serde_json::from_slice(kv.value()).unwrap_or(json!(null));
                if name == fleet.name && fleet.me.other_process(&value, true) {
                    fleet.duplicate_name(&value);
                }
                self.members.insert(name.to_string(), value);
            }
            Key::Epoch => {
                self.epoch = Epoch::parse(kv.value());
                self.decisions
                    .take(&self.last, &key, &meaning, Some(kv.value()), &mut self.invalid);
            }
            Key::Health(member) => {
                self.views.insert(member.to_string(), View::parse(kv.value()));
            }
            Key::Drill(site) => {
                self.decisions
                    .take(&self.last, &key, &meaning, Some(kv.value()), &mut self.invalid);
                self.decisions
                    .drill_ids
                    .insert(site.to_string(), kv.mod_revision().max(0) as u64);
            }
            Key::Report(member) => {
                let report = serde_json::from_slice(kv.value()).unwrap_or(json!({}));
                self.reports.insert(member.to_string(), report);
            }
            Key::Leader => self.leader = Some(String::from_utf8_lossy(kv.value()).into_owned()),
            _ => self
                .decisions
                .take(&self.last, &key, &meaning, Some(kv.value()), &mut self.invalid),
        }
    }

    /// Takes what was read into the fleet: the members, views, reports and leader
    /// always; the decisions unless etcd's history went back (then the last ones are
    /// kept). Returns the decisions in force, the invalid keys and etcd's epoch.
    pub(super) fn adopt(self, fleet: &Fleet) -> (Decisions, Invalid, Option<Epoch>) {
        let lineage_view = Lineage {
            revision: self.revision,
            cluster_id: self.decisions.cluster_id,
            epoch: self.epoch.clone(),
        };
        let refusal = lineage::diverged(&self.last, self.applied, &lineage_view);
        let last = fleet.decisions();
        {
            let mut link = fleet.lock_link();
            link.members = self.members;
            link.reports = self.reports;
            link.leader = self.leader;
            // This member's own view is published later, from what it sees now.
            link.views = self
                .views
                .into_iter()
                .filter_map(|(m, v)| Some((m, v?)))
                .filter(|(m, _)| *m != fleet.name)
                .collect();
        }
        fleet.set_invalid(self.invalid.clone());
        fleet.set_diverged(refusal.clone(), self.epoch.as_ref().map_or(0, |e| e.number));
        let decisions = match refusal {
            Some(_) => last,
            None => {
                fleet.apply(self.decisions.clone());
                self.decisions
            }
        };
        (decisions, self.invalid, self.epoch)
    }
}

/// How many older versions of a key are looked at for its last valid value.
const HISTORY_STEPS: usize = 8;

/// The decisions to fall back on for keys whose value is invalid now: each such key's
/// last valid value in etcd's own history (so that every member, a new one too, falls
/// back on the same value; a key created invalid falls back on no value), or, where
/// that history is compacted away, what this member had applied (`last`).
async fn fallback(client: &mut Client, prefix: &str, kvs: &[KeyValue], last: Decisions) -> Decisions {
    let valid = |meaning: &Key<'_>, value: &[u8]| match meaning {
        Key::Weight(_) => state::weight(value).is_some(),
        Key::Drill(_) => state::drill(value).is_some(),
        _ => true,
    };
    let mut fallback = last.clone();
    let mut scratch = Invalid::new();
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let meaning = state::key(prefix, &key);
        if valid(&meaning, kv.value()) {
            continue;
        }
        let mut version = kv.clone();
        for _ in 0..HISTORY_STEPS {
            if version.create_revision() == version.mod_revision() {
                // Created with this value: before it, the key did not exist.
                fallback.take(&last, &key, &meaning, None, &mut scratch);
                break;
            }
            let at = GetOptions::new().with_revision(version.mod_revision() - 1);
            let Ok(answer) = client.get(kv.key(), Some(at)).await else {
                break; // compacted: what this member had stays
            };
            match answer.kvs().first() {
                None => {
                    fallback.take(&last, &key, &meaning, None, &mut scratch);
                    break;
                }
                Some(before) if valid(&meaning, before.value()) => {
                    fallback.take(&last, &key, &meaning, Some(before.value()), &mut scratch);
                    break;
                }
                Some(before) => version = before.clone(),
            }
        }
    }
    fallback
}
