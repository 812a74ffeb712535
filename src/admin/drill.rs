//! `POST /sites/{name}/drill {"duration": "30s"}` starts a drill (200 `{"drill": ID}`,
//! 404 unknown site, 409 one already runs there); `DELETE` ends it now.
//! `"abort_5xx": "5%"` sets the drill's own abort share (400 unless 0% to 100%).

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::weights::{fleet_refusal, forced, rails};
use super::{error, json, read_body, AdminResponse, Operator};
use crate::config::{parse_duration, Share};
use crate::control::{Action, DrillError, DrillOptions, MAX_DRILL};

pub async fn handle(request: Request<Incoming>, server: &dyn Operator, site: &str, peer: SocketAddr) -> AdminResponse {
    let (control, fleet) = (server.control(), server.fleet());
    let force = forced(&request);
    let known = control.current().sites.iter().any(|s| s.name == site);
    let running = control.drills().into_iter().find(|(s, _)| s == site).map(|(_, d)| d.id);
    if request.method() == Method::DELETE {
        tracing::info!(client = %peer, site, "drill end requested through the admin API");
        if let Some(fleet) = fleet {
            return match (known, running) {
                (false, _) => refusal(&DrillError::UnknownSite(site.into())),
                (true, None) => refusal(&DrillError::NotRunning(site.into())),
                (true, Some(id)) => match fleet.write_drill(site, None).await {
                    Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ended": id })),
                    Err(e) => fleet_refusal(&e),
                },
            };
        }
        return match control.end_drill(site) {
            Ok(id) => json(StatusCode::OK, &serde_json::json!({ "ended": id })),
            Err(e) => refusal(&e),
        };
    }
    let body = match read_body(request, 4096).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DrillBody {
        duration: String,
        abort_5xx: Option<String>,
    }
    let parsed = serde_json::from_slice::<DrillBody>(&body);
    let abort_5xx = match parsed
        .as_ref()
        .ok()
        .and_then(|b| b.abort_5xx.as_deref())
        .map(Share::parse)
    {
        None => None,
        Some(Ok(share)) => Some(share),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("abort_5xx: {e}")),
    };
    let duration = match parsed {
        Ok(b) => match parse_duration(&b.duration) {
            Ok(d) if !d.is_zero() && d <= MAX_DRILL => d,
            Ok(_) => return error(StatusCode::BAD_REQUEST, "duration must be more than 0 and at most 24h"),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"duration\": \"30s\"}}: {e}"),
            )
        }
    };
    tracing::info!(client = %peer, site, ?duration, "drill requested through the admin API");
    if let Some(refused) = rails(server, &Action::Drill(site), force, &format!("drill of {site}")) {
        return refused;
    }
    if let Some(fleet) = fleet {
        if !known {
            return refusal(&DrillError::UnknownSite(site.into()));
        }
        if running.is_some() {
            return refusal(&DrillError::AlreadyRunning(site.into()));
        }
        if let Err(e) = fleet.write_drill(site, Some(duration)).await {
            return fleet_refusal(&e);
        }
        return match control.drills().into_iter().find(|(s, _)| s == site) {
            // The fleet-wide id: every member's drill events carry the same one.
            Some((_, drill)) => json(
                StatusCode::OK,
                &serde_json::json!({ "drill": drill.fleet_id.unwrap_or(drill.id) }),
            ),
            None => error(StatusCode::SERVICE_UNAVAILABLE, "written to etcd, not yet applied here"),
        };
    }
    let options = DrillOptions {
        abort_5xx,
        program: None,
        fleet_id: None,
    };
    match control.start_drill_with(site, duration, options) {
        Ok(id) => json(StatusCode::OK, &serde_json::json!({ "drill": id })),
        Err(e) => refusal(&e),
    }
}

fn refusal(e: &DrillError) -> AdminResponse {
    let status = match e {
        DrillError::UnknownSite(_) => StatusCode::NOT_FOUND,
        DrillError::AlreadyRunning(_) => StatusCode::CONFLICT,
        DrillError::NotRunning(_) => StatusCode::CONFLICT,
    };
    error(status, &e.to_string())
}
