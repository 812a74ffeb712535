//! The history file and the DR report: events survive a restart of the real binary
//! (ids continue, `/events` still lists them, `report` counts them), and `report`
//! reads 30 days of history (written through the same code) in well under a second
//! and states the grade with the reason each higher grade is missed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use splitgate::events::history::{History, Run};
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
            sites: vec!["a".into(), "b".into()],
        })
        .unwrap();
    // Site b fails 4 times a day for 30 days, each time for a minute; detection 300 ms
    // and traffic moved 800 ms, no client error.
    let mut id = 0;
    for n in 0..120u64 {
        // Two minutes into the window: the report process starts a little later than
        // `now` and its 30-day window with it (on a loaded machine, seconds later).
        let at = now - 30 * day + n * day / 4 + 120_000;
        id += 1;
        let down =
            json!({"detect_ms": 300, "traffic_moved_ms": 800, "client_errors": 0, "retried": 3, "cause": "refused"});
        history.write_event(&event(id, Kind::SiteDown, "b", at, down)).unwrap();
        id += 1;
        history
            .write_event(&event(id, Kind::SiteUp, "b", at + 60_000, json!({"down_ms": 60_000})))
            .unwrap();
    }
    // Once both sites were down together for 7 min 12 s.
    let at = now - 10 * day;
    for site in ["a", "b"] {
        id += 1;
        let down = json!({"detect_ms": 100, "traffic_moved_ms": 200, "client_errors": 2, "possible_data_loss": 1});
        history
            .write_event(&event(id, Kind::SiteDown, site, at + 100, down))
            .unwrap();
    }
    for site in ["a", "b"] {
        id += 1;
        history
            .write_event(&event(id, Kind::SiteUp, site, at + 432_000, json!({})))
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
