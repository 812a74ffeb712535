//! Operator logs: the tracing subscriber set up from `[log]` (text or JSON, to stderr,
//! colours only at a terminal).

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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
