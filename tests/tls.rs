//! TLS: HTTPS listeners (ALPN h2/http1.1, SNI, TLS 1.2+ only, certificates reloaded),
//! and HTTPS to sites (CA verification, mTLS, h2), with certificates made by rcgen.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::tls::{Leaf, Pki};
use common::{client, eventually, get, Backend, TestProxy};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn listener_tls(leaf: &Leaf, extra: &[&Leaf]) -> String {
    let extra: Vec<String> = extra
        .iter()
        .map(|l| format!("{{ cert = \"{}\", key = \"{}\" }}", l.cert.display(), l.key.display()))
        .collect();
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\", certificates = [{}] }}\n[admin]\nbind = \"127.0.0.1:0\"\n",
        leaf.cert.display(),
        leaf.key.display(),
        extra.join(", ")
    )
}

fn plain_site(addr: SocketAddr) -> String {
    format!("[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{addr}\"]\n")
}

async fn handshake(pki: &Pki, addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(pki.client(alpn))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

fn peer_cert(stream: &TlsStream<tokio::net::TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

async fn get_over(stream: TlsStream<tokio::net::TcpStream>, path: &str) -> (http::Version, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = Request::get(format!("https://a.test{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = request;
        request.headers_mut().insert("host", "a.test".parse().unwrap());
        sender.send_request(request).await.unwrap()
    };
    assert_eq!(response.status(), 200);
    let version = response.version();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_https_listener_serves_http2_and_http1_by_alpn() {
    let pki = Pki::new("l");
    let leaf = pki.leaf("a", &["a.test"]);
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&(listener_tls(&leaf, &[]) + &plain_site(backend.addr))).await;

    let stream = handshake(&pki, proxy.addr, "a.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, body) = get_over(stream, "/headers").await;
    assert_eq!(version, http::Version::HTTP_2);
    assert!(body.contains("x-forwarded-proto: https"), "{body}");

    let stream = handshake(&pki, proxy.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (version, body) = get_over(stream, "/").await;
    assert_eq!((version, body.as_str()), (http::Version::HTTP_11, "a"));
}

/// RFC 9113 3.4: a client that chose h2 by ALPN must open with the HTTP/2 preface; an
/// HTTP/1 request line in its place gets GOAWAY(PROTOCOL_ERROR) and the connection
/// closes (it was served as HTTP/1.1).
#[tokio::test]
async fn a_client_that_chose_h2_by_alpn_and_sends_no_preface_gets_goaway() {
    use common::h2_frames::{RawH2, GOAWAY, PROTOCOL_ERROR};
    let pki = Pki::new("preface");
    let leaf = pki.leaf("a", &["a.test"]);
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&(listener_tls(&leaf, &[]) + &plain_site(backend.addr))).await;
    let stream = handshake(&pki, proxy.addr, "a.test", &[b"h2"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut raw = RawH2::over(stream, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let frames = raw.frames_until(Duration::from_secs(5), |f| f.kind == GOAWAY).await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert_eq!(goaway.and_then(|f| f.error_code()), Some(PROTOCOL_ERROR), "{frames:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn sni_picks_the_certificate_for_each_name() {
    let pki = Pki::new("sni");
    let (a, b) = (
        pki.leaf("a", &["a.test", "127.0.0.1"]),
        pki.leaf("b", &["b.test", "*.b.test"]),
    );
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&(listener_tls(&a, &[&b]) + &plain_site(backend.addr))).await;
    assert_eq!(peer_cert(&handshake(&pki, proxy.addr, "a.test", &[]).await), a.der);
    assert_eq!(peer_cert(&handshake(&pki, proxy.addr, "b.test", &[]).await), b.der);
    assert_eq!(peer_cert(&handshake(&pki, proxy.addr, "api.b.test", &[]).await), b.der);
    // No SNI (an IP address): the default certificate.
    assert_eq!(peer_cert(&handshake(&pki, proxy.addr, "127.0.0.1", &[]).await), a.der);
}

/// A hand-made TLS 1.1 ClientHello (rustls cannot speak 1.1): the record layer and
/// client_version say 3.2, with one TLS 1.1 cipher suite and no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x02, (handshake.len() >> 8) as u8, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_client_offering_only_tls_1_1_is_refused() {
    let pki = Pki::new("old");
    let leaf = pki.leaf("a", &["a.test"]);
    let backend = Backend::start("a").await;
    let proxy = TestProxy::start(&(listener_tls(&leaf, &[]) + &plain_site(backend.addr))).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.first() != Some(&0x16),
        "the server must not answer with a ServerHello: {answer:?}"
    );
    if let Some(first) = answer.first() {
        assert_eq!(*first, 0x15, "an alert record");
    }
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_handshakes_only() {
    let pki = Pki::new("reload");
    let first = pki.leaf("site", &["a.test"]);
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("splitgate.toml");
    let text = listener_tls(&first, &[]) + &plain_site(backend.addr);
    let proxy = TestProxy::start(&text).await;

    let old = handshake(&pki, proxy.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&old), first.der);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old)).await.unwrap();
    tokio::spawn(conn);

    // The same file names get new content, as with a certificate renewal.
    let second = pki.leaf("site", &["a.test"]);
    assert_ne!(first.der, second.der);
    let config = splitgate::config::parse(&config_path, &text).unwrap();
    proxy.server.apply(config).await.unwrap();

    let fresh = handshake(&pki, proxy.addr, "a.test", &[]).await;
    assert_eq!(
        peer_cert(&fresh),
        second.der,
        "a new handshake sees the new certificate"
    );
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "a.test")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .expect("the open connection keeps working");
    assert_eq!(response.status(), 200);
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_a_config_error() {
    let pki = Pki::new("mismatch");
    let (a, b) = (pki.leaf("a", &["a.test"]), pki.leaf("b", &["b.test"]));
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n{}",
        a.cert.display(),
        b.key.display(),
        plain_site("127.0.0.1:1".parse().unwrap())
    );
    let error = splitgate::config::parse(Path::new("t.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("listener[0].tls.cert") && error.contains("is not the private key"),
        "{error}"
    );
    let missing = text.replace(&a.cert.display().to_string(), "/nonexistent/cert.pem");
    let error = splitgate::config::parse(Path::new("t.toml"), &missing)
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot read /nonexistent/cert.pem"), "{error}");
}

fn tls_site(addr: SocketAddr, tls: &str) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[health]\ninterval = \"200ms\"\nfall = 1\n[[site]]\nname = \"remote\"\nweight = 1\nbackends = [\"{addr}\"]\ntls = {{ {tls} }}\n"
    )
}

#[tokio::test]
async fn a_site_is_reached_over_https_verified_by_its_ca() {
    let pki = Pki::new("up");
    let leaf = pki.leaf("backend", &["127.0.0.1"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, false)).await;
    let proxy = TestProxy::start(&tls_site(backend.addr, &format!("ca = \"{}\"", pki.ca_path.display()))).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.unwrap(),
            (http::StatusCode::OK, "remote".to_string())
        );
    }
}

