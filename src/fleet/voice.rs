//! One voice for the fleet. Every member reports what it measured of its own events
//! (`{prefix}/reports/{member}`, under its lease) instead of notifying on its own; the
//! member that holds `{prefix}/leader` (created under its lease, so it goes with the
//! member) delivers the fleet's events to the `[[notify]]` receivers, once each: a
//! site down or up when a majority of live members see it so, a failover or failback
//! when the fleet's tier changes, a drill started or ended. What was announced is kept
//! in etcd (`{prefix}/fleet/announced`: the state last announced and its sequence
//! number), written after each delivery and only if no other leader wrote it since, so
//! a new leader carries on from there: nothing is lost, and nothing is said twice
//! unless a leader dies between a delivery and its mark (then the receiver sees the
//! same `fleet_event` number again). While etcd is unreachable each member notifies
//! on its own, marked `"voice": "member"`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{self, Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::Fleet;
use crate::clock::{rfc3339, unix_ms};
use crate::events::{notify, Event, Kind, Measurements, Sink};

/// Reports kept per member: the latest event of each kind and site.
const REPORTS_KEPT: usize = 32;
/// How long the leader waits for every live member's figures of an event.
const FIGURES_WAIT: Duration = Duration::from_millis(1500);
/// A report older than this is not about the event being announced.
const REPORT_FRESH_MS: u64 = 120_000;

/// The figures a member reports of one of its events (`{prefix}/reports/{member}`),
/// and the fleet event lists for each member: `null` where the event has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MemberFigures {
    #[serde(default)]
    detect_ms: Option<u64>,
    #[serde(default)]
    traffic_moved_ms: Option<u64>,
    #[serde(default)]
    client_errors: Option<u64>,
}

impl MemberFigures {
    fn of(measurements: &Measurements) -> MemberFigures {
        MemberFigures {
            detect_ms: measurements.detect_ms,
            traffic_moved_ms: measurements.traffic_moved_ms,
            client_errors: measurements.client_errors,
        }
    }

    /// Each figure from the first of `reports` that has it.
    fn first_of(reports: &[&Value]) -> MemberFigures {
        reports
            .iter()
            .map(|r| MemberFigures::deserialize(*r).unwrap_or_default())
            .fold(MemberFigures::default(), |found, next| MemberFigures {
                detect_ms: found.detect_ms.or(next.detect_ms),
                traffic_moved_ms: found.traffic_moved_ms.or(next.traffic_moved_ms),
                client_errors: found.client_errors.or(next.client_errors),
            })
    }

    /// An object with the three figures (more keys may be added to it).
    fn to_value(self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({}))
    }
}

/// What the fleet last announced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Announced {
    seq: u64,
    down: BTreeSet<String>,
    /// `None`: not known yet (the first leader records the tier without an event).
    tier: Option<u32>,
    /// Drills by site, with their fleet-wide id.
    drills: BTreeMap<String, u64>,
}

/// One change to announce (`silent`: only recorded), and the state once it is.
struct Step {
    kind: Kind,
    site: Option<String>,
    detail: Map<String, Value>,
    next: Announced,
    silent: bool,
}

impl Step {
    fn new(kind: Kind, site: Option<&String>, detail: Map<String, Value>, next: Announced) -> Step {
        Step {
            kind,
            site: site.cloned(),
            detail,
            next,
            silent: false,
        }
    }
}

