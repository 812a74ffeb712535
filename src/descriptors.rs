//! File descriptors are the proxy's own resource: the open-file limit decides how many
//! client connections fit beside their upstream connections, the probes and the admin
//! API, and a connect or probe that fails because the proxy ran out of descriptors
//! (EMFILE, ENFILE) is never held against a backend.

use std::error::Error as StdError;

/// Descriptors kept beyond two per client connection: listeners, the admin API's cap,
/// probes, the event history, etcd, logs.
const RESERVE: u64 = 128;

/// The soft open-file limit of this process (`ulimit -n`, `LimitNOFILE=`), from
/// `/proc/self/limits`; `None` where it cannot be read or is unlimited.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many client connections fit under `limit` descriptors with `backends` probed
/// and `admin` admin connections: each client may hold an upstream connection too.
pub fn client_share(limit: u64, backends: usize, admin: usize) -> usize {
    let reserved = RESERVE + backends as u64 + admin as u64;
    (limit.saturating_sub(reserved) / 2).max(1) as usize
}

/// `configured`, lowered (with a warning) to what the open-file limit leaves room for.
pub fn max_client_connections(configured: usize, backends: usize, admin: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return configured;
    };
    let share = client_share(limit, backends, admin);
    if share < configured {
        tracing::warn!(
            configured,
            used = share,
            open_file_limit = limit,
            "limits.max_connections lowered to what the open-file limit leaves room for \
             (two descriptors per connection, the rest for backends, probes and the admin API); \
             raise the limit (LimitNOFILE= in the unit, ulimit -n) to allow more"
        );
    }
    share.min(configured)
}

/// Whether `error` (or what caused it) is this process running out of descriptors.
pub fn exhausted(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // EMFILE (24): this process's limit; ENFILE (23): the system's.
            if matches!(io.raw_os_error(), Some(23 | 24)) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// Counts and logs (rate-limited by the caller's log limits) a local exhaustion.
pub fn record_exhausted(what: &str) {
    metrics::counter!("splitgate_descriptors_exhausted_total", "during" => what.to_string()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_per_client_after_the_reserve() {
        assert_eq!(client_share(1024, 8, 64), (1024 - 128 - 8 - 64) / 2);
        assert_eq!(client_share(100, 8, 64), 1, "never zero");
        assert!(open_file_limit().is_some_and(|l| l > 0));
    }

    #[test]
    fn emfile_is_told_apart_from_a_refused_connection() {
        let emfile = std::io::Error::from_raw_os_error(24);
        assert!(exhausted(&emfile));
        let wrapped: Box<dyn StdError + Send + Sync> = Box::new(emfile);
        assert!(exhausted(wrapped.as_ref()));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!exhausted(&refused));
    }
}