#[tokio::test]
async fn a_site_with_a_certificate_from_the_wrong_ca_is_marked_down() {
    let (pki, other) = (Pki::new("real"), Pki::new("other"));
    let leaf = pki.leaf("backend", &["127.0.0.1"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, false)).await;
    let proxy = TestProxy::start(&tls_site(
        backend.addr,
        &format!("ca = \"{}\"", other.ca_path.display()),
    ))
    .await;
    let down = eventually(Duration::from_secs(10), || !proxy.server.sites()[0].healthy).await;
    assert!(down.is_some(), "the health check fails on the unknown CA");
    let (status, _) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(backend.hits(), 0, "no request went to an unverified backend");
    let (_, metrics) = get(&client(), &proxy.admin_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("splitgate_upstream_connect_errors_total{site=\"remote\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_mtls_site_gets_the_configured_client_certificate() {
    let pki = Pki::new("mtls");
    let leaf = pki.leaf("backend", &["127.0.0.1"]);
    let me = pki.leaf("proxy-client", &["splitgate.test"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, true)).await;
    let ca = format!("ca = \"{}\"", pki.ca_path.display());

    let without = TestProxy::start(&tls_site(backend.addr, &ca)).await;
    assert_eq!(
        get(&client(), &without.url("/")).await.unwrap().0,
        502,
        "no client certificate, no entry"
    );

    let with = format!(
        "{ca}, client_cert = \"{}\", client_key = \"{}\"",
        me.cert.display(),
        me.key.display()
    );
    let proxy = TestProxy::start(&tls_site(backend.addr, &with)).await;
    assert_eq!(
        get(&client(), &proxy.url("/")).await.unwrap(),
        (http::StatusCode::OK, "remote".to_string())
    );
}

#[tokio::test]
async fn a_site_can_ask_for_http2_to_its_backends() {
    let pki = Pki::new("h2");
    let leaf = pki.leaf("backend", &["backend.internal"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, false)).await;
    let tls = format!(
        "ca = \"{}\", server_name = \"backend.internal\", protocol = \"h2\"",
        pki.ca_path.display()
    );
    let proxy = TestProxy::start(&tls_site(backend.addr, &tls)).await;
    let (status, body) = get(&client(), &proxy.url("/headers")).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("version: HTTP/2.0"), "{body}");
    assert!(
        !body.lines().any(|l| l.starts_with("host: ")),
        "no Host header contradicting :authority: {body}"
    );
    assert!(body.contains("x-forwarded-host: "), "{body}");
}

#[tokio::test]
async fn new_connections_to_a_tls_site_resume_the_tls_session() {
    let pki = Pki::new("resume");
    let leaf = pki.leaf("backend", &["127.0.0.1"]);
    let backend = Backend::start_tls("remote", pki.server(&leaf, false)).await;
    let text = tls_site(backend.addr, &format!("ca = \"{}\"", pki.ca_path.display())).replace("200ms", "1m");
    let proxy = TestProxy::start(&text).await;
    let client = client();
    // The backend closes every connection, so each request needs a new handshake.
    for _ in 0..4 {
        assert_eq!(get(&client, &proxy.url("/close")).await.unwrap().0, 200);
    }
    assert!(
        backend.resumed_handshakes() >= 3,
        "resumed: {}",
        backend.resumed_handshakes()
    );
}

#[tokio::test]
async fn a_tls_site_that_stalls_the_handshake_fails_fast_as_a_connect_error() {
    let pki = Pki::new("stall");
    let (hole, _task) = common::black_hole().await;
    let mut text = tls_site(hole, &format!("ca = \"{}\"", pki.ca_path.display()));
    text = text.replace(
        "[health]",
        "[timeouts]\nconnect = \"300ms\"\nresponse = \"10s\"\n[health]",
    );
    let proxy = TestProxy::start(&text).await;
    let started = std::time::Instant::now();
    let (status, _) = get(&client(), &proxy.url("/")).await.unwrap();
    assert_eq!(status, 502, "a connect failure, not a 504 after the response timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!proxy.server.sites()[0].healthy, "taken out at once");
}

#[tokio::test]
async fn a_sites_own_self_signed_certificate_can_be_its_ca_file_as_with_curl() {
    let pki = Pki::new("pinned");
    let own = pki.self_signed("site-own", &["127.0.0.1", "backend.internal"]);
    let backend = Backend::start_tls("remote", pki.server(&own, false)).await;
    let pinned = format!("ca = \"{}\"", own.cert.display());
    let proxy = TestProxy::start(&tls_site(backend.addr, &pinned)).await;
    assert_eq!(
        get(&client(), &proxy.url("/")).await.unwrap(),
        (http::StatusCode::OK, "remote".to_string())
    );

    // The name is still checked.
    let wrong_name = format!("{pinned}, server_name = \"elsewhere.internal\"");
    let proxy = TestProxy::start(&tls_site(backend.addr, &wrong_name)).await;
    assert_eq!(get(&client(), &proxy.url("/")).await.unwrap().0, 502);
}
