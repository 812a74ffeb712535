//! HTTP/2 with prior knowledge (h2c) to plain backends, as gRPC services need: the
//! backend is spoken to over HTTP/2, health probes too; a gRPC-framed call through the
//! proxy gets its messages and its trailers (`grpc-status`, `grpc-message`), and a gRPC
//! error, trailers-only, stays the backend's answer, never a 502.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
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
                    if path == "/echo.Echo/Fail" {
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
}
