//! Observability: Prometheus metrics that parse and move with traffic, access log lines
//! (JSON, reopened on SIGUSR1), and the status page in a real headless browser.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::ProxyProcess;
use common::{client, config, get, site, Backend, TestProxy};

/// Checks the text exposition grammar line by line; returns `series -> value`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE") {
                assert!(
                    matches!(
                        words.get(2),
                        Some(&"counter" | &"gauge" | &"histogram" | &"summary" | &"untyped")
                    ),
                    "bad TYPE line: {line}"
                );
            }
            continue;
        }
        let (name_and_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = name_and_labels.find('{').unwrap_or(name_and_labels.len());
        let name = &name_and_labels[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < name_and_labels.len() {
            let labels = &name_and_labels[name_end..];
            assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels: {line}");
            for pair in labels[1..labels.len() - 1].split("\",").filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name: {line}"
                );
                assert!(value.starts_with('"'), "unquoted label value: {line}");
            }
        }
        series.insert(name_and_labels.to_string(), value);
    }
    series
}

fn sum(series: &HashMap<String, f64>, name: &str, label: &str) -> f64 {
    series
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_request_counters_move_with_traffic() {
    let (a, b) = (Backend::start("metrics-a").await, Backend::start("metrics-b").await);
    let proxy = TestProxy::start(&config(
        "",
        &[site("metrics-a", 1, 0, &[a.addr]), site("metrics-b", 0, 0, &[b.addr])],
    ))
    .await;
    let client = client();
    let before = parse_prometheus(&get(&client, &proxy.admin_url("/metrics")).await.unwrap().1);
    for _ in 0..25 {
        assert_eq!(get(&client, &proxy.url("/")).await.unwrap().0, 200);
    }
    get(&client, &proxy.url("/status/503")).await.unwrap();
    let after = parse_prometheus(&get(&client, &proxy.admin_url("/metrics")).await.unwrap().1);
    let grew =
        |label: &str| sum(&after, "splitgate_requests_total", label) - sum(&before, "splitgate_requests_total", label);
    assert_eq!(grew("site=\"metrics-a\""), 26.0);
    assert_eq!(grew("site=\"metrics-b\""), 0.0);
    let errors = |m: &HashMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("splitgate_requests_total{") && k.contains("site=\"metrics-a\""))
            .filter(|(k, _)| k.contains("class=\"5xx\""))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        errors(&after) - errors(&before),
        1.0,
        "the backend's 503 is counted as 5xx"
    );
    assert!(after
        .keys()
        .any(|k| k.starts_with("splitgate_upstream_response_seconds_bucket{") && k.contains("metrics-a")));
    assert_eq!(
        sum(&after, "splitgate_site_effective_weight", "site=\"metrics-b\""),
        0.0
    );
    assert_eq!(sum(&after, "splitgate_backend_healthy", "site=\"metrics-a\""), 1.0);
}

fn access_log_config(path: &std::path::Path, backend: std::net::SocketAddr, listen: &str, admin: &str) -> String {
    format!(
        "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n[access_log]\npath = \"{}\"\nformat = \"json\"\n{}",
        path.display(),
        site("logged", 1, 0, &[backend])
    )
}

