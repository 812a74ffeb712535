use super::*;

/// The data, the trailer fields, whether the end was read, and the error if any.
type Fields = Vec<(String, String)>;
type Decoded = (Vec<u8>, Fields, bool, Option<String>);

/// Decodes `bytes` fed in two pieces split at `split`: the data, the trailers, whether
/// the end was read, and the error if any.
fn decode_split(framing: Framing, bytes: &[u8], split: usize) -> Decoded {
    let mut decoder = Decoder::new(framing);
    let mut buf = BytesMut::new();
    let (mut data, mut fields) = (Vec::new(), Vec::new());
    for piece in [&bytes[..split], &bytes[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match decoder.step(&mut buf) {
                Ok(Some(frame)) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => {
                        for (name, value) in frame.into_trailers().unwrap_or_default().iter() {
                            fields.push((name.to_string(), value.to_str().unwrap_or("").to_string()));
                        }
                    }
                },
                Ok(None) => break,
                Err(e) => return (data, fields, decoder.done(), Some(e.to_string())),
            }
        }
    }
    (data, fields, decoder.done(), None)
}

/// The same verdict at every split.
fn decode(framing: Framing, bytes: &[u8]) -> Decoded {
    let whole = decode_split(framing, bytes, bytes.len());
    for split in 0..bytes.len() {
        assert_eq!(
            decode_split(framing, bytes, split),
            whole,
            "split at {split} of {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    whole
}

#[test]
fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
    let (data, _, done, error) = decode(Framing::Length(5), b"hello");
    assert_eq!((data.as_slice(), done, error), (&b"hello"[..], true, None));
    let mut buf = BytesMut::from(&b"helloGET / HTTP/1.1"[..]);
    let mut decoder = Decoder::new(Framing::Length(5));
    assert!(decoder.step(&mut buf).unwrap().is_some());
    assert!(decoder.done());
    assert_eq!(&buf[..], b"GET / HTTP/1.1");
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let body = b"5;name=\"x y\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n";
    let (data, fields, done, error) = decode(Framing::Chunked, body);
    assert_eq!(data, b"hello world");
    assert_eq!(fields, [("x-checksum".to_string(), "42".to_string())]);
    assert!(done && error.is_none());
    let (data, fields, done, _) = decode(Framing::Chunked, b"000a\r\n0123456789\r\n0\r\n\r\n");
    assert_eq!((data.as_slice(), fields.len(), done), (&b"0123456789"[..], 0, true));
}

#[test]
fn what_follows_the_last_chunk_stays_for_the_next_request() {
    let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\n\r\nGET /next"[..]);
    let mut decoder = Decoder::new(Framing::Chunked);
    while decoder.step(&mut buf).unwrap().is_some() {}
    assert!(decoder.done());
    assert_eq!(&buf[..], b"GET /next");
}

#[test]
fn chunks_of_2_to_the_60_bytes_or_more_are_refused() {
    for size in [
        "1000000000000000",
        "ffffffffffffffff",
        "00001000000000000000",
        "8000000000000000",
    ] {
        let body = format!("5\r\nhello\r\n{size}\r\nabc");
        let (_, _, _, error) = decode(Framing::Chunked, body.as_bytes());
        assert!(error.is_some_and(|e| e.contains("2^60")), "{size}");
    }
    let (_, _, _, error) = decode(Framing::Chunked, b"0fffffffffffffff\r\nabc");
    assert_eq!(error, None, "2^60 - 1 is a size");
}

#[test]
fn malformed_chunked_bodies_are_errors() {
    for body in [
        &b"x\r\n"[..],
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5 junk\r\nhello\r\n",
        b"\r\n",
        b"5\r\nhello\r\n0\r\nbad field\r\n\r\n",
    ] {
        let (_, _, done, error) = decode(Framing::Chunked, body);
        assert!(error.is_some() && !done, "{:?}", String::from_utf8_lossy(body));
    }
    let long = format!("1;{}\r\n", "e".repeat(MAX_LINE + 10));
    assert!(decode_split(Framing::Chunked, long.as_bytes(), long.len()).3.is_some());
}

#[test]
fn the_size_hint_is_exact_for_a_length() {
    assert_eq!(Decoder::new(Framing::Length(7)).size_hint().exact(), Some(7));
    assert_eq!(Decoder::new(Framing::Chunked).size_hint().exact(), None);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that chunked bodies (valid or not) are made of.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            Just(b";ext=1".to_vec()),
            Just(b"X-T: 1\r\n".to_vec()),
            "[0-9a-fA-F]{1,18}".prop_map(|s| s.into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        /// The decoder never panics, and it reads the same whatever the split.
        #[test]
        fn the_chunked_decoder_agrees_with_itself_at_every_split(
            pieces in proptest::collection::vec(piece(), 0..12),
            split in any::<prop::sample::Index>(),
        ) {
            let bytes = pieces.concat();
            let at = split.index(bytes.len() + 1);
            prop_assert_eq!(
                decode_split(Framing::Chunked, &bytes, at),
                decode_split(Framing::Chunked, &bytes, bytes.len())
            );
        }

        /// Well-formed chunked bodies decode to their data, and the bytes after them stay.
        #[test]
        fn well_formed_chunked_bodies_decode_to_their_data(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            split in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            for chunk in &chunks {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            let at = split.index(bytes.len() + 1);
            let (data, fields, done, error) = decode_split(Framing::Chunked, &bytes, at);
            prop_assert_eq!(data, chunks.concat());
            prop_assert!(fields.is_empty() && done && error.is_none());
        }
    }
}