impl Announced {
    /// The first difference between what was announced and `now`, in a fixed order.
    fn next_step(&self, now: &Announced) -> Option<Step> {
        let mut next = self.clone();
        next.seq += 1;
        let mut detail = Map::new();
        if let Some(site) = now.down.difference(&self.down).next() {
            next.down.insert(site.clone());
            return Some(Step::new(Kind::SiteDown, Some(site), detail, next));
        }
        if let Some(site) = self.down.difference(&now.down).next() {
            next.down.remove(site);
            return Some(Step::new(Kind::SiteUp, Some(site), detail, next));
        }
        if let Some((site, &id)) = now.drills.iter().find(|(s, id)| self.drills.get(*s) != Some(id)) {
            next.drills.insert(site.clone(), id);
            detail.insert("drill".into(), id.into());
            return Some(Step::new(Kind::DrillStarted, Some(site), detail, next));
        }
        if let Some((site, &id)) = self.drills.iter().find(|(s, _)| !now.drills.contains_key(*s)) {
            next.drills.remove(site);
            detail.insert("drill".into(), id.into());
            return Some(Step::new(Kind::DrillEnded, Some(site), detail, next));
        }
        match (self.tier, now.tier) {
            (Some(from), Some(to)) if from != to => {
                next.tier = Some(to);
                detail.insert("from_priority".into(), from.into());
                detail.insert("to_priority".into(), to.into());
                let kind = if to > from { Kind::Failover } else { Kind::Failback };
                Some(Step::new(kind, None, detail, next))
            }
            (None, Some(to)) => {
                // Nothing to compare with: recorded, not announced.
                next.tier = Some(to);
                next.seq -= 1;
                Some(Step {
                    silent: true,
                    ..Step::new(Kind::Failback, None, detail, next)
                })
            }
            _ => None,
        }
    }
}

/// Why the leadership could not be taken or an announcement made (the session ends
/// for the first; the leader logs the second and tries again).
#[derive(Debug, thiserror::Error)]
pub(super) enum VoiceError {
    #[error("leader: {0}")]
    Campaign(#[source] etcd::Error),
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error("another member announced meanwhile")]
    Raced,
}

/// A session's part in the leadership: it campaigns when the key is free and runs the
/// leader's task while it holds it; dropping it (the session ended) stops the task.
pub(super) struct Voice {
    fleet: Weak<Fleet>,
    leading: Option<tokio::task::JoinHandle<()>>,
}

impl Voice {
    pub(super) fn new(fleet: &Arc<Fleet>) -> Voice {
        Voice {
            fleet: Arc::downgrade(fleet),
            leading: None,
        }
    }

    /// Takes the leadership if no member holds it; starts speaking if this member does.
    pub(super) async fn campaign(&mut self, client: &mut Client, lease: i64) -> Result<(), VoiceError> {
        let Some(fleet) = self.fleet.upgrade() else {
            return Ok(());
        };
        let key = format!("{}/leader", fleet.settings.prefix);
        let take = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                fleet.name.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let answer = client.txn(take).await.map_err(VoiceError::Campaign)?;
        if answer.succeeded() {
            tracing::info!(member = %fleet.name, "fleet: this member speaks for the fleet now");
            fleet.set_leader(Some(fleet.name.clone()));
        }
        if fleet.is_leader() && self.leading.as_ref().is_none_or(|t| t.is_finished()) {
            self.leading = Some(tokio::spawn(lead(self.fleet.clone(), client.clone())));
        }
        Ok(())
    }
}

impl Drop for Voice {
    fn drop(&mut self) {
        if let Some(task) = self.leading.take() {
            task.abort();
        }
    }
}

/// The leader's loop: announce every change, one at a time, until the leadership or
/// the session ends.
async fn lead(fleet: Weak<Fleet>, mut client: Client) {
    loop {
        let Some(member) = fleet.upgrade() else {
            return;
        };
        if !member.is_leader() {
            return;
        }
        let changed = member.voice_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let spoke = match speak_once(&member, &mut client).await {
            Ok(spoke) => spoke,
            Err(e) => {
                tracing::warn!(error = %e, "fleet: the leader could not announce; trying again");
                false
            }
        };
        // The task holds the fleet while it waits: it is stopped with its session.
        if !spoke {
            let _ = tokio::time::timeout(Duration::from_secs(2), changed).await;
        }
    }
}

