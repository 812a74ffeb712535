//! What `splitgate check` finds beyond the config's own problems: a default state file
//! that cannot be written (a problem: `run` would lose its decisions), and what `run`
//! meets but does not stop for (warnings): a history it cannot open yet, backend names
//! that do not resolve now.

use std::path::Path;

use crate::config::Config;
use crate::events::history::History;
use crate::upstream::dns::{LookupError, Resolver};

/// The findings, worded for the operator (the caller puts the config file's path before
/// each).
#[derive(Debug, Default)]
pub struct Preflight {
    /// The one that fails `check`.
    pub problem: Option<String>,
    pub warnings: Vec<String>,
}

/// Checks `config` (loaded from `path`) against the machine it would run on.
pub fn check(config: &Config, path: &Path) -> Preflight {
    let mut found = Preflight::default();
    // The default state file, beside the config file (a configured one is checked with
    // the rest, by the config's own validation).
    if let Some(state) = config.state_path(Some(path)).filter(|_| config.state_path.is_none()) {
        if let Err(reason) = crate::state::check_writable(&state) {
            found.problem = Some(format!("state.path (default {}): {reason}", state.display()));
            return found;
        }
    }
    if let Some(history) = &config.events.history {
        if let Err(reason) = History::probe(history) {
            found.warnings.push(format!(
                "events.history: {reason}; splitgate run serves without the history and retries it"
            ));
        }
    }
    found.warnings.extend(unresolved_names(config));
    found
}

/// Backend names that do not resolve now, as `check` warns of them: `run` starts with
/// their sites down and brings them up when the names resolve.
fn unresolved_names(config: &Config) -> Vec<String> {
    let names = config.backend_names();
    if names.is_empty() {
        return Vec::new();
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return vec!["backend names: cannot start the async runtime to resolve them".into()];
    };
    let failures: std::collections::BTreeMap<String, LookupError> = runtime.block_on(async {
        let resolver = Resolver::new(&config.dns);
        let mut failures = std::collections::BTreeMap::new();
        for name in names {
            if let Err(reason) = resolver.lookup(&name).await {
                failures.insert(name, reason);
            }
        }
        failures
    });
    let mut warnings = Vec::new();
    for (i, site) in config.sites.iter().enumerate() {
        for (j, backend) in site.backends.iter().enumerate() {
            if let Some(reason) = backend.name().and_then(|n| failures.get(&n)) {
                warnings.push(format!(
                    "site[{i}].backends[{j}]: \"{}\" does not resolve now ({reason}); splitgate run starts \
                     without it and adds it when it resolves (asked again every [dns] refresh)",
                    backend.addr()
                ));
            }
        }
    }
    warnings
}
