//! A running splitgate: binds the listeners and the admin API, owns the control plane,
//! applies reloads (all or nothing, listeners included) and drains on shutdown. Used by
//! the binary and, in-process, by tests and the demo.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Handle;

pub use crate::admin::ReloadError;
pub use view::{DrillState, SiteState};

use crate::admin::{self, LastReload, Operator};
use crate::config::{self, Config};
use crate::control::Control;
use crate::events::history::RunSite;
use crate::events::{notify, recorder, Events, RING};
use crate::fleet::Fleet;
use crate::lifecycle::inherit::{self, Inherited};
use crate::lifecycle::{Phase, Readiness};
use crate::proxy::{bind_listener, spawn_listener, ListenerHandle, Proxy};
use crate::shutdown::{Signal, Tracker};
use crate::state::{self, Saved, StateFile};
use crate::telemetry;

mod view;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub struct Server {
    control: Arc<Control>,
    proxy: Arc<Proxy>,
    /// Running listeners by their configured bind address; changed only by reloads.
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, ListenerHandle>>,
    admin_addr: Option<SocketAddr>,
    /// A copy of the admin API's socket, to hand to a new binary on upgrade.
    admin_copy: Option<std::net::TcpListener>,
    /// What `/ready` says.
    readiness: Readiness,
    shutdown: Signal,
    config_path: Option<PathBuf>,
    last_reload: Mutex<Option<LastReload>>,
    /// Shared decisions through etcd, with `[fleet]`.
    fleet: Option<Arc<Fleet>>,
    /// The worker runtimes that accept and serve client connections (`workers`);
    /// empty: the runtime the server was started on.
    runtimes: Vec<Handle>,
}

impl Server {
    /// Starts with client connections served on the current runtime (tests).
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Server>, StartError> {
        Self::start_on(config, config_path, Vec::new(), Inherited::default()).await
    }

    /// Binds everything first (or takes what `inherited` holds for an address), so a
    /// port in use fails the start before any work begins. Client connections are
    /// accepted and served on `runtimes` (the workers), one `SO_REUSEPORT` socket per
    /// runtime and listener.
    pub async fn start_on(
        config: Config,
        config_path: Option<PathBuf>,
        runtimes: Vec<Handle>,
        mut inherited: Inherited,
    ) -> Result<Arc<Server>, StartError> {
        telemetry::install_metrics();
        let mut bound = Vec::new();
        for listener in &config.listeners {
            let given = inherited.take(listener.bind);
            let socket = if given.is_empty() {
                bind_listener(listener.bind, runtimes.len())
            } else {
                inherit::fit(given, runtimes.len())
            };
            let socket = socket.map_err(|source| StartError::Bind {
                addr: listener.bind,
                source,
            })?;
            bound.push((listener.bind, socket));
        }
        let admin_socket = match &config.admin {
            Some(admin) => {
                let bind_error = |source| StartError::Bind {
                    addr: admin.bind,
                    source,
                };
                let socket = match inherited.take(admin.bind).pop() {
                    Some(socket) => socket,
                    None => {
                        let socket = std::net::TcpListener::bind(admin.bind).map_err(bind_error)?;
                        socket.set_nonblocking(true).map_err(bind_error)?;
                        socket
                    }
                };
                let copy = socket.try_clone().map_err(bind_error)?;
                Some((TcpListener::from_std(socket).map_err(bind_error)?, copy))
            }
            None => None,
        };
        inherited.close_rest();
        let (admin_socket, admin_copy) = match admin_socket {
            Some((socket, copy)) => (Some(socket), Some(copy)),
            None => (None, None),
        };
        let shutdown = Signal::default();
        // The history never stops the start: a file that cannot be used now is retried
        // in the background while the proxy serves (and `/status` says so).
        let history = config.events.history.as_ref().map(|path| {
            recorder::start(recorder::Settings {
                path: path.clone(),
                keep: config.events.keep,
                sites: config.sites.iter().map(|s| RunSite::new(&s.name, s.priority)).collect(),
                recent: RING,
                queue: recorder::QUEUE,
            })
        });
        let (sink, earlier, health) = match history {
            Some(opened) => (Some(opened.sink), opened.recent, Some(opened.health)),
            None => (None, Vec::new(), None),
        };
        let events = Events::start(earlier, health);
        if let Some(sink) = sink {
            events.set_sinks("history", vec![sink]);
        }
        events.set_sinks("notify", notify::sinks(&config.notify));
        let kept = keep_state(&config, config_path.as_deref());
        let saved = kept.as_ref().and_then(|(_, saved)| saved.as_ref());
        let standalone = config.fleet.is_none();
        // Names resolved before the first snapshot: a site behind a name is not down
        // for its first refresh. One that does not resolve leaves its site down until it does.
        let answers = crate::upstream::dns::resolve_all(&config.dns, &config.backend_names()).await;
        let control = Control::restore(config, events, saved.map(|s| (s, standalone)), answers);
        let fleet = control.current().config.fleet.clone().map(|settings| {
            let name = settings
                .name
                .clone()
                .unwrap_or_else(|| member_name(admin_socket.as_ref()));
            let decisions = saved.and_then(|s| s.fleet.clone());
            Fleet::start(
                settings,
                control.clone(),
                name,
                decisions,
                kept.as_ref().map(|(f, _)| f.clone()),
            )
        });
        if let Some((file, _)) = &kept {
            control.keep_in(file.clone());
        }
        let proxy = Proxy::new(control.routing().clone(), control.answers().clone(), Tracker::default());
        proxy.access_log.configure(control.current().config.access_log.as_ref());
        let listeners = bound
            .into_iter()
            .map(|(bind, sockets)| {
                let handle = spawn_listener(sockets, bind, proxy.clone(), shutdown.subscribe(), &runtimes);
                (bind, handle)
            })
            .collect();
        let server = Arc::new(Server {
            control,
            proxy,
            listeners: tokio::sync::Mutex::new(listeners),
            admin_addr: admin_socket.as_ref().and_then(|s| s.local_addr().ok()),
            admin_copy,
            readiness: Readiness::default(),
            shutdown,
            config_path,
            last_reload: Mutex::new(None),
            fleet,
            runtimes,
        });
        telemetry::record_generation(1);
        if let Some(socket) = admin_socket {
            admin::spawn(socket, server.clone() as Arc<dyn Operator>, server.shutdown.subscribe());
        }
        server.readiness.set(Phase::Serving);
        Ok(server)
    }

    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The proxy listeners' actual addresses (port 0 resolved), in no particular order.
    pub async fn proxy_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.lock().await.values().map(|l| l.local_addr).collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The fleet link as `/status` shows it, with `[fleet]`.
    pub fn fleet_status(&self) -> Option<serde_json::Value> {
        self.fleet.as_ref().map(|f| f.status())
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last_reload.lock().ok().and_then(|l| l.clone())
    }

