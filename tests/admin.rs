//! The admin API without a token: allowed from loopback, but never for a browser page
//! of another origin or a rebound DNS name.

mod common;

use bytes::Bytes;
use common::{client, config, site, Backend, TestProxy};
use http::{Method, Request};
use http_body_util::Full;

async fn put_weight(proxy: &TestProxy, headers: &[(&str, &str)]) -> u16 {
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(proxy.admin_url("/sites/a/weight"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(br#"{"weight": 5}"#)))
        .unwrap();
    client().request(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn without_a_token_only_local_same_origin_callers_may_change_weights() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let admin = proxy.server.admin_addr().unwrap().to_string();
    assert_eq!(put_weight(&proxy, &[]).await, 200, "curl on the same machine");
    assert_eq!(
        put_weight(&proxy, &[("origin", &format!("http://{admin}"))]).await,
        200,
        "the status page itself"
    );
    assert_eq!(
        put_weight(&proxy, &[("origin", "http://attacker.example")]).await,
        403,
        "another site's page"
    );
    assert_eq!(
        put_weight(&proxy, &[("host", "attacker.example:80")]).await,
        403,
        "a DNS-rebound name"
    );
    assert_eq!(proxy.server.control().current().sites[0].weight(), 5);
}

#[tokio::test]
async fn reload_without_a_config_file_is_a_clear_400() {
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    let request = Request::post(proxy.admin_url("/reload"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 400);
}

async fn put_weights(proxy: &TestProxy, body: &'static str) -> (u16, String) {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(proxy.admin_url("/weights"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, common::text(response.into_body()).await)
}

#[tokio::test]
async fn several_weights_change_in_one_step_or_not_at_all() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = TestProxy::start(&config("", &[site("a", 50, 0, &[a.addr]), site("b", 50, 0, &[b.addr])])).await;
    let generation = proxy.server.control().current().generation;
    let weights = |proxy: &TestProxy| {
        let routing = proxy.server.control().current();
        (routing.sites[0].weight(), routing.sites[1].weight())
    };

    let (status, body) = put_weights(&proxy, r#"{"a": 90, "b": 10}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(weights(&proxy), (90, 10));
    assert_eq!(
        proxy.server.control().current().generation,
        generation,
        "an override is not a new config"
    );
    let client = client();
    let mut to_a = 0;
    for _ in 0..100 {
        let (_, text) = common::get(&client, &proxy.url("/")).await.unwrap();
        to_a += usize::from(text.contains('a'));
    }
    assert_eq!(to_a, 90, "the split follows the new weights exactly");

    for bad in [
        r#"{"a": 10, "nowhere": 90}"#,
        r#"{"a": 10, "b": -1}"#,
        r#"{"a": "ten"}"#,
        "[1]",
        "{}",
    ] {
        let (status, body) = put_weights(&proxy, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(weights(&proxy), (90, 10), "{bad} changed something");
    }
}

/// A wrong method says which ones the endpoint takes (RFC 9110 15.5.6), and HEAD reads
/// like GET without the body, for monitors that probe with HEAD.
#[tokio::test]
async fn a_wrong_method_names_the_allowed_ones_and_head_reads_like_get() {
    use http_body_util::BodyExt;
    let a = Backend::start("a").await;
    let proxy = TestProxy::start(&config("", &[site("a", 1, 0, &[a.addr])])).await;
    for (method, path, allow) in [
        (Method::POST, "/status", "GET, HEAD"),
        (Method::GET, "/reload", "POST"),
        (Method::GET, "/weights", "PUT"),
        (Method::GET, "/sites/a/weight", "PUT, DELETE"),
        (Method::GET, "/sites/a/drill", "POST, DELETE"),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(proxy.admin_url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    let request = Request::builder()
        .method(Method::HEAD)
        .uri(proxy.admin_url("/status"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "no body for HEAD");
}
