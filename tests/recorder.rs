//! The history's writer on its own, against a real SQLite file held by a second
//! connection: events beyond its queue are lost, and the time they cover becomes
//! unknown time (the run ends where the loss began, the next starts with the sites'
//! state, never all up); a file unreadable at start gets the new events after its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Map;
use splitgate::events::history::{History, RunSite};
use splitgate::events::{Event, Kind};

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
        let event = now_event(id, Kind::Failover, None);
        let at = event.at_ms;
        opened.sink.queue.send(Arc::new(event)).await.unwrap();
        // Written, not only taken (the status can be a step behind): one event waits at
        // a time, so none is lost here however slow the disk is.
        for _ in 0..500 {
            runs = history.runs(0).unwrap_or_default();
            if runs.last().is_some_and(|r| r.seen_ms >= at) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if runs.len() == 2 && runs[1].seen_ms > runs[1].started_ms {
            break;
        }
    }
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].seen_ms <= lost_at,
        "the first run ends where the loss began: {runs:?}"
    );
    // The new run starts when the old one ended, or later (the same millisecond, at times).
    assert!(runs[1].started_ms >= runs[0].seen_ms, "{runs:?}");
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
