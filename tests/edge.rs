//! Findings of the outside probe at the edge, each over real sockets: what a sloppy or
//! hostile backend or client sends, and what splitgate must make of it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{client, config, site, Backend, TestProxy};
use http::Request;
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that answers every request head (probes included) with `answer`, on
/// kept-alive connections.
async fn raw_backend(answer: &'static [u8]) -> SocketAddr {
    late_backend(answer, Duration::ZERO, b"").await
}

/// A backend that answers every request head with `answer` at once and `late` after
/// `pause`, on kept-alive connections.
async fn late_backend(answer: &'static [u8], pause: Duration, late: &'static [u8]) -> SocketAddr {
    scripted_backend(move |_| answer, pause, late).await
}

/// A backend that answers each request head with what `answer` picks for it at once
/// and `late` after `pause`, on kept-alive connections.
async fn scripted_backend(
    answer: impl Fn(&[u8]) -> &'static [u8] + Copy + Send + 'static,
    pause: Duration,
    late: &'static [u8],
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let answer = answer(&seen[..end]);
                        seen.drain(..end + 4);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if !late.is_empty() {
                            // pacing: the rest of the answer comes `pause` later.
                            tokio::time::sleep(pause).await;
                            if stream.write_all(late).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `request` on a fresh connection and reads until the proxy closes it or
/// `limit` passes; returns what came back.
async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_response_with_both_content_length_and_chunked_reaches_the_client_whole() {
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and a proxy removes the
    // received Content-Length before forwarding. Before the fix: a clean 200 with
    // `content-length: 5` and the body "hello".
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[backend])])).await;
    let client = client();
    for _ in 0..3 {
        let response = client
            .request(
                Request::get(proxy.url("/"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_ne!(
            response.headers().get("content-length").map(|v| v.as_bytes()),
            Some(&b"5"[..]),
            "the backend's contradicted Content-Length is not forwarded"
        );
        assert_eq!(common::text(response.into_body()).await, "hello world");
    }
}

/// A `Connection` header naming `Host` must not take the client's host away (the
/// backend would get its own address as `Host`): Host is end to end and required.
#[tokio::test]
async fn a_connection_header_naming_host_keeps_the_host() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: Host, close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\nhost: shop.example\n"), "{answer}");
}

#[tokio::test]
async fn two_host_headers_are_refused_before_reaching_a_backend() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let answer = raw_exchange(
        proxy.addr,
        b"GET /headers HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(a.hits(), hits, "nothing of it reached the backend");
}

/// RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400 (as NGINX does);
/// HTTP/1.0 needs none.
#[tokio::test]
async fn an_http11_request_without_host_is_refused_and_an_http10_one_passes() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let answer = raw_exchange(proxy.addr, b"GET /no-host HTTP/1.1\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Host"), "the reason says what is missing: {answer}");
    assert_eq!(a.hits(), hits, "nothing reached the backend");
    let answer = raw_exchange(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_backend_as_one_header() {
    // RFC 9113 8.2.3: a proxy joins HTTP/2 cookie fields with "; " for HTTP/1.1.
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let h2 = common::h2_client();
    let request = Request::get(proxy.url("/headers"))
        .header("cookie", "sid=1")
        .header("cookie", "cart=2")
        .body(Empty::new())
        .unwrap();
    let response = h2.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = common::text(response.into_body()).await;
    let cookies: Vec<&str> = body.lines().filter(|l| l.starts_with("cookie:")).collect();
    assert_eq!(cookies, ["cookie: sid=1; cart=2"], "{body}");
}

/// Request heads that could be framed two ways: each must get 400 and a closed
/// connection, and none may reach the backend.
#[tokio::test]
async fn ambiguous_request_framing_is_refused_with_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let cases: [(&str, &[u8]); 9] = [
        (
            "Content-Length with Transfer-Encoding",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            // The first 24 bytes (what protocol sniffing reads alone) end inside the name.
            "Content-Length cut by the first read, with Transfer-Encoding",
            b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding with Content-Length",
            b"POST /echo HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n0\r\n\r\n",
        ),
        ("a request target that is not a path", b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "two different Content-Length values",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "a Transfer-Encoding other than a final chunked",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "identity before chunked",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "chunked twice",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "an obs-folded header",
            b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let hits = a.hits();
        let answer = raw_exchange(proxy.addr, request, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert_eq!(a.hits(), hits, "{what} reached the backend");
    }
}

/// `[limits]`, beyond each: a clear error for that client, nothing else disturbed.
#[tokio::test]
async fn request_heads_beyond_the_limits_get_431_and_never_reach_a_backend() {
    let a = Backend::start("a").await;
    let limits = "[limits]\nmax_header_bytes = 16384\nmax_headers = 10\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let big = format!(
        "GET /headers HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw_exchange(proxy.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "a 20 KB header: {answer}");
    let many: String = (0..12).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /headers HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let answer = raw_exchange(proxy.addr, many.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "13 headers: {answer}");
    assert_eq!(a.hits(), hits, "nothing reached the backend");
    let (status, _) = common::get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, 200, "an ordinary request still passes");
}

/// The contract's `max_header_bytes`: "beyond it 431 (414 for the URI alone)".
#[tokio::test]
async fn a_request_line_beyond_max_header_bytes_gets_414_and_never_reaches_a_backend() {
    let a = Backend::start("a").await;
    let limits = "[limits]\nmax_header_bytes = 16384\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    for uri_len in [16_384, 20_000, 70_000] {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(uri_len));
        let answer = raw_exchange(proxy.addr, long.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "a {uri_len}-byte URI: {answer}"
        );
    }
    // A request line that fits with headers that do not is still a head too large.
    let big = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8_000),
        "b".repeat(9_000)
    );
    let answer = raw_exchange(proxy.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "long URI, long header: {answer}");
    assert_eq!(a.hits(), hits, "nothing reached the backend");
    let (status, _) = common::get(&client(), &proxy.url(&format!("/{}", "a".repeat(8_000))))
        .await
        .unwrap();
    assert_eq!(status, 200, "a long URI within the limit passes");
}

