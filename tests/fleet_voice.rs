//! One voice for a fleet (real etcd, three members, a webhook configured on every
//! member): the member holding the fleet's leadership delivers each fleet event once,
//! with every member's figures; a drill has one id on every member; a new leader takes
//! over when the old one is killed and neither repeats nor loses an event.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use common::etcd::{connected, fleet_section, wait, Etcd};
use common::process::ProxyProcess;
use common::{admin_call, config, site, Backend, TestProxy};

const HEALTH: &str = "[health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1\nslow_start = \"0s\"\n";

/// A webhook that keeps every event POSTed to it.
struct Webhook {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    async fn start() -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(event) = serde_json::from_slice(&body) {
                                store.lock().unwrap().push(event);
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook { addr, got }
    }

    fn notify(&self) -> String {
        format!("[[notify]]\nurl = \"http://{}/hook\"\n", self.addr)
    }

    /// Events of `kind` (and `site`, when given) received so far.
    fn count(&self, kind: &str, site: Option<&str>) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind && site.is_none_or(|s| e["site"] == s))
            .count()
    }

    fn find(&self, kind: &str) -> Option<Value> {
        self.got.lock().unwrap().iter().find(|e| e["kind"] == kind).cloned()
    }

    async fn until(&self, limit: Duration, kind: &str, site: Option<&str>) -> bool {
        wait(limit, || self.count(kind, site) > 0).await.is_some()
    }
}

fn member_config(etcd: &Etcd, prefix: &str, name: &str, extra: &str, sites: &[String]) -> String {
    let fleet = fleet_section(etcd, name, prefix) + "failover = \"quorum\"\n";
    config(&(fleet + HEALTH + extra), sites)
}

