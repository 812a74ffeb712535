//! The client's address behind an L4 load balancer or trusted forwarders: a PROXY
//! protocol header (v1, v2 over IPv4 and IPv6, v2 LOCAL) names the client at the
//! backend, in the access log and for `client_ip` affinity, TLS listeners included; a
//! connection without it is closed with nothing forwarded; a trusted forwarder's
//! X-Forwarded-For names the client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Backend, TestProxy};

const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn v2_tcp4(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = V2.to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

fn v2_tcp6(source: std::net::Ipv6Addr) -> Vec<u8> {
    let mut header = V2.to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&[0x10, 0x00, 0, 80]);
    header
}

/// Sends `prefix`, then a GET of `path`, on `io`; the whole answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, prefix: &[u8], path: &str, extra: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    io.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn through(addr: SocketAddr, prefix: &[u8], path: &str) -> String {
    exchange(TcpStream::connect(addr).await.unwrap(), prefix, path, "").await
}

fn forwarded_for(answer: &str) -> Option<&str> {
    answer.lines().find_map(|l| l.strip_prefix("x-forwarded-for: "))
}

fn config(listener_extra: &str, extra: &str, sites: &[String]) -> String {
    format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{listener_extra}\n[admin]\nbind = \"127.0.0.1:0\"\n{extra}\n{}",
        sites.join("\n")
    )
}

#[tokio::test]
async fn proxy_protocol_headers_name_the_client_at_the_backend_and_in_the_access_log() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!("[access_log]\npath = \"{}\"\nformat = \"json\"\n", log.display());
    let proxy = TestProxy::start(&config(
        "proxy_protocol = true",
        &extra,
        &[common::site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let v1 = through(proxy.addr, b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n", "/headers").await;
    assert_eq!(forwarded_for(&v1), Some("203.0.113.7"), "{v1}");
    let four = through(proxy.addr, &v2_tcp4([198, 51, 100, 9], 4444), "/headers").await;
    assert_eq!(forwarded_for(&four), Some("198.51.100.9"), "{four}");
    let six = through(proxy.addr, &v2_tcp6("2001:db8::7".parse().unwrap()), "/headers").await;
    assert_eq!(forwarded_for(&six), Some("2001:db8::7"), "{six}");
    let mut local = V2.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let health = through(proxy.addr, &local, "/headers").await;
    assert_eq!(
        forwarded_for(&health),
        Some("127.0.0.1"),
        "LOCAL: the peer is the client: {health}"
    );

    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    common::eventually(Duration::from_secs(2), || read().lines().count() >= 4).await;
    let logged = read();
    for client in ["203.0.113.7", "198.51.100.9", "2001:db8::7"] {
        assert!(
            logged.contains(&format!("\"client\":\"{client}\"")),
            "{client}: {logged}"
        );
    }
}

#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed_and_nothing_is_forwarded() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config(
        "proxy_protocol = true",
        "",
        &[common::site("a", 1, 0, &[a.addr])],
    ))
    .await;
    let hits = a.hits();
    assert_eq!(through(proxy.addr, b"", "/").await, "", "no header: closed, unanswered");
    assert_eq!(through(proxy.addr, b"PROXY TCP4 nonsense\r\n", "/").await, "");
    let mut bad = V2.to_vec();
    bad.extend_from_slice(&[0x31, 0x11, 0, 0]);
    assert_eq!(through(proxy.addr, &bad, "/").await, "");
    assert_eq!(a.hits(), hits, "nothing reached the backend");
}

#[tokio::test]
async fn a_tls_listener_reads_the_header_before_the_handshake() {
    let pki = common::tls::Pki::new("pp");
    let leaf = pki.leaf("front", &["localhost"]);
    let a = Backend::start("a").await;
    let tls = format!(
        "proxy_protocol = true\ntls = {{ cert = \"{}\", key = \"{}\" }}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let proxy = TestProxy::start(&config(&tls, "", &[common::site("a", 1, 0, &[a.addr])])).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 6000 443\r\n")
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(pki.client(&[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS after the header");
    let answer = exchange(stream, b"", "/headers", "").await;
    assert_eq!(forwarded_for(&answer), Some("192.0.2.44"), "{answer}");
}

#[tokio::test]
async fn client_ip_affinity_spreads_clients_behind_a_load_balancer_by_their_real_addresses() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config(
        "proxy_protocol = true",
        "[affinity]\nkey = \"client_ip\"\n",
        &[common::site("a", 1, 0, &[a.addr]), common::site("b", 1, 0, &[b.addr])],
    ))
    .await;
    let site_of = |answer: String| answer.rsplit("\r\n\r\n").next().unwrap_or_default().to_string();
    let mut to_a = 0;
    for i in 0..200u16 {
        let header = format!("PROXY TCP4 10.9.{}.{} 127.0.0.1 5000 80\r\n", i / 200, i % 200 + 1);
        let first = site_of(through(proxy.addr, header.as_bytes(), "/").await);
        let again = site_of(through(proxy.addr, header.as_bytes(), "/").await);
        assert_eq!(first, again, "a client keeps its site");
        if first == "a" {
            to_a += 1;
        }
    }
    println!("200 clients behind one load balancer: {to_a} to a, {} to b", 200 - to_a);
    assert!(
        (60..=140).contains(&to_a),
        "spread by the real addresses: {to_a} of 200 to a"
    );
}

#[tokio::test]
async fn a_trusted_forwarders_x_forwarded_for_names_the_client() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!(
        "[client_ip]\ntrusted = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n[access_log]\npath = \"{}\"\nformat = \"json\"\n",
        log.display()
    );
    let proxy = TestProxy::start(&config("", &extra, &[common::site("a", 1, 0, &[a.addr])])).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let answer = exchange(stream, b"", "/headers", "X-Forwarded-For: 198.51.100.1, 10.1.2.3\r\n").await;
    assert_eq!(
        forwarded_for(&answer),
        Some("198.51.100.1, 10.1.2.3, 127.0.0.1"),
        "appended as before: {answer}"
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    common::eventually(Duration::from_secs(2), || !read().is_empty()).await;
    let logged = read();
    assert!(logged.contains("\"client\":\"198.51.100.1\""), "{logged}");
}
