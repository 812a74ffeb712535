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
