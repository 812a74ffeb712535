//! `splitgate drill`: runs a drill on a running proxy through its admin API, waits for
//! it to end and for the site to be back at full weight, and prints what clients saw
//! (the `drill_started` and `drill_ended` events' figures, and why it stopped itself
//! when it was aborted). Every admin call has a
//! time limit, the wait has one too, and a progress line goes to stderr while it lasts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::parse_duration;
use crate::events::Measurements;
use crate::report::human;

/// How often a progress line is printed while waiting.
const PROGRESS: Duration = Duration::from_secs(5);
/// How often the events are read while waiting for the site.
const POLL: Duration = Duration::from_millis(250);
/// The largest admin answer read.
const MAX_ANSWER: usize = 4 << 20;
/// The largest token file read.
const MAX_TOKEN: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    /// Unreachable, too slow, or an answer that makes no sense.
    #[error("{0}")]
    Admin(String),
    #[error("the drill was not started ({status}): {reason}")]
    Refused { status: u16, reason: String },
    /// The drill ran but the site did not come back in time: what was seen, and why.
    #[error("{reason}")]
    NotBack { report: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

/// The time limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per admin call: connect, send, answer.
    pub call: Duration,
    /// After the drill's time: how long the site may take to be back at full weight.
    pub wait: Duration,
}

impl Limits {
    pub fn parse(call: &str, wait: &str) -> Result<Limits, RehearsalError> {
        let parse = |flag: &str, text: &str| {
            parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| RehearsalError::Usage(format!("--{flag} {text}: expected a duration above 0, e.g. 10s")))
        };
        Ok(Limits {
            call: parse("timeout", call)?,
            wait: parse("wait", wait)?,
        })
    }
}

/// The admin token: `--token`, else `--token-file`, else `SPLITGATE_TOKEN`.
pub fn token(flag: Option<String>, file: Option<&Path>, env: Option<String>) -> Result<Option<String>, RehearsalError> {
    let token = match (flag, file) {
        (Some(token), _) => token,
        (None, Some(path)) => {
            use std::io::Read as _;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_TOKEN).read_to_string(&mut text))
                .map_err(|e| RehearsalError::Usage(format!("--token-file {}: {e}", path.display())))?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(RehearsalError::Usage(format!(
                    "--token-file {}: the file is empty",
                    path.display()
                )));
            }
            token
        }
        (None, None) => match env {
            Some(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => return Ok(None),
        },
    };
    Ok(Some(token))
}

async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: String,
    token: Option<&str>,
    limit: Duration,
) -> Result<(u16, Value), RehearsalError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, admin.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result.map_err(RehearsalError::Admin),
        Err(_) => Err(RehearsalError::Admin(format!(
            "the admin API at {admin} did not answer {path} within {}",
            human(limit.as_millis() as u64)
        ))),
    }
}

/// Runs the drill and returns the report to print.
pub async fn drill(
    admin: SocketAddr,
    site: &str,
    duration: &str,
    token: Option<&str>,
    limits: Limits,
    force: bool,
) -> Result<String, RehearsalError> {
    let length = parse_duration(duration).map_err(|e| RehearsalError::Usage(format!("--for {duration}: {e}")))?;
    let body = serde_json::json!({ "duration": duration }).to_string();
    let (status, answer) = call(
        admin,
        Method::POST,
        &format!("/sites/{site}/drill{}", if force { "?force=true" } else { "" }),
        body,
        token,
        limits.call,
    )
    .await?;
    if status != 200 {
        let reason = answer["error"].as_str().unwrap_or("refused").to_string();
        return Err(RehearsalError::Refused { status, reason });
    }
    let id = answer["drill"]
        .as_u64()
        .ok_or_else(|| RehearsalError::Admin("the admin API gave no drill id".into()))?;
    let began = Instant::now();
    eprintln!("drill {id} started on {site} for {duration}; waiting for it to end and for {site} to be back");
    let deadline = began + length + limits.wait;
    let mut progress = began + PROGRESS;
    let mut told_end = false;
    loop {
        // A fleet member's drill id is the fleet's (its events carry it as `drill`), not
        // an event id: the whole ring is looked at (it is bounded).
        let (_, page) = call(admin, Method::GET, "/events", String::new(), token, limits.call).await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let started = events
            .iter()
            .find(|e| e["kind"] == "drill_started" && (e["drill"] == id || (e["drill"].is_null() && e["id"] == id)))
            .cloned();
        let ended = events
            .iter()
            .find(|e| e["kind"] == "drill_ended" && e["drill"] == id)
            .cloned();
        let now = Instant::now();
        match (&started, &ended) {
            (Some(started), Some(ended)) if figures(ended).full_weight_ms.flatten().is_some() => {
                return Ok(render(site, started, ended));
            }
            (Some(started), Some(ended)) if now >= deadline => {
                return Err(RehearsalError::NotBack {
                    report: render(site, started, ended),
                    reason: format!(
                        "{site} was not back at full weight {} after the drill ended; see GET /status and /events",
                        human(limits.wait.as_millis() as u64)
                    ),
                });
            }
            _ if now >= deadline => {
                return Err(RehearsalError::Admin(format!(
                    "drill {id} did not end within {} of its time; see GET /events",
                    human(limits.wait.as_millis() as u64)
                )));
            }
            _ => {}
        }
        // A line when the drill ends, then one every few seconds.
        if now >= progress || (ended.is_some() && !told_end) {
            progress = now + PROGRESS;
            told_end |= ended.is_some();
            let elapsed = human(now.duration_since(began).as_millis() as u64);
            if ended.is_some() {
                let state = site_state(admin, site, token, limits.call).await;
                eprintln!("drill {id} ended; waiting for {site} to be back at full weight ({elapsed} so far; {state})");
            } else {
                let left = (began + length).saturating_duration_since(now);
                eprintln!(
                    "drill {id} on {site}: {elapsed} so far, {} left",
                    human(left.as_millis() as u64)
                );
            }
        }
        // During the drill, wake at its end or the next progress line; then poll.
        let wake = if ended.is_none() {
            (began + length).min(progress)
        } else {
            now + POLL
        };
        tokio::time::sleep_until(wake.max(now + POLL)).await;
    }
}

