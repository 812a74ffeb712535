//! The proxy's own restarts cost no decision and no request, with the real binary: a
//! drain, a drill and a black-holed backend marked down are all still in force the
//! moment a restarted process accepts; a corrupt state file is a WARN and nothing of
//! it applied; `check` refuses a state file that cannot be written.

mod common;

use std::time::{Duration, Instant};

use common::process::{ProxyProcess, BINARY};
use common::{black_hole, client, get, Backend};

fn admin_url(process: &ProxyProcess, path: &str) -> String {
    format!("http://{}{}", process.admin, path)
}

async fn status(process: &ProxyProcess) -> serde_json::Value {
    let (_, body) = get(&client(), &admin_url(process, "/status")).await.unwrap();
    serde_json::from_str(&body).unwrap()
}

fn site_in<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_a_drain_a_drill_and_a_backend_that_was_down() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let (hole, _held) = black_hole().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("splitgate.state");
    let text = |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[state]\npath = \"{}\"\n\
             [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 3\nslow_start = \"0\"\n\
             [timeouts]\nresponse = \"20s\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n\
             [[site]]\nname = \"b\"\nweight = 1\nbackends = [\"{}\"]\n\
             [[site]]\nname = \"c\"\nweight = 1\nbackends = [\"{}\", \"{hole}\"]\n",
            state.display(),
            a.addr,
            b.addr,
            c.addr
        )
    };
    let first = ProxyProcess::start(text);
    let (code, _) = common::admin_call(
        http::Method::PUT,
        admin_url(&first, "/sites/b/weight"),
        r#"{"weight": 0}"#,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = common::admin_call(
        http::Method::POST,
        admin_url(&first, "/sites/a/drill"),
        r#"{"duration": "10m"}"#,
    )
    .await;
    assert_eq!(code, 200);
    let started = Instant::now();
    loop {
        let now = status(&first).await;
        let hole_down = site_in(&now, "c")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|backend| backend["addr"] == hole.to_string() && backend["healthy"] == false);
        let kept = std::fs::read_to_string(&state).unwrap_or_default();
        if hole_down && kept.contains(&format!("\"c/{hole}\": false")) && kept.contains("\"b\": 0") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{now} {kept}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first);

    let second = ProxyProcess::start(text);
    // From the first request on: only c's good backend, and nothing waits on the hole.
    let quick = client();
    for _ in 0..30 {
        let answer = tokio::time::timeout(Duration::from_secs(5), get(&quick, &format!("http://{}/", second.addr)))
            .await
            .expect("no request waits on the black hole")
            .unwrap();
        assert_eq!((answer.0.as_u16(), answer.1.as_str()), (200, "c"));
    }
    let now = status(&second).await;
    assert_eq!(site_in(&now, "b")["weight_override"], 0, "the drain survived: {now}");
    assert_eq!(site_in(&now, "a")["drilled"], true, "the drill runs on: {now}");
    let (_, events) = get(&client(), &admin_url(&second, "/events")).await.unwrap();
    assert_eq!(
        events.matches("drill_started").count(),
        0,
        "no second drill_started: {events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_a_warning_and_nothing_of_it_is_applied() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("splitgate.state");
    std::fs::write(&state, b"{\"version\": 1, \"weights\": {\"a\": \"zer").unwrap();
    let process = ProxyProcess::start(|listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[state]\npath = \"{}\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n",
            state.display(),
            a.addr
        )
    });
    let (code, body) = get(&client(), &format!("http://{}/", process.addr)).await.unwrap();
    assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
    assert!(
        process.stderr().contains("starting without the state kept from before"),
        "{}",
        process.stderr()
    );
    assert!(process.stderr().contains("is not valid"), "{}", process.stderr());
}

#[test]
fn check_refuses_a_state_file_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    let text = "[[listener]]\nbind = \"127.0.0.1:8080\"\n[state]\npath = \"/proc/splitgate.state\"\n\
                [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:9001\"]\n";
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("state.path: directory /proc cannot be written"), "{said}");
}

/// `GET /ready` of the process answering on `admin`: its pid when ready.
async fn ready_pid(admin: std::net::SocketAddr) -> Option<u64> {
    let (code, body) = get(&client(), &format!("http://{admin}/ready")).await.ok()?;
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200).then(|| answer["pid"].as_u64()).flatten()
}

