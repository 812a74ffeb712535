//! A fleet of proxies sharing decisions through a real etcd (Debian's `etcd-server`,
//! started here on ephemeral loopback ports with a temporary data directory): a drain
//! on one member reaches every member, so does a value written with etcdctl; with etcd
//! down members keep serving, refuse writes, and a member restarted meanwhile comes up
//! with the last decisions; a burst of multi-site changes is never applied half.

mod common;
/// The fleet's own etcd client (it depends on nothing else in the crate): a writer
/// that talks to etcd as a member does.
#[path = "../src/fleet/etcd/mod.rs"]
#[allow(dead_code, unused_imports)]
mod etcd_api;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use common::etcd::{connected, fleet_section, members, wait, weight_override, Etcd};
use common::process::ProxyProcess;
use common::{client, config, get, site, Backend, TestProxy};

async fn put(url: String, body: &'static str) -> (u16, Value) {
    admin(url, Method::PUT, body).await
}

async fn admin(url: String, method: Method, body: &'static str) -> (u16, Value) {
    common::admin_call(method, url, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_on_one_member_and_an_etcdctl_write_reach_every_member_within_a_second() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/t1", &a, &b).await;
    let started = Instant::now();
    let (status, answer) = put(fleet[0].admin_url("/sites/b/weight"), r#"{"weight": 0}"#).await;
    assert_eq!(status, 200, "{answer}");
    let all = wait(Duration::from_secs(5), || {
        fleet.iter().all(|m| weight_override(m, "b") == Some(0))
    })
    .await;
    println!(
        "drain applied by all 3 members {:?} after the PUT began",
        all.map(|_| started.elapsed())
    );
    assert!(
        all.is_some() && started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // A multi-site change naming an unknown site is refused whole, as without a fleet.
    assert_eq!(
        put(fleet[2].admin_url("/weights"), r#"{"a": 1, "nowhere": 2}"#).await.0,
        400
    );
    assert_eq!(
        put(fleet[2].admin_url("/sites/nowhere/weight"), r#"{"weight": 1}"#)
            .await
            .0,
        404
    );
    // Traffic follows on every member.
    for member in &fleet {
        let (code, body) = get(&client(), &member.url("/")).await.unwrap();
        assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
    }
    let started = Instant::now();
    assert!(etcd.ctl(&["put", "/sg/t1/sites/a/weight", "30"]));
    let all = wait(Duration::from_secs(5), || {
        fleet.iter().all(|m| weight_override(m, "a") == Some(30))
    })
    .await;
    println!(
        "etcdctl write applied by all 3 members {:?} after etcdctl began",
        all.map(|_| started.elapsed())
    );
    assert!(
        all.is_some() && started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // An invalid value is ignored and counted; the decision in force stays.
    assert!(etcd.ctl(&["put", "/sg/t1/sites/a/weight", "lots"]));
    // Every member has seen the value (it lists it as invalid), and kept the last valid one.
    let seen = wait(Duration::from_secs(5), || {
        fleet.iter().all(|m| {
            m.server
                .fleet_status()
                .is_some_and(|s| s["invalid_values"]["/sg/t1/sites/a/weight"] == "lots")
        })
    })
    .await;
    assert!(seen.is_some(), "every member saw the invalid value");
    assert!(fleet.iter().all(|m| weight_override(m, "a") == Some(30)));
    // A drill started on one member runs on every member; ended on another, it ends everywhere.
    let drilled = |m: &TestProxy| m.server.sites().iter().any(|s| s.name == "a" && s.drilled);
    let started = Instant::now();
    // b is drained: a drill of a leaves no site serving, through the guard rails on purpose.
    let (status, answer) = admin(
        fleet[1].admin_url("/sites/a/drill?force=true"),
        Method::POST,
        r#"{"duration": "30s"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["drill"].as_u64().is_some());
    let all = wait(Duration::from_secs(5), || fleet.iter().all(drilled)).await;
    println!(
        "drill running on all 3 members {:?} after the POST began",
        all.map(|_| started.elapsed())
    );
    assert!(all.is_some() && started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        admin(
            fleet[0].admin_url("/sites/a/drill"),
            Method::POST,
            r#"{"duration": "1s"}"#
        )
        .await
        .0,
        409
    );
    assert_eq!(
        admin(fleet[2].admin_url("/sites/a/drill"), Method::DELETE, "").await.0,
        200
    );
    assert!(
        wait(Duration::from_secs(2), || fleet.iter().all(|m| !drilled(m)))
            .await
            .is_some(),
        "ended everywhere"
    );
    let status = fleet[1].server.fleet_status().unwrap();
    let names: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge-1", "edge-2", "edge-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_members_serve_refuse_writes_restart_with_the_last_decisions_and_catch_up() {
    let Some(mut etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/t2", &a, &b).await;
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("edge-9.json");
    let sites = [site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])].join("\n");
    let section = fleet_section(&etcd, "edge-9", "/sg/t2");
    let text = |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n{section}state = \"{}\"\n{sites}",
            state_file.display()
        )
    };
    let process = ProxyProcess::start(text);
    assert_eq!(
        put(fleet[0].admin_url("/weights"), r#"{"a": 100, "b": 0}"#).await.0,
        200
    );
    // The process has the decisions in its state file (what it restarts with below).
    let kept = || std::fs::read_to_string(&state_file).unwrap_or_default();
    let seen = wait(Duration::from_secs(5), || {
        let kept = kept();
        kept.contains("\"a\": 100") && kept.contains("\"b\": 0")
    })
    .await;
    assert!(seen.is_some(), "{}", kept());

    etcd.kill();
    assert!(
        wait(Duration::from_secs(15), || fleet.iter().all(|m| !connected(m)))
            .await
            .is_some(),
        "members notice"
    );
    for member in &fleet {
        let (code, body) = get(&client(), &member.url("/")).await.unwrap();
        assert_eq!(
            (code.as_u16(), body.as_str()),
            (200, "a"),
            "serving with the last decisions"
        );
        let (status, answer) = put(member.admin_url("/sites/b/weight"), r#"{"weight": 50}"#).await;
        assert_eq!(status, 503, "{answer}");
    }
    drop(process);
    let restarted = ProxyProcess::start(text);
    let (code, body) = get(&client(), &format!("http://{}/", restarted.addr)).await.unwrap();
    assert_eq!(
        (code.as_u16(), body.as_str()),
        (200, "a"),
        "restarted during the outage with the decisions"
    );

    let back = Instant::now();
    etcd.run();
    let caught_up = wait(Duration::from_secs(10), || fleet.iter().all(connected)).await;
    println!("members connected again {:?} after etcd was restarted", back.elapsed());
    assert!(
        caught_up.is_some() && back.elapsed() < Duration::from_secs(6),
        "{:?}",
        back.elapsed()
    );
    assert!(etcd.ctl(&["put", "/sg/t2/sites/b/weight", "7"]));
    assert!(wait(Duration::from_secs(3), || fleet
        .iter()
        .all(|m| weight_override(m, "b") == Some(7)))
    .await
    .is_some());
    let (_, page) = get(&client(), &format!("http://{}/status", restarted.admin))
        .await
        .unwrap();
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["fleet"]["connected"], true, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_two_site_changes_is_never_applied_half() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = Arc::new(members(&etcd, "/sg/t3", &a, &b).await);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (fleet, stop) = (fleet.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for member in fleet.iter() {
                    let sites = member.server.sites();
                    let of = |name| sites.iter().find(|s| s.name == name).and_then(|s| s.weight_override);
                    if let (Some(x), Some(y)) = (of("a"), of("b")) {
                        assert_eq!(x + y, 1000, "half of a change applied");
                        samples += 1;
                    }
                }
                tokio::task::yield_now().await;
            }
            samples
        })
    };
    let mut writer = etcd_api::Client::connect([etcd.endpoint()], None).await.unwrap();
    let started = Instant::now();
    for i in 1..=1000u32 {
        let txn = etcd_api::Txn::new().and_then(vec![
            etcd_api::TxnOp::put("/sg/t3/sites/a/weight", i.to_string(), None),
            etcd_api::TxnOp::put("/sg/t3/sites/b/weight", (1000 - i).to_string(), None),
        ]);
        writer.txn(txn).await.unwrap();
    }
    let wrote = started.elapsed();
    let done = wait(Duration::from_secs(10), || {
        fleet
            .iter()
            .all(|m| weight_override(m, "a") == Some(1000) && weight_override(m, "b") == Some(0))
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.await.expect("no half-applied change was seen");
    println!(
        "1000 transactions written in {wrote:?}; all members final {:?} later; {samples} samples",
        done
    );
    assert!(done.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reaches_etcd_over_tls_with_a_client_certificate() {
    let pki = common::tls::Pki::new("etcd");
    let leaf = pki.leaf("etcd", &["localhost", "127.0.0.1"]);
    let Some(etcd) = Etcd::start_with(Some((pki.ca_path.clone(), leaf.cert.clone(), leaf.key.clone()))) else {
        return;
    };
    let a = Backend::start("a").await;
    let fleet = format!(
        "{}tls = {{ ca = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}\n",
        fleet_section(&etcd, "edge-tls", "/sg/tls"),
        pki.ca_path.display(),
        leaf.cert.display(),
        leaf.key.display()
    );
    let member = TestProxy::start(&config(&fleet, &[site("a", 50, 0, &[a.addr])])).await;
    assert!(
        wait(Duration::from_secs(10), || connected(&member)).await.is_some(),
        "{:?}",
        member.server.fleet_status()
    );
    assert_eq!(
        put(member.admin_url("/sites/a/weight"), r#"{"weight": 5}"#).await.0,
        200
    );
    assert_eq!(weight_override(&member, "a"), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_logs_in_to_etcd_with_a_username_and_password() {
    let Some(etcd) = Etcd::start() else { return };
    for step in [
        &["user", "add", "root:sesame"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        // `role add root` fails where etcd made the role already.
        let done = etcd.ctl(step);
        assert!(done || step[..2] == ["role", "add"], "etcdctl {step:?}");
    }
    let a = Backend::start("a").await;
    let with = |name: &str, password: &str| {
        let section = fleet_section(&etcd, name, "/sg/auth");
        config(
            &format!("{section}username = \"root\"\npassword = \"{password}\"\n"),
            &[site("a", 50, 0, &[a.addr])],
        )
    };
    let member = TestProxy::start(&with("edge-auth", "sesame")).await;
    assert!(
        wait(Duration::from_secs(10), || connected(&member)).await.is_some(),
        "{:?}",
        member.server.fleet_status()
    );
    // Every call carries the token: the write, the watch that applies it, the lease.
    assert_eq!(
        put(member.admin_url("/sites/a/weight"), r#"{"weight": 7}"#).await.0,
        200
    );
    assert_eq!(weight_override(&member, "a"), Some(7));
    // A wrong password is refused, and /status says so.
    let refused = TestProxy::start(&with("edge-wrong", "open")).await;
    let said = wait(Duration::from_secs(10), || {
        refused.server.fleet_status().is_some_and(|s| {
            s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("authentication failed"))
        })
    })
    .await;
    assert!(said.is_some(), "{:?}", refused.server.fleet_status());
    assert!(!connected(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_members_do_not_keep_writing_to_etcd() {
    // Time is the measure here: a write that does not happen sends no signal. The window
    // holds two keep-alive ticks (every 3 s) of every member, so a member that rewrote
    // its key (or any other) on each tick, or after each other member's write, shows.
    const IDLE_WINDOW: Duration = Duration::from_secs(7);
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let fleet = members(&etcd, "/sg/t5", &a, &b).await;
    let names = ["edge-1", "edge-2", "edge-3"];
    // Settled: every member has announced itself, the revision of the decisions it
    // applied in its member key (a member re-announces on its next keep-alive tick after
    // it applies a decision, the fleet's epoch among them), and published its view; each
    // sees all three members and all three views, nothing down, and the same leader, and
    // has taken etcd's latest revision from its watch.
    let settled = || {
        let Some((revision, kvs)) = etcd.read_prefix("/sg/t5/") else {
            return false;
        };
        let decided = kvs
            .iter()
            .filter(|(key, ..)| key == "/sg/t5/epoch" || key.starts_with("/sg/t5/sites/"))
            .map(|(_, written, _)| *written)
            .max()
            .unwrap_or(0);
        let announced: Vec<i64> = kvs
            .iter()
            .filter(|(key, ..)| key.starts_with("/sg/t5/members/"))
            .filter_map(|(_, _, value)| serde_json::from_str::<Value>(value).ok()?["revision"].as_i64())
            .collect();
        let statuses: Vec<Value> = fleet.iter().map(|m| m.server.fleet_status().unwrap()).collect();
        let leader = &statuses[0]["leader"];
        announced.len() == names.len()
            && announced.iter().all(|&r| r >= decided)
            && !leader.is_null()
            && statuses.iter().all(|s| {
                s["connected"] == true
                    && s["members"] == serde_json::json!(names)
                    && s["leader"] == *leader
                    && names.iter().all(|n| s["views"][n]["down"] == serde_json::json!([]))
                    && s["revision"].as_i64() == Some(revision)
            })
    };
    let announced = wait(Duration::from_secs(15), settled).await;
    assert!(
        announced.is_some(),
        "the fleet never settled: {:?} {:?}",
        etcd.written_since("/sg/t5/", 0),
        fleet.iter().map(|m| m.server.fleet_status()).collect::<Vec<_>>()
    );
    let before = etcd.revision().expect("etcd answers");
    // Sampled through the window: a member that dropped out would write nothing and
    // prove nothing, so every member must stay connected all along.
    let started = Instant::now();
    while started.elapsed() < IDLE_WINDOW {
        assert!(fleet.iter().all(connected), "a member dropped out of the fleet");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = etcd.revision().expect("etcd answers");
    println!("etcd revision over {IDLE_WINDOW:?} idle: {before} -> {after}");
    assert!(
        after - before <= 1,
        "idle members wrote {} revisions: {:?}",
        after - before,
        etcd.written_since("/sg/t5/", before)
    );
    // Still alive at the end: all keep their member keys (the leases were kept alive)
    // and have seen every revision there is.
    for name in names {
        assert!(
            etcd.get(&format!("/sg/t5/members/{name}")).is_some(),
            "{name}'s key is gone"
        );
    }
    assert!(
        wait(Duration::from_secs(5), settled).await.is_some(),
        "every member is still connected and current"
    );
}
