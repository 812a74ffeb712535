//! Properties over many generated inputs (proptest): no config text panics the parser,
//! the weighted table follows any weights exactly, and the request-head rules keep
//! every end-to-end header while removing every hop-by-hop one; affinity keys follow
//! any weights and never reach a weight-0 site; no routes or keys panic the router.

use std::path::Path;

use crate::health::HealthRegistry;
use crate::routing::{affinity, sequence, Routing};
use proptest::prelude::*;

const VALID: &str = "[[listener]]\nbind = \"127.0.0.1:8080\"\n[limits]\nmax_headers = 50\n[[site]]\nname = \"a\"\nweight = 70\nbackends = [\"127.0.0.1:9001\"]\n[[site]]\nname = \"b\"\nweight = 30\npriority = 1\nbackends = [\"[::1]:9101\"]\nhealth = { path = \"/ready\", interval = \"500ms\" }\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_text_panics_the_config_parser(text in "\\PC{0,400}") {
        let _ = crate::config::parse(Path::new("p.toml"), &text);
    }

    #[test]
    fn no_mutation_of_a_valid_config_panics_the_parser(at in 0usize..VALID.len(), cut in 0usize..40, insert in "[ -~\\n]{0,20}") {
        let mut text = VALID.to_string();
        let start = at.min(text.len());
        let end = (start + cut).min(text.len());
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            text.replace_range(start..end, &insert);
        }
        let _ = crate::config::parse(Path::new("p.toml"), &text);
    }

    #[test]
    fn the_weighted_table_gives_each_site_exactly_its_share(weights in prop::collection::vec(0u32..200, 1..6)) {
        let table = sequence(&weights);
        let positive: Vec<u32> = weights.iter().copied().filter(|&w| w > 0).collect();
        if positive.is_empty() {
            prop_assert!(table.is_empty());
        } else {
            let divisor = positive.iter().copied().fold(0, gcd);
            prop_assert_eq!(table.len() as u32, weights.iter().sum::<u32>() / divisor);
            for (site, &weight) in weights.iter().enumerate() {
                let picks = table.iter().filter(|&&s| s as usize == site).count() as u32;
                prop_assert_eq!(picks, weight / divisor, "site {} of {:?}", site, weights);
            }
        }
    }

    #[test]
    fn hop_by_hop_headers_never_pass_and_end_to_end_ones_always_do(
        names in prop::collection::vec("x-[a-z]{1,8}", 0..8),
        hop in prop::sample::subsequence(vec!["connection", "keep-alive", "proxy-connection", "upgrade", "te", "transfer-encoding", "proxy-authorization"], 0..7),
    ) {
        let mut request = http::Request::get("/").header("host", "h");
        for name in &names {
            request = request.header(name.as_str(), "v");
        }
        for name in &hop {
            request = request.header(*name, "gzip");
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        let client = crate::proxy::headers::ClientInfo {
            addr: [127, 0, 0, 1].into(),
            ip: http::HeaderValue::from_static("127.0.0.1"),
            proto: http::HeaderValue::from_static("http"),
        };
        crate::proxy::headers::prepare_request(&mut parts, &client, None);
        for name in &hop {
            prop_assert!(!parts.headers.contains_key(*name), "{} passed", name);
        }
        for name in &names {
            prop_assert!(parts.headers.contains_key(name.as_str()), "{} was removed", name);
        }
    }
}

/// A config with one site per weight (one backend each), plus `extra` text.
fn sites_config(weights: &[u32], extra: &str) -> String {
    let mut text = String::from("[[listener]]\nbind = \"127.0.0.1:1\"\n");
    for (i, w) in weights.iter().enumerate() {
        text.push_str(&format!(
            "[[site]]\nname = \"s{i}\"\nweight = {w}\nbackends = [\"127.0.0.1:{}\"]\n",
            1000 + i
        ));
    }
    text + extra
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn affinity_keys_follow_any_weights_and_never_reach_a_weight_zero_site(
        weights in prop::collection::vec(0u32..100, 1..5).prop_filter("one site with weight", |w| w.iter().any(|&x| x > 0)),
    ) {
        let config = crate::config::parse(Path::new("p"), &sites_config(&weights, "")).unwrap();
        let routing = Routing::standalone(std::sync::Arc::new(config), &HealthRegistry::new());
        let keys = 20_000u32;
        let mut counts = vec![0u32; weights.len()];
        for k in 0..keys {
            let pick = routing.default.by_key(affinity::hash(&k.to_le_bytes()), &routing.sites).unwrap();
            counts[pick.site] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (site, &weight) in weights.iter().enumerate() {
            let expected = f64::from(weight) / f64::from(total);
            let got = f64::from(counts[site]) / f64::from(keys);
            if weight == 0 {
                prop_assert_eq!(counts[site], 0, "weight-0 site {} got keys: {:?}", site, weights);
            } else {
                prop_assert!((got - expected).abs() < 0.02, "site {}: {} vs {} for {:?}", site, got, expected, weights);
            }
        }
    }

    #[test]
    fn no_routes_or_request_panic_the_router(
        host in "[a-zA-Z0-9.*:\\[\\]-]{0,20}",
        prefix in "/[a-z/]{0,8}",
        request_host in "[a-zA-Z0-9.:\\[\\]-]{0,24}",
        path in "/[a-z/]{0,12}",
        cookie in "[ -~]{0,40}",
        key in prop::sample::select(vec!["header:x-user", "cookie:sid", "client_ip"]),
    ) {
        let routes = format!(
            "[affinity]\nkey = \"{key}\"\n[[route]]\nname = \"r\"\nhost = \"{host}\"\npath_prefix = \"{prefix}\"\nweights = {{ s0 = 1 }}\n",
        );
        let Ok(config) = crate::config::parse(Path::new("p"), &sites_config(&[1, 2], &routes)) else {
            return Ok(());
        };
        let routing = Routing::standalone(std::sync::Arc::new(config), &HealthRegistry::new());
        let mut request = http::Request::get(path.as_str());
        if let Ok(value) = http::HeaderValue::from_str(&request_host) {
            request = request.header("host", value);
        }
        if let Ok(value) = http::HeaderValue::from_str(&cookie) {
            request = request.header("cookie", value.clone()).header("x-user", value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let plan = routing.plan(&parts, [127, 0, 0, 1].into());
        let pick = routing.pick_for(&plan, &[]);
        prop_assert!(pick.is_some());
        if plan.route().is_some() {
            prop_assert_eq!(pick.unwrap().site, 0, "the route sends only to s0");
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
