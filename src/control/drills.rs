//! Drills: a site taken out on purpose, through the same path as a failure (the
//! snapshot sees it as down: its traffic moves to its peers or the standby tier,
//! retries and all), probed all along, and brought back through slow start when the
//! time is up or the operator ends it. Each drill is an event pair measured like a
//! real outage, so a rehearsal shows the recovery time clients would have seen.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Control, State};
use crate::clock::now_ms;
use crate::clock::{rfc3339, unix_ms, unix_of};
use crate::events::{Kind, Outage, Pending};
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
            },
        );
        self.decisions.drilled.insert(site.to_string());
        self.observer.drill_started(site, started_ms);
        tracing::warn!(site, drill = saved.id, left = ?left, "drill resumed from the state file: the site stays out");
        (site.to_string(), saved.id, left)
    }
}

impl Control {
    /// Takes `site` out for `duration`; returns the `drill_started` event's id.
    pub fn start_drill(self: &Arc<Self>, site: &str, duration: Duration) -> Result<u64, DrillError> {
        let duration = duration.min(MAX_DRILL);
        let mut state = self.lock_state();
        let current = self.current();
        let Some(route) = current.sites.iter().find(|s| s.name == site) else {
            return Err(DrillError::UnknownSite(site.to_string()));
        };
        if state.drills.contains_key(site) {
            return Err(DrillError::AlreadyRunning(site.to_string()));
        }
        let now = now_ms();
        let backends = route.backends.clone();
        let mut detail = Map::new();
        detail.insert("cause".into(), "drill".into());
        detail.insert("duration_ms".into(), (duration.as_millis() as u64).into());
        detail.insert("first_failure_at".into(), rfc3339(unix_of(now)).into());
        detail.insert("detect_ms".into(), 0.into());
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
        tracing::warn!(site, ?duration, drill = id, "drill started: the site is taken out");
        state.drills.insert(
            site.to_string(),
            Drill {
                id,
                started_ms: now,
                duration,
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

    /// Ends drill `id` on `site` when `left` has passed (unless it ended before).
    pub(super) fn end_drill_after(self: &Arc<Self>, site: String, id: u64, left: Duration) {
        let control = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(left).await;
            if let Some(control) = control.upgrade() {
                let _ = control.finish_drill(&site, Some(id), "time_up");
            }
        });
    }

    /// Ends the drill on `site` now; returns the `drill_ended` event's id.
    pub fn end_drill(&self, site: &str) -> Result<u64, DrillError> {
        if !self.current().sites.iter().any(|s| s.name == site) {
            return Err(DrillError::UnknownSite(site.to_string()));
        }
        self.finish_drill(site, None, "ended")
    }

    /// The drills running now.
    pub fn drills(&self) -> Vec<(String, Drill)> {
        let state = self.lock_state();
        state.drills.iter().map(|(s, d)| (s.clone(), d.clone())).collect()
    }

    /// Ends the drill on `site` (only drill `only`, for its timer).
    fn finish_drill(&self, site: &str, only: Option<u64>, how: &str) -> Result<u64, DrillError> {
        let mut state = self.lock_state();
        let drill = match state.drills.get(site) {
            Some(d) if only.is_none_or(|id| id == d.id) => d.clone(),
            _ => return Err(DrillError::NotRunning(site.to_string())),
        };
        state.drills.remove(site);
        state.decisions.drilled.remove(site);
        let now = now_ms();
        state.decisions.ramp_from.insert(site.to_string(), now);
        let mut detail = Map::new();
        detail.insert("drill".into(), drill.id.into());
        detail.insert("down_ms".into(), now.saturating_sub(drill.started_ms).into());
        detail.insert("ended".into(), how.into());
        detail.insert("full_weight_ms".into(), Value::Null);
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
