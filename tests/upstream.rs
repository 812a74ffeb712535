//! The HTTP/1.1 client that talks to backends, against scripted raw backends over real
//! sockets: every framing a response can have (chunked with extensions and trailers,
//! until close, HEAD, interim answers), sent in the worst pieces, with the connection
//! reused exactly when it can be; early answers to uploads; connections the backend
//! closed while idle; malformed heads.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{client, config, site, TestProxy};
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves each connection accepted on a fresh loopback port with `serve`.
async fn spawn_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Reads until `seen` holds a whole request head; takes the head off (lowercased)
/// and leaves what followed it. `None` when the client left first, or when the head
/// was a health probe (answered 200; its connection is then done).
async fn next_request(stream: &mut TcpStream, seen: &mut Vec<u8>) -> Option<String> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            seen.drain(..end + 4);
            if head.contains("splitgate-health-check") {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                return None;
            }
            return Some(head);
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What the backend does with one request.
struct Reply {
    bytes: Vec<u8>,
    /// Close the connection after the reply (without saying so in the head).
    close: bool,
    /// Bytes per write (1: every byte in its own segment).
    piece: usize,
    /// Answer as soon as the head is in, without reading a body.
    early: bool,
}

fn reply(bytes: &[u8]) -> Reply {
    Reply {
        bytes: bytes.to_vec(),
        close: false,
        piece: usize::MAX,
        early: false,
    }
}

