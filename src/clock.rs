//! The process clock: milliseconds since start, one monotonic read. Everything that
//! stamps live state (health flips, idle connections, timeouts, budgets) uses it, so
//! times compare across modules without conversions. Also the wall clock where times
//! leave the process (events, logs): Unix milliseconds and RFC 3339 text.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process started; 0 never occurs after startup.
pub fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// `now_ms` of an instant already read (no second clock read).
pub fn ms_of(instant: Instant) -> u64 {
    instant
        .saturating_duration_since(*START.get_or_init(Instant::now))
        .as_millis() as u64
        + 1
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    unix_ms_of(SystemTime::now())
}

pub fn unix_ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The Unix time of a process-clock stamp (`now_ms`).
pub fn unix_of(mono_ms: u64) -> u64 {
    unix_ms().saturating_sub(now_ms().saturating_sub(mono_ms))
}

/// `2026-11-29T21:05:03.123Z` (UTC) for Unix milliseconds, written without allocating.
pub struct Rfc3339(pub u64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0 / 1000;
        let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60,
            self.0 % 1000
        )
    }
}

/// The civil date (year, month 1-12, day 1-31) of days since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

pub fn rfc3339(unix_ms: u64) -> String {
    Rfc3339(unix_ms).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_986_303_123), "2026-11-29T21:05:03.123Z");
    }
}
