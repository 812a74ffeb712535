//! `splitgate demo`: three built-in demo sites (two active, 70/30, and a standby DR
//! site) on loopback, each answering with its own name, and a proxy in front of them,
//! so a newcomer sees the weighted split, failover and the admin API with no setup.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{self, Config, ConfigError};

/// Starts a tiny HTTP server on 127.0.0.1:0 that answers every path with
/// `site=<site> backend=<addr>` (and 200 on `/healthz`). Returns its address.
pub async fn spawn_demo_backend(site: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let text: Arc<str> = format!("site={site} backend={addr}\n").into();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let text = text.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| {
                    let body = Full::new(Bytes::from(text.as_bytes().to_vec()));
                    async move {
                        let mut response = Response::new(body);
                        *response.status_mut() = StatusCode::OK;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config text: the same format an operator writes.
pub fn demo_config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    a: &[SocketAddr],
    b: &[SocketAddr],
    dr: &[SocketAddr],
) -> String {
    let list = |addrs: &[SocketAddr]| addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"[[listener]]
bind = "{listen}"

[admin]
bind = "{admin}"

[health]
path = "/healthz"
interval = "1s"
timeout = "500ms"
slow_start = "5s"

[[site]]
name = "idc-a"
weight = 70
backends = [{}]

[[site]]
name = "idc-b"
weight = 30
backends = [{}]

[[site]]
name = "dr"
weight = 100
priority = 1
backends = [{}]
"#,
        list(a),
        list(b),
        list(dr)
    )
}

/// Starts the demo sites and returns the proxy config for them.
pub async fn demo_config(listen: SocketAddr, admin: SocketAddr) -> Result<Config, Box<dyn std::error::Error>> {
    let a = vec![spawn_demo_backend("idc-a").await?, spawn_demo_backend("idc-a").await?];
    let b = vec![spawn_demo_backend("idc-b").await?];
    let dr = vec![spawn_demo_backend("dr").await?];
    let text = demo_config_text(listen, admin, &a, &b, &dr);
    config::parse(Path::new("<demo>"), &text).map_err(|e: ConfigError| e.into())
}

/// What the demo prints once it runs.
pub fn instructions(listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"splitgate demo is running: sites idc-a (weight 70, 2 backends), idc-b (weight 30), dr (standby, priority 1)

  Watch the 70/30 split over 10 requests:
    for i in $(seq 10); do curl -s http://{listen}/; done | sort | uniq -c

  Status (JSON) and live page:   curl -s http://{admin}/status    |  open http://{admin}/
  Drain idc-b:                    curl -X PUT -d '{{"weight": 0}}' http://{admin}/sites/idc-b/weight
  Restore it:                     curl -X DELETE http://{admin}/sites/idc-b/weight
  Metrics:                        curl -s http://{admin}/metrics

Press Ctrl-C to stop."#
    )
}
