//! What the proxy needs to know of an HTTP/1 client's request framing that hyper does
//! not tell it, learnt from the bytes as hyper reads them: for each request head in
//! turn, whether it has a `Content-Length` line (hyper drops that line when the head
//! also has `Transfer-Encoding`); whether a head has begun and not ended (part of a
//! pipelined head waiting in hyper's buffer); and whether a chunked body declares a
//! chunk no implementation could deliver (2^60 bytes or more: hyper accepts sizes up to
//! 2^64, HAProxy and NGINX refuse them).
//!
//! The scan follows the byte stream as hyper does: a head, then its body by its
//! framing (chunked, a `Content-Length`, or none), then the next head. The bytes arrive
//! in reads of any size (hyper's protocol sniffing reads the first 24 bytes alone), so
//! the scan carries its state from one read to the next. It never decides framing:
//! when the bytes look unlike what it expects, it is `lost` and hyper's parser has the
//! last word (such a request is refused or its connection closed anyway); the caller
//! then starts afresh at the next head.

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
/// Significant hex digits of the largest chunk size accepted (2^60 - 1).
const MAX_CHUNK_DIGITS: u8 = 15;
/// Bytes of a line kept: a `Content-Length` line with its value fits.
const LINE_KEPT: usize = 64;

pub struct HeadScan {
    state: State,
    /// The first bytes of the current head line, lower case.
    line: [u8; LINE_KEPT],
    /// Bytes of the current line so far.
    line_len: usize,
    /// The current line has a byte other than CR.
    line_has_text: bool,
    /// The head being read: its request line was seen.
    started: bool,
    /// The head being read: its `Content-Length` value (`Some(None)`: one it cannot read).
    length: Option<Option<u64>>,
    /// The head being read has a `Transfer-Encoding` line.
    chunked: bool,
    /// A chunk size of 2^60 bytes or more: the body is invalid.
    pub oversized_chunk: bool,
}

/// Where the scan stands in the byte stream.
#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Head,
    /// A `Content-Length` body: bytes left.
    Body(u64),
    ChunkSize {
        size: u64,
        digits: u8,
        any: bool,
    },
    ChunkExtension {
        size: u64,
    },
    ChunkData(u64),
    ChunkDataEnd,
    Trailer {
        line_len: usize,
    },
    Lost,
}

impl Default for HeadScan {
    fn default() -> Self {
        HeadScan {
            state: State::Head,
            line: [0; LINE_KEPT],
            line_len: 0,
            line_has_text: false,
            started: false,
            length: None,
            chunked: false,
            oversized_chunk: false,
        }
    }
}

impl HeadScan {
    /// The bytes looked unlike HTTP/1 framing: the scan knows no more.
    pub fn lost(&self) -> bool {
        self.state == State::Lost
    }

