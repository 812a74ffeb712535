//! `splitgate demo`: three built-in demo sites (two active, 70/30, and a standby DR
//! site) on loopback, each answering with its own name, a proxy in front of them, a
//! steady trickle of traffic through it, and a demo-only control port that kills and
//! revives a site's backends for real, so a newcomer sees a failover happen. The proxy
//! is not told: it finds out through its own probes and live traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};

/// One demo backend: `site=<site> backend=<addr>` on every path, until killed.
pub struct DemoBackend {
    pub addr: SocketAddr,
    text: Arc<str>,
    /// Cancelled to kill it; `None` while it is down.
    serving: Mutex<Option<CancellationToken>>,
}

impl DemoBackend {
    /// Starts one on 127.0.0.1:0.
    pub async fn start(site: &str) -> std::io::Result<DemoBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backend = DemoBackend {
            addr,
            text: format!("site={site} backend={addr}\n").into(),
            serving: Mutex::new(None),
        };
        backend.serve(listener);
        Ok(backend)
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        tokio::spawn(accept_until(listener, self.text.clone(), stop.clone()));
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
    }

    pub fn is_up(&self) -> bool {
        self.serving.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Closes its listener (connections are refused) and cuts every open connection.
    pub fn kill(&self) {
        if let Some(stop) = self.serving.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stop.cancel();
        }
    }

    /// Listens on its port again.
    pub fn revive(&self) -> std::io::Result<()> {
        let mut serving = self.serving.lock().unwrap_or_else(|e| e.into_inner());
        if serving.is_some() {
            return Ok(());
        }
        // std's bind sets SO_REUSEADDR: the cut connections' TIME_WAIT does not block it.
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_until(
            TcpListener::from_std(listener)?,
            self.text.clone(),
            stop.clone(),
        ));
        *serving = Some(stop);
        Ok(())
    }
}

