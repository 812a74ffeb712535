//! Protecting the survivors (`[[site]] max_requests`, `queue`, `queue_timeout`): a
//! backend never has more than `max_requests` requests in flight, counted until the
//! response body ends; the overflow waits in the site's queue and is answered 503 with
//! `Retry-After` when the queue is full or the wait too long, never 502/504, and a retry
//! never lands on a full backend.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{admin_call, client, config, get, refused_addr, TestProxy};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

/// A backend that counts the requests it holds at once (its probes on `/health` are
/// answered at once and not counted). `/hold` answers when the test adds a permit to
/// `release`; `/stream` sends its head at once and its body only then; `/slow` answers
/// after 300 ms.
struct Counting {
    addr: SocketAddr,
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

impl Counting {
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (now, most): (Arc<AtomicUsize>, Arc<AtomicUsize>) = (Arc::default(), Arc::default());
        let release = Arc::new(Semaphore::new(0));
        let shared = (Arc::clone(&now), Arc::clone(&most), Arc::clone(&release));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (now, most, release) = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (now, most, release) = (now.clone(), most.clone(), release.clone());
                        async move { Ok::<_, Infallible>(answer(request.uri().path(), now, most, release).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Counting {
            addr,
            now,
            most,
            release,
        }
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Counts one request in while it lives; the count drops when the response body ends.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(path: &str, now: Arc<AtomicUsize>, most: Arc<AtomicUsize>, release: Arc<Semaphore>) -> Response<Body> {
    if path == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
    }
    let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
    most.fetch_max(inside, Ordering::SeqCst);
    let held = Held(now);
    match path {
        "/stream" => {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                let _held = held;
                let _ = tx.send(Bytes::from_static(b"head ")).await;
                if let Ok(permit) = release.acquire().await {
                    permit.forget();
                }
                let _ = tx.send(Bytes::from_static(b"tail")).await;
            });
            Response::new(ChannelBody(rx).boxed())
        }
        "/hold" => {
            if let Ok(permit) = release.acquire().await {
                permit.forget();
            }
            drop(held);
            Response::new(Full::new(Bytes::from_static(b"held")).boxed())
        }
        _ => {
            // pacing: a slow answer holds its slot for 300 ms.
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
            Response::new(Full::new(Bytes::from_static(b"slow")).boxed())
        }
    }
}

/// A body fed by a channel: it ends when the sender goes.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// One site `a` over `backends`, probed on `/health` rarely (the tests decide health),
/// with `limits` added to the site.
fn protected(backends: &[SocketAddr], limits: &str) -> String {
    protected_site("a", backends, limits)
}

/// The same with the site named `name`: metrics are per process, and tests that read
/// counters give their site a name of its own.
fn protected_site(name: &str, backends: &[SocketAddr], limits: &str) -> String {
    let health = "[health]\npath = \"/health\"\ninterval = \"60s\"\nfall = 3\n";
    config(health, &[common::site(name, 1, 0, backends) + limits])
}

/// GET `url`: the status, the `Retry-After` header and the body.
async fn call(client: &common::TestClient, url: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("answered in time")
        .expect("a response");
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, retry_after, String::from_utf8_lossy(&body).into_owned())
}

/// `call` on a task of its own: a request left waiting while the test goes on.
fn in_background(url: String) -> tokio::task::JoinHandle<(StatusCode, Option<String>, String)> {
    tokio::spawn(async move { call(&client(), &url).await })
}

async fn site_load(proxy: &TestProxy) -> serde_json::Value {
    let (_, status) = admin_call(http::Method::GET, proxy.admin_url("/status"), "").await;
    status["sites"][0]["load"].clone()
}

