//! Checks `[drills]` (the 5xx share past which a running drill ends itself) and
//! `[[drill]]` (drill programs: a site drilled on a cron schedule for a duration), and
//! parses the percentages written for them (`"1%"`, `"0.5%"`), here and in the admin API.

use std::collections::HashSet;

use super::cron::Schedule;
use super::file::{DrillProgramFile, DrillsFile};
use super::model::{DrillProgram, Drills};
use super::problems::{Problems, MAX_DURATION};
use super::share::Share;

pub(super) fn validate_drills(
    settings: Option<&DrillsFile>,
    programs: &[DrillProgramFile],
    sites: &HashSet<String>,
    problems: &mut Problems,
) -> Drills {
    let abort_5xx = match settings.and_then(|s| s.abort_5xx.as_deref()) {
        None => Share::DEFAULT_ABORT_5XX,
        Some(text) => Share::parse(text).unwrap_or_else(|reason| {
            problems.add("drills.abort_5xx", reason);
            Share::DEFAULT_ABORT_5XX
        }),
    };
    let mut checked = Vec::new();
    for (i, program) in programs.iter().enumerate() {
        let key = format!("drill[{i}]");
        let site = match program.site.as_deref() {
            None => {
                problems.add(format!("{key}.site"), "needs the name of the site to drill");
                None
            }
            Some(name) if !sites.contains(name) => {
                problems.add(format!("{key}.site"), format!("no [[site]] is named \"{name}\""));
                None
            }
            Some(name) => Some(name.to_string()),
        };
        let schedule = match program.schedule.as_deref() {
            None => {
                problems.add(
                    format!("{key}.schedule"),
                    "needs a cron schedule (UTC), e.g. \"0 3 * * TUE\"",
                );
                None
            }
            Some(text) => Schedule::parse(text)
                .map_err(|reason| problems.add(format!("{key}.schedule"), reason))
                .ok(),
        };
        let duration = match program.duration.as_ref() {
            None => {
                problems.add(
                    format!("{key}.duration"),
                    "needs how long the drill lasts, e.g. \"10m\"",
                );
                None
            }
            Some(text) => {
                let before = problems.0.len();
                let duration =
                    problems.duration_within(&format!("{key}.duration"), Some(text), MAX_DURATION, MAX_DURATION);
                (problems.0.len() == before).then_some(duration)
            }
        };
        if let (Some(site), Some(schedule), Some(duration)) = (site, schedule, duration) {
            checked.push(DrillProgram {
                site,
                schedule,
                duration,
            });
        }
    }
    Drills {
        abort_5xx,
        programs: checked,
    }
}
