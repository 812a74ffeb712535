//! The DR report: 30 days of history (written through the same code) read in well
//! under a second, with the grade and the reason each higher grade is missed; and its
//! arithmetic against files written row by row (as an older splitgate wrote them): a
//! clock stepped back never makes a duration wrap, the window must make sense, a drill
//! that clients did not notice is no outage, and a large history is streamed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Map, Value};
use splitgate::events::history::{History, Run, RunSite};
use splitgate::events::{Event, Kind};

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

#[test]
fn the_report_lists_drills_held_aborted_and_skipped_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let now = splitgate::clock::unix_ms();
    let t = now - 3_600_000;
    let started = |schedule: Option<&str>| json!({"cause": "drill", "detect_ms": 0, "traffic_moved_ms": 0, "client_errors": 0, "schedule": schedule});
    let aborted = "30 of 30 client responses in the last 5 s were 5xx (100.0%), more than abort_5xx 1%";
    let config = seed(
        dir.path(),
        &[(now - 2 * 3_600_000, now + 60_000, &["a"])],
        &[
            (1, "drill_started", "a", t, started(Some("0 3 * * TUE"))),
            (
                2,
                "drill_ended",
                "a",
                t + 1_200,
                json!({"drill": 1, "down_ms": 1_200, "ended": "aborted", "reason": aborted}),
            ),
            (3, "drill_started", "a", t + 60_000, started(None)),
            (
                4,
                "drill_ended",
                "a",
                t + 90_000,
                json!({"drill": 3, "down_ms": 30_000, "ended": "time_up"}),
            ),
            (
                5,
                "drill_skipped",
                "a",
                t + 120_000,
                json!({"reason": "the site is not healthy", "schedule": "0 3 * * TUE", "program": "drill[0]"}),
            ),
        ],
    );
    let doc = report_json(&config);
    let site = &doc["sites"][0];
    assert_eq!(site["drill_count"], 2, "{doc}");
    assert_eq!(site["drills_aborted"], 1, "{doc}");
    assert_eq!(site["drills_skipped"], 1, "{doc}");
    assert_eq!(site["drills"][0]["ended"], "aborted", "{doc}");
    assert_eq!(site["drills"][0]["reason"], aborted, "{doc}");
    assert_eq!(site["drills"][0]["schedule"], "0 3 * * TUE", "{doc}");
    assert_eq!(site["drills"][1]["ended"], "time_up", "{doc}");
    assert_eq!(site["skipped"][0]["reason"], "the site is not healthy", "{doc}");
    assert_eq!(doc["service_outages"], 0, "a skipped drill is no outage: {doc}");
    let (ok, text, err) = report(&config, &[]);
    assert!(ok, "{text}{err}");
    println!("{text}");
    assert!(
        text.contains("drills            2 held, 1 aborted, 1 skipped"),
        "{text}"
    );
    assert!(text.contains(&format!("out for 1.2 s, aborted: {aborted}")), "{text}");
    assert!(
        text.contains("(program \"0 3 * * TUE\"): the site is not healthy"),
        "{text}"
    );
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

fn event(id: u64, kind: Kind, site: &str, at_ms: u64, detail: Value) -> Event {
    let detail: Map<String, Value> = detail.as_object().cloned().unwrap_or_default();
    Event {
        id,
        kind,
        site: Some(site.into()),
        at_ms,
        detail,
    }
}

#[test]
fn thirty_days_of_history_report_in_under_a_second_with_the_grade_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let config = dir.path().join("splitgate.toml");
    std::fs::write(
        &config,
        "[[listener]]\nbind = \"127.0.0.1:1\"\n[events]\nhistory = \"history.db\"\n\
         [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n\
         [[site]]\nname = \"b\"\nweight = 1\nbackends = [\"127.0.0.1:3\"]\n",
    )
    .unwrap();
    let now = splitgate::clock::unix_ms();
    let day = 86_400_000;
    let history = History::open(&db).unwrap();
    history
        .write_run(&Run {
            started_ms: now - 31 * day,
            // Still running: the report's window ends a moment later.
            seen_ms: now + 60_000,
            sites: vec![RunSite::new("a", 0), RunSite::new("b", 0)],
        })
        .unwrap();
    // Site b fails 4 times a day for 30 days, each time for a minute; detection 300 ms
    // and traffic moved 800 ms, no client error.
    let mut rows = Vec::new();
    for n in 0..120u64 {
        // Two minutes into the window: the report process starts a little later than
        // `now` and its 30-day window with it (on a loaded machine, seconds later).
        let at = now - 30 * day + n * day / 4 + 120_000;
        let down =
            json!({"detect_ms": 300, "traffic_moved_ms": 800, "client_errors": 0, "retried": 3, "cause": "refused"});
        rows.push((Kind::SiteDown, "b", at, down));
        rows.push((Kind::SiteUp, "b", at + 60_000, json!({"down_ms": 60_000})));
    }
    // Once both sites were down together for 7 min 12 s (between two of b's own).
    let at = now - 10 * day + 3_600_000;
    for site in ["a", "b"] {
        let down = json!({"detect_ms": 100, "traffic_moved_ms": 200, "client_errors": 2, "possible_data_loss": 1});
        rows.push((Kind::SiteDown, site, at + 100, down));
    }
    for site in ["a", "b"] {
        rows.push((Kind::SiteUp, site, at + 432_000, json!({})));
    }
    // Ids in the order the events happened, as a proxy numbers them.
    rows.sort_by_key(|(_, _, at, _)| *at);
    for (id, (kind, site, at, detail)) in rows.into_iter().enumerate() {
        history
            .write_event(&event(id as u64 + 1, kind, site, at, detail))
            .unwrap();
    }
    drop(history);

    let started = std::time::Instant::now();
    let (ok, out, err) = report(&config, &["--days", "30"]);
    let (text, took) = (out + &err, started.elapsed());
    println!("{text}\nreport took {took:?}");
    assert!(ok, "{text}");
    assert!(took < Duration::from_secs(5), "report took {took:?}");
    assert!(
        text.contains("site b") && text.contains("failovers         121"),
        "{text}"
    );
    assert!(text.contains("traffic moved     median 800 ms, worst 800 ms"), "{text}");
    assert!(text.contains("meet grade 4"), "{text}");
    assert!(text.contains("grade 6 missed: recovery took 7 min 12 s"), "{text}");
    assert!(
        text.contains("7 min 12 s of downtime in 30 d 0 h of known time extrapolates to 1 h 27 min a year"),
        "{text}"
    );
    assert!(text.contains("grade 5 missed"), "{text}");
    assert!(text.contains("possible data loss"), "{text}");
}
