//! Notifiers as the operator sees them: a command cut at its timeout takes what it
//! started with it (its own process group, killed whole), and each notifier is named
//! in the metrics and the logs by its config key and its whole target.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::ProxyProcess;
use common::{admin_call, client, config, eventually, site, Backend, TestProxy};

/// The processes a test's command started (pids in a file), killed at the end whatever
/// the outcome, so that a failing run leaves nothing behind.
struct Started(PathBuf);

impl Started {
    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Running: the process exists and is not a zombie waiting for its parent.
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cut_at_its_timeout_takes_its_children_with_it() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let started = Started(dir.path().join("pids"));
    let script = format!(
        "sleep 1000 & echo $! >> '{0}'; sleep 1000 & echo $! >> '{0}'; wait",
        started.0.display()
    );
    let notify = format!("[[notify]]\ncommand = [\"sh\", \"-c\", \"{script}\"]\ntimeout = \"300ms\"\n");
    let proxy = TestProxy::start(&config(&notify, &[site("a", 1, 0, &[a.addr])])).await;
    // A drill of the only site: through the guard rails, on purpose.
    let (status, _) = admin_call(
        http::Method::POST,
        proxy.admin_url("/sites/a/drill?force=true"),
        r#"{"duration": "1h"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(5), || started.pids().len() >= 2)
            .await
            .is_some(),
        "the command ran"
    );
    let children = started.pids()[..2].to_vec();
    let gone = eventually(Duration::from_secs(5), || !children.iter().any(|&pid| running(pid))).await;
    assert!(
        gone.is_some(),
        "children {children:?} still run after the command was killed at its timeout"
    );
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notifier_is_named_in_the_metrics_and_the_logs() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let closed = common::refused_addr();
    let process = ProxyProcess::start(|listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n\
             [[notify]]\ncommand = [\"sh\", \"-c\", \"exit 3\"]\n\
             [[notify]]\nurl = \"http://{closed}/hooks/splitgate?key=secret\"\ntimeout = \"200ms\"\n\
             [[notify]]\ncommand = [\"sh\", \"-c\", \"cat > /dev/null\"]\n{}{}",
            site("a", 50, 0, &[a.addr]),
            site("b", 50, 0, &[b.addr])
        )
    });
    let url = format!("http://{}/sites/b/drill", process.admin);
    assert_eq!(
        admin_call(http::Method::POST, url, r#"{"duration": "1h"}"#).await.0,
        200
    );
    // Five tries, 0.5 s to 4 s apart: the first event is given up after 7.5 s.
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        text = common::get(&client(), &format!("http://{}/metrics", process.admin))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if metric(&text, "splitgate_notify_failed_total{notifier=\"notify[1]\"}").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (line, value) in [
        ("splitgate_notify_failed_total{notifier=\"notify[0]\"}", 1.0),
        ("splitgate_notify_failed_total{notifier=\"notify[1]\"}", 1.0),
        ("splitgate_notify_delivered_total{notifier=\"notify[2]\"}", 1.0),
    ] {
        assert_eq!(metric(&text, line), Some(value), "{line} in:\n{text}");
    }
    let log = process.stderr();
    let given_up: Vec<&str> = log.lines().filter(|l| l.contains("giving up")).collect();
    assert!(
        given_up
            .iter()
            .any(|l| l.contains("notify[0]") && l.contains("sh -c exit 3")),
        "{log}"
    );
    assert!(
        given_up
            .iter()
            .any(|l| l.contains("notify[1]") && l.contains("/hooks/splitgate") && !l.contains("secret")),
        "{log}"
    );
}
