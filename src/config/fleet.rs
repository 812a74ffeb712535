//! Checks `[fleet]`: etcd endpoints as `http://host:port`, a key prefix, a member name,
//! optional credentials, and where the last decisions are kept across restarts.

use std::path::Path;

use super::file::FleetFile;
use super::model::{Fleet, FleetTls};
use super::problems::Problems;

pub(super) fn validate_fleet(file: &FleetFile, base: &Path, problems: &mut Problems) -> Fleet {
    if file.etcd.is_empty() {
        problems.add(
            "fleet.etcd",
            "needs at least one etcd endpoint, e.g. [\"http://127.0.0.1:2379\"]",
        );
    }
    let scheme = if file.tls.is_some() { "https" } else { "http" };
    for (i, endpoint) in file.etcd.iter().enumerate() {
        let ok = endpoint
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some(scheme) && u.authority().is_some_and(|a| a.port_u16().is_some()));
        if !ok {
            let hint = if file.tls.is_some() {
                " ([fleet] tls is set)"
            } else {
                " (https needs [fleet] tls)"
            };
            problems.add(
                format!("fleet.etcd[{i}]"),
                format!("\"{endpoint}\" is not a {scheme}://host:port endpoint{hint}"),
            );
        }
    }
    let tls = file.tls.as_ref().and_then(|t| {
        let mut read = |key: &str, path: &str| match crate::config::read_bounded(&base.join(path)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problems.add(format!("fleet.tls.{key}"), format!("{path}: cannot read: {e}"));
                None
            }
        };
        let ca = read("ca", &t.ca)?;
        let identity = match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => Some((read("client_cert", cert)?, read("client_key", key)?)),
            (None, None) => None,
            _ => {
                problems.add("fleet.tls", "client_cert and client_key go together");
                None
            }
        };
        Some(FleetTls { ca, identity })
    });
    let prefix = file.prefix.clone().unwrap_or_else(|| "/splitgate".into());
    let prefix = prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        problems.add(
            "fleet.prefix",
            format!("\"{prefix}\" must start with '/' and name this fleet, e.g. \"/splitgate/prod\""),
        );
    }
    let name = file.name.clone();
    if let Some(n) = &name {
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
            problems.add(
                "fleet.name",
                format!("\"{n}\" may hold only letters, digits, '-', '_', '.' and ':'"),
            );
        }
    }
    let credentials = match (&file.username, &file.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            problems.add("fleet.username", "username and password go together");
            None
        }
    };
    let quorum = match file.failover.as_deref() {
        None | Some("local") => false,
        Some("quorum") => true,
        Some(other) => {
            problems.add(
                "fleet.failover",
                format!("\"{other}\" is not a failover mode; use \"local\" (each member alone) or \"quorum\""),
            );
            false
        }
    };
    Fleet {
        quorum,
        etcd: file.etcd.clone(),
        prefix,
        name,
        credentials,
        state: file.state.as_ref().map(|s| base.join(s)),
        tls,
    }
}
