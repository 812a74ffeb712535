//! Failover events as clients and receivers see them: a killed site's `site_down`
//! reaches a webhook within a second with figures that match the client side; a drill
//! under load moves traffic with no client error and comes back; a receiver that hangs
//! costs traffic nothing (bounded queue, drops counted); a command notifier gets the
//! event on stdin; `/events?since=ID` pages.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use common::{client, config, eventually, served_more, site, site_drained, Backend, Load, TestProxy};

/// One delivery: when it arrived, the event, its Authorization header.
type Delivery = (Instant, Value, Option<String>);

/// A webhook receiver: keeps each POSTed event with when it arrived, or hangs.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(hang: bool) -> Receiver {
        Self::start_with(hang, None).await
    }

    /// With `tls`, an HTTPS receiver.
    async fn start_with(hang: bool, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let store = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            if hang {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            let auth = request
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let event: Value = serde_json::from_slice(&body).unwrap();
                            store.lock().unwrap().push((Instant::now(), event, auth));
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver { addr, got }
    }

    fn find(&self, kind: &str, site: &str) -> Option<Delivery> {
        let got = self.got.lock().unwrap();
        got.iter()
            .find(|(_, e, _)| e["kind"] == kind && e["site"] == site)
            .cloned()
    }

    fn notify(&self, extra: &str) -> String {
        format!("[[notify]]\nurl = \"http://{}/hooks/splitgate\"\n{extra}\n", self.addr)
    }
}

fn site_healthy(proxy: &TestProxy, name: &str) -> bool {
    proxy.server.sites().iter().any(|s| s.name == name && s.healthy)
}

