//! `splitgate demo` as a newcomer runs it: the real binary, the commands it prints.
//! Its kill command stops a site's backends for real; the proxy finds out through its
//! own probes and traffic, clients keep getting 200 from the other site, `/events` gets
//! the `site_down`; the revive command brings the site back.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::BINARY;
use common::{admin_call, get};
use http::Method;
use serde_json::Value;

struct DemoProcess(Child);

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The URL in the printed line that contains `needle`.
fn printed_url(banner: &str, needle: &str) -> String {
    banner
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://") && w.contains(needle))
        })
        .unwrap_or_else(|| panic!("the demo prints a command with {needle}:\n{banner}"))
        .to_string()
}

fn site<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no site {name} in {status}"))
}

async fn status(admin: &str) -> Value {
    admin_call(Method::GET, format!("http://{admin}/status"), "").await.1
}

async fn wait_healthy(admin: &str, name: &str, healthy: bool, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if site(&status(admin).await, name)["healthy"] == healthy {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_kill_command_fails_a_site_for_real_and_revive_brings_it_back() {
    // Three ports held together while chosen, so they differ.
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let [listen, admin, control] = [0, 1, 2].map(|i| held[i].local_addr().unwrap().to_string());
    drop(held);
    let mut child = Command::new(BINARY)
        .args(["demo", "--listen", &listen, "--admin", &admin, "--control", &control])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start splitgate demo");
    let stdout = child.stdout.take().unwrap();
    let demo = DemoProcess(child);
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout");
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("the demo prints its instructions")
        .unwrap();
    let (kill, revive) = (printed_url(&banner, "/kill"), printed_url(&banner, "/revive"));
    assert_eq!(kill, format!("http://{control}/sites/idc-a/kill"));
    assert!(banner.contains(&format!("curl -X POST {revive}")), "{banner}");
    assert!(banner.contains("background traffic"), "{banner}");
    assert!(wait_healthy(&admin, "idc-a", true, Duration::from_secs(10)).await);

    let (code, killed) = admin_call(Method::POST, kill, "").await;
    assert_eq!(code, 200, "{killed}");
    assert!(killed["sites"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["up"] == false));

    // Clients keep getting answers, from idc-b, while the proxy finds out.
    let client = common::client();
    for _ in 0..30 {
        let (code, body) = get(&client, &format!("http://{listen}/"))
            .await
            .expect("the proxy answers");
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("site=idc-b"), "{body}");
    }
    assert!(
        wait_healthy(&admin, "idc-a", false, Duration::from_secs(10)).await,
        "the proxy marks idc-a down"
    );
    let start = Instant::now();
    let down = loop {
        let (_, page) = admin_call(Method::GET, format!("http://{admin}/events"), "").await;
        let found = page["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["kind"] == "site_down" && e["site"] == "idc-a")
                .cloned()
        });
        if let Some(event) = found {
            break event;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no site_down for idc-a: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("site_down: {down}");
    assert!(down["cause"].as_str().is_some_and(|c| !c.is_empty()), "{down}");
    assert_eq!(down["client_errors"], 0, "every request was retried elsewhere: {down}");

    // Revive: the same ports listen again and the proxy's probes bring idc-a back.
    let (code, revived) = admin_call(Method::POST, revive, "").await;
    assert_eq!(code, 200, "{revived}");
    assert!(
        wait_healthy(&admin, "idc-a", true, Duration::from_secs(10)).await,
        "the proxy sees idc-a again"
    );
    let mut back = false;
    for _ in 0..200 {
        let (_, body) = get(&client, &format!("http://{listen}/"))
            .await
            .expect("the proxy answers");
        if body.starts_with("site=idc-a") {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "idc-a gets traffic again");
    let (_, page) = admin_call(Method::GET, format!("http://{admin}/events"), "").await;
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "site_up" && e["site"] == "idc-a"),
        "{page}"
    );

    // The background traffic reached the rate history the page draws.
    let start = Instant::now();
    loop {
        let (_, doc) = admin_call(Method::GET, format!("http://{admin}/status/rates"), "").await;
        let busy = doc["samples"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["sites"]["idc-b"]["rps"].as_f64().unwrap_or(0.0) > 0.0)
        });
        if busy {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the demo's own traffic shows in /status/rates: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The dashboard has something to draw: after the failover above, every metric it
    // queries is in /metrics, but those that only appear on their first event of a kind
    // the demo does not have (counted failures, the fleet, the history, queues).
    let metrics = get(&client, &format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .1;
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json")).unwrap();
    let first_event_only = [
        "splitgate_access_log_dropped_total",
        "splitgate_config_reloads_total",
        "splitgate_descriptors_exhausted_total",
        "splitgate_dns_failures_total",
        "splitgate_drills_ended_total",
        "splitgate_events_dropped_total",
        "splitgate_fleet_connected",
        "splitgate_fleet_diverged",
        "splitgate_fleet_invalid_keys",
        "splitgate_history_lost_events_total",
        "splitgate_history_writable",
        "splitgate_notify_failed_total",
        "splitgate_queue_length",
        "splitgate_queue_rejected_total",
        "splitgate_retry_budget_exhausted_total",
        "splitgate_state_write_errors_total",
        "splitgate_upgrades_failed_total",
    ];
    let mut queried: Vec<&str> = dashboard
        .match_indices("splitgate_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            &rest[..rest
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len())]
        })
        .collect();
    queried.sort_unstable();
    queried.dedup();
    assert!(queried.len() > 20, "the dashboard's queries: {queried:?}");
    let missing: Vec<&&str> = queried
        .iter()
        .filter(|name| !first_event_only.contains(name))
        .filter(|name| {
            // A histogram's own name (in a panel's title) is in /metrics as its series.
            let series = ["", "_bucket", "_count", "_sum"].map(|suffix| format!("{name}{suffix}"));
            !metrics.lines().any(|l| {
                series
                    .iter()
                    .any(|s| l.starts_with(&format!("{s}{{")) || l.starts_with(&format!("{s} ")))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard metrics absent from a running demo: {missing:?}"
    );

    // Ctrl-C ends it with 0.
    let mut demo = demo;
    let pid = demo.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = demo.0.try_wait().unwrap() {
            break exit;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "the demo exits on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
}
