//! Large bodies stream through the real binary both ways, byte-exact, while the
//! proxy's memory stays flat (it never holds a whole body).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::backend::PatternBody;
use common::process::ProxyProcess;
use common::{pattern_fnv, site, Backend, Fnv};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SIZE: u64 = 256 * 1024 * 1024;
/// Far below the 256 MiB that buffering one body would take.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_and_upload_stream_through_exactly_with_flat_memory() {
    let backend = Backend::start("a").await;
    let addr = backend.addr;
    let proxy = ProxyProcess::start(move |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n{}",
            site("a", 1, 0, &[addr])
        )
    });
    let expected = pattern_fnv(SIZE);

    let downloader: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let url = format!("http://{}/download/{SIZE}", proxy.addr);
    let response = downloader
        .request(Request::get(url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut received, mut fnv) = (0u64, Fnv::default());
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), body.frame())
        .await
        .expect("download stalled")
    {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
            fnv.update(data);
        }
    }
    assert_eq!(received, SIZE);
    assert_eq!(fnv.0, expected, "downloaded bytes differ");

    let uploader: Client<HttpConnector, PatternBody> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = Request::post(format!("http://{}/upload", proxy.addr))
        .header("content-length", SIZE.to_string())
        .body(PatternBody::new(SIZE))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(120), uploader.request(request))
        .await
        .expect("upload stalled")
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = common::text(response.into_body()).await;
    assert_eq!(answer, format!("bytes={SIZE} fnv={expected:x}"));

    let peak = proxy.peak_rss_kib();
    assert!(peak > 0, "could not read the proxy's memory");
    assert!(
        peak < MAX_PEAK_RSS_KIB,
        "proxy peak RSS {peak} KiB after moving 512 MiB"
    );
}

/// A backend serving a body of `len` pattern bytes with its Content-Length, on
/// kept-alive connections; counts the requests it served.
async fn length_backend(len: usize) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let answer: std::sync::Arc<Vec<u8>> = std::sync::Arc::new(
        [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes(),
            body,
        ]
        .concat(),
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, count) = (answer.clone(), count.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, served)
}

/// Between two plain sockets a body of known length moves with splice(2): it arrives
/// byte-exact, both connections carry the next request, and the bytes are counted in
/// `splitgate_client_spliced_bytes_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_of_known_length_is_spliced_and_both_connections_stay_usable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LEN: usize = 8 * 1024 * 1024 + 17;
    let (addr, served) = length_backend(LEN).await;
    let proxy = ProxyProcess::start(move |listen, admin| {
        format!(
            "[[listener]]\nbind = \"{listen}\"\n[admin]\nbind = \"{admin}\"\n\
             [health]\ninterval = \"1h\"\n{}",
            site("a", 1, 0, &[addr])
        )
    });
    let expected: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for round in 0..3 {
        client.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                client.read(&mut byte).await.unwrap(),
                1,
                "round {round}: closed in the head"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.contains(&format!("content-length: {LEN}\r\n")), "{head}");
        let mut body = vec![0u8; LEN];
        tokio::time::timeout(Duration::from_secs(60), client.read_exact(&mut body))
            .await
            .expect("the body in time")
            .unwrap();
        assert!(body == expected, "round {round}: the body differs");
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    let metrics = common::get(&common::client(), &format!("http://{}/metrics", proxy.admin))
        .await
        .unwrap()
        .1;
    let spliced: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("splitgate_client_spliced_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        spliced >= (3 * (LEN - 64 * 1024)) as f64,
        "spliced {spliced}:\n{metrics}"
    );
}
