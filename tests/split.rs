//! Weighted split across sites, through the proxy over real sockets.

mod common;

use common::{client, config, get, site, Backend, TestProxy};

async fn who_answers(proxy: &TestProxy, n: usize) -> Vec<String> {
    let client = client();
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body) = get(&client, &proxy.url("/")).await.expect("request");
        assert_eq!(status, 200);
        names.push(body);
    }
    names
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test]
async fn three_sites_50_30_20_split_1000_requests_exactly() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = TestProxy::start(&config(
        "",
        &[
            site("a", 50, 0, &[a.addr]),
            site("b", 30, 0, &[b.addr]),
            site("c", 20, 0, &[c.addr]),
        ],
    ))
    .await;
    let names = who_answers(&proxy, 1000).await;
    assert_eq!(
        (count(&names, "a"), count(&names, "b"), count(&names, "c")),
        (500, 300, 200)
    );
}

#[tokio::test]
async fn seventy_thirty_gives_seven_and_three_in_every_window_of_ten() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config("", &[site("a", 70, 0, &[a.addr]), site("b", 30, 0, &[b.addr])])).await;
    let names = who_answers(&proxy, 100).await;
    for start in 0..=90 {
        let window = &names[start..start + 10];
        assert_eq!(count(window, "a"), 7, "window at {start}: {window:?}");
    }
}

#[tokio::test]
async fn a_drained_site_and_a_standby_site_get_nothing() {
    let (a, drained, standby) = (
        Backend::start("a").await,
        Backend::start("drained").await,
        Backend::start("standby").await,
    );
    let proxy = TestProxy::start(&config(
        "",
        &[
            site("a", 10, 0, &[a.addr]),
            site("drained", 0, 0, &[drained.addr]),
            site("standby", 100, 1, &[standby.addr]),
        ],
    ))
    .await;
    let names = who_answers(&proxy, 50).await;
    assert_eq!(count(&names, "a"), 50);
    assert_eq!(drained.hits() + standby.hits(), 0);
}

#[tokio::test]
async fn backends_of_a_site_share_its_traffic_round_robin() {
    let (a1, a2) = (Backend::start("a1").await, Backend::start("a2").await);
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a1.addr, a2.addr])])).await;
    who_answers(&proxy, 20).await;
    assert_eq!((a1.hits(), a2.hits()), (10, 10));
}