/// Announces the next change, if any: delivered to every receiver, then marked.
async fn speak_once(fleet: &Arc<Fleet>, client: &mut Client) -> Result<bool, VoiceError> {
    let key = format!("{}/fleet/announced", fleet.settings.prefix);
    let read = client.get(key.as_str(), None).await?;
    let (announced, revision) = match read.kvs().first() {
        Some(kv) => (
            serde_json::from_slice(kv.value()).unwrap_or_default(),
            kv.mod_revision(),
        ),
        None => (Announced::default(), 0),
    };
    let Some(step) = announced.next_step(&fleet.fleet_state(&announced)) else {
        return Ok(false);
    };
    if !step.silent {
        let event = fleet.fleet_event(&step).await;
        let body = event.to_string();
        tracing::warn!(event = %body, "fleet event");
        let notifiers = fleet.notifiers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        notify::deliver_to_all(&notifiers, &body, step.next.seq).await;
    }
    let value = serde_json::to_string(&step.next)?;
    let mark = Txn::new()
        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, revision)])
        .and_then([TxnOp::put(key.as_str(), value, None)]);
    let answer = client.txn(mark).await?;
    if !answer.succeeded() {
        return Err(VoiceError::Raced);
    }
    Ok(true)
}

impl Fleet {
    /// Whether this member holds the fleet's leadership now.
    pub(super) fn is_leader(&self) -> bool {
        let link = self.lock_link();
        link.connected && link.leader.as_deref() == Some(self.name.as_str())
    }

    /// Records who leads (`None`: nobody); says whether the leadership is free.
    pub(super) fn set_leader(&self, holder: Option<String>) -> bool {
        let free = holder.is_none();
        self.lock_link().leader = holder;
        self.voice_changed.notify_one();
        free
    }

    pub(super) fn take_report(&self, member: &str, report: Option<Value>) {
        let mut link = self.lock_link();
        match report {
            Some(r) => link.reports.insert(member.to_string(), r),
            None => link.reports.remove(member),
        };
    }