async fn fleet_of_three(etcd: &Etcd, prefix: &str, hook: &Webhook, sites: &[String]) -> Vec<TestProxy> {
    let mut members = Vec::new();
    for n in 1..=3 {
        let text = member_config(etcd, prefix, &format!("edge-{n}"), &hook.notify(), sites);
        members.push(TestProxy::start(&text).await);
    }
    for member in &members {
        wait(Duration::from_secs(10), || connected(member))
            .await
            .expect("member connects");
    }
    let led = wait(Duration::from_secs(10), || {
        members
            .iter()
            .all(|m| m.server.fleet_status().is_some_and(|s| s["leader"].is_string()))
    })
    .await;
    assert!(led.is_some(), "a leader is elected");
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_lost_for_the_whole_fleet_is_one_failover_at_the_webhook_with_every_members_figures() {
    let Some(etcd) = Etcd::start() else { return };
    let hook = Webhook::start().await;
    let (active, standby) = (Backend::start("a").await, Backend::start("dr").await);
    let addr = active.addr;
    let sites = [site("a", 100, 0, &[addr]), site("dr", 100, 1, &[standby.addr])];
    let fleet = fleet_of_three(&etcd, "/sg/v1", &hook, &sites).await;
    let killed = Instant::now();
    active.kill();
    assert!(
        hook.until(Duration::from_secs(10), "failover", None).await,
        "the fleet announces its failover"
    );
    println!("kill -> failover POST at the webhook: {:?}", killed.elapsed());
    let failover = hook.find("failover").unwrap();
    assert_eq!(failover["voice"], "fleet");
    assert_eq!(
        (failover["from_priority"].as_u64(), failover["to_priority"].as_u64()),
        (Some(0), Some(1))
    );
    let members = failover["members"].as_object().expect("members' figures");
    assert_eq!(members.len(), 3, "{failover}");
    for (name, figures) in members {
        assert!(figures["detect_ms"].is_u64(), "{name}: {figures}");
        assert!(figures["client_errors"].is_u64(), "{name}: {figures}");
    }
    let _back = Backend::start_on("a", addr).await;
    assert!(hook.until(Duration::from_secs(10), "failback", None).await);
    // The failback came after the failover: by then any second failover would be in.
    assert_eq!(hook.count("failover", None), 1, "one failover POST, not one per member");
    assert_eq!(hook.count("site_down", Some("a")), 1);
    // A drill is a later event still: by its end the failback and site_up are all in.
    let (code, answer) = admin_call(
        Method::POST,
        fleet[1].admin_url("/sites/dr/drill"),
        r#"{"duration": "1s"}"#,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert!(hook.until(Duration::from_secs(10), "drill_ended", Some("dr")).await);
    assert_eq!(hook.count("failback", None), 1);
    assert_eq!(hook.count("site_up", Some("a")), 1);
    assert_eq!(hook.count("drill_started", Some("dr")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_started_on_one_member_has_the_same_id_on_every_member() {
    let Some(etcd) = Etcd::start() else { return };
    let hook = Webhook::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let sites = [site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])];
    let fleet = fleet_of_three(&etcd, "/sg/v2", &hook, &sites).await;
    let (code, answer) = admin_call(
        Method::POST,
        fleet[0].admin_url("/sites/b/drill"),
        r#"{"duration": "30s"}"#,
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let id = answer["drill"].as_u64().expect("the drill's id");
    let mut seen = Vec::new();
    for member in &fleet {
        let started = Instant::now();
        let mut found = None;
        while found.is_none() && started.elapsed() < Duration::from_secs(10) {
            let (_, page) = admin_call(Method::GET, member.admin_url("/events"), "").await;
            found = page["events"]
                .as_array()
                .and_then(|events| events.iter().find(|e| e["kind"] == "drill_started").cloned());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.push(found.expect("every member records the drill")["drill"].clone());
    }
    assert!(seen.iter().all(|d| d.as_u64() == Some(id)), "{seen:?} against {id}");
    assert!(hook.until(Duration::from_secs(10), "drill_started", Some("b")).await);
    assert_eq!(hook.find("drill_started").unwrap()["drill"].as_u64(), Some(id));
    let (code, _) = admin_call(Method::DELETE, fleet[2].admin_url("/sites/b/drill"), "").await;
    assert_eq!(code, 200);
    assert!(hook.until(Duration::from_secs(10), "drill_ended", Some("b")).await);
    assert_eq!(hook.find("drill_ended").unwrap()["drill"].as_u64(), Some(id));
    assert_eq!(hook.count("drill_started", None), 1, "one drill, announced once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_during_a_burst_of_events_loses_and_repeats_nothing() {
    let Some(etcd) = Etcd::start() else { return };
    let hook = Webhook::start().await;
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let standby = Backend::start("dr").await;
    let sites = [
        site("a", 10, 0, &[backends[0].addr]),
        site("b", 10, 0, &[backends[1].addr]),
        site("c", 10, 0, &[backends[2].addr]),
        site("dr", 10, 1, &[standby.addr]),
    ];
    let mut members: Vec<ProxyProcess> = (1..=3)
        .map(|n| {
            let text = member_config(&etcd, "/sg/v3", &format!("edge-{n}"), &hook.notify(), &sites);
            ProxyProcess::start(move |listen, admin| {
                text.replace(
                    "bind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"",
                    &format!("bind = \"{listen}\"\n[admin]\nbind = \"{admin}\""),
                )
            })
        })
        .collect();
    let mut elected = None;
    for _ in 0..500 {
        elected = leader_seen_by(&members[0]).await;
        if elected.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elected = elected.expect("a leader");
    backends[0].kill();
    assert!(hook.until(Duration::from_secs(10), "site_down", Some("a")).await);
    // Marked announced in etcd before the leader dies.
    assert!(wait(Duration::from_secs(10), || etcd
        .get("/sg/v3/fleet/announced")
        .is_some_and(|v| v.contains("\"a\"")))
    .await
    .is_some());
    let index: usize = elected.trim_start_matches("edge-").parse::<usize>().unwrap() - 1;
    members[index].signal("KILL");
    backends[1].kill();
    backends[2].kill();
    let survivor = (index + 1) % 3;
    let mut taken = false;
    for _ in 0..1500 {
        if leader_seen_by(&members[survivor]).await.is_some_and(|l| l != elected) {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(taken, "another member takes the leadership within the lease");
    assert!(
        hook.until(Duration::from_secs(20), "failover", None).await,
        "the burst is announced"
    );
    assert!(hook.until(Duration::from_secs(10), "site_down", Some("b")).await);
    assert!(hook.until(Duration::from_secs(10), "site_down", Some("c")).await);
    // A last event as a barrier, announced after all the rest: site a comes back.
    let _back = Backend::start_on("a", backends[0].addr).await;
    assert!(hook.until(Duration::from_secs(15), "failback", None).await);
    for site in ["a", "b", "c"] {
        assert_eq!(
            hook.count("site_down", Some(site)),
            1,
            "site_down {site} once: {:?}",
            hook.got.lock().unwrap()
        );
    }
    assert_eq!(hook.count("failover", None), 1);
    let numbers: Vec<u64> = hook
        .got
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| e["fleet_event"].as_u64())
        .collect();
    let mut unique = numbers.clone();
    unique.dedup();
    assert_eq!(numbers, unique, "fleet events numbered in order, none twice");
    for (i, member) in members.iter_mut().enumerate() {
        if i != index {
            member.signal("TERM");
        }
    }
}

async fn leader_seen_by(member: &ProxyProcess) -> Option<String> {
    let (_, status) = admin_call(Method::GET, format!("http://{}/status", member.admin), "").await;
    status["fleet"]["leader"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_program_runs_once_for_the_whole_fleet() {
    let Some(etcd) = Etcd::start() else { return };
    let hook = Webhook::start().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let sites = [site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])];
    let program = format!(
        "{}[[drill]]\nsite = \"b\"\nschedule = \"* * * * *\"\nduration = \"2s\"\n",
        hook.notify()
    );
    let mut fleet = Vec::new();
    for n in 1..=3 {
        fleet.push(TestProxy::start(&member_config(&etcd, "/sg/v4", &format!("edge-{n}"), &program, &sites)).await);
    }
    // Within the next minute (and room for a slow machine).
    assert!(
        hook.until(Duration::from_secs(80), "drill_ended", Some("b")).await,
        "the program's drill ran"
    );
    assert_eq!(hook.count("drill_started", Some("b")), 1, "started once for the fleet");
    let ids: Vec<Value> = fleet
        .iter()
        .map(|m| {
            m.server
                .events()
                .iter()
                .find(|e| e.kind.name() == "drill_started")
                .map(|e| e.to_json()["drill"].clone())
                .unwrap_or(Value::Null)
        })
        .collect();
    assert!(
        ids[0].is_u64() && ids.iter().all(|id| *id == ids[0]),
        "one drill id on every member: {ids:?}"
    );
}
