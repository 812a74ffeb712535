//! The access log: one line per request, text or JSON, written by a dedicated thread
//! so the request path never touches the disk. The queue is bounded: when the writer
//! falls behind, lines are dropped and counted, never waited for. SIGUSR1 reopens the
//! file (logrotate's convention); a reload may move or switch it.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::clock::{unix_ms_of, Rfc3339};
use crate::config::{AccessLog as AccessLogConfig, LogFormat, LogTarget};
use crate::telemetry;

/// One finished request, as logged.
#[derive(Debug, Serialize)]
pub struct Record {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub site: Option<String>,
    pub backend: Option<String>,
    pub attempts: u32,
    #[serde(serialize_with = "millis_opt")]
    pub upstream_ms: Option<f64>,
    #[serde(serialize_with = "millis")]
    pub total_ms: f64,
    pub bytes: u64,
}

impl Record {
    /// A request's record as it arrives, now; the rest is filled in as it goes.
    pub fn new(client: IpAddr, method: &str, host: &str, path: &str) -> Record {
        Record {
            time: SystemTime::now(),
            client,
            method: method.to_string(),
            host: host.to_string(),
            path: path.to_string(),
            status: 0,
            site: None,
            backend: None,
            attempts: 0,
            upstream_ms: None,
            total_ms: 0.0,
            bytes: 0,
        }
    }
}

/// The handle requests submit records to; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// Swapped by `configure` (start, reloads), read lock-free per request; the writer
    /// thread holds the receiving end and ends when this sender is dropped.
    sender: ArcSwapOption<SyncSender<Box<Record>>>,
    /// The running writer, joined on `close` so its last lines reach the disk.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The settings in force, compared on reload to restart the writer only on change.
    config: Mutex<Option<AccessLogConfig>>,
    /// Set by SIGUSR1; the writer reopens its file and clears it.
    reopen: Arc<AtomicBool>,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            inner: Arc::new(Inner {
                sender: ArcSwapOption::empty(),
                writer: Mutex::new(None),
                config: Mutex::new(None),
                reopen: Arc::new(AtomicBool::new(false)),
            }),
        }
    }
}

impl AccessLog {
    /// Applies the `[access_log]` settings: starts, moves or stops the writer.
    pub fn configure(&self, config: Option<&AccessLogConfig>) {
        let mut current = self.inner.config.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref() == config {
            return;
        }
        *current = config.cloned();
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let sender = config.map(|config| {
            let (sender, receiver) = sync_channel(config.queue);
            let (config, reopen) = (config.clone(), self.inner.reopen.clone());
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_loop(receiver, config, reopen));
            match spawned {
                Ok(handle) => *writer = Some(handle),
                Err(e) => tracing::error!(error = %e, "cannot start the access log writer"),
            }
            Arc::new(sender)
        });
        // Dropping the old sender ends the old writer after it drains.
        self.inner.sender.store(sender);
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.sender.load().is_some()
    }

    /// Stops the writer after it has written every queued line (at shutdown).
    pub fn close(&self) {
        self.inner.sender.store(None);
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Queues a record; drops and counts it when the writer is behind.
    pub fn submit(&self, record: Box<Record>) {
        if let Some(sender) = self.inner.sender.load().as_ref() {
            if let Err(TrySendError::Full(_)) = sender.try_send(record) {
                telemetry::record_access_log_dropped();
            }
        }
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::Release);
    }
}

fn open(target: &LogTarget) -> Box<dyn Write + Send> {
    match target {
        LogTarget::Stdout => Box::new(std::io::stdout()),
        LogTarget::File(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(file) => Box::new(std::io::BufWriter::with_capacity(64 * 1024, file)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the access log; lines are discarded");
                Box::new(std::io::sink())
            }
        },
    }
}

fn write_loop(receiver: Receiver<Box<Record>>, config: AccessLogConfig, reopen: Arc<AtomicBool>) {
    let mut out = open(&config.target);
    let mut line = Vec::with_capacity(512);
    loop {
        let record = match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(record) => Some(record),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if reopen.swap(false, Ordering::AcqRel) {
            let _ = out.flush();
            out = open(&config.target);
        }
        let Some(first) = record else {
            let _ = out.flush();
            continue;
        };
        for record in std::iter::once(first).chain(receiver.try_iter().take(1024)) {
            line.clear();
            format_record(&record, config.format, &mut line);
            if out.write_all(&line).is_err() {
                telemetry::record_access_log_dropped();
            }
        }
    }
    let _ = out.flush();
}

