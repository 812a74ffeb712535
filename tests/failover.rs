//! Failover: dead and hung sites are taken out within seconds without client-visible
//! errors, come back through rise and slow start, and standby tiers take over.
//! Timing targets are printed; the asserts leave room for a slow CI machine.

mod common;

use std::time::{Duration, Instant};

use common::{client, config, eventually, get, served_more, site, site_drained, Backend, Load, TestProxy};

const HEALTH: &str = r#"
[health]
interval = "1s"
timeout = "500ms"
fall = 2
rise = 2
slow_start = "3s"
[timeouts]
response = "1s"
"#;

fn site_healthy(proxy: &TestProxy, name: &str) -> bool {
    proxy.server.site(name).is_some_and(|s| s.healthy)
}

/// Two sites 50/50 under 8 looping clients; `fail` breaks site b once both serve.
/// Returns how long until b was marked down, and what the clients saw.
async fn outage(fail: impl FnOnce(&Backend), limit: Duration) -> (Option<Duration>, common::Tally) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])],
    ))
    .await;
    let load = Load::start(proxy.url("/"), 8);
    served_more(&[&a, &b], 50).await;
    fail(&b);
    let marked = eventually(limit, || !site_healthy(&proxy, "b")).await;
    // The clients go on past the mark: 200 more requests served by a.
    served_more(&[&a], 200).await;
    (marked, load.stop().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_site_is_out_within_a_second_and_clients_see_no_error() {
    let (marked, tally) = outage(Backend::kill, Duration::from_secs(5)).await;
    println!("killed site marked down after {marked:?}; {tally:?}");
    assert!(marked.expect("site b marked down") < Duration::from_secs(2));
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
    assert!(tally.ok > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_site_is_out_within_three_seconds_with_few_errors_and_bounded_waits() {
    let (marked, tally) = outage(|b| b.set_hang(true), Duration::from_secs(10)).await;
    println!("hung site marked down after {marked:?}; {tally:?}");
    assert!(marked.expect("site b marked down") <= Duration::from_secs(4));
    let total = tally.ok + tally.errors;
    assert!(
        tally.errors * 100 <= total,
        "{} errors of {total}: {:?}",
        tally.errors,
        tally.error_samples
    );
    // One per-try timeout (1s) plus one retry, with room for a slow machine.
    assert!(tally.max_latency < Duration::from_secs(4), "{:?}", tally.max_latency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_site_gets_traffic_again_and_ramps_up() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let b_addr = b.addr;
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b_addr])],
    ))
    .await;
    let client = client();
    b.kill();
    drop(b);
    // Traffic discovers the dead site at once.
    for _ in 0..4 {
        let (status, _) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!(status, 200);
    }
    assert!(!site_healthy(&proxy, "b"));
    let b = Backend::start_on("b", b_addr).await;
    let restarted = Instant::now();
    let back = eventually(Duration::from_secs(10), || site_healthy(&proxy, "b")).await;
    println!("restarted site healthy again after {back:?}");
    // Target: rise (2) x interval (1s) + 1s; 2s more for a slow machine.
    assert!(back.expect("site b comes back") < Duration::from_secs(5));
    let ramp_start = proxy.server.sites()[1].effective_weight;
    assert!(ramp_start < 50, "slow start begins below full weight, got {ramp_start}");
    let full = eventually(Duration::from_secs(10), || {
        proxy.server.sites()[1].effective_weight == 50
    })
    .await;
    println!(
        "slow start reached full weight {:?} after the restart",
        restarted.elapsed()
    );
    assert!(full.is_some(), "slow start reaches the full weight");
    for _ in 0..20 {
        get(&client, &proxy.url("/")).await.unwrap();
    }
    assert!(b.hits() >= 8, "b gets its share again: {}", b.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_site_takes_over_when_both_active_sites_die_and_hands_back() {
    let (a, b, dr) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("dr").await,
    );
    let a_addr = a.addr;
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[
            site("a", 50, 0, &[a_addr]),
            site("b", 50, 0, &[b.addr]),
            site("dr", 10, 1, &[dr.addr]),
        ],
    ))
    .await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/")).await.unwrap().1, "a");
    assert_eq!(dr.hits(), 0);
    let load = Load::start(proxy.url("/"), 8);
    a.kill();
    b.kill();
    drop(a);
    let took_over = eventually(Duration::from_secs(5), || {
        let sites = proxy.server.sites();
        sites[2].effective_weight > 0 && !sites[0].healthy && !sites[1].healthy
    })
    .await;
    println!("standby took over after {took_over:?}");
    assert!(took_over.expect("standby takes over") < Duration::from_secs(3));
    // The standby serves (served_more panics if not): 20 requests more.
    served_more(&[&dr], 20).await;

    let a = Backend::start_on("a", a_addr).await;
    let handed_back = eventually(Duration::from_secs(10), || site_healthy(&proxy, "a")).await;
    assert!(handed_back.is_some(), "site a comes back");
    // What the standby had in flight as a came back has ended; over the next 200
    // requests served by a, not one goes to the standby.
    assert!(site_drained(&proxy, "dr").await.is_some(), "the standby's requests end");
    let (dr_before, a_before) = (dr.hits(), a.hits());
    served_more(&[&a], 200).await;
    let tally = load.stop().await;
    assert_eq!(
        dr.hits(),
        dr_before,
        "the standby is idle again once an active site is back"
    );
    assert!(a.hits() > a_before);
    assert_eq!(tally.errors, 0, "{:?}", tally.error_samples);
}

