//! The DR report (`splitgate report`): replays the history file over a window of days
//! into per-site and whole-service availability, failovers with their detection and
//! traffic-moved times, client errors and drills, then states which grade of the
//! financial DR standard (JR/T 0168-2018, grades 3 to 6) the measured figures meet,
//! and why each higher grade is missed. Time the proxy was not running is unknown
//! time: it is neither uptime nor downtime, and availability is over known time only.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::events::history::{History, Run};
use crate::events::{Event, Kind};

const DAY_MS: u64 = 86_400_000;
const YEAR_MS: f64 = 365.25 * DAY_MS as f64;
const MINUTE_MS: u64 = 60_000;

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
    fn of(mut values: Vec<u64>) -> Figures {
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
    pub failovers: usize,
    pub detect: Figures,
    pub traffic_moved: Figures,
    pub client_errors: u64,
    /// Proxy errors on non-idempotent requests: writes that may have been lost.
    pub possible_data_loss: u64,
    pub retried: u64,
    pub drills: Vec<DrillReport>,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub at: String,
    pub traffic_moved_ms: u64,
    pub client_errors: u64,
    pub down_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub days: u64,
    pub from: String,
    pub to: String,
    /// Time the proxy was running within the window.
    pub known_ms: u64,
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

/// Builds the report for the `days` before `now_ms` (Unix ms).
pub fn build(history: &History, days: u64, now_ms: u64) -> rusqlite::Result<Report> {
    let from = now_ms.saturating_sub(days * DAY_MS);
    let (events, runs) = history.read(from.saturating_sub(DAY_MS))?;
    Ok(compute(&events, &runs, from, now_ms, days))
}

/// Site states replayed through one run.
#[derive(Default)]
struct Replay {
    down_since: BTreeMap<String, u64>,
    drilled: HashSet<String>,
    service_down_since: Option<u64>,
}

fn compute(events: &[Event], runs: &[Run], from: u64, to: u64, days: u64) -> Report {
    let clip = |start: u64, end: u64| end.min(to).saturating_sub(start.max(from));
    let mut sites: BTreeMap<String, SiteReport> = BTreeMap::new();
    let mut known = 0;
    let (mut service_down, mut outages, mut rto) = (0u64, 0usize, 0u64);
    for run in runs {
        known += clip(run.started_ms, run.seen_ms);
        for name in &run.sites {
            sites.entry(name.clone()).or_insert_with(|| SiteReport {
                name: name.clone(),
                ..SiteReport::default()
            });
        }
        let mut replay = Replay::default();
        let in_run = events
            .iter()
            .filter(|e| e.at_ms >= run.started_ms && e.at_ms <= run.seen_ms);
        for event in in_run {
            let Some(name) = event.site.clone() else {
                continue;
            };
            let site = sites.entry(name.clone()).or_insert_with(|| SiteReport {
                name: name.clone(),
                ..SiteReport::default()
            });
            let number = |key: &str| event.detail.get(key).and_then(serde_json::Value::as_u64);
            let counted = event.at_ms >= from && event.at_ms <= to;
            match event.kind {
                Kind::SiteDown => {
                    let start = event.at_ms.saturating_sub(number("detect_ms").unwrap_or(0));
                    replay.down_since.insert(name, start);
                    if counted {
                        site.failovers += 1;
                        site.client_errors += number("client_errors").unwrap_or(0);
                        site.possible_data_loss += number("possible_data_loss").unwrap_or(0);
                        site.retried += number("retried").unwrap_or(0);
                        rto = rto.max(number("traffic_moved_ms").unwrap_or(0));
                    }
                }
                Kind::SiteUp => {
                    if let Some(start) = replay.down_since.remove(&name) {
                        site.down_ms += clip(start, event.at_ms);
                    }
                }
                Kind::DrillStarted => {
                    replay.drilled.insert(name);
                    if counted {
                        rto = rto.max(number("traffic_moved_ms").unwrap_or(0));
                        site.drills.push(DrillReport {
                            at: rfc3339(event.at_ms),
                            traffic_moved_ms: number("traffic_moved_ms").unwrap_or(0),
                            client_errors: number("client_errors").unwrap_or(0),
                            down_ms: None,
                        });
                    }
                }
                Kind::DrillEnded => {
                    replay.drilled.remove(&name);
                    if let Some(drill) = site.drills.last_mut().filter(|d| d.down_ms.is_none()) {
                        drill.down_ms = number("down_ms");
                    }
                }
                Kind::Failover | Kind::Failback => {}
            }
            // The service is down while every site of this run is down or drilled.
            let all_down = !run.sites.is_empty()
                && run
                    .sites
                    .iter()
                    .all(|s| replay.down_since.contains_key(s) || replay.drilled.contains(s));
            match (all_down, replay.service_down_since) {
                (true, None) => {
                    // From when the last site went down (its first failure).
                    let last = replay.down_since.values().copied().max().unwrap_or(event.at_ms);
                    replay.service_down_since = Some(last.max(run.started_ms).min(event.at_ms));
                }
                (false, Some(start)) => {
                    service_down += clip(start, event.at_ms);
                    outages += 1;
                    rto = rto.max(event.at_ms - start);
                    replay.service_down_since = None;
                }
                _ => {}
            }
        }
        // What is still down when the run ends counts until then; after it, unknown.
        for (name, start) in &replay.down_since {
            if let Some(site) = sites.get_mut(name) {
                site.down_ms += clip(*start, run.seen_ms);
            }
        }
        if let Some(start) = replay.service_down_since {
            service_down += clip(start, run.seen_ms);
            outages += 1;
            rto = rto.max(run.seen_ms.saturating_sub(start));
        }
    }
    let percent = |down: u64| {
        if known == 0 {
            0.0
        } else {
            100.0 * (1.0 - down.min(known) as f64 / known as f64)
        }
    };
    let mut sites: Vec<SiteReport> = sites.into_values().collect();
    for site in &mut sites {
        site.availability = percent(site.down_ms);
        let downs: Vec<&Event> = events
            .iter()
            .filter(|e| e.kind == Kind::SiteDown && e.site.as_deref() == Some(&site.name) && e.at_ms >= from)
            .collect();
        let values = |key: &str| downs.iter().filter_map(|e| e.detail.get(key)?.as_u64()).collect();
        site.detect = Figures::of(values("detect_ms"));
        site.traffic_moved = Figures::of(values("traffic_moved_ms"));
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
    let window = to - from;
    if window.saturating_sub(known) >= 1000 {
        notes.push(format!(
            "the proxy was not running for {} of the window: unknown time, not counted",
            human(window - known)
        ));
    }
    Report {
        days,
        from: rfc3339(from),
        to: rfc3339(to),
        known_ms: known,
        unknown_ms: window.saturating_sub(known),
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

/// The report as text for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "splitgate DR report: {} to {} ({} days)",
        report.from, report.to, report.days
    );
    let _ = writeln!(
        out,
        "known time {} (unknown {})\n",
        human(report.known_ms),
        human(report.unknown_ms)
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), human);
    for site in &report.sites {
        let _ = writeln!(out, "site {}", site.name);
        let _ = writeln!(
            out,
            "  availability      {:.4}% (down {})",
            site.availability,
            human(site.down_ms)
        );
        let _ = writeln!(out, "  failovers         {}", site.failovers);
        let _ = writeln!(
            out,
            "  detection         median {}, worst {}",
            opt(site.detect.median_ms),
            opt(site.detect.worst_ms)
        );
        let _ = writeln!(
            out,
            "  traffic moved     median {}, worst {}",
            opt(site.traffic_moved.median_ms),
            opt(site.traffic_moved.worst_ms)
        );
        let _ = writeln!(
            out,
            "  client errors     {} ({} possible data loss), {} retried elsewhere",
            site.client_errors, site.possible_data_loss, site.retried
        );
        for drill in &site.drills {
            let _ = writeln!(
                out,
                "  drill {}: traffic moved in {}, {} client errors, out for {}",
                drill.at,
                human(drill.traffic_moved_ms),
                drill.client_errors,
                opt(drill.down_ms)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nservice: availability {:.5}%, {} outages, down {} ({} a year extrapolated), worst recovery {}",
        report.service_availability,
        report.service_outages,
        human(report.service_down_ms),
        human(report.downtime_per_year_ms),
        human(report.rto_ms)
    );
    match report.grade {
        Some(grade) => {
            let _ = writeln!(out, "JR/T 0168-2018: the measured figures meet grade {grade}");
        }
        None => {
            let _ = writeln!(out, "JR/T 0168-2018: the measured figures meet no grade from 3 to 6");
        }
    }
    for line in report.missed.iter().chain(&report.notes) {
        let _ = writeln!(out, "  {line}");
    }
    out
}
