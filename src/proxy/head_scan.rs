//! What the proxy needs to know of an HTTP/1 request's framing that hyper does not
//! tell it, learnt from the bytes as hyper reads them: whether the head has a
//! `Content-Length` line (hyper drops that line when the head also has
//! `Transfer-Encoding`), whether more than empty lines follow the head in the same
//! reads (a pipelined head, or a body), and whether a chunked body declares a chunk no
//! implementation could deliver (2^60 bytes or more: hyper accepts sizes up to 2^64,
//! HAProxy and NGINX refuse them). The bytes arrive in reads of any size (hyper's
//! protocol sniffing reads the first 24 bytes alone), so the scan carries its state
//! from one read to the next. It never decides framing: when the chunked body looks
//! unlike what it expects, it stops watching and hyper's own parser has the last word.

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
/// Significant hex digits of the largest chunk size accepted (2^60 - 1).
const MAX_CHUNK_DIGITS: u8 = 15;

#[derive(Default)]
pub struct HeadScan {
    /// The request line was seen (clients may send empty lines before a head).
    started: bool,
    /// The first bytes of the current line, lower case.
    line: [u8; TRANSFER_ENCODING.len()],
    /// Bytes of the current line so far.
    line_len: usize,
    /// The current line has a byte other than CR.
    line_has_text: bool,
    /// This head has a `Content-Length` line.
    pub has_length: bool,
    has_transfer_encoding: bool,
    /// The blank line that ends the head was seen.
    pub ended: bool,
    /// Bytes other than CR and LF came after the end of the head.
    pub bytes_after: bool,
    body: Chunked,
    /// A chunk size of 2^60 bytes or more: the body is invalid.
    pub oversized_chunk: bool,
}

/// Where a chunked body's scan stands.
#[derive(Default, Clone, Copy)]
enum Chunked {
    /// Not a chunked body, or its end was seen, or it looked unexpected.
    #[default]
    Off,
    Size {
        size: u64,
        digits: u8,
        any: bool,
    },
    Extension {
        size: u64,
    },
    Data(u64),
    DataEnd,
    Trailer {
        line_len: usize,
    },
}

impl HeadScan {
    /// Whether a chunked body is still being followed (then the scan must not restart).
    pub fn in_body(&self) -> bool {
        !matches!(self.body, Chunked::Off)
    }

    /// Scans the next bytes of a head and whatever follows it.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.ended {
                if !self.in_body() {
                    self.bytes_after |= bytes.iter().any(|&b| b != b'\r' && b != b'\n');
                    return;
                }
                self.bytes_after |= bytes[0] != b'\r' && bytes[0] != b'\n';
                bytes = self.body_step(bytes);
                continue;
            }
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (line, rest) = match newline {
                Some(end) => (&bytes[..end], &bytes[end + 1..]),
                None => (bytes, &[][..]),
            };
            self.line_part(line);
            if newline.is_some() {
                self.line_end();
            }
            bytes = rest;
        }
    }

    /// The next bytes of the current line (no line feed among them).
    fn line_part(&mut self, part: &[u8]) {
        if let Some(room) = self.line.get_mut(self.line_len..) {
            for (slot, &b) in room.iter_mut().zip(part) {
                *slot = b.to_ascii_lowercase();
            }
        }
        self.line_len = self.line_len.saturating_add(part.len());
        self.line_has_text |= part.iter().any(|&b| b != b'\r');
    }

    fn line_end(&mut self) {
        let line = &self.line[..self.line_len.min(self.line.len())];
        if !self.line_has_text {
            // An empty line: the head's end, or one a client sent before its head.
            self.ended = self.started;
            if self.ended && self.has_transfer_encoding {
                self.body = Chunked::Size {
                    size: 0,
                    digits: 0,
                    any: false,
                };
            }
        } else if !self.started {
            self.started = true; // the request line, never a header line
        } else {
            self.has_length |= line.starts_with(CONTENT_LENGTH);
            self.has_transfer_encoding |= line.starts_with(TRANSFER_ENCODING);
        }
        self.line_len = 0;
        self.line_has_text = false;
    }

    /// Follows the chunked body over `bytes` (which start with a byte of it); returns
    /// what is left to scan.
    fn body_step<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (b, rest) = match bytes.split_first() {
            Some((&b, rest)) => (b, rest),
            None => return bytes,
        };
        self.body = match self.body {
            Chunked::Off => Chunked::Off,
            Chunked::Data(left) => {
                let skip = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                let left = left - skip as u64;
                self.body = if left == 0 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left)
                };
                return &bytes[skip..];
            }
            Chunked::Size { size, digits, any } => match (b as char).to_digit(16) {
                Some(d) => {
                    let digits = digits + u8::from(digits > 0 || d > 0);
                    if digits > MAX_CHUNK_DIGITS {
                        self.oversized_chunk = true;
                        Chunked::Off
                    } else {
                        Chunked::Size {
                            size: size * 16 + u64::from(d),
                            digits,
                            any: true,
                        }
                    }
                }
                None if !any => Chunked::Off,
                None => match b {
                    b';' | b' ' | b'\t' => Chunked::Extension { size },
                    b'\r' => Chunked::Extension { size },
                    b'\n' => after_size_line(size),
                    _ => Chunked::Off,
                },
            },
            Chunked::Extension { size } => match b {
                b'\n' => after_size_line(size),
                _ => Chunked::Extension { size },
            },
            Chunked::DataEnd => match b {
                b'\r' => Chunked::DataEnd,
                b'\n' => Chunked::Size {
                    size: 0,
                    digits: 0,
                    any: false,
                },
                _ => Chunked::Off,
            },
            Chunked::Trailer { line_len } => match b {
                b'\r' => Chunked::Trailer { line_len },
                b'\n' if line_len == 0 => Chunked::Off,
                b'\n' => Chunked::Trailer { line_len: 0 },
                _ => Chunked::Trailer { line_len: line_len + 1 },
            },
        };
        rest
    }
}