#[tokio::test]
async fn a_post_whose_backend_refused_is_retried_with_its_body() {
    let b = Backend::start("b").await;
    let dead = common::refused_addr();
    let proxy = TestProxy::start(&config(HEALTH, &[site("a", 1, 0, &[dead]), site("b", 1, 0, &[b.addr])])).await;
    let body = common::pattern(0, 100_000);
    let expected = {
        let mut fnv = common::Fnv::default();
        fnv.update(&body);
        fnv.0
    };
    for _ in 0..2 {
        let request = http::Request::post(proxy.url("/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let text = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(String::from_utf8_lossy(&text), format!("bytes=100000 fnv={expected:x}"));
    }
}

/// Site a's backend hangs (it answers nothing), site c's (`b`) answers; 1:1, a 300 ms
/// response timeout, no probe in the test's time.
async fn hung_beside_healthy() -> (Backend, Backend, TestProxy) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_hang(true);
    let proxy = TestProxy::start(&config(
        "[timeouts]\nresponse = \"300ms\"\n[health]\ninterval = \"1m\"\n",
        &[site("a", 1, 0, &[a.addr]), site("c", 1, 0, &[b.addr])],
    ))
    .await;
    (a, b, proxy)
}

/// A GET that reached a hung backend is sent again elsewhere after the response
/// timeout, with the head it first went out with: every field of the client's once,
/// the forwarding fields once (not added a second time).
#[tokio::test]
async fn a_get_that_reached_a_hung_backend_is_retried_elsewhere_with_the_same_head() {
    let (_a, b, proxy) = hung_beside_healthy().await;
    let client = client();
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        let started = Instant::now();
        let request = http::Request::get(proxy.url("/headers"))
            .header("x-trace", "t-1")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body).to_string();
        let count = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(count("x-trace: t-1"), 1, "{text}");
        assert_eq!(count("x-forwarded-for: "), 1, "{text}");
        assert_eq!(count("via: "), 1, "{text}");
        assert_eq!(count("host: "), 1, "{text}");
        slowest = slowest.max(started.elapsed());
    }
    // The split alternates: some went to the hung backend first and waited out its
    // response timeout (it counts no hit while it hangs).
    assert!(slowest >= Duration::from_millis(300), "none was retried: {slowest:?}");
    assert_eq!(b.hits(), 4, "every one was answered by c's backend");
}

#[tokio::test]
async fn a_post_that_reached_a_hung_backend_is_not_repeated_elsewhere() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_hang(true);
    let proxy = TestProxy::start(&config(
        "[timeouts]\nresponse = \"300ms\"\n[health]\ninterval = \"1m\"\n",
        &[
            site("a", 1, 0, &[a.addr]),
            site("b", 0, 0, &[b.addr]),
            site("c", 1, 0, &[b.addr]),
        ],
    ))
    .await;
    let client = client();
    let mut saw_504 = false;
    for _ in 0..2 {
        let request = http::Request::post(proxy.url("/"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"pay once")))
            .unwrap();
        let response = client.request(request).await.unwrap();
        saw_504 |= response.status() == 504;
    }
    assert!(saw_504, "the POST to the hung backend ends in 504");
    assert_eq!(b.hits(), 1, "only the POST that went to c's backend reached it");
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_backends_it_does_not_remove() {
    let a = Backend::start("a").await;
    let dead = common::refused_addr();
    let proxy = TestProxy::start(&config(
        HEALTH,
        &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[dead])],
    ))
    .await;
    let client = client();
    for _ in 0..2 {
        get(&client, &proxy.url("/")).await.unwrap();
    }
    assert!(!site_healthy(&proxy, "b"));
    let text = config(HEALTH, &[site("a", 10, 0, &[a.addr]), site("b", 90, 0, &[dead])]);
    let new = splitgate::config::parse(std::path::Path::new("t"), &text).unwrap();
    assert_eq!(proxy.server.apply(new).await.unwrap(), 2);
    let sites = proxy.server.sites();
    assert_eq!(sites[1].config_weight, 90);
    assert!(!sites[1].healthy, "b is still known to be down after the reload");
    for _ in 0..5 {
        assert_eq!(get(&client, &proxy.url("/")).await.unwrap().1, "a");
    }
}

/// A request without Host (HTTP/1.0) gets each backend's own authority as its Host: a
/// retry elsewhere does not carry the first backend's.
#[tokio::test]
async fn a_retried_request_without_host_gets_the_next_backends_authority() {
    let (_a, b, proxy) = hung_beside_healthy().await;
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /headers HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
        )
        .await
        .expect("answered in time")
        .unwrap();
        let text = String::from_utf8_lossy(&answer).to_string();
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{text}"
        );
        let hosts: Vec<&str> = text.lines().filter(|l| l.starts_with("host: ")).collect();
        assert_eq!(hosts, [format!("host: {}", b.addr).as_str()], "{text}");
    }
}
