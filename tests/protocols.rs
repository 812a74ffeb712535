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
    let h2: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    for _ in 0..3 {
        let response = h2
            .request(
                Request::get(proxy.url("/headers"))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = String::from_utf8(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
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
    let body = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for gone in ["x-private", "keep-alive", "proxy-authorization", "te:"] {
        assert!(!body.contains(gone), "{gone} reached the backend:\n{body}");
    }
    assert!(body.contains("x-end-to-end: kept"), "{body}");
    assert!(body.contains("host: shop.example"), "{body}");
    assert!(
        body.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("x-forwarded-proto: http"), "{body}");
    assert!(body.contains("x-forwarded-host: shop.example"), "{body}");
    assert!(body.contains("via: 1.1 splitgate"), "{body}");
}

#[tokio::test]
async fn every_backend_refusing_gives_502_with_a_short_text() {
    let proxy = TestProxy::start(&config(
        "",
        &[
            site("a", 1, 0, &[refused_addr()]),
            site("b", 1, 0, &[refused_addr()]),
        ],
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
    for message in [&b"hello"[..], b"through the tunnel", &[0u8, 255, 1, 254]] {
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
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the proxy should close a slow client's connection"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "[timeouts]\nidle = \"300ms\"\n",
        &[site("a", 1, 0, &[a.addr])],
    ))
    .await;
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
    assert!(
        closed.is_ok(),
        "the idle connection should be closed by the proxy"
    );
}
