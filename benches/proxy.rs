//! End-to-end load bench: in-process demo backends and the proxy on loopback, driven by
//! many keep-alive HTTP/1.1 connections for a few seconds; prints requests/s and
//! latency percentiles. Run: `cargo bench --bench proxy` (knobs: BENCH_SECS, BENCH_CONNS).
//! For comparisons against NGINX and HAProxy use `../shared/bench/compare.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use splitgate::demo::spawn_demo_backend;
use splitgate::server::Server;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn connection_loop(addr: std::net::SocketAddr, until: Instant) -> Vec<u32> {
    let mut latencies = Vec::new();
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return latencies;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return latencies;
    };
    tokio::spawn(connection);
    while Instant::now() < until {
        let request = Request::get("/").header("host", "bench").body(Empty::<Bytes>::new());
        let Ok(request) = request else { break };
        let started = Instant::now();
        let Ok(response) = sender.send_request(request).await else {
            break;
        };
        if response.into_body().collect().await.is_err() {
            break;
        }
        latencies.push(started.elapsed().as_micros() as u32);
    }
    latencies
}

fn main() {
    // `cargo bench` passes flags such as --bench; this bench takes none.
    let secs = env("BENCH_SECS", 5);
    let conns = env("BENCH_CONNS", 64);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let a = spawn_demo_backend("a").await.expect("backend a");
        let b = spawn_demo_backend("b").await.expect("backend b");
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[site]]\nname = \"a\"\nweight = 7\nbackends = [\"{a}\"]\n[[site]]\nname = \"b\"\nweight = 3\nbackends = [\"{b}\"]\n"
        );
        let config = splitgate::config::parse(Path::new("bench"), &text).expect("bench config");
        let server = Server::start(config, None).await.expect("proxy");
        let addr = server.proxy_addrs().await[0];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let until = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..conns).map(|_| tokio::spawn(connection_loop(addr, until))).collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all.sort_unstable();
        let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
        println!(
            "proxy bench: {conns} connections, {secs}s: {:.0} requests/s, p50 {} us, p99 {} us ({} requests)",
            all.len() as f64 / secs as f64,
            pct(0.50),
            pct(0.99),
            all.len()
        );
        server.shutdown().await;
    });
}
