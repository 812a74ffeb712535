//! The config file as written: plain serde types mirroring the TOML, nothing checked yet.
//! Unknown keys are found and reported by `shape.rs`; every semantic rule lives in
//! `validate.rs`.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
pub struct FileConfig {
    /// Worker threads of the runtime; default: available cores.
    pub workers: Option<i64>,
    #[serde(default)]
    pub listener: Vec<ListenerFile>,
    pub admin: Option<AdminFile>,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub retry: RetryFile,
    #[serde(default)]
    pub site: Vec<SiteFile>,
    pub access_log: Option<AccessLogFile>,
    pub log: Option<LogFile>,
    #[serde(default)]
    pub limits: LimitsFile,
    pub affinity: Option<AffinityFile>,
    #[serde(default)]
    pub route: Vec<RouteFile>,
    pub events: Option<EventsFile>,
    #[serde(default)]
    pub notify: Vec<NotifyFile>,
    pub fleet: Option<FleetFile>,
    pub state: Option<StateFileSection>,
    pub failback: Option<FailbackFile>,
    pub safety: Option<SafetyFile>,
    pub client_ip: Option<ClientIpFile>,
    /// `[dns]`: how backend names are resolved.
    pub dns: Option<DnsFile>,
    /// `[drills]`: how drills protect users.
    pub drills: Option<DrillsFile>,
    /// `[[drill]]`: drill programs.
    #[serde(default)]
    pub drill: Vec<DrillProgramFile>,
}

/// `[drills]`: when a running drill ends itself.
#[derive(Debug, Deserialize, Default)]
pub struct DrillsFile {
    /// "1%": the share of 5xx client responses in 5 s past which a drill is aborted.
    pub abort_5xx: Option<String>,
}

/// `[[drill]]`: a site drilled on a schedule.
#[derive(Debug, Deserialize)]
pub struct DrillProgramFile {
    pub site: Option<String>,
    /// Cron, five fields, UTC.
    pub schedule: Option<String>,
    pub duration: Option<String>,
}

/// `[state]`: where run-time decisions and health are kept across restarts.
#[derive(Debug, Deserialize, Default)]
pub struct StateFileSection {
    pub path: Option<String>,
}

/// `[fleet]`: proxies sharing run-time decisions through etcd.
#[derive(Debug, Deserialize)]
pub struct FleetFile {
    #[serde(default)]
    pub etcd: Vec<String>,
    pub prefix: Option<String>,
    pub name: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where the last decisions seen are kept for a restart during an etcd outage.
    pub state: Option<String>,
    pub tls: Option<FleetTlsFile>,
    /// "local" or "quorum".
    pub failover: Option<String>,
}

