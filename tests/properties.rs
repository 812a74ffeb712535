//! Properties over many generated inputs (proptest): no config text panics the parser,
//! the weighted table follows any weights exactly, and the request-head rules keep
//! every end-to-end header while removing every hop-by-hop one.

use std::path::Path;

use proptest::prelude::*;
use splitgate::routing::sequence;

const VALID: &str = "[[listener]]\nbind = \"127.0.0.1:8080\"\n[limits]\nmax_headers = 50\n[[site]]\nname = \"a\"\nweight = 70\nbackends = [\"127.0.0.1:9001\"]\n[[site]]\nname = \"b\"\nweight = 30\npriority = 1\nbackends = [\"[::1]:9101\"]\nhealth = { path = \"/ready\", interval = \"500ms\" }\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_text_panics_the_config_parser(text in "\\PC{0,400}") {
        let _ = splitgate::config::parse(Path::new("p.toml"), &text);
    }

    #[test]
    fn no_mutation_of_a_valid_config_panics_the_parser(at in 0usize..VALID.len(), cut in 0usize..40, insert in "[ -~\\n]{0,20}") {
        let mut text = VALID.to_string();
        let start = at.min(text.len());
        let end = (start + cut).min(text.len());
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            text.replace_range(start..end, &insert);
        }
        let _ = splitgate::config::parse(Path::new("p.toml"), &text);
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
        let client = splitgate::proxy::headers::ClientInfo {
            addr: [127, 0, 0, 1].into(),
            ip: http::HeaderValue::from_static("127.0.0.1"),
            proto: http::HeaderValue::from_static("http"),
        };
        splitgate::proxy::headers::prepare_request(&mut parts, &client, None);
        for name in &hop {
            prop_assert!(!parts.headers.contains_key(*name), "{} passed", name);
        }
        for name in &names {
            prop_assert!(parts.headers.contains_key(name.as_str()), "{} was removed", name);
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
