//! The checked config model: every value here has passed validation, so the rest of
//! splitgate can use it without re-checking. Built only by `validate.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;

pub use super::tls::{ListenerTls, SiteTls};

#[derive(Debug, Clone)]
pub struct Config {
    /// Runtime worker threads (0 = one per available core).
    pub workers: usize,
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub timeouts: Timeouts,
    pub retry: Retry,
    pub sites: Vec<Site>,
    pub access_log: Option<AccessLog>,
    pub log: Logging,
    pub limits: Limits,
    /// The default split's affinity (routes may have their own).
    pub affinity: Option<AffinityKey>,
    /// Checked in order; the first that matches a request chooses its split.
    pub routes: Vec<Route>,
    pub events: EventsConfig,
    pub notify: Vec<Notify>,
    pub fleet: Option<Fleet>,
    /// `[state] path` (or `[fleet] state`, its older name); `None`: beside the config
    /// file (`state_path`).
    pub state_path: Option<std::path::PathBuf>,
    pub safety: Safety,
    /// `[client_ip] trusted`: forwarders whose X-Forwarded-For names the client.
    pub trusted_forwarders: Vec<Cidr>,
    /// `[drills]` and `[[drill]]`.
    pub drills: Drills,
    /// `[dns]`: how backend names are resolved.
    pub dns: Dns,
}

impl Config {
    /// Every backend name of every site (hosts that are not IP literals), each once.
    pub fn backend_names(&self) -> std::collections::BTreeSet<String> {
        self.sites
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter_map(|b| b.name())
            .collect()
    }

    /// Where run-time state is kept: the configured path, else named after the config
    /// file (`splitgate.toml` -> `splitgate.state`) in systemd's `StateDirectory=`
    /// (`$STATE_DIRECTORY`) when set, else beside the config file; `None` without a
    /// file (tests, the demo).
    pub fn state_path(&self, config_file: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
        if let Some(path) = &self.state_path {
            return Some(path.clone());
        }
        let beside = config_file?.with_extension("state");
        let state_dir = std::env::var_os("STATE_DIRECTORY")
            .and_then(|dirs| std::env::split_paths(&dirs).next())
            .filter(|dir| !dir.as_os_str().is_empty());
        Some(match (state_dir, beside.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => beside,
        })
    }
}

/// `[fleet]`: weight overrides and drills are decisions of the fleet, kept in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// `http://host:port` endpoints.
    pub etcd: Vec<String>,
    /// This fleet's keys, without a trailing '/'.
    pub prefix: String,
    /// This member's name; `None` = host name and admin port, decided at start.
    pub name: Option<String>,
    pub credentials: Option<(String, String)>,
    /// The last decisions seen, kept for a restart during an etcd outage.
    pub state: Option<std::path::PathBuf>,
    pub tls: Option<FleetTls>,
    /// `failover = "quorum"`: moving to a standby tier is the fleet's decision (a
    /// majority of live members see the lower tier down), not one member's.
    pub quorum: bool,
}

/// HTTPS to etcd: the CA that signs its certificate, and this member's client
/// certificate and key (PEM, read at validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    pub ca: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// `[events]`: the history file (none = memory only) and how long it keeps events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    pub history: Option<std::path::PathBuf>,
    pub keep: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            history: None,
            keep: Duration::from_secs(400 * 86_400),
        }
    }
}

/// Where one notifier delivers events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// One JSON POST per event to this `http://` or `https://` URL (with the TLS
    /// settings for `https`: the `ca` given, else the system roots).
    Webhook(http::Uri, Option<SiteTls>),
    /// This program, run once per event with the event as JSON on stdin.
    Command(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub target: NotifyTarget,
    /// Sent as `Authorization: Bearer <token>` (and `SPLITGATE_TOKEN` to a command).
    pub token: Option<String>,
    /// Per try (per run, for a command).
    pub timeout: Duration,
    pub queue: usize,
}

