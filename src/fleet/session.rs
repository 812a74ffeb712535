//! One member's link to etcd: connect, read the prefix at revision R, apply it unless
//! etcd's history went back (`lineage`), keep this member's key alive under a lease
//! (a lease that expired while the process was paused is granted anew), and watch
//! from R + 1. Any failure (etcd down, the
//! watch cancelled or compacted away) ends the session; the next one starts again with
//! a full read, after a jittered back-off, so no update is missed and each revision is
//! applied once.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{
    self, Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, KeyValue, PutOptions, TlsOptions,
    WatchOptions,
};
use serde_json::json;

use super::lineage::{self, Epoch, View as Lineage};
use super::state::{self, Decisions, Invalid, Key};
use super::views::View;
use super::voice::VoiceError;
use super::Fleet;

/// A member's key lives this long after its last keep-alive.
const LEASE_TTL: i64 = 10;
const KEEP_ALIVE: Duration = Duration::from_secs(3);
/// Back-off between sessions doubles from 0.2 s up to this (plus jitter): a member
/// catches up within a few seconds of etcd coming back.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a session ended; `Display` is `/status`'s `fleet.last_error`.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(#[source] etcd::Error),
    #[error("read: {0}")]
    Read(#[source] etcd::Error),
    #[error("epoch: {0}")]
    Epoch(#[source] etcd::Error),
    #[error("lease: {0}")]
    Lease(#[source] etcd::Error),
    /// A put under the lease; `what` names the key (`member key`, `health view`, ...).
    #[error("{what}: {source}")]
    Put { what: &'static str, source: etcd::Error },
    #[error("keep-alive: {0}")]
    KeepAlive(#[source] etcd::Error),
    #[error("lease lost")]
    LeaseLost,
    #[error("the lease expired; announcing this member again")]
    LeaseExpired,
    #[error("watch: {0}")]
    Watch(#[source] etcd::Error),
    #[error("watch ended")]
    WatchEnded,
    #[error("watch cancelled ({0}); reading again")]
    WatchCancelled(String),
    #[error("the fleet's epoch changed; reading again")]
    EpochChanged,
    #[error("the control plane went away")]
    ControlGone,
    #[error(transparent)]
    Voice(#[from] VoiceError),
}

pub async fn run(fleet: Weak<Fleet>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(member) = fleet.upgrade() else {
            return;
        };
        let outcome = session(&member).await;
        *member.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let error = outcome.err().map_or_else(|| "session ended".into(), |e| e.to_string());
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

async fn session(fleet: &Arc<Fleet>) -> Result<(), SessionError> {
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
        .map_err(SessionError::Connect)?;
    let root = format!("{}/", settings.prefix);
    let read = client
        .get(root.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(SessionError::Read)?;
    let revision = read.header().map_or(0, |h| h.revision());
    let last = fleet.decisions();
    let applied = fleet.lock_link().revision.max(last.revision);
    let mut decisions = Decisions {
        revision,
        cluster_id: read.header().map_or(0, |h| h.cluster_id()),
        ..Decisions::default()
    };
    let mut invalid = Invalid::new();
    let mut members = BTreeMap::new();
    let mut views = BTreeMap::new();
    let mut reports = BTreeMap::new();
    let mut leader = None;
    let mut epoch = None;
    let last = fallback(&mut client, &settings.prefix, read.kvs(), last).await;
    for kv in read.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let meaning = state::key(&settings.prefix, &key);
        match meaning {
            Key::Member(name) => {
                let value = serde_json::from_slice(kv.value()).unwrap_or(json!(null));
                if name == fleet.name && fleet.me.other_process(&value, true) {
                    fleet.duplicate_name(&value);
                }
                members.insert(name.to_string(), value);
            }
            Key::Epoch => {
                epoch = Epoch::parse(kv.value());
                decisions.take(&last, &key, &meaning, Some(kv.value()), &mut invalid);
            }
            Key::Health(member) => {
                views.insert(member.to_string(), View::parse(kv.value()));
            }
            Key::Drill(site) => {
                decisions.take(&last, &key, &meaning, Some(kv.value()), &mut invalid);
                decisions
                    .drill_ids
                    .insert(site.to_string(), kv.mod_revision().max(0) as u64);
            }
            Key::Report(member) => {
                let report = serde_json::from_slice(kv.value()).unwrap_or(json!({}));
                reports.insert(member.to_string(), report);
            }
            Key::Leader => leader = Some(String::from_utf8_lossy(kv.value()).into_owned()),
            _ => decisions.take(&last, &key, &meaning, Some(kv.value()), &mut invalid),
        }
    }
    let lineage_view = Lineage {
        revision,
        cluster_id: decisions.cluster_id,
        epoch: epoch.clone(),
    };
    let refusal = lineage::diverged(&last, applied, &lineage_view);
    let last = fleet.decisions();
    {
        let mut link = fleet.lock_link();
        link.members = members;
        link.reports = reports;
        link.leader = leader;
        // This member's own view is published below, from what it sees now.
        link.views = views
            .into_iter()
            .filter_map(|(m, v)| Some((m, v?)))
            .filter(|(m, _)| *m != fleet.name)
            .collect();
    }
    fleet.set_invalid(invalid.clone());
    fleet.set_diverged(refusal.clone(), epoch.as_ref().map_or(0, |e| e.number));
    let mut decisions = match refusal {
        Some(_) => last,
        None => {
            fleet.apply(decisions.clone());
            decisions
        }
    };
    let mut refusing = fleet.lock_link().diverged.is_some();
    *fleet.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    fleet.set_connected(true, None);
    if !refusing && epoch.is_none() {
        // The fleet's first epoch, made once: a later empty etcd is told apart by it.
        let key = format!("{}/epoch", settings.prefix);
        let create = etcd::Txn::new()
            .when([etcd::Compare::create_revision(key.as_str(), etcd::CompareOp::Equal, 0)])
            .and_then([etcd::TxnOp::put(
                key.as_str(),
                lineage::epoch_value(1, &fleet.name, false),
                None,
            )]);
        client.txn(create).await.map_err(SessionError::Epoch)?;
    }

    let lease = client.lease_grant(LEASE_TTL).await.map_err(SessionError::Lease)?;
    let member_key = format!("{}/members/{}", settings.prefix, fleet.name);
    let announce = |revision: i64| {
        json!({
            "revision": revision,
            "generation": fleet.control.current().generation,
            "instance": fleet.me.instance,
            "host": fleet.me.host,
            "pid": fleet.me.pid,
        })
        .to_string()
    };
    put_leased(
        &mut client,
        member_key.as_str(),
        announce(decisions.revision),
        lease,
        "member key",
    )
    .await?;
    let health_key = format!("{}/health/{}", settings.prefix, fleet.name);
    let mut view = fleet.own_view();
    put_leased(&mut client, health_key.as_str(), view.to_value(), lease, "health view").await?;
    fleet.take_view(&fleet.name, Some(view.clone()));
    fleet.decide();
    // Decided again once the fleet has had time to be heard (`quorum::HEAR_MS`).
    let later = Arc::downgrade(fleet);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(super::quorum::HEAR_MS + 50)).await;
        if let Some(fleet) = later.upgrade() {
            fleet.decide();
        }
    });
    let mut published = fleet.control.published();
    // Reports of this member's events, and the leadership.
    let reports_key = format!("{}/reports/{}", settings.prefix, fleet.name);
    let mut report = fleet.own_reports();
    put_leased(&mut client, reports_key.as_str(), report.to_string(), lease, "reports").await?;
    let mut voice = super::voice::Voice::new(fleet);
    voice.campaign(&mut client, lease).await?;
    let (mut keeper, mut kept) = client.lease_keep_alive(lease).await.map_err(SessionError::KeepAlive)?;
    let (_watcher, mut stream) = client
        .watch(
            root.as_str(),
            Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1)),
        )
        .await
        .map_err(SessionError::Watch)?;
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    // A member announces the revision of the decisions it applied, not every revision
    // it saw: members' own keys change revisions too, and announcing those would make
    // every member rewrite its key after every other member's write, for ever.
    let mut announced = decisions.revision;
    let mut seen = revision;
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = message.map_err(SessionError::Watch)?.ok_or(SessionError::WatchEnded)?;
                if response.canceled() || response.compact_revision() > 0 {
                    return Err(SessionError::WatchCancelled(response.cancel_reason().to_owned()));
                }
                let Some(header) = response.header() else { continue };
                if response.events().is_empty() || header.revision() <= seen {
                    continue;
                }
                let mut next = decisions.clone();
                let mut link_members = fleet.lock_link().members.clone();
                let mut views_changed = false;
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let meaning = state::key(&settings.prefix, &key);
                    let value = (event.event_type() == EventType::Put).then(|| kv.value());
                    match (&meaning, value) {
                        (Key::Member(name), Some(value)) => {
                            let value = serde_json::from_slice(value).unwrap_or(json!(null));
                            if *name == fleet.name && fleet.me.other_process(&value, false) {
                                fleet.duplicate_name(&value);
                            }
                            link_members.insert(name.to_string(), value);
                        }
                        (Key::Member(name), None) => {
                            link_members.remove(*name);
                            views_changed = true;
                        }
                        // Another member's view (this member's own is kept as published).
                        (Key::Health(member), value) => {
                            if *member != fleet.name {
                                fleet.take_view(member, value.and_then(View::parse));
                                views_changed = true;
                            }
                        }
                        // A release of a held site, on every member that holds it.
                        (Key::Failback(site), Some(_)) if !refusing => {
                            if fleet.control.fail_back(site).is_ok() {
                                tracing::info!(site, "fleet: a held site was released by the fleet");
                            }
                        }
                        (Key::Epoch, value) => {
                            let confirmed = value.and_then(Epoch::parse).is_some_and(|e| e.number > decisions.epoch && e.number >= 2);
                            if value.is_none() || (refusing && confirmed) {
                                return Err(SessionError::EpochChanged);
                            }
                            if !refusing {
                                next.take(&decisions, &key, &meaning, value, &mut invalid);
                            }
                        }
                        (Key::Report(member), value) => {
                            let report = value.and_then(|v| serde_json::from_slice(v).ok());
                            fleet.take_report(member, report);
                        }
                        (Key::Leader, value) => {
                            let holder = value.map(|v| String::from_utf8_lossy(v).into_owned());
                            if fleet.set_leader(holder) {
                                voice.campaign(&mut client, lease).await?;
                            }
                        }
                        // While the history is in question, no decision is taken.
                        _ if refusing => {}
                        (Key::Drill(site), None) => {
                            next.take(&decisions, &key, &meaning, value, &mut invalid);
                            next.drill_ids.remove(*site);
                        }
                        (Key::Drill(site), Some(_)) => {
                            next.take(&decisions, &key, &meaning, value, &mut invalid);
                            next.drill_ids.insert(site.to_string(), kv.mod_revision().max(0) as u64);
                        }
                        _ => next.take(&decisions, &key, &meaning, value, &mut invalid),
                    }
                }
                let joined = link_members.len() != fleet.lock_link().members.len();
                fleet.lock_link().members = link_members;
                if views_changed || joined {
                    fleet.decide();
                }
                fleet.set_invalid(invalid.clone());
                seen = header.revision();
                if refusing {
                    refusing = fleet.lock_link().diverged.is_some();
                    continue;
                }
                next.revision = seen;
                if next.weights != decisions.weights || next.drills != decisions.drills || next.epoch_id != decisions.epoch_id {
                    decisions = next;
                    fleet.apply(decisions.clone());
                } else {
                    // Nothing to apply (a member key, an unchanged value): the revision
                    // still counts as applied, so a write waiting for it answers.
                    fleet.advance(seen);
                }
            }
            // This member settled an event: its figures go where the leader reads them.
            _ = fleet.reports_changed.notified() => {
                let now = fleet.own_reports();
                if now != report {
                    report = now;
                    put_leased(&mut client, reports_key.as_str(), report.to_string(), lease, "reports").await?;
                }
            }
            // A snapshot was published here: a health flip changes this member's view.
            changed = published.changed() => {
                if changed.is_err() {
                    return Err(SessionError::ControlGone);
                }
                let now = fleet.own_view();
                if !now.same_as(&view) {
                    view = now;
                    put_leased(&mut client, health_key.as_str(), view.to_value(), lease, "health view").await?;
                    fleet.take_view(&fleet.name, Some(view.clone()));
                    fleet.decide();
                }
            }
            _ = tick.tick() => {
                keeper.keep_alive().await.map_err(SessionError::KeepAlive)?;
                let answer = kept.message().await.map_err(SessionError::KeepAlive)?.ok_or(SessionError::LeaseLost)?;
                if answer.ttl() <= 0 {
                    // Paused past the lease (SIGSTOP, a long GC of the host): the member
                    // key is gone; a new session grants a new lease and announces again.
                    return Err(SessionError::LeaseExpired);
                }
                if announced != decisions.revision {
                    announced = decisions.revision;
                    put_leased(&mut client, member_key.as_str(), announce(announced), lease, "member key").await?;
                }
            }
        }
    }
}

