//! `[fleet] failover = "quorum"` with a real etcd and three members: each publishes its
//! view of the sites' health under its lease; a member cut off from the active site on
//! its own sends nothing to the standby (no split brain) while the others serve from
//! the active site; the active site gone for all, the whole fleet moves to the standby
//! together, and back when it returns.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use common::etcd::{connected, fleet_section, wait, Etcd};
use common::{admin_call, client, config, get, refused_addr, site, Backend, TestProxy};

/// Probes every 100 ms, one failure or success flips a backend; no slow start.
const HEALTH: &str = "[health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1\nslow_start = \"0s\"\n";

fn member_config(etcd: &Etcd, prefix: &str, name: &str, active: SocketAddr, standby: SocketAddr) -> String {
    let fleet = fleet_section(etcd, name, prefix) + "failover = \"quorum\"\n";
    config(
        &(fleet + HEALTH),
        &[site("a", 100, 0, &[active]), site("dr", 100, 1, &[standby])],
    )
}

async fn status(member: &TestProxy) -> Value {
    admin_call(Method::GET, member.admin_url("/status"), "").await.1
}

/// Polls the members' `/status` until `check` holds for every one.
async fn all_until(members: &[TestProxy], limit: Duration, check: impl Fn(&Value) -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut all = true;
        for member in members {
            all &= check(&status(member).await);
        }
        if all {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn kinds_of_events(member: &TestProxy) -> Vec<String> {
    let (_, page) = admin_call(Method::GET, member.admin_url("/events"), "").await;
    page["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn start_fleet(etcd: &Etcd, prefix: &str, actives: [SocketAddr; 3], standby: SocketAddr) -> Vec<TestProxy> {
    let mut members = Vec::new();
    for (n, active) in actives.into_iter().enumerate() {
        let name = format!("edge-{}", n + 1);
        members.push(TestProxy::start(&member_config(etcd, prefix, &name, active, standby)).await);
    }
    for member in &members {
        wait(Duration::from_secs(10), || connected(member))
            .await
            .expect("member connects to etcd");
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_the_active_site_keeps_trying_it_and_sends_nothing_to_the_standby() {
    let Some(etcd) = Etcd::start() else { return };
    let (active, standby) = (Backend::start("a").await, Backend::start("dr").await);
    // edge-3's own config points the active site at a port that refuses: from where
    // it stands, the active site is down.
    let fleet = start_fleet(
        &etcd,
        "/sg/q1",
        [active.addr, active.addr, refused_addr()],
        standby.addr,
    )
    .await;
    let seen = all_until(&fleet, Duration::from_secs(10), |s| {
        let views = &s["fleet"]["views"];
        views["edge-3"]["down"] == serde_json::json!(["a"])
            && views["edge-1"]["down"] == serde_json::json!([])
            && views["edge-2"]["down"] == serde_json::json!([])
    })
    .await;
    assert!(seen.is_some(), "every member sees every member's view");
    // The view is in etcd for anyone to read.
    let raw = etcd.get("/sg/q1/health/edge-3").expect("edge-3's view in etcd");
    assert!(raw.contains(r#""down":["a"]"#), "{raw}");
    for member in &fleet {
        let s = status(member).await;
        assert_eq!(s["fleet"]["failover"], "quorum");
        assert_eq!(
            s["fleet"]["fleet_down"],
            serde_json::json!([]),
            "one of three is no majority"
        );
        assert_eq!(s["active_priority"], 0, "{}", s["mode"]);
    }
    for member in &fleet[..2] {
        for _ in 0..10 {
            let (code, body) = get(&client(), &member.url("/")).await.unwrap();
            assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
        }
    }
    for _ in 0..10 {
        let (code, _) = get(&client(), &fleet[2].url("/")).await.unwrap();
        assert_eq!(code.as_u16(), 502, "the cut-off member's clients get its errors");
    }
    assert_eq!(standby.hits(), 0, "nothing went to the standby");
    let mut recorded = false;
    for _ in 0..500 {
        if kinds_of_events(&fleet[2]).await.iter().any(|k| k == "site_down") {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recorded, "the cut-off member records the site down in its own history");
    for member in &fleet {
        let kinds = kinds_of_events(member).await;
        let page = admin_call(Method::GET, member.admin_url("/events"), "").await.1;
        assert!(
            !kinds.iter().any(|k| k == "failover"),
            "no failover was announced: {page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_site_lost_for_all_moves_the_whole_fleet_to_the_standby_and_back() {
    let Some(etcd) = Etcd::start() else { return };
    let (active, standby) = (Backend::start("a").await, Backend::start("dr").await);
    let addr = active.addr;
    let fleet = start_fleet(&etcd, "/sg/q2", [addr; 3], standby.addr).await;
    let on_tier = |tier: u64| move |s: &Value| s["active_priority"] == tier && s["mode"] != "panic";
    assert!(all_until(&fleet, Duration::from_secs(10), on_tier(0)).await.is_some());
    let killed = Instant::now();
    active.kill();
    let moved = all_until(&fleet, Duration::from_secs(10), on_tier(1)).await;
    println!(
        "kill -> all three members on the standby: {:?}",
        moved.map(|_| killed.elapsed())
    );
    assert!(
        moved.is_some_and(|_| killed.elapsed() < Duration::from_secs(3)),
        "{:?}",
        killed.elapsed()
    );
    for member in &fleet {
        assert_eq!(status(member).await["fleet"]["fleet_down"], serde_json::json!(["a"]));
        let (code, body) = get(&client(), &member.url("/")).await.unwrap();
        assert_eq!((code.as_u16(), body.as_str()), (200, "dr"));
    }
    let _back = Backend::start_on("a", addr).await;
    let returned = all_until(&fleet, Duration::from_secs(10), on_tier(0)).await;
    assert!(
        returned.is_some(),
        "the fleet fails back when a majority see the site serving"
    );
    for member in &fleet {
        let (code, body) = get(&client(), &member.url("/")).await.unwrap();
        assert_eq!((code.as_u16(), body.as_str()), (200, "a"));
    }
    // Each member records the fleet's move in its own history.
    let mut recorded = false;
    for _ in 0..500 {
        let mut all = true;
        for member in &fleet {
            let kinds = kinds_of_events(member).await;
            all &= kinds.iter().any(|k| k == "failover") && kinds.iter().any(|k| k == "failback");
        }
        if all {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recorded, "every member has its failover and failback events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_unreachable_the_last_fleet_decision_holds() {
    let Some(mut etcd) = Etcd::start() else { return };
    let (active, standby) = (Backend::start("a").await, Backend::start("dr").await);
    let fleet = start_fleet(&etcd, "/sg/q3", [active.addr; 3], standby.addr).await;
    let on_active =
        |s: &Value| s["active_priority"] == 0 && s["fleet"]["views"].as_object().is_some_and(|v| v.len() == 3);
    assert!(all_until(&fleet, Duration::from_secs(10), on_active).await.is_some());
    etcd.kill();
    assert!(wait(Duration::from_secs(20), || fleet.iter().all(|m| !connected(m)))
        .await
        .is_some());
    // Cut off from etcd, a member that then loses the active site does not fail over
    // alone: the fleet's last word was "the active site serves".
    active.kill();
    let down_here = all_until(&fleet, Duration::from_secs(10), |s| s["sites"][0]["healthy"] == false).await;
    assert!(down_here.is_some());
    for member in &fleet {
        let s = status(member).await;
        assert_eq!(s["active_priority"], 0, "{s}");
        assert_eq!(get(&client(), &member.url("/")).await.unwrap().0.as_u16(), 502);
    }
    assert_eq!(standby.hits(), 0);
}