    /// A head has begun (its request line seen) and not ended.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && self.started
    }

    /// Bytes of a request line read so far and not yet ended (0 when none is being
    /// read).
    pub fn request_line_len(&self) -> usize {
        if self.state == State::Head && !self.started {
            self.line_len
        } else {
            0
        }
    }

    /// Scans the next bytes read; `head_ended` hears of each head that ends, in order,
    /// with whether it had a `Content-Length` line.
    pub fn feed(&mut self, mut bytes: &[u8], mut head_ended: impl FnMut(bool)) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Lost => return,
                State::Head => self.head(bytes, &mut head_ended),
                State::Body(left) => {
                    let (left, rest) = skip(left, bytes);
                    self.state = if left == 0 { State::Head } else { State::Body(left) };
                    rest
                }
                State::ChunkData(left) => {
                    let (left, rest) = skip(left, bytes);
                    self.state = if left == 0 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left)
                    };
                    rest
                }
                _ => {
                    self.state = self.chunk_byte(bytes[0]);
                    &bytes[1..]
                }
            };
        }
    }

    /// Scans head bytes up to the end of the current line; returns what is left.
    fn head<'a>(&mut self, bytes: &'a [u8], head_ended: &mut impl FnMut(bool)) -> &'a [u8] {
        let newline = bytes.iter().position(|&b| b == b'\n');
        let (part, rest) = match newline {
            Some(end) => (&bytes[..end], &bytes[end + 1..]),
            None => (bytes, &[][..]),
        };
        if let Some(room) = self.line.get_mut(self.line_len..) {
            for (slot, &b) in room.iter_mut().zip(part) {
                *slot = b.to_ascii_lowercase();
            }
        }
        self.line_len = self.line_len.saturating_add(part.len());
        self.line_has_text |= part.iter().any(|&b| b != b'\r');
        if newline.is_some() {
            self.line_end(head_ended);
        }
        rest
    }

    fn line_end(&mut self, head_ended: &mut impl FnMut(bool)) {
        let kept = &self.line[..self.line_len.min(LINE_KEPT)];
        let whole = self.line_len <= LINE_KEPT;
        if !self.line_has_text {
            // An empty line: the head's end, or one a client sent before its head.
            if self.started {
                head_ended(self.length.is_some());
                self.state = match (self.chunked, self.length) {
                    (true, _) => State::ChunkSize {
                        size: 0,
                        digits: 0,
                        any: false,
                    },
                    (false, None) => State::Head,
                    (false, Some(Some(0))) => State::Head,
                    (false, Some(Some(n))) => State::Body(n),
                    (false, Some(None)) => State::Lost,
                };
                self.started = false;
                self.length = None;
                self.chunked = false;
            }
        } else if !self.started {
            self.started = true; // the request line, never a header line
        } else if let Some(value) = kept.strip_prefix(CONTENT_LENGTH) {
            let value = whole.then(|| parse_length(value)).flatten();
            self.length = match self.length {
                None => Some(value),
                Some(prior) if prior == value => Some(value),
                Some(_) => Some(None),
            };
        } else if kept.starts_with(TRANSFER_ENCODING) {
            self.chunked = true;
        }
        self.line_len = 0;
        self.line_has_text = false;
    }

    /// One byte of a chunked body outside chunk data: the next state.
    fn chunk_byte(&mut self, b: u8) -> State {
        match self.state {
            State::ChunkSize { size, digits, any } => match (b as char).to_digit(16) {
                Some(d) => {
                    let digits = digits + u8::from(digits > 0 || d > 0);
                    if digits > MAX_CHUNK_DIGITS {
                        self.oversized_chunk = true;
                        State::Lost
                    } else {
                        State::ChunkSize {
                            size: size * 16 + u64::from(d),
                            digits,
                            any: true,
                        }
                    }
                }
                None if !any => State::Lost,
                None => match b {
                    b';' | b' ' | b'\t' | b'\r' => State::ChunkExtension { size },
                    b'\n' => after_size_line(size),
                    _ => State::Lost,
                },
            },
            State::ChunkExtension { size } => match b {
                b'\n' => after_size_line(size),
                _ => State::ChunkExtension { size },
            },
            State::ChunkDataEnd => match b {
                b'\r' => State::ChunkDataEnd,
                b'\n' => State::ChunkSize {
                    size: 0,
                    digits: 0,
                    any: false,
                },
                _ => State::Lost,
            },
            State::Trailer { line_len } => match b {
                b'\r' => State::Trailer { line_len },
                b'\n' if line_len == 0 => State::Head,
                b'\n' => State::Trailer { line_len: 0 },
                _ => State::Trailer {
                    line_len: line_len.saturating_add(1),
                },
            },
            other => other,
        }
    }
}

/// Skips up to `left` bytes of body data: what is still to come, and the rest of `bytes`.
fn skip(left: u64, bytes: &[u8]) -> (u64, &[u8]) {
    let skipped = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
    (left - skipped as u64, &bytes[skipped..])
}

