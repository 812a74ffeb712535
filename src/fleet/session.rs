//! One member's link to etcd: connect, read the prefix at revision R, apply, keep this
//! member's key alive under a lease, and watch from R + 1. Any failure (etcd down, the
//! watch cancelled or compacted away) ends the session; the next one starts again with
//! a full read, after a jittered back-off, so no update is missed and each revision is
//! applied once.

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions, WatchOptions,
};
use serde_json::json;

use super::state::{self, Decisions, Key};
use super::Fleet;

/// A member's key lives this long after its last keep-alive.
const LEASE_TTL: i64 = 10;
const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Back-off between sessions doubles from 0.2 s up to this (plus jitter): a member
/// catches up within a few seconds of etcd coming back.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub async fn run(fleet: Weak<Fleet>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(member) = fleet.upgrade() else {
            return;
        };
        let outcome = session(&member).await;
        *member.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let error = outcome.err().unwrap_or_else(|| "session ended".into());
        // A session that got connected starts the back-off over.
        if member.lock_link().connected {
            backoff = Duration::from_millis(200);
        }
        member.set_connected(false, Some(error));
        drop(member);
        // Jitter from the clock's low bits: members do not reconnect in lockstep.
        let jitter = Duration::from_millis(crate::clock::now_ms() % 200);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(fleet: &Arc<Fleet>) -> Result<(), String> {
    let settings = &fleet.settings;
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some((user, password)) = &settings.credentials {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &settings.tls {
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(config);
    }
    let mut client = Client::connect(&settings.etcd, Some(options))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let root = format!("{}/", settings.prefix);
    let read = client
        .get(root.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("read: {e}"))?;
    let mut revision = read.header().map_or(0, |h| h.revision());
    let mut decisions = Decisions {
        revision,
        ..Decisions::default()
    };
    let mut members = std::collections::BTreeMap::new();
    for kv in read.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match state::key(&settings.prefix, &key) {
            Key::Weight(site) => match state::weight(kv.value()) {
                Some(w) => {
                    decisions.weights.insert(site.to_string(), w);
                }
                None => state::invalid(&key, kv.value()),
            },
            Key::Drill(site) => match state::drill(kv.value()) {
                Some(until) => {
                    decisions.drills.insert(site.to_string(), until);
                }
                None => state::invalid(&key, kv.value()),
            },
            Key::Member(name) => {
                members.insert(
                    name.to_string(),
                    serde_json::from_slice(kv.value()).unwrap_or(json!(null)),
                );
            }
            Key::Other => {}
        }
    }
    fleet.apply(decisions.clone());
    fleet.lock_link().members = members;
    *fleet.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    fleet.set_connected(true, None);

    let lease = client
        .lease_grant(LEASE_TTL, None)
        .await
        .map_err(|e| format!("lease: {e}"))?
        .id();
    let member_key = format!("{}/members/{}", settings.prefix, fleet.name);
    let announce =
        |revision: i64| json!({"revision": revision, "generation": fleet.control.current().generation}).to_string();
    client
        .put(
            member_key.as_str(),
            announce(revision),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| format!("member key: {e}"))?;
    let (mut keeper, mut kept) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("keep-alive: {e}"))?;
    let (_watcher, mut stream) = client
        .watch(
            root.as_str(),
            Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1)),
        )
        .await
        .map_err(|e| format!("watch: {e}"))?;
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    // A member announces the revision of the decisions it applied, not every revision
    // it saw: members' own keys change revisions too, and announcing those would make
    // every member rewrite its key after every other member's write, for ever.
    let mut announced = decisions.revision;
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = message.map_err(|e| format!("watch: {e}"))?.ok_or("watch ended")?;
                if response.canceled() || response.compact_revision() > 0 {
                    return Err(format!("watch cancelled ({}); reading again", response.cancel_reason()));
                }
                let Some(header) = response.header() else { continue };
                if response.events().is_empty() || header.revision() <= revision {
                    continue;
                }
                let mut next = decisions.clone();
                let mut valid = true;
                let mut link_members = fleet.lock_link().members.clone();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    match (state::key(&settings.prefix, &key), event.event_type()) {
                        (Key::Weight(site), EventType::Put) => match state::weight(kv.value()) {
                            Some(w) => { next.weights.insert(site.to_string(), w); }
                            None => { state::invalid(&key, kv.value()); valid = false; }
                        },
                        (Key::Weight(site), EventType::Delete) => { next.weights.remove(site); }
                        (Key::Drill(site), EventType::Put) => match state::drill(kv.value()) {
                            Some(until) => { next.drills.insert(site.to_string(), until); }
                            None => { state::invalid(&key, kv.value()); valid = false; }
                        },
                        (Key::Drill(site), EventType::Delete) => { next.drills.remove(site); }
                        (Key::Member(name), EventType::Put) => {
                            link_members.insert(name.to_string(), serde_json::from_slice(kv.value()).unwrap_or(json!(null)));
                        }
                        (Key::Member(name), EventType::Delete) => { link_members.remove(name); }
                        (Key::Other, _) => {}
                    }
                }
                fleet.lock_link().members = link_members;
                revision = header.revision();
                next.revision = revision;
                // A revision with an invalid value is left out whole: never half of it.
                if valid && (next.weights != decisions.weights || next.drills != decisions.drills) {
                    decisions = next;
                    fleet.apply(decisions.clone());
                } else {
                    // Nothing to apply (a member key, an unchanged value): the revision
                    // still counts as applied, so a write waiting for it answers.
                    fleet.advance(revision);
                }
            }
            _ = tick.tick() => {
                keeper.keep_alive().await.map_err(|e| format!("keep-alive: {e}"))?;
                kept.message().await.map_err(|e| format!("keep-alive: {e}"))?.ok_or("lease lost")?;
                if announced != decisions.revision {
                    announced = decisions.revision;
                    client
                        .put(member_key.as_str(), announce(announced), Some(PutOptions::new().with_lease(lease)))
                        .await
                        .map_err(|e| format!("member key: {e}"))?;
                }
            }
        }
    }
}
