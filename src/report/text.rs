//! The DR report as text for a terminal: per site, then the service, the grade and
//! why each higher grade is missed.

use std::fmt::Write as _;

use super::{human, Report};

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
        let held = if site.held_ms > 0 {
            format!(", of which held for failback {}", human(site.held_ms))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  availability      {:.4}% (down {}{held})",
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
        let _ = writeln!(
            out,
            "  drills            {} held, {} aborted, {} skipped",
            site.drill_count, site.drills_aborted, site.drills_skipped
        );
        for drill in &site.drills {
            let program = drill
                .schedule
                .as_ref()
                .map_or(String::new(), |s| format!(" (program \"{s}\")"));
            let aborted = match (&drill.ended, &drill.reason) {
                (Some(ended), Some(reason)) if ended == "aborted" => format!(", aborted: {reason}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  drill {}{program}: traffic moved in {}, {} client errors, out for {}{aborted}",
                drill.at,
                human(drill.traffic_moved_ms),
                drill.client_errors,
                opt(drill.down_ms)
            );
        }
        for skipped in &site.skipped {
            let program = skipped
                .schedule
                .as_ref()
                .map_or(String::new(), |s| format!(" (program \"{s}\")"));
            let _ = writeln!(out, "  drill skipped {}{program}: {}", skipped.at, skipped.reason);
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
