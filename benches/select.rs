//! Micro-benchmarks of the per-request work that is ours: choosing a backend from the
//! snapshot, and rewriting a request head. Run: `cargo bench --bench select`.

use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderValue;
use splitgate::health::HealthRegistry;
use splitgate::proxy::headers::{prepare_request, ClientInfo};
use splitgate::routing::{sequence, Routing};

fn routing() -> Routing {
    let text = r#"
        [[listener]]
        bind = "127.0.0.1:1"
        [[site]]
        name = "a"
        weight = 50
        backends = ["127.0.0.1:2", "127.0.0.1:3"]
        [[site]]
        name = "b"
        weight = 30
        backends = ["127.0.0.1:4"]
        [[site]]
        name = "c"
        weight = 20
        backends = ["127.0.0.1:5"]
    "#;
    let config = Arc::new(splitgate::config::parse(Path::new("bench"), text).expect("bench config"));
    Routing::standalone(config, &HealthRegistry::new())
}

fn selection(c: &mut Criterion) {
    let r = routing();
    c.bench_function("pick first try (3 sites, 50/30/20)", |b| {
        b.iter(|| black_box(r.pick(&[])))
    });
    let tried = [r.pick(&[]).expect("a pick")];
    c.bench_function("pick a retry", |b| b.iter(|| black_box(r.pick(&tried))));
    c.bench_function("build SWRR table 70/30/1", |b| {
        b.iter(|| black_box(sequence(&[70, 30, 1])))
    });
}

fn header_rules(c: &mut Criterion) {
    let client = ClientInfo {
        addr: [192, 0, 2, 10].into(),
        ip: HeaderValue::from_static("192.0.2.10"),
        proto: HeaderValue::from_static("http"),
    };
    let request = http::Request::get("/api/v1/items?page=2")
        .header("host", "shop.example")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("connection", "keep-alive")
        .header("x-forwarded-for", "198.51.100.1")
        .body(())
        .expect("bench request");
    let (parts, _) = request.into_parts();
    c.bench_function("prepare_request (typical browser head)", |b| {
        b.iter_batched(
            || {
                let mut copy = http::Request::new(());
                *copy.uri_mut() = parts.uri.clone();
                *copy.headers_mut() = parts.headers.clone();
                copy.into_parts().0
            },
            |mut p| {
                prepare_request(&mut p, &client, None);
                p
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, selection, header_rules);
criterion_main!(benches);
