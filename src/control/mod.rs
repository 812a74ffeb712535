//! The single writer of the routing snapshot. Config applies, run-time weight overrides,
//! drills (`drills`), health flips and slow-start ticks all rebuild the snapshot here,
//! one at a time, publish it with one atomic swap, and hand old and new to the event
//! observer. Requests never wait on anything in this module.
//! Drills stop themselves through `abort` and run on a schedule through `programs`;
//! backend names are kept resolved by `dns`.

mod abort;
mod dns;
mod drills;
mod failback;
mod programs;
mod quorum;
mod safety;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::{now_ms, unix_ms, unix_of};
use crate::config::{Config, OutOfRange, Weight};
use crate::events::{Events, Observer};
use crate::health::{spawn_prober, HealthRegistry};
use crate::routing::{Decisions, Inputs, Routing};
use crate::state::{Saved, SavedDrill, SavedHold, StateFile};
use crate::upstream::dns::Answers;

pub use drills::{Drill, DrillError, DrillOptions, ProgramLabel, MAX_DRILL};
pub use failback::FailbackError;
pub use safety::Action;

/// How often a ramping (slow-start) site's weight is recomputed.
const RAMP_TICK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeightError {
    #[error("no site is named \"{0}\"")]
    UnknownSite(String),
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

pub struct Control {
    routing: Arc<ArcSwap<Routing>>,
    /// Told of every published change, to keep it in the state file.
    keeper: std::sync::OnceLock<Arc<StateFile>>,
    /// This control itself, for the timers it starts.
    me: std::sync::OnceLock<Weak<Control>>,
    registry: HealthRegistry,
    /// Run-time decisions and the event observer; the lock also serialises publishing.
    state: Mutex<State>,
    pub events: Arc<Events>,
    /// Client answers, counted by the proxy while a drill's abort watch runs.
    answers: Arc<crate::telemetry::ClientAnswers>,
    /// Bumped at every published snapshot: the fleet's view of health follows it.
    published: tokio::sync::watch::Sender<u64>,
    /// Backend names: the resolver and the addresses they resolved to.
    names: dns::Names,
}

#[derive(Default)]
struct State {
    decisions: Decisions,
    /// Drills running now, by site.
    drills: HashMap<String, Drill>,
    /// Each site's failback state (holds and flaps are in `decisions`).
    failback: HashMap<String, failback::SiteFailback>,
    /// Drills that stopped themselves, by site: the Unix ms each was to end at.
    aborted: HashMap<String, u64>,
    observer: Observer,
}

impl Control {
    /// Builds generation 1 and starts probing every backend (needs a tokio runtime),
    /// with the backend names resolved at start (`answers`), starting from
    /// what the state file kept: weight overrides and drills (unless `saved` is the
    /// fleet's, whose decisions the fleet applies), and backends that were down start
    /// down when that health is fresh.
    pub fn restore(
        config: Config,
        events: Arc<Events>,
        saved: Option<(&Saved, bool)>,
        answers: Answers,
    ) -> Arc<Control> {
        let registry = HealthRegistry::new();
        let synced = registry.sync(&config, &answers);
        let mut state = State::default();
        if config.fleet.as_ref().is_some_and(|f| f.quorum) {
            // From the first snapshot on, before the fleet has said anything: the last
            // fleet decision kept, or none down. A member that starts cut off from the
            // active tier never fails over alone, not even for a moment.
            let kept = saved
                .and_then(|(s, _)| s.fleet.as_ref())
                .and_then(|f| serde_json::from_value(f["fleet_down"].clone()).ok())
                .unwrap_or_default();
            state.decisions.fleet_down = Some(kept);
        }
        let mut resumed = Vec::new();
        if let Some((saved, decisions_too)) = saved {
            let now = unix_ms();
            if saved.health_is_fresh(now) {
                for backend in synced.backends.iter().flatten() {
                    if saved.health.get(&Saved::backend_key(&backend.site, &backend.addr)) == Some(&false) {
                        backend.start_down();
                    }
                }
            }
            if decisions_too {
                state.decisions.weights = saved.weights.iter().map(|(s, w)| (s.clone(), *w)).collect();
                for (site, hold) in &saved.holds {
                    if config.sites.iter().any(|s| &s.name == site) && hold.until.is_none_or(|u| u > now) {
                        state.resume_hold(site, hold.until, hold.flaps);
                    }
                }
                for (site, drill) in saved.drills.iter().filter(|(_, d)| d.until > now) {
                    if config.sites.iter().any(|s| &s.name == site) {
                        resumed.push(state.resume_drill(site, drill, now));
                    }
                }
            }
        }
        let routing = Routing::build(Inputs {
            generation: 1,
            config: Arc::new(config),
            backends: synced.backends,
            decisions: &state.decisions,
            now_ms: now_ms(),
        });
        record_routing(&routing);
        let routing = Arc::new(ArcSwap::from_pointee(routing));
        synced.added.into_iter().for_each(spawn_prober);
        let control = Arc::new(Control {
            routing,
            keeper: std::sync::OnceLock::new(),
            me: std::sync::OnceLock::new(),
            registry,
            state: Mutex::new(state),
            events,
            answers: Arc::default(),
            published: tokio::sync::watch::Sender::new(0),
            names: dns::Names::new(answers),
        });
        let _ = control.me.set(Arc::downgrade(&control));
        for (site, id, left) in resumed {
            control.end_drill_after(site, id, left);
        }
        for (site, until) in control.holds() {
            if let Some(until) = until {
                control.release_at(site, until);
            }
        }
        spawn_publisher(Arc::downgrade(&control), control.registry.changes.clone());
        programs::spawn(Arc::downgrade(&control));
        dns::spawn(Arc::downgrade(&control), control.names.settings_changed.clone());
        control
    }

    /// Keeps every change from now on in `file`, and writes it there now.
    pub fn keep_in(self: &Arc<Self>, file: Arc<StateFile>) {
        let _ = self.keeper.set(file.clone());
        let control = Arc::downgrade(self);
        file.spawn_writer(move || control.upgrade().map(|c| c.saved()));
        file.changed();
    }

    /// What the state file should hold now.
    pub fn saved(&self) -> Saved {
        let state = self.lock_state();
        let current = self.current();
        let health = current
            .sites
            .iter()
            .flat_map(|s| s.backends.iter())
            .map(|b| (Saved::backend_key(&b.site, &b.addr), b.is_healthy()))
            .collect();
        let drills = state
            .drills
            .iter()
            .map(|(site, d)| {
                let started = unix_of(d.started_ms);
                let drill = SavedDrill {
                    id: d.id,
                    started,
                    until: started + d.duration.as_millis() as u64,
                    abort_5xx: d.abort_5xx,
                };
                (site.clone(), drill)
            })
            .collect();
        let holds = state
            .decisions
            .held
            .iter()
            .map(|(site, until)| {
                let flaps = state.decisions.flaps.get(site).copied().unwrap_or(0);
                (site.clone(), SavedHold { until: *until, flaps })
            })
            .collect();
        Saved {
            weights: state.decisions.weights.iter().map(|(s, w)| (s.clone(), *w)).collect(),
            drills,
            holds,
            health,
            ..Saved::default()
        }
    }

    /// The state file, when one is kept.
    pub fn state_file(&self) -> Option<&Arc<StateFile>> {
        self.keeper.get()
    }

    /// The swap that requests read from.
    pub fn routing(&self) -> &Arc<ArcSwap<Routing>> {
        &self.routing
    }

    pub fn current(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a new config as the next generation, keeping the health state and
    /// pools of backends that stay. An override survives unless the site is gone or
    /// the file now sets a different weight for it (the newer decision wins).
    pub fn apply(&self, config: Config) -> u64 {
        let mut state = self.lock_state();
        let state = &mut *state;
        let old = self.current();
        state.decisions.weights.retain(|name, _| {
            let before = old.config.sites.iter().find(|s| &s.name == name).map(|s| s.weight);
            let after = config.sites.iter().find(|s| &s.name == name).map(|s| s.weight);
            after.is_some() && before == after
        });
        let known = |name: &String| config.sites.iter().any(|s| &s.name == name);
        state.drills.retain(|name, _| known(name));
        state.decisions.drilled.retain(known);
        state.decisions.ramp_from.retain(|name, _| known(name));
        state.decisions.held.retain(|name, _| known(name));
        state.decisions.flaps.retain(|name, _| known(name));
        state.failback.retain(|name, _| known(name));
        self.names.update(Answers::default(), Some(&config.backend_names()));
        let synced = self.registry.sync(&config, &self.names.answers());
        let generation = old.generation + 1;
        let routing = Routing::build(Inputs {
            generation,
            config: Arc::new(config),
            backends: synced.backends,
            decisions: &state.decisions,
            now_ms: now_ms(),
        });
        log_changes(&old, &routing);
        record_routing(&routing);
        state.observer.observe(&old, &routing, &self.events);
        if routing.config.dns != old.config.dns {
            self.names.settings_changed.notify_one();
        }
        self.routing.store(Arc::new(routing));
        synced.added.into_iter().for_each(spawn_prober);
        if let Some(file) = self.keeper.get() {
            file.changed();
        }
        generation
    }

    /// Looks up the names of `config` that never resolved (new to it, or failing so
    /// far), so that applying it next finds their addresses. Within `LOOKUP_LIMIT`.
    pub async fn resolve_new(&self, config: &Config) {
        let missing = self.names.unresolved(config);
        if missing.is_empty() {
            return;
        }
        let resolver = self.names.resolver(&config.dns);
        let answers = resolver.refresh(&missing, &Answers::default()).await;
        self.names.update(answers, None);
    }

    /// A refresh of the backend names came back: if any name's addresses changed, the
    /// snapshot is rebuilt from the same config (same generation) as on a reload:
    /// backends that stay keep their health, new ones start healthy and are probed,
    /// those gone are retired.
    fn readdress(&self, answers: Answers) {
        let mut state = self.lock_state();
        let state = &mut *state;
        let old = self.current();
        if !self.names.update(answers, Some(&old.config.backend_names())) {
            return;
        }
        let synced = self.registry.sync(&old.config, &self.names.answers());
        let routing = Routing::build(Inputs {
            generation: old.generation,
            config: old.config.clone(),
            backends: synced.backends,
            decisions: &state.decisions,
            now_ms: now_ms(),
        });
        log_readdressed(&old, &routing);
        record_routing(&routing);
        state.observer.observe(&old, &routing, &self.events);
        self.routing.store(Arc::new(routing));
        synced.added.into_iter().for_each(spawn_prober);
        if let Some(file) = self.keeper.get() {
            file.changed();
        }
    }

    /// Sets (`Some`) or clears (`None`) a site's run-time weight override.
    pub fn set_weight(&self, site: &str, weight: Option<i64>) -> Result<(), WeightError> {
        let mut state = self.lock_state();
        let current = self.current();
        let Some(route) = current.sites.iter().find(|s| s.name == site) else {
            return Err(WeightError::UnknownSite(site.to_string()));
        };
        match weight {
            Some(w) => {
                state.decisions.weights.insert(site.to_string(), Weight::new(w)?.get());
            }
            None => {
                state.decisions.weights.remove(site);
            }
        }
        tracing::info!(site, from = route.weight(), to = ?weight, "weight override set through the admin API");
        self.publish(&mut state);
        Ok(())
    }

    /// Sets several sites' weight overrides in one step: one new snapshot, or, if any
    /// site is unknown or any weight out of range, nothing at all.
    pub fn set_weights(&self, weights: &[(String, i64)]) -> Result<(), WeightError> {
        let mut state = self.lock_state();
        let current = self.current();
        for (site, weight) in weights {
            if !current.sites.iter().any(|s| &s.name == site) {
                return Err(WeightError::UnknownSite(site.clone()));
            }
            Weight::new(*weight)?;
        }
        for (site, weight) in weights {
            state.decisions.weights.insert(site.clone(), *weight as u32);
        }
        tracing::info!(?weights, "weight overrides set through the admin API");
        self.publish(&mut state);
        Ok(())
    }

    /// Replaces every weight override at once (the fleet's decisions): one snapshot.
    /// Overrides of sites this config does not have are kept but have no effect.
    pub fn replace_weights(&self, weights: HashMap<String, u32>) {
        let mut state = self.lock_state();
        if state.decisions.weights == weights {
            return;
        }
        tracing::info!(?weights, "weight overrides set by the fleet");
        state.decisions.weights = weights;
        self.publish(&mut state);
    }

    /// Rebuilds the snapshot from the same config with current health (same generation).
    pub fn refresh(&self) {
        let mut state = self.lock_state();
        self.publish(&mut state);
    }

    fn publish(&self, state: &mut State) {
        let old = self.current();
        let backends = old.backends();
        let judged = state.judge_failback(&old, &backends);
        let routing = Routing::build(Inputs {
            generation: old.generation,
            config: old.config.clone(),
            backends,
            decisions: &state.decisions,
            now_ms: now_ms(),
        });
        for event in judged.events {
            self.events.observe(event);
        }
        for (site, until) in judged.timers {
            self.release_at(site, until);
        }
        if routing.mode != old.mode {
            tracing::warn!(from = ?old.mode, to = ?routing.mode, "routing mode changed");
        }
        record_routing(&routing);
        state.observer.observe(&old, &routing, &self.events);
        self.routing.store(Arc::new(routing));
        if let Some(file) = self.keeper.get() {
            file.changed();
        }
        self.published.send_modify(|n| *n += 1);
    }

    /// Stops every prober; used when the server goes away.
    pub fn stop(&self) {
        self.registry.retire_all();
    }
}

/// Rebuilds the snapshot whenever a backend flips, and every `RAMP_TICK` while a site is
/// in slow start. Ends when the `Control` is dropped.
fn spawn_publisher(control: Weak<Control>, changes: Arc<tokio::sync::Notify>) {
    tokio::spawn(async move {
        loop {
            let ramping = match control.upgrade() {
                Some(c) => c.current().is_ramping(),
                None => return,
            };
            let wait = if ramping { RAMP_TICK } else { Duration::from_secs(1) };
            let changed = tokio::time::timeout(wait, changes.notified()).await.is_ok();
            if changed || ramping {
                match control.upgrade() {
                    Some(c) => c.refresh(),
                    None => return,
                }
            }
        }
    });
}

fn log_changes(old: &Routing, new: &Routing) {
    for site in &new.sites {
        match old.sites.iter().find(|s| s.name == site.name) {
            None => tracing::info!(site = %site.name, weight = site.weight(), "site added"),
            Some(before) if before.weight() != site.weight() || before.priority != site.priority => {
                tracing::info!(site = %site.name, weight = site.weight(), was = before.weight(),
                    priority = site.priority, "site changed")
            }
            Some(_) => {}
        }
    }
    for site in old.sites.iter().filter(|s| !new.sites.iter().any(|n| n.name == s.name)) {
        tracing::info!(site = %site.name, "site removed");
    }
    tracing::info!(generation = new.generation, "config applied");
}

/// One line per backend that a name's new addresses added or removed.
fn log_readdressed(old: &Routing, new: &Routing) {
    for (before, after) in old.sites.iter().zip(&new.sites) {
        let missing_from = |site: &crate::routing::SiteRoute, b: &Arc<crate::health::Backend>| {
            !site.backends.iter().any(|o| o.name == b.name && o.addr == b.addr)
        };
        for b in after.backends.iter().filter(|b| missing_from(before, b)) {
            tracing::info!(site = %after.name, name = ?b.name, backend = %b.addr, "backend added: its name resolved to it");
        }
        for b in before.backends.iter().filter(|b| missing_from(after, b)) {
            tracing::info!(site = %before.name, name = ?b.name, backend = %b.addr, "backend removed: its name no longer resolves to it");
        }
    }
}

/// Health and effective weight gauges, set whenever a snapshot is published.
fn record_routing(routing: &Routing) {
    for site in &routing.sites {
        metrics::gauge!("splitgate_site_effective_weight", "site" => site.name.clone())
            .set(f64::from(site.effective_weight));
        metrics::gauge!("splitgate_site_weight", "site" => site.name.clone()).set(f64::from(site.weight()));
        metrics::gauge!("splitgate_site_healthy_fraction", "site" => site.name.clone()).set(site.healthy_fraction);
        metrics::gauge!("splitgate_site_priority", "site" => site.name.clone()).set(f64::from(site.priority));
        // Listed from the start, so a dashboard (and an alert's increase()) sees 0
        // before the first failover or drill.
        for to in ["down", "up"] {
            metrics::counter!("splitgate_site_transitions_total", "site" => site.name.clone(), "to" => to).increment(0);
        }
        for ended in ["time_up", "ended", "aborted"] {
            metrics::counter!("splitgate_drills_ended_total", "site" => site.name.clone(), "ended" => ended)
                .increment(0);
        }
        metrics::gauge!("splitgate_site_healthy", "site" => site.name.clone()).set(if site.healthy {
            1.0
        } else {
            0.0
        });
    }
}
