//! One backend's runtime object: its address, its connection pool, its metric handles
//! and its live health (up/down with fall/rise hysteresis, fed by active probes and by
//! live traffic). Owned by the registry, outlives config snapshots, reached from the
//! snapshot by index; the request path only reads a flag and reports outcomes.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use tokio::sync::Notify;

use super::admission::{InFlightCount, SiteQueue};
use crate::clock::now_ms;
use crate::config::HealthCheck;
use crate::telemetry::BackendMetrics;
use crate::upstream::Pool;

/// Consecutive outcomes since the last flip, for fall/rise.
#[derive(Default)]
struct Streak {
    failures: u32,
    successes: u32,
}

pub struct Backend {
    pub site: String,
    /// Its identity in metrics, logs and the state file: the address as configured, or,
    /// for a backend behind a name, the address the name resolved to (`ip:port`).
    pub addr: String,
    /// As configured (Host, SNI): the IP literal, or the name.
    pub authority: Authority,
    /// `Some(authority)` when it is a name resolved to `addr`.
    pub name: Option<String>,
    /// Connections to this backend; closed when the backend leaves the config.
    pub pool: Pool,
    healthy: AtomicBool,
    streak: Mutex<Streak>,
    /// When the backend last came up (ms, `now_ms`); 0 = up since startup (no slow start).
    up_since: AtomicU64,
    /// When the backend last went down (ms), for the "down for" in logs.
    down_since: AtomicU64,
    consecutive_5xx: AtomicU32,
    /// Set when a reload removes the backend; its prober stops.
    retired: AtomicBool,
    /// The probe settings in force, replaced by reloads.
    pub check: ArcSwap<HealthCheck>,
    /// Wakes the publisher that rebuilds selection tables; shared by all backends.
    changes: Arc<Notify>,
    /// This backend's request counters and health gauge.
    pub metrics: BackendMetrics,
    /// What failover events measure (relaxed atomics, touched once per try).
    pub outage: OutageCounters,
    /// Why it last went down, for the `site_down` event's cause.
    down_reason: Mutex<String>,
    /// Tries in flight here (`max_requests`), each holding a slot.
    pub(super) in_flight: InFlightCount,
    /// The waiting room its site's backends share.
    pub queue: Arc<SiteQueue>,
}

/// Per-backend figures behind a `site_down` event: when the current run of failures
/// began, the last try sent here, and the proxy errors and retries it caused since.
#[derive(Default)]
pub struct OutageCounters {
    /// `now_ms` of the first failure of the current run; 0 = no failure since a success.
    pub failure_started_ms: AtomicU64,
    /// `now_ms` of the last try sent to this backend.
    pub last_sent_ms: AtomicU64,
    /// Clients answered with a proxy error after a try here failed (since the run began).
    pub client_errors: AtomicU64,
    /// Of those, non-idempotent requests: possibly lost writes.
    pub unsafe_errors: AtomicU64,
    /// Requests moved to another backend by a retry after a try here failed.
    pub retried: AtomicU64,
}

impl OutageCounters {
    /// A failure after a success (or at start) begins a new run: figures restart.
    fn failure(&self, now: u64) {
        if self.failure_started_ms.load(Ordering::Relaxed) == 0 {
            self.client_errors.store(0, Ordering::Relaxed);
            self.unsafe_errors.store(0, Ordering::Relaxed);
            self.retried.store(0, Ordering::Relaxed);
            self.failure_started_ms.store(now, Ordering::Relaxed);
        }
    }

    fn success(&self) {
        if self.failure_started_ms.load(Ordering::Relaxed) != 0 {
            self.failure_started_ms.store(0, Ordering::Relaxed);
        }
    }

    pub fn sent(&self, now: u64) {
        self.last_sent_ms.store(now, Ordering::Relaxed);
    }

