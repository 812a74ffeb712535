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

use crate::admin::{self, LastReload, Operator};
use crate::config::{self, Config, ConfigError};
use crate::control::Control;
use crate::events::history::RunSite;
use crate::events::{notify, recorder, Events, RING};
use crate::fleet::Fleet;
use crate::proxy::{bind_listener, spawn_listener, ListenerHandle, Proxy};
use crate::shutdown::{Signal, Tracker};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0} (the running config is unchanged)")]
    NeedsRestart(String),
    #[error("cannot listen on {addr}: {source} (the running config is unchanged)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("no config file to reload (started without --config)")]
    NoFile,
}

pub struct Server {
    control: Arc<Control>,
    proxy: Arc<Proxy>,
    /// Running listeners by their configured bind address; changed only by reloads.
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, ListenerHandle>>,
    admin_addr: Option<SocketAddr>,
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
        Self::start_on(config, config_path, Vec::new()).await
    }

    /// Binds everything first, so a port in use fails the start before any work begins.
    /// Client connections are accepted and served on `runtimes` (the workers), one
    /// `SO_REUSEPORT` socket per runtime and listener.
    pub async fn start_on(
        config: Config,
        config_path: Option<PathBuf>,
        runtimes: Vec<Handle>,
    ) -> Result<Arc<Server>, StartError> {
        telemetry::install_metrics();
        let mut bound = Vec::new();
        for listener in &config.listeners {
            let socket = bind_listener(listener.bind, runtimes.len()).map_err(|source| StartError::Bind {
                addr: listener.bind,
                source,
            })?;
            bound.push((listener.bind, socket));
        }
        let admin_socket = match &config.admin {
            Some(admin) => Some(TcpListener::bind(admin.bind).await.map_err(|source| StartError::Bind {
                addr: admin.bind,
                source,
            })?),
            None => None,
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
        let control = Control::new(config, events);
        let fleet = control.current().config.fleet.clone().map(|settings| {
            let name = settings
                .name
                .clone()
                .unwrap_or_else(|| member_name(admin_socket.as_ref()));
            let state = settings
                .state
                .clone()
                .or_else(|| config_path.as_ref().map(|p| p.with_extension("fleet-state.json")));
            Fleet::start(settings, control.clone(), name, state)
        });
        let proxy = Proxy::new(control.routing().clone(), Tracker::default());
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
        Ok(server)
    }

    pub fn control(&self) -> &Arc<Control> {
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
            self.control.events.set_sinks("notify", notify::sinks(&config.notify));
        }
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
        self.control.stop();
        left
    }
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

    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>> {
        Box::pin(async move { Server::reload(self).await.map_err(|e| e.to_string()) })
    }
}
