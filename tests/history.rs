//! The history file and the DR report: events survive a restart of the real binary
//! (ids continue, `/events` still lists them, `report` counts them), and `report`
//! reads 30 days of history (written through the same code) in well under a second
//! and states the grade with the reason each higher grade is missed. A file that
//! cannot be used (not a database, locked) never stops the proxy: events wait in a
//! bounded queue and reach the file once it is free; beyond the queue they are lost
//! and their time is unknown time.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use splitgate::events::history::{History, Run, RunSite};
use splitgate::events::{Event, Kind};

use common::process::{ProxyProcess, BINARY};
use common::{client, Backend};

async fn admin_json(url: String, method: http::Method, body: &'static str) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

async fn kinds(process: &ProxyProcess) -> Vec<(u64, String)> {
    let page = admin_json(format!("http://{}/events", process.admin), http::Method::GET, "").await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_string()))
        .collect()
}

fn report(config: &std::path::Path, extra: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = Command::new(BINARY)
        .args(["report", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_restart_and_the_report_counts_them() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let text = |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[events]\nhistory = \"{}\"\n\
             [health]\nslow_start = \"0s\"\n{}{}",
            db.display(),
            common::site("a", 50, 0, &[a.addr]),
            common::site("b", 50, 0, &[b.addr])
        )
    };
    let mut first = ProxyProcess::start(text);
    let url = format!("http://{}/sites/b/drill", first.admin);
    assert_eq!(
        admin_json(url, http::Method::POST, r#"{"duration": "300ms"}"#).await["drill"],
        1
    );
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = kinds(&first).await;
        if seen.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, [(1, "drill_started".to_string()), (2, "drill_ended".to_string())]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));

    let second = ProxyProcess::start(text);
    assert_eq!(kinds(&second).await, seen, "the ring is refilled from the history");
    let url = format!("http://{}/sites/a/drill", second.admin);
    assert_eq!(
        admin_json(url, http::Method::POST, r#"{"duration": "100ms"}"#).await["drill"],
        3,
        "ids continue"
    );
    let mut now = Vec::new();
    for _ in 0..100 {
        now = kinds(&second).await;
        if now.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(now.last(), Some(&(4, "drill_ended".to_string())), "{now:?}");
    // The history writer has the events once the settle and its write are done.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, text, _) = report(&second.config_path, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("site b"), "{text}");
    let drills = text
        .lines()
        .filter(|l| l.trim_start().starts_with("drill ") && l.contains("client errors"));
    assert_eq!(
        drills.count(),
        2,
        "b's drill in the first run, a's in the second: {text}"
    );
    let (ok, json_text, _) = report(&second.config_path, &["--json"]);
    assert!(ok, "{json_text}");
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    let site_b = doc["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .unwrap()
        .clone();
    assert_eq!(site_b["drills"].as_array().unwrap().len(), 1, "{site_b}");
    assert_eq!(
        site_b["availability"], 100.0,
        "a drill is planned, not downtime: {site_b}"
    );
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

    let (ok, text, took) = report(&config, &["--days", "30"]);
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

/// `GET /status` of a proxy process.
async fn status(process: &ProxyProcess) -> Value {
    admin_json(format!("http://{}/status", process.admin), http::Method::GET, "").await
}

/// Polls `/status` every 50 ms until `condition` holds of it (at most `limit`).
async fn status_until(process: &ProxyProcess, limit: Duration, condition: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let doc = status(process).await;
        if condition(&doc) || start.elapsed() > limit {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn two_sites(
    db: &std::path::Path,
    a: &Backend,
    b: &Backend,
) -> impl Fn(std::net::SocketAddr, std::net::SocketAddr) -> String {
    let (db, a, b) = (db.to_path_buf(), a.addr, b.addr);
    move |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[events]\nhistory = \"{}\"\n{}{}",
            db.display(),
            common::site("a", 50, 0, &[a]),
            common::site("b", 50, 0, &[b])
        )
    }
}

fn check(config: &std::path::Path) -> (bool, String) {
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_file_that_is_not_a_database_does_not_stop_the_proxy_and_is_retried() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    std::fs::write(
        &db,
        "this is not a database, and it is long enough to have a header".repeat(20),
    )
    .unwrap();
    let process = ProxyProcess::start(two_sites(&db, &a, &b));
    let (code, _) = common::get(&client(), &format!("http://{}/", process.addr))
        .await
        .unwrap();
    assert_eq!(code, 200, "traffic comes first");
    let doc = status(&process).await;
    assert_eq!(doc["history"]["ok"], false, "{doc}");
    assert!(
        doc["history"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a database")),
        "{doc}"
    );
    let (_, metrics) = common::get(&client(), &format!("http://{}/metrics", process.admin))
        .await
        .unwrap();
    assert!(metrics.contains("splitgate_history_writable 0"), "{metrics}");
    let (ok, text) = check(&process.config_path);
    assert!(
        ok && text.contains("events.history") && text.contains("not a database"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "ok"), "{text}");

    // Events wait for the file; once it can be used, they are in it.
    let url = format!("http://{}/sites/b/drill", process.admin);
    assert_eq!(
        admin_json(url, http::Method::POST, r#"{"duration": "100ms"}"#).await["drill"],
        1
    );
    let doc = status_until(&process, Duration::from_secs(10), |d| d["history"]["pending"] == 2).await;
    assert_eq!(doc["history"]["pending"], 2, "{doc}");
    std::fs::remove_file(&db).unwrap();
    let doc = status_until(&process, Duration::from_secs(20), |d| {
        d["history"]["ok"] == true && d["history"]["pending"] == 0
    })
    .await;
    assert_eq!(doc["history"]["ok"], true, "{doc}");
    assert_eq!(doc["history"]["pending"], 0, "{doc}");
    assert!(
        process.stderr().contains("cannot open the event history"),
        "{}",
        process.stderr()
    );
    let (ok, text, _) = report(&process.config_path, &[]);
    assert!(ok && text.contains("drill "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_the_history_is_locked_all_reach_it_once_it_is_free() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let process = ProxyProcess::start(two_sites(&db, &a, &b));
    let doc = status_until(&process, Duration::from_secs(5), |d| d["history"]["ok"] == true).await;
    assert_eq!(doc["history"]["ok"], true, "{doc}");
    // Another process takes the write lock and keeps it.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (ok, text) = check(&process.config_path);
    assert!(
        ok && text.contains("events.history") && text.contains("another process"),
        "{text}"
    );
    for _ in 0..45 {
        let url = format!("http://{}/sites/b/drill", process.admin);
        assert!(admin_json(url.clone(), http::Method::POST, r#"{"duration": "1h"}"#).await["drill"].is_u64());
        assert!(admin_json(url, http::Method::DELETE, "").await["ended"].is_u64());
    }
    let doc = status_until(&process, Duration::from_secs(15), |d| {
        d["history"]["ok"] == false && d["history"]["pending"] == 90
    })
    .await;
    assert_eq!(doc["history"]["ok"], false, "{doc}");
    assert_eq!(doc["history"]["pending"], 90, "{doc}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let doc = status_until(&process, Duration::from_secs(20), |d| {
        d["history"]["ok"] == true && d["history"]["pending"] == 0
    })
    .await;
    assert_eq!(doc["history"]["pending"], 0, "{doc}");
    assert_eq!(doc["history"]["lost"], 0, "{doc}");
    let connection = rusqlite::Connection::open(&db).unwrap();
    let drills: i64 = connection
        .query_row("SELECT count(*) FROM events WHERE kind LIKE 'drill_%'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(drills, 90, "every event reached the file");
}

/// An event of `kind` now.
fn now_event(id: u64, kind: Kind, site: Option<&str>) -> Event {
    Event {
        id,
        kind,
        site: site.map(str::to_string),
        at_ms: splitgate::clock::unix_ms(),
        detail: Map::new(),
    }
}

fn recorder(db: &std::path::Path, queue: usize) -> splitgate::events::recorder::Opened {
    splitgate::events::recorder::start(splitgate::events::recorder::Settings {
        path: db.to_path_buf(),
        keep: Duration::from_secs(86_400),
        sites: vec![RunSite::new("a", 0), RunSite::new("b", 0)],
        recent: 10,
        queue,
    })
}

async fn history_until(
    opened: &splitgate::events::recorder::Opened,
    condition: impl Fn(&splitgate::events::recorder::HistoryStatus) -> bool,
) -> splitgate::events::recorder::HistoryStatus {
    let start = Instant::now();
    loop {
        let status = opened.health.status();
        if condition(&status) || start.elapsed() > Duration::from_secs(15) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lost_beyond_the_queue_leave_unknown_time_never_counted_as_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let opened = recorder(&db, 5);
    assert!(opened.health.status().ok);
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for id in 1..=5 {
        opened
            .sink
            .queue
            .send(Arc::new(now_event(id, Kind::Failover, None)))
            .await
            .unwrap();
    }
    // The queue is full: b's failure is lost, and with it what is known of b.
    let lost = now_event(6, Kind::SiteDown, Some("b"));
    let lost_at = lost.at_ms;
    opened.sink.queue.send(Arc::new(lost)).await.unwrap();
    let status = history_until(&opened, |s| !s.ok && s.lost == 1 && s.pending == 5).await;
    assert_eq!((status.ok, status.pending, status.lost), (false, 5, 1), "{status:?}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let status = history_until(&opened, |s| s.ok && s.pending == 0).await;
    assert!(status.ok && status.pending == 0, "{status:?}");
    // More events until the new run has lasted a moment (each one is a write).
    let history = History::open(&db).unwrap();
    let mut runs = Vec::new();
    for id in 7..100 {
        opened
            .sink
            .queue
            .send(Arc::new(now_event(id, Kind::Failover, None)))
            .await
            .unwrap();
        history_until(&opened, |s| s.pending == 0).await;
        runs = history.runs(0).unwrap();
        if runs.len() == 2 && runs[1].seen_ms > runs[1].started_ms {
            break;
        }
    }
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].seen_ms <= lost_at,
        "the first run ends where the loss began: {runs:?}"
    );
    assert!(runs[1].started_ms > runs[0].seen_ms, "{runs:?}");
    let b = runs[1].sites.iter().find(|s| s.name == "b").unwrap();
    assert!(b.down_since_ms.is_some(), "the new run starts with b down: {runs:?}");
    let report = splitgate::report::build(&history, 1, splitgate::clock::unix_ms()).unwrap();
    let recorded: u64 = runs.iter().map(|r| r.seen_ms - r.started_ms).sum();
    assert!(
        report.known_ms <= recorded,
        "{} known of {recorded} recorded",
        report.known_ms
    );
    let site_b = report.sites.iter().find(|s| s.name == "b").unwrap();
    assert!(site_b.down_ms > 0, "b is down, not up, after the gap");
    assert_eq!(site_b.down_ms, runs[1].seen_ms - runs[1].started_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_unreadable_at_start_gets_the_new_events_after_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    {
        let history = History::open(&db).unwrap();
        for id in 1..=3 {
            history.write_event(&now_event(id, Kind::Failover, None)).unwrap();
        }
    }
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let opened = recorder(&db, 100);
    assert!(opened.recent.is_empty());
    assert!(!opened.health.status().ok);
    // This process numbers its events from 1: it could not read the file.
    for id in 1..=2 {
        opened
            .sink
            .queue
            .send(Arc::new(now_event(id, Kind::Failback, None)))
            .await
            .unwrap();
    }
    history_until(&opened, |s| s.pending == 2).await;
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let status = history_until(&opened, |s| s.ok && s.pending == 0).await;
    assert!(status.ok, "{status:?}");
    let history = History::open(&db).unwrap();
    let kinds: Vec<(u64, Kind)> = history.recent(10).unwrap().iter().map(|e| (e.id, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, Kind::Failover),
            (2, Kind::Failover),
            (3, Kind::Failover),
            (4, Kind::Failback),
            (5, Kind::Failback)
        ]
    );
}
