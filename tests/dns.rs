//! Backends behind DNS names: each address a name resolves to is a backend of its own,
//! names are resolved again every `[dns] refresh` by the control plane, an address gone
//! from DNS gets no more requests, and a name server outage changes nothing.
//! The name server is a real one on loopback (`common::dns`) whose answers tests change.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dns::DnsServer;
use common::{admin_call, client, config, eventually, get, Backend, TestProxy};

const REFRESH: Duration = Duration::from_millis(500);

/// A proxy with one site, `app`, whose backend is `name:port`, asking `dns` every `REFRESH`.
async fn proxy(dns: &DnsServer, backend: &str) -> TestProxy {
    let extra = format!(
        "[dns]\nrefresh = \"{}ms\"\nservers = [\"{}\"]\n[health]\ninterval = \"200ms\"\n",
        REFRESH.as_millis(),
        dns.addr
    );
    let site = format!("[[site]]\nname = \"app\"\nweight = 1\nbackends = [\"{backend}\"]\n");
    TestProxy::start(&config(&extra, &[site])).await
}

/// Two backends on one port: 127.0.0.1:P and 127.0.0.2:P (a name gives its port to all
/// its addresses).
async fn two_backends() -> (Backend, Backend) {
    let a = Backend::start("a").await;
    let b = Backend::start_on("b", SocketAddr::new([127, 0, 0, 2].into(), a.addr.port())).await;
    (a, b)
}

/// The addresses site `app` has backends at now.
fn backend_addrs(proxy: &TestProxy) -> Vec<String> {
    let mut addrs = proxy.server.sites()[0].backends.clone();
    addrs.sort();
    addrs
}

fn site_healthy(proxy: &TestProxy) -> bool {
    proxy.server.sites()[0].healthy
}

