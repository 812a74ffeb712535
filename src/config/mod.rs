//! Config loading: read the TOML file, parse it into plain data (`file`), validate it into
//! the checked model (`model`). Shared by `run`, `check` and every reload.

mod cron;
mod drills;
mod duration;
mod events;
mod failback;
mod file;
mod fleet;
mod model;
mod pinned;
mod problems;
mod routes;
mod shape;
mod share;
mod sites;
mod syntax;
mod tls;
mod validate;
mod weight;

use std::fmt;
use std::path::{Path, PathBuf};

pub use cron::Schedule;
pub use duration::parse_duration;
pub use model::{
    AccessLog, Admin, Admission, AffinityKey, Backend, Cidr, Config, CookieSigner, Dns, DrillProgram, Drills,
    EventsConfig, Failback, Fleet, FleetTls, HealthCheck, HostPattern, Limits, Listener, ListenerTls, LogFormat,
    LogTarget, Logging, Notify, NotifyTarget, Protocol, Retry, Route, Safety, Site, SiteTls, Timeouts,
};
pub use problems::{Problem, MAX_WEIGHT};
pub use routes::path_matches;
pub use share::Share;
pub use weight::{OutOfRange, Weight};

/// Why a config could not be used. `Display` writes one line per problem, each naming
/// the file and the key, as `splitgate check` prints them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {}", path.display(), one_line(message))]
    Syntax { path: PathBuf, message: String },
    #[error("{}", Invalid(path, problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

struct Invalid<'a>(&'a Path, &'a [Problem]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.1.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}: {}", self.0.display(), p.key, p.reason)?;
        }
        Ok(())
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ConfigError {
    /// Every problem as its own line (what `check` and `/reload` report).
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

/// Largest config, certificate, key or CA file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a file named in or by the config: regular files only (a FIFO would block,
/// `/dev/zero` never ends) and at most `MAX_FILE_BYTES`.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    Ok(bytes)
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_bounded(path).map_err(read)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| read(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))?;
    parse(path, &text)
}

/// Validates config text; `path` is used only in messages. Every problem found is
/// reported: of shape (unknown keys, wrong types: `shape`), then of meaning
/// (`validate`), a key reported once.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let document = toml_edit::ImDocument::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: syntax::syntax_message(&e, text),
    })?;
    let shape::Shaped { file, mut problems } = shape::read(&document);
    let base = path.parent().unwrap_or(Path::new("."));
    let invalid = |problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    };
    let Some(file) = file else {
        return Err(invalid(problems));
    };
    match validate::validate(&file, base) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(invalid(problems)),
        Err(more) => {
            // A key of the wrong type got a placeholder: what is said of it (or inside
            // it) now would be about the placeholder.
            let known: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
            let about_known = |key: &str| {
                known.iter().any(|k| {
                    key.strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                })
            };
            problems.extend(more.into_iter().filter(|p| !about_known(&p.key)));
            Err(invalid(problems))
        }
    }
}

/// Why a file (the state file) cannot be written where it is configured.
#[derive(Debug, thiserror::Error)]
pub enum NotWritable {
    #[error("directory {} does not exist", .0.display())]
    NoDirectory(PathBuf),
    #[error("{} is a directory; name a file in it", .0.display())]
    IsDirectory(PathBuf),
    #[error("directory {} cannot be written: {source}", dir.display())]
    Refused {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a file (the state file) can be written at `path`: its directory exists and takes a new
/// file (tried with a file of our own, removed at once).
pub fn check_writable(path: &Path) -> Result<(), NotWritable> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(NotWritable::NoDirectory(dir.to_path_buf()));
    }
    if path.is_dir() {
        return Err(NotWritable::IsDirectory(path.to_path_buf()));
    }
    let probe = dir.join(format!(".splitgate-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(NotWritable::Refused {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> String {
        parse(Path::new("t.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_syntax_error_says_where_but_never_quotes_the_line() {
        let text = "[admin]\nbind = \"127.0.0.1:9901\"\ntoken = s3cr3t-t0ken\n";
        let message = problems(text);
        assert!(!message.contains("s3cr3t"), "the token leaked: {message}");
        assert!(
            message.contains("admin.token (line 3, column 9)"),
            "names the key: {message}"
        );
    }

    const GOOD: &str = r#"
        [[listener]]
        bind = "127.0.0.1:8080"
        [[site]]
        name = "a"
        weight = 70
        backends = ["127.0.0.1:9001", "localhost:9002"]
        [[site]]
        name = "b"
        weight = 30
        priority = 1
        backends = ["[::1]:9101"]
        health = { path = "/ready", interval = "500ms" }
    "#;

    #[test]
    fn a_good_config_becomes_the_model() {
        let config = parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(config.sites.len(), 2);
        assert_eq!(config.sites[0].backends[1].addr(), "localhost:9002");
        assert_eq!(config.sites[1].priority, 1);
        assert_eq!(config.sites[1].health.path.as_str(), "/ready");
        assert_eq!(config.sites[1].health.interval.as_millis(), 500);
        assert_eq!(config.sites[1].health.fall, 2, "unset keys inherit [health]");
        assert_eq!(config.timeouts, Timeouts::default());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [[listener]]
            bind = "nowhere"
            [timeouts]
            connect = "5"
            [[site]]
            name = "a"
            weight = -1
            backends = ["127.0.0.1"]
            [[site]]
            name = "a"
            weight = 1
            backends = []
        "#;
        let report = problems(text);
        for key in [
            "listener[0].bind",
            "timeouts.connect",
            "site[0].weight",
            "site[0].backends[0]",
            "site[1].name",
            "site[1].backends",
        ] {
            assert!(
                report.contains(&format!("t.toml: {key}: ")),
                "{key} missing in:\n{report}"
            );
        }
    }

    #[test]
    fn limits_have_safe_defaults_and_out_of_range_values_are_named() {
        let config = parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.max_header_bytes, 65_536);
        let text = format!("{GOOD}\n[limits]\nmax_headers = 0\nmax_header_bytes = 100\nmax_body_bytes = -1\n");
        let message = problems(&text);
        for key in ["limits.max_headers", "limits.max_header_bytes", "limits.max_body_bytes"] {
            assert!(message.contains(key), "{key} missing from: {message}");
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_rejected() {
        let report = problems("[[listener]]\nbind = \"127.0.0.1:1\"\nbogus = 1\n");
        assert!(report.contains("bogus"), "{report}");
        assert!(problems("[[site]\n").contains("t.toml"));
    }

    #[test]
    fn durations_are_bounded_and_consistent() {
        let base =
            "[[listener]]\nbind = \"127.0.0.1:1\"\n[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"127.0.0.1:2\"]\n";
        let report = problems(&format!("{base}[timeouts]\nidle = \"18446744073709551615ms\"\n"));
        assert!(report.contains("timeouts.idle"), "{report}");
        let capped = parse(Path::new("t"), &format!("{base}[timeouts]\nresponse = \"1s\"\n")).unwrap();
        assert_eq!(capped.timeouts.connect.as_secs(), 1, "connect is capped at response");
    }

    #[test]
    fn a_config_needs_listeners_and_sites() {
        let report = problems("");
        assert!(report.contains("listener: at least one"), "{report}");
        assert!(report.contains("site: at least one"), "{report}");
    }
}
