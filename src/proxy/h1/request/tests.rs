use super::*;

const LIMITS: Limits = Limits {
    max_bytes: 8192,
    max_headers: 100,
};

fn parse_all(bytes: &[u8]) -> Parsed {
    parse(&mut BytesMut::from(bytes), LIMITS)
}

/// The verdict on `bytes` given whole, after checking that every shorter prefix of a
/// complete head reads as unfinished (the parser never decides on part of a head).
fn verdict(bytes: &[u8]) -> Parsed {
    let whole = parse_all(bytes);
    if let Parsed::Complete(_) = whole {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(bytes.len(), |p| p + 4);
        for cut in 0..end {
            let mut part = BytesMut::from(&bytes[..cut]);
            assert!(
                matches!(parse(&mut part, LIMITS), Parsed::Partial),
                "cut at {cut} of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    whole
}

fn refusal(bytes: &[u8]) -> Option<(u16, &'static str)> {
    match verdict(bytes) {
        Parsed::Refused(r) => Some((r.status.as_u16(), r.text)),
        Parsed::Complete(_) => None,
        Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
    }
}

fn head(bytes: &[u8]) -> Head {
    match verdict(bytes) {
        Parsed::Complete(head) => head,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_head_is_split_off_and_what_follows_stays() {
    let mut buf = BytesMut::from(&b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET"[..]);
    let Parsed::Complete(head) = parse(&mut buf, LIMITS) else {
        panic!()
    };
    assert_eq!(&buf[..], b"abcGET");
    assert_eq!(head.request.method(), Method::POST);
    assert_eq!(head.request.uri(), "/a?b=1");
    assert_eq!(head.request.headers()["host"], "x");
    assert_eq!(head.framing, Framing::Length(3));
    assert!(head.keep_alive);
}

#[test]
fn framing_that_could_be_read_two_ways_is_refused() {
    let cases: [(&[u8], &str); 8] = [
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "together",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nHost: x\r\n\r\n",
            "together",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "different",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n",
            "different",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n", "invalid"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "only chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
            "only chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "only chunked",
        ),
    ];
    for (bytes, why) in cases {
        let (status, text) = refusal(bytes).expect("refused");
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(bytes));
        assert!(text.contains(why), "{text}");
    }
    assert_eq!(
        refusal(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n").map(|r| r.0),
        Some(400)
    );
}

#[test]
fn obs_fold_bare_cr_and_bad_names_are_refused() {
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(
            refusal(bytes).map(|r| r.0),
            Some(400),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn identical_lengths_are_one_length_and_zero_is_no_body() {
    let twice = head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
    assert_eq!(twice.framing, Framing::Length(7));
    let zero = head(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(zero.framing, Framing::Empty);
    let chunked = head(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert_eq!(chunked.framing, Framing::Chunked);
}

#[test]
fn limits_give_431_for_the_head_and_414_for_the_request_line() {
    let limits = Limits {
        max_bytes: 100,
        max_headers: 3,
    };
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(200));
    assert_eq!(
        parse(&mut BytesMut::from(long_line.as_bytes()), limits).refusal(),
        Some(URI_TOO_LONG)
    );
    let unfinished_line = format!("GET /{}", "a".repeat(200));
    assert_eq!(
        parse(&mut BytesMut::from(unfinished_line.as_bytes()), limits).refusal(),
        Some(URI_TOO_LONG)
    );
    let long_head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "b".repeat(200));
    let got = parse(&mut BytesMut::from(long_head.as_bytes()), limits).refusal();
    assert_eq!(got.map(|r| r.status.as_u16()), Some(431));
    let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    let got = parse(&mut BytesMut::from(&many[..]), limits).refusal();
    assert_eq!(got.map(|r| r.status.as_u16()), Some(431));
    let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert!(matches!(
        parse(&mut BytesMut::from(&three[..]), limits),
        Parsed::Complete(_)
    ));
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    assert!(head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
    assert!(!head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
    let old = head(b"GET / HTTP/1.0\r\n\r\n");
    assert!(!old.keep_alive && !old.keep_alive_asked);
    let old = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(old.keep_alive && old.keep_alive_asked);
}

#[test]
fn expect_continue_counts_only_with_a_body() {
    let with = head(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert!(with.expects_continue);
    let without = head(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert!(!without.expects_continue);
}

#[test]
fn empty_lines_before_a_request_line_are_skipped() {
    let got = head(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(got.request.uri(), "/x");
}

impl Parsed {
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Parsed::Refused(r) => Some(*r),
            _ => None,
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"POST /a HTTP/1.0\r\n".to_vec()),
            Just(b"Host: x\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Content-Length: 6\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Transfer-Encoding: gzip\r\n".to_vec()),
            Just(b"Connection: close\r\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            "[a-zA-Z-]{1,10}: [ -~]{0,20}\r\n".prop_map(|s| s.into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..16),
        ]
    }

    proptest! {
        /// Any bytes: never a panic; a prefix of an accepted head is never refused and
        /// is unfinished unless it holds the whole head, which it then reads the same.
        #[test]
        fn the_parser_never_decides_on_part_of_a_head(
            lines in proptest::collection::vec(line(), 0..10),
            split in any::<prop::sample::Index>(),
        ) {
            let bytes = lines.concat();
            let at = split.index(bytes.len() + 1);
            let whole = parse_all(&bytes);
            let prefix = parse_all(&bytes[..at]);
            if let Parsed::Complete(head) = &whole {
                match prefix {
                    Parsed::Partial => {}
                    Parsed::Complete(part) => {
                        prop_assert_eq!(part.request.uri(), head.request.uri());
                        prop_assert_eq!(part.framing, head.framing);
                    }
                    Parsed::Refused(r) => prop_assert!(false, "prefix refused: {:?}", r),
                }
            }
        }
    }
}
