//! Drills: a site taken out on purpose, through the same path as a failure (the
//! snapshot sees it as down: its traffic moves to its peers or the standby tier,
//! retries and all), probed all along, and brought back through slow start when the
//! time is up or the operator ends it. Each drill is an event pair measured like a
//! real outage, so a rehearsal shows the recovery time clients would have seen. A
//! running drill is watched (`abort`) and ends itself when clients suffer from it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Control, State};
use crate::clock::now_ms;
use crate::clock::{rfc3339, unix_ms, unix_of};
use crate::config::Share;
use crate::events::{Kind, Measurements, Outage, Pending};
use crate::state::SavedDrill;

/// The longest drill: a value that asks for more (a hand-written fleet key) is cut here.
pub const MAX_DRILL: Duration = Duration::from_secs(24 * 3600);

/// A drill running on one site.
#[derive(Debug, Clone)]
pub struct Drill {
    /// The `drill_started` event's id.
    pub id: u64,
    /// Process-clock ms when it began.
    pub started_ms: u64,
    pub duration: Duration,
    /// Its own `abort_5xx`; `None`: the config's `[drills] abort_5xx`.
    pub abort_5xx: Option<Share>,
    /// The fleet-wide id, with `[fleet]`.
    pub fleet_id: Option<u64>,
}

/// What a drill is asked with besides its site and duration.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The drill's own abort rule (`{"abort_5xx": "5%"}`).
    pub abort_5xx: Option<Share>,
    /// The drill program that starts it.
    pub program: Option<ProgramLabel>,
    /// With `[fleet]`: the fleet-wide id of the drill (the etcd revision that wrote
    /// it), the same on every member; its events carry it as `drill`.
    pub fleet_id: Option<u64>,
}

/// A drill program as events name it: `drill[0]` and its schedule.
#[derive(Debug, Clone)]
pub struct ProgramLabel {
    pub label: String,
    pub schedule: String,
}

/// How a drill ended (`drill_ended`'s `ended`).
pub(super) enum Ending {
    /// Its duration passed.
    TimeUp,
    /// An operator (or the fleet) ended it.
    Ended,
    /// It stopped itself to protect users: `reason` and the figures, for the event.
    Aborted(Map<String, Value>),
}

impl Ending {
    fn name(&self) -> &'static str {
        match self {
            Ending::TimeUp => "time_up",
            Ending::Ended => "ended",
            Ending::Aborted(_) => "aborted",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DrillError {
    #[error("no site is named \"{0}\"")]
    UnknownSite(String),
    #[error("a drill already runs on \"{0}\"")]
    AlreadyRunning(String),
    #[error("no drill runs on \"{0}\"")]
    NotRunning(String),
}

impl State {
    /// A drill kept in the state file, running on after a restart as the same drill
    /// (no second `drill_started`): its site out from the first snapshot, its end at
    /// its own time. Returns what the timer needs.
    pub(super) fn resume_drill(&mut self, site: &str, saved: &SavedDrill, now_unix: u64) -> (String, u64, Duration) {
        let left = Duration::from_millis(saved.until.saturating_sub(now_unix)).min(MAX_DRILL);
        let started_ms = now_ms().saturating_sub(now_unix.saturating_sub(saved.started));
        let duration = Duration::from_millis(saved.until.saturating_sub(saved.started));
        self.drills.insert(
            site.to_string(),
            Drill {
                id: saved.id,
                started_ms,
                duration,
                abort_5xx: saved.abort_5xx,
                fleet_id: None,
            },
        );
        self.decisions.drilled.insert(site.to_string());
        self.observer.drill_started(site, started_ms);
        tracing::warn!(site, drill = saved.id, left = ?left, "drill resumed from the state file: the site stays out");
        (site.to_string(), saved.id, left)
    }
}

impl Control {
    /// Takes `site` out for `duration`, with the drill's own abort rule, or as a drill
    /// program's; returns the `drill_started` event's id.
    pub fn start_drill_with(
        self: &Arc<Self>,
        site: &str,
        duration: Duration,
        options: DrillOptions,
    ) -> Result<u64, DrillError> {
        let duration = duration.min(MAX_DRILL);
        let mut state = self.lock_state();
        let current = self.current();
        let Some(route) = current.sites.iter().find(|s| s.name == site) else {
            return Err(DrillError::UnknownSite(site.to_string()));
        };
        if state.drills.contains_key(site) {
            return Err(DrillError::AlreadyRunning(site.to_string()));
        }
        // Answers count from before the site goes out (the watch takes over below).
        let _counting = self.answers.watch();
        let now = now_ms();
        let backends = route.backends.clone();
        let abort_5xx = options.abort_5xx.unwrap_or(current.config.drills.abort_5xx);
        let mut detail = Map::new();
        detail.insert("cause".into(), "drill".into());
        Measurements {
            duration_ms: Some(duration.as_millis() as u64),
            first_failure_at: Some(rfc3339(unix_of(now))),
            detect_ms: Some(0),
            ..Measurements::default()
        }
        .write(&mut detail);
        detail.insert("abort_5xx".into(), abort_5xx.to_string().into());
        if let Some(fleet_id) = options.fleet_id {
            detail.insert("drill".into(), fleet_id.into());
        }
        if let Some(program) = &options.program {
            detail.insert("program".into(), program.label.clone().into());
            detail.insert("schedule".into(), program.schedule.clone().into());
        }
        let id = self.events.observe(Pending {
            kind: Kind::DrillStarted,
            site: Some(site.to_string()),
            at_ms: unix_ms(),
            detail,
            outage: Some(Outage {
                baseline: Some(Outage::counters(&backends)),
                backends,
                first_failure_ms: now,
            }),
        });
        tracing::warn!(site, ?duration, drill = id, abort_5xx = %abort_5xx, program = options.program.as_ref().map(|p| p.label.as_str()),
            "drill started: the site is taken out");
        state.drills.insert(
            site.to_string(),
            Drill {
                id,
                started_ms: now,
                duration,
                abort_5xx: options.abort_5xx,
                fleet_id: options.fleet_id,
            },
        );
        state.decisions.drilled.insert(site.to_string());
        state.decisions.ramp_from.remove(site);
        state.observer.drill_started(site, now);
        self.publish(&mut state);
        drop(state);
        self.end_drill_after(site.to_string(), id, duration);
        Ok(id)
    }

    /// Ends drill `id` on `site` when `left` has passed (unless it ended before), and
    /// watches it meanwhile (`abort`).
    pub(super) fn end_drill_after(self: &Arc<Self>, site: String, id: u64, left: Duration) {
        self.watch_drill(site.clone(), id);
        let control = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            if let Some(control) = control.upgrade() {
                let _ = control.finish_drill(&site, Some(id), Ending::TimeUp);
            }
        });
    }

