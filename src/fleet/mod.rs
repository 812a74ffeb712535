//! A fleet of proxies sharing run-time decisions through etcd. The config file stays
//! each member's base; etcd holds the weight overrides under
//! `{prefix}/sites/{name}/weight`. Every member reads the prefix at revision R, applies
//! it, and watches from R + 1, applying one snapshot per watch response (a
//! transaction's keys share a revision and arrive together, so a multi-site change is
//! never applied half). Admin writes go to etcd as one transaction and answer once the
//! member's own watch has applied them. When etcd is unreachable the member keeps
//! serving with the last decisions, kept on disk for a restart, and refuses writes.

mod etcd;
mod lineage;
mod programs;
mod quorum;
mod session;
mod state;
mod views;
mod voice;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::clock::{rfc3339, unix_ms};
use crate::config;
use crate::control::Control;
use crate::state::StateFile;

pub use state::Decisions;

/// How long a write waits for the member's own watch to apply it before answering.
const APPLY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd is not reachable, so the fleet cannot agree on a change; nothing was changed ({0})")]
    Unavailable(#[source] Unreachable),
    /// The write was sent and etcd did not answer in time: it may still land.
    #[error("etcd did not answer within {0:?}: the outcome is unknown; see /status (every member converges on what etcd holds)")]
    Unknown(Duration),
    #[error("no change is taken while etcd's history is in question: {0}")]
    Diverged(String),
    #[error("etcd's history is not in question here: there is nothing to confirm")]
    NothingToConfirm,
}

/// Why etcd could not take a write.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("disconnected")]
    Disconnected,
    #[error("etcd did not answer in time")]
    Silent,
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
}

/// What `/status` shows of the fleet.
#[derive(Default)]
struct Link {
    connected: bool,
    /// Unix ms of the last change of `connected`.
    since_ms: u64,
    /// The etcd revision applied here.
    revision: i64,
    last_error: Option<String>,
    /// Members alive in etcd: name -> what they last said of themselves.
    members: BTreeMap<String, Value>,
    /// Keys whose value in etcd is invalid (they keep their last valid value).
    invalid: state::Invalid,
    /// Why etcd's view is not applied (its history went back), until confirmed.
    diverged: Option<String>,
    /// The epoch number that etcd holds now (0: none).
    etcd_epoch: u64,
    /// Another live process announces itself under this member's name.
    duplicate_name: Option<String>,
    /// Every member's view of the sites' health (`{prefix}/health/{member}`), this
    /// member's own included.
    views: BTreeMap<String, views::View>,
    /// The sites a majority of live members see down, as last decided.
    fleet_down: std::collections::BTreeSet<String>,
    /// This member sees the tier in use down and the fleet does not (logged once).
    cut_off: bool,
    /// Every member's report of its latest events (`{prefix}/reports/{member}`).
    reports: BTreeMap<String, Value>,
    /// The member that speaks for the fleet (`{prefix}/leader`).
    leader: Option<String>,
}

pub struct Fleet {
    settings: config::Fleet,
    pub name: String,
    control: Arc<Control>,
    link: Mutex<Link>,
    applied: watch::Sender<i64>,
    client: Mutex<Option<etcd::Client>>,
    /// The decisions in force (from etcd, or from disk before etcd answered).
    decisions: Mutex<Decisions>,
    state_file: Option<Arc<StateFile>>,
    /// This process, as its member key says.
    me: lineage::Me,
    /// The `[[notify]]` receivers: with a fleet, the leader speaks to them.
    notifiers: Mutex<Vec<config::Notify>>,
    /// What this member measured of its latest events, by `kind/site`.
    own_reports: Mutex<BTreeMap<String, Value>>,
    /// Woken when `own_reports` changed (the session writes them to etcd).
    reports_changed: tokio::sync::Notify,
    /// Woken when the fleet's state may have changed (the leader looks again).
    voice_changed: tokio::sync::Notify,
}