fn read_lines(path: &std::path::Path, at_least: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines.len() >= at_least || start.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn access_log_lines_in_json_carry_site_status_and_timing() {
    let backend = Backend::start("logged").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy = TestProxy::start(&access_log_config(&path, backend.addr, "127.0.0.1:0", "127.0.0.1:0")).await;
    let client = client();
    for _ in 0..3 {
        get(&client, &proxy.url("/hello?x=1")).await.unwrap();
    }
    get(&client, &proxy.url("/status/404")).await.unwrap();
    let lines = tokio::task::spawn_blocking(move || read_lines(&path, 4)).await.unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines[..3] {
        assert_eq!(line["site"], "logged");
        assert_eq!(line["status"], 200);
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/hello?x=1");
        assert_eq!(line["backend"], backend.addr.to_string());
        assert_eq!(line["attempts"], 1);
        assert_eq!(line["bytes"], 6, "the body \"logged\"");
        assert!(line["total_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
        assert_eq!(line["client"], "127.0.0.1");
    }
    assert_eq!(lines[3]["status"], 404);
}

/// Requests the proxy refuses itself (400, 405, 413) are logged too, as NGINX logs them.
#[tokio::test]
async fn requests_refused_at_the_edge_are_logged_with_their_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start("logged").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let text = access_log_config(&path, backend.addr, "127.0.0.1:0", "127.0.0.1:0");
    let proxy = TestProxy::start(&format!("{text}[limits]\nmax_body_bytes = 10\n")).await;
    let refused: [&[u8]; 3] = [
        b"GET /two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
    ];
    for request in refused {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = [0u8; 12];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await;
    }
    let lines = tokio::task::spawn_blocking(move || read_lines(&path, 3)).await.unwrap();
    let mut seen: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap_or("").to_string(),
                l["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    // CONNECT's target is no path: its line shows "/".
    let expected = [("/big", 413), ("/two-hosts", 400), ("/", 405)];
    for (path, status) in expected {
        assert!(
            seen.iter().any(|(p, s)| p == path && *s == status),
            "a {status} for {path} in {seen:?}"
        );
    }
    assert_eq!(backend.hits(), 0, "none reached the backend");
}

/// A splitgate process in front of one backend, writing its JSON access log to
/// `access.log` in a fresh directory (kept alive with the backend by the caller).
async fn logging_process() -> (Backend, tempfile::TempDir, std::path::PathBuf, ProxyProcess) {
    let backend = Backend::start("logged").await;
    let addr = backend.addr;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log_path = path.clone();
    let proxy = ProxyProcess::start(move |l, m| access_log_config(&log_path, addr, &l.to_string(), &m.to_string()));
    (backend, dir, path, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_after_rotation() {
    let (_backend, dir, path, proxy) = logging_process().await;
    let client = client();
    let url = format!("http://{}/", proxy.addr);
    get(&client, &url).await.unwrap();
    let p = path.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || read_lines(&p, 1))
            .await
            .unwrap()
            .len(),
        1
    );
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    proxy.signal("USR1");
    // Reopened: the writer has created the file again at its path.
    let reopened = common::eventually(Duration::from_secs(10), || path.exists()).await;
    assert!(reopened.is_some(), "the access log is reopened: {}", proxy.stderr());
    for _ in 0..2 {
        get(&client, &url).await.unwrap();
    }
    let p = path.clone();
    let fresh = tokio::task::spawn_blocking(move || read_lines(&p, 2)).await.unwrap();
    assert_eq!(fresh.len(), 2, "new lines go to the reopened file");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1,
        "the rotated file is left alone"
    );
}

#[tokio::test]
async fn remote_peers_cannot_flood_the_log_through_the_http2_library() {
    // Each connection sends a PING acknowledgement nobody asked for: the h2 library
    // logs a warning per connection. 60 connections must not mean 60 log lines.
    let a = Backend::start("a").await;
    let backend = a.addr;
    let proxy = ProxyProcess::start(move |l, m| {
        format!(
            "[[listener]]\nbind = \"{l}\"\n[admin]\nbind = \"{m}\"\n[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{backend}\"]\n"
        )
    });
    use common::h2_frames::{frame, RawH2, PREFACE};
    const PING: u8 = 6;
    let mut held = Vec::new();
    for _ in 0..60 {
        // The preface and SETTINGS, then the PING ACK nobody asked for, then a PING of
        // our own: its answer says the server has read the ACK before it.
        let mut raw = RawH2::connect(proxy.addr, PREFACE).await;
        raw.send(&frame(PING, 1, 0, &[1, 2, 3, 4, 5, 6, 7, 8])).await;
        raw.send(&frame(PING, 0, 0, b"answered")).await;
        held.push(raw);
    }
    for raw in &mut held {
        // Answered, or the connection closed: either way the ACK was taken.
        raw.frames_until(Duration::from_secs(10), |f| {
            f.kind == PING && f.flags & 1 == 1 && f.payload == b"answered"
        })
        .await;
    }
    // Whatever was logged meanwhile is in stderr before a line logged after it: the
    // reopen that SIGUSR1 logs (no access log here: nothing else happens).
    proxy.signal("USR1");
    let marked = common::eventually(Duration::from_secs(10), || {
        proxy.stderr().contains("SIGUSR1: reopening the access log")
    })
    .await;
    assert!(marked.is_some(), "{}", proxy.stderr());
    drop(held);
    let log = proxy.stderr();
    let lines = log.lines().filter(|l| l.contains("PING")).count();
    assert!(lines <= 1, "{lines} log lines from remote peers:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_certificate_cannot_forge_a_log_line() {
    let pki = common::tls::Pki::new("forge");
    let forged = "legit.example\n2026-12-01T00:00:00.000000Z  WARN splitgate::forged: FORGED LOG LINE";
    let leaf = pki.leaf("hostile", &[forged]);
    let backend = Backend::start_tls("a", pki.server(&leaf, false)).await;
    let ca = pki.ca_path.display().to_string();
    let process = ProxyProcess::start(|listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n\
             [health]\ninterval = \"100ms\"\nfall = 1\n\
             [[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{}\"]\ntls = {{ ca = \"{ca}\", server_name = \"api.internal\" }}\n",
            backend.addr
        )
    });
    let start = Instant::now();
    while !process.stderr().contains("backend is down") && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = process.stderr();
    assert!(log.contains("backend is down"), "{log}");
    assert!(log.contains("FORGED LOG LINE"), "the name is logged, escaped: {log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-01T00:00:00.000000Z"),
            "a forged line: {line}"
        );
    }
}

#[tokio::test]
async fn the_last_lines_are_in_the_access_log_when_the_proxy_stops() {
    let (_backend, _dir, path, mut proxy) = logging_process().await;
    let client = client();
    let url = format!("http://{}/", proxy.addr);
    for _ in 0..20 {
        assert_eq!(get(&client, &url).await.unwrap().0, 200);
    }
    // No connection left to drain, then SIGTERM at once: the lines still queued or
    // buffered are written before it exits.
    drop(client);
    proxy.signal("TERM");
    let exited = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    let lines = std::fs::read_to_string(&path).unwrap_or_default().lines().count();
    assert_eq!(lines, 20, "every request served is in the log");
}
