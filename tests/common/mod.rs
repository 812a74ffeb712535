//! Test helpers: real HTTP backends on 127.0.0.1:0 that say who they are, a proxy
//! started in-process or as the real binary, and small client helpers.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod dns;
pub mod etcd;
pub mod h2_frames;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use splitgate::server::Server;

pub use backend::{black_hole, refused_addr, Backend};

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled keep-alive HTTP/1.1 client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET `url`; returns status and body text, or the error as text.
pub async fn get(client: &TestClient, url: &str) -> Result<(StatusCode, String), String> {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| "client timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An admin call: `method url` with a JSON `body`; the status and the JSON answer.
pub async fn admin_call(method: http::Method, url: String, body: &'static str) -> (u16, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("admin request");
    let response = client().request(request).await.expect("admin answers");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("admin body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// A `[[site]]` block.
pub fn site(name: &str, weight: u32, priority: u32, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[site]]\nname = \"{name}\"\nweight = {weight}\npriority = {priority}\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// A whole config: one listener on port 0, an admin API on port 0, `extra` sections, sites.
pub fn config(extra: &str, sites: &[String]) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n{extra}\n{}",
        sites.join("\n")
    )
}

/// The proxy running in this process.
pub struct TestProxy {
    pub server: Arc<Server>,
    pub addr: SocketAddr,
}

impl TestProxy {
    pub async fn start(config_text: &str) -> TestProxy {
        let config = splitgate::config::parse(Path::new("test.toml"), config_text).expect("test config is valid");
        let server = Server::start(config, None).await.expect("proxy starts");
        let addr = server.proxy_addrs().await[0];
        TestProxy { server, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.admin_addr().expect("admin configured"), path)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.server.stop_probing();
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns the time taken.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Like `eventually`, for a condition that has to be awaited (an admin call, /metrics).
pub async fn eventually_async<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Waits (10 s at most, then panics) until each of `backends` has served `n` requests
/// more than when called: load is flowing through every one of them. A window counted
/// in requests served, rather than in wall time.
pub async fn served_more(backends: &[&Backend], n: u64) {
    let from: Vec<u64> = backends.iter().map(|b| b.hits()).collect();
    let done = eventually(Duration::from_secs(10), || {
        backends.iter().zip(&from).all(|(b, &f)| b.hits() >= f + n)
    })
    .await;
    let now: Vec<(&str, u64)> = backends.iter().map(|b| (b.name.as_str(), b.hits())).collect();
    assert!(done.is_some(), "not {n} more requests each: {now:?} from {from:?}");
}

/// Requests in flight to site `name` (its `load.in_flight` in `/status`).
pub async fn site_in_flight(admin_status_url: String, name: &str) -> Option<u64> {
    let (_, status) = admin_call(http::Method::GET, admin_status_url, "").await;
    status["sites"].as_array()?.iter().find(|s| s["name"] == name)?["load"]["in_flight"].as_u64()
}

/// Waits (5 s at most) until site `name` has no request in flight: what it was
/// serving when traffic moved off it has ended. `None` if it never empties.
pub async fn site_drained(proxy: &TestProxy, name: &str) -> Option<Duration> {
    let url = proxy.admin_url("/status");
    eventually_async(Duration::from_secs(5), || {
        let url = url.clone();
        async move { site_in_flight(url, name).await == Some(0) }
    })
    .await
}

/// FNV-1a over a byte stream, to compare what was sent with what arrived.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The deterministic test payload: byte `i` of any stream of length n.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// FNV of the first `n` bytes of the pattern.
pub fn pattern_fnv(n: u64) -> u64 {
    let mut fnv = Fnv::default();
    let mut offset = 0;
    while offset < n {
        let len = (n - offset).min(1 << 20) as usize;
        fnv.update(&pattern(offset, len));
        offset += len as u64;
    }
    fnv.0
}

/// What a load run saw.
#[derive(Default, Debug)]
pub struct Tally {
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub max_latency: Duration,
}

/// `clients` tasks sending GET `url` in a loop over keep-alive connections until stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    pub fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = client();
                    let mut tally = Tally::default();
                    // Bounded: stops when asked, or after 10 minutes at the latest.
                    let deadline = std::time::Instant::now() + Duration::from_secs(600);
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < deadline {
                        let started = std::time::Instant::now();
                        match get(&client, &url).await {
                            Ok((status, _)) if status == 200 => tally.ok += 1,
                            Ok((status, body)) => {
                                tally.errors += 1;
                                tally.error_samples.push(format!("{status} {body}"));
                            }
                            Err(e) => {
                                tally.errors += 1;
                                tally.error_samples.push(e);
                            }
                        }
                        tally.max_latency = tally.max_latency.max(started.elapsed());
                    }
                    tally
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = Tally::default();
        for task in self.tasks {
            let t = task.await.expect("load task");
            total.ok += t.ok;
            total.errors += t.errors;
            total.error_samples.extend(t.error_samples.into_iter().take(5));
            total.max_latency = total.max_latency.max(t.max_latency);
        }
        total
    }
}

/// A response body read to the end, as text.
pub async fn text<B>(body: B) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.expect("the body arrives").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2_client() -> Client<HttpConnector, http_body_util::Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}