impl Fleet {
    /// Applies the decisions kept in the state file (`kept`, its fleet part), then
    /// connects and watches in the background.
    pub fn start(
        settings: config::Fleet,
        control: Arc<Control>,
        name: String,
        kept: Option<Value>,
        state_file: Option<Arc<StateFile>>,
    ) -> Arc<Fleet> {
        let kept: Decisions = kept.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        let notifiers = control.current().config.notify.clone();
        let fleet = Arc::new(Fleet {
            settings,
            name,
            control,
            link: Mutex::new(Link {
                since_ms: unix_ms(),
                revision: kept.revision,
                ..Link::default()
            }),
            applied: watch::channel(kept.revision).0,
            client: Mutex::new(None),
            decisions: Mutex::new(kept.clone()),
            state_file,
            me: lineage::Me::new(),
            notifiers: Mutex::new(notifiers),
            own_reports: Mutex::default(),
            reports_changed: tokio::sync::Notify::new(),
            voice_changed: tokio::sync::Notify::new(),
        });
        voice::listen(&fleet);
        programs::spawn(&fleet);
        if fleet.settings.quorum {
            // The last fleet decision holds until the fleet decides again: a member
            // that starts cut off does not fail over alone.
            fleet.lock_link().fleet_down = kept.fleet_down.clone();
            fleet
                .control
                .set_fleet_down(Some(kept.fleet_down.iter().cloned().collect()));
        }
        if kept.revision > 0 {
            tracing::info!(
                revision = kept.revision,
                "fleet: applying the decisions kept on disk until etcd answers"
            );
            fleet.apply(kept);
        }
        tokio::spawn(session::run(Arc::downgrade(&fleet)));
        fleet
    }