/// `healthy: false, effective weight 0 of 50`, from `/status` (or why it is unknown).
async fn site_state(admin: SocketAddr, site: &str, token: Option<&str>, limit: Duration) -> String {
    match call(admin, Method::GET, "/status", String::new(), token, limit).await {
        Ok((_, status)) => {
            let sites = status["sites"].as_array().cloned().unwrap_or_default();
            match sites.iter().find(|s| s["name"] == site) {
                Some(s) => format!(
                    "healthy: {}, effective weight {} of {}",
                    s["healthy"], s["effective_weight"], s["weight"]
                ),
                None => format!("{site} is not in /status"),
            }
        }
        Err(e) => e.to_string(),
    }
}

/// The measurements an event of `/events` carries.
fn figures(event: &Value) -> Measurements {
    event.as_object().map(Measurements::of).unwrap_or_default()
}

fn render(site: &str, started: &Value, ended: &Value) -> String {
    let ms = |v: Option<u64>| v.map_or("-".to_string(), human);
    // A count the event does not carry reads as JSON's `null`, as `/events` shows it.
    let count = |v: Option<u64>| v.map_or("null".to_string(), |n| n.to_string());
    let (out, back) = (figures(started), figures(ended));
    let aborted = match (ended["ended"].as_str(), ended["reason"].as_str()) {
        (Some("aborted"), Some(reason)) => format!("  aborted            {reason}\n"),
        _ => String::new(),
    };
    let report = format!(
        "drill on {site}\n  started            {}\n  traffic moved in   {}\n  client errors      {} ({} possible data loss)\n  retried elsewhere  {}\n  out for            {}\n  back to full weight {} after the drill ended\n",
        started["at"].as_str().unwrap_or("-"),
        ms(out.traffic_moved_ms),
        count(out.client_errors),
        count(out.possible_data_loss),
        count(out.retried),
        ms(back.down_ms.flatten()),
        ms(back.full_weight_ms.flatten()),
    );
    report + &aborted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_the_drill_events_measured() {
        let started = serde_json::json!({
            "at": "2026-01-01T03:00:00.000Z", "traffic_moved_ms": 20, "client_errors": 1,
            "possible_data_loss": 0, "retried": 3, "detect_ms": 0,
        });
        let ended = serde_json::json!({"down_ms": 30000, "full_weight_ms": null, "ended": "time_up"});
        let expected = format!(
            "drill on b\n  started            2026-01-01T03:00:00.000Z\n  traffic moved in   {}\n  client errors      1 (0 possible data loss)\n  retried elsewhere  3\n  out for            {}\n  back to full weight - after the drill ended\n",
            human(20),
            human(30000)
        );
        assert_eq!(render("b", &started, &ended), expected);
        // A figure the event does not carry reads as `/events` would show it.
        let bare = render(
            "b",
            &serde_json::json!({}),
            &serde_json::json!({"ended": "aborted", "reason": "5xx"}),
        );
        assert!(
            bare.contains("client errors      null (null possible data loss)"),
            "{bare}"
        );
        assert!(bare.contains("  aborted            5xx\n"), "{bare}");
    }
}