    /// Re-reads the config file and applies it (SIGHUP and `POST /reload`).
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let result = match &self.config_path {
            None => Err(ReloadError::NoFile),
            Some(path) => match config::load(path) {
                Ok(config) => self.apply(config).await,
                Err(e) => Err(e.into()),
            },
        };
        self.note_reload(&result);
        result
    }

    /// Applies a checked config: new listeners are bound first and the snapshot is
    /// swapped only if all of them bound; removed listeners stop accepting afterwards.
    pub async fn apply(&self, config: Config) -> Result<u64, ReloadError> {
        let mut listeners = self.listeners.lock().await;
        let current = self.control.current();
        let admin_bind = |c: &Config| c.admin.as_ref().map(|a| a.bind);
        if admin_bind(&config) != admin_bind(&current.config) {
            return Err(ReloadError::NeedsRestart(
                "admin.bind: changing the admin listener needs a restart".into(),
            ));
        }
        if config.events.history != current.config.events.history {
            return Err(ReloadError::NeedsRestart(
                "events.history: changing the history file needs a restart".into(),
            ));
        }
        if config.fleet != current.config.fleet {
            return Err(ReloadError::NeedsRestart(
                "fleet: changing [fleet] needs a restart".into(),
            ));
        }
        if config.workers != current.config.workers {
            return Err(ReloadError::NeedsRestart(
                "workers: changing the worker count needs a restart".into(),
            ));
        }
        let (now, next) = (&current.config.limits, &config.limits);
        if (
            now.max_connections,
            now.max_header_bytes,
            now.max_headers,
            now.h2_max_streams,
        ) != (
            next.max_connections,
            next.max_header_bytes,
            next.max_headers,
            next.h2_max_streams,
        ) {
            return Err(ReloadError::NeedsRestart(
                "limits: only max_body_bytes changes on reload; the others need a restart".into(),
            ));
        }
        let mut added = Vec::new();
        for listener in config.listeners.iter().filter(|l| !listeners.contains_key(&l.bind)) {
            let socket = bind_listener(listener.bind, self.runtimes.len()).map_err(|source| ReloadError::Bind {
                addr: listener.bind,
                source,
            })?;
            added.push((listener.bind, socket));
        }
        let keep: Vec<SocketAddr> = config.listeners.iter().map(|l| l.bind).collect();
        self.proxy.access_log.configure(config.access_log.as_ref());
        if config.notify != current.config.notify {
            // With a fleet the leader speaks to the receivers (`fleet::voice`).
            match &self.fleet {
                Some(fleet) => fleet.set_notifiers(config.notify.clone()),
                None => self.control.events.set_sinks("notify", notify::sinks(&config.notify)),
            }
        }
        self.control.resolve_new(&config).await;
        let generation = self.control.apply(config);
        if let Some(fleet) = &self.fleet {
            fleet.reapply();
        }
        listeners.retain(|bind, _| keep.contains(bind));
        for (bind, socket) in added {
            listeners.insert(
                bind,
                spawn_listener(
                    socket,
                    bind,
                    self.proxy.clone(),
                    self.shutdown.subscribe(),
                    &self.runtimes,
                ),
            );
        }
        telemetry::record_generation(generation);
        Ok(generation)
    }

    fn note_reload(&self, result: &Result<u64, ReloadError>) {
        let (ok, message) = match result {
            Ok(generation) => (true, format!("applied generation {generation}")),
            Err(e) => (false, e.to_string()),
        };
        telemetry::record_reload(ok);
        if ok {
            tracing::info!(%message, "reload");
        } else {
            for line in message.lines() {
                tracing::error!(error = %line, "reload rejected; the running config keeps serving");
            }
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(LastReload { ok, message, at });
        }
    }

    /// Reopens the access log file (SIGUSR1, after log rotation).
    pub fn reopen_logs(&self) {
        self.proxy.access_log.reopen();
    }

    /// Stops accepting, lets connections and tunnels finish for up to the configured
    /// drain timeout, and returns how many were still open when it gave up.
    pub async fn shutdown(&self) -> usize {
        let drain = self.control.current().config.timeouts.drain;
        self.shutdown.fire();
        self.listeners.lock().await.clear();
        let left = self.proxy.tracker.wait_idle(drain.max(Duration::from_millis(1))).await;
        // Every line of what was served is on disk before the process exits (the
        // writer thread is joined, not left to race the exit).
        self.proxy.access_log.close();
        self.keep_state_now();
        self.control.stop();
        left
    }

    /// `/ready` turns 503 from now on (SIGTERM, or replaced by a new binary).
    pub fn stop_being_ready(&self) {
        self.readiness.set(Phase::Draining);
    }

    /// Copies of every listening socket (the proxy's, then the admin API's), for a new
    /// binary to accept on.
    pub async fn listening_sockets(&self) -> Vec<std::os::fd::OwnedFd> {
        let listeners = self.listeners.lock().await;
        listeners
            .values()
            .flat_map(|l| l.sockets.iter())
            .chain(self.admin_copy.iter())
            .filter_map(|s| s.try_clone().ok())
            .map(std::os::fd::OwnedFd::from)
            .collect()
    }

    /// Writes the state file now (before exiting, before handing over to a new binary).
    pub fn keep_state_now(&self) {
        if let Some(file) = self.control.state_file() {
            if let Err(e) = file.write_now(self.control.saved(), true) {
                tracing::error!(path = %file.path.display(), error = %e, "cannot write the state file");
            }
        }
    }
}