/// What keeps a client on one site (and backend): a value read from each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AffinityKey {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
    /// A cookie the proxy gives to clients that have no valid one, signed so that a
    /// client cannot make one up (HAProxy's `cookie ... insert`).
    SignedCookie(Box<CookieSigner>),
}

/// How inserted affinity cookies are named, signed and kept.
#[derive(Debug, Clone)]
pub struct CookieSigner {
    pub name: String,
    /// HMAC-SHA256 under the secret, keyed once at config time.
    pub key: ring::hmac::Key,
    /// The secret itself, only to tell whether a reload changed it.
    secret: Vec<u8>,
    pub max_age: Option<Duration>,
}

impl CookieSigner {
    pub fn new(name: String, secret: &[u8], max_age: Option<Duration>) -> CookieSigner {
        CookieSigner {
            name,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            secret: secret.to_vec(),
            max_age,
        }
    }
}

impl PartialEq for CookieSigner {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.secret, self.max_age) == (&other.name, &other.secret, other.max_age)
    }
}

impl Eq for CookieSigner {}

/// A request host pattern, lower-case, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is kept as `.example.com`: any host ending with it (not the
    /// bare domain, as in NGINX).
    Suffix(String),
}

/// A `[[route]]`: requests it matches are split by its own weights and affinity.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<HostPattern>,
    /// Matched on segment boundaries: `/batch` takes `/batch` and `/batch/x`, not `/batchx`.
    pub path_prefix: Option<String>,
    /// Weight per site, aligned with `Config::sites`; `None` = the sites' own weights.
    pub weights: Option<Vec<u32>>,
    /// This route's own affinity; `None` = the default `[affinity]`.
    pub affinity: Option<AffinityKey>,
}

/// What one client may make the proxy hold; beyond each, a clear error for that client
/// and nothing else disturbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// Request line + headers (HTTP/1), header list (HTTP/2); beyond: 431 (414 for a URI).
    pub max_header_bytes: usize,
    /// Header count; beyond: 431.
    pub max_headers: usize,
    /// Request body; 0 = unlimited; beyond: 413.
    pub max_body_bytes: u64,
    /// Concurrent streams per HTTP/2 client connection.
    pub h2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 65_536,
            max_headers: 100,
            max_body_bytes: 0,
            h2_max_streams: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub target: LogTarget,
    pub format: LogFormat,
    pub queue: usize,
}

/// Operational log settings, applied at start (`RUST_LOG` overrides `level`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub level: String,
    pub format: LogFormat,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub bind: SocketAddr,
    /// HTTPS on this listener when set.
    pub tls: Option<ListenerTls>,
    /// Every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a plain address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let network: std::net::IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("\"{text}\" is not an address or block, e.g. \"10.0.0.0/8\""))?;
        let most = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= most)
                .ok_or_else(|| format!("\"{text}\": the prefix length must be 0 to {most}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub bind: SocketAddr,
    pub token: Option<String>,
    /// Admin connections open at once; more are answered 503 and closed, so that the
    /// admin API never takes the descriptors that traffic and probes need.
    pub max_connections: usize,
}

impl Admin {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub client_header: Duration,
    pub idle: Duration,
    pub drain: Duration,
    /// On SIGTERM (and in the old process of an upgrade): `/ready` says 503 at once,
    /// the listeners keep accepting this long, then the drain begins.
    pub stop_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(30),
            client_header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            stop_delay: Duration::ZERO,
        }
    }
}

