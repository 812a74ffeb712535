//! Weight overrides through the admin API (`PUT`/`DELETE /sites/{name}/weight`, `PUT
//! /weights`) and the fleet's confirmation of a changed etcd history (`POST
//! /fleet/confirm`). Bodies are read strictly: a key given twice is refused, never
//! "last wins". With a fleet, changes are written to etcd; without one, applied here.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::{error, full_status, json, read_body, status, AdminResponse, Operator};
use crate::control::{Action, FailbackError, WeightError};
use crate::fleet::FleetError;

pub(super) async fn set_weight(
    request: Request<Incoming>,
    server: &dyn Operator,
    site: &str,
    peer: SocketAddr,
) -> AdminResponse {
    let force = forced(&request);
    let weight = if request.method() == Method::DELETE {
        None
    } else {
        let body = match read_body(request, 4096).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct WeightBody {
            weight: i64,
        }
        match serde_json::from_slice::<WeightBody>(&body) {
            Ok(b) => Some(b.weight),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("expected {{\"weight\": N}}: {e}")),
        }
    };
    tracing::info!(client = %peer, site, weight = ?weight, "weight change requested through the admin API");
    let change = [(site.to_string(), weight)];
    if let Some(refused) = rails(
        server,
        &Action::Weights(&change),
        force,
        &format!("weight of {site} to {weight:?}"),
    ) {
        return refused;
    }
    let outcome = match fleet_write(server, &[(site.to_string(), weight)], StatusCode::NOT_FOUND).await {
        Some(Err(refused)) => return refused,
        Some(Ok(())) => Ok(()),
        None => server.control().set_weight(site, weight),
    };
    match outcome {
        Ok(()) => site_answer(server, site),
        Err(e @ WeightError::UnknownSite(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ WeightError::OutOfRange(_)) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// 200 with the site as `/status` shows it now.
fn site_answer(server: &dyn Operator, site: &str) -> AdminResponse {
    let doc = status(&server.control().current(), server.last_reload());
    match doc.sites.into_iter().find(|s| s.name == site) {
        Some(site) => json(StatusCode::OK, &site),
        None => error(StatusCode::NOT_FOUND, "site vanished"),
    }
}

/// `PUT /weights` with `{"site": N, ...}`: all of them in one snapshot, or none.
pub(super) async fn set_weights(request: Request<Incoming>, server: &dyn Operator, peer: SocketAddr) -> AdminResponse {
    let force = forced(&request);
    let body = match read_body(request, 65_536).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let weights = match serde_json::from_slice::<SiteWeights>(&body) {
        Ok(SiteWeights(weights)) if weights.is_empty() => {
            return error(StatusCode::BAD_REQUEST, "expected {\"site\": N, ...}: no site named")
        }
        Ok(SiteWeights(weights)) => weights,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("expected {{\"site\": N, ...}}: {e}")),
    };
    tracing::info!(client = %peer, ?weights, "weight changes requested through the admin API");
    let changes: Vec<(String, Option<i64>)> = weights.iter().map(|(s, w)| (s.clone(), Some(*w))).collect();
    if let Some(refused) = rails(
        server,
        &Action::Weights(&changes),
        force,
        &format!("weights {weights:?}"),
    ) {
        return refused;
    }
    // `PUT /weights` answers 400 for an unknown site (nothing changes), as without a fleet.
    let outcome = match fleet_write(server, &changes, StatusCode::BAD_REQUEST).await {
        Some(Err(refused)) => return refused,
        Some(Ok(())) => Ok(()),
        None => server.control().set_weights(&weights),
    };
    match outcome {
        Ok(()) => json(StatusCode::OK, &full_status(server)),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `?force=true` on the call: the guard rails are overridden.
pub(super) fn forced<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "force=true" || pair == "force=1"))
}

/// `None` when `action` passes the guard rails (or `force` overrides them, recorded),
/// else the 409 to answer. Checked on this member's view, before anything is written.
pub(super) fn rails(server: &dyn Operator, action: &Action<'_>, force: bool, what: &str) -> Option<AdminResponse> {
    let control = server.control();
    match control.check_rails(action) {
        Ok(()) => None,
        Err(refused) if force => {
            control.record_forced(what, &refused);
            None
        }
        Err(refused) => Some(error(StatusCode::CONFLICT, &refused.to_string())),
    }
}