/// A long request line pipelined behind a request in flight must not cut into that
/// request's answer (its head already sent, its body on the way): the answer comes
/// whole, and the long line is refused after it.
#[tokio::test]
async fn a_long_request_line_pipelined_behind_a_slow_answer_leaves_that_answer_whole() {
    // Every head answered with its own head at once and its 10-byte body 500 ms later.
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    let backend = late_backend(head, Duration::from_millis(500), b"0123456789").await;
    let limits = "[limits]\nmax_header_bytes = 8192\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[backend])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // In flight: its answer's head has reached the client, its body not yet.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the answer's head arrives")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer's head: {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(30_000));
    let _ = stream.write_all(long.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n"),
        "the answer in flight first: {answer}"
    );
    let (first, after) = answer
        .split_once("\r\n\r\n0123456789")
        .unwrap_or_else(|| panic!("its body whole: {answer}"));
    assert!(!first.contains("414"), "no answer written into another: {answer}");
    assert!(
        after.is_empty() || after.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
        "then the long line refused on its own: {answer}"
    );
}

/// An HTTP/2 client whose preface arrives in two pieces is still HTTP/2 (its frames are
/// never scanned as an HTTP/1 request line and refused).
#[tokio::test]
async fn an_http2_preface_split_over_two_reads_is_still_http2() {
    let a = Backend::start("a").await;
    let limits = "[limits]\nmax_header_bytes = 8192\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"PRI * HT").await.unwrap();
    // pacing: the preface arrives in two reads.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"TP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame, then 600 PINGs (17 bytes each, no line end among them).
    let mut frames = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
    for i in 0..600u32 {
        frames.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        frames.extend_from_slice(&[1, 2, 3, 4]);
        frames.extend_from_slice(&(i + 0x0101_0101).to_be_bytes().map(|b| b | 0x20));
    }
    stream.write_all(&frames).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Each PING's answer is a 17-byte frame: wait for most of them.
    while got.len() < 17 * 500 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    assert!(
        !got.windows(8).any(|w| w == b"HTTP/1.1"),
        "an HTTP/1 answer inside the HTTP/2 stream"
    );
    assert!(
        got.len() >= 17 * 500,
        "the PINGs were answered: {} bytes back",
        got.len()
    );
}

