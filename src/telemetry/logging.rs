//! Operator logs: the tracing subscriber set up from `[log]` (text or JSON, to stderr,
//! colours only at a terminal).

use crate::config::{LogFormat, Logging};

/// Sets up operator logs from `[log]`; `RUST_LOG`, when set, overrides the level.
pub fn init_logging(config: &Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
