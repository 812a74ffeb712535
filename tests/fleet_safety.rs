//! A fleet's decisions hold against a misbehaving etcd, with a real etcd and real
//! members: an invalid value never undoes a drain on any path (watch, full re-read, a
//! new member); an etcd that came back empty is not applied until an operator
//! confirms; a write etcd does not answer is "outcome unknown" and members converge on
//! what etcd holds; a member paused past its lease announces itself again; a second
//! member with the same name is reported.

mod common;

use std::time::Duration;

use http::Method;
use serde_json::Value;

use common::etcd::{connected, fleet_section, members, wait, weight_override, Etcd};
use common::process::ProxyProcess;
use common::{config, site, Backend, TestProxy};

async fn call(url: String, method: Method, body: &'static str) -> (u16, Value) {
    common::admin_call(method, url, body).await
}

fn fleet_field(member: &TestProxy, field: &str) -> Value {
    member.server.fleet_status().map_or(Value::Null, |s| s[field].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_never_undoes_a_drain_on_any_path() {
    let Some(mut etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/s1", &a, &b).await;
    let (status, answer) = call(fleet[0].admin_url("/sites/b/weight"), Method::PUT, r#"{"weight": 0}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert!(wait(Duration::from_secs(5), || fleet
        .iter()
        .all(|m| weight_override(m, "b") == Some(0)))
    .await
    .is_some());

    // A value no member can read, long enough that logging it whole would hurt.
    let long = format!("zero{}", "x".repeat(100_000));
    assert!(etcd.ctl(&["put", "/sg/s1/sites/b/weight", &long]));
    let flagged = |m: &TestProxy| fleet_field(m, "invalid_values")["/sg/s1/sites/b/weight"].is_string();
    assert!(wait(Duration::from_secs(5), || fleet.iter().all(flagged))
        .await
        .is_some());
    for member in &fleet {
        assert_eq!(weight_override(member, "b"), Some(0), "the watch keeps the drain");
        let shown = fleet_field(member, "invalid_values")["/sg/s1/sites/b/weight"].to_string();
        assert!(shown.len() < 200 && shown.contains("100004 bytes"), "{shown}");
    }

    // A full re-read (etcd restarted, every member reads the prefix again).
    etcd.kill();
    assert!(wait(Duration::from_secs(15), || fleet.iter().all(|m| !connected(m)))
        .await
        .is_some());
    etcd.run();
    assert!(wait(Duration::from_secs(15), || fleet.iter().all(connected))
        .await
        .is_some());
    for member in &fleet {
        assert_eq!(weight_override(member, "b"), Some(0), "the full read keeps the drain");
        assert!(flagged(member), "still listed after the re-read");
    }

    // A member that never saw the valid value falls back on etcd's own history.
    let newcomer = TestProxy::start(&config(
        &fleet_section(&etcd, "edge-new", "/sg/s1"),
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    assert!(wait(Duration::from_secs(10), || connected(&newcomer)).await.is_some());
    assert_eq!(
        weight_override(&newcomer, "b"),
        Some(0),
        "a new member keeps the drain too"
    );
    assert!(flagged(&newcomer));

    // A valid value clears the alarm; a drill "for ever" is cut to 24 hours.
    assert!(etcd.ctl(&["put", "/sg/s1/sites/b/weight", "5"]));
    assert!(etcd.ctl(&["put", "/sg/s1/sites/a/drill", r#"{"until": 18446744073709551615}"#]));
    assert!(wait(Duration::from_secs(5), || {
        weight_override(&newcomer, "b") == Some(5) && !newcomer.server.drills().is_empty()
    })
    .await
    .is_some());
    assert!(!flagged(&newcomer));
    let drill = &newcomer.server.drills()[0];
    assert!(drill.duration <= Duration::from_secs(24 * 3600), "{:?}", drill.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_came_back_empty_is_not_applied_until_an_operator_confirms() {
    let Some(mut etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("edge-9.json");
    let fleet = members(&etcd, "/sg/s2", &a, &b).await;
    let sites = [site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])].join("\n");
    let section = fleet_section(&etcd, "edge-9", "/sg/s2");
    let text = |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n{section}state = \"{}\"\n{sites}",
            state_file.display()
        )
    };
    let process = ProxyProcess::start(text);
    let process_status = || async {
        let (_, body) = call(format!("http://{}/status", process.admin), Method::GET, "").await;
        body
    };
    let (status, answer) = call(fleet[0].admin_url("/sites/b/weight"), Method::PUT, r#"{"weight": 0}"#).await;
    assert_eq!(status, 200, "{answer}");
    let drained = |m: &TestProxy| weight_override(m, "b") == Some(0);
    assert!(wait(Duration::from_secs(5), || fleet.iter().all(drained))
        .await
        .is_some());
    let kept = || std::fs::read_to_string(&state_file).unwrap_or_default();
    assert!(wait(Duration::from_secs(5), || kept().contains("\"b\": 0"))
        .await
        .is_some());

    etcd.kill_and_empty();
    etcd.run();
    let refusing = |m: &TestProxy| fleet_field(m, "diverged").is_string() && connected(m);
    assert!(
        wait(Duration::from_secs(15), || fleet.iter().all(refusing))
            .await
            .is_some(),
        "{:?}",
        fleet.iter().map(|m| m.server.fleet_status()).collect::<Vec<_>>()
    );
    assert!(fleet.iter().all(drained), "the drain stays in force");
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = process_status().await;
        if seen["fleet"]["diverged"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen["fleet"]["diverged"].is_string(), "{seen}");
    assert!(
        kept().contains("\"b\": 0"),
        "the state file is not overwritten: {}",
        kept()
    );
    let (status, answer) = call(fleet[1].admin_url("/sites/a/weight"), Method::PUT, r#"{"weight": 9}"#).await;
    assert_eq!(status, 409, "no change while the history is in question: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("/fleet/confirm"), "{answer}");

    // An operator writes the kept decisions back: every member applies etcd again.
    let (status, answer) = call(
        fleet[0].admin_url("/fleet/confirm"),
        Method::POST,
        r#"{"use": "maybe"}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = call(fleet[0].admin_url("/fleet/confirm"), Method::POST, r#"{"use": "kept"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(etcd.get("/sg/s2/sites/b/weight").as_deref(), Some("0"));
    assert!(wait(Duration::from_secs(10), || fleet
        .iter()
        .all(|m| !refusing(m) && connected(m)))
    .await
    .is_some());
    assert!(fleet.iter().all(drained));
    let (status, answer) = call(fleet[1].admin_url("/fleet/confirm"), Method::POST, r#"{"use": "etcd"}"#).await;
    assert_eq!(status, 409, "nothing to confirm now: {answer}");

    // Emptied again, and this time etcd's empty view is taken: the drain ends everywhere.
    etcd.kill_and_empty();
    etcd.run();
    assert!(wait(Duration::from_secs(15), || fleet.iter().all(refusing))
        .await
        .is_some());
    let (status, answer) = call(fleet[2].admin_url("/fleet/confirm"), Method::POST, r#"{"use": "etcd"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert!(wait(Duration::from_secs(10), || fleet
        .iter()
        .all(|m| !refusing(m) && weight_override(m, "b").is_none()))
    .await
    .is_some());
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = process_status().await;
        if seen["fleet"]["diverged"].is_null() && seen["fleet"]["connected"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen["fleet"]["diverged"].is_null(), "{seen}");
    assert!(wait(Duration::from_secs(5), || !kept().contains("\"b\": 0"))
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_etcd_does_not_answer_is_an_unknown_outcome_and_members_converge() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/s3", &a, &b).await;
    etcd.pause(true);
    let (status, answer) = call(fleet[0].admin_url("/sites/b/weight"), Method::PUT, r#"{"weight": 3}"#).await;
    etcd.pause(false);
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("outcome is unknown"),
        "{answer}"
    );
    // Whatever etcd did with it, every member ends up with what etcd holds.
    let converged = || {
        let held = etcd.get("/sg/s3/sites/b/weight").and_then(|v| v.parse::<u32>().ok());
        fleet.iter().all(|m| connected(m) && weight_override(m, "b") == held)
    };
    assert!(wait(Duration::from_secs(15), converged).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_lease_announces_itself_again() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/s4", &a, &b).await;
    let sites = [site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])].join("\n");
    let section = fleet_section(&etcd, "edge-9", "/sg/s4");
    let process = ProxyProcess::start(|listen, admin| {
        format!("[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n{section}{sites}")
    });
    let listed = |m: &TestProxy| {
        fleet_field(m, "members")
            .as_array()
            .is_some_and(|names| names.iter().any(|n| n == "edge-9"))
    };
    assert!(wait(Duration::from_secs(10), || listed(&fleet[0])).await.is_some());
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill")
            .args([s, &process.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok);
    };
    signal("-STOP");
    let gone = wait(Duration::from_secs(20), || !listed(&fleet[0])).await;
    signal("-CONT");
    assert!(gone.is_some(), "the lease expired while the member was paused");
    assert!(
        wait(Duration::from_secs(10), || listed(&fleet[0])).await.is_some(),
        "the member announces itself again without waiting for a change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_with_the_same_name_is_reported() {
    let Some(etcd) = Etcd::start() else { return };
    let backend = Backend::start("a").await;
    let text = config(
        &fleet_section(&etcd, "twin", "/sg/s5"),
        &[site("a", 50, 0, &[backend.addr])],
    );
    let first = TestProxy::start(&text).await;
    assert!(wait(Duration::from_secs(10), || connected(&first)).await.is_some());
    let second = TestProxy::start(&text).await;
    assert!(wait(Duration::from_secs(10), || connected(&second)).await.is_some());
    let reported = wait(Duration::from_secs(10), || {
        [&first, &second].iter().any(|m| {
            fleet_field(m, "duplicate_name")
                .as_str()
                .is_some_and(|w| w.contains("twin"))
        })
    })
    .await;
    assert!(reported.is_some());
}