#[tokio::test]
async fn a_64_kb_header_is_refused_by_default() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let big = format!(
        "GET /headers HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(65_536)
    );
    let answer = raw_exchange(proxy.addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn bodies_beyond_max_body_bytes_get_413() {
    let a = Backend::start("a").await;
    let limits = "[limits]\nmax_body_bytes = 1000\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let declared = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n{}",
        "b".repeat(2000)
    );
    let answer = raw_exchange(proxy.addr, declared.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "declared length: {answer}");
    assert_eq!(a.hits(), hits, "a declared oversize body never reaches the backend");
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
        "c".repeat(2000)
    );
    let answer = raw_exchange(proxy.addr, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "streamed body: {answer}");
    let small = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let answer = raw_exchange(proxy.addr, small.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "a small body passes: {answer}");
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let a = Backend::start("a").await;
    let limits = "[limits]\nmax_connections = 2\n";
    let proxy = TestProxy::start(&config(limits, &[site("a", 1, 0, &[a.addr])])).await;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // The third connection is accepted by the kernel but not served...
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    // ...until one of the two closes.
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn an_http2_connection_trickling_an_unfinished_request_is_closed() {
    // HTTP/2 slowloris: one byte of a HEADERS frame every 200 ms. Before the fix every
    // byte reset the idle timer and such connections stayed open for good.
    let a = Backend::start("a").await;
    let timeouts = "[timeouts]\nclient_header = \"1s\"\nidle = \"2s\"\n";
    let proxy = TestProxy::start(&config(timeouts, &[site("a", 1, 0, &[a.addr])])).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    writer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // empty SETTINGS
    let trickle = tokio::spawn(async move {
        // A HEADERS frame header announcing 200 bytes on stream 1, then its bytes, slowly.
        let frame = [&[0u8, 0, 200, 1, 4, 0, 0, 0, 1][..], &[0x82u8; 200][..]].concat();
        for byte in frame {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            // pacing: a byte every 200 ms, a HEADERS frame that trickles.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut sink)).await;
    trickle.abort();
    assert!(closed.is_ok(), "still open after 8 s of trickled bytes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_chunked_upload_quoting_a_content_length_line_in_its_body_passes() {
    // The check for a head with both framings looks at the head only, never the body.
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let body = "--b\r\nContent-Length: 3\r\n\r\nabc\r\n--b--\r\n";
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
         POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
}

/// A chunk size no implementation could deliver (2^63 bytes: hyper accepts up to 2^64,
/// NGINX and HAProxy refuse it) is an invalid chunk: 400, the connection closed, and the
/// upstream request cut.
#[tokio::test]
async fn a_chunk_of_2_to_the_63_bytes_is_refused_with_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // pacing: the huge chunk size arrives in a read of its own, after the first chunk.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"8000000000000000\r\nabc").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the connection should close: {answer}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// The same size arriving in the very read that carries the head: hyper has not
/// finished the head, so the connection closes without an answer, and nothing of the
/// request reaches a backend.
#[tokio::test]
async fn a_chunk_of_2_to_the_63_bytes_with_its_head_never_reaches_a_backend() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let request = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\nabc";
    let started = std::time::Instant::now();
    let answer = raw_exchange(proxy.addr, request, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the connection should close"
    );
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(a.hits(), hits, "nothing of it reached the backend");
}

/// A head pipelined behind another, with both framings: refused like any other, and it
/// never reaches the backend (the scan follows the stream from head to head).
#[tokio::test]
async fn a_pipelined_head_with_both_framings_is_refused_with_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw_exchange(proxy.addr, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer}");
    assert_eq!(a.hits(), hits + 1, "only the first request reached the backend");
}

/// RFC 9112 3.2: a Host that is not one `host[:port]` (a list, a blank inside) is
/// refused with 400, as NGINX does; nothing of it reaches a backend.
#[tokio::test]
async fn a_host_with_a_comma_or_a_blank_inside_is_refused_with_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let hits = a.hits();
    for host in [
        "a.example, b.example",
        "a.example,b.example",
        "a.example b.example",
        "a.example\tb",
    ] {
        let request = format!("GET /headers HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "Host: {host:?}: {answer}");
    }
    assert_eq!(a.hits(), hits, "nothing reached the backend");
    for host in ["a.example:8080", "[::1]:80", "127.0.0.1", "xn--bcher-kva.example."] {
        let request = format!("GET /headers HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "Host: {host:?}: {answer}");
    }
}

/// Two sites, each the only one of a route named after a host.
fn two_hosts() -> String {
    "[[route]]\nname = \"a\"\nhost = \"a.example\"\nweights = { a = 100 }\n\
     [[route]]\nname = \"other\"\nhost = \"other.example\"\nweights = { b = 100 }\n"
        .to_string()
}

/// RFC 9112 3.2.2: a request in absolute form is routed and forwarded by its target's
/// authority, whatever its Host says (it was routed by Host and forwarded with it).
#[tokio::test]
async fn an_absolute_form_target_is_routed_and_forwarded_by_its_authority() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let sites = [site("a", 1, 0, &[a.addr]), site("b", 1, 0, &[b.addr])];
    let proxy = TestProxy::start(&config(&two_hosts(), &sites)).await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET http://other.example/headers?x=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-site: b\r\n"), "routed by the target: {answer}");
    assert!(answer.contains("\nhost: other.example\n"), "{answer}");
    assert!(answer.contains("\nx-forwarded-host: other.example\n"), "{answer}");
    let hits = (a.hits(), b.hits());
    for target in ["http://user@other.example/headers", "ftp://other.example/headers"] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: other.example\r\n\r\n");
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    assert_eq!((a.hits(), b.hits()), hits, "nothing reached a backend");
}

/// An HTTP/2 connection with prior knowledge to `addr`, whatever host the requests
/// name.
async fn h2_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, connection) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// RFC 9113 8.3.1: an HTTP/2 request whose `host` names another entity than its
/// `:authority` is malformed: 400, never routed by either (it was routed by `host`).
#[tokio::test]
async fn an_http2_host_that_contradicts_the_authority_is_refused_with_400() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let sites = [site("a", 1, 0, &[a.addr]), site("b", 1, 0, &[b.addr])];
    let proxy = TestProxy::start(&config(&two_hosts(), &sites)).await;
    let mut h2 = h2_connection(proxy.addr).await;
    let port = proxy.addr.port();
    let hits = (a.hits(), b.hits());
    for (authority, host) in [
        (format!("a.example:{port}"), "other.example".to_string()),
        ("a.example".to_string(), "a.example:8080".to_string()),
    ] {
        let request = Request::get(format!("http://{authority}/headers"))
            .header("host", &host)
            .body(Empty::new())
            .unwrap();
        let response = h2.send_request(request).await.unwrap();
        assert_eq!(response.status(), 400, ":authority {authority}, host {host}");
    }
    assert_eq!((a.hits(), b.hits()), hits, "nothing reached a backend");
    // The same entity written another way (case, the scheme's default port) passes.
    for (authority, host) in [
        (format!("a.example:{port}"), format!("A.Example:{port}")),
        ("a.example".to_string(), "a.example:80".to_string()),
    ] {
        let request = Request::get(format!("http://{authority}/headers"))
            .header("host", &host)
            .body(Empty::new())
            .unwrap();
        let response = h2.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, ":authority {authority}, host {host}");
        assert_eq!(response.headers()["x-site"], "a");
    }
}