/// A backend that answers each request with `answer(method)`; health probes get a 200
/// and are not counted. `connections()`: connections that carried a counted request.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(answer: fn(&str) -> Reply) -> Scripted {
        let (connections, closes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counters = (connections.clone(), closes.clone());
        let addr = spawn_backend(move |stream| serve(stream, answer, counters.clone())).await;
        Scripted {
            addr,
            connections,
            closes,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections this backend closed after a reply (its FIN sent).
    fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    answer: fn(&str) -> Reply,
    (connections, closes): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    stream.set_nodelay(true).unwrap();
    let mut seen = Vec::new();
    let mut counted = false;
    let mut buf = [0u8; 16 * 1024];
    while let Some(head) = next_request(&mut stream, &mut seen).await {
        if !counted {
            counted = true;
            connections.fetch_add(1, Ordering::SeqCst);
        }
        let method = head.split(' ').next().unwrap_or_default().to_uppercase();
        let reply = answer(&method);
        if !reply.early {
            let length = content_length(&head);
            while seen.len() < length {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            seen.drain(..length);
        }
        for piece in reply.bytes.chunks(reply.piece.min(reply.bytes.len()).max(1)) {
            if stream.write_all(piece).await.is_err() {
                return;
            }
            if reply.piece == 1 {
                // pacing: one byte per segment, the head arriving in many reads.
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        if reply.close || reply.early {
            // A lingering close, as real servers do: the rest of an upload is read and
            // dropped, so the answer is not lost to a reset.
            let _ = stream.shutdown().await;
            closes.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            return;
        }
    }
}

async fn proxy_for(backend: &Scripted, extra: &str) -> TestProxy {
    TestProxy::start(&config(extra, &[site("a", 1, 0, &[backend.addr])])).await
}

async fn call(proxy: &TestProxy, method: Method, body: &'static str) -> (u16, http::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(proxy.url("/"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client().request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    let (parts, body) = response.into_parts();
    (parts.status.as_u16(), parts.headers, common::text(body).await)
}

#[tokio::test]
async fn a_chunked_response_sent_byte_by_byte_arrives_whole_and_its_connection_is_reused() {
    let backend = Scripted::start(|_| Reply {
        piece: 1,
        ..reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    for _ in 0..3 {
        let (status, _, body) = call(&proxy, Method::GET, "").await;
        assert_eq!((status, body.as_str()), (200, "hello world"));
    }
    assert_eq!(backend.connections(), 1, "one upstream connection for three requests");
}

#[tokio::test]
async fn a_response_delimited_by_close_arrives_whole_and_its_connection_is_not_reused() {
    let backend = Scripted::start(|_| Reply {
        close: true,
        ..reply(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    for _ in 0..3 {
        let (status, _, body) = call(&proxy, Method::GET, "").await;
        assert_eq!((status, body.as_str()), (200, "until the end"));
    }
    assert_eq!(backend.connections(), 3);
}

#[tokio::test]
async fn a_head_answer_has_no_body_whatever_its_length_and_keeps_the_connection() {
    let backend = Scripted::start(|method| match method {
        "HEAD" => reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        _ => reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    let (status, headers, body) = call(&proxy, Method::HEAD, "").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(headers.get("content-length").unwrap(), "1234");
    let (status, _, body) = call(&proxy, Method::GET, "").await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn interim_answers_before_the_final_one_are_skipped() {
    let backend = Scripted::start(|_| {
        reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    let (status, _, body) = call(&proxy, Method::POST, "payload").await;
    assert_eq!((status, body.as_str()), (201, "ok"));
    let (status, _, _) = call(&proxy, Method::POST, "again").await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_backend_that_answers_an_upload_before_reading_it_is_heard() {
    let backend = Scripted::start(|_| Reply {
        early: true,
        ..reply(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig\n")
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    // 8 MiB announced, 256 KiB sent: more than the sockets buffer, so the proxy is
    // still sending when the answer comes.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8388608\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..16 {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        writer
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"big\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "got {text:?}");
    assert!(text.ends_with("big\n"), "got {text:?}");
    drop(sender);
}

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_for_the_next_post() {
    // The backend closes each connection after its answer without saying so: the
    // proxy must notice before sending the next (not retryable) POST on it.
    let backend = Scripted::start(|_| Reply {
        close: true,
        ..reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = proxy_for(&backend, "[retry]\nattempts = 1\n").await;
    for round in 0..5 {
        let (status, _, body) = call(&proxy, Method::POST, "order").await;
        assert_eq!((status, body.as_str()), (200, "ok"), "POST {round}");
        // The backend has closed the connection (its FIN is sent)...
        let closed = common::eventually(Duration::from_secs(5), || backend.closes() > round).await;
        assert!(closed.is_some(), "the backend closes after its answer");
        // ...pacing: and the connection then sits idle in the pool a while, as between two
        // real requests, for the proxy's runtime to have taken in the close.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend.connections(), 5);
}

#[tokio::test]
async fn a_malformed_or_oversized_response_head_is_a_502() {
    let bad_length = Scripted::start(|_| reply(b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello")).await;
    let proxy = proxy_for(&bad_length, "[retry]\nattempts = 1\n").await;
    let (status, _, body) = call(&proxy, Method::GET, "").await;
    assert_eq!((status, body.as_str()), (502, "upstream connection failed\n"));

    let huge = Scripted::start(|_| {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 70 * 1024));
        head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        Reply {
            bytes: head,
            close: false,
            piece: usize::MAX,
            early: false,
        }
    })
    .await;
    let proxy = proxy_for(&huge, "[retry]\nattempts = 1\n").await;
    let (status, _, body) = call(&proxy, Method::GET, "").await;
    assert_eq!((status, body.as_str()), (502, "upstream connection failed\n"));
}

#[tokio::test]
async fn a_backend_that_answers_while_still_reading_the_upload_gets_all_of_it() {
    // Full duplex (a streaming echo, Go's EnableFullDuplex): the head goes out first,
    // the backend reads the whole body, then ends its answer with the byte count. The
    // upload is larger than the sockets buffer, so it must go on after the answer began.
    let addr = spawn_backend(|mut stream| async move {
        let mut seen = Vec::new();
        let Some(head) = next_request(&mut stream, &mut seen).await else {
            return;
        };
        let head_reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head_reply).await.is_err() {
            return;
        }
        let mut got = seen.len();
        let mut buf = vec![0u8; 64 * 1024];
        while got < content_length(&head) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let count = got.to_string();
        let tail = format!("{:x}\r\n{count}\r\n0\r\n\r\n", count.len());
        let _ = stream.write_all(tail.as_bytes()).await;
    })
    .await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[addr])])).await;
    let upload = Bytes::from(vec![b'u'; 8 * 1024 * 1024]);
    let request = Request::post(proxy.url("/echo")).body(Full::new(upload)).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), common::text(response.into_body()))
        .await
        .expect("the whole upload reached the backend, which then ended its answer");
    assert_eq!(body, (8 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn response_trailers_reach_an_http2_client() {
    let backend = Scripted::start(|_| {
        reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
    })
    .await;
    let proxy = proxy_for(&backend, "").await;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        common::h2_client().get(proxy.url("/").parse().unwrap()),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    assert_eq!(response.status(), 200);
    let collected = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello");
}

#[tokio::test]
async fn a_reason_phrase_of_the_backends_own_is_passed_on() {
    let backend = Scripted::start(|_| reply(b"HTTP/1.1 200 Everything Fine\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = proxy_for(&backend, "").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 Everything Fine\r\n"), "got {text:?}");
}

/// A request body with one piece of data, then (after a pause, when set) its trailer
/// fields or its end: as an HTTP/2 client that ends its stream with a separate frame.
struct OneDataFrame {
    data: Option<Bytes>,
    pause: Option<Duration>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    trailers: Option<http::HeaderMap>,
}

impl OneDataFrame {
    fn new(data: &'static [u8], pause: Option<Duration>, trailers: Option<http::HeaderMap>) -> Self {
        let data = Some(Bytes::from_static(data));
        OneDataFrame {
            data,
            pause,
            sleep: None,
            trailers,
        }
    }
}

impl http_body::Body for OneDataFrame {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        if let Some(pause) = self.pause {
            let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
        }
        std::task::Poll::Ready(self.trailers.take().map(|t| Ok(http_body::Frame::trailers(t))))
    }
}

fn h2_client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, OneDataFrame> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

#[tokio::test]
async fn an_answer_after_the_whole_declared_body_keeps_the_connection() {
    let backend = Scripted::start(|_| reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = proxy_for(&backend, "").await;
    let h2 = h2_client();
    for _ in 0..2 {
        let body = OneDataFrame::new(b"order", Some(Duration::from_millis(300)), None);
        let request = Request::post(proxy.url("/orders"))
            .header("content-length", "5")
            .body(body)
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), h2.request(request))
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(common::text(response.into_body()).await, "ok");
    }
    assert_eq!(
        backend.connections(),
        1,
        "the answer came before the client's end of stream, not before its data"
    );
}

#[tokio::test]
async fn request_trailers_reach_the_backend_in_the_last_chunk() {
    // The backend answers with the raw chunked body it received.
    let addr = spawn_backend(|mut stream| async move {
        let mut seen = Vec::new();
        if next_request(&mut stream, &mut seen).await.is_none() {
            return;
        }
        let mut buf = [0u8; 4096];
        while !(seen.ends_with(b"\r\n\r\n") && seen.windows(3).any(|w| w == b"0\r\n")) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let body = String::from_utf8_lossy(&seen).into_owned();
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let _ = stream.write_all(answer.as_bytes()).await;
    })
    .await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[addr])])).await;
    let h2 = h2_client();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", http::HeaderValue::from_static("42"));
    let body = OneDataFrame::new(b"hello", None, Some(trailers));
    let request = Request::post(proxy.url("/upload")).body(body).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), h2.request(request))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(
        common::text(response.into_body()).await,
        "5\r\nhello\r\n0\r\nx-sum: 42\r\n\r\n"
    );
}