async fn metrics(proxy: &TestProxy) -> String {
    get(&client(), &proxy.admin_url("/metrics")).await.expect("metrics").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_at_once_meet_four_in_flight_eight_waiting_and_a_503_with_retry_after_for_the_rest() {
    let backend = Counting::start().await;
    let limits = "max_requests = 4\nqueue = 8\nqueue_timeout = \"60s\"\n";
    let proxy = TestProxy::start(&protected_site("survivor", &[backend.addr], limits)).await;
    let url = proxy.url("/hold");
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { call(&client(), &url).await })
        })
        .collect();
    // The 28 that found no room are answered at once, before any slot comes free.
    let answered = common::eventually(Duration::from_secs(20), || {
        calls.iter().filter(|c| c.is_finished()).count() >= 28
    })
    .await;
    assert!(
        answered.is_some(),
        "the overflow is answered without waiting for the backend"
    );
    let load = site_load(&proxy).await;
    assert_eq!(load["in_flight"], 4, "{load}");
    assert_eq!(load["queued"], 8, "{load}");
    assert_eq!(load["rejected"]["full"], 28, "{load}");
    let text = metrics(&proxy).await;
    let backend_line = format!(
        "splitgate_backend_requests_in_flight{{site=\"survivor\",backend=\"{}\"}} 4",
        backend.addr
    );
    for line in [
        backend_line.as_str(),
        "splitgate_queue_length{site=\"survivor\"} 8",
        "splitgate_queue_rejected_total{site=\"survivor\",reason=\"full\"} 28",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from /metrics");
    }
    backend.release.add_permits(40);
    let (mut served, mut refused) = (0, 0);
    for answer in calls {
        let (status, retry_after, body) = answer.await.unwrap();
        match status {
            StatusCode::OK => served += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(retry_after.as_deref(), Some("1"), "a 503 says when to come back");
                assert!(body.contains("busy"), "{body}");
                refused += 1;
            }
            other => panic!("only 200 or 503, got {other}: {body}"),
        }
    }
    assert_eq!((served, refused), (12, 28));
    assert_eq!(backend.most(), 4, "the backend never held more than max_requests");
    // Each slot is given up as its body ends, which the client may see first.
    let mut load = site_load(&proxy).await;
    for _ in 0..500 {
        if (load["in_flight"].as_u64(), load["queued"].as_u64()) == (Some(0), Some(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        load = site_load(&proxy).await;
    }
    assert_eq!(
        (load["in_flight"].as_u64(), load["queued"].as_u64()),
        (Some(0), Some(0)),
        "{load}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_past_queue_timeout_gets_503_and_counts_as_a_timeout() {
    let backend = Counting::start().await;
    let limits = "max_requests = 1\nqueue = 4\nqueue_timeout = \"300ms\"\n";
    let proxy = TestProxy::start(&protected_site("patient", &[backend.addr], limits)).await;
    let first = in_background(proxy.url("/hold"));
    assert!(
        common::eventually(Duration::from_secs(20), || backend.now.load(Ordering::SeqCst) == 1)
            .await
            .is_some()
    );
    let started = std::time::Instant::now();
    let (status, retry_after, _) = call(&client(), &proxy.url("/slow")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it waited its queue_timeout first"
    );
    assert_eq!(site_load(&proxy).await["rejected"]["timeout"], 1);
    assert!(metrics(&proxy)
        .await
        .contains("splitgate_queue_rejected_total{site=\"patient\",reason=\"timeout\"} 1"));
    backend.release.add_permits(1);
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    assert_eq!(backend.most(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_is_served_when_a_slot_comes_free() {
    let backend = Counting::start().await;
    let limits = "max_requests = 1\nqueue = 4\nqueue_timeout = \"30s\"\n";
    let proxy = TestProxy::start(&protected(&[backend.addr], limits)).await;
    let first = in_background(proxy.url("/hold"));
    assert!(
        common::eventually(Duration::from_secs(20), || backend.now.load(Ordering::SeqCst) == 1)
            .await
            .is_some()
    );
    let second = in_background(proxy.url("/slow"));
    let proxy_ref = &proxy;
    let waiting = common::eventually_async(Duration::from_secs(10), move || async move {
        site_load(proxy_ref).await["queued"] == 1
    })
    .await;
    assert!(waiting.is_some(), "the second request waits in the queue");
    backend.release.add_permits(1);
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    let (status, _, body) = second.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow"));
    assert_eq!(backend.most(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_held_until_the_response_body_ends() {
    let backend = Counting::start().await;
    let proxy = TestProxy::start(&protected(&[backend.addr], "max_requests = 1\n")).await;
    let request = Request::get(proxy.url("/stream"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let streaming = client().request(request).await.expect("the head arrives");
    assert_eq!(streaming.status(), StatusCode::OK);
    // The head has come back, the body has not ended: the backend is still busy.
    let (status, retry_after, _) = call(&client(), &proxy.url("/slow")).await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
    );
    backend.release.add_permits(1);
    let body = streaming.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"head tail");
    let freed = common::eventually(Duration::from_secs(20), || backend.now.load(Ordering::SeqCst) == 0).await;
    assert!(freed.is_some());
    let mut served = false;
    for _ in 0..100 {
        if call(&client(), &proxy.url("/slow")).await.0 == StatusCode::OK {
            served = true;
            break;
        }
    }
    assert!(served, "the slot came free with the end of the body");
    assert_eq!(backend.most(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backend_is_passed_over_for_one_of_the_same_site_with_room() {
    let (one, two) = (Counting::start().await, Counting::start().await);
    let proxy = TestProxy::start(&protected(&[one.addr, two.addr], "max_requests = 1\n")).await;
    let held = in_background(proxy.url("/hold"));
    let busy = || one.now.load(Ordering::SeqCst) + two.now.load(Ordering::SeqCst) == 1;
    assert!(common::eventually(Duration::from_secs(20), busy).await.is_some());
    for _ in 0..6 {
        let (status, _, body) = call(&client(), &proxy.url("/slow")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "slow"),
            "the backend with room serves"
        );
    }
    assert_eq!((one.most(), two.most()), (1, 1));
    one.release.add_permits(1);
    two.release.add_permits(1);
    assert_eq!(held.await.unwrap().0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_never_moves_a_request_onto_a_full_backend() {
    let backend = Counting::start().await;
    // The table starts at the first backend: the held request lands on the live one;
    // the next goes to the dead one, fails to connect, and its retry finds the live
    // one full.
    let proxy = TestProxy::start(&protected(&[backend.addr, refused_addr()], "max_requests = 1\n")).await;
    let held = in_background(proxy.url("/hold"));
    assert!(
        common::eventually(Duration::from_secs(20), || backend.now.load(Ordering::SeqCst) == 1)
            .await
            .is_some()
    );
    let (status, retry_after, _) = call(&client(), &proxy.url("/slow")).await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
    );
    assert_eq!(backend.most(), 1, "the full backend got no second request");
    backend.release.add_permits(1);
    assert_eq!(held.await.unwrap().0, StatusCode::OK);
}

#[test]
fn a_queue_without_max_requests_is_refused_by_check() {
    let text = protected(&[refused_addr()], "queue = 8\n");
    let Err(error) = splitgate::config::parse(std::path::Path::new("t.toml"), &text) else {
        panic!("a queue without max_requests is accepted");
    };
    let message = error.to_string();
    assert!(
        message.contains("site[0].queue") && message.contains("max_requests"),
        "{message}"
    );
}