const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\nslow_start = \"0s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_is_reported_to_a_webhook_within_a_second_with_its_figures() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let receiver = Receiver::start(false).await;
    let proxy = TestProxy::start(&config(
        &format!("{HEALTH}{}", receiver.notify("token = \"hook-secret\"")),
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 8);
    served_more(&[&a, &b], 50).await;
    let killed = Instant::now();
    b.kill();
    // Polled every 2 ms: the client-side figure the proxy's own is compared with.
    let mut marked = None;
    while killed.elapsed() < Duration::from_secs(5) {
        if !site_healthy(&proxy, "b") {
            marked = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let marked = marked.expect("b marked down");
    let delivered = eventually(Duration::from_secs(5), || receiver.find("site_down", "b").is_some()).await;
    let tally = load.stop().await;
    let (at, event, auth) = receiver.find("site_down", "b").expect("site_down delivered");
    println!("kill -> marked down {marked:?}, delivered {:?}: {event}", at - killed);
    assert!(
        delivered.is_some() && at - killed < Duration::from_secs(1),
        "delivered after {:?}",
        at - killed
    );
    assert_eq!(auth.as_deref(), Some("Bearer hook-secret"));
    let detect = event["detect_ms"].as_u64().expect("detect_ms");
    let moved = event["traffic_moved_ms"].as_u64().expect("traffic_moved_ms");
    assert!(
        detect.abs_diff(marked.as_millis() as u64) <= 50,
        "detect_ms {detect} vs {marked:?} measured"
    );
    assert!(
        moved <= marked.as_millis() as u64 + 50,
        "traffic_moved_ms {moved} vs {marked:?}"
    );
    assert!(event["cause"].as_str().is_some_and(|c| !c.is_empty()), "{event}");
    assert!(event["first_failure_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(event["client_errors"], 0, "retries hid the loss: {event}");
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    assert!(event["retried"].as_u64().is_some());
}

async fn admin(proxy: &TestProxy, method: Method, path: &str, body: &'static str) -> (u16, Value) {
    common::admin_call(method, proxy.admin_url(path), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_under_load_moves_traffic_without_errors_and_brings_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let receiver = Receiver::start(false).await;
    let proxy = TestProxy::start(&config(
        &format!("{HEALTH}{}", receiver.notify("")),
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 8);
    served_more(&[&a, &b], 50).await;
    let drilled = Instant::now();
    let (status, answer) = admin(&proxy, Method::POST, "/sites/b/drill", r#"{"duration": "1500ms"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    assert_eq!(
        admin(&proxy, Method::POST, "/sites/b/drill", r#"{"duration": "1s"}"#)
            .await
            .0,
        409
    );
    assert_eq!(
        admin(&proxy, Method::POST, "/sites/nowhere/drill", r#"{"duration": "1s"}"#)
            .await
            .0,
        404
    );
    // The requests b had in flight when the drill began have ended...
    let drained = site_drained(&proxy, "b").await;
    assert!(drained.is_some(), "b's requests in flight end");
    // ...and over the next 150 requests served (all by a; at 50/50 about 75 would go
    // to b without the drill), not one goes to b.
    let during = b.hits();
    served_more(&[&a], 150).await;
    assert_eq!(b.hits(), during, "traffic is off the site during the drill");
    assert!(
        drilled.elapsed() < Duration::from_millis(1500),
        "the window fell within the drill ({:?})",
        drilled.elapsed()
    );
    let back = eventually(Duration::from_secs(5), || b.hits() > during).await;
    let tally = load.stop().await;
    assert!(back.is_some(), "traffic came back after the drill");
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    eventually(Duration::from_secs(2), || receiver.find("drill_ended", "b").is_some()).await;
    let (_, started, _) = receiver.find("drill_started", "b").expect("drill_started delivered");
    let (_, ended, _) = receiver.find("drill_ended", "b").expect("drill_ended delivered");
    println!("{started}\n{ended}");
    assert_eq!(started["id"], id);
    assert!(started["traffic_moved_ms"].as_u64().unwrap() < 1000, "{started}");
    assert_eq!(started["client_errors"], 0);
    assert_eq!(ended["drill"], id);
    assert!((1400..3000).contains(&ended["down_ms"].as_u64().unwrap()), "{ended}");
    // The ring pages: everything after the drill's start.
    let (_, page) = admin(&proxy, Method::GET, &format!("/events?since={id}"), "").await;
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["drill_ended"]);
    assert!(page["events"][0]["full_weight_ms"].as_u64().is_some(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_costs_traffic_nothing_and_its_queue_is_bounded() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let receiver = Receiver::start(true).await;
    let proxy = TestProxy::start(&config(
        &format!("{HEALTH}{}", receiver.notify("timeout = \"30s\"\nqueue = 2")),
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 4);
    for _ in 0..6 {
        assert_eq!(
            admin(&proxy, Method::POST, "/sites/b/drill", r#"{"duration": "1h"}"#)
                .await
                .0,
            200
        );
        assert_eq!(admin(&proxy, Method::DELETE, "/sites/b/drill", "").await.0, 200);
    }
    // The load goes on past the burst, with the receiver still hanging: 200 requests
    // more through a (b is back at full weight or on its way there).
    served_more(&[&a], 200).await;
    let tally = load.stop().await;
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    assert!(tally.max_latency < Duration::from_secs(1), "{:?}", tally.max_latency);
    let mut dropped = 0.0;
    // The last drops are counted as the last events are emitted.
    for _ in 0..100 {
        let (_, metrics) = common::get(&client(), &proxy.admin_url("/metrics")).await.unwrap();
        dropped = metrics
            .lines()
            .find(|l| l.starts_with("splitgate_events_dropped_total{sink=\"notify\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped >= 8.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{dropped} events dropped for the hanging receiver");
    assert!(dropped >= 8.0, "12 events, 1 in delivery, 2 queued: {dropped} dropped");
    assert!(receiver.got.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_notifier_gets_each_event_as_json_on_stdin() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let notify = format!(
        "[[notify]]\ncommand = [\"sh\", \"-c\", \"cat >> '{}'; echo >> '{}'\"]\ntoken = \"t0k\"\n",
        out.display(),
        out.display()
    );
    // Drills of the only site: the guard rails would refuse them.
    let notify = format!("{notify}[safety]\nmin_serving_sites = 0\n");
    let proxy = TestProxy::start(&config(&notify, &[site("a", 1, 0, &[a.addr])])).await;
    assert_eq!(
        admin(&proxy, Method::POST, "/sites/a/drill", r#"{"duration": "200ms"}"#)
            .await
            .0,
        200
    );
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    let path = out.clone();
    eventually(Duration::from_secs(5), move || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let done = text.contains("\"drill_started\"") && text.contains("\"drill_ended\"");
        flag.store(done, Ordering::SeqCst);
        done
    })
    .await;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(seen.load(Ordering::SeqCst), "{text}");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "drill_started");
    assert_eq!(first["site"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitgate_drill_runs_a_drill_and_prints_what_clients_saw() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 4);
    let admin = proxy.server.admin_addr().unwrap().to_string();
    let output = tokio::process::Command::new(common::process::BINARY)
        .args(["drill", "--admin", &admin, "--site", "b", "--for", "500ms"])
        .output()
        .await
        .unwrap();
    let tally = load.stop().await;
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("drill on b") && text.contains("client errors      0"),
        "{text}"
    );
    assert!(text.contains("out for            5"), "{text}");
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    let refused = tokio::process::Command::new(common::process::BINARY)
        .args(["drill", "--admin", &admin, "--site", "nowhere", "--for", "1s"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_verified_against_its_ca_gets_the_events() {
    let pki = common::tls::Pki::new("hook");
    let leaf = pki.leaf("hook", &["localhost"]);
    let receiver = Receiver::start_with(false, Some(pki.server(&leaf, false))).await;
    let a = Backend::start("a").await;
    let notify = format!(
        "[[notify]]\nurl = \"https://localhost:{}/hooks\"\nca = \"{}\"\n",
        receiver.addr.port(),
        pki.ca_path.display()
    );
    // Drills of the only site: the guard rails would refuse them.
    let notify = format!("{notify}[safety]\nmin_serving_sites = 0\n");
    let proxy = TestProxy::start(&config(&notify, &[site("a", 1, 0, &[a.addr])])).await;
    assert_eq!(
        admin(&proxy, Method::POST, "/sites/a/drill", r#"{"duration": "100ms"}"#)
            .await
            .0,
        200
    );
    let delivered = eventually(Duration::from_secs(5), || receiver.find("drill_ended", "a").is_some()).await;
    assert!(delivered.is_some(), "the HTTPS webhook got the drill's events");
}