/// Bounds on retries: at most `attempts` tries per request, and retries may add at most
/// `budget` (a fraction) on top of live traffic, plus `min_per_second` always allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub attempts: u32,
    pub budget: f64,
    pub min_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            budget: 0.2,
            min_per_second: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path and query of the GET probe.
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    /// Ramp of a recovered site's weight from small to full; zero = off.
    pub slow_start: Duration,
    /// Consecutive 5xx answers on live traffic that mark a backend down; 0 = off.
    pub consecutive_5xx: u32,
    /// Probes call `grpc.health.v1.Health/Check` (SERVING = healthy) instead of a GET.
    pub grpc: bool,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: http::uri::PathAndQuery::from_static("/healthz"),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 2,
            rise: 2,
            slow_start: Duration::from_secs(10),
            consecutive_5xx: 0,
            grpc: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub weight: u32,
    pub priority: u32,
    pub backends: Vec<Backend>,
    pub health: HealthCheck,
    /// HTTPS to the backends when set.
    pub tls: Option<SiteTls>,
    /// Effective weight = weight x min(1, overprovision x healthy/total backends).
    pub overprovision: f64,
    /// When this site's traffic returns after a failure.
    pub failback: Failback,
    /// How its backends are spoken to.
    pub protocol: Protocol,
    /// Requests in flight per backend, and the site's queue for when all are full.
    pub admission: Admission,
}

/// `[[site]] max_requests`, `queue`, `queue_timeout`: what protects a site's backends
/// from more than they can take (the survivor of a failover above all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Admission {
    /// Per backend: requests in flight at once; 0 = no limit.
    pub max_requests: u32,
    /// Requests that may wait for a backend with room; 0 = none wait (503 at once).
    pub queue: u32,
    /// How long one may wait.
    pub queue_timeout: Duration,
}

/// The protocol to a site's backends (`[[site]] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (gRPC backends without TLS).
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN.
    H2,
}

/// When a site that failed gets its traffic back (`[failback]`, per site overridable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failback {
    /// Only when an operator releases it (`POST /sites/{name}/failback`).
    pub manual: bool,
    /// Healthy this long, without a failure, before traffic returns.
    pub hold: Duration,
    /// A site that fails again within this of getting traffic back is flapping...
    pub flap_window: Duration,
    /// ...and is held at least this long at its next recovery, doubled per flap...
    pub flap_hold: Duration,
    /// ...up to this.
    pub max_hold: Duration,
}

impl Default for Failback {
    fn default() -> Self {
        Failback {
            manual: false,
            hold: Duration::ZERO,
            flap_window: Duration::from_secs(600),
            flap_hold: Duration::from_secs(30),
            max_hold: Duration::from_secs(600),
        }
    }
}

/// `[safety]`: the guard rail on operators' actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Safety {
    /// An operator's action that would leave fewer sites able to serve is refused.
    pub min_serving_sites: usize,
}

/// One upstream server, `host:port`, reached over HTTP/1.1 (or the site's TLS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    pub authority: Authority,
}

impl Backend {
    pub fn addr(&self) -> &str {
        self.authority.as_str()
    }

    /// The address to connect to when the host is an IP literal; `None` for a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.authority.host().trim_matches(['[', ']']).parse().ok()?;
        Some(SocketAddr::new(ip, self.port()))
    }

    /// The host, lower case, when it is a name to resolve (not an IP literal).
    pub fn name(&self) -> Option<String> {
        match self.socket_addr() {
            Some(_) => None,
            None => Some(self.authority.host().to_ascii_lowercase()),
        }
    }

    /// Checked at validation: always present and not 0.
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(80)
    }
}

/// `[dns]`: backend names are resolved by the control plane every `refresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub refresh: Duration,
    /// Name servers to ask; empty: the system's (resolv.conf and the hosts file).
    pub servers: Vec<SocketAddr>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            refresh: Duration::from_secs(5),
            servers: Vec::new(),
        }
    }
}

/// `[drills]` and `[[drill]]`: when a running drill ends itself, and drill programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drills {
    /// A drill is aborted when more than this share of client responses in 5 s are 5xx.
    pub abort_5xx: super::share::Share,
    pub programs: Vec<DrillProgram>,
}

impl Default for Drills {
    fn default() -> Self {
        Drills {
            abort_5xx: super::share::Share::DEFAULT_ABORT_5XX,
            programs: Vec::new(),
        }
    }
}

/// One `[[drill]]`: `site` drilled for `duration` whenever `schedule` is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillProgram {
    pub site: String,
    pub schedule: super::cron::Schedule,
    pub duration: Duration,
}
