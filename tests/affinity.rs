//! Session affinity, per-route splits and degraded sites, through the proxy over real
//! sockets: keys from a header, a cookie and the client's IP; a killed site; a weight
//! change through the admin API; host and path routes; a site that lost backends.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{client, config, site, Backend, TestClient, TestProxy};

/// Probes fast and flips at once, so health changes show within a few hundred ms.
const FAST_HEALTH: &str =
    "[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfall = 1\nrise = 1\nslow_start = \"0s\"\n";

/// Which backend answered a GET carrying `headers`.
async fn who(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> String {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Where each of `users` goes, asked `times` times each; panics if a user moves.
async fn placement(proxy: &TestProxy, users: usize, times: usize, header: &str) -> Vec<String> {
    let client = client();
    let mut placed = Vec::with_capacity(users);
    for user in 0..users {
        let id = format!("user-{user}");
        let first = who(&client, &proxy.url("/"), &[(header, &id)]).await;
        for _ in 1..times {
            assert_eq!(
                who(&client, &proxy.url("/"), &[(header, &id)]).await,
                first,
                "{id} moved"
            );
        }
        placed.push(first);
    }
    placed
}

fn share(placed: &[String], prefix: &str) -> f64 {
    placed.iter().filter(|n| n.starts_with(prefix)).count() as f64 / placed.len() as f64
}

async fn status(proxy: &TestProxy) -> serde_json::Value {
    let (code, body) = common::get(&client(), &proxy.admin_url("/status")).await.unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

async fn site_healthy_fraction(proxy: &TestProxy, name: &str) -> f64 {
    let status = status(proxy).await;
    let site = status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
        .clone();
    site["healthy_fraction"].as_f64().unwrap()
}

async fn wait_fraction(proxy: &TestProxy, name: &str, fraction: f64) {
    for _ in 0..100 {
        if (site_healthy_fraction(proxy, name).await - fraction).abs() < 1e-9 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached healthy fraction {fraction}");
}

#[tokio::test]
async fn a_header_key_sticks_to_one_backend_and_keys_follow_the_weights() {
    let (a1, a2, b1) = (
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b1").await,
    );
    let proxy = TestProxy::start(&config(
        "[affinity]\nkey = \"header:X-User-Id\"\n",
        &[site("a", 70, 0, &[a1.addr, a2.addr]), site("b", 30, 0, &[b1.addr])],
    ))
    .await;
    let placed = placement(&proxy, 400, 3, "x-user-id").await;
    let a = share(&placed, "a");
    assert!((0.63..=0.77).contains(&a), "share of a: {a}");
    assert!(
        share(&placed, "a1") > 0.25 && share(&placed, "a2") > 0.25,
        "a key sticks to a backend, keys spread over them"
    );
    // Requests without the key: the weighted round-robin, exactly.
    let client = client();
    let mut to_a = 0;
    for _ in 0..100 {
        to_a += usize::from(who(&client, &proxy.url("/"), &[]).await.starts_with('a'));
    }
    assert_eq!(to_a, 70);
}

#[tokio::test]
async fn a_cookie_key_sticks_and_other_cookies_do_not_matter() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        "[affinity]\nkey = \"cookie:sid\"\n",
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let client = client();
    let mut placed = Vec::new();
    for user in 0..200 {
        let plain = format!("sid={user}");
        let first = who(&client, &proxy.url("/"), &[("cookie", &plain)]).await;
        let noisy = format!("theme=dark; sid={user}; lang=en");
        assert_eq!(who(&client, &proxy.url("/x"), &[("cookie", &noisy)]).await, first);
        placed.push(first);
    }
    let a_share = share(&placed, "a");
    assert!((0.4..=0.6).contains(&a_share), "share of a: {a_share}");
}

/// One GET from source address `from`, on its own connection; returns the body.
async fn get_from(from: [u8; 4], proxy: SocketAddr) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.rsplit("\r\n\r\n").next().unwrap().to_string()
}

#[tokio::test]
async fn the_client_ip_key_keeps_each_address_on_its_backend() {
    let (a1, a2, b1) = (
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b1").await,
    );
    let proxy = TestProxy::start(&config(
        "[affinity]\nkey = \"client_ip\"\n",
        &[site("a", 50, 0, &[a1.addr, a2.addr]), site("b", 50, 0, &[b1.addr])],
    ))
    .await;
    let mut seen = HashMap::new();
    for host in 2..42u8 {
        let first = get_from([127, 0, 1, host], proxy.addr).await;
        for _ in 0..2 {
            assert_eq!(
                get_from([127, 0, 1, host], proxy.addr).await,
                first,
                "127.0.1.{host} moved"
            );
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "40 addresses reach every backend: {seen:?}");
}

#[tokio::test]
async fn a_killed_site_moves_only_its_users_and_they_come_back() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = TestProxy::start(&config(
        &format!("{FAST_HEALTH}[affinity]\nkey = \"header:x-user\"\n"),
        &[
            site("a", 40, 0, &[a.addr]),
            site("b", 30, 0, &[b.addr]),
            site("c", 30, 0, &[c.addr]),
        ],
    ))
    .await;
    let before = placement(&proxy, 150, 1, "x-user").await;
    assert!(share(&before, "c") > 0.15);
    c.kill();
    wait_fraction(&proxy, "c", 0.0).await;
    let during = placement(&proxy, 150, 1, "x-user").await;
    for (was, now) in before.iter().zip(&during) {
        if was == "c" {
            assert_ne!(now, "c");
        } else {
            assert_eq!(was, now, "a user of a healthy site moved");
        }
    }
    let _c = Backend::start_on("c", c.addr).await;
    wait_fraction(&proxy, "c", 1.0).await;
    assert_eq!(placement(&proxy, 150, 1, "x-user").await, before, "every user is back");
}

async fn put_weights(proxy: &TestProxy, body: &'static str) -> u16 {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(proxy.admin_url("/weights"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    client().request(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_weight_change_through_the_admin_api_moves_users_only_towards_the_gainer() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        "[affinity]\nkey = \"header:x-user\"\n",
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let before = placement(&proxy, 400, 1, "x-user").await;
    assert_eq!(put_weights(&proxy, r#"{"a": 60, "b": 40}"#).await, 200);
    let after = placement(&proxy, 400, 1, "x-user").await;
    let moved: Vec<_> = before.iter().zip(&after).filter(|(x, y)| x != y).collect();
    assert!(moved.iter().all(|(from, to)| *from == "b" && *to == "a"), "{moved:?}");
    assert!(moved.len() <= 400 * 16 / 100, "{} of 400 users moved", moved.len());
    assert!(!moved.is_empty());
}

#[tokio::test]
async fn host_and_path_routes_have_their_own_splits_and_show_in_status() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let routes = r#"
[[route]]
name = "batch"
path_prefix = "/batch"
weights = { b = 100 }
[[route]]
name = "eu"
host = "*.eu.example"
weights = { a = 1, b = 3 }
"#;
    let proxy = TestProxy::start(&config(
        routes,
        &[site("a", 70, 0, &[a.addr]), site("b", 30, 0, &[b.addr])],
    ))
    .await;
    let client = client();
    let mut tally: HashMap<(&str, String), usize> = HashMap::new();
    for _ in 0..40 {
        for (label, path, host) in [
            ("batch", "/batch/run", "x"),
            ("batchx", "/batchx", "x"),
            ("eu", "/", "shop.eu.example:8080"),
        ] {
            let name = who(&client, &proxy.url(path), &[("host", host)]).await;
            *tally.entry((label, name)).or_insert(0) += 1;
        }
    }
    assert_eq!(tally.get(&("batch", "b".into())), Some(&40), "{tally:?}");
    assert_eq!(
        tally.get(&("batchx", "a".into())),
        Some(&28),
        "the default 70/30: {tally:?}"
    );
    assert_eq!(
        tally.get(&("eu", "b".into())),
        Some(&30),
        "the eu route's 1:3: {tally:?}"
    );
    let status = status(&proxy).await;
    assert_eq!(status["routes"][0]["name"], "batch");
    assert_eq!(status["routes"][0]["weights"], serde_json::json!({"a": 0, "b": 100}));
    assert_eq!(status["routes"][1]["weights"], serde_json::json!({"a": 1, "b": 3}));
}

/// First tries of `n` plain requests, per site name prefix.
async fn traffic(proxy: &TestProxy, n: usize) -> HashMap<char, usize> {
    let client = client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = who(&client, &proxy.url("/"), &[]).await;
        *counts.entry(name.chars().next().unwrap()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_site_that_lost_most_backends_gets_a_health_scaled_share() {
    let a: Vec<Backend> = start_all(["a1", "a2", "a3", "a4"]).await;
    let b = Backend::start("b").await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr).collect();
    let proxy = TestProxy::start(&config(
        FAST_HEALTH,
        &[site("a", 50, 0, &addrs), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    for backend in &a[1..] {
        backend.set_healthy(false);
    }
    wait_fraction(&proxy, "a", 0.25).await;
    let counts = traffic(&proxy, 1000).await;
    // 50 x 1.4 x 0.25 = 17.5 against 50: 25.9%.
    let to_a = counts.get(&'a').copied().unwrap_or(0);
    assert!((250..=270).contains(&to_a), "{counts:?}");
}

#[tokio::test]
async fn a_degraded_active_tier_spills_to_the_standby_and_takes_it_back() {
    let backends: Vec<Backend> = start_all(["a1", "a2", "b1", "b2", "s1"]).await;
    let addr = |i: usize| backends[i].addr;
    let proxy = TestProxy::start(&config(
        FAST_HEALTH,
        &[
            site("a", 50, 0, &[addr(0), addr(1)]),
            site("b", 50, 0, &[addr(2), addr(3)]),
            site("s", 100, 1, &[addr(4)]),
        ],
    ))
    .await;
    backends[1].set_healthy(false);
    backends[3].set_healthy(false);
    wait_fraction(&proxy, "a", 0.5).await;
    wait_fraction(&proxy, "b", 0.5).await;
    let counts = traffic(&proxy, 1000).await;
    let standby = counts.get(&'s').copied().unwrap_or(0);
    assert!((290..=310).contains(&standby), "{counts:?}");
    backends[1].set_healthy(true);
    backends[3].set_healthy(true);
    wait_fraction(&proxy, "a", 1.0).await;
    wait_fraction(&proxy, "b", 1.0).await;
    let counts = traffic(&proxy, 200).await;
    assert_eq!(counts.get(&'s'), None, "{counts:?}");
}

async fn start_all<const N: usize>(names: [&str; N]) -> Vec<Backend> {
    let mut out = Vec::with_capacity(N);
    for name in names {
        out.push(Backend::start(name).await);
    }
    out
}

/// GET with `cookie`; which backend answered, and the Set-Cookie given, if any.
async fn with_cookie(client: &TestClient, url: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let mut request = Request::get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let set = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (String::from_utf8(body.to_vec()).unwrap(), set)
}

#[tokio::test]
async fn an_inserted_signed_cookie_keeps_a_new_client_where_it_landed_and_a_forged_one_is_replaced() {
    let (a1, a2, b1) = (
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b1").await,
    );
    let proxy = TestProxy::start(&config(
        "[affinity]\nkey = \"cookie:sg\"\ninsert = true\nsecret = \"a-long-shared-secret\"\nmax_age = \"1h\"\n",
        &[site("a", 50, 0, &[a1.addr, a2.addr]), site("b", 50, 0, &[b1.addr])],
    ))
    .await;
    let client = client();
    let mut landed = HashMap::new();
    for _ in 0..30 {
        let (first, set) = with_cookie(&client, &proxy.url("/"), None).await;
        let set = set.expect("a client without the cookie is given one");
        assert!(set.contains("HttpOnly") && set.contains("Max-Age=3600"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        for _ in 0..3 {
            let (again, set_again) = with_cookie(&client, &proxy.url("/"), Some(&cookie)).await;
            assert_eq!(again, first, "{cookie} moved");
            assert_eq!(set_again, None, "a valid cookie is kept");
        }
        *landed.entry(first).or_insert(0) += 1;
    }
    assert_eq!(landed.len(), 3, "new clients spread over every backend: {landed:?}");
    let (_, replaced) = with_cookie(&client, &proxy.url("/"), Some("sg=0000000000000001.0123456789abcdef")).await;
    assert!(replaced.is_some(), "a made-up cookie is not honoured");
}
