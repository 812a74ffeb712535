//! Metric names and logging setup in one place. Per-site request counters are
//! registered once per snapshot (`SiteMetrics`), so the request path only bumps a handle.

use std::sync::OnceLock;

use metrics::{counter, gauge, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::routing::Routing;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (later calls are no-ops).
pub fn install_metrics() {
    PROMETHEUS.get_or_init(|| PrometheusBuilder::new().install_recorder().ok());
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    PROMETHEUS
        .get()
        .and_then(|h| h.as_ref())
        .map(|h| h.render())
        .unwrap_or_default()
}

/// Sets up operator logs: `RUST_LOG` if set, else `info`; `SPLITGATE_LOG_FORMAT=json` for JSON.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("SPLITGATE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Request counters of one site by status class (1xx..5xx), registered up front.
pub struct SiteMetrics {
    by_class: [Counter; 5],
    /// Tries that could not connect (refused, unreachable, TLS handshake failed).
    pub connect_errors: Counter,
}

impl SiteMetrics {
    pub fn new(site: &str) -> Self {
        let class = |c: &'static str| counter!("splitgate_requests_total", "site" => site.to_string(), "class" => c);
        SiteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            connect_errors: counter!("splitgate_upstream_connect_errors_total", "site" => site.to_string()),
        }
    }

    pub fn record(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].increment(1);
    }
}

/// Requests the proxy answered without reaching any site (nothing routable).
pub fn record_unrouted() {
    counter!("splitgate_requests_total", "site" => "none", "class" => "5xx").increment(1);
}

pub fn record_retry(reason: &'static str) {
    counter!("splitgate_retries_total", "reason" => reason).increment(1);
}

pub fn record_reload(ok: bool) {
    counter!("splitgate_config_reloads_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
}

pub fn record_generation(generation: u64) {
    gauge!("splitgate_config_generation").set(generation as f64);
}

/// Health and effective weight gauges, set whenever a snapshot is published.
pub fn record_routing(routing: &Routing) {
    for site in &routing.sites {
        gauge!("splitgate_site_effective_weight", "site" => site.name.clone())
            .set(f64::from(site.effective_weight));
        gauge!("splitgate_site_healthy", "site" => site.name.clone()).set(if site.healthy {
            1.0
        } else {
            0.0
        });
        for backend in &site.backends {
            gauge!("splitgate_backend_healthy", "site" => site.name.clone(), "backend" => backend.authority.to_string())
                .set(if backend.state.is_healthy() { 1.0 } else { 0.0 });
        }
    }
}
