//! Failback and guard rails, over real sockets: a site held by hand gets no request
//! until released; `hold` returns traffic that long after recovery; a flapping site is
//! held `flap_hold`, then twice that; an operator cannot drain the last serving site
//! unless forced, and the override is recorded.

mod common;

use std::time::{Duration, Instant};

use http::Method;
use splitgate::events::{Event, Kind};

use common::{client, config, get, Backend, TestProxy};

const FAST_HEALTH: &str =
    "[health]\ninterval = \"50ms\"\ntimeout = \"200ms\"\nfall = 1\nrise = 1\nslow_start = \"0\"\n";

fn sites(a: &Backend, b: &Backend, b_failback: &str) -> Vec<String> {
    vec![
        format!("[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\n", a.addr),
        format!(
            "[[site]]\nname = \"b\"\nweight = 1\nbackends = [\"{}\"]\nfailback = {{ {b_failback} }}\n",
            b.addr
        ),
    ]
}

fn events(proxy: &TestProxy, kind: Kind) -> Vec<std::sync::Arc<Event>> {
    proxy.server.events().into_iter().filter(|e| e.kind == kind).collect()
}

async fn until(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn serving(proxy: &TestProxy, site: &str) -> bool {
    proxy.server.site(site).is_some_and(|s| s.healthy)
}

/// Kills `b`'s backend, waits until the site is down, starts it again on its address.
async fn fail_and_recover(proxy: &TestProxy, b: Backend) -> Backend {
    let addr = b.addr;
    b.kill();
    drop(b);
    assert!(
        until(Duration::from_secs(10), || !serving(proxy, "b")).await.is_some(),
        "b goes down"
    );
    Backend::start_on("b", addr).await
}

/// Requests that reached each site, out of `n`.
async fn spread(proxy: &TestProxy, n: usize) -> (usize, usize) {
    let client = client();
    let (mut a, mut b) = (0, 0);
    for _ in 0..n {
        match get(&client, &proxy.url("/")).await.unwrap().1.as_str() {
            "a" => a += 1,
            "b" => b += 1,
            other => panic!("{other}"),
        }
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_held_by_hand_gets_nothing_until_released_then_its_share_at_once() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(FAST_HEALTH, &sites(&a, &b, "mode = \"manual\""))).await;
    let b = fail_and_recover(&proxy, b).await;
    let held = |p: &TestProxy| p.server.held_sites().iter().any(|s| s == "b");
    assert!(
        until(Duration::from_secs(10), || held(&proxy)).await.is_some(),
        "held once healthy"
    );
    assert!(until(Duration::from_secs(5), || !events(&proxy, Kind::SiteRecovered)
        .is_empty())
    .await
    .is_some());
    let recovered = events(&proxy, Kind::SiteRecovered);
    assert_eq!(recovered.len(), 1);
    assert!(recovered[0].detail["held_until"].is_null(), "manual: no end");
    // Healthy but held: every request goes to a, also after b has passed 5 more probes
    // (a hold that let go after some healthy probes would show here).
    let probed = b.probes();
    assert!(
        until(Duration::from_secs(10), || b.probes() >= probed + 5)
            .await
            .is_some(),
        "b is probed"
    );
    let hits = b.hits();
    assert_eq!(spread(&proxy, 40).await, (40, 0));
    assert_eq!(b.hits(), hits, "not one request to the held site");
    let (code, status) = common::admin_call(Method::GET, proxy.admin_url("/status"), "").await;
    assert_eq!(code, 200);
    assert_eq!(status["sites"][1]["failback"]["held"], true, "{status}");

    let (code, answer) = common::admin_call(Method::POST, proxy.admin_url("/sites/b/failback"), "").await;
    assert_eq!(code, 200, "{answer}");
    let (to_a, to_b) = spread(&proxy, 40).await;
    assert_eq!((to_a, to_b), (20, 20), "its share at once");
    let with_hold = |p: &TestProxy| {
        events(p, Kind::SiteUp)
            .last()
            .is_some_and(|e| e.detail.contains_key("held_ms"))
    };
    assert!(until(Duration::from_secs(5), || with_hold(&proxy)).await.is_some());
    let up = events(&proxy, Kind::SiteUp);
    assert!(up.last().is_some_and(|e| e.detail.contains_key("held_ms")), "{up:?}");
    let (code, _) = common::admin_call(Method::POST, proxy.admin_url("/sites/b/failback"), "").await;
    assert_eq!(code, 409, "not held any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_hold_traffic_returns_that_long_after_the_site_is_healthy() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(FAST_HEALTH, &sites(&a, &b, "hold = \"1500ms\""))).await;
    let _b = fail_and_recover(&proxy, b).await;
    let held = || proxy.server.held_sites().iter().any(|s| s == "b");
    assert!(until(Duration::from_secs(10), held).await.is_some());
    let recovered = Instant::now();
    assert!(!serving(&proxy, "b"));
    let back = until(Duration::from_secs(10), || serving(&proxy, "b"))
        .await
        .expect("traffic returns");
    let held = recovered.elapsed();
    println!("hold 1500ms: traffic returned {held:?} after recovery ({back:?} after it was seen)");
    assert!(
        held >= Duration::from_millis(1400) && held < Duration::from_secs(6),
        "{held:?}"
    );
    let held_event = || {
        events(&proxy, Kind::SiteUp)
            .last()
            .and_then(|e| e.detail.get("held_ms").and_then(|v| v.as_u64()))
    };
    assert!(until(Duration::from_secs(5), || held_event().is_some()).await.is_some());
    let held_ms = held_event().unwrap();
    assert!((1400..6000).contains(&held_ms), "{held_ms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_site_is_held_flap_hold_then_twice_that() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let policy = "flap_window = \"1m\", flap_hold = \"1s\", max_hold = \"10s\"";
    let proxy = TestProxy::start(&config(FAST_HEALTH, &sites(&a, &b, policy))).await;
    let mut b = b;
    let mut holds = Vec::new();
    for round in 0..3 {
        b = fail_and_recover(&proxy, b).await;
        assert!(
            until(Duration::from_secs(20), || serving(&proxy, "b")).await.is_some(),
            "round {round}"
        );
        let ups = |p: &TestProxy| events(p, Kind::SiteUp);
        assert!(until(Duration::from_secs(5), || ups(&proxy).len() > round)
            .await
            .is_some());
        holds.push(ups(&proxy)[round].detail.get("held_ms").and_then(|v| v.as_u64()));
    }
    println!("holds of a site failing right after each return: {holds:?}");
    assert_eq!(holds[0], None, "the first failure is no flap");
    let (first, second) = (holds[1].unwrap(), holds[2].unwrap());
    assert!((900..3000).contains(&first), "{first}");
    assert!((1900..5000).contains(&second) && second > first, "{second}");
    assert!(
        until(Duration::from_secs(5), || events(&proxy, Kind::SiteRecovered).len()
            >= 2)
        .await
        .is_some()
    );
    let flaps: Vec<u64> = events(&proxy, Kind::SiteRecovered)
        .iter()
        .filter_map(|e| e.detail["flaps"].as_u64())
        .collect();
    assert_eq!(flaps, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_last_serving_site_is_refused_unless_forced() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(FAST_HEALTH, &sites(&a, &b, ""))).await;
    let put = |path: &str, body: &'static str| common::admin_call(Method::PUT, proxy.admin_url(path), body);
    assert_eq!(
        put("/sites/a/weight", r#"{"weight": 0}"#).await.0,
        200,
        "b still serves"
    );
    let (code, answer) = put("/sites/b/weight", r#"{"weight": 0}"#).await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("min_serving_sites"),
        "{answer}"
    );
    assert_eq!(spread(&proxy, 10).await, (0, 10), "nothing changed, no request lost");
    let (code, _) = put("/weights", r#"{"a": 0, "b": 0}"#).await;
    assert_eq!(code, 409);
    let (code, _) = common::admin_call(
        Method::POST,
        proxy.admin_url("/sites/b/drill"),
        r#"{"duration": "10s"}"#,
    )
    .await;
    assert_eq!(code, 409, "a drill of the last serving site too");
    assert!(events(&proxy, Kind::Forced).is_empty());

    let (code, answer) = put("/sites/b/weight?force=true", r#"{"weight": 0}"#).await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        until(Duration::from_secs(5), || !events(&proxy, Kind::Forced).is_empty())
            .await
            .is_some()
    );
    let forced = events(&proxy, Kind::Forced);
    assert_eq!(forced.len(), 1);
    assert!(forced[0].detail["overridden"]
        .as_str()
        .unwrap()
        .contains("min_serving_sites"));
    // Restoring is never refused.
    let (code, _) = common::admin_call(Method::DELETE, proxy.admin_url("/sites/b/weight"), "").await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fleet_one_release_fails_back_on_every_member() {
    use common::etcd::{connected, fleet_section, Etcd};
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let mut fleet = Vec::new();
    for n in 1..=2 {
        let extra = format!("{FAST_HEALTH}{}", fleet_section(&etcd, &format!("edge-{n}"), "/sg/fb"));
        fleet.push(TestProxy::start(&config(&extra, &sites(&a, &b, "mode = \"manual\""))).await);
    }
    for member in &fleet {
        assert!(until(Duration::from_secs(10), || connected(member)).await.is_some());
    }
    let addr = b.addr;
    b.kill();
    drop(b);
    assert!(
        until(Duration::from_secs(10), || fleet.iter().all(|m| !serving(m, "b")))
            .await
            .is_some()
    );
    let _b = Backend::start_on("b", addr).await;
    let held = |m: &TestProxy| m.server.held_sites().iter().any(|s| s == "b");
    assert!(
        until(Duration::from_secs(10), || fleet.iter().all(held))
            .await
            .is_some(),
        "held everywhere"
    );
    let (code, answer) = common::admin_call(Method::POST, fleet[0].admin_url("/sites/b/failback"), "").await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        until(Duration::from_secs(5), || fleet.iter().all(|m| serving(m, "b")))
            .await
            .is_some(),
        "released on every member"
    );
    assert!(etcd.get("/sg/fb/sites/b/failback").is_some(), "written to etcd");
}
