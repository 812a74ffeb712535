//! Checks `[fleet]`: etcd endpoints as `http://host:port`, a key prefix, a member name,
//! optional credentials, and where the last decisions are kept across restarts.

use std::path::Path;

use super::file::FleetFile;
use super::model::Fleet;
use super::problems::Problems;

pub(super) fn validate_fleet(file: &FleetFile, base: &Path, problems: &mut Problems) -> Fleet {
    if file.etcd.is_empty() {
        problems.add(
            "fleet.etcd",
            "needs at least one etcd endpoint, e.g. [\"http://127.0.0.1:2379\"]",
        );
    }
    for (i, endpoint) in file.etcd.iter().enumerate() {
        let ok = endpoint
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some_and(|a| a.port_u16().is_some()));
        if !ok {
            let hint = if endpoint.starts_with("https://") {
                " (TLS to etcd is not supported yet)"
            } else {
                ""
            };
            problems.add(
                format!("fleet.etcd[{i}]"),
                format!("\"{endpoint}\" is not an http://host:port endpoint{hint}"),
            );
        }
    }
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
    Fleet {
        etcd: file.etcd.clone(),
        prefix,
        name,
        credentials,
        state: file.state.as_ref().map(|s| base.join(s)),
    }
}