    /// What this member reports of its latest events (the value of its report key).
    pub(super) fn own_reports(&self) -> Value {
        let reports = self.own_reports.lock().unwrap_or_else(|p| p.into_inner());
        Value::Object(reports.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The fleet's state now, as the leader sees it.
    fn fleet_state(&self, announced: &Announced) -> Announced {
        let decisions = self.decisions();
        let link = self.lock_link();
        let live: BTreeSet<&String> = link.members.keys().chain([&self.name]).collect();
        let tier = if self.settings.quorum {
            self.control.current().mode_priority()
        } else {
            // Each member alone: the fleet's tier is the one a majority of members use.
            let tiers: Vec<Option<u32>> = link
                .views
                .iter()
                .filter(|(m, _)| live.contains(m))
                .map(|(_, v)| v.tier)
                .collect();
            let majority = tiers
                .iter()
                .find(|t| tiers.iter().filter(|u| u == t).count() * 2 > live.len())
                .copied();
            majority.flatten().or(announced.tier)
        };
        // A drill whose time is up has ended, though its key may stay in etcd.
        let now = unix_ms();
        let drills = decisions
            .drills
            .iter()
            .filter(|(_, &until)| until > now)
            .map(|(site, _)| (site.clone(), decisions.drill_ids.get(site).copied().unwrap_or(0)))
            .collect();
        Announced {
            seq: announced.seq,
            down: link.fleet_down.clone(),
            tier,
            drills,
        }
    }

    /// The fleet event of `step`, with each live member's figures (waiting a moment for
    /// members whose report has not arrived).
    async fn fleet_event(&self, step: &Step) -> Value {
        // A failover's figures are those of the outage behind it: each member's own
        // failover event, then its site_down of the sites the fleet sees down.
        let mut report_keys = vec![match &step.site {
            Some(site) => format!("{}/{site}", step.kind.name()),
            None => step.kind.name().to_string(),
        }];
        if step.kind == Kind::Failover {
            report_keys.extend(step.next.down.iter().map(|site| format!("site_down/{site}")));
        }
        let since = unix_ms().saturating_sub(REPORT_FRESH_MS);
        let started = tokio::time::Instant::now();
        let members = loop {
            let (members, missing) = {
                let link = self.lock_link();
                let live: BTreeSet<&String> = link.members.keys().chain([&self.name]).collect();
                let mut members = Map::new();
                let own = self.own_reports();
                for name in &live {
                    let all = if **name == self.name {
                        Some(&own)
                    } else {
                        link.reports.get(*name)
                    };
                    let fresh: Vec<&Value> = report_keys
                        .iter()
                        .filter_map(|k| all.and_then(|r| r.get(k)))
                        .filter(|r| r["at"].as_u64().is_some_and(|at| at >= since))
                        .collect();
                    if fresh.is_empty() {
                        continue;
                    }
                    let mut figures = MemberFigures::first_of(&fresh).to_value();
                    figures["event"] = fresh[0]["id"].clone();
                    members.insert((*name).clone(), figures);
                }
                let missing = live.len() - members.len();
                (members, missing)
            };
            if missing == 0 || started.elapsed() >= FIGURES_WAIT {
                break members;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut event = Map::new();
        event.insert("fleet_event".into(), step.next.seq.into());
        event.insert("kind".into(), step.kind.name().into());
        event.insert("site".into(), step.site.clone().map_or(Value::Null, Value::String));
        event.insert("at".into(), rfc3339(unix_ms()).into());
        event.insert("fleet".into(), self.settings.prefix.clone().into());
        event.insert("voice".into(), "fleet".into());
        event.insert("leader".into(), self.name.clone().into());
        event.extend(step.detail.clone());
        event.insert("members".into(), Value::Object(members));
        Value::Object(event)
    }

    /// Sets the receivers after a reload.
    pub fn set_notifiers(&self, notifiers: Vec<crate::config::Notify>) {
        *self.notifiers.lock().unwrap_or_else(|p| p.into_inner()) = notifiers;
    }
}

/// Takes this member's settled events in place of the notifiers: each becomes its
/// report; while etcd is unreachable it is also delivered by this member alone.
pub(super) fn listen(fleet: &Arc<Fleet>) {
    let (queue, mut events) = mpsc::channel::<Arc<Event>>(1024);
    fleet.control.events.set_sinks(
        "notify",
        vec![Sink {
            name: "notify",
            queue,
            amendments: false,
            dropped: None,
        }],
    );
    let weak = Arc::downgrade(fleet);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Some(fleet) = weak.upgrade() else {
                return;
            };
            fleet.report(&event);
            if !fleet.lock_link().connected {
                let mut body = event.to_json();
                body["voice"] = json!("member");
                body["member"] = json!(fleet.name);
                let notifiers = fleet.notifiers.lock().unwrap_or_else(|p| p.into_inner()).clone();
                notify::deliver_to_all(&notifiers, &body.to_string(), event.id).await;
            }
        }
    });
}

impl Fleet {
    fn report(&self, event: &Event) {
        let key = match (&event.site, event.kind) {
            (_, Kind::Failover | Kind::Failback) | (None, _) => event.kind.name().to_string(),
            (Some(site), kind) => format!("{}/{site}", kind.name()),
        };
        let mut report = MemberFigures::of(&event.measurements()).to_value();
        report["id"] = event.id.into();
        report["at"] = event.at_ms.into();
        {
            let mut reports = self.own_reports.lock().unwrap_or_else(|p| p.into_inner());
            reports.insert(key, report);
            while reports.len() > REPORTS_KEPT {
                let oldest = reports
                    .iter()
                    .min_by_key(|(_, r)| r["at"].as_u64().unwrap_or(0))
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => reports.remove(&k),
                    None => break,
                };
            }
        }
        self.reports_changed.notify_one();
        self.voice_changed.notify_one();
    }
}