/// A backend that switches protocols on `/switch` whatever the request asked, and
/// answers anything else with a short 200.
async fn switching_backend() -> SocketAddr {
    let answer = |head: &[u8]| -> &'static [u8] {
        if head.starts_with(b"GET /switch ") {
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        }
    };
    scripted_backend(answer, Duration::ZERO, b"").await
}

/// A 101 to a request that asked for no upgrade leaves nothing to tunnel: the client
/// gets 502 (it got the 101 and then the end of its connection).
#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_answered_502() {
    let backend = switching_backend().await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[backend])])).await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET /switch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let mut h2 = h2_connection(proxy.addr).await;
    let request = Request::get(proxy.url("/switch")).body(Empty::new()).unwrap();
    let response = h2.send_request(request).await.expect("an answer, not a reset");
    assert_eq!(response.status(), 502, "an HTTP/2 client");
}

/// hyper sends an HTTP/1.1 client the response's trailers only when it sent `TE:
/// trailers`; the `Trailer` header that announces them goes with them.
#[tokio::test]
async fn a_trailer_header_goes_with_trailers_an_http11_client_does_not_take() {
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n",
    )
    .await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[backend])])).await;
    let without = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .to_ascii_lowercase();
    assert!(without.starts_with("http/1.1 200"), "{without}");
    assert!(without.contains("hello"), "{without}");
    assert!(!without.contains("x-checksum"), "no trailer, none announced: {without}");
    let with = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .to_ascii_lowercase();
    assert!(with.contains("\r\ntrailer: x-checksum\r\n"), "{with}");
    assert!(with.contains("\r\n0\r\nx-checksum: 42\r\n"), "{with}");
    // A body framed by length has no room for trailers, whatever the client takes.
    let by_length = raw_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTrailer: x-checksum\r\n\r\nhello").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[by_length])])).await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(!answer.contains("trailer:"), "{answer}");
}

