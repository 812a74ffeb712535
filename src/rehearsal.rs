//! `splitgate drill`: runs a drill on a running proxy through its admin API, waits for
//! it to end and for the site to be back at full weight, and prints what clients saw
//! (the `drill_started` and `drill_ended` events' figures).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::report::human;

/// Longest wait for the site to be back at full weight after the drill ends.
const SETTLE_LIMIT: Duration = Duration::from_secs(600);

async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: String,
    token: Option<&str>,
) -> Result<(u16, Value), String> {
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
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Runs the drill and returns the report to print.
pub async fn drill(admin: SocketAddr, site: &str, duration: &str, token: Option<&str>) -> Result<String, String> {
    let wait = crate::config::parse_duration(duration)?;
    let body = serde_json::json!({ "duration": duration }).to_string();
    let (status, answer) = call(admin, Method::POST, &format!("/sites/{site}/drill"), body, token).await?;
    if status != 200 {
        let reason = answer["error"].as_str().unwrap_or("refused");
        return Err(format!("the drill was not started ({status}): {reason}"));
    }
    let id = answer["drill"].as_u64().ok_or("the admin API gave no drill id")?;
    eprintln!("drill {id} started on {site} for {duration}; waiting for it to end and for {site} to be back");
    tokio::time::sleep(wait).await;
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    loop {
        let (_, page) = call(
            admin,
            Method::GET,
            &format!("/events?since={}", id - 1),
            String::new(),
            None,
        )
        .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let started = events.iter().find(|e| e["id"] == id).cloned();
        let ended = events
            .iter()
            .find(|e| e["kind"] == "drill_ended" && e["drill"] == id)
            .cloned();
        if let (Some(started), Some(ended)) = (&started, &ended) {
            if !ended["full_weight_ms"].is_null() || tokio::time::Instant::now() > deadline {
                return Ok(render(site, started, ended));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the drill did not end in time; see GET /events".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn render(site: &str, started: &Value, ended: &Value) -> String {
    let ms = |v: &Value| v.as_u64().map_or("-".to_string(), human);
    format!(
        "drill on {site}\n  started            {}\n  traffic moved in   {}\n  client errors      {} ({} possible data loss)\n  retried elsewhere  {}\n  out for            {}\n  back to full weight {} after the drill ended\n",
        started["at"].as_str().unwrap_or("-"),
        ms(&started["traffic_moved_ms"]),
        started["client_errors"],
        started["possible_data_loss"],
        started["retried"],
        ms(&ended["down_ms"]),
        ms(&ended["full_weight_ms"]),
    )
}
