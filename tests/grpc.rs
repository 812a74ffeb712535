//! HTTP/2 with prior knowledge (h2c) to plain backends, as gRPC services need: the
//! backend is spoken to over HTTP/2, health probes too; a gRPC-framed call through the
//! proxy gets its messages and its trailers (`grpc-status`, `grpc-message`), and a gRPC
//! error, trailers-only, stays the backend's answer, never a 502.
//!
//! Then gRPC end to end with a real framework, tonic, on both sides of splitgate: unary,
//! server, client and bidi streaming, error statuses (trailers-only and after messages),
//! a deadline that reaches the backend and cancels its handler, a client's cancel
//! reaching the backend as RST_STREAM, and 4 MiB messages both ways.

// tonic's handlers answer `Result<_, tonic::Status>`, a large error by its design.
#![allow(clippy::result_large_err)]

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Probes (`/healthz`) get 200 and are counted in `probes`.
async fn grpc_backend(probes: Arc<AtomicU64>) -> SocketAddr {
    grpc_backend_counting(Arc::new(AtomicBool::new(true)), probes).await
}

/// As `grpc_backend`; its gRPC health service answers SERVING while `serving` holds.
async fn grpc_backend_serving(serving: Arc<AtomicBool>) -> SocketAddr {
    grpc_backend_counting(serving, Arc::new(AtomicU64::new(0))).await
}

