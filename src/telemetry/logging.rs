//! Operator logs: the tracing subscriber set up from `[log]` (text or JSON, to stderr,
//! colours only at a terminal). Every record is one line: control characters in it
//! (a newline in a backend's certificate name, an error quoting a peer) are escaped,
//! so that no remote party can forge a log line.

use std::io::Write;

use crate::config::{LogFormat, Logging};

/// Libraries whose warnings a remote peer can trigger once per connection (the h2
/// crate warns of an unexpected PING ack, a reset flood...): only their errors are
/// logged, unless the filter names them itself. Splitgate's own per-peer lines are
/// rate-limited (`log_limit`).
const QUIET_LIBRARIES: [&str; 2] = ["h2", "hyper"];

/// Sets up operator logs from `[log]`; `RUST_LOG`, when set, overrides the level.
pub fn init_logging(config: &Logging) {
    let chosen = std::env::var("RUST_LOG").unwrap_or_else(|_| config.level.clone());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&chosen)
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for library in QUIET_LIBRARIES.iter().filter(|l| !chosen.contains(*l)) {
        if let Ok(directive) = format!("{library}=error").parse() {
            filter = filter.add_directive(directive);
        }
    }
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into log files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || OneLine {
            out: std::io::stderr(),
            keep_escape: std::io::stderr().is_terminal(),
        })
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Writes each record (one `write` per record, as the fmt layer does) with its control
/// characters escaped, but for the newline that ends it. At a terminal, ESC stays for
/// the colours.
struct OneLine<W> {
    out: W,
    keep_escape: bool,
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        self.out.write_all(&one_line(record, self.keep_escape))?;
        Ok(record.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn one_line(record: &[u8], keep_escape: bool) -> std::borrow::Cow<'_, [u8]> {
    let body = record.strip_suffix(b"\n").unwrap_or(record);
    let unsafe_byte = |b: u8| (b < 0x20 && b != b'\t' && !(keep_escape && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| unsafe_byte(b)) {
        return std::borrow::Cow::Borrowed(record);
    }
    let mut out = Vec::with_capacity(record.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if unsafe_byte(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    if body.len() < record.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_one_line_whatever_it_quotes() {
        let forged = b"WARN upstream: bad name a\n2026-12-01 WARN splitgate::forged: FORGED LOG LINE\r\x00\n";
        let written = one_line(forged, false);
        assert_eq!(
            written.iter().filter(|&&b| b == b'\n').count(),
            1,
            "{:?}",
            String::from_utf8_lossy(&written)
        );
        assert!(written.ends_with(b"FORGED LOG LINE\\r\\x00\n"));
        assert!(String::from_utf8_lossy(&written).contains("a\\n2026"));
        let plain = b"INFO tab\tstays\n";
        assert!(matches!(one_line(plain, false), std::borrow::Cow::Borrowed(_)));
        assert_eq!(&*one_line(b"\x1b[1mbold\x1b[0m\n", true), b"\x1b[1mbold\x1b[0m\n");
        assert_eq!(&*one_line(b"\x1b[1m\n", false), b"\\x1b[1m\n");
    }
}
