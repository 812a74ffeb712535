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
