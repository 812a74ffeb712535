//! The status page in a real browser: headless Chromium, driven through chromedriver
//! (WebDriver), watches a running proxy; when a site dies, the page must show it down
//! within a few seconds. A screenshot is saved to target/test-artifacts/.
//! Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run); without them
//! the test says so and passes only outside CI.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::process::free_port;
use common::{config, site, Backend, TestClient, TestProxy};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Driver {
    child: Child,
    base: String,
    client: TestClient,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: common::client(),
        };
        let start = Instant::now();
        while driver
            .call(Method::GET, "/status", None)
            .await
            .get("value")
            .and_then(|v| v.get("ready"))
            != Some(&json!(true))
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let Ok(response) = self.client.request(request).await else {
            return Value::Null;
        };
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    async fn new_session(&self, profile: &std::path::Path) -> String {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let answer = self.call(Method::POST, "/session", Some(capabilities)).await;
        answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string()
    }
}

async fn site_state(driver: &Driver, session: &str, site: &str) -> Option<String> {
    let code = format!("var e = document.getElementById('site-{site}'); return e ? e.dataset.state : null;");
    script(driver, session, &code).await.as_str().map(str::to_string)
}

async fn script(driver: &Driver, session: &str, script: &str) -> Value {
    let answer = driver
        .call(
            Method::POST,
            &format!("/session/{session}/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await;
    answer["value"].clone()
}

async fn wait_state(driver: &Driver, session: &str, site: &str, want: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if site_state(driver, session, site).await.as_deref() == Some(want) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_killed_site_as_down_within_seconds() {
    if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run)"
        );
        eprintln!("skipped: chromium/chromedriver not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let (east, west) = (Backend::start("east").await, Backend::start("west").await);
    // The drill button takes out the last serving site (west is killed): no guard rail.
    let health = "[health]\ninterval = \"300ms\"\ntimeout = \"200ms\"\nfall = 2\n[safety]\nmin_serving_sites = 0\n";
    let proxy = TestProxy::start(&config(
        health,
        &[
            site("east", 60, 0, &[east.addr]),
            site("west", 40, 0, &[west.addr]) + "failback = { mode = \"manual\" }\n",
        ],
    ))
    .await;
    let admin: SocketAddr = proxy.server.admin_addr().unwrap();

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.new_session(profile.path()).await;
    driver
        .call(
            Method::POST,
            &format!("/session/{session}/url"),
            Some(json!({"url": format!("http://{admin}/")})),
        )
        .await;
    assert!(
        wait_state(&driver, &session, "west", "up", Duration::from_secs(10))
            .await
            .is_some(),
        "the page shows west up"
    );
    assert_eq!(site_state(&driver, &session, "east").await.as_deref(), Some("up"));

    let west_addr = west.addr;
    west.kill();
    let shown = wait_state(&driver, &session, "west", "down", Duration::from_secs(10)).await;
    println!("status page showed west down {shown:?} after it was killed");
    assert!(shown.is_some(), "the page must show the killed site as down");
    assert_eq!(site_state(&driver, &session, "east").await.as_deref(), Some("up"));

    // The timeline lists the failover event; the chart draws each site's requests/s.
    let mut listed = false;
    for _ in 0..50 {
        let found = script(
            &driver,
            &session,
            "return !!document.querySelector('#events li[data-kind=\"site_down\"][data-site=\"west\"]');",
        )
        .await;
        if found == json!(true) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the timeline shows west's site_down");
    let lines = script(
        &driver,
        &session,
        "return document.querySelectorAll('#chart polyline').length;",
    )
    .await;
    assert!(
        lines.as_u64().unwrap_or(0) >= 1,
        "the chart has a line per site: {lines}"
    );
    // Its axes: clock times along the bottom (15 minutes, a label every 3), requests/s up the side.
    let axes = script(
        &driver,
        &session,
        "return [document.querySelectorAll('#chart .axis-x text').length, \
         document.querySelectorAll('#chart .axis-y text').length, \
         (document.querySelector('#chart .axis-y .title') || {}).textContent];",
    )
    .await;
    assert!(axes[0].as_u64().unwrap_or(0) >= 4, "time labels: {axes}");
    assert!(axes[1].as_u64().unwrap_or(0) >= 5, "requests/s labels: {axes}");
    assert_eq!(axes[2], json!("requests/s"), "{axes}");

    // The drill button takes east out as a failure would, and the page shows it.
    script(
        &driver,
        &session,
        "window.confirm = () => true; window.prompt = () => ''; document.querySelector('#site-east .drill-button').click(); return true;",
    )
    .await;
    let drilled = wait_state(&driver, &session, "east", "drill", Duration::from_secs(10)).await;
    assert!(drilled.is_some(), "the page shows east in a drill");
    assert!(proxy.server.sites().iter().any(|s| s.name == "east" && s.drilled));

    // West comes back, held by its manual failback; the page's button releases it.
    let _west = Backend::start_on("west", west_addr).await;
    let held = wait_state(&driver, &session, "west", "held", Duration::from_secs(15)).await;
    assert!(held.is_some(), "the page shows west held for failback");
    script(
        &driver,
        &session,
        "window.confirm = () => true; document.querySelector('#site-west .failback-button').click(); return true;",
    )
    .await;
    let back = wait_state(&driver, &session, "west", "up", Duration::from_secs(10)).await;
    assert!(back.is_some(), "the fail back button sent west its traffic again");
    assert!(proxy.server.held_sites().is_empty());

    // Opened again, the page draws what the proxy kept (a sample every 5 s), not only
    // what it saw itself.
    let rates = proxy.admin_url("/status/rates");
    let mut kept = false;
    for _ in 0..150 {
        let (_, doc) = common::admin_call(Method::GET, rates.clone(), "").await;
        if doc["samples"].as_array().is_some_and(|s| !s.is_empty()) {
            kept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kept, "the proxy keeps rate samples");
    driver
        .call(
            Method::POST,
            &format!("/session/{session}/url"),
            Some(json!({"url": format!("http://{admin}/")})),
        )
        .await;
    let mut drawn = Value::Null;
    for _ in 0..50 {
        drawn = script(
            &driver,
            &session,
            "var l = document.querySelector('#chart polyline[data-site=\"east\"]'); return l ? l.getAttribute('points') : null;",
        )
        .await;
        if drawn.as_str().is_some_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        drawn.as_str().is_some_and(|p| !p.is_empty()),
        "the reopened page draws the kept samples: {drawn}"
    );

    let shot = driver
        .call(Method::GET, &format!("/session/{session}/screenshot"), None)
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["value"].as_str().unwrap_or_default())
        .expect("a base64 screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status-page.png"), png).unwrap();
    driver.call(Method::DELETE, &format!("/session/{session}"), None).await;
}
