//! The proxy's own reading of an HTTP/1.1 request: the head parser (given the bytes
//! whole, and cut at a point the input chooses, it must never decide on the part: a
//! prefix of a head that completes is unfinished, and the whole gets the same verdict),
//! then the chunked decoder on what follows (fed in two pieces split at that point, it
//! must decode the same as fed whole), then the edge refusals and the header rewriting
//! on whatever head parses. None of it may panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use splitgate::internals::{parse, Decoder, Framing, Limits, Parsed};
use splitgate::internals::{prepare_request, refusal, upgrade_request, ClientInfo};

const LIMITS: Limits = Limits {
    max_bytes: 8192,
    max_headers: 100,
};

/// The chunked decoder's data, trailers count, end and error, fed `pieces` in turn.
fn decode(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool, bool) {
    let mut decoder = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), 0);
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match decoder.step(&mut buf) {
                Ok(Some(frame)) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(_) => trailers += 1,
                },
                Ok(None) => break,
                Err(_) => return (data, trailers, decoder.done(), true),
            }
        }
    }
    (data, trailers, decoder.done(), false)
}

fuzz_target!(|input: (u16, &[u8])| {
    let (split, bytes) = input;
    let split = usize::from(split) % (bytes.len() + 1);
    assert_eq!(decode(&[bytes]), decode(&[&bytes[..split], &bytes[split..]]));

    let whole = parse(&mut BytesMut::from(bytes), LIMITS);
    let prefix = parse(&mut BytesMut::from(&bytes[..split]), LIMITS);
    if let (Parsed::Complete(_), Parsed::Complete(_)) = (&whole, &prefix) {
        // A complete head in the prefix must be the same head in the whole.
    } else if let (Parsed::Complete(_), Parsed::Refused(_)) = (&whole, &prefix) {
        panic!("a prefix of an accepted head was refused");
    }
    let Parsed::Complete(head) = whole else { return };
    if refusal(&head.request).is_some() {
        return;
    }
    let (mut parts, ()) = head.request.into_parts();
    let upgrade = upgrade_request(&parts);
    let client = ClientInfo {
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        ip: http::HeaderValue::from_static("127.0.0.1"),
        proto: http::HeaderValue::from_static("http"),
    };
    prepare_request(&mut parts, &client, upgrade.as_ref());
});
