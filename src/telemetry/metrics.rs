//! Metric names in one place. Handles are registered once per backend
//! (`BackendMetrics`, kept in its runtime object) or per snapshot (`SiteMetrics`), so
//! the request path only bumps a handle: no label formatting, no registry lookup.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets in seconds: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder once per process (later calls are no-ops), and a
/// thread that folds histogram samples four times a second so memory stays bounded
/// even when nobody scrapes.
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS);
        let handle = builder.ok()?.install_recorder().ok()?;
        // Failover histograms are listed (empty) before the first failover.
        let _ = metrics::histogram!("splitgate_failover_detect_seconds");
        let _ = metrics::histogram!("splitgate_failover_traffic_moved_seconds");
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                // Samples wait here until folded, about 10 bytes each: 5 s at 50 000
                // requests/s held 2.5 MB (a sixth of the peak RSS under load).
                std::thread::sleep(Duration::from_millis(250));
                upkeep.run_upkeep();
            });
        Some(handle)
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    PROMETHEUS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OTHER"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        _ => 5,
    }
}

fn class_index(status: http::StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// Request counters of one backend by method and status class.
pub struct BackendMetrics {
    requests: [[Counter; 5]; 6],
    healthy: Gauge,
    /// Requests in flight there, set when `/metrics` is read.
    pub in_flight: Gauge,
    site: String,
    backend: String,
}

impl BackendMetrics {
    pub fn new(site: &str, backend: &str) -> Self {
        let requests = METHODS.map(|method| {
            CLASSES.map(|class| {
                counter!("splitgate_requests_total", "site" => site.to_string(), "backend" => backend.to_string(),
                    "method" => method, "class" => class)
            })
        });
        let healthy = gauge!("splitgate_backend_healthy", "site" => site.to_string(), "backend" => backend.to_string());
        healthy.set(1.0);
        BackendMetrics {
            requests,
            healthy,
            in_flight: gauge!("splitgate_backend_requests_in_flight", "site" => site.to_string(), "backend" => backend.to_string()),
            site: site.to_string(),
            backend: backend.to_string(),
        }
    }

    pub fn record(&self, method: &http::Method, status: http::StatusCode) {
        self.requests[method_index(method)][class_index(status)].increment(1);
    }

    /// A health flip: the gauge and the transition counter.
    pub fn transition(&self, up: bool) {
        self.healthy.set(if up { 1.0 } else { 0.0 });
        counter!("splitgate_health_transitions_total", "site" => self.site.clone(), "backend" => self.backend.clone(),
            "to" => if up { "up" } else { "down" })
        .increment(1);
    }
}

/// Per-site handles, registered when a snapshot is built.
pub struct SiteMetrics {
    /// Tries that could not connect (refused, unreachable, TLS handshake failed).
    pub connect_errors: Counter,
    /// Request sent -> response headers, per try.
    pub upstream_latency: Histogram,
    /// Response body bytes sent to clients.
    pub response_bytes: Counter,
    /// Requests waiting for a backend with room, set when `/metrics` is read.
    pub queue_length: Gauge,
    /// Retries refused because the retry budget was spent (the failure reached the client).
    pub retry_budget_exhausted: Counter,
}

impl SiteMetrics {
    pub fn new(site: &str) -> Self {
        SiteMetrics {
            connect_errors: counter!("splitgate_upstream_connect_errors_total", "site" => site.to_string()),
            upstream_latency: metrics::histogram!("splitgate_upstream_response_seconds", "site" => site.to_string()),
            response_bytes: counter!("splitgate_response_bytes_total", "site" => site.to_string()),
            queue_length: gauge!("splitgate_queue_length", "site" => site.to_string()),
            retry_budget_exhausted: counter!("splitgate_retry_budget_exhausted_total", "site" => site.to_string()),
        }
    }
}

/// Requests the proxy answered without reaching any site (nothing routable).
pub fn record_unrouted(method: &http::Method) {
    counter!("splitgate_requests_total", "site" => "none", "backend" => "none",
        "method" => METHODS[method_index(method)], "class" => "5xx")
    .increment(1);
}

/// A request refused for want of room at its site (`max_requests`, `queue`).
pub fn record_refused(site: &str, method: &http::Method) {
    counter!("splitgate_requests_total", "site" => site.to_string(), "backend" => "none",
        "method" => METHODS[method_index(method)], "class" => "5xx")
    .increment(1);
}

pub fn record_retry(reason: &'static str) {
    counter!("splitgate_retries_total", "reason" => reason).increment(1);
}

pub fn record_reload(ok: bool) {
    counter!("splitgate_config_reloads_total", "result" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn record_generation(generation: u64) {
    gauge!("splitgate_config_generation").set(generation as f64);
}

/// The history file's state: whether the last write succeeded, events waiting.
pub fn record_history(ok: bool, pending: u64) {
    gauge!("splitgate_history_writable").set(if ok { 1.0 } else { 0.0 });
    gauge!("splitgate_history_pending_events").set(pending as f64);
}

/// A failed open or write of the history file (the events are kept and retried).
pub fn record_history_error() {
    counter!("splitgate_history_errors_total").increment(1);
}

/// Events the history could not keep: their time is unknown time in the report.
pub fn record_history_lost(count: u64) {
    counter!("splitgate_history_lost_events_total").increment(count);
}

/// An event a notifier delivered, or gave up on after its tries.
pub fn record_notify(notifier: &str, delivered: bool) {
    let name = if delivered {
        "splitgate_notify_delivered_total"
    } else {
        "splitgate_notify_failed_total"
    };
    counter!(name, "notifier" => notifier.to_string()).increment(1);
}

/// A backend name looked up: its failure counter is listed from the first lookup on.
pub fn record_dns_name(name: &str) {
    counter!("splitgate_dns_failures_total", "name" => name.to_string()).increment(0);
}

/// A lookup of a backend name that failed or came back empty (its last addresses kept).
pub fn record_dns_failure(name: &str) {
    counter!("splitgate_dns_failures_total", "name" => name.to_string()).increment(1);
}

pub fn record_access_log_dropped() {
    counter!("splitgate_access_log_dropped_total").increment(1);
}

/// Handles for the client-side connection metrics.
pub struct ClientMetrics {
    pub open: Gauge,
    pub received: Counter,
    pub sent: Counter,
    /// Of `sent`, the bytes moved from a backend's socket with `splice` (no copy).
    pub spliced: Counter,
}

impl ClientMetrics {
    pub fn new() -> Self {
        ClientMetrics {
            open: gauge!("splitgate_client_connections"),
            received: counter!("splitgate_client_received_bytes_total"),
            sent: counter!("splitgate_client_sent_bytes_total"),
            spliced: counter!("splitgate_client_spliced_bytes_total"),
        }
    }
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self::new()
    }
}