/// RFC 9113 3.4: a client that starts as HTTP/2 and sends a wrong preface gets a
/// GOAWAY(PROTOCOL_ERROR) before the connection closes (it was closed silently): in one
/// read, and with the error in a later read than the start.
#[tokio::test]
async fn an_invalid_http2_preface_gets_goaway_protocol_error() {
    use common::h2_frames::{RawH2, GOAWAY, PROTOCOL_ERROR, SETTINGS};
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let cases: [&[&[u8]]; 2] = [
        &[b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"],
        &[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\r"],
    ];
    for writes in cases {
        let mut raw = RawH2::connect(proxy.addr, writes[0]).await;
        for more in &writes[1..] {
            // pacing: each piece of the preface arrives in a read of its own.
            tokio::time::sleep(Duration::from_millis(100)).await;
            raw.send(more).await;
        }
        let frames = raw.frames_until(Duration::from_secs(5), |f| f.kind == GOAWAY).await;
        assert_eq!(frames.first().map(|f| f.kind), Some(SETTINGS), "{writes:?}: {frames:?}");
        let goaway = frames.iter().find(|f| f.kind == GOAWAY);
        assert_eq!(
            goaway.and_then(|f| f.error_code()),
            Some(PROTOCOL_ERROR),
            "{writes:?}: {frames:?}"
        );
        assert!(raw.next_frame(Duration::from_secs(5)).await.is_none(), "then closed");
    }
    assert_eq!(a.hits(), 0);
    // HTTP/1 requests with a method that starts like the preface are still HTTP/1.
    let answer = raw_exchange(
        proxy.addr,
        b"PRI /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
}

/// RFC 9113 6.9.1: a WINDOW_UPDATE that takes a stream's window past 2^31-1 resets that
/// stream with FLOW_CONTROL_ERROR while it still sends, and the connection serves on.
#[tokio::test]
async fn a_window_update_overflowing_a_stream_resets_it_with_flow_control_error() {
    use common::h2_frames::{get, headers, window_update, RawH2, FLOW_CONTROL_ERROR, HEADERS, PREFACE, RST_STREAM};
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut raw = RawH2::connect(proxy.addr, PREFACE).await;
    // In flight at the proxy, while the response is awaited and while it streams.
    for (stream, path) in [(1, "/sleep/300"), (3, "/download/1048576")] {
        raw.send(&headers(stream, true, &get(path))).await;
        if stream == 3 {
            let head = raw
                .frames_until(Duration::from_secs(5), |f| f.kind == HEADERS && f.stream == 3)
                .await;
            assert!(head.iter().any(|f| f.kind == HEADERS && f.stream == 3), "{head:?}");
        }
        // Twice: the first may only fill a window that sent data emptied.
        raw.send(&window_update(stream, 0x7fff_ffff)).await;
        raw.send(&window_update(stream, 0x7fff_ffff)).await;
        let frames = raw
            .frames_until(Duration::from_secs(5), |f| f.kind == RST_STREAM && f.stream == stream)
            .await;
        let reset = frames.iter().find(|f| f.kind == RST_STREAM && f.stream == stream);
        let seen: Vec<_> = frames.iter().map(|f| (f.kind, f.stream, f.error_code())).collect();
        assert_eq!(
            reset.and_then(|f| f.error_code()),
            Some(FLOW_CONTROL_ERROR),
            "stream {stream}: {seen:?}"
        );
    }
    // A stream whose response is complete while its request is still open is closed
    // with RST_STREAM(NO_ERROR) (RFC 9113 8.1); a WINDOW_UPDATE after that finds a closed
    // stream and is ignored (RFC 9113 5.1): no second reset, and the connection serves on.
    raw.send(&window_update(0, 1 << 20)).await; // what the download took of the connection's window
    raw.send(&headers(5, false, &get("/"))).await;
    let frames = raw
        .frames_until(Duration::from_secs(5), |f| f.kind == RST_STREAM && f.stream == 5)
        .await;
    let reset = frames.iter().find(|f| f.kind == RST_STREAM && f.stream == 5);
    assert_eq!(reset.and_then(|f| f.error_code()), Some(0), "{frames:?}");
    raw.send(&window_update(5, 0x7fff_ffff)).await;
    raw.send(&headers(7, true, &get("/"))).await;
    let frames = raw
        .frames_until(Duration::from_secs(5), |f| f.kind == HEADERS && f.stream == 7)
        .await;
    assert!(
        frames.iter().any(|f| f.kind == HEADERS && f.stream == 7),
        "served on: {frames:?}"
    );
    assert!(!frames.iter().any(|f| f.kind == RST_STREAM), "{frames:?}");
}
