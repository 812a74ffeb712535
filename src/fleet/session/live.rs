//! A connected session's steps: this member's keys put under the lease (member key,
//! health view, reports) and kept up to date, each watched revision applied as one
//! change, and the lease kept alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::SessionError;
use crate::fleet::etcd::{Client, Event, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchResponse};
use crate::fleet::state::{self, Decisions, Epoch, Invalid, Key};
use crate::fleet::views::View;
use crate::fleet::voice::Voice;
use crate::fleet::Fleet;

/// A connected session after its first read: this member's keys under the lease, the
/// decisions in force, and what it last published.
pub(super) struct Live<'a> {
    fleet: &'a Arc<Fleet>,
    pub(super) client: Client,
    lease: i64,
    member_key: String,
    health_key: String,
    reports_key: String,
    decisions: Decisions,
    invalid: Invalid,
    /// etcd's history is in question: nothing is decided until it is confirmed.
    refusing: bool,
    view: View,
    report: Value,
    voice: Voice,
    /// A member announces the revision of the decisions it applied, not every revision
    /// it saw: members' own keys change revisions too, and announcing those would make
    /// every member rewrite its key after every other member's write, for ever.
    announced: i64,
    /// The last revision taken from the watch.
    pub(super) seen: i64,
}

impl<'a> Live<'a> {
    /// Puts this member's key, its health view and its reports under the lease, and
    /// campaigns for the leadership. Also returns the control plane's publications,
    /// taken between the view and the reports (as the view is decided on).
    pub(super) async fn announce(
        fleet: &'a Arc<Fleet>,
        mut client: Client,
        lease: i64,
        decisions: Decisions,
        invalid: Invalid,
        refusing: bool,
    ) -> Result<(Live<'a>, watch::Receiver<u64>), SessionError> {
        let prefix = &fleet.settings.prefix;
        let member_key = format!("{prefix}/members/{}", fleet.name);
        let value = member_value(fleet, decisions.revision);
        put_leased(&mut client, &member_key, value, lease, "member key").await?;
        let health_key = format!("{prefix}/health/{}", fleet.name);
        // Subscribed before the view is read: a snapshot published while the view is
        // being written (a health flip at start) is heard, not lost until the next one.
        let published = fleet.control.published();
        let view = fleet.own_view();
        put_leased(&mut client, &health_key, view.to_value(), lease, "health view").await?;
        fleet.take_view(&fleet.name, Some(view.clone()));
        fleet.decide();
        // Decided again once the fleet has had time to be heard (`quorum::HEAR_MS`).
        let later = Arc::downgrade(fleet);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(crate::fleet::quorum::HEAR_MS + 50)).await;
            if let Some(fleet) = later.upgrade() {
                fleet.decide();
            }
        });
        // Reports of this member's events, and the leadership.
        let reports_key = format!("{prefix}/reports/{}", fleet.name);
        let report = fleet.own_reports();
        put_leased(&mut client, &reports_key, report.to_string(), lease, "reports").await?;
        let mut voice = Voice::new(fleet);
        voice.campaign(&mut client, lease).await?;
        let announced = decisions.revision;
        let live = Live {
            fleet,
            client,
            lease,
            member_key,
            health_key,
            reports_key,
            decisions,
            invalid,
            refusing,
            view,
            report,
            voice,
            announced,
            seen: 0,
        };
        Ok((live, published))
    }

    /// One answer of the watch: the changes of one revision, applied together.
    pub(super) async fn take_revision(&mut self, response: &WatchResponse) -> Result<(), SessionError> {
        if response.canceled() || response.compact_revision() > 0 {
            return Err(SessionError::WatchCancelled(response.cancel_reason().to_owned()));
        }
        let Some(header) = response.header() else {
            return Ok(());
        };
        if response.events().is_empty() || header.revision() <= self.seen {
            return Ok(());
        }
        let fleet = self.fleet;
        let mut change = Change {
            next: self.decisions.clone(),
            members: fleet.lock_link().members.clone(),
            views_changed: false,
        };
        for event in response.events() {
            self.take_event(&mut change, event).await?;
        }
        let joined = change.members.len() != fleet.lock_link().members.len();
        fleet.lock_link().members = change.members;
        if change.views_changed || joined {
            fleet.decide();
        }
        fleet.set_invalid(self.invalid.clone());
        self.seen = header.revision();
        if self.refusing {
            self.refusing = fleet.lock_link().diverged.is_some();
            return Ok(());
        }
        let mut next = change.next;
        next.revision = self.seen;
        let now = &self.decisions;
        if next.weights != now.weights || next.drills != now.drills || next.epoch_id != now.epoch_id {
            self.decisions = next;
            fleet.apply(self.decisions.clone());
        } else {
            // Nothing to apply (a member key, an unchanged value): the revision
            // still counts as applied, so a write waiting for it answers.
            fleet.advance(self.seen);
        }
        Ok(())
    }

    /// One key's change within a revision.
    async fn take_event(&mut self, change: &mut Change, event: &Event) -> Result<(), SessionError> {
        let fleet = self.fleet;
        let Some(kv) = event.kv() else {
            return Ok(());
        };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let meaning = state::key(&fleet.settings.prefix, &key);
        let value = (event.event_type() == EventType::Put).then(|| kv.value());
        let next = &mut change.next;
        match (&meaning, value) {
            (Key::Member(name), Some(value)) => {
                let value = serde_json::from_slice(value).unwrap_or(json!(null));
                if *name == fleet.name && fleet.me.other_process(&value, false) {
                    fleet.duplicate_name(&value);
                }
                change.members.insert(name.to_string(), value);
            }
            (Key::Member(name), None) => {
                change.members.remove(*name);
                change.views_changed = true;
            }
            // Another member's view (this member's own is kept as published).
            (Key::Health(member), value) => {
                if *member != fleet.name {
                    fleet.take_view(member, value.and_then(View::parse));
                    change.views_changed = true;
                }
            }
            // A release of a held site, on every member that holds it.
            (Key::Failback(site), Some(_)) if !self.refusing => {
                if fleet.control.fail_back(site).is_ok() {
                    tracing::info!(site, "fleet: a held site was released by the fleet");
                }
            }
            (Key::Epoch, value) => {
                let confirmed = value
                    .and_then(Epoch::parse)
                    .is_some_and(|e| e.number > self.decisions.epoch && e.number >= 2);
                if value.is_none() || (self.refusing && confirmed) {
                    return Err(SessionError::EpochChanged);
                }
                if !self.refusing {
                    next.take(&self.decisions, &key, &meaning, value, &mut self.invalid);
                }
            }
            (Key::Report(member), value) => {
                let report = value.and_then(|v| serde_json::from_slice(v).ok());
                fleet.take_report(member, report);
            }
            (Key::Leader, value) => {
                let holder = value.map(|v| String::from_utf8_lossy(v).into_owned());
                if fleet.set_leader(holder) {
                    self.voice.campaign(&mut self.client, self.lease).await?;
                }
            }
            // While the history is in question, no decision is taken.
            _ if self.refusing => {}
            (Key::Drill(site), None) => {
                next.take(&self.decisions, &key, &meaning, value, &mut self.invalid);
                next.drill_ids.remove(*site);
            }
            (Key::Drill(site), Some(_)) => {
                next.take(&self.decisions, &key, &meaning, value, &mut self.invalid);
                next.drill_ids.insert(site.to_string(), kv.mod_revision().max(0) as u64);
            }
            _ => next.take(&self.decisions, &key, &meaning, value, &mut self.invalid),
        }
        Ok(())
    }

    /// Writes this member's reports again if they changed.
    pub(super) async fn publish_reports(&mut self) -> Result<(), SessionError> {
        let now = self.fleet.own_reports();
        if now != self.report {
            self.report = now;
            let value = self.report.to_string();
            put_leased(&mut self.client, &self.reports_key, value, self.lease, "reports").await?;
        }
        Ok(())
    }

    /// Writes this member's health view again if it changed, and decides on it.
    pub(super) async fn publish_view(&mut self) -> Result<(), SessionError> {
        let fleet = self.fleet;
        let now = fleet.own_view();
        if !now.same_as(&self.view) {
            self.view = now;
            let value = self.view.to_value();
            put_leased(&mut self.client, &self.health_key, value, self.lease, "health view").await?;
            fleet.take_view(&fleet.name, Some(self.view.clone()));
            fleet.decide();
        }
        Ok(())
    }

    /// One keep-alive of the lease, and the member key again when the decisions
    /// applied have a new revision.
    pub(super) async fn keep_alive(
        &mut self,
        keeper: &mut LeaseKeeper,
        kept: &mut LeaseKeepAliveStream,
    ) -> Result<(), SessionError> {
        keeper.keep_alive().await.map_err(SessionError::KeepAlive)?;
        let answer = kept
            .message()
            .await
            .map_err(SessionError::KeepAlive)?
            .ok_or(SessionError::LeaseLost)?;
        if answer.ttl() <= 0 {
            // Paused past the lease (SIGSTOP, a long GC of the host): the member
            // key is gone; a new session grants a new lease and announces again.
            return Err(SessionError::LeaseExpired);
        }
        if self.announced != self.decisions.revision {
            self.announced = self.decisions.revision;
            let value = member_value(self.fleet, self.announced);
            put_leased(&mut self.client, &self.member_key, value, self.lease, "member key").await?;
        }
        Ok(())
    }
}

/// What one revision of the watch changes, gathered before it is applied.
struct Change {
    next: Decisions,
    members: BTreeMap<String, Value>,
    views_changed: bool,
}

/// The value of this member's key: the revision of the decisions it applied, and the
/// process that speaks under its name.
fn member_value(fleet: &Fleet, revision: i64) -> String {
    json!({
        "revision": revision,
        "generation": fleet.control.current().generation,
        "instance": fleet.me.instance,
        "host": fleet.me.host,
        "pid": fleet.me.pid,
    })
    .to_string()
}

/// Puts `value` at `key` under this session's lease (it goes with the member).
async fn put_leased(
    client: &mut Client,
    key: &str,
    value: String,
    lease: i64,
    what: &'static str,
) -> Result<(), SessionError> {
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(|source| SessionError::Put { what, source })
}
