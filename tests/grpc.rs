//! HTTP/2 with prior knowledge (h2c) to plain backends, as gRPC services need: the
//! backend is spoken to over HTTP/2, health probes too; a gRPC-framed call through the
//! proxy gets its messages and its trailers (`grpc-status`, `grpc-message`), and a gRPC
//! error, trailers-only, stays the backend's answer, never a 502.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use common::{config, TestProxy};

/// Frames sent one after another: data, then trailers.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A gRPC-shaped h2c server: `/echo.Echo/Say` answers the request's message back with
/// `grpc-status: 0` trailers; `/echo.Echo/Fail` answers trailers-only `grpc-status: 5`.
/// Probes (`/healthz`) get 200. Counts the requests that came over HTTP/2.
async fn grpc_backend() -> SocketAddr {
    grpc_backend_serving(Arc::new(AtomicBool::new(true))).await
}

/// As `grpc_backend`; its gRPC health service answers SERVING while `serving` holds.
async fn grpc_backend_serving(serving: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let serving = serving.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let serving = serving.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let version = format!("{:?}", request.version());
                        let message = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut frames = VecDeque::new();
                        let mut response = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("x-seen-version", version);
                        if path == "/grpc.health.v1.Health/Check" {
                            // HealthCheckResponse { status: SERVING (1) | NOT_SERVING (2) }.
                            let status = if serving.load(Ordering::SeqCst) { 1 } else { 2 };
                            frames.push_back(Frame::data(grpc_message(&[0x08, status])));
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", HeaderValue::from_static("0"));
                            frames.push_back(Frame::trailers(trailers));
                        } else if path == "/echo.Echo/Fail" {
                            // Trailers-only: the status is in the head, and the stream ends there.
                            response = response
                                .header("grpc-status", "5")
                                .header("grpc-message", "no such thing");
                        } else {
                            frames.push_back(Frame::data(message));
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", HeaderValue::from_static("0"));
                            trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                            frames.push_back(Frame::trailers(trailers));
                        }
                        Ok::<_, Infallible>(response.body(Frames(frames)).unwrap())
                    }
                });
                // Only HTTP/2 prior knowledge: an HTTP/1.1 client is refused here.
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gRPC message: the 5-byte prefix (not compressed, length) and the bytes.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(payload);
    Bytes::from(framed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_through_an_h2c_site_keeps_its_messages_and_trailers() {
    let backend = grpc_backend().await;
    let site = format!("[[site]]\nname = \"grpc\"\nweight = 1\nprotocol = \"h2c\"\nbackends = [\"{backend}\"]\n");
    let proxy = TestProxy::start(&config("[health]\ninterval = \"100ms\"\n", &[site])).await;
    // The prober speaks HTTP/2 too: the site stays healthy.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        proxy.server.control().current().sites[0].healthy,
        "probes over h2c pass"
    );

    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let call = |path: &str| {
        Request::post(format!("http://grpc.test{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "5S")
            .body(Full::new(grpc_message(b"hello")))
            .unwrap()
    };
    let response = sender.send_request(call("/echo.Echo/Say")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-seen-version"],
        "HTTP/2.0",
        "HTTP/2 to the backend"
    );
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), grpc_message(b"hello"));

    let failed = sender.send_request(call("/echo.Echo/Fail")).await.unwrap();
    assert_eq!(failed.status(), 200, "a gRPC error is the backend's answer, not a 502");
    assert_eq!(failed.headers()["grpc-status"], "5");
    assert_eq!(failed.headers()["grpc-message"], "no such thing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_services_serving_status() {
    let serving = Arc::new(AtomicBool::new(true));
    let backend = grpc_backend_serving(serving.clone()).await;
    let site = format!(
        "[[site]]\nname = \"grpc\"\nweight = 1\nprotocol = \"h2c\"\nbackends = [\"{backend}\"]\n\
         health = {{ grpc = true, interval = \"50ms\", fall = 1, rise = 1 }}\n"
    );
    let proxy = TestProxy::start(&config("", &[site])).await;
    let healthy = |p: &TestProxy| p.server.control().current().sites[0].healthy;
    serving.store(false, Ordering::SeqCst);
    assert!(
        until(&proxy, false, healthy).await,
        "NOT_SERVING takes the backend down (a GET would have passed)"
    );
    serving.store(true, Ordering::SeqCst);
    assert!(until(&proxy, true, healthy).await, "SERVING brings it back");
}

#[test]
fn h2c_and_h2_are_checked_against_tls() {
    let text = |protocol: &str, tls: &str| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[site]]\nname = \"a\"\nweight = 1\nprotocol = \"{protocol}\"\n{tls}backends = [\"127.0.0.1:9\"]\n"
        )
    };
    let problems = |t: String| {
        splitgate::config::parse(std::path::Path::new("t.toml"), &t)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(problems(text("h2c", "")), None);
    assert!(problems(text("h2", "")).unwrap().contains("site[0].protocol"));
    assert!(problems(text("spdy", "")).unwrap().contains("not a protocol"));
    let grpc_over_http1 = text("http1", "health = { grpc = true }\n");
    assert!(problems(grpc_over_http1).unwrap().contains("site[0].health.grpc"));
}

/// Waits up to 10 s until `healthy(proxy)` is `want`.
async fn until(proxy: &TestProxy, want: bool, healthy: impl Fn(&TestProxy) -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(10) {
        if healthy(proxy) == want {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}