/// `POST /sites/{name}/failback`: a held site's traffic returns now.
pub(super) async fn fail_back(server: &dyn Operator, site: &str, peer: SocketAddr) -> AdminResponse {
    tracing::info!(client = %peer, site, "failback requested through the admin API");
    let outcome = match server.fleet() {
        // In a fleet: written to etcd; every member that holds the site releases it.
        Some(fleet) if server.control().holds().contains_key(site) => match fleet.write_failback(site).await {
            Ok(()) => Ok(()),
            Err(e) => return fleet_refusal(&e),
        },
        _ => server.control().fail_back(site),
    };
    match outcome {
        Ok(()) => site_answer(server, site),
        Err(e @ FailbackError::UnknownSite(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ FailbackError::NotHeld(_)) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// `{"site": N, ...}` in the order given; a site named twice or a weight that is not a
/// whole number is an error (serde's maps keep the last of duplicate keys).
struct SiteWeights(Vec<(String, i64)>);

impl<'de> serde::Deserialize<'de> for SiteWeights {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strict;
        impl<'de> Visitor<'de> for Strict {
            type Value = SiteWeights;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of site names to whole numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SiteWeights, A::Error> {
                let mut seen = HashSet::new();
                let mut weights = Vec::new();
                while let Some(site) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    let Some(weight) = value.as_i64() else {
                        return Err(serde::de::Error::custom(format!(
                            "weight of \"{site}\" is not a whole number: {value}"
                        )));
                    };
                    if !seen.insert(site.clone()) {
                        return Err(serde::de::Error::custom(format!("\"{site}\" is named twice")));
                    }
                    weights.push((site, weight));
                }
                Ok(SiteWeights(weights))
            }
        }
        deserializer.deserialize_map(Strict)
    }
}

/// With a fleet, weight changes are the fleet's: checked here, written to etcd, and
/// applied by every member from its watch. `None`: no fleet, change locally.
async fn fleet_write(
    server: &dyn Operator,
    changes: &[(String, Option<i64>)],
    unknown_site: StatusCode,
) -> Option<Result<(), AdminResponse>> {
    let fleet = server.fleet()?;
    let current = server.control().current();
    for (site, weight) in changes {
        if !current.sites.iter().any(|s| &s.name == site) {
            return Some(Err(error(
                unknown_site,
                &WeightError::UnknownSite(site.clone()).to_string(),
            )));
        }
        if let Some(Err(out)) = weight.map(crate::config::Weight::new) {
            return Some(Err(error(
                StatusCode::BAD_REQUEST,
                &WeightError::OutOfRange(out).to_string(),
            )));
        }
    }
    Some(fleet.write_weights(changes).await.map_err(|e| fleet_refusal(&e)))
}

/// How a fleet write that did not go through is answered.
pub(super) fn fleet_refusal(e: &FleetError) -> AdminResponse {
    let status = match e {
        FleetError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        FleetError::Unknown(_) => StatusCode::GATEWAY_TIMEOUT,
        FleetError::Diverged(_) | FleetError::NothingToConfirm => StatusCode::CONFLICT,
    };
    error(status, &e.to_string())
}

/// `POST /fleet/confirm` with `{"use": "etcd"}` or `{"use": "kept"}`.
pub(super) async fn confirm(request: Request<Incoming>, server: &dyn Operator, peer: SocketAddr) -> AdminResponse {
    let Some(fleet) = server.fleet() else {
        return error(StatusCode::NOT_FOUND, "this proxy is not a member of a fleet");
    };
    let body = match read_body(request, 4096).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConfirmBody {
        #[serde(rename = "use")]
        what: String,
    }
    let keep = match serde_json::from_slice::<ConfirmBody>(&body).map(|b| b.what) {
        Ok(what) if what == "etcd" => false,
        Ok(what) if what == "kept" => true,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"use\": \"etcd\"} (take etcd's view) or {\"use\": \"kept\"} (write the decisions kept here to etcd)",
            )
        }
    };
    tracing::warn!(client = %peer, keep, "fleet history confirmation requested through the admin API");
    match fleet.confirm(keep).await {
        Ok(()) => json(StatusCode::OK, &full_status(server)),
        Err(e) => fleet_refusal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::SiteWeights;

    #[test]
    fn a_site_named_twice_is_refused() {
        let parsed = |text: &str| serde_json::from_str::<SiteWeights>(text).map(|w| w.0);
        assert_eq!(
            parsed(r#"{"a": 1, "b": 2}"#).unwrap(),
            vec![("a".into(), 1), ("b".into(), 2)]
        );
        assert!(parsed(r#"{"a": 1, "a": 0}"#)
            .unwrap_err()
            .to_string()
            .contains("named twice"));
        assert!(parsed(r#"{"a": "1"}"#)
            .unwrap_err()
            .to_string()
            .contains("not a whole number"));
    }
}