/// The state file and what it held: read before anything is built, so that the first
/// snapshot already has every decision and health it kept. A corrupt or unreadable file
/// is a WARN and nothing of it is applied; a directory that cannot be written, an
/// ERROR (the proxy serves; decisions made now would not survive a restart).
fn keep_state(config: &Config, config_path: Option<&std::path::Path>) -> Option<(Arc<StateFile>, Option<Saved>)> {
    let path = config.state_path(config_path)?;
    if let Err(reason) = state::check_writable(&path) {
        tracing::error!(path = %path.display(), %reason, "the state file cannot be written");
    }
    let saved = match state::load(&path) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(error = %e, "starting without the state kept from before");
            None
        }
    };
    if let Some(saved) = &saved {
        tracing::info!(
            path = %path.display(),
            overrides = saved.weights.len(),
            drills = saved.drills.len(),
            fresh_health = saved.health_is_fresh(crate::clock::unix_ms()),
            "state kept from before applied"
        );
    }
    Some((
        StateFile::new(path, saved.as_ref().and_then(|s| s.fleet.clone())),
        saved,
    ))
}

/// A fleet member's default name: the host name and the admin port.
fn member_name(admin: Option<&TcpListener>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "splitgate".into());
    match admin.and_then(|a| a.local_addr().ok()) {
        Some(addr) => format!("{host}:{}", addr.port()),
        None => host,
    }
}

impl Operator for Server {
    fn phase(&self) -> Phase {
        self.readiness.phase()
    }

    fn fleet(&self) -> Option<Arc<Fleet>> {
        self.fleet.clone()
    }

    fn control(&self) -> &Arc<Control> {
        &self.control
    }

    fn last_reload(&self) -> Option<LastReload> {
        Server::last_reload(self)
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<u64, ReloadError>> + Send + '_>> {
        Box::pin(Server::reload(self))
    }
}
