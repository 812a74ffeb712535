//! The DR report (`splitgate report`): replays the history file over a window of days
//! into per-site and whole-service availability, failovers with their detection and
//! traffic-moved times, client errors and drills, then states which grade of the
//! financial DR standard (JR/T 0168-2018, grades 3 to 6) the measured figures meet,
//! and why each higher grade is missed. Time nobody recorded (the proxy was not
//! running, or its events could not be kept) is unknown time: neither uptime nor
//! downtime, and availability is over known time only. The history is streamed
//! (`replay`), never held in memory; the text form is `text`.

mod replay;
mod text;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::events::history::History;

pub use text::render;

const DAY_MS: u64 = 86_400_000;
const YEAR_MS: f64 = 365.25 * DAY_MS as f64;
const MINUTE_MS: u64 = 60_000;
/// The longest window: ten years, the longest `[events] keep`.
pub const MAX_DAYS: u64 = 3660;
/// Drills listed per site (the newest); all of them are counted.
const LISTED_DRILLS: usize = 100;

/// JR/T 0168-2018: (grade, longest RTO, most downtime a year, needs RPO = 0).
const GRADES: [(u8, u64, u64, bool); 4] = [
    (6, 2 * MINUTE_MS, 5 * MINUTE_MS, true),
    (5, 30 * MINUTE_MS, 60 * MINUTE_MS, false),
    (4, 240 * MINUTE_MS, 600 * MINUTE_MS, false),
    (3, 1440 * MINUTE_MS, 4 * DAY_MS, false),
];

#[derive(Debug, Serialize, Default)]
pub struct Figures {
    pub median_ms: Option<u64>,
    pub worst_ms: Option<u64>,
}

impl Figures {
    pub(crate) fn of(mut values: Vec<u64>) -> Figures {
        values.sort_unstable();
        Figures {
            median_ms: values.get(values.len() / 2).copied(),
            worst_ms: values.last().copied(),
        }
    }
}

