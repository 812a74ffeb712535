//! Every backend's runtime object, keyed by (site, address, TLS settings), kept across
//! config snapshots: a reload (or a name's new addresses) reuses the backends that stay
//! (health, pool and all) and retires the ones that go, closing their connections. A
//! backend given by name is one runtime backend per address it resolved to. A site whose TLS settings
//! change gets new backends, since its old connections were made under the old ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::admission::SiteQueue;
use super::backend::Backend;
use crate::config::Config;
use crate::upstream::dns::Answers;
use crate::upstream::{Connector, Pool};

/// Site, address as configured, address connected to, TLS settings and protocol: a
/// change of any is a new backend.
type Key = (String, String, SocketAddr, Option<u64>, crate::config::Protocol);

#[derive(Default)]
pub struct HealthRegistry {
    /// Written only by config applies (serialised by `Control`), never by requests.
    backends: Mutex<HashMap<Key, Arc<Backend>>>,
    /// Each site's waiting room, by name, shared by its backends across reloads.
    queues: Mutex<HashMap<String, Arc<SiteQueue>>>,
    /// Notified on every health flip; the publisher waits on it.
    pub changes: Arc<Notify>,
}

/// Backends for a new config, aligned with `config.sites[i]`: each of its backends,
/// once per address.
pub struct Synced {
    pub backends: Vec<Vec<Arc<Backend>>>,
    /// Backends the registry had not seen: they need a prober.
    pub added: Vec<Arc<Backend>>,
}

impl HealthRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Matches the config's backends, at the addresses `answers` gives their names,
    /// with live ones: kept ones get the new probe settings and connect timeout, new
    /// ones start healthy, removed ones are retired.
    pub fn sync(&self, config: &Config, answers: &Answers) -> Synced {
        let mut map = self.backends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next: HashMap<Key, Arc<Backend>> = HashMap::with_capacity(map.len());
        let mut added = Vec::new();
        let connect = config.timeouts.connect;
        let mut queues = self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.retain(|name, _| config.sites.iter().any(|s| &s.name == name));
        let backends = config
            .sites
            .iter()
            .map(|site| {
                let fingerprint = site.tls.as_ref().map(|t| t.fingerprint);
                let mut connector: Option<Arc<Connector>> = None;
                let queue = queues.entry(site.name.clone()).or_default().clone();
                site.backends
                    .iter()
                    .flat_map(|backend| answers.addrs_of(backend).into_iter().map(move |addr| (backend, addr)))
                    .map(|(backend, addr)| {
                        let key = (
                            site.name.clone(),
                            backend.addr().to_string(),
                            addr,
                            fingerprint,
                            site.protocol,
                        );
                        let live = match map.remove(&key) {
                            Some(live) => {
                                live.check.store(Arc::new(site.health.clone()));
                                live.pool.set_connect_timeout(connect);
                                live
                            }
                            None => {
                                let connector = connector
                                    .get_or_insert_with(|| {
                                        Connector::new(site.tls.as_ref(), site.protocol == crate::config::Protocol::H2c)
                                    })
                                    .clone();
                                let pool = Pool::new(backend.authority.clone(), addr, connector, connect);
                                let live = Arc::new(Backend::new(
                                    &site.name,
                                    pool,
                                    site.health.clone(),
                                    self.changes.clone(),
                                    queue.clone(),
                                ));
                                added.push(live.clone());
                                live
                            }
                        };
                        next.insert(key, live.clone());
                        live
                    })
                    .collect()
            })
            .collect();
        for gone in map.values() {
            gone.retire();
        }
        *map = next;
        Synced { backends, added }
    }

    /// Stops every prober (the process or an in-process server is going away).
    pub fn retire_all(&self) {
        let map = self.backends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for backend in map.values() {
            backend.retire();
        }
    }
}