async fn accept_until(listener: TcpListener, text: Arc<str>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let (text, stop) = (text.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<Incoming>| {
                let body = Full::new(Bytes::from(text.as_bytes().to_vec()));
                async move { Ok::<_, Infallible>(Response::new(body)) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Starts a demo backend that is never killed. Returns its address.
pub async fn spawn_demo_backend(site: &str) -> std::io::Result<SocketAddr> {
    let backend = DemoBackend::start(site).await?;
    let addr = backend.addr;
    // Nothing can cancel it once its handle is gone: it serves until the process ends.
    drop(backend);
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

/// Where the demo listens and how much traffic it sends.
#[derive(Clone, Copy, Debug)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The demo's own control (kill and revive a site); not the admin API.
    pub control: SocketAddr,
    /// Background requests per second through the proxy; 0 = none.
    pub traffic: u32,
}

/// A running demo's sites, control port and traffic; the proxy is started from `config`.
pub struct Demo {
    pub config: Config,
    pub control: SocketAddr,
    options: DemoOptions,
}

/// The demo's sites by name, each with its backends.
type Sites = Vec<(&'static str, Vec<DemoBackend>)>;

impl Demo {
    /// Starts the demo sites, the control port and the background traffic (which keeps
    /// trying until the proxy listens).
    pub async fn start(options: DemoOptions) -> Result<Demo, Box<dyn std::error::Error>> {
        let mut sites: Sites = Vec::new();
        for (name, count) in [("idc-a", 2), ("idc-b", 1), ("dr", 1)] {
            let mut backends = Vec::new();
            for _ in 0..count {
                backends.push(DemoBackend::start(name).await?);
            }
            sites.push((name, backends));
        }
        let addrs = |i: usize| sites[i].1.iter().map(|b| b.addr).collect::<Vec<_>>();
        let text = demo_config_text(options.listen, options.admin, &addrs(0), &addrs(1), &addrs(2));
        let config = config::parse(Path::new("<demo>"), &text)?;
        let control = TcpListener::bind(options.control)
            .await
            .map_err(|e| format!("cannot listen on {} (demo control): {e}", options.control))?;
        let control_addr = control.local_addr()?;
        tokio::spawn(serve_control(control, Arc::new(sites)));
        if options.traffic > 0 {
            tokio::spawn(traffic(options.listen, options.traffic));
        }
        Ok(Demo {
            config,
            control: control_addr,
            options,
        })
    }

    /// What the demo prints once it runs.
    pub fn instructions(&self) -> String {
        let (listen, admin, control) = (self.options.listen, self.options.admin, self.control);
        let traffic = match self.options.traffic {
            0 => "no background traffic (--traffic 0)".to_string(),
            n => format!("{n} requests/s of background traffic go through it (--traffic N changes it)"),
        };
        format!(
            r#"splitgate demo is running: sites idc-a (weight 70, 2 backends), idc-b (weight 30), dr (standby, priority 1);
{traffic}.

  Watch the 70/30 split over 100 requests:
    for i in $(seq 100); do curl -s http://{listen}/; done | cut -d' ' -f1 | sort | uniq -c

  Status (JSON) and live page:   curl -s http://{admin}/status    |  open http://{admin}/
  Fail idc-a for real (its backends stop listening; the proxy finds out by itself):
                                  curl -X POST http://{control}/sites/idc-a/kill
  Bring it back:                  curl -X POST http://{control}/sites/idc-a/revive
  (kill idc-b too and the standby dr takes the traffic)
  Drain idc-b:                    curl -X PUT -d '{{"weight": 0}}' http://{admin}/sites/idc-b/weight
  Restore it:                     curl -X DELETE http://{admin}/sites/idc-b/weight
  Failover events:                curl -s http://{admin}/events
  Metrics:                        curl -s http://{admin}/metrics

Press Ctrl-C to stop."#
        )
    }
}

/// The demo control: `POST /sites/{name}/kill` and `/revive`, `GET /sites`.
async fn serve_control(listener: TcpListener, sites: Arc<Sites>) {
    while let Ok((stream, _)) = listener.accept().await {
        let sites = sites.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = control(&request, &sites);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn control(request: &Request<Incoming>, sites: &Sites) -> Response<Full<Bytes>> {
    let path = request.uri().path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let listing = |names: &mut dyn Iterator<Item = &(&'static str, Vec<DemoBackend>)>| {
        let sites: Vec<serde_json::Value> = names
            .map(|(name, backends)| {
                let backends: Vec<serde_json::Value> = backends
                    .iter()
                    .map(|b| serde_json::json!({"addr": b.addr.to_string(), "up": b.is_up()}))
                    .collect();
                serde_json::json!({"name": name, "backends": backends})
            })
            .collect();
        serde_json::json!({ "sites": sites })
    };
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["sites"] | [""]) => answer(StatusCode::OK, listing(&mut sites.iter())),
        (&Method::POST, ["sites", name, action @ ("kill" | "revive")]) => {
            let Some(site) = sites.iter().find(|(n, _)| n == name) else {
                return answer(StatusCode::NOT_FOUND, serde_json::json!({"error": "no such demo site"}));
            };
            for backend in &site.1 {
                if *action == "kill" {
                    backend.kill();
                } else if let Err(e) = backend.revive() {
                    let error = format!("cannot listen on {} again: {e}", backend.addr);
                    return answer(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": error }));
                }
            }
            let done = if *action == "kill" { "killed" } else { "revived" };
            tracing::info!(site = %name, "demo site {done} by the demo control");
            answer(StatusCode::OK, listing(&mut std::iter::once(site)))
        }
        (_, ["sites", _, "kill" | "revive"]) => {
            answer(StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "use POST"}))
        }
        _ => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "POST /sites/{name}/kill or /revive, GET /sites"}),
        ),
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `rps` GETs a second to the proxy, one at a time, for as long as the demo runs.
async fn traffic(listen: SocketAddr, rps: u32) {
    let target = match listen.ip().is_unspecified() {
        true => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        false => listen,
    };
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let Ok(request) = Request::get(format!("http://{target}/demo-traffic")).body(Empty::new()) else {
            return;
        };
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), client.request(request)).await {
            use http_body_util::BodyExt;
            let _ = response.into_body().collect().await;
        }
    }
}