/// Keep-alive clients looping until told to stop: (requests, failures, one failure).
fn loop_clients(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, String)>> {
    (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let clients = client();
                let (mut sent, mut failed, mut first) = (0, 0, String::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += 1;
                    match get(&clients, &format!("http://{addr}/")).await {
                        Ok((code, body)) if code == 200 && body == "a" => {}
                        other => {
                            failed += 1;
                            if first.is_empty() {
                                first = format!("{other:?}");
                            }
                        }
                    }
                }
                (sent, failed, first)
            })
        })
        .collect()
}

fn kill(pid: u64, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_under_load_with_no_failed_request_and_the_drain_kept() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("splitgate");
    std::fs::copy(BINARY, &binary).unwrap();
    let state = dir.path().join("splitgate.state");
    let mut old = ProxyProcess::start_binary(&binary, |listen, admin| {
        format!(
            "workers = 2\n[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[state]\npath = \"{}\"\n\
             [timeouts]\ndrain = \"10s\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n\
             [[site]]\nname = \"b\"\nweight = 1\nbackends = [\"{}\"]\n",
            state.display(),
            a.addr,
            b.addr
        )
    });
    let (code, _) = common::admin_call(
        http::Method::PUT,
        admin_url(&old, "/sites/b/weight"),
        r#"{"weight": 0}"#,
    )
    .await;
    assert_eq!(code, 200);
    let old_pid = u64::from(old.pid());
    assert_eq!(ready_pid(old.admin).await, Some(old_pid));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = loop_clients(old.addr, stop.clone());
    // Under load: the clients' requests are reaching a.
    common::served_more(&[&a], 50).await;
    let signalled = Instant::now();
    old.signal("USR2");
    let mut new_pid = None;
    let mut old_peak = 0;
    while signalled.elapsed() < Duration::from_secs(30) {
        old_peak = old_peak.max(old.peak_rss_kib());
        if let Some(pid) = ready_pid(old.admin).await.filter(|&p| p != old_pid) {
            new_pid = Some(pid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_pid = new_pid.unwrap_or_else(|| panic!("no new process: {}", old.stderr()));
    println!("SIGUSR2 -> the new process answering /ready: {:?}", signalled.elapsed());
    old_peak = old_peak.max(old.peak_rss_kib());
    let exited = old.wait_exit(Duration::from_secs(15));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old process drained and exited 0: {exited:?}"
    );
    // The clients go on against the new process alone: 100 requests more.
    common::served_more(&[&a], 100).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut failed, mut first) = (0, 0, String::new());
    for task in clients {
        let (s, f, one) = task.await.unwrap();
        sent += s;
        failed += f;
        if first.is_empty() {
            first = one;
        }
    }
    let b_hits = b.hits();
    // The new process must go when the test ends, whatever happened.
    let new_status = get(&client(), &format!("http://{}/status", old.admin)).await;
    let new_peak = std::fs::read_to_string(format!("/proc/{new_pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    kill(new_pid, "-TERM");
    println!("{sent} requests over the upgrade, {failed} failed; peak RSS old {old_peak} KiB + new {new_peak} KiB");
    assert!(sent > 100, "{sent}");
    assert_eq!(failed, 0, "{first}");
    assert_eq!(b_hits, 0, "the drain held across the upgrade");
    let status: serde_json::Value = serde_json::from_str(&new_status.unwrap().1).unwrap();
    assert_eq!(site_in(&status, "b")["weight_override"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_new_binary_leaves_the_old_process_serving() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("splitgate");
    std::fs::copy(BINARY, &binary).unwrap();
    let mut old = ProxyProcess::start_binary(&binary, |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n",
            a.addr
        )
    });
    // A new binary that cannot start, installed over the old one (as a package would).
    let broken = dir.path().join("splitgate.new");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken build' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &binary).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = loop_clients(old.addr, stop.clone());
    old.signal("USR2");
    let started = Instant::now();
    while !old.stderr().contains("upgrade failed") && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The clients go on after the failed upgrade: 100 requests more, served by the old process.
    common::served_more(&[&a], 100).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failed = 0;
    for task in clients {
        failed += task.await.unwrap().1;
    }
    assert!(
        old.stderr().contains("exited"),
        "the reason is logged: {}",
        old.stderr()
    );
    assert!(old.is_running(), "the old process keeps serving");
    assert_eq!(failed, 0);
    assert_eq!(ready_pid(old.admin).await, Some(u64::from(old.pid())));
}

#[tokio::test]
async fn sockets_from_systemd_socket_activation_are_served() {
    const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
    if !std::path::Path::new(ACTIVATE).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI has systemd's tools");
        return;
    }
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let listen = common::process::free_port();
    let config = dir.path().join("s.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:{listen}\"\n[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n",
            a.addr
        ),
    )
    .unwrap();
    let mut activator = std::process::Command::new(ACTIVATE)
        .args(["-l", &format!("127.0.0.1:{listen}"), BINARY, "run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // systemd-socket-activate listens at once and starts splitgate on the first connection.
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(got) = get(&client(), &format!("http://127.0.0.1:{listen}/")).await {
            answer = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = activator.kill();
    let _ = activator.wait();
    let (code, body) = answer.expect("served on the inherited socket");
    assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_why_not_and_turns_503_on_sigterm_while_stop_delay_keeps_serving() {
    let a = Backend::start("a").await;
    let mut process = ProxyProcess::start(|listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[timeouts]\nstop_delay = \"1500ms\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n",
            a.addr
        )
    });
    let ready = || async {
        let (code, body) = get(&client(), &admin_url(&process, "/ready")).await.unwrap();
        (code.as_u16(), serde_json::from_str::<serde_json::Value>(&body).unwrap())
    };
    let (code, answer) = ready().await;
    assert_eq!((code, answer["ready"].clone()), (200, true.into()), "{answer}");
    // The only site drained: through the guard rails, on purpose.
    common::admin_call(
        http::Method::PUT,
        admin_url(&process, "/sites/a/weight?force=true"),
        r#"{"weight": 0}"#,
    )
    .await;
    let (code, answer) = ready().await;
    assert_eq!(
        (code, answer["reason"].clone()),
        (503, "no site can serve".into()),
        "{answer}"
    );
    common::admin_call(http::Method::DELETE, admin_url(&process, "/sites/a/weight"), "").await;
    assert_eq!(ready().await.0, 200);

    process.signal("TERM");
    let mut seen = (0, serde_json::Value::Null);
    for _ in 0..100 {
        seen = ready().await;
        if seen.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        (seen.0, seen.1["reason"].clone()),
        (503, "draining".into()),
        "{:?}",
        seen
    );
    // Still accepting: a new connection is served during stop_delay.
    let (code, body) = get(&client(), &format!("http://{}/", process.addr)).await.unwrap();
    assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
    assert!(process.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_process_draining_after_an_upgrade_never_writes_over_the_new_ones_decisions() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("splitgate");
    std::fs::copy(BINARY, &binary).unwrap();
    let state = dir.path().join("splitgate.state");
    let mut old = ProxyProcess::start_binary(&binary, |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[state]\npath = \"{}\"\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n\
             [[site]]\nname = \"b\"\nweight = 1\nbackends = [\"{}\"]\n",
            state.display(),
            a.addr,
            b.addr
        )
    });
    let (code, _) = common::admin_call(
        http::Method::PUT,
        admin_url(&old, "/sites/b/weight"),
        r#"{"weight": 0}"#,
    )
    .await;
    assert_eq!(code, 200);
    // A slow request keeps the old process draining after the upgrade.
    let slow = tokio::spawn(get_owned(format!("http://{}/sleep/3000", old.addr)));
    // In flight on the old process: a has it (b weighs 0; counted as it arrives).
    assert!(common::eventually(Duration::from_secs(5), || a.hits() >= 1)
        .await
        .is_some());
    let old_pid = u64::from(old.pid());
    old.signal("USR2");
    let mut new_pid = None;
    for _ in 0..3000 {
        new_pid = ready_pid(old.admin).await.filter(|&p| p != old_pid);
        if new_pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let new_pid = new_pid.expect("the new process serves");
    // Decided on the new process while the old one still drains.
    let (code, _) = common::admin_call(http::Method::DELETE, admin_url(&old, "/sites/b/weight"), "").await;
    assert_eq!(code, 200);
    let answered = slow.await.unwrap();
    let exited = old.wait_exit(Duration::from_secs(15));
    let kept = std::fs::read_to_string(&state).unwrap_or_default();
    kill(new_pid, "-TERM");
    assert_eq!(
        answered.map(|(c, _)| c.as_u16()).ok(),
        Some(200),
        "the slow request finished on the old process"
    );
    assert!(exited.is_some_and(|s| s.success()));
    assert!(
        !kept.contains("\"b\": 0"),
        "the old process wrote its drain back over the new decision: {kept}"
    );
}

async fn get_owned(url: String) -> Result<(http::StatusCode, String), String> {
    get(&client(), &url).await
}