async fn metric(proxy: &TestProxy, line_start: &str) -> Option<f64> {
    let (_, body) = get(&client(), &proxy.admin_url("/metrics")).await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_two_addresses_is_two_backends_and_both_get_requests() {
    let dns = DnsServer::start().await;
    dns.set("app.test", &["127.0.0.1", "127.0.0.2"]);
    let (a, b) = two_backends().await;
    let name = format!("app.test:{}", a.addr.port());
    let proxy = proxy(&dns, &name).await;

    assert_eq!(
        backend_addrs(&proxy),
        [a.addr.to_string(), b.addr.to_string()],
        "resolved at start"
    );
    let (status, json) = admin_call(http::Method::GET, proxy.admin_url("/status"), "").await;
    assert_eq!(status, 200);
    let shown = &json["sites"][0]["backends"];
    assert_eq!(shown.as_array().map(Vec::len), Some(2), "{json}");
    for backend in shown.as_array().unwrap() {
        assert_eq!(
            backend["name"],
            name.as_str(),
            "/status names each address's name: {json}"
        );
    }

    let client = client();
    for _ in 0..20 {
        let (status, _) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!(status, 200);
    }
    assert!(a.hits() > 0 && b.hits() > 0, "a {} b {}", a.hits(), b.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gone_from_dns_is_removed_within_refresh_and_a_second_and_gets_no_request() {
    let dns = DnsServer::start().await;
    dns.set("app.test", &["127.0.0.1", "127.0.0.2"]);
    let (a, b) = two_backends().await;
    let proxy = proxy(&dns, &format!("app.test:{}", a.addr.port())).await;
    assert_eq!(backend_addrs(&proxy).len(), 2);

    dns.set("app.test", &["127.0.0.1"]);
    let gone = eventually(Duration::from_secs(10), || {
        backend_addrs(&proxy) == [a.addr.to_string()]
    })
    .await;
    println!("127.0.0.2 removed after {gone:?}");
    assert!(
        gone.expect("the address gone from DNS is removed") <= REFRESH + Duration::from_secs(1),
        "{gone:?}"
    );

    let before = b.hits();
    let client = client();
    for _ in 0..30 {
        let (status, body) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    }
    assert_eq!(b.hits(), before, "no request reaches the removed address");
    assert!(site_healthy(&proxy));

    dns.set("app.test", &["127.0.0.1", "127.0.0.2"]);
    let back = eventually(Duration::from_secs(10), || backend_addrs(&proxy).len() == 2).await;
    assert!(back.is_some(), "an address that comes back is a backend again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_name_server_down_traffic_goes_on_and_the_failures_are_counted() {
    let dns = DnsServer::start().await;
    dns.set("app.test", &["127.0.0.1", "127.0.0.2"]);
    let (a, b) = two_backends().await;
    let proxy = proxy(&dns, &format!("app.test:{}", a.addr.port())).await;
    assert_eq!(
        metric(&proxy, "splitgate_dns_failures_total{name=\"app.test\"}").await,
        Some(0.0)
    );

    dns.stop();
    let start = Instant::now();
    let mut failures = None;
    while start.elapsed() < Duration::from_secs(20) && failures.is_none_or(|f| f < 1.0) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failures = metric(&proxy, "splitgate_dns_failures_total{name=\"app.test\"}").await;
    }
    assert!(failures >= Some(1.0), "failed lookups are counted: {failures:?}");

    assert_eq!(backend_addrs(&proxy).len(), 2, "the last good addresses are kept");
    let (hits_a, hits_b) = (a.hits(), b.hits());
    let client = client();
    for _ in 0..20 {
        let (status, _) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!(status, 200);
    }
    assert!(a.hits() > hits_a && b.hits() > hits_b, "both addresses still serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_leaves_its_site_down_until_it_does() {
    let dns = DnsServer::start().await;
    let a = Backend::start("a").await;
    let proxy = proxy(&dns, &format!("late.test:{}", a.addr.port())).await;
    assert!(backend_addrs(&proxy).is_empty());
    assert!(!site_healthy(&proxy), "no backend: the site is down");
    let (status, _) = get(&client(), &proxy.url("/")).await.unwrap();
    assert!(status.is_server_error(), "{status}");

    dns.set("late.test", &["127.0.0.1"]);
    let up = eventually(Duration::from_secs(10), || site_healthy(&proxy)).await;
    assert!(up.is_some(), "the site comes up when its name resolves");
    let (status, body) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_name_resolves_it_before_the_new_config_serves() {
    let dns = DnsServer::start().await;
    let (a, b) = two_backends().await;
    dns.set("app.test", &["127.0.0.2"]);
    let proxy = proxy(&dns, &a.addr.to_string()).await;
    let text = format!(
        "[dns]\nrefresh = \"1h\"\nservers = [\"{}\"]\n[[site]]\nname = \"app\"\nweight = 1\nbackends = [\"app.test:{}\"]\n",
        dns.addr,
        b.addr.port()
    );
    let config = splitgate::config::parse(std::path::Path::new("test.toml"), &common::config("", &[text])).unwrap();
    proxy.server.apply(config).await.expect("the reload applies");
    assert_eq!(
        backend_addrs(&proxy),
        [b.addr.to_string()],
        "resolved before the swap, not an hour later"
    );
    let (status, body) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_a_name_that_does_not_resolve_but_accepts_the_config() {
    let dns = DnsServer::start().await;
    dns.set("known.test", &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.toml");
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[dns]\nservers = [\"{}\"]\n\
         [[site]]\nname = \"app\"\nweight = 1\nbackends = [\"known.test:80\", \"nowhere.test:80\"]\n",
        dns.addr
    );
    std::fs::write(&path, text).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::process::BINARY)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "ok");
    assert!(
        stderr.contains("warning:") && stderr.contains("site[0].backends[1]") && stderr.contains("nowhere.test:80"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backends[0]"),
        "a name that resolves is no warning: {stderr}"
    );
}

/// The certificate names `app.test` only: a handshake that sent or checked the address
/// would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_behind_a_name_is_verified_against_the_name_not_its_address() {
    let pki = common::tls::Pki::new("dns");
    let leaf = pki.leaf("backend", &["app.test"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, false)).await;
    let dns = DnsServer::start().await;
    dns.set("app.test", &["127.0.0.1"]);
    let extra = format!(
        "[dns]\nservers = [\"{}\"]\n[health]\ninterval = \"200ms\"\nfall = 1\n",
        dns.addr
    );
    let site = format!(
        "[[site]]\nname = \"app\"\nweight = 1\nbackends = [\"app.test:{}\"]\ntls = {{ ca = \"{}\" }}\n",
        backend.addr.port(),
        pki.ca_path.display()
    );
    let proxy = TestProxy::start(&config(&extra, &[site])).await;
    let client = client();
    for _ in 0..3 {
        let (status, body) = get(&client, &proxy.url("/")).await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "remote"));
    }
    assert!(site_healthy(&proxy));
}