/// Client-controlled text in a text log line: `"`, `\\`, control and non-ASCII bytes
/// become `\\xHH` (as NGINX escapes), so a client cannot forge fields or lines.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for &byte in self.0.as_bytes() {
            if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
                write!(f, "\\x{byte:02X}")?;
            } else {
                f.write_char(char::from(byte))?;
            }
        }
        Ok(())
    }
}

fn format_record(record: &Record, format: LogFormat, line: &mut Vec<u8>) {
    match format {
        LogFormat::Json => {
            if serde_json::to_writer(&mut *line, record).is_err() {
                line.clear();
            }
        }
        LogFormat::Text => {
            let ms = |d: Option<f64>| d.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
            let _ = write!(
                line,
                "{} {} \"{} {} {}\" {} site={} backend={} attempts={} upstream_ms={} total_ms={:.3} bytes={}",
                Rfc3339(unix_ms_of(record.time)),
                record.client,
                Escaped(&record.method),
                Escaped(&record.host),
                Escaped(&record.path),
                record.status,
                record.site.as_deref().unwrap_or("-"),
                record.backend.as_deref().unwrap_or("-"),
                record.attempts,
                ms(record.upstream_ms),
                record.total_ms,
                record.bytes
            );
        }
    }
    line.push(b'\n');
}

/// Milliseconds to the microsecond, as the text format writes them (no `0.63304500000001`).
fn millis<S: serde::Serializer>(ms: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((ms * 1000.0).round() / 1000.0)
}

fn millis_opt<S: serde::Serializer>(ms: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => millis(ms, serializer),
        None => serializer.serialize_none(),
    }
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&Rfc3339(unix_ms_of(*time)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_are_written_in_utc_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(Rfc3339(unix_ms_of(t)).to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(Rfc3339(unix_ms_of(UNIX_EPOCH)).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(unix_ms_of(leap)).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_client_cannot_forge_fields_or_lines_in_the_text_log() {
        let record = Record {
            total_ms: 1.0,
            ..Record::new("10.0.0.1".parse().unwrap(), "GET", "evil\" 200 site=x\nforged", "/a\\b")
        };
        let mut line = Vec::new();
        format_record(&record, LogFormat::Text, &mut line);
        let text = String::from_utf8(line).unwrap();
        assert_eq!(text.matches('"').count(), 2, "only the request's own quotes: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#""GET evil\x22 200 site=x\x0Aforged /a\x5Cb""#),
            "{text}"
        );
    }

    #[test]
    fn text_and_json_lines_carry_every_field() {
        let record = Record {
            time: UNIX_EPOCH,
            client: "10.0.0.1".parse().unwrap(),
            method: "GET".into(),
            host: "shop.example".into(),
            path: "/a?b=1".into(),
            status: 200,
            site: Some("idc-a".into()),
            backend: Some("10.1.0.1:80".into()),
            attempts: 2,
            upstream_ms: Some(1.5),
            total_ms: 2.25,
            bytes: 42,
        };
        let mut line = Vec::new();
        format_record(&record, LogFormat::Text, &mut line);
        let text = String::from_utf8(line.clone()).unwrap();
        assert_eq!(
            text,
            "1970-01-01T00:00:00.000Z 10.0.0.1 \"GET shop.example /a?b=1\" 200 site=idc-a backend=10.1.0.1:80 attempts=2 upstream_ms=1.500 total_ms=2.250 bytes=42\n"
        );
        line.clear();
        format_record(&record, LogFormat::Json, &mut line);
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["site"], "idc-a");
        assert_eq!(json["status"], 200);
        assert_eq!(json["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_milliseconds_are_rounded_to_the_microsecond() {
        let record = Record {
            upstream_ms: Some(0.123_456_7),
            total_ms: 0.633_045_000_000_000_1,
            ..Record::new("10.0.0.1".parse().unwrap(), "GET", "h", "/")
        };
        let mut line = Vec::new();
        format_record(&record, LogFormat::Json, &mut line);
        let text = String::from_utf8(line).unwrap();
        assert!(text.contains("\"total_ms\":0.633,"), "{text}");
        assert!(text.contains("\"upstream_ms\":0.123,"), "{text}");
    }
}
