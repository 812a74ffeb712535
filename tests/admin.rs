//! The admin API without a token: allowed from loopback, but never for a browser page
//! of another origin or a rebound DNS name.

mod common;

use bytes::Bytes;
use common::{client, config, site, Backend, TestProxy};
use http::{Method, Request};
use http_body_util::Full;

async fn put_weight(proxy: &TestProxy, headers: &[(&str, &str)]) -> u16 {
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(proxy.admin_url("/sites/a/weight"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(br#"{"weight": 5}"#)))
        .unwrap();
    client().request(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn without_a_token_only_local_same_origin_callers_may_change_weights() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let admin = proxy.server.admin_addr().unwrap().to_string();
    assert_eq!(put_weight(&proxy, &[]).await, 200, "curl on the same machine");
    assert_eq!(
        put_weight(&proxy, &[("origin", &format!("http://{admin}"))]).await,
        200,
        "the status page itself"
    );
    assert_eq!(
        put_weight(&proxy, &[("origin", "http://attacker.example")]).await,
        403,
        "another site's page"
    );
    assert_eq!(
        put_weight(&proxy, &[("host", "attacker.example:80")]).await,
        403,
        "a DNS-rebound name"
    );
    assert_eq!(proxy.server.sites()[0].weight(), 5);
}

#[tokio::test]
async fn reload_without_a_config_file_is_a_clear_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let request = Request::post(proxy.admin_url("/reload"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 400);
}

async fn put_weights(proxy: &TestProxy, body: &'static str) -> (u16, String) {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(proxy.admin_url("/weights"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, common::text(response.into_body()).await)
}

#[tokio::test]
async fn several_weights_change_in_one_step_or_not_at_all() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config("", &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])])).await;
    let generation = proxy.server.generation();
    let weights = |proxy: &TestProxy| {
        let sites = proxy.server.sites();
        (sites[0].weight(), sites[1].weight())
    };

    let (status, body) = put_weights(&proxy, r#"{"a": 90, "b": 10}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(weights(&proxy), (90, 10));
    assert_eq!(proxy.server.generation(), generation, "an override is not a new config");
    let client = client();
    let mut to_a = 0;
    for _ in 0..100 {
        let (_, text) = common::get(&client, &proxy.url("/")).await.unwrap();
        to_a += usize::from(text.contains('a'));
    }
    assert_eq!(to_a, 90, "the split follows the new weights exactly");

    for bad in [
        r#"{"a": 10, "nowhere": 90}"#,
        r#"{"a": 10, "b": -1}"#,
        r#"{"a": "ten"}"#,
        "[1]",
        "{}",
    ] {
        let (status, body) = put_weights(&proxy, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(weights(&proxy), (90, 10), "{bad} changed something");
    }
}

/// A wrong method says which ones the endpoint takes (RFC 9110 15.5.6), and HEAD reads
/// like GET without the body, for monitors that probe with HEAD.
#[tokio::test]
async fn a_wrong_method_names_the_allowed_ones_and_head_reads_like_get() {
    use http_body_util::BodyExt;
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    for (method, path, allow) in [
        (Method::POST, "/status", "GET, HEAD"),
        (Method::GET, "/reload", "POST"),
        (Method::GET, "/weights", "PUT"),
        (Method::GET, "/sites/a/weight", "PUT, DELETE"),
        (Method::GET, "/sites/a/drill", "POST, DELETE"),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(proxy.admin_url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(proxy.admin_url("/status"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "no body for HEAD");
}

/// `method path` with raw `headers` on a fresh connection; the status and the headers.
async fn raw(proxy: &TestProxy, method: &str, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.server.admin_addr().unwrap())
        .await
        .unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

#[tokio::test]
async fn the_page_and_every_answer_forbid_framing_and_sniffing() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let (status, page) = raw(&proxy, "GET", "/", "Host: 127.0.0.1\r\n").await;
    assert_eq!(status, 200);
    let page = page.to_ascii_lowercase();
    assert!(page.contains("x-frame-options: deny"), "{page}");
    assert!(page.contains("x-content-type-options: nosniff"));
    let policy = page
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .unwrap();
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert!(
        policy.contains("script-src 'sha256-"),
        "only the page's own script runs: {policy}"
    );
    for path in ["/status", "/metrics", "/events", "/nowhere"] {
        let (_, answer) = raw(&proxy, "GET", path, "Host: 127.0.0.1\r\n").await;
        let answer = answer.to_ascii_lowercase();
        assert!(
            answer.contains("x-frame-options: deny") && answer.contains("nosniff"),
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn without_a_token_reads_need_a_local_host_too() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    for path in ["/", "/status", "/metrics", "/events"] {
        assert_eq!(
            raw(&proxy, "GET", path, "Host: localhost:9901\r\n").await.0,
            200,
            "{path}"
        );
        assert_eq!(
            raw(&proxy, "GET", path, "Host: rebound.attacker.example:9901\r\n")
                .await
                .0,
            403,
            "a DNS-rebinding page reads nothing: {path}"
        );
    }
}

#[tokio::test]
async fn a_site_named_twice_is_refused_by_put_weights_as_by_put_weight() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr]), site("b", 1, 0, &[b.addr])])).await;
    let (status, body) = put_weights(&proxy, r#"{"a": 7, "b": 1, "a": 0}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("named twice"), "{body}");
    assert!(
        proxy.server.sites().iter().all(|s| s.weight_override.is_none()),
        "nothing changed"
    );
}

