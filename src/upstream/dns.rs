//! Backend names to addresses, for the control plane only (never the request path): a
//! resolver built from `[dns]` (the system's resolv.conf and hosts file, or the name
//! servers given) and the last good answer of every name. A failed or empty lookup
//! keeps that answer, counted (`splitgate_dns_failures_total`) and logged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use crate::clock::now_ms;
use crate::config::{Backend, Dns};
use crate::telemetry::LogLimit;

/// One lookup of one name, every try of every server included.
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(3);

/// Warnings about failed lookups: a resolver outage must not flood the log.
static FAILURE_LOGS: LogLimit = LogLimit::new(5);

/// Every name's last good addresses, sorted; a name absent has never resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers(BTreeMap<String, Vec<IpAddr>>);

impl Answers {
    /// Where `backend` is reached: its IP literal, or each address its name resolved to
    /// (none while it never resolved).
    pub fn addrs_of(&self, backend: &Backend) -> Vec<SocketAddr> {
        match (backend.socket_addr(), backend.name()) {
            (Some(addr), _) => vec![addr],
            (None, Some(name)) => self
                .0
                .get(&name)
                .map(|ips| ips.iter().map(|&ip| SocketAddr::new(ip, backend.port())).collect())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.0.get(name).map(Vec::as_slice)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Takes `newer`'s answers over these.
    pub fn merge(&mut self, newer: Answers) {
        self.0.extend(newer.0);
    }

    /// Forgets the names not in `names` (no longer in the config).
    pub fn retain(&mut self, names: &BTreeSet<String>) {
        self.0.retain(|name, _| names.contains(name));
    }
}

/// Why a name gave no address.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// No resolver could be built (an unreadable resolv.conf): every lookup fails so.
    #[error("the system's resolver settings: {0}")]
    Settings(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("NXDOMAIN, no such name")]
    NoSuchName,
    #[error("no address in the answer")]
    NoRecords,
    #[error("{0}")]
    Failed(String),
    #[error("the answer holds no address")]
    NoAddress,
}

/// A resolver for one `[dns]` setting; cheap to clone (hickory shares its state).
#[derive(Clone)]
pub struct Resolver {
    settings: Dns,
    /// Why none could be built (an unreadable resolv.conf): every lookup fails with it.
    inner: Result<TokioResolver, LookupError>,
}

impl Resolver {
    pub fn new(settings: &Dns) -> Resolver {
        Resolver {
            settings: settings.clone(),
            inner: build(settings),
        }
    }

    pub fn settings(&self) -> &Dns {
        &self.settings
    }

    /// `name`'s addresses now, sorted and each once; no address is an error.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let resolver = self.inner.as_ref().map_err(Clone::clone)?;
        let lookup = tokio::time::timeout(LOOKUP_LIMIT, resolver.lookup_ip(name))
            .await
            .map_err(|_| LookupError::Timeout(LOOKUP_LIMIT))?
            .map_err(|e| {
                if e.is_nx_domain() {
                    LookupError::NoSuchName
                } else if e.is_no_records_found() {
                    LookupError::NoRecords
                } else {
                    LookupError::Failed(e.to_string())
                }
            })?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return Err(LookupError::NoAddress);
        }
        Ok(ips)
    }

    /// Looks up every name of `names` at once (asking the servers again: nothing is
    /// taken from a cache); a name that fails or comes back empty keeps its addresses
    /// in `last`, or stays unresolved.
    pub async fn refresh(&self, names: &BTreeSet<String>, last: &Answers) -> Answers {
        if let Ok(resolver) = &self.inner {
            resolver.clear_cache();
        }
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let (name, me) = (name.clone(), self.clone());
            lookups.spawn(async move {
                let result = me.lookup(&name).await;
                (name, result)
            });
        }
        let mut answers = Answers::default();
        while let Some(joined) = lookups.join_next().await {
            let Ok((name, result)) = joined else {
                continue;
            };
            let before = last.get(&name);
            match result {
                Ok(ips) => {
                    if before != Some(ips.as_slice()) {
                        tracing::info!(name, addresses = ?ips, "backend name resolved");
                    }
                    crate::telemetry::record_dns_name(&name);
                    answers.0.insert(name, ips);
                }
                Err(error) => {
                    crate::telemetry::record_dns_failure(&name);
                    if let Some(suppressed) = FAILURE_LOGS.allow(now_ms()) {
                        tracing::warn!(name, %error, kept = ?before.unwrap_or_default(), suppressed,
                            "backend name did not resolve; its last addresses are kept");
                    }
                    if let Some(ips) = before {
                        answers.0.insert(name, ips.to_vec());
                    }
                }
            }
        }
        answers
    }
}

/// Looks up `names` with a resolver of `settings`: the start, before the first snapshot.
pub async fn resolve_all(settings: &Dns, names: &BTreeSet<String>) -> Answers {
    if names.is_empty() {
        return Answers::default();
    }
    Resolver::new(settings).refresh(names, &Answers::default()).await
}

fn build(settings: &Dns) -> Result<TokioResolver, LookupError> {
    let provider = TokioConnectionProvider::default();
    if settings.servers.is_empty() {
        let builder = TokioResolver::builder_tokio().map_err(|e| LookupError::Settings(e.to_string()))?;
        return Ok(builder.build());
    }
    let mut config = ResolverConfig::new();
    for &server in &settings.servers {
        // TCP too, for answers too long for UDP.
        config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
        config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
    }
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(1);
    options.attempts = 2;
    // The servers given are the whole truth: the hosts file is not read.
    options.use_hosts_file = ResolveHosts::Never;
    Ok(TokioResolver::builder_with_config(config, provider)
        .with_options(options)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(text: &str) -> Backend {
        Backend {
            authority: text.parse().unwrap(),
        }
    }

    #[test]
    fn an_ip_literal_needs_no_answer_and_a_name_gets_one_address_per_answer() {
        let mut answers = Answers::default();
        assert_eq!(
            answers.addrs_of(&backend("[::1]:80")),
            vec!["[::1]:80".parse().unwrap()]
        );
        assert!(answers.addrs_of(&backend("App.Internal:8080")).is_empty());
        let mut newer = Answers::default();
        newer.0.insert(
            "app.internal".into(),
            vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
        );
        answers.merge(newer);
        assert_eq!(
            answers.addrs_of(&backend("App.Internal:8080")),
            vec![
                "10.0.0.1:8080".parse().unwrap(),
                "10.0.0.2:8080".parse::<SocketAddr>().unwrap()
            ]
        );
        answers.retain(&BTreeSet::new());
        assert!(!answers.contains("app.internal"));
    }
}
