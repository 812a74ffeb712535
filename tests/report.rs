//! The DR report's arithmetic against history files written row by row (as an older
//! splitgate wrote them): a clock stepped back never makes a duration wrap, the window
//! must make sense, a drill that clients did not notice is no outage, and a large
//! history is streamed, not loaded.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use splitgate::events::history::History;

use common::process::BINARY;

const DAY: u64 = 86_400_000;

/// A config naming `history.db` beside it, and that file with `runs` (started, seen,
/// site names) and `events` (id, kind, site, at, detail).
fn seed(dir: &Path, runs: &[(u64, u64, &[&str])], events: &[(u64, &str, &str, u64, Value)]) -> std::path::PathBuf {
    let config = dir.join("splitgate.toml");
    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:1\"\n[events]\nhistory = \"history.db\"\n\
         [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n",
    )
    .unwrap();
    let db = dir.join("history.db");
    drop(History::open(&db).unwrap());
    let connection = rusqlite::Connection::open(&db).unwrap();
    for (started, seen, sites) in runs {
        connection
            .execute(
                "INSERT INTO runs (started_ms, seen_ms, sites) VALUES (?1, ?2, ?3)",
                rusqlite::params![*started as i64, *seen as i64, serde_json::to_string(sites).unwrap()],
            )
            .unwrap();
    }
    for (id, kind, site, at, detail) in events {
        connection
            .execute(
                "INSERT INTO events (id, at_ms, kind, site, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![*id as i64, *at as i64, kind, site, detail.to_string()],
            )
            .unwrap();
    }
    config
}

fn report(config: &Path, extra: &[&str]) -> (bool, String, String) {
    let output = Command::new(BINARY)
        .args(["report", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn report_json(config: &Path) -> Value {
    let (ok, out, err) = report(config, &["--json"]);
    assert!(ok, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_clock_stepped_back_during_an_outage_never_wraps_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let now = splitgate::clock::unix_ms();
    let t = now - 3_600_000;
    let down = json!({"detect_ms": 100, "traffic_moved_ms": 150, "client_errors": 0});
    // Both sites fail; while they are down the clock is stepped back 10 minutes, so
    // their site_up events carry times before their site_down events.
    let config = seed(
        dir.path(),
        &[(now - 2 * 3_600_000, now + 60_000, &["a", "b"])],
        &[
            (1, "site_down", "a", t, down.clone()),
            (2, "site_down", "b", t + 1_000, down),
            (3, "site_up", "a", t + 1_000 - 600_000, json!({"down_ms": 60_000})),
            (4, "site_up", "b", t - 500_000, json!({"down_ms": 60_000})),
        ],
    );
    let doc = report_json(&config);
    println!("{doc:#}");
    let rto = doc["rto_ms"].as_u64().unwrap();
    assert!(rto < 3_600_000, "rto_ms {rto}");
    assert_eq!(doc["service_outages"], 1, "{doc}");
    assert!(doc["service_down_ms"].as_u64().unwrap() < 3_600_000, "{doc}");
    for site in doc["sites"].as_array().unwrap() {
        assert!(site["down_ms"].as_u64().unwrap() < 3_600_000, "{site}");
    }
}

#[test]
fn a_window_of_no_days_or_of_absurdly_many_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let now = splitgate::clock::unix_ms();
    let config = seed(dir.path(), &[(now - DAY, now, &["a"])], &[]);
    for (days, reason) in [
        ("0", "at least 1 day"),
        ("3661", "at most 3660 days"),
        ("18446744073709551615", "at most 3660 days"),
    ] {
        let (ok, out, err) = report(&config, &["--days", days]);
        assert!(!ok, "--days {days}: {out}{err}");
        assert!(err.contains(&format!("--days {days}")) && err.contains(reason), "{err}");
    }
    let (ok, out, err) = report(&config, &["--days", "3660"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn a_drill_of_the_only_site_that_panic_mode_kept_serving_is_no_outage() {
    let dir = tempfile::tempdir().unwrap();
    let now = splitgate::clock::unix_ms();
    let t = now - 3_600_000;
    let started = json!({"cause": "drill", "detect_ms": 0, "traffic_moved_ms": 0, "client_errors": 0});
    let config = seed(
        dir.path(),
        &[(now - 2 * 3_600_000, now + 60_000, &["a"])],
        &[
            (1, "drill_started", "a", t, started),
            (
                2,
                "drill_ended",
                "a",
                t + 600_000,
                json!({"drill": 1, "down_ms": 600_000}),
            ),
        ],
    );
    let doc = report_json(&config);
    assert_eq!(doc["service_outages"], 0, "{doc}");
    assert_eq!(doc["service_down_ms"], 0, "{doc}");
    assert_eq!(doc["service_availability"], 100.0, "{doc}");
    assert_eq!(doc["sites"][0]["drills"].as_array().map(Vec::len), Some(1), "{doc}");
}

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_large_history_is_replayed_in_bounded_memory() {
    const EVENTS: u64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let now = splitgate::clock::unix_ms();
    let config = seed(dir.path(), &[(now - 30 * DAY, now + 60_000, &["a", "b"])], &[]);
    let db = dir.path().join("history.db");
    let mut connection = rusqlite::Connection::open(&db).unwrap();
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare("INSERT INTO events (id, at_ms, kind, site, detail) VALUES (?1, ?2, ?3, 'b', ?4)")
            .unwrap();
        let detail = json!({"cause": "Connection refused", "first_failure_at": "2026-11-29T21:05:03.123Z",
            "detect_ms": 300, "traffic_moved_ms": 800, "client_errors": 0, "retried": 3})
        .to_string();
        for id in 1..=EVENTS {
            let at = now - 29 * DAY + id * 8_000;
            let kind = if id % 2 == 1 { "site_down" } else { "site_up" };
            insert
                .execute(rusqlite::params![id as i64, at as i64, kind, detail])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
    drop(connection);
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let history = History::open(&db).unwrap();
    let built = splitgate::report::build(&history, 30, splitgate::clock::unix_ms()).expect("report");
    let grown = peak_rss_kib().saturating_sub(before);
    println!(
        "{EVENTS} events replayed in {:?}, peak RSS grew {grown} KiB",
        started.elapsed()
    );
    let b = built.sites.iter().find(|s| s.name == "b").expect("site b");
    assert_eq!(b.failovers as u64, EVENTS / 2);
    assert!(grown < 64 * 1024, "the replay held {grown} KiB");
    drop(config);
}