#[tokio::test]
async fn silent_admin_connections_are_capped_and_a_trickled_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("max_connections = 4", &[site("a", 1, 0, &[a.addr])])).await;
    let admin = proxy.server.admin_addr().unwrap();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    // Accepted and answered at once, never held: the fifth finds the admin API full.
    let (status, _) = raw(&proxy, "GET", "/status", "Host: 127.0.0.1\r\n").await;
    assert_eq!(status, 503);
    let (code, body) = common::get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!((code.as_u16(), body.as_str()), (200, "a"), "traffic is not disturbed");
    drop(silent.pop());
    let mut freed = 0;
    for _ in 0..100 {
        freed = raw(&proxy, "GET", "/status", "Host: 127.0.0.1\r\n").await.0;
        if freed == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(freed, 200, "a closed connection makes room");

    // A body that trickles is cut at the request deadline.
    drop(silent);
    let mut slow = tokio::net::TcpStream::connect(admin).await.unwrap();
    let head = "PUT /sites/a/weight HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 13\r\n\r\n{\"wei";
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    assert!(proxy.server.sites()[0].weight_override.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_open_file_limit_floods_never_make_probes_fail_or_a_backend_down() {
    let a = Backend::start("a").await;
    let text = |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n\
             [health]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\n{}",
            site("a", 1, 0, &[a.addr])
        )
    };
    let process = common::process::ProxyProcess::start_limited(Some(400), text);
    // 300 silent clients and 300 silent admin connections: more than the limit allows.
    let mut flood = Vec::new();
    for target in [process.addr, process.admin] {
        for _ in 0..300 {
            if let Ok(stream) = tokio::net::TcpStream::connect(target).await {
                flood.push(stream);
            }
        }
    }
    // Twenty probes answered by the backend with the flood held open (a probe that
    // could not get a socket would not reach it).
    let probed = a.probes();
    let reached = common::eventually(std::time::Duration::from_secs(10), || a.probes() >= probed + 20).await;
    drop(flood);
    assert!(
        reached.is_some(),
        "probes reach the backend under the flood: {}",
        a.probes() - probed
    );
    let mut status = serde_json::Value::Null;
    for _ in 0..200 {
        if let Ok((code, body)) = common::get(&client(), &format!("http://{}/status", process.admin)).await {
            if code == 200 {
                status = serde_json::from_str(&body).unwrap();
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["sites"][0]["healthy"], true, "{status}");
    let (_, events) = common::get(&client(), &format!("http://{}/events", process.admin))
        .await
        .unwrap();
    assert!(!events.contains("site_down"), "no outage was recorded: {events}");
    assert!(
        !process.stderr().contains("backend is down"),
        "no backend was marked down: {}",
        process.stderr()
    );
}
