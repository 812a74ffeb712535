//! The proxy's own share of reading a request head: the head scanner (fed the bytes
//! split into two reads at a point the input chooses, it must agree with itself fed
//! them whole), then the edge refusals and the header rewriting on whatever head
//! parses. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitgate::proxy::head_scan::HeadScan;
use splitgate::proxy::headers::{prepare_request, refusal, upgrade_request, ClientInfo};

fuzz_target!(|input: (u16, &[u8])| {
    let (split, bytes) = input;
    let split = usize::from(split) % (bytes.len() + 1);
    let scan = |reads: &[&[u8]]| {
        let mut scan = HeadScan::default();
        let mut heads = Vec::new();
        for read in reads {
            scan.feed(read, |had_length| heads.push(had_length));
        }
        (heads, scan.in_head(), scan.oversized_chunk, scan.lost())
    };
    let whole = scan(&[bytes]);
    assert_eq!(whole, scan(&[&bytes[..split], &bytes[split..]]));
    let had_length = whole.0.first().copied().unwrap_or(false);

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(bytes), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut request = http::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"));
    for header in parsed.headers.iter() {
        request = request.header(header.name, header.value);
    }
    let Ok(request) = request.body(()) else { return };
    if refusal(&request, had_length).is_some() {
        return;
    }
    let (mut parts, ()) = request.into_parts();
    let upgrade = upgrade_request(&parts);
    let client = ClientInfo {
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        ip: http::HeaderValue::from_static("127.0.0.1"),
        proto: http::HeaderValue::from_static("http"),
    };
    prepare_request(&mut parts, &client, upgrade.as_ref());
});
