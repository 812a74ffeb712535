//! Micro-benchmarks of the per-request work that is ours: choosing a backend from the
//! snapshot, and rewriting a request head. Run: `cargo bench --bench select`.

use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderValue;
use splitgate::internals::HealthRegistry;
use splitgate::internals::{affinity, sequence, Routing};
use splitgate::internals::{prepare_request, ClientInfo};

fn routing() -> Routing {
    routing_with("")
}

fn routing_with(extra: &str) -> Routing {
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
    "#
    .to_string()
        + extra;
    let config = Arc::new(splitgate::config::parse(Path::new("bench"), &text).expect("bench config"));
    Routing::standalone(config, &HealthRegistry::new())
}

fn selection(c: &mut Criterion) {
    let r = routing();
    c.bench_function("pick first try (3 sites, 50/30/20)", |b| {
        b.iter(|| black_box(r.pick(&[])))
    });
    let tried = [r.pick(&[]).expect("a pick")];
    c.bench_function("pick a retry", |b| b.iter(|| black_box(r.pick(&tried))));
    // A try's place at its backend: with no max_requests this is all a try pays for
    // admission (an add, a subtract, the backend's reference count).
    c.bench_function("pick first try + backend slot, no limit", |b| {
        b.iter(|| {
            let pick = r.pick(&[]).expect("a pick");
            black_box(r.backend(pick).try_enter(0))
        })
    });
    c.bench_function("build SWRR table 70/30/1", |b| {
        b.iter(|| black_box(sequence(&[70, 30, 1])))
    });
}

fn affinity_and_routes(c: &mut Criterion) {
    let r = routing_with("[affinity]\nkey = \"cookie:sid\"\n");
    let key = affinity::hash(b"3f1c9a2e-5d4b-4c1e-9e8f-7a6b5c4d3e2f");
    c.bench_function("affinity: choose site and backend by key (3 sites)", |b| {
        b.iter(|| black_box(r.default.by_key(black_box(key), &r.sites)))
    });
    let request = http::Request::get("/cart/items?page=2")
        .header("host", "shop.example")
        .header(
            "cookie",
            "theme=dark; sid=3f1c9a2e-5d4b-4c1e-9e8f-7a6b5c4d3e2f; lang=en",
        )
        .body(())
        .expect("bench request");
    let (parts, _) = request.into_parts();
    let client = std::net::IpAddr::from([192, 0, 2, 10]);
    c.bench_function("affinity: plan + pick, key from a cookie (3 sites)", |b| {
        b.iter(|| black_box(r.pick_for(&r.plan(black_box(&parts), client), &[])))
    });
    // A signed cookie the proxy gave out: the tag is checked on every keyed request.
    let signed = routing_with("[affinity]\nkey = \"cookie:sg\"\ninsert = true\nsecret = \"a-long-shared-secret\"\n");
    let Some(splitgate::config::AffinityKey::SignedCookie(signer)) = &signed.config.affinity else {
        panic!("bench config has a signed cookie");
    };
    let cookie = signer.issue().1.expect("a cookie");
    let value = cookie
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_string();
    let request = http::Request::get("/cart")
        .header("cookie", value)
        .body(())
        .expect("bench request");
    let (signed_parts, _) = request.into_parts();
    c.bench_function("affinity: plan + pick, signed cookie checked (3 sites)", |b| {
        b.iter(|| black_box(signed.pick_for(&signed.plan(black_box(&signed_parts), client), &[])))
    });
    // 50 routes, none matching: the worst case of the first-match scan.
    let mut routes = String::new();
    for i in 0..50 {
        let host = if i % 2 == 0 {
            format!("host = \"svc{i}.example\"\n")
        } else {
            format!("host = \"*.zone{i}.example\"\n")
        };
        routes.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\n{host}path_prefix = \"/api{i}\"\n"
        ));
    }
    let r = routing_with(&routes);
    c.bench_function("routes: match 50 routes, no match (worst case)", |b| {
        b.iter(|| black_box(r.plan(black_box(&parts), client)))
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

criterion_group!(benches, selection, affinity_and_routes, header_rules);
criterion_main!(benches);
