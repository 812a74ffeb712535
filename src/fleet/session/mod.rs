//! One member's link to etcd: connect, read the prefix at revision R, apply it unless
//! etcd's history went back (`lineage`), keep this member's key alive under a lease
//! (a lease that expired while the process was paused is granted anew), and watch
//! from R + 1. Any failure (etcd down, the
//! watch cancelled or compacted away) ends the session; the next one starts again with
//! a full read, after a jittered back-off, so no update is missed and each revision is
//! applied once.
//!
//! `read` is the first full read and what it adopts, `live` the connected session's
//! steps (each watched revision, the keys this member keeps under its lease), `error`
//! why a session ended.

mod error;
mod live;
mod read;

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{self, Certificate, Client, ConnectOptions, Identity, TlsOptions, WatchOptions};
use super::lineage;
use super::Fleet;
use crate::config;
use error::SessionError;
use live::Live;
use read::FirstRead;

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
    let mut client = connect(&fleet.settings).await?;
    let root = format!("{}/", fleet.settings.prefix);
    let first = FirstRead::read(fleet, &mut client, &root).await?;
    let revision = first.revision;
    let (decisions, invalid, epoch) = first.adopt(fleet);
    let refusing = fleet.lock_link().diverged.is_some();
    *fleet.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    fleet.set_connected(true, None);
    if !refusing && epoch.is_none() {
        first_epoch(fleet, &mut client).await?;
    }
    let lease = client.lease_grant(LEASE_TTL).await.map_err(SessionError::Lease)?;
    let (mut live, mut published) = Live::announce(fleet, client, lease, decisions, invalid, refusing).await?;
    let (mut keeper, mut kept) = live
        .client
        .lease_keep_alive(lease)
        .await
        .map_err(SessionError::KeepAlive)?;
    let (_watcher, mut stream) = live
        .client
        .watch(
            root.as_str(),
            Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1)),
        )
        .await
        .map_err(SessionError::Watch)?;
    live.seen = revision;
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = message.map_err(SessionError::Watch)?.ok_or(SessionError::WatchEnded)?;
                live.take_revision(&response).await?;
            }
            // This member settled an event: its figures go where the leader reads them.
            _ = fleet.reports_changed.notified() => live.publish_reports().await?,
            // A snapshot was published here: a health flip changes this member's view.
            changed = published.changed() => {
                if changed.is_err() {
                    return Err(SessionError::ControlGone);
                }
                live.publish_view().await?;
            }
            _ = tick.tick() => live.keep_alive(&mut keeper, &mut kept).await?,
        }
    }
}

/// A client of the configured endpoints, with the fleet's timeouts, user and TLS.
async fn connect(settings: &config::Fleet) -> Result<Client, SessionError> {
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
    Client::connect(&settings.etcd, Some(options))
        .await
        .map_err(SessionError::Connect)
}

/// The fleet's first epoch, made once: a later empty etcd is told apart by it.
async fn first_epoch(fleet: &Fleet, client: &mut Client) -> Result<(), SessionError> {
    let key = format!("{}/epoch", fleet.settings.prefix);
    let create = etcd::Txn::new()
        .when([etcd::Compare::create_revision(key.as_str(), etcd::CompareOp::Equal, 0)])
        .and_then([etcd::TxnOp::put(
            key.as_str(),
            lineage::epoch_value(1, &fleet.name, false),
            None,
        )]);
    client.txn(create).await.map_err(SessionError::Epoch)?;
    Ok(())
}
