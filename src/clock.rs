//! The process clock: milliseconds since start, one monotonic read. Everything that
//! stamps live state (health flips, idle connections, timeouts, budgets) uses it, so
//! times compare across modules without conversions.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the process started; 0 never occurs after startup.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}
