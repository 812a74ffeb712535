//! Drill programs (`[[drill]]`): one due every minute starts its drill within its
//! minute, named by its program, and the drill runs its duration; one that the guard
//! rails refuse (its site is the only one) is skipped with the reason, which reaches
//! `/events`, the history and `splitgate report`; `check` names every bad program key.
//! The first two wait for the next minute of the wall clock (up to a minute).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use splitgate::events::Event;

use common::process::BINARY;
use common::{config, eventually, site, Backend, TestProxy};

const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\nslow_start = \"0s\"\n";
const MINUTE_MS: u64 = 60_000;
/// The next minute plus room for a slow machine.
const WAIT: Duration = Duration::from_secs(80);

fn program(site: &str, schedule: &str, duration: &str) -> String {
    format!("[[drill]]\nsite = \"{site}\"\nschedule = \"{schedule}\"\nduration = \"{duration}\"\n")
}

/// The first event of `kind` (`"drill_started"`).
fn first(proxy: &TestProxy, kind: &str) -> Option<Arc<Event>> {
    proxy.server.events().into_iter().find(|e| e.kind.name() == kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_program_due_every_minute_runs_within_its_minute() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let extra = format!("{HEALTH}{}", program("b", "* * * * *", "2s"));
    let proxy = TestProxy::start(&config(
        &extra,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let since = splitgate::clock::unix_ms();
    let due = (since / MINUTE_MS + 1) * MINUTE_MS;
    let waited = eventually(WAIT, || first(&proxy, "drill_started").is_some()).await;
    let started = first(&proxy, "drill_started").expect("the program started its drill");
    println!(
        "drill started {} ms after its minute began (waited {:?} for it): {}",
        started.at_ms.saturating_sub(due),
        waited,
        started.to_json()
    );
    assert_eq!(started.site.as_deref(), Some("b"));
    assert_eq!(started.detail["program"], "drill[0]");
    assert_eq!(started.detail["schedule"], "* * * * *");
    assert_eq!(started.measurements().duration_ms, Some(2000));
    assert!(
        (due..due + MINUTE_MS).contains(&started.at_ms),
        "due at {due}, started at {}: not within its minute",
        started.at_ms
    );
    assert!(first(&proxy, "drill_skipped").is_none());
    let ended = eventually(Duration::from_secs(10), || first(&proxy, "drill_ended").is_some()).await;
    assert!(ended.is_some(), "the drill ends after its 2 s");
    let ended = first(&proxy, "drill_ended").unwrap();
    assert_eq!(ended.detail["ended"], "time_up", "{}", ended.to_json());
    assert_eq!(ended.detail["drill"], started.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_program_the_guard_rails_refuse_is_skipped_with_the_reason() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.db");
    let extra = format!(
        "{HEALTH}[events]\nhistory = \"{}\"\n{}",
        history.display(),
        program("a", "* * * * *", "10m")
    );
    let proxy = TestProxy::start(&config(&extra, &[site("a", 1, 0, &[a.addr])])).await;
    let since = splitgate::clock::unix_ms();
    let due = (since / MINUTE_MS + 1) * MINUTE_MS;
    eventually(WAIT, || first(&proxy, "drill_skipped").is_some()).await;
    let skipped = first(&proxy, "drill_skipped").expect("the program skipped its drill");
    println!(
        "skipped {} ms after its minute began: {}",
        skipped.at_ms.saturating_sub(due),
        skipped.to_json()
    );
    assert_eq!(skipped.site.as_deref(), Some("a"));
    let reason = skipped.detail["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("guard rails") && reason.contains("min_serving_sites"),
        "{reason}"
    );
    assert_eq!(skipped.detail["schedule"], "* * * * *");
    assert_eq!(skipped.detail["program"], "drill[0]");
    assert!(first(&proxy, "drill_started").is_none(), "no drill ran");
    assert!(proxy.server.drills().is_empty());
    assert!(proxy.server.sites()[0].healthy, "the site kept serving");

    let (_, page) = common::admin_call(Method::GET, proxy.admin_url("/events?since=0"), "").await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"drill_skipped"), "{page}");

    // The history keeps it, and the report lists it with its reason.
    let report_config = dir.path().join("splitgate.toml");
    std::fs::write(
        &report_config,
        "[[listener]]\nbind = \"127.0.0.1:1\"\n[events]\nhistory = \"history.db\"\n\
         [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n",
    )
    .unwrap();
    let mut listed = Value::Null;
    let found = eventually(Duration::from_secs(10), || {
        listed = report_json(&report_config);
        listed["sites"][0]["drills_skipped"] == 1
    })
    .await;
    assert!(found.is_some(), "{listed}");
    assert!(
        listed["sites"][0]["skipped"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("guard rails")),
        "{listed}"
    );
    let text = report_text(&report_config);
    assert!(
        text.contains("drills            0 held, 0 aborted, 1 skipped"),
        "{text}"
    );
    assert!(
        text.contains("drill skipped") && text.contains("(program \"* * * * *\")"),
        "{text}"
    );
}

fn report_json(config: &Path) -> Value {
    let output = Command::new(BINARY)
        .args(["report", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

fn report_text(config: &Path) -> String {
    let output = Command::new(BINARY)
        .args(["report", "--config"])
        .arg(config)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_names_every_bad_drill_program_key_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drills.toml");
    std::fs::write(
        &path,
        r#"
[[listener]]
bind = "127.0.0.1:8080"
[drills]
abort_5xx = "2"
[[site]]
name = "a"
weight = 1
backends = ["127.0.0.1:9001"]
[[drill]]
site = "nowhere"
schedule = "0 3 * *"
duration = "forever"
[[drill]]
site = "a"
schedule = "61 3 * * TUE"
duration = "10m"
[[drill]]
schedule = "0 3 1 1,4,7,10 *"
[[drill]]
site = "a"
schedule = "0 3 * * TUE"
duration = "30m"
"#,
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert!(!output.status.success());
    for (key, reason) in [
        ("drills.abort_5xx", "is not a percentage"),
        ("drill[0].site", "no [[site]] is named \"nowhere\""),
        ("drill[0].schedule", "has 4 fields"),
        ("drill[0].duration", "forever"),
        ("drill[1].schedule", "minute \"61\""),
        ("drill[2].site", "needs the name of the site"),
        ("drill[2].duration", "needs how long"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("{key} missing from:\n{text}"));
        assert!(line.contains(reason), "{key}: {line}");
    }
    assert!(!text.contains("drill[3]"), "the good program is fine:\n{text}");
}
