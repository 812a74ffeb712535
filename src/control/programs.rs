//! Drill programs (`[[drill]]`): one control-plane task checks every second which
//! programs of the current config fell due (their cron minute, UTC, passed since the
//! last check) and starts each drill as an operator would, through `start_drill`,
//! unless its site is not healthy, a drill already runs there or the guard rails
//! refuse it; then it records `drill_skipped` with the reason. A due time missed while
//! the proxy was not running is not made up for. In a fleet the leader starts them for
//! every member (`fleet::programs`), with the checks here.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Map;

use super::drills::{DrillOptions, ProgramLabel};
use super::Control;
use crate::clock::unix_ms;
use crate::config::DrillProgram;
use crate::events::{Kind, Measurements, Pending};

/// The longest sleep between two checks (a reload's programs count from the next one).
const CHECK: Duration = Duration::from_secs(1);

/// Runs the programs of `control`'s current config until it is dropped.
pub(super) fn spawn(control: Weak<Control>) {
    tokio::spawn(async move {
        let mut last = unix_ms();
        loop {
            let wait = match control.upgrade() {
                Some(control) => {
                    let now = unix_ms();
                    let config = control.current().config.clone();
                    let programs = &config.drills.programs;
                    if config.fleet.is_some() {
                        // The fleet's leader runs them for every member (`fleet::programs`).
                    } else if now < last {
                        // The wall clock stepped back: nothing is due twice.
                    } else {
                        for (i, program) in programs.iter().enumerate() {
                            if program.schedule.next_after(last).is_some_and(|due| due <= now) {
                                control.run_program(i, program);
                            }
                        }
                    }
                    last = now;
                    let next = programs.iter().filter_map(|p| p.schedule.next_after(now)).min();
                    next.map_or(CHECK, |due| Duration::from_millis(due.saturating_sub(now)).min(CHECK))
                }
                None => return,
            };
            // Wake just past the due minute, so that it is no longer in the future.
            tokio::time::sleep(wait + Duration::from_millis(1)).await;
        }
    });
}

impl Control {
    /// Starts program `index`'s drill now, or records why it is skipped.
    fn run_program(self: &Arc<Self>, index: usize, program: &DrillProgram) {
        let label = ProgramLabel {
            label: format!("drill[{index}]"),
            schedule: program.schedule.to_string(),
        };
        let refused = self.program_refusal(&program.site);
        let outcome = match refused {
            Some(reason) => Err(reason),
            None => {
                let options = DrillOptions {
                    abort_5xx: None,
                    program: Some(label.clone()),
                    fleet_id: None,
                };
                self.start_drill_with(&program.site, program.duration, options)
                    .map_err(|e| e.to_string())
            }
        };
        match outcome {
            Ok(id) => {
                tracing::info!(site = %program.site, program = %label.label, drill = id, "drill program started its drill")
            }
            Err(reason) => self.skip_drill(program, &label, reason),
        }
    }

    /// Why the program's drill must not start now, if it must not.
    pub(crate) fn program_refusal(&self, site: &str) -> Option<String> {
        let running = self.lock_state().drills.contains_key(site);
        let current = self.current();
        let route = current.sites.iter().find(|s| s.name == site);
        match route {
            None => Some(format!("no site is named \"{site}\"")),
            Some(_) if running => Some("a drill already runs on the site".to_string()),
            Some(route) if !route.healthy => Some("the site is not healthy".to_string()),
            Some(_) => self.guard_rail_refusal(site),
        }
    }

    /// The guard rails' answer to drilling `site` now (`[safety] min_serving_sites`,
    /// as for an operator's drill, never forced): `Some(reason)` when they refuse.
    fn guard_rail_refusal(&self, site: &str) -> Option<String> {
        self.check_rails(&super::Action::Drill(site))
            .err()
            .map(|refused| refused.to_string())
    }

    /// Records `drill_skipped` for a program whose drill did not start.
    pub(crate) fn skip_drill(&self, program: &DrillProgram, label: &ProgramLabel, reason: String) {
        tracing::warn!(site = %program.site, program = %label.label, schedule = %label.schedule, %reason,
            "drill program skipped its drill");
        let mut detail = Map::new();
        detail.insert("reason".into(), reason.into());
        detail.insert("program".into(), label.label.clone().into());
        detail.insert("schedule".into(), label.schedule.clone().into());
        Measurements {
            duration_ms: Some(program.duration.as_millis() as u64),
            ..Measurements::default()
        }
        .write(&mut detail);
        self.events.observe(Pending {
            kind: Kind::DrillSkipped,
            site: Some(program.site.clone()),
            at_ms: unix_ms(),
            detail,
            outage: None,
        });
    }
}