    fn lock_link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decisions in force here.
    fn decisions(&self) -> Decisions {
        self.decisions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_invalid(&self, invalid: state::Invalid) {
        metrics::gauge!("splitgate_fleet_invalid_keys").set(invalid.len() as f64);
        self.lock_link().invalid = invalid;
    }

    /// Records whether etcd's view is refused, and the epoch etcd holds.
    fn set_diverged(&self, reason: Option<String>, etcd_epoch: u64) {
        let mut link = self.lock_link();
        match (&link.diverged, &reason) {
            (None, Some(why)) => tracing::error!("fleet: etcd's view is not applied: {why}"),
            (Some(_), None) => {
                tracing::warn!("fleet: etcd's view is applied again (confirmed, or its history is whole)")
            }
            _ => {}
        }
        link.diverged = reason;
        link.etcd_epoch = etcd_epoch;
        metrics::gauge!("splitgate_fleet_diverged").set(if link.diverged.is_some() { 1.0 } else { 0.0 });
    }

    /// Another process wrote this member's key: two members share a name.
    fn duplicate_name(&self, value: &Value) {
        let what = format!(
            "another process announces itself as member \"{}\" (host {}, pid {}): give each member its own [fleet] name",
            self.name,
            state::shown(value["host"].as_str().unwrap_or("?").as_bytes()),
            value["pid"].as_u64().unwrap_or(0),
        );
        let mut link = self.lock_link();
        if link.duplicate_name.as_ref() != Some(&what) {
            tracing::warn!("fleet: {what}");
            metrics::counter!("splitgate_fleet_duplicate_name_total").increment(1);
        }
        link.duplicate_name = Some(what);
    }

    /// Applies a whole set of decisions at a revision: one snapshot swap for the
    /// weights; drills that appeared start here, drills that were removed end.
    fn apply(&self, mut decisions: Decisions) {
        // The fleet's view of health is not in these keys: it stays what was decided.
        decisions.fleet_down = self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fleet_down
            .clone();
        let revision = decisions.revision;
        self.control.replace_weights(decisions.weights.clone());
        self.sync_drills(&decisions.drills, &decisions.drill_ids);
        if let Some(file) = &self.state_file {
            file.set_fleet(serde_json::to_value(&decisions).unwrap_or_default());
        }
        *self.decisions.lock().unwrap_or_else(|p| p.into_inner()) = decisions;
        self.advance(revision);
        self.voice_changed.notify_one();
    }

    /// Everything up to `revision` is applied here.
    fn advance(&self, revision: i64) {
        self.lock_link().revision = revision;
        metrics::gauge!("splitgate_fleet_revision").set(revision as f64);
        self.applied.send_replace(revision);
    }

    fn sync_drills(
        &self,
        drills: &std::collections::HashMap<String, u64>,
        ids: &std::collections::HashMap<String, u64>,
    ) {
        let now = unix_ms();
        let running: Vec<String> = self.control.drills().into_iter().map(|(site, _)| site).collect();
        for (site, &until) in drills {
            // A drill that stopped itself here is not started again for the same decision.
            let aborted_here = self
                .control
                .aborted_drill_until(site)
                .is_some_and(|at| at.abs_diff(until) < 1000);
            if until > now && !running.contains(site) && !aborted_here {
                // A value written by hand may say "for ever": no drill runs past 24 h.
                let left = Duration::from_millis(until - now).min(crate::control::MAX_DRILL);
                let options = crate::control::DrillOptions {
                    fleet_id: ids.get(site).copied(),
                    ..Default::default()
                };
                let _ = self.control.start_drill_with(site, left, options);
            }
        }
        for site in running.iter().filter(|s| !drills.contains_key(*s)) {
            let _ = self.control.end_drill(site);
        }
    }

    /// Starts (`Some(duration)`) or ends (`None`) a drill on every member: one etcd
    /// write, applied by each member from its watch.
    pub async fn write_drill(&self, site: &str, duration: Option<Duration>) -> Result<(), FleetError> {
        let key = format!("{}/sites/{site}/drill", self.settings.prefix);
        let op = match duration {
            Some(d) => {
                let until = unix_ms() + d.as_millis() as u64;
                etcd::TxnOp::put(key, json!({ "until": until, "by": self.name }).to_string(), None)
            }
            None => etcd::TxnOp::delete(key),
        };
        self.commit(vec![op]).await
    }

    /// Releases a held site on every member: one etcd write, acted on by each member
    /// that holds it when its watch sees it.
    pub async fn write_failback(&self, site: &str) -> Result<(), FleetError> {
        let key = format!("{}/sites/{site}/failback", self.settings.prefix);
        let value = json!({ "at": unix_ms(), "by": self.name }).to_string();
        self.commit(vec![etcd::TxnOp::put(key, value, None)]).await
    }

    /// Re-applies the fleet's decisions (after a config reload rebuilt the snapshot).
    pub fn reapply(&self) {
        let weights = self.decisions.lock().unwrap_or_else(|p| p.into_inner()).weights.clone();
        self.control.replace_weights(weights);
    }

    fn set_connected(&self, connected: bool, error: Option<String>) {
        let mut link = self.lock_link();
        if link.connected != connected {
            link.connected = connected;
            link.since_ms = unix_ms();
            if connected {
                tracing::info!(revision = link.revision, "fleet: connected to etcd");
            } else {
                tracing::warn!(error = ?error, revision = link.revision, "fleet: etcd unreachable; serving with the last decisions");
            }
        }
        if error.is_some() {
            link.last_error = error;
        }
        metrics::gauge!("splitgate_fleet_connected").set(if connected { 1.0 } else { 0.0 });
    }

    /// Sets (`Some`) or clears (`None`) weight overrides of several sites in one etcd
    /// transaction, and returns once this member has applied it.
    pub async fn write_weights(&self, changes: &[(String, Option<i64>)]) -> Result<(), FleetError> {
        let ops: Vec<etcd::TxnOp> = changes
            .iter()
            .map(|(site, weight)| {
                let key = self.weight_key(site);
                match weight {
                    Some(w) => etcd::TxnOp::put(key, config::Weight::clamped(*w).get().to_string(), None),
                    None => etcd::TxnOp::delete(key),
                }
            })
            .collect();
        self.commit(ops).await
    }

    /// One transaction; returns once this member's watch has applied it.
    async fn commit(&self, ops: Vec<etcd::TxnOp>) -> Result<(), FleetError> {
        if let Some(why) = self.lock_link().diverged.clone() {
            return Err(FleetError::Diverged(why));
        }
        self.send(ops).await
    }

    /// One transaction as it is; returns once this member's watch has applied it.
    async fn send(&self, ops: Vec<etcd::TxnOp>) -> Result<(), FleetError> {
        let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let connected = self.lock_link().connected;
        let Some(mut client) = client.filter(|_| connected) else {
            return Err(FleetError::Unavailable(Unreachable::Disconnected));
        };
        let txn = etcd::Txn::new().and_then(ops);
        let response = tokio::time::timeout(APPLY_WAIT, client.txn(txn))
            .await
            .map_err(|_| FleetError::Unknown(APPLY_WAIT))?
            .map_err(|e| {
                self.set_connected(false, Some(e.to_string()));
                FleetError::Unavailable(e.into())
            })?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|&r| r >= revision)).await;
        Ok(())
    }

    /// An operator's answer to a refused etcd view (`diverged`): `keep` writes the
    /// decisions kept here back to etcd, else etcd's view is taken as it is; either way
    /// the fleet's epoch is raised, so that every member takes the view from then on.
    pub async fn confirm(&self, keep: bool) -> Result<(), FleetError> {
        let etcd_epoch = {
            let link = self.lock_link();
            if link.diverged.is_none() {
                return Err(FleetError::NothingToConfirm);
            }
            link.etcd_epoch
        };
        let kept = self.decisions();
        let prefix = &self.settings.prefix;
        let number = kept.epoch.max(etcd_epoch).max(1) + 1;
        let mut ops = vec![etcd::TxnOp::put(
            format!("{prefix}/epoch"),
            lineage::epoch_value(number, &self.name, true),
            None,
        )];
        if keep {
            let client = self.client.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(mut client) = client else {
                return Err(FleetError::Unavailable(Unreachable::Disconnected));
            };
            let sites = format!("{prefix}/sites/");
            let options = etcd::GetOptions::new().with_prefix().with_keys_only();
            let present = tokio::time::timeout(APPLY_WAIT, client.get(sites, Some(options)))
                .await
                .map_err(|_| FleetError::Unavailable(Unreachable::Silent))?
                .map_err(|e| FleetError::Unavailable(e.into()))?;
            let wanted: Vec<(String, String)> = kept
                .weights
                .iter()
                .map(|(site, w)| (self.weight_key(site), w.to_string()))
                .chain(kept.drills.iter().map(|(site, until)| {
                    (
                        format!("{prefix}/sites/{site}/drill"),
                        json!({ "until": until, "by": self.name }).to_string(),
                    )
                }))
                .collect();
            for kv in present.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                if !wanted.iter().any(|(k, _)| *k == key) {
                    ops.push(etcd::TxnOp::delete(key));
                }
            }
            ops.extend(wanted.into_iter().map(|(k, v)| etcd::TxnOp::put(k, v, None)));
        }
        tracing::warn!(member = %self.name, keep, epoch = number, "fleet: an operator confirmed etcd's changed history");
        self.send(ops).await?;
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(APPLY_WAIT, applied.wait_for(|_| self.lock_link().diverged.is_none())).await;
        Ok(())
    }

    fn weight_key(&self, site: &str) -> String {
        format!("{}/sites/{site}/weight", self.settings.prefix)
    }

    /// `"fleet": {"connected", "revision", "members", ...}` for `/status`.
    pub fn status(&self) -> Value {
        let (views, fleet_down) = self.views_status();
        let link = self.lock_link();
        json!({
            "failover": if self.settings.quorum { "quorum" } else { "local" },
            "leader": link.leader.clone(),
            "views": views,
            "fleet_down": fleet_down,
            "name": self.name,
            "connected": link.connected,
            "since": rfc3339(link.since_ms),
            "revision": link.revision,
            "members": link.members.keys().collect::<Vec<_>>(),
            "member_states": link.members,
            "last_error": link.last_error,
            "invalid_values": link.invalid,
            "diverged": link.diverged,
            "duplicate_name": link.duplicate_name,
        })
    }
}
