//! The status page's memory: the proxy samples each site's requests/s and 5xx/s every
//! 5 s from its own counters and keeps 15 minutes of them at `GET /status/rates`, so
//! the page's chart is full when it is opened after a failover.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{admin_call, config, get, site, Backend, TestProxy};
use http::Method;
use serde_json::Value;

/// The newest sample in which every one of `sites` answered something, if any yet.
fn busy_sample(doc: &Value, sites: &[&str]) -> Option<Value> {
    doc["samples"].as_array()?.iter().rev().find_map(|sample| {
        sites
            .iter()
            .all(|s| sample["sites"][s]["rps"].as_f64().unwrap_or(0.0) > 0.0)
            .then(|| sample.clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_history_is_filled_per_site_from_real_traffic() {
    let (east, west) = (Backend::start("east").await, Backend::start("west").await);
    // Site names of this test alone: the counters are the process's.
    let proxy = TestProxy::start(&config(
        "",
        &[
            site("rates-east", 75, 0, &[east.addr]),
            site("rates-west", 25, 0, &[west.addr]),
        ],
    ))
    .await;
    let (status, doc) = admin_call(Method::GET, proxy.admin_url("/status/rates"), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (doc["interval_s"].as_u64(), doc["window_s"].as_u64()),
        (Some(5), Some(900))
    );

    // Traffic over real sockets, one request in five answered 503 by its backend, until
    // a sample shows both sites busy (the first one comes after 5 s).
    let client = common::client();
    let start = Instant::now();
    let sample = loop {
        for i in 0..20 {
            let path = if i % 5 == 0 { "/status/503" } else { "/" };
            let (code, _) = get(&client, &proxy.url(path)).await.expect("the proxy answers");
            assert!(code == 200 || code == 503, "{code}");
        }
        let (_, doc) = admin_call(Method::GET, proxy.admin_url("/status/rates"), "").await;
        if let Some(sample) = busy_sample(&doc, &["rates-east", "rates-west"]) {
            let samples = doc["samples"].as_array().unwrap();
            assert!(samples.len() <= 180, "bounded: {} samples", samples.len());
            break sample;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no sample with traffic: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("sample after {:?}: {sample}", start.elapsed());

    let sites: BTreeSet<&str> = sample["sites"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        sites,
        BTreeSet::from(["rates-east", "rates-west"]),
        "every configured site, no other"
    );
    let (east_rps, west_rps) = (
        sample["sites"]["rates-east"]["rps"].as_f64().unwrap(),
        sample["sites"]["rates-west"]["rps"].as_f64().unwrap(),
    );
    assert!(
        east_rps > west_rps,
        "75/25 shows in the rates: {east_rps} vs {west_rps}"
    );
    let errors: f64 = ["rates-east", "rates-west"]
        .iter()
        .map(|s| sample["sites"][s]["rps_5xx"].as_f64().unwrap())
        .sum();
    assert!(errors > 0.0 && errors < east_rps + west_rps, "the 503s: {errors}/s");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = sample["at_ms"].as_u64().unwrap();
    assert!(
        at <= now_ms && now_ms - at < 30_000,
        "stamped with the wall clock: {at}"
    );

    // `since` returns only newer samples; a bad one is refused.
    let (_, newer) = admin_call(Method::GET, proxy.admin_url(&format!("/status/rates?since={at}")), "").await;
    assert!(newer["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["at_ms"].as_u64().unwrap() > at));
    let (status, _) = admin_call(Method::GET, proxy.admin_url("/status/rates?since=soon"), "").await;
    assert_eq!(status, 400);
    let (status, _) = admin_call(Method::POST, proxy.admin_url("/status/rates"), "").await;
    assert_eq!(status, 405);
}