#[derive(Debug, Serialize, Default)]
pub struct SiteReport {
    pub name: String,
    /// Percent of known time the site was up (drills are planned and not counted).
    pub availability: f64,
    pub down_ms: u64,
    /// Of `down_ms`, how long the site was healthy again but held by the failback
    /// policy (its traffic had not returned yet).
    pub held_ms: u64,
    pub failovers: usize,
    pub detect: Figures,
    pub traffic_moved: Figures,
    pub client_errors: u64,
    /// Proxy errors on non-idempotent requests: writes that may have been lost.
    pub possible_data_loss: u64,
    pub retried: u64,
    /// Drills held in the window.
    pub drill_count: u64,
    /// Of them, drills that stopped themselves to protect users.
    pub drills_aborted: u64,
    /// Drill programs' drills that did not start (the guard rails, an unhealthy site).
    pub drills_skipped: u64,
    /// The newest of them (at most 100).
    pub drills: Vec<DrillReport>,
    /// The newest skipped ones (at most 100), with their reason.
    pub skipped: Vec<SkippedDrill>,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub at: String,
    pub traffic_moved_ms: u64,
    pub client_errors: u64,
    pub down_ms: Option<u64>,
    /// `time_up`, `ended` or `aborted` (`None` while it runs, or when not recorded).
    pub ended: Option<String>,
    /// Why it was aborted.
    pub reason: Option<String>,
    /// The schedule of the drill program that started it.
    pub schedule: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SkippedDrill {
    pub at: String,
    pub reason: String,
    /// The drill program's schedule.
    pub schedule: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub days: u64,
    pub from: String,
    pub to: String,
    /// Time within the window that the history recorded (the proxy ran, its events kept).
    pub known_ms: u64,
    /// The rest of the window: counted neither up nor down.
    pub unknown_ms: u64,
    pub sites: Vec<SiteReport>,
    /// The service as a whole: down while no site could serve.
    pub service_availability: f64,
    pub service_down_ms: u64,
    pub service_outages: usize,
    /// Service downtime extrapolated to a year of known time.
    pub downtime_per_year_ms: u64,
    /// The longest time clients were affected by one failure (traffic moved or outage).
    pub rto_ms: u64,
    /// The highest grade of JR/T 0168-2018 the figures meet (3-6), if any.
    pub grade: Option<u8>,
    /// Why each higher grade is missed.
    pub missed: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--days {0}: {1}")]
    Days(u64, &'static str),
    #[error("{0}")]
    History(#[from] rusqlite::Error),
}

/// The window of `days`, in ms: at least one day, at most `MAX_DAYS`.
pub fn window(days: u64) -> Result<u64, ReportError> {
    match days {
        0 => Err(ReportError::Days(days, "the window must be at least 1 day")),
        d if d > MAX_DAYS => Err(ReportError::Days(
            days,
            "the window can be at most 3660 days (ten years, the longest [events] keep)",
        )),
        d => Ok(d * DAY_MS),
    }
}

/// Builds the report for the `days` before `now_ms` (Unix ms).
pub fn build(history: &History, days: u64, now_ms: u64) -> Result<Report, ReportError> {
    let from = now_ms.saturating_sub(window(days)?);
    let mut tally = replay::Tally::new(from, now_ms);
    for run in history.runs(from)? {
        let mut replay = replay::Replay::new(&run, &mut tally);
        history.each_event(&run, |event| replay.event(&event))?;
        replay.end();
    }
    Ok(tally.finish(days))
}

/// The figures, the grade and the notes of a replayed window.
pub(crate) struct Totals {
    pub from: u64,
    pub to: u64,
    pub known: u64,
    pub sites: Vec<SiteReport>,
    pub service_down: u64,
    pub outages: usize,
    pub rto: u64,
}

fn assemble(totals: Totals, days: u64) -> Report {
    let Totals {
        from,
        to,
        known,
        mut sites,
        service_down,
        outages,
        rto,
    } = totals;
    let percent = |down: u64| {
        if known == 0 {
            0.0
        } else {
            100.0 * (1.0 - down.min(known) as f64 / known as f64)
        }
    };
    for site in &mut sites {
        site.availability = percent(site.down_ms);
    }
    let per_year = if known == 0 {
        0
    } else {
        (service_down as f64 * YEAR_MS / known as f64) as u64
    };
    let data_loss: u64 = sites.iter().map(|s| s.possible_data_loss).sum();
    let (grade, missed) = grade(rto, per_year, data_loss, service_down, known);
    let mut notes = vec![
        "splitgate measures recovery time and availability as its clients saw them; data \
         replication, and so RPO proper, is the sites' business."
            .to_string(),
    ];
    if data_loss > 0 {
        notes.push(format!(
            "{data_loss} non-idempotent requests got a proxy error during failures: possible data loss."
        ));
    }
    let unknown = to.saturating_sub(from).saturating_sub(known);
    if unknown >= 1000 {
        notes.push(format!(
            "the history has no record of {} of the window (the proxy was not running, or its \
             events could not be kept): unknown time, not counted",
            human(unknown)
        ));
    }
    for site in sites.iter().filter(|s| s.drills_skipped > s.skipped.len() as u64) {
        notes.push(format!(
            "site {}: {} drills skipped, the newest {} listed",
            site.name,
            site.drills_skipped,
            site.skipped.len()
        ));
    }
    for site in sites.iter().filter(|s| s.drill_count > s.drills.len() as u64) {
        notes.push(format!(
            "site {}: {} drills, the newest {} listed",
            site.name,
            site.drill_count,
            site.drills.len()
        ));
    }
    Report {
        days,
        from: rfc3339(from),
        to: rfc3339(to),
        known_ms: known,
        unknown_ms: unknown,
        sites,
        service_availability: percent(service_down),
        service_down_ms: service_down,
        service_outages: outages,
        downtime_per_year_ms: per_year,
        rto_ms: rto,
        grade,
        missed,
        notes,
    }
}

fn grade(rto: u64, per_year: u64, data_loss: u64, down: u64, known: u64) -> (Option<u8>, Vec<String>) {
    let mut missed = Vec::new();
    for (grade, max_rto, max_down, needs_rpo_zero) in GRADES {
        let mut why = Vec::new();
        if rto > max_rto {
            why.push(format!("recovery took {}, past {}", human(rto), human(max_rto)));
        }
        if per_year > max_down {
            why.push(format!(
                "{} of downtime in {} of known time extrapolates to {} a year, past {}",
                human(down),
                human(known),
                human(per_year),
                human(max_down)
            ));
        }
        if needs_rpo_zero && data_loss > 0 {
            why.push(format!("{data_loss} possibly lost writes, and RPO must be 0"));
        }
        if why.is_empty() {
            return (Some(grade), missed);
        }
        missed.push(format!("grade {grade} missed: {}", why.join("; ")));
    }
    (None, missed)
}

/// `340 ms`, `7 min 12 s`, `1 h 27 min`, `2 d 3 h`.
pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{}.{} s", s, (ms % 1000) / 100),
        60_000..=3_599_999 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}