/// As `grpc_backend_serving`, counting in `probes` the plain health checks (`/healthz`).
async fn grpc_backend_counting(serving: Arc<AtomicBool>, probes: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (serving, probes) = (serving.clone(), probes.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (serving, probes) = (serving.clone(), probes.clone());
                    async move {
                        let path = request.uri().path().to_string();
                        if path == "/healthz" {
                            probes.fetch_add(1, Ordering::SeqCst);
                        }
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
    let probes = Arc::new(AtomicU64::new(0));
    let backend = grpc_backend(probes.clone()).await;
    let site = format!("[[site]]\nname = \"grpc\"\nweight = 1\nprotocol = \"h2c\"\nbackends = [\"{backend}\"]\n");
    let proxy = TestProxy::start(&config("[health]\ninterval = \"100ms\"\n", &[site])).await;
    // The prober speaks HTTP/2 too: the site stays healthy once the backend has answered
    // four probes (at least three judged, more than `fall`).
    let probed = common::eventually(std::time::Duration::from_secs(10), || {
        probes.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert!(probed.is_some(), "the h2c backend is probed");
    assert!(proxy.server.sites()[0].healthy, "probes over h2c pass");

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
    let healthy = |p: &TestProxy| p.server.sites()[0].healthy;
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

// A real gRPC framework on both ends: a tonic server as the backend of an h2c site and
// a tonic client through splitgate. The service is written by hand (tonic's
// `server::Grpc` and `client::Grpc`, messages with prost's derive): no protoc step.

use std::future::Future;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;
use tonic::body::BoxBody;
use tonic::codec::{ProstCodec, Streaming};
use tonic::codegen::tokio_stream;
use tonic::codegen::tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;
use tonic::{Code, Status};

use common::h2_frames::{self, RawH2};
use common::pattern;

/// The test service's one message: a number and a payload.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

fn msg(seq: u64, data: &[u8]) -> Msg {
    Msg {
        seq,
        data: data.to_vec(),
    }
}

/// `grpc.health.v1.HealthCheckRequest` and `HealthCheckResponse` (SERVING = 1).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// Messages up to 16 MiB, both ways, on both ends (tonic's default, 4 MiB in, is a few
/// bytes short of a 4 MiB payload with its field header).
const LIMIT: usize = 16 << 20;

/// What the tonic backend saw, for a test to wait on.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A call's head arrived.
    Called(String),
    /// `Hold` was called with this `grpc-timeout` header.
    Deadline(Option<String>),
    /// `Hold`'s handler was dropped before it answered: the call was cancelled.
    HoldDropped,
    /// The response stream of `Endless` call number `n` was dropped by the server: the
    /// client's cancel reached it as RST_STREAM.
    EndlessClosed(u64),
    /// The request body of a `Chat` or `Sum` (`method`) ended: `reset` is the code of
    /// the RST_STREAM that ended it, `None` for a clean end (END_STREAM). Watched below
    /// tonic, which hands a handler a CANCEL as a clean end of its inbound stream.
    BodyEnded { method: &'static str, reset: Option<Code> },
}

/// A closure as the service tonic's `server::Grpc` calls for one method.
struct Handler<F>(F);

impl<F, Req, Resp, Fut> Service<tonic::Request<Req>> for Handler<F>
where
    F: FnMut(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    type Response = tonic::Response<Resp>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<Req>) -> Fut {
        (self.0)(request)
    }
}

/// Sends `seen` when dropped: a handler's future ended, finished or not.
struct OnDrop(mpsc::UnboundedSender<Seen>, Seen);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(self.1.clone());
    }
}

/// A request body that tells how it ended: `Seen::BodyEnded`.
struct Watched(BoxBody, &'static str, Option<mpsc::UnboundedSender<Seen>>);

impl Body for Watched {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.0).poll_frame(cx);
        let reset = match &polled {
            Poll::Ready(None) => None,
            Poll::Ready(Some(Err(status))) => Some(status.code()),
            _ => return polled,
        };
        if let Some(seen) = self.2.take() {
            let _ = seen.send(Seen::BodyEnded { method: self.1, reset });
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

/// `test.Echo`:
/// - `Echo` (unary) answers its message back;
/// - `Lookup` (unary) fails NOT_FOUND "no such key", trailers-only;
/// - `Count` (server streaming) answers `seq` messages carrying the request's data, then
///   OK, or NOT_FOUND "no such key" with an `x-detail` trailer when the data is "then fail";
/// - `Endless` (server streaming) streams until the client cancels;
/// - `Sum` (client streaming) answers how many messages came and their data joined,
///   INVALID_ARGUMENT if they came out of order;
/// - `Chat` (bidi) answers each message as it arrives;
/// - `Hold` (unary) never answers.
#[derive(Clone)]
struct Echo {
    seen: mpsc::UnboundedSender<Seen>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl Service<http::Request<BoxBody>> for Echo {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<BoxBody>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let seen = self.seen.clone();
        let _ = seen.send(Seen::Called(request.uri().path().to_string()));
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default())
                .max_decoding_message_size(LIMIT)
                .max_encoding_message_size(LIMIT);
            let response = match request.uri().path() {
                "/test.Echo/Echo" => {
                    let echo = |r: tonic::Request<Msg>| async move { Ok(tonic::Response::new(r.into_inner())) };
                    grpc.unary(Handler(echo), request).await
                }
                "/test.Echo/Lookup" => {
                    let lookup = |_: tonic::Request<Msg>| async { Err(Status::not_found("no such key")) };
                    grpc.unary(Handler(lookup), request).await
                }
                "/test.Echo/Hold" => {
                    let deadline = request.headers().get("grpc-timeout");
                    let deadline = deadline.and_then(|v| v.to_str().ok()).map(String::from);
                    let _ = seen.send(Seen::Deadline(deadline));
                    let hold = move |_: tonic::Request<Msg>| {
                        let guard = OnDrop(seen.clone(), Seen::HoldDropped);
                        async move {
                            let _guard = guard;
                            std::future::pending::<Result<tonic::Response<Msg>, Status>>().await
                        }
                    };
                    grpc.unary(Handler(hold), request).await
                }
                "/test.Echo/Count" => grpc.server_streaming(Handler(count), request).await,
                "/test.Echo/Endless" => {
                    let endless = move |r: tonic::Request<Msg>| {
                        let (call, seen) = (r.into_inner().seq, seen.clone());
                        let (tx, rx) = mpsc::channel(4);
                        tokio::spawn(async move {
                            for seq in 0.. {
                                if tx.send(Ok(msg(seq, b"more"))).await.is_err() {
                                    break;
                                }
                            }
                            let _ = seen.send(Seen::EndlessClosed(call));
                        });
                        async move { Ok(tonic::Response::new(ReceiverStream::new(rx))) }
                    };
                    grpc.server_streaming(Handler(endless), request).await
                }
                "/test.Echo/Sum" => {
                    let request = request.map(|body| tonic::body::boxed(Watched(body, "Sum", Some(seen))));
                    grpc.client_streaming(Handler(sum), request).await
                }
                "/test.Echo/Chat" => {
                    let chat = |r: tonic::Request<Streaming<Msg>>| {
                        let mut inbound = r.into_inner();
                        let (tx, rx) = mpsc::channel(16);
                        tokio::spawn(async move {
                            while let Ok(Some(m)) = inbound.message().await {
                                if tx.send(Ok(m)).await.is_err() {
                                    break;
                                }
                            }
                        });
                        async move { Ok(tonic::Response::new(ReceiverStream::new(rx))) }
                    };
                    let request = request.map(|body| tonic::body::boxed(Watched(body, "Chat", Some(seen))));
                    grpc.streaming(Handler(chat), request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

async fn count(
    request: tonic::Request<Msg>,
) -> Result<tonic::Response<tokio_stream::Iter<std::vec::IntoIter<Result<Msg, Status>>>>, Status> {
    let Msg { seq: n, data } = request.into_inner();
    let mut answers: Vec<Result<Msg, Status>> = (0..n).map(|seq| Ok(msg(seq, &data))).collect();
    if data == b"then fail" {
        let mut trailers = tonic::metadata::MetadataMap::new();
        trailers.insert("x-detail", "kept".parse().unwrap());
        answers.push(Err(Status::with_metadata(Code::NotFound, "no such key", trailers)));
    }
    Ok(tonic::Response::new(tokio_stream::iter(answers)))
}

async fn sum(request: tonic::Request<Streaming<Msg>>) -> Result<tonic::Response<Msg>, Status> {
    let mut inbound = request.into_inner();
    let mut total = msg(0, b"");
    while let Some(m) = inbound.message().await? {
        if m.seq != total.seq {
            return Err(Status::invalid_argument(format!(
                "message {} came as {}",
                total.seq, m.seq
            )));
        }
        total.seq += 1;
        total.data.extend_from_slice(&m.data);
    }
    Ok(tonic::Response::new(total))
}

/// `grpc.health.v1.Health/Check`: always SERVING.
#[derive(Clone)]
struct Health;

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<http::Request<BoxBody>> for Health {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<BoxBody>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default());
            let check = |_: tonic::Request<HealthCheckRequest>| async {
                Ok(tonic::Response::new(HealthCheckResponse { status: 1 }))
            };
            Ok(grpc.unary(Handler(check), request).await)
        })
    }
}

/// A tonic server on 127.0.0.1:0 serving `test.Echo` and the gRPC health service.
struct TonicBackend {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl TonicBackend {
    async fn start() -> TonicBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let server = tonic::transport::Server::builder()
            .add_service(Echo { seen: seen_tx })
            .add_service(Health)
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        TonicBackend { addr, seen }
    }

    /// The next thing seen that `pick` takes, within 10 s (others are passed over).
    async fn next(&mut self, pick: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let wait = async {
            while let Some(seen) = self.seen.recv().await {
                if pick(&seen) {
                    return Some(seen);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.ok().flatten()
    }

    /// Whether `want` is seen within 10 s.
    async fn saw(&mut self, want: Seen) -> bool {
        self.next(|seen| *seen == want).await.is_some()
    }
}

/// Splitgate with one h2c site whose backend is `backend`, probed with gRPC health
/// checks; returned once the site is healthy.
async fn splitgate_before(backend: &TonicBackend) -> TestProxy {
    let site = format!(
        "[[site]]\nname = \"grpc\"\nweight = 1\nprotocol = \"h2c\"\nbackends = [\"{}\"]\n\
         health = {{ grpc = true, interval = \"100ms\" }}\n",
        backend.addr
    );
    let proxy = TestProxy::start(&config("", &[site])).await;
    let healthy = |p: &TestProxy| p.server.sites()[0].healthy;
    assert!(until(&proxy, true, healthy).await, "the tonic backend is SERVING");
    proxy
}

/// A tonic client connected to splitgate (one HTTP/2 connection, calls multiplexed).
struct Client(tonic::client::Grpc<Channel>);

impl Client {
    async fn to(proxy: &TestProxy) -> Client {
        let channel = Channel::from_shared(format!("http://{}", proxy.addr))
            .unwrap()
            .connect()
            .await
            .expect("the client connects to splitgate");
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(LIMIT)
            .max_encoding_message_size(LIMIT);
        Client(grpc)
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.0.ready().await.map_err(|e| Status::unavailable(e.to_string()))
    }

    async fn unary(&mut self, path: &'static str, request: impl tonic::IntoRequest<Msg>) -> Result<Msg, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(path);
        let response = self.0.unary(request.into_request(), path, ProstCodec::default()).await;
        response.map(tonic::Response::into_inner)
    }

    async fn server_streaming(&mut self, path: &'static str, request: Msg) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(path);
        let response = self
            .0
            .server_streaming(tonic::Request::new(request), path, ProstCodec::default())
            .await;
        response.map(tonic::Response::into_inner)
    }

    async fn client_streaming<S>(&mut self, path: &'static str, messages: S) -> Result<Msg, Status>
    where
        S: tokio_stream::Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(path);
        let response = self
            .0
            .client_streaming(tonic::Request::new(messages), path, ProstCodec::default())
            .await;
        response.map(tonic::Response::into_inner)
    }

    async fn bidi<S>(&mut self, path: &'static str, messages: S) -> Result<Streaming<Msg>, Status>
    where
        S: tokio_stream::Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(path);
        let response = self
            .0
            .streaming(tonic::Request::new(messages), path, ProstCodec::default())
            .await;
        response.map(tonic::Response::into_inner)
    }
}

/// The next message of a stream, within 10 s; panics on anything else.
async fn next_message(stream: &mut Streaming<Msg>) -> Msg {
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    next.expect("a message within 10 s")
        .expect("no error")
        .expect("not the end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_unary_calls_pass_through_an_h2c_site_many_at_once() {
    let backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let client = Client::to(&proxy).await;

    let calls = (0..100u64).map(|i| {
        let mut client = Client(client.0.clone());
        tokio::spawn(async move { client.unary("/test.Echo/Echo", msg(i, b"hello")).await })
    });
    for (i, call) in calls.collect::<Vec<_>>().into_iter().enumerate() {
        let answer = call.await.unwrap().expect("the unary call succeeds");
        assert_eq!(answer, msg(i as u64, b"hello"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_server_streaming_delivers_every_message_in_order_then_ok() {
    let backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let payload = pattern(0, 1024);
    let mut stream = client
        .server_streaming("/test.Echo/Count", msg(1000, &payload))
        .await
        .unwrap();
    for seq in 0..1000 {
        assert_eq!(next_message(&mut stream).await, msg(seq, &payload));
    }
    assert_eq!(stream.message().await.expect("ends with OK"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_streaming_delivers_every_message_in_order() {
    let backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let messages: Vec<Msg> = (0..1000).map(|seq| msg(seq, &pattern(seq * 100, 100))).collect();
    let answer = client
        .client_streaming("/test.Echo/Sum", tokio_stream::iter(messages))
        .await
        .expect("the server got them all, in order");
    assert_eq!(answer.seq, 1000);
    assert_eq!(answer.data, pattern(0, 100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_bidi_streaming_passes_each_message_as_it_comes_both_ways() {
    let mut backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let (tx, rx) = mpsc::channel(16);
    let mut answers = client.bidi("/test.Echo/Chat", ReceiverStream::new(rx)).await.unwrap();
    // Ping-pong: each message is answered before the next is sent, so nothing may wait
    // for the end of either stream (or for a buffer to fill).
    for seq in 0..300 {
        tx.send(msg(seq, b"ping")).await.unwrap();
        assert_eq!(next_message(&mut answers).await, msg(seq, b"ping"));
    }
    // Then a burst both ways at once: sent while the answers are read.
    let sender = tokio::spawn(async move {
        for seq in 300..1300 {
            tx.send(msg(seq, &pattern(seq, 512))).await.unwrap();
        }
    });
    for seq in 300..1300 {
        assert_eq!(next_message(&mut answers).await, msg(seq, &pattern(seq, 512)));
    }
    sender.await.unwrap();
    assert_eq!(answers.message().await.expect("ends with OK"), None);
    assert_eq!(
        backend.next(|s| matches!(s, Seen::BodyEnded { .. })).await,
        Some(Seen::BodyEnded {
            method: "Chat",
            reset: None
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_error_reaches_the_client_as_the_server_sent_it_never_as_a_proxy_error() {
    let backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    // Trailers-only: the status is in the response head, no message.
    let status = client.unary("/test.Echo/Lookup", msg(1, b"key")).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such key"));

    // After messages: the status (and the server's trailer metadata) in the trailers.
    let mut stream = client
        .server_streaming("/test.Echo/Count", msg(3, b"then fail"))
        .await
        .unwrap();
    for seq in 0..3 {
        assert_eq!(next_message(&mut stream).await, msg(seq, b"then fail"));
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such key"));
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");

    // The connection and the site are fine: a gRPC error is not a backend failure.
    assert_eq!(
        client.unary("/test.Echo/Echo", msg(2, b"ok")).await.unwrap(),
        msg(2, b"ok")
    );
    assert!(proxy.server.sites()[0].healthy);
}

/// tonic 0.12 ends a call whose deadline passed with CANCELLED "Timeout expired" on
/// either side (its client and its server both keep the deadline; gRPC C-core says
/// DEADLINE_EXCEEDED): either is the deadline, neither is the proxy's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reaches_the_backend_and_its_expiry_cancels_the_backends_handler() {
    let mut backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let mut request = tonic::Request::new(msg(1, b"wait"));
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = client.unary("/test.Echo/Hold", request).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        status.code() == Code::DeadlineExceeded
            || (status.code() == Code::Cancelled && status.message() == "Timeout expired"),
        "the deadline ended the call: {status:?}"
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "at the deadline, not at a proxy timeout: {took:?}"
    );
    assert_eq!(
        backend.next(|s| matches!(s, Seen::Deadline(_))).await,
        Some(Seen::Deadline(Some("200000u".into()))),
        "grpc-timeout reaches the backend as the client wrote it"
    );
    assert!(
        backend.saw(Seen::HoldDropped).await,
        "the backend's handler is cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_a_stream_resets_that_stream_at_the_backend_and_no_other() {
    let mut backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let mut first = client
        .server_streaming("/test.Echo/Endless", msg(1, b""))
        .await
        .unwrap();
    let mut second = client
        .server_streaming("/test.Echo/Endless", msg(2, b""))
        .await
        .unwrap();
    for seq in 0..3 {
        assert_eq!(next_message(&mut first).await.seq, seq);
        assert_eq!(next_message(&mut second).await.seq, seq);
    }
    drop(first);
    assert!(
        backend.saw(Seen::EndlessClosed(1)).await,
        "the client's RST_STREAM reaches the backend's stream"
    );
    // The other call shares the connections (client's and backend's): it goes on.
    for seq in 3..1000 {
        assert_eq!(next_message(&mut second).await.seq, seq);
    }
    drop(second);
    assert!(backend.saw(Seen::EndlessClosed(2)).await);
}

/// A client that resets a call while its request is still open (as gRPC C-core's
/// cancel does: RST_STREAM CANCEL, no END_STREAM first): the backend sees its request
/// reset with CANCEL, not ended as if complete (a half upload taken for a whole one).
/// A bidi call after its first answer, and a client-streaming call before any answer
/// (splitgate still waiting for the response head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_reset_by_the_client_mid_request_is_reset_at_the_backend() {
    let mut backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;

    let mut raw = RawH2::connect(proxy.addr, h2_frames::PREFACE).await;
    let head = |path: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"grpc.test"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
    };
    let ping = grpc_message(&msg(0, b"ping").encode_to_vec());
    const CANCEL: u32 = 8;
    let reset = |stream: u32| h2_frames::frame(h2_frames::RST_STREAM, 0, stream, &CANCEL.to_be_bytes());
    let body_end =
        |method: &'static str| move |s: &Seen| matches!(s, Seen::BodyEnded { method: m, .. } if *m == method);

    raw.send(&h2_frames::headers(1, false, &head(b"/test.Echo/Chat"))).await;
    raw.send(&h2_frames::frame(h2_frames::DATA, 0, 1, &ping)).await;
    let answered = raw
        .frames_until(Duration::from_secs(10), |f| f.kind == h2_frames::DATA && f.stream == 1)
        .await;
    assert!(
        answered.last().is_some_and(|f| f.kind == h2_frames::DATA),
        "the echo comes back mid-stream: {answered:?}"
    );
    raw.send(&reset(1)).await;
    assert_eq!(
        backend.next(body_end("Chat")).await,
        Some(Seen::BodyEnded {
            method: "Chat",
            reset: Some(Code::Cancelled)
        }),
        "the bidi call is reset at the backend, not ended"
    );

    raw.send(&h2_frames::headers(3, false, &head(b"/test.Echo/Sum"))).await;
    raw.send(&h2_frames::frame(h2_frames::DATA, 0, 3, &ping)).await;
    let called = |s: &Seen| *s == Seen::Called("/test.Echo/Sum".into());
    assert!(
        backend.next(called).await.is_some(),
        "the upload is under way at the backend"
    );
    raw.send(&reset(3)).await;
    assert_eq!(
        backend.next(body_end("Sum")).await,
        Some(Seen::BodyEnded {
            method: "Sum",
            reset: Some(Code::Cancelled)
        }),
        "the upload is reset at the backend, not taken as complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_4_mib_pass_both_ways() {
    let mut backend = TonicBackend::start().await;
    let proxy = splitgate_before(&backend).await;
    let mut client = Client::to(&proxy).await;

    let big = pattern(0, 4 << 20);
    let answer = client
        .unary("/test.Echo/Echo", msg(1, &big))
        .await
        .expect("a 4 MiB unary call");
    assert!(
        answer.seq == 1 && answer.data == big,
        "the 4 MiB answer is the message sent"
    );

    // Four each way on one bidi stream, sent while the answers are read.
    let (tx, rx) = mpsc::channel(1);
    let mut answers = client.bidi("/test.Echo/Chat", ReceiverStream::new(rx)).await.unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..4 {
            tx.send(msg(seq, &pattern(seq, 4 << 20))).await.unwrap();
        }
    });
    for seq in 0..4 {
        let answer = next_message(&mut answers).await;
        assert!(
            answer.seq == seq && answer.data == pattern(seq, 4 << 20),
            "message {seq}"
        );
    }
    sender.await.unwrap();
    assert_eq!(answers.message().await.unwrap(), None);
    assert_eq!(
        backend.next(|s| matches!(s, Seen::BodyEnded { .. })).await,
        Some(Seen::BodyEnded {
            method: "Chat",
            reset: None
        })
    );
}