fn after_size_line(size: u64) -> State {
    match size {
        0 => State::Trailer { line_len: 0 },
        n => State::ChunkData(n),
    }
}

/// A `Content-Length` value: digits between optional blanks (and a final CR).
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    /// What a scan of `bytes` found, split into two reads at every position (and the
    /// same verdict at every split): each ended head's Content-Length flag, whether a
    /// head is unfinished, whether a chunk was too large.
    fn scan(bytes: &[u8]) -> (Vec<bool>, bool, bool) {
        let verdicts: Vec<(Vec<bool>, bool, bool)> = (0..=bytes.len())
            .map(|split| {
                let mut scan = HeadScan::default();
                let mut heads = Vec::new();
                scan.feed(&bytes[..split], |had| heads.push(had));
                scan.feed(&bytes[split..], |had| heads.push(had));
                (heads, scan.in_head(), scan.oversized_chunk)
            })
            .collect();
        for (split, verdict) in verdicts.iter().enumerate() {
            assert_eq!(
                verdict,
                &verdicts[0],
                "split at {split} of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        verdicts[0].clone()
    }

    #[test]
    fn a_content_length_line_is_found_however_the_reads_split_it() {
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nCONTENT-length: 0\r\n\r\n"),
            (vec![true], false, false)
        );
        let long = b"POST / HTTP/1.1\r\nHost: a-rather-long-name\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(scan(long), (vec![true], false, false));
        assert_eq!(
            scan(b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n"),
            (vec![false], false, false)
        );
        assert_eq!(
            scan(b"POST /content-length: HTTP/1.1\r\nHost: x\r\n"),
            (vec![], true, false)
        );
    }

    #[test]
    fn bodies_are_skipped_by_their_framing_and_the_next_head_is_scanned() {
        let body = "x\r\nContent-Length: 3\r\n\r\nabc";
        let request = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            body.len()
        );
        assert_eq!(scan(request.as_bytes()), (vec![true, false], false, false));
        let part = "--b\r\nContent-Length: 3\r\n\r\nabc\r\n--b--\r\n";
        let chunked = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{part}\r\n0\r\nX-T: 1\r\n\r\n\
             POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            part.len()
        );
        assert_eq!(scan(chunked.as_bytes()), (vec![false, true], false, false));
    }

    #[test]
    fn a_pipelined_head_cut_short_is_unfinished_but_empty_lines_are_not() {
        let cut = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo";
        assert_eq!(scan(cut), (vec![false], true, false));
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n"),
            (vec![false], false, false)
        );
        assert_eq!(
            scan(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            (vec![false], false, false)
        );
    }

    const CHUNKED: &str = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";

    #[test]
    fn a_chunk_of_2_to_the_60_bytes_or_more_is_oversized() {
        for size in [
            "1000000000000000",
            "8000000000000000",
            "ffffffffffffffff",
            "00001000000000000000",
        ] {
            let (_, _, oversized) = scan(format!("{CHUNKED}5\r\nhello\r\n{size}\r\nabc").as_bytes());
            assert!(oversized, "{size}");
        }
    }

    #[test]
    fn ordinary_chunked_bodies_are_not() {
        let bodies = [
            "5\r\nhello\r\n0\r\n\r\n",
            "0fffffffffffffff\r\nabc",
            "000000000000000000005;ext=\"x y\"\r\nhello\r\n0\r\nTrailer: 1\r\n\r\n",
            // A chunk whose data looks like a size line, then a real one.
            "14\r\nffffffffffffffffffff\r\n3\r\nabc\r\n0\r\n\r\n",
        ];
        for body in bodies {
            let (_, _, oversized) = scan(format!("{CHUNKED}{body}").as_bytes());
            assert!(!oversized, "{body:?}");
        }
        let not_chunked = "POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\nffffffffffffffffffff";
        assert!(!scan(not_chunked.as_bytes()).2);
    }
}