fn after_size_line(size: u64) -> Chunked {
    match size {
        0 => Chunked::Trailer { line_len: 0 },
        n => Chunked::Data(n),
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    /// Scans `bytes` split at every position into two reads.
    fn all(bytes: &[u8], expected: (bool, bool, bool)) {
        for split in 0..=bytes.len() {
            let mut scan = HeadScan::default();
            scan.feed(&bytes[..split]);
            scan.feed(&bytes[split..]);
            let got = (scan.has_length, scan.ended, scan.bytes_after);
            assert_eq!(
                got,
                expected,
                "split at {split} of {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Whether a chunk too large is seen, whichever way the reads split `bytes`.
    fn oversized(bytes: &[u8]) -> bool {
        let verdicts: Vec<bool> = (0..=bytes.len())
            .map(|split| {
                let mut scan = HeadScan::default();
                scan.feed(&bytes[..split]);
                scan.feed(&bytes[split..]);
                scan.oversized_chunk
            })
            .collect();
        assert!(verdicts.iter().all(|&v| v == verdicts[0]), "{verdicts:?}");
        verdicts[0]
    }

    #[test]
    fn a_content_length_line_is_found_however_the_reads_split_it() {
        all(b"POST / HTTP/1.1\r\nCONTENT-length: 4\r\n\r\n", (true, true, false));
        all(
            b"POST / HTTP/1.1\r\nHost: a-rather-long-name\r\nContent-Length: 1234567890\r\n\r\n",
            (true, true, false),
        );
        all(b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n", (false, true, false));
        all(b"POST /content-length: HTTP/1.1\r\nHost: x\r\n", (false, false, false));
    }

    #[test]
    fn lines_after_the_head_are_not_header_lines() {
        all(
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n20\r\n--b\r\nContent-Length: 3\r\n",
            (false, true, true),
        );
    }

    #[test]
    fn what_follows_the_head_is_noticed_but_not_empty_lines() {
        all(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo",
            (false, true, true),
        );
        all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n", (false, true, false));
        all(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", (false, true, false));
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
            assert!(
                oversized(format!("{CHUNKED}5\r\nhello\r\n{size}\r\nabc").as_bytes()),
                "{size}"
            );
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
            assert!(!oversized(format!("{CHUNKED}{body}").as_bytes()), "{body:?}");
        }
        let not_chunked = "POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\nffffffffffffffffffff";
        assert!(!oversized(not_chunked.as_bytes()));
    }
}
