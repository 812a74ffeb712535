//! Keeps backend names resolved: the control plane's resolver task. Every `[dns]
//! refresh` it looks up each name of the config in force; addresses that appear become
//! backends and addresses that go are retired, as on a reload (`Control::readdress`).
//! Requests never wait on it: they only ever see addresses.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::Control;
use crate::config::{Config, Dns};
use crate::upstream::dns::{Answers, Resolver};

/// The resolver in force and the last good answer of every name.
pub(super) struct Names {
    resolver: Mutex<Option<Resolver>>,
    answers: Mutex<Answers>,
    /// Wakes the task when a reload changed `[dns]`, so a shorter refresh starts now.
    pub(super) settings_changed: Arc<Notify>,
}

impl Names {
    pub(super) fn new(answers: Answers) -> Names {
        Names {
            resolver: Mutex::new(None),
            answers: Mutex::new(answers),
            settings_changed: Arc::default(),
        }
    }

    /// The resolver for `settings`, built again when they changed.
    pub(super) fn resolver(&self, settings: &Dns) -> Resolver {
        let mut resolver = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        match resolver.as_ref() {
            Some(r) if r.settings() == settings => r.clone(),
            _ => resolver.insert(Resolver::new(settings)).clone(),
        }
    }

    pub(super) fn answers(&self) -> Answers {
        self.answers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `newer` in and forgets names not in `names` (all names kept with `None`);
    /// true if anything changed.
    pub(super) fn update(&self, newer: Answers, names: Option<&BTreeSet<String>>) -> bool {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let before = answers.clone();
        answers.merge(newer);
        if let Some(names) = names {
            answers.retain(names);
        }
        *answers != before
    }

    /// The names of `config` that never resolved.
    pub(super) fn unresolved(&self, config: &Config) -> BTreeSet<String> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        config
            .backend_names()
            .into_iter()
            .filter(|n| !answers.contains(n))
            .collect()
    }
}

/// Looks every name up again each `[dns] refresh`; ends when the `Control` is dropped.
pub(super) fn spawn(control: Weak<Control>, settings_changed: Arc<Notify>) {
    tokio::spawn(async move {
        loop {
            let Some(refresh) = control.upgrade().map(|c| c.current().config.dns.refresh) else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(refresh) => {}
                _ = settings_changed.notified() => {}
            }
            let (names, resolver, last) = match control.upgrade() {
                Some(c) => {
                    let config = c.current().config.clone();
                    (config.backend_names(), c.names.resolver(&config.dns), c.names.answers())
                }
                None => return,
            };
            if names.is_empty() {
                continue;
            }
            let answers = resolver.refresh(&names, &last).await;
            match control.upgrade() {
                Some(c) => c.readdress(answers),
                None => return,
            }
        }
    });
}