/// `tls = { ca, client_cert, client_key }`: HTTPS to etcd, PEM files.
#[derive(Debug, Deserialize)]
pub struct FleetTlsFile {
    pub ca: String,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

/// `[events]`: where failover events and site availability are kept.
#[derive(Debug, Deserialize)]
pub struct EventsFile {
    /// SQLite file, relative to the config file.
    pub history: Option<String>,
    /// How long history is kept ("400d").
    pub keep: Option<String>,
}

/// `[[notify]]`: a webhook (`url`) or a program (`command`) told of every event.
#[derive(Debug, Deserialize)]
pub struct NotifyFile {
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
    pub token: Option<String>,
    pub timeout: Option<String>,
    /// Events that may wait for delivery; more are dropped and counted.
    pub queue: Option<i64>,
    /// PEM CA file for an `https://` webhook (default: the system roots).
    pub ca: Option<String>,
}

/// `[affinity]` (or a route's `affinity = { key }`): what keeps a client on one site.
#[derive(Debug, Deserialize)]
pub struct AffinityFile {
    /// "header:NAME", "cookie:NAME" or "client_ip".
    pub key: String,
    /// With a cookie key: give clients without a valid one a signed cookie.
    pub insert: Option<bool>,
    /// The signing secret for inserted cookies (shared by a fleet).
    pub secret: Option<String>,
    /// Max-Age of inserted cookies; default: a session cookie.
    pub max_age: Option<String>,
}

/// `[[route]]`: requests matching `host` and `path_prefix` get their own split.
#[derive(Debug, Deserialize)]
pub struct RouteFile {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// Weight per site name; sites not named get 0 on this route.
    pub weights: Option<std::collections::BTreeMap<String, i64>>,
    pub affinity: Option<AffinityFile>,
}

/// `[limits]`: what one client may make the proxy hold.
#[derive(Debug, Deserialize, Default)]
pub struct LimitsFile {
    pub max_connections: Option<i64>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub h2_max_streams: Option<i64>,
}

/// `[access_log]`: one line per request.
#[derive(Debug, Deserialize)]
pub struct AccessLogFile {
    /// A file path, or "-" / "stdout".
    pub path: String,
    /// "text" (default) or "json".
    pub format: Option<String>,
    /// Lines that may wait for the writer; more are dropped and counted.
    pub queue: Option<i64>,
}

/// `[log]`: operational logs (RUST_LOG, when set, wins over `level`).
#[derive(Debug, Deserialize)]
pub struct LogFile {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListenerFile {
    pub bind: String,
    pub tls: Option<ListenerTlsFile>,
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `[client_ip]`: forwarders whose X-Forwarded-For is believed.
#[derive(Debug, Deserialize, Default)]
pub struct ClientIpFile {
    #[serde(default)]
    pub trusted: Vec<String>,
}

/// `[dns]`: how often backend names are resolved again, and by which name servers.
#[derive(Debug, Deserialize, Default)]
pub struct DnsFile {
    pub refresh: Option<String>,
    #[serde(default)]
    pub servers: Vec<String>,
}

/// `tls = { cert, key, certificates = [{ cert, key }] }`: PEM files; the extra
/// certificates are chosen when the client's SNI name matches them.
#[derive(Debug, Deserialize)]
pub struct ListenerTlsFile {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub certificates: Vec<CertFile>,
}

#[derive(Debug, Deserialize)]
pub struct CertFile {
    pub cert: String,
    pub key: String,
}

/// HTTPS to a site's backends.
#[derive(Debug, Deserialize)]
pub struct SiteTlsFile {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AdminFile {
    pub bind: String,
    pub token: Option<String>,
    pub max_connections: Option<i64>,
}

/// Health-check settings; every field is optional so a site can override a few.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct HealthFile {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub fall: Option<i64>,
    pub rise: Option<i64>,
    pub slow_start: Option<String>,
    pub consecutive_5xx: Option<i64>,
    /// Probes call the gRPC health protocol (`grpc.health.v1.Health/Check`).
    pub grpc: Option<bool>,
    /// A site keeps its full weight while `overprovision x healthy/total >= 1`.
    pub overprovision: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct TimeoutsFile {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub client_header: Option<String>,
    pub idle: Option<String>,
    pub drain: Option<String>,
    pub stop_delay: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RetryFile {
    pub attempts: Option<i64>,
    pub budget: Option<f64>,
    pub min_per_second: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct SiteFile {
    pub name: Option<String>,
    pub weight: Option<i64>,
    pub priority: Option<i64>,
    #[serde(default)]
    pub backends: Vec<String>,
    pub health: Option<HealthFile>,
    pub tls: Option<SiteTlsFile>,
    pub failback: Option<FailbackFile>,
    /// "http1", "h2c" or "h2".
    pub protocol: Option<String>,
    /// Per backend: requests in flight at once (0 = unlimited).
    pub max_requests: Option<i64>,
    /// Requests waiting for a backend of the site with room.
    pub queue: Option<i64>,
    pub queue_timeout: Option<String>,
}

/// `[failback]` or a site's `failback = { ... }`, as written.
#[derive(Debug, Deserialize, Default, Clone)]
pub struct FailbackFile {
    pub mode: Option<String>,
    pub hold: Option<String>,
    pub flap_window: Option<String>,
    pub flap_hold: Option<String>,
    pub max_hold: Option<String>,
}

/// `[safety]`, as written.
#[derive(Debug, Deserialize, Default)]
pub struct SafetyFile {
    pub min_serving_sites: Option<i64>,
}
