//! The report's replay: each run of the history, its events in id order (the order
//! they happened in, whatever the wall clock said), one at a time, into per-site and
//! service figures. Times only move forward within a run, and every duration is
//! clipped to the window, so a clock stepped back shortens an interval, never wraps it.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::Value;

use super::{assemble, DrillReport, Figures, Report, SiteReport, SkippedDrill, Totals, LISTED_DRILLS};
use crate::clock::rfc3339;
use crate::events::history::{Run, RunSite};
use crate::events::{Event, Kind};

/// What the runs add up to over the window [from, to].
pub struct Tally {
    from: u64,
    to: u64,
    sites: BTreeMap<String, SiteTally>,
    /// Known time: the union of the runs (two overlap during an upgrade).
    known: u64,
    known_until: u64,
    service_down: u64,
    outages: usize,
    rto: u64,
}

#[derive(Default)]
struct SiteTally {
    report: SiteReport,
    drills: VecDeque<DrillReport>,
    skipped: VecDeque<SkippedDrill>,
    detect: Vec<u64>,
    traffic_moved: Vec<u64>,
}

impl Tally {
    pub fn new(from: u64, to: u64) -> Tally {
        Tally {
            from,
            to,
            sites: BTreeMap::new(),
            known: 0,
            known_until: from,
            service_down: 0,
            outages: 0,
            rto: 0,
        }
    }

    /// The part of [start, end] inside the window.
    fn clip(&self, start: u64, end: u64) -> u64 {
        end.min(self.to).saturating_sub(start.max(self.from))
    }

    fn site(&mut self, name: &str) -> &mut SiteTally {
        self.sites.entry(name.to_string()).or_insert_with(|| SiteTally {
            report: SiteReport {
                name: name.to_string(),
                ..SiteReport::default()
            },
            ..SiteTally::default()
        })
    }

    pub fn finish(self, days: u64) -> Report {
        let sites = self
            .sites
            .into_values()
            .map(|tally| SiteReport {
                detect: Figures::of(tally.detect),
                traffic_moved: Figures::of(tally.traffic_moved),
                drills: tally.drills.into(),
                skipped: tally.skipped.into(),
                ..tally.report
            })
            .collect();
        assemble(
            Totals {
                from: self.from,
                to: self.to,
                known: self.known,
                sites,
                service_down: self.service_down,
                outages: self.outages,
                rto: self.rto,
            },
            days,
        )
    }
}

/// One run replayed: the sites' state from the run's start.
pub struct Replay<'a> {
    tally: &'a mut Tally,
    sites: Vec<RunSite>,
    started: u64,
    end: u64,
    /// The lowest priority number: the tier panic mode tries when no site can serve.
    lowest: u32,
    /// Sites down, from their first failure.
    down_since: BTreeMap<String, u64>,
    drilled: HashSet<String>,
    service_down_since: Option<u64>,
    /// The latest event time so far: times never go back within a run.
    now: u64,
}