/// How many older versions of a key are looked at for its last valid value.
const HISTORY_STEPS: usize = 8;

/// The decisions to fall back on for keys whose value is invalid now: each such key's
/// last valid value in etcd's own history (so that every member, a new one too, falls
/// back on the same value; a key created invalid falls back on no value), or, where
/// that history is compacted away, what this member had applied (`last`).
async fn fallback(client: &mut Client, prefix: &str, kvs: &[KeyValue], last: Decisions) -> Decisions {
    let valid = |meaning: &Key<'_>, value: &[u8]| match meaning {
        Key::Weight(_) => state::weight(value).is_some(),
        Key::Drill(_) => state::drill(value).is_some(),
        _ => true,
    };
    let mut fallback = last.clone();
    let mut scratch = Invalid::new();
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let meaning = state::key(prefix, &key);
        if valid(&meaning, kv.value()) {
            continue;
        }
        let mut version = kv.clone();
        for _ in 0..HISTORY_STEPS {
            if version.create_revision() == version.mod_revision() {
                // Created with this value: before it, the key did not exist.
                fallback.take(&last, &key, &meaning, None, &mut scratch);
                break;
            }
            let at = GetOptions::new().with_revision(version.mod_revision() - 1);
            let Ok(answer) = client.get(kv.key(), Some(at)).await else {
                break; // compacted: what this member had stays
            };
            match answer.kvs().first() {
                None => {
                    fallback.take(&last, &key, &meaning, None, &mut scratch);
                    break;
                }
                Some(before) if valid(&meaning, before.value()) => {
                    fallback.take(&last, &key, &meaning, Some(before.value()), &mut scratch);
                    break;
                }
                Some(before) => version = before.clone(),
            }
        }
    }
    fallback
}

/// Puts `value` at `key` under this session's lease (it goes with the member).
async fn put_leased(
    client: &mut Client,
    key: &str,
    value: String,
    lease: i64,
    what: &'static str,
) -> Result<(), SessionError> {
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(|source| SessionError::Put { what, source })
}