    /// Ends the drill on `site` now; returns the `drill_ended` event's id.
    pub fn end_drill(&self, site: &str) -> Result<u64, DrillError> {
        if !self.current().sites.iter().any(|s| s.name == site) {
            return Err(DrillError::UnknownSite(site.to_string()));
        }
        self.finish_drill(site, None, Ending::Ended)
    }

    /// The Unix ms at which the last drill on `site` that stopped itself was to end: a
    /// fleet's decision to drill until then is not taken up again on this member.
    pub fn aborted_drill_until(&self, site: &str) -> Option<u64> {
        self.lock_state().aborted.get(site).copied()
    }

    /// The drills running now.
    pub fn drills(&self) -> Vec<(String, Drill)> {
        let state = self.lock_state();
        state.drills.iter().map(|(s, d)| (s.clone(), d.clone())).collect()
    }

    /// Ends the drill on `site` (only drill `only`, for its timer and its watch).
    pub(super) fn finish_drill(&self, site: &str, only: Option<u64>, ending: Ending) -> Result<u64, DrillError> {
        let mut state = self.lock_state();
        let drill = match state.drills.get(site) {
            Some(d) if only.is_none_or(|id| id == d.id) => d.clone(),
            _ => return Err(DrillError::NotRunning(site.to_string())),
        };
        state.drills.remove(site);
        state.decisions.drilled.remove(site);
        if let Ending::Aborted(_) = ending {
            let until = unix_of(drill.started_ms) + drill.duration.as_millis() as u64;
            state.aborted.insert(site.to_string(), until);
        }
        let now = now_ms();
        state.decisions.ramp_from.insert(site.to_string(), now);
        let mut detail = Map::new();
        detail.insert("drill".into(), drill.fleet_id.unwrap_or(drill.id).into());
        detail.insert("ended".into(), ending.name().into());
        Measurements {
            down_ms: Some(Some(now.saturating_sub(drill.started_ms))),
            full_weight_ms: Some(None),
            ..Measurements::default()
        }
        .write(&mut detail);
        let how = ending.name();
        metrics::counter!("splitgate_drills_ended_total", "site" => site.to_string(), "ended" => how).increment(1);
        if let Ending::Aborted(abort) = ending {
            detail.extend(abort);
        }
        let id = self.events.observe(Pending {
            kind: Kind::DrillEnded,
            site: Some(site.to_string()),
            at_ms: unix_ms(),
            detail,
            outage: None,
        });
        state.observer.drill_ended(site, id, now);
        tracing::warn!(
            site,
            drill = drill.id,
            how,
            "drill ended: the site comes back through slow start"
        );
        self.publish(&mut state);
        Ok(id)
    }
}