impl<'a> Replay<'a> {
    pub fn new(run: &Run, tally: &'a mut Tally) -> Replay<'a> {
        let end = run.seen_ms.max(run.started_ms);
        // What overlaps an earlier run (an upgrade runs two) is counted once.
        tally.known += tally.clip(run.started_ms.max(tally.known_until), end);
        tally.known_until = tally.known_until.max(end);
        for site in &run.sites {
            tally.site(&site.name);
        }
        let mut replay = Replay {
            tally,
            sites: run.sites.clone(),
            started: run.started_ms,
            end,
            lowest: run.sites.iter().map(|s| s.priority).min().unwrap_or(0),
            // A run that resumes the record after a gap starts as the sites were; what
            // came before its start is unknown time.
            down_since: run
                .sites
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.down_since_ms?.max(run.started_ms))))
                .collect(),
            drilled: run.sites.iter().filter(|s| s.drilled).map(|s| s.name.clone()).collect(),
            service_down_since: None,
            now: run.started_ms,
        };
        if replay.service_is_down() {
            replay.service_down_since = Some(run.started_ms);
        }
        replay
    }

    pub fn event(&mut self, event: &Event) {
        let at = event.at_ms.clamp(self.now, self.end);
        self.now = at;
        let Some(name) = event.site.clone() else {
            return;
        };
        let figures = event.measurements();
        let text = |key: &str| event.detail.get(key).and_then(Value::as_str).map(str::to_string);
        let counted = at >= self.tally.from && at <= self.tally.to;
        let mut went_down_at = at;
        match event.kind {
            Kind::SiteDown => {
                let start = at.saturating_sub(figures.detect_ms.unwrap_or(0)).max(self.started);
                went_down_at = *self.down_since.entry(name.clone()).or_insert(start);
                if counted {
                    let moved = figures.traffic_moved_ms.unwrap_or(0);
                    self.tally.rto = self.tally.rto.max(moved);
                    let site = self.tally.site(&name);
                    site.report.failovers += 1;
                    site.report.client_errors += figures.client_errors.unwrap_or(0);
                    site.report.possible_data_loss += figures.possible_data_loss.unwrap_or(0);
                    site.report.retried += figures.retried.unwrap_or(0);
                    site.detect.extend(figures.detect_ms);
                    site.traffic_moved.extend(figures.traffic_moved_ms);
                }
            }
            Kind::SiteUp => {
                if let Some(start) = self.down_since.remove(&name) {
                    let down = self.tally.clip(start, at);
                    let held = figures.held_ms.unwrap_or(0).min(down);
                    let site = &mut self.tally.site(&name).report;
                    site.down_ms += down;
                    site.held_ms += held;
                }
            }
            Kind::SiteRecovered | Kind::Forced => {}
            Kind::DrillStarted => {
                self.drilled.insert(name.clone());
                if counted {
                    let moved = figures.traffic_moved_ms.unwrap_or(0);
                    self.tally.rto = self.tally.rto.max(moved);
                    let site = self.tally.site(&name);
                    site.report.drill_count += 1;
                    if site.drills.len() == LISTED_DRILLS {
                        site.drills.pop_front();
                    }
                    site.drills.push_back(DrillReport {
                        at: rfc3339(at),
                        traffic_moved_ms: moved,
                        client_errors: figures.client_errors.unwrap_or(0),
                        down_ms: None,
                        ended: None,
                        reason: None,
                        schedule: text("schedule"),
                    });
                }
            }
            Kind::DrillEnded => {
                self.drilled.remove(&name);
                let site = self.tally.site(&name);
                if let Some(drill) = site.drills.back_mut().filter(|d| d.down_ms.is_none()) {
                    drill.down_ms = figures.down_ms.flatten();
                    drill.ended = text("ended");
                    drill.reason = text("reason");
                }
                if counted && text("ended").as_deref() == Some("aborted") {
                    site.report.drills_aborted += 1;
                }
            }
            Kind::DrillSkipped => {
                if counted {
                    let site = self.tally.site(&name);
                    site.report.drills_skipped += 1;
                    if site.skipped.len() == LISTED_DRILLS {
                        site.skipped.pop_front();
                    }
                    site.skipped.push_back(SkippedDrill {
                        at: rfc3339(at),
                        reason: text("reason").unwrap_or_default(),
                        schedule: text("schedule"),
                    });
                }
            }
            Kind::Failover | Kind::Failback => {}
        }
        match (self.service_is_down(), self.service_down_since) {
            // From when the last site went down (its first failure), or now for a drill.
            (true, None) => self.service_down_since = Some(went_down_at.clamp(self.started, at)),
            (false, Some(start)) => {
                self.service_outage(start, at);
                self.service_down_since = None;
            }
            _ => {}
        }
    }

    /// What is still down when the run ends counts until then; after it, unknown.
    pub fn end(mut self) {
        let end = self.end;
        for (name, start) in std::mem::take(&mut self.down_since) {
            let down = self.tally.clip(start, end);
            self.tally.site(&name).report.down_ms += down;
        }
        if let Some(start) = self.service_down_since.take() {
            self.service_outage(start, end);
        }
    }

    fn service_outage(&mut self, start: u64, end: u64) {
        self.tally.service_down += self.tally.clip(start, end);
        self.tally.outages += 1;
        self.tally.rto = self.tally.rto.max(end.saturating_sub(start));
    }

    /// Clients get no answer while no site can serve: every site is down or drilled,
    /// and panic mode (which tries the lowest tier's backends anyway) finds only failed
    /// ones there. A drilled site that did not fail still answers in panic mode.
    fn service_is_down(&self) -> bool {
        let up = |s: &RunSite| !self.down_since.contains_key(&s.name);
        if self.sites.is_empty() || self.sites.iter().any(|s| up(s) && !self.drilled.contains(&s.name)) {
            return false;
        }
        !self.sites.iter().any(|s| s.priority == self.lowest && up(s))
    }
}
