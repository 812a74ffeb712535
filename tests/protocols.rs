//! HTTP/1.1, HTTP/2 (h2c), upgrades, header rules and the proxy's own errors.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{black_hole, client, config, get, refused_addr, site, Backend, TestProxy};
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn an_http2_client_with_prior_knowledge_is_served() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let h2 = common::h2_client();
    for _ in 0..3 {
        let response = h2
            .request(Request::get(proxy.url("/headers")).body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = common::text(response.into_body()).await;
        assert!(
            body.contains(&format!("host: {}", proxy.addr)),
            "Host comes from :authority: {body}"
        );
        assert!(body.contains("via: 2.0 splitgate"), "{body}");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_set() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let request = Request::get(proxy.url("/headers"))
        .header("host", "shop.example")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "gzip")
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let body = common::text(response.into_body()).await;
    for gone in ["x-private", "keep-alive", "proxy-authorization", "te:"] {
        assert!(!body.contains(gone), "{gone} reached the backend:\n{body}");
    }
    assert!(body.contains("x-end-to-end: kept"), "{body}");
    assert!(body.contains("host: shop.example"), "{body}");
    assert!(body.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("x-forwarded-host: shop.example"), "{body}");
    assert!(body.contains("via: 1.1 splitgate"), "{body}");
}

#[tokio::test]
async fn every_backend_refusing_gives_502_with_a_short_text() {
    let proxy = TestProxy::start(&config(
        "",
        &[site("a", 1, 0, &[refused_addr()]), site("b", 1, 0, &[refused_addr()])],
    ))
    .await;
    let (status, body) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, 502);
    assert!(body.len() < 100 && !body.is_empty(), "{body}");
}

#[tokio::test]
async fn a_backend_that_never_answers_gives_504_after_the_response_timeout() {
    let (hole, _task) = black_hole().await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nresponse = \"300ms\"\n[retry]\nattempts = 1\n",
        &[site("a", 1, 0, &[hole])],
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, 504);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_upgrade_is_tunnelled_both_ways() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed during the head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    // Tunnelled bytes are not HTTP/1 to the proxy, even when they look like it (here: a
    // chunk size the head scanner would refuse in a request body).
    let http_inside = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n";
    for message in [&b"hello"[..], b"through the tunnel", &[0u8, 255, 1, 254], http_inside] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test]
async fn a_client_that_sends_no_headers_is_closed_after_client_header() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nclient_header = \"300ms\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: slow").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the proxy should close a slow client's connection");
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "a 408 first, as NGINX and HAProxy send: {answer:?}"
    );
    assert_eq!(a.hits(), 0);
}

/// A connection that sends nothing gets `client_header` for its first head (as NGINX
/// and HAProxy give), not `idle`: silent connections cannot pile up for a minute.
#[tokio::test]
async fn a_client_that_sends_nothing_is_closed_after_client_header_not_idle() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nclient_header = \"300ms\"\nidle = \"60s\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent connection should be closed after client_header");
    assert!(
        rest.is_empty(),
        "closed without an answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// A pipelined head cut short (behind a complete request, in the same write or while
/// the first is answered) must complete within `client_header` too, not `idle`.
#[tokio::test]
async fn a_partial_head_pipelined_behind_a_request_is_closed_after_client_header() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nclient_header = \"300ms\"\nidle = \"60s\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let same_write: &[&[u8]] = &[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: sl"];
    let while_answered: &[&[u8]] = &[b"GET /sleep/200 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHo"];
    let behind_a_body: &[&[u8]] =
        &[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHo"];
    for (variant, writes) in [same_write, while_answered, behind_a_body].into_iter().enumerate() {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        for bytes in writes {
            stream.write_all(bytes).await.unwrap();
            // pacing: each piece arrives in a read of its own.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "the partial pipelined head should time out after client_header (case {variant})"
        );
        let answer = String::from_utf8_lossy(&rest);
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "the first request is answered: {answer:?}"
        );
        assert!(
            answer.contains("HTTP/1.1 408 Request Timeout\r\n"),
            "then a 408 for the partial one: {answer:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("[timeouts]\nidle = \"300ms\"\n", &[site("a", 1, 0, &[a.addr])])).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "x")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "the idle connection should be closed by the proxy");
}

#[tokio::test]
async fn a_long_http2_download_outlives_client_header() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nclient_header = \"200ms\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let h2 = common::h2_client();
    let size = 8 * 1024 * 1024u64;
    let response = h2
        .request(
            Request::get(proxy.url(&format!("/download/{size}")))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut received = 0u64;
    let started = std::time::Instant::now();
    // Read slowly: the client keeps sending WINDOW_UPDATE frames for a second or more.
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("the download is not cut")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(received, size);
    assert!(
        started.elapsed() > Duration::from_millis(400),
        "the download lasted past client_header"
    );
}

/// A request body that trickles in: `chunks` pieces, one every `gap`.
struct SlowBody {
    chunks: u32,
    gap: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        let gap = self.gap;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
        std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
        self.sleep = None;
        self.chunks -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"0123456789")))))
    }
}

#[tokio::test]
async fn a_slow_upload_is_not_a_slow_backend() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nconnect = \"200ms\"\nresponse = \"300ms\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let uploader: Client<HttpConnector, SlowBody> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let body = SlowBody {
        chunks: 8,
        gap: Duration::from_millis(100),
        sleep: None,
    };
    let request = Request::post(proxy.url("/upload")).body(body).unwrap();
    let response = uploader.request(request).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "an 800 ms upload with a 300 ms response timeout"
    );
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).starts_with("bytes=80 "), "{text:?}");
    assert!(proxy.server.sites()[0].healthy, "the backend is not blamed");
}

#[tokio::test]
async fn connect_is_refused_with_405() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 405");
    assert_eq!(a.hits(), 0);
}
