//! Drill programs (`[[drill]]`) in a fleet: the member that speaks for the fleet starts
//! each due drill once for every member, by writing it to etcd as an operator's drill
//! is written; the checks are those of a single proxy (the site known, healthy, no
//! drill there, the guard rails against the fleet's view). Every member keeps the
//! clock moving, so a new leader does not run again what the old one ran.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Fleet;
use crate::clock::unix_ms;
use crate::control::ProgramLabel;

/// Runs until the fleet is dropped.
pub(super) fn spawn(fleet: &Arc<Fleet>) {
    let weak: Weak<Fleet> = Arc::downgrade(fleet);
    tokio::spawn(async move {
        let mut last = unix_ms();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some(fleet) = weak.upgrade() else {
                return;
            };
            let now = unix_ms();
            if now > last && fleet.is_leader() {
                let config = fleet.control.current().config.clone();
                for (i, program) in config.drills.programs.iter().enumerate() {
                    if program.schedule.next_after(last).is_none_or(|due| due > now) {
                        continue;
                    }
                    let label = ProgramLabel {
                        label: format!("drill[{i}]"),
                        schedule: program.schedule.to_string(),
                    };
                    let outcome = match fleet.control.program_refusal(&program.site) {
                        Some(reason) => Err(reason),
                        None => fleet
                            .write_drill(&program.site, Some(program.duration))
                            .await
                            .map_err(|e| e.to_string()),
                    };
                    match outcome {
                        Ok(()) => tracing::info!(site = %program.site, program = %label.label,
                            "drill program started its drill on every member"),
                        Err(reason) => fleet.control.skip_drill(program, &label, reason),
                    }
                }
            }
            last = now;
        }
    });
}
