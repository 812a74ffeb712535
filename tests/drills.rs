//! Drills that protect users: a drill whose peers answer 503 stops itself within
//! seconds and its site gets traffic again; one request that gets a proxy error while
//! its site is drilled stops it too; a drill with healthy peers runs to its end; a
//! drill's own `abort_5xx` overrides `[drills] abort_5xx`, and a bad one is a 400; in
//! a fleet, a drill that stopped itself on a member is not started again there by the
//! fleet's next revision; `splitgate drill` says when and why a drill stopped itself.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use common::etcd::{connected, fleet_section, weight_override, Etcd};
use common::{client, config, eventually, served_more, site, Backend, Load, TestProxy};

const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\nslow_start = \"0s\"\n";

/// A backend whose health check passes and that answers 503 to every request.
async fn answering_503() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                    let status = if request.uri().path() == "/healthz" {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let mut response = Response::new(Full::new(Bytes::from_static(b"busy\n")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn admin(proxy: &TestProxy, method: Method, path: &str, body: &'static str) -> (u16, Value) {
    common::admin_call(method, proxy.admin_url(path), body).await
}

/// The `drill_ended` event of drill `id`, once published.
fn ended(proxy: &TestProxy, id: u64) -> Option<Value> {
    proxy
        .server
        .events()
        .iter()
        .map(|e| e.to_json())
        .find(|e| e["kind"] == "drill_ended" && e["drill"] == id)
}

async fn wait_for_end(proxy: &TestProxy, id: u64, limit: Duration) -> Option<(Duration, Value)> {
    let mut found = None;
    let took = eventually(limit, || {
        found = ended(proxy, id);
        found.is_some()
    })
    .await?;
    found.map(|event| (took, event))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_whose_peers_answer_503_is_aborted_within_seconds_and_traffic_comes_back() {
    let a = Backend::start("a").await;
    let failing = answering_503().await;
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[failing])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 2);
    served_more(&[&a], 20).await;
    let started = Instant::now();
    let (status, answer) = admin(&proxy, Method::POST, "/sites/a/drill", r#"{"duration": "60s"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    let (_, event) = wait_for_end(&proxy, id, Duration::from_secs(30))
        .await
        .expect("the drill ended well before its 60 s");
    let delay = started.elapsed();
    println!("aborted {} ms after the drill started: {event}", delay.as_millis());
    assert_eq!(event["ended"], "aborted", "{event}");
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("5xx") && reason.contains("abort_5xx 1%"), "{event}");
    assert!(event["responses"].as_u64().unwrap() >= 20, "{event}");
    assert!(proxy.server.drills().is_empty(), "no drill runs any more");
    let hits = a.hits();
    let back = eventually(Duration::from_secs(10), || a.hits() > hits).await;
    let tally = load.stop().await;
    assert!(back.is_some(), "the drilled site gets traffic again");
    println!("{} answered 200, {} not", tally.ok, tally.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_with_a_proxy_error_while_its_site_is_drilled_aborts_the_drill() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // No retries: a request whose backend refuses gets the proxy's 502.
    let extra = format!("{HEALTH}[retry]\nattempts = 1\n");
    let proxy = TestProxy::start(&config(
        &extra,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    // 100%: the 5xx share can never end this drill; only the proxy error can.
    let (status, answer) = admin(
        &proxy,
        Method::POST,
        "/sites/a/drill",
        r#"{"duration": "60s", "abort_5xx": "100%"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    b.kill();
    let client = client();
    let mut proxy_error = None;
    for _ in 0..50 {
        match common::get(&client, &proxy.url("/")).await {
            Ok((status, body)) if status == StatusCode::BAD_GATEWAY => {
                proxy_error = Some(body);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let body = proxy_error.expect("a request got the proxy's 502");
    let sent = Instant::now();
    let (_, event) = wait_for_end(&proxy, id, Duration::from_secs(10))
        .await
        .expect("the drill ended");
    println!(
        "aborted {} ms after a 502 ({})",
        sent.elapsed().as_millis(),
        body.trim()
    );
    assert_eq!(event["ended"], "aborted", "{event}");
    assert!(
        event["reason"].as_str().unwrap_or_default().contains("proxy error"),
        "{event}"
    );
    assert!(event["proxy_errors"].as_u64().unwrap() >= 1, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_healthy_peers_runs_to_its_end() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        &format!("{HEALTH}[drills]\nabort_5xx = \"0.5%\"\n"),
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 4);
    served_more(&[&a, &b], 20).await;
    let (status, answer) = admin(&proxy, Method::POST, "/sites/b/drill", r#"{"duration": "2s"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    let (took, event) = wait_for_end(&proxy, id, Duration::from_secs(15))
        .await
        .expect("the drill ended");
    let tally = load.stop().await;
    println!("ended after {} ms: {event}", took.as_millis());
    assert_eq!(event["ended"], "time_up", "{event}");
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    assert!(tally.ok >= 20, "the watch had answers to judge: {}", tally.ok);
    let started = proxy.server.events();
    let started = started
        .iter()
        .map(|e| e.to_json())
        .find(|e| e["id"] == id)
        .expect("drill_started");
    assert_eq!(started["abort_5xx"], "0.5%", "the rule the drill ran under: {started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_s_own_abort_share_overrides_the_default_and_a_bad_one_is_refused() {
    let a = Backend::start("a").await;
    let failing = answering_503().await;
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[failing])],
    ))
    .await;
    for bad in [
        r#"{"duration": "2s", "abort_5xx": "150%"}"#,
        r#"{"duration": "2s", "abort_5xx": "5"}"#,
        r#"{"duration": "2s", "abort_5xx": 5}"#,
        r#"{"duration": "2s", "abort_5xx": "-1%"}"#,
    ] {
        let (status, answer) = admin(&proxy, Method::POST, "/sites/a/drill", bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    assert!(proxy.server.drills().is_empty(), "a refused drill never starts");
    let load = Load::start(proxy.url("/"), 2);
    let (status, answer) = admin(
        &proxy,
        Method::POST,
        "/sites/a/drill",
        r#"{"duration": "2s", "abort_5xx": "100%"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    let (_, event) = wait_for_end(&proxy, id, Duration::from_secs(15))
        .await
        .expect("the drill ended");
    let tally = load.stop().await;
    println!("{event}; {} answered 200, {} not", tally.ok, tally.errors);
    assert_eq!(event["ended"], "time_up", "100% of 5xx is not more than 100%: {event}");
    assert!(tally.errors >= 20, "the peer answered 503 all along: {}", tally.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_aborted_on_a_fleet_member_is_not_started_again_by_the_next_revision() {
    let Some(etcd) = Etcd::start() else { return };
    let a = Backend::start("a").await;
    let failing = answering_503().await;
    let extra = format!("{HEALTH}{}", fleet_section(&etcd, "edge-1", "/sg/drills"));
    let proxy = TestProxy::start(&config(
        &extra,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[failing])],
    ))
    .await;
    eventually(Duration::from_secs(10), || connected(&proxy))
        .await
        .expect("the member connects to etcd");
    let load = Load::start(proxy.url("/"), 2);
    let (status, answer) = admin(&proxy, Method::POST, "/sites/a/drill", r#"{"duration": "60s"}"#).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["drill"].as_u64().unwrap();
    let (took, event) = wait_for_end(&proxy, id, Duration::from_secs(30))
        .await
        .expect("the drill ended");
    println!("aborted after {} ms: {event}", took.as_millis());
    assert_eq!(event["ended"], "aborted", "{event}");
    // Any new revision makes the member apply the fleet's decisions again, the drill
    // key (still there for 60 s) among them.
    assert!(etcd.ctl(&["put", "/sg/drills/sites/b/weight", "40"]));
    let applied = eventually(Duration::from_secs(5), || weight_override(&proxy, "b") == Some(40)).await;
    assert!(applied.is_some(), "the revision was applied");
    // Over the next 50 requests served by a after it: a drill of a started again would
    // take a's traffic away (and count a second drill_started below).
    served_more(&[&a], 50).await;
    load.stop().await;
    let started = proxy
        .server
        .events()
        .iter()
        .filter(|e| e.kind == splitgate::events::Kind::DrillStarted)
        .count();
    assert_eq!(started, 1, "the aborted drill was started again");
    assert!(proxy.server.drills().is_empty(), "no drill runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splitgate_drill_says_that_the_drill_stopped_itself_and_why() {
    let a = Backend::start("a").await;
    let failing = answering_503().await;
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[failing])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 2);
    let admin = proxy.server.admin_addr().unwrap().to_string();
    let output = tokio::process::Command::new(common::process::BINARY)
        .args([
            "drill", "--admin", &admin, "--site", "a", "--for", "60s", "--wait", "20s",
        ])
        .output()
        .await
        .unwrap();
    load.stop().await;
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text.lines().find(|l| l.trim_start().starts_with("aborted"));
    assert!(
        line.is_some_and(|l| l.contains("were 5xx") && l.contains("abort_5xx 1%")),
        "{text}"
    );
}