    pub fn client_error(&self, idempotent: bool) {
        self.client_errors.fetch_add(1, Ordering::Relaxed);
        if !idempotent {
            self.unsafe_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn retry(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }
}

impl Backend {
    /// A new backend starts healthy (as in NGINX and HAProxy) and is probed at once.
    pub fn new(site: &str, pool: Pool, check: HealthCheck, changes: Arc<Notify>, queue: Arc<SiteQueue>) -> Self {
        let authority = pool.authority().clone();
        let named = authority
            .host()
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_err();
        let addr = if named {
            pool.addr().to_string()
        } else {
            authority.to_string()
        };
        let addr = addr.as_str();
        Backend {
            site: site.to_string(),
            addr: addr.to_string(),
            authority: authority.clone(),
            name: named.then(|| authority.to_string()),
            pool,
            healthy: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            up_since: AtomicU64::new(0),
            down_since: AtomicU64::new(0),
            consecutive_5xx: AtomicU32::new(0),
            retired: AtomicBool::new(false),
            check: ArcSwap::from_pointee(check),
            changes,
            metrics: BackendMetrics::new(site, addr),
            outage: OutageCounters::default(),
            down_reason: Mutex::new(String::new()),
            in_flight: InFlightCount::default(),
            queue,
        }
    }

    /// When it last went down (`now_ms`), and why.
    pub fn last_down(&self) -> (u64, String) {
        let reason = self.down_reason.lock().map(|r| r.clone()).unwrap_or_default();
        (self.down_since.load(Ordering::Acquire), reason)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Down when the proxy stopped (the state file says so): it starts down and comes
    /// back only after `rise` good probes, so no first request goes into a black hole.
    pub fn start_down(&self) {
        self.set_healthy(false, "it was down when the proxy last stopped (state file)");
    }

    /// The backend left the config: its prober stops and its connections close.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.pool.close();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// When it last came up (ms), 0 if up since startup. Meaningful only while healthy.
    pub fn up_since_ms(&self) -> u64 {
        self.up_since.load(Ordering::Acquire)
    }

    /// One active probe's outcome; flips after `fall` failures or `rise` successes in a row.
    pub fn record_probe(&self, ok: bool, reason: &(impl Display + ?Sized)) {
        self.record(ok, reason);
    }

    /// A live request could not connect (refused, unreachable, connect timeout): the
    /// backend is taken out at once; the prober brings it back.
    pub fn record_connect_failure(&self, reason: &(impl Display + ?Sized)) {
        self.outage.failure(now_ms());
        if let Ok(mut streak) = self.streak.lock() {
            streak.successes = 0;
            streak.failures = streak.failures.max(1);
        }
        self.set_healthy(false, reason);
    }

    /// A live request failed after it was sent (reset, timeout): counts toward `fall`.
    pub fn record_request_failure(&self, reason: &(impl Display + ?Sized)) {
        self.record(false, reason);
    }

    /// A live response arrived; with `consecutive_5xx` configured, a run of 5xx marks
    /// the backend down. Cheap when the run is empty: one relaxed load.
    pub fn record_response(&self, status: http::StatusCode) {
        if !status.is_server_error() {
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            return;
        }
        let limit = self.check.load().consecutive_5xx;
        if limit == 0 {
            return;
        }
        let run = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= limit {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
            self.outage.failure(now_ms());
            self.set_healthy(false, &format_args!("{run} consecutive 5xx responses"));
        }
    }

    fn record(&self, ok: bool, reason: &(impl Display + ?Sized)) {
        if ok {
            self.outage.success();
        } else {
            self.outage.failure(now_ms());
        }
        let check = self.check.load();
        let flip_to = {
            let Ok(mut streak) = self.streak.lock() else {
                return;
            };
            if ok {
                streak.failures = 0;
                streak.successes = streak.successes.saturating_add(1);
                (!self.is_healthy() && streak.successes >= check.rise).then_some(true)
            } else {
                streak.successes = 0;
                streak.failures = streak.failures.saturating_add(1);
                (self.is_healthy() && streak.failures >= check.fall).then_some(false)
            }
        };
        if let Some(up) = flip_to {
            self.set_healthy(up, reason);
        }
    }

    fn set_healthy(&self, up: bool, reason: &(impl Display + ?Sized)) {
        if self.healthy.swap(up, Ordering::AcqRel) == up {
            return;
        }
        let now = now_ms();
        self.metrics.transition(up);
        if up {
            self.up_since.store(now, Ordering::Release);
            let down_for = Duration::from_millis(now.saturating_sub(self.down_since.load(Ordering::Acquire)));
            tracing::info!(site = %self.site, backend = %self.addr, %reason, down_for = ?down_for, "backend is up");
        } else {
            self.down_since.store(now, Ordering::Release);
            if let Ok(mut why) = self.down_reason.lock() {
                *why = reason.to_string();
            }
            tracing::warn!(site = %self.site, backend = %self.addr, %reason, "backend is down");
        }
        self.changes.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(fall: u32, rise: u32) -> Backend {
        let check = HealthCheck {
            fall,
            rise,
            consecutive_5xx: 3,
            ..HealthCheck::default()
        };
        let pool = Pool::new(
            Authority::from_static("127.0.0.1:1"),
            "127.0.0.1:1".parse().unwrap(),
            crate::upstream::Connector::new(None, false),
            Duration::from_secs(1),
        );
        Backend::new("a", pool, check, Arc::new(Notify::new()), Arc::default())
    }

    #[test]
    fn goes_down_after_fall_failures_in_a_row() {
        let b = backend(2, 2);
        b.record_probe(false, &"x");
        assert!(b.is_healthy(), "one failure is not enough with fall = 2");
        b.record_probe(true, &"ok");
        b.record_probe(false, &"x");
        assert!(b.is_healthy(), "a success in between restarts the count");
        b.record_probe(false, &"x");
        assert!(!b.is_healthy());
    }

    #[test]
    fn comes_back_after_rise_successes_in_a_row() {
        let b = backend(1, 3);
        b.record_probe(false, &"x");
        assert!(!b.is_healthy());
        b.record_probe(true, &"ok");
        b.record_probe(true, &"ok");
        b.record_probe(false, &"x");
        b.record_probe(true, &"ok");
        b.record_probe(true, &"ok");
        assert!(!b.is_healthy(), "the failure restarted the count");
        b.record_probe(true, &"ok");
        assert!(b.is_healthy());
        assert!(b.up_since_ms() > 0, "the recovery time starts slow start");
    }

    #[test]
    fn a_refused_connection_marks_down_at_once() {
        let b = backend(5, 2);
        b.record_connect_failure(&"connection refused");
        assert!(!b.is_healthy());
    }

    #[test]
    fn a_run_of_5xx_marks_down_when_configured() {
        let b = backend(5, 2);
        for _ in 0..2 {
            b.record_response(http::StatusCode::BAD_GATEWAY);
        }
        b.record_response(http::StatusCode::OK);
        b.record_response(http::StatusCode::BAD_GATEWAY);
        b.record_response(http::StatusCode::BAD_GATEWAY);
        assert!(b.is_healthy(), "the 200 broke the run");
        b.record_response(http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(!b.is_healthy());
    }

    #[test]
    fn a_change_wakes_the_publisher() {
        let b = backend(1, 1);
        let notified = b.changes.clone();
        b.record_probe(false, &"x");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), notified.notified())
                .await
                .expect("a flip notifies");
        });
    }
}
