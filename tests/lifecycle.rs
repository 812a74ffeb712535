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
