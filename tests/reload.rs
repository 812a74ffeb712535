//! Hot reload and run-time control against the real binary: SIGHUP and `POST /reload`
//! apply within milliseconds without failing a request, bad files change nothing, the
//! admin API overrides weights, and SIGTERM drains in-flight requests.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::ProxyProcess;
use common::{client, get, site, Backend, Load, TestClient};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

fn two_sites(listen: SocketAddr, admin: SocketAddr, a: (SocketAddr, u32), b: (SocketAddr, u32), extra: &str) -> String {
    format!(
        "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n{extra}\n{}\n{}",
        site("a", a.1, 0, &[a.0]),
        site("b", b.1, 0, &[b.0])
    )
}

async fn admin(client: &TestClient, method: Method, url: String, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn status(client: &TestClient, proxy: &ProxyProcess) -> Value {
    admin(client, Method::GET, format!("http://{}/status", proxy.admin), None, "")
        .await
        .1
}

async fn generation(client: &TestClient, proxy: &ProxyProcess) -> u64 {
    status(client, proxy).await["generation"].as_u64().expect("generation")
}

async fn failed_reloads(client: &TestClient, proxy: &ProxyProcess) -> u64 {
    let (_, text) = get(client, &format!("http://{}/metrics", proxy.admin)).await.unwrap();
    text.lines()
        .find(|l| l.starts_with("splitgate_config_reloads_total{result=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `/status` shows a generation other than `from`; returns the time taken.
async fn wait_generation(client: &TestClient, proxy: &ProxyProcess, from: u64) -> Duration {
    let start = Instant::now();
    while generation(client, proxy).await == from {
        assert!(start.elapsed() < Duration::from_secs(10), "reload not applied");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_weights_within_milliseconds() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (aa, ba) = (a.addr, b.addr);
    let proxy = ProxyProcess::start(|l, m| two_sites(l, m, (aa, 1), (ba, 0), ""));
    let client = client();
    let mut took = Vec::new();
    for round in 0..20u32 {
        let to_b = round % 2 == 0;
        let (wa, wb) = if to_b { (0, 1) } else { (1, 0) };
        proxy.write_config(&two_sites(proxy.addr, proxy.admin, (aa, wa), (ba, wb), ""));
        let before = generation(&client, &proxy).await;
        proxy.signal("HUP");
        took.push(wait_generation(&client, &proxy, before).await);
        for _ in 0..3 {
            let (_, who) = get(&client, &format!("http://{}/", proxy.addr)).await.unwrap();
            assert_eq!(
                who,
                if to_b { "b" } else { "a" },
                "round {round}: traffic follows the new weights"
            );
        }
    }
    took.sort();
    println!(
        "SIGHUP -> new generation in /status: median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(took[took.len() / 2] < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (aa, ba) = (a.addr, b.addr);
    let proxy = ProxyProcess::start(|l, m| two_sites(l, m, (aa, 70), (ba, 30), ""));
    let client = client();
    let load = Load::start(format!("http://{}/", proxy.addr), 8);
    for round in 0..50u32 {
        let weights = if round % 2 == 0 {
            ((aa, 10), (ba, 90))
        } else {
            ((aa, 70), (ba, 30))
        };
        proxy.write_config(&two_sites(proxy.addr, proxy.admin, weights.0, weights.1, ""));
        let before = generation(&client, &proxy).await;
        proxy.signal("HUP");
        wait_generation(&client, &proxy, before).await;
    }
    let tally = load.stop().await;
    println!("50 reloads under load: {tally:?}");
    assert_eq!(generation(&client, &proxy).await, 51);
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    assert!(tally.ok > 100);
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_are_rejected_and_the_old_config_keeps_serving() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (aa, ba) = (a.addr, b.addr);
    let mut proxy = ProxyProcess::start(|l, m| two_sites(l, m, (aa, 1), (ba, 0), ""));
    let client = client();
    let good = two_sites(proxy.addr, proxy.admin, (aa, 1), (ba, 0), "");
    let bad_files = [
        ("syntax error", good.replace("[admin]", "[admin")),
        ("negative weight", good.replace("weight = 1", "weight = -1")),
        ("duplicate site", good.replace("name = \"b\"", "name = \"a\"")),
        ("unknown key", good.replace("[admin]", "[admin]\nport = 1")),
    ];
    for (i, (what, text)) in bad_files.iter().enumerate() {
        proxy.write_config(text);
        proxy.signal("HUP");
        let start = Instant::now();
        while failed_reloads(&client, &proxy).await < i as u64 + 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: rejection not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    std::fs::remove_file(&proxy.config_path).unwrap();
    proxy.signal("HUP");
    let start = Instant::now();
    while failed_reloads(&client, &proxy).await < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "missing file: rejection not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(proxy.is_running());
    let doc = status(&client, &proxy).await;
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["last_reload"]["ok"], false);
    for _ in 0..5 {
        assert_eq!(get(&client, &format!("http://{}/", proxy.addr)).await.unwrap().1, "a");
    }
    let log = proxy.stderr();
    assert!(log.contains("site[1].name"), "the log names the key: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_overrides_weights_and_reloads_with_a_token() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (aa, ba) = (a.addr, b.addr);
    let proxy = ProxyProcess::start(|l, m| {
        two_sites(l, m, (aa, 1), (ba, 1), "").replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n")
    });
    let client = client();
    let url = |p: &str| format!("http://{}{p}", proxy.admin);
    let put = |site: &str| url(&format!("/sites/{site}/weight"));

    assert_eq!(
        admin(&client, Method::PUT, put("b"), None, r#"{"weight": 0}"#).await.0,
        401
    );
    assert_eq!(
        admin(&client, Method::PUT, put("b"), Some("wrong"), r#"{"weight": 0}"#)
            .await
            .0,
        401
    );
    assert_eq!(
        admin(&client, Method::PUT, put("nope"), Some("s3cret"), r#"{"weight": 0}"#)
            .await
            .0,
        404
    );
    assert_eq!(
        admin(&client, Method::PUT, put("b"), Some("s3cret"), r#"{"weight": "x"}"#)
            .await
            .0,
        400
    );
    assert_eq!(
        admin(&client, Method::PUT, put("b"), Some("s3cret"), r#"{"weight": -3}"#)
            .await
            .0,
        400
    );
    let (code, doc) = admin(&client, Method::PUT, put("b"), Some("s3cret"), r#"{"weight": 0}"#).await;
    assert_eq!(code, 200);
    assert_eq!(doc["weight"], 0);
    assert_eq!(doc["config_weight"], 1);
    for _ in 0..6 {
        assert_eq!(
            get(&client, &format!("http://{}/", proxy.addr)).await.unwrap().1,
            "a",
            "b is drained"
        );
    }
    // A reload that does not touch b's weight keeps the override.
    let (code, doc) = admin(&client, Method::POST, url("/reload"), Some("s3cret"), "").await;
    assert_eq!((code, doc["generation"].as_u64()), (200, Some(2)));
    let doc = status(&client, &proxy).await;
    assert_eq!(
        doc["sites"][1]["weight"], 0,
        "the override survives an unrelated reload"
    );
    // Clearing the override restores the file's weight.
    assert_eq!(
        admin(&client, Method::DELETE, put("b"), Some("s3cret"), "").await.0,
        200
    );
    assert_eq!(status(&client, &proxy).await["sites"][1]["weight"], 1);
    // A bad file through the API: 400 with every error, old config kept.
    proxy.write_config("[[site]]\nname = \"\"\n");
    let (code, doc) = admin(&client, Method::POST, url("/reload"), Some("s3cret"), "").await;
    assert_eq!(code, 400);
    assert!(doc["errors"].as_array().is_some_and(|e| e.len() >= 2), "{doc}");
    assert_eq!(generation(&client, &proxy).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_can_move_the_listener_to_a_new_port() {
    let a = Backend::start("a").await;
    let aa = a.addr;
    let proxy = ProxyProcess::start(|l, m| two_sites(l, m, (aa, 1), (aa, 0), ""));
    let client = client();
    let new_listen: SocketAddr = format!("127.0.0.1:{}", common::process::free_port()).parse().unwrap();
    proxy.write_config(&two_sites(new_listen, proxy.admin, (aa, 1), (aa, 0), ""));
    let before = generation(&client, &proxy).await;
    proxy.signal("HUP");
    wait_generation(&client, &proxy, before).await;
    assert_eq!(get(&client, &format!("http://{new_listen}/")).await.unwrap().1, "a");
    let old = tokio::net::TcpStream::connect(proxy.addr).await;
    assert!(old.is_err(), "the old listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let a = Backend::start("a").await;
    let aa = a.addr;
    let mut proxy = ProxyProcess::start(|l, m| two_sites(l, m, (aa, 1), (aa, 0), "[timeouts]\ndrain = \"10s\"\n"));
    let url = format!("http://{}/sleep/3000", proxy.addr);
    let in_flight = tokio::spawn(async move { get(&client(), &url).await });
    // In flight: the backend has it (counted as it arrives, before its 3 s).
    assert!(common::eventually(Duration::from_secs(5), || a.hits() >= 1)
        .await
        .is_some());
    proxy.signal("TERM");
    let (status, body) = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    let exit = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(10))).expect("exits after the drain");
    assert_eq!(exit.code(), Some(0), "{}", proxy.stderr());
}
