//! The history file with the real binary: events survive a restart (ids continue,
//! `/events` still lists them, `report` counts them), and a file that cannot be used
//! (not a database, locked by another process) never stops the proxy: it serves,
//! says so (`/status`, metrics, `check`), and the events waiting in its bounded queue
//! reach the file once it is free.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// The events in the history file: id, kind and detail (empty while it cannot be read).
fn written(db: &std::path::Path) -> Vec<(u64, String, Value)> {
    let Ok(connection) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return Vec::new();
    };
    let Ok(mut query) = connection.prepare("SELECT id, kind, detail FROM events ORDER BY id") else {
        return Vec::new();
    };
    let rows = query.query_map([], |row| {
        let detail: String = row.get(2)?;
        Ok((
            row.get::<_, i64>(0)? as u64,
            row.get(1)?,
            serde_json::from_str(&detail).unwrap_or(Value::Null),
        ))
    });
    rows.map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The events in the proxy's ring, as `written` gives them.
async fn ring(process: &ProxyProcess) -> Vec<(u64, String, Value)> {
    let page = admin_json(format!("http://{}/events", process.admin), http::Method::GET, "").await;
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut detail = e.as_object().unwrap().clone();
            let (id, kind) = (detail.remove("id").unwrap(), detail.remove("kind").unwrap());
            for field in ["site", "at"] {
                detail.remove(field);
            }
            (
                id.as_u64().unwrap(),
                kind.as_str().unwrap().to_string(),
                Value::Object(detail),
            )
        })
        .collect()
}

/// Waits (10 s at most) until the history file holds `n` events, each as the ring has
/// it (with its settled figures and amendments); returns what the file holds.
async fn history_holds(db: &std::path::Path, process: &ProxyProcess, n: usize) -> Vec<(u64, String, Value)> {
    let start = Instant::now();
    loop {
        let (file, ring) = (written(db), ring(process).await);
        if (file.len() == n && file == ring) || start.elapsed() > Duration::from_secs(10) {
            assert_eq!(file, ring, "the history file holds what the ring has");
            assert_eq!(file.len(), n, "{file:?}");
            return file;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // Written to the history file before the process is stopped.
    history_holds(&db, &first, 2).await;
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
    history_holds(&db, &second, 4).await;
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
