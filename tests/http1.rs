//! The proxy's own HTTP/1.1 server side, from a raw client's point of view: 100-continue,
//! pipelining answered in order, HTTP/1.0 keep-alive, HEAD, an upgrade carrying bytes
//! sent right behind its head, and a body the backend never read, which must never be
//! read as the next request.

mod common;

use std::time::Duration;

use common::{config, site, Backend, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(5);

/// Reads up to the end of one head (byte by byte, so nothing after it is taken).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(LIMIT, stream.read(&mut byte))
            .await
            .expect("a head in time")
            .expect("a read");
        assert_eq!(n, 1, "closed inside a head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Reads one answer with a Content-Length body: the head (lower case) and the body.
async fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let head = read_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut body))
        .await
        .expect("a body in time")
        .expect("the whole body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("the proxy closes")
        .expect("a clean close");
    String::from_utf8_lossy(&rest).into_owned()
}

#[tokio::test]
async fn a_client_that_expects_100_continue_gets_it_before_sending_its_body() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    let interim = read_head(&mut stream).await;
    assert_eq!(interim, "http/1.1 100 continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let (head, body) = read_answer(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.starts_with("bytes=5 "), "{body}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut requests = String::new();
    for code in [201, 202, 203, 204, 205] {
        requests.push_str(&format!("GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    requests.push_str("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    requests.push_str("GET /status/206 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(requests.as_bytes()).await.unwrap();
    for code in [201, 202, 203, 204, 205] {
        let (head, _) = read_answer(&mut stream).await;
        assert!(head.starts_with(&format!("http/1.1 {code}")), "{code}: {head}");
    }
    let (head, body) = read_answer(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 200") && body.starts_with("bytes=3 "),
        "{head}{body}"
    );
    let (head, _) = read_answer(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 206") && head.contains("connection: close"),
        "{head}"
    );
    assert_eq!(read_to_close(&mut stream).await, "", "nothing after the last answer");
}

#[tokio::test]
async fn an_http10_client_keeps_its_connection_only_when_it_asks() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /status/200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream).await;
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert_eq!(body, "a");
    stream.write_all(b"GET /status/200 HTTP/1.0\r\n\r\n").await.unwrap();
    let (head, _) = read_answer(&mut stream).await;
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(read_to_close(&mut stream).await, "");
}

#[tokio::test]
async fn a_head_answer_keeps_its_length_and_carries_no_body() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"HEAD /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with("http/1.1 200") && head.contains("content-length: 1\r\n"),
        "{head}"
    );
    // The next answer follows at once: had a body been sent, its byte would come first.
    stream
        .write_all(b"GET /status/202 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (next, body) = read_answer(&mut stream).await;
    assert!(next.starts_with("http/1.1 202"), "{next}");
    assert_eq!(body, "a");
}

#[tokio::test]
async fn bytes_sent_right_behind_an_upgrade_head_reach_the_backend() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly bytes")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let mut echoed = [0u8; 11];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut echoed))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(&echoed, b"early bytes");
}

/// A backend that answers without reading the body: what is left of the body is never
/// read as the next request (it would be a request smuggled past every check): it is
/// moved on to the backend, or the connection closes after the answer.
#[tokio::test]
async fn a_body_the_backend_did_not_read_is_never_taken_for_the_next_request() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let smuggled = "GET /status/299 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4000);
    let request = format!(
        "POST /status/201 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}\
         GET /status/202 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut read, mut write) = stream.split();
    let sending = async {
        let _ = write.write_all(request.as_bytes()).await;
    };
    let mut answer = Vec::new();
    let reading = tokio::time::timeout(LIMIT, read.read_to_end(&mut answer));
    let ((), read_result) = tokio::join!(sending, reading);
    let answer = String::from_utf8_lossy(&answer);
    assert!(read_result.is_ok(), "the connection ends: {answer}");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(!answer.contains(" 299 "), "a body read as a request: {answer}");
    let answers = answer.matches("HTTP/1.1 ").count();
    assert!(
        answers == 1 || (answers == 2 && answer.contains("HTTP/1.1 202")),
        "{answer}"
    );
}

/// An upgrade asked for with a body (curl's `--http2` on a POST) cannot hand the
/// connection over: it goes to the backend as a plain request, without the Upgrade
/// field, so the backend answers it as usual; the connection goes on.
#[tokio::test]
async fn an_upgrade_asked_with_a_body_is_forwarded_as_a_plain_request() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(
                b"POST /headers HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\nContent-Length: 2\r\n\r\nhi",
            )
            .await
            .unwrap();
        let (head, body) = read_answer(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            !body.to_ascii_lowercase().contains("upgrade"),
            "the backend saw: {body}"
        );
    }
}
