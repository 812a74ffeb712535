//! Notifiers: each `[[notify]]` gets a bounded queue and one task that delivers the
//! events in order, as a JSON POST to a webhook or on the stdin of a program, each
//! try within its timeout, retried with back-off. A full queue drops the event and
//! counts it; a slow or dead receiver never touches traffic, only its own queue. A
//! program runs in a process group of its own, killed whole at its timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Event, Sink};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::{Notify, NotifyTarget, SiteTls};

/// Tries per event: the first and up to four retries, 0.5 s to 4 s apart.
const TRIES: u32 = 5;

/// One sink per notifier, each with its delivery task.
pub fn sinks(notifiers: &[Notify]) -> Vec<Sink> {
    notifiers
        .iter()
        .enumerate()
        .map(|(i, notify)| {
            let (queue, events) = mpsc::channel(notify.queue);
            tokio::spawn(deliver_all(format!("notify[{i}]"), notify.clone(), events));
            Sink {
                name: "notify",
                queue,
                amendments: false,
                dropped: None,
            }
        })
        .collect()
}

/// What a log line names: the URL without its query (which may carry a secret), or
/// the whole command line.
fn describe(target: &NotifyTarget) -> String {
    match target {
        NotifyTarget::Webhook(uri, _) => format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        ),
        NotifyTarget::Command(argv) => argv.join(" "),
    }
}

/// `notifier` is the config key (`notify[0]`): the metrics label and the log field.
async fn deliver_all(notifier: String, notify: Notify, mut events: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = events.recv().await {
        deliver_with_retries(&notifier, &notify, &event.to_json().to_string(), event.id).await;
    }
}

/// Hands one event (already JSON) to every notifier, each with its tries, and returns
/// once each has delivered it or given up: the fleet's leader waits on this before it
/// marks a fleet event delivered.
pub async fn deliver_to_all(notifiers: &[Notify], body: &str, id: u64) {
    for (i, notify) in notifiers.iter().enumerate() {
        deliver_with_retries(&format!("notify[{i}]"), notify, body, id).await;
    }
}

/// One event to one notifier: up to `TRIES`, each within the notifier's timeout.
async fn deliver_with_retries(notifier: &str, notify: &Notify, body: &str, id: u64) -> bool {
    let target = describe(&notify.target);
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=TRIES {
        let outcome = match tokio::time::timeout(notify.timeout, deliver(notify, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DeliveryError::Timeout(notify.timeout)),
        };
        match outcome {
            Ok(()) => {
                crate::telemetry::record_notify(notifier, true);
                return true;
            }
            Err(reason) if attempt == TRIES => {
                crate::telemetry::record_notify(notifier, false);
                tracing::warn!(%notifier, %target, event = id, %reason, "event not delivered; giving up");
            }
            Err(reason) => {
                tracing::debug!(%notifier, %target, event = id, %reason, attempt, "event delivery failed; will retry");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
    false
}

/// Why one try to hand an event to a receiver failed; `Display` is the log's `reason`.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no host")]
    NoHost,
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("server name: {0}")]
    ServerName(#[source] rustls::pki_types::InvalidDnsNameError),
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] http::Error),
    #[error("send: {0}")]
    Send(#[source] hyper::Error),
    #[error("answered {0}")]
    Answered(http::StatusCode),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{0}")]
    Wait(#[source] std::io::Error),
    #[error("stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{program} exited with {status}")]
    Exited {
        program: String,
        status: std::process::ExitStatus,
    },
}

async fn deliver(notify: &Notify, body: &str) -> Result<(), DeliveryError> {
    match &notify.target {
        NotifyTarget::Webhook(uri, tls) => post(uri, tls.as_ref(), notify.token.as_deref(), body).await,
        NotifyTarget::Command(argv) => run(argv, notify.token.as_deref(), body).await,
    }
}

async fn post(uri: &Uri, tls: Option<&SiteTls>, token: Option<&str>, body: &str) -> Result<(), DeliveryError> {
    let authority = uri.authority().ok_or(DeliveryError::NoHost)?;
    let port = authority.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(DeliveryError::Connect)?;
    let _ = stream.set_nodelay(true);
    let mut sender = match tls {
        None => {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(DeliveryError::Handshake)?;
            tokio::spawn(connection);
            sender
        }
        Some(tls) => {
            let name = ServerName::try_from(host.to_string()).map_err(DeliveryError::ServerName)?;
            let stream = TlsConnector::from(tls.client.clone())
                .connect(name, stream)
                .await
                .map_err(DeliveryError::Tls)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(DeliveryError::Handshake)?;
            tokio::spawn(connection);
            sender
        }
    };
    let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "splitgate");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(DeliveryError::Request)?;
    let response = sender.send_request(request).await.map_err(DeliveryError::Send)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Answered(response.status()))
    }
}

async fn run(argv: &[String], token: Option<&str>, body: &str) -> Result<(), DeliveryError> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group, so that what it started can be killed with it.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("SPLITGATE_TOKEN", token);
    }
    let mut child = command.spawn().map_err(|source| DeliveryError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    // Cut short (the timeout drops this future): the whole group goes.
    let mut group = Group(child.id());
    // A program may exit without reading its stdin: its exit status decides.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(body.as_bytes()).await,
        None => Ok(()),
    };
    let status = child.wait().await.map_err(DeliveryError::Wait)?;
    // It finished: what it started in the background (a warm standby) stays.
    group.0 = None;
    match written {
        _ if status.success() => Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(DeliveryError::Stdin(e)),
        _ => Err(DeliveryError::Exited {
            program: argv[0].clone(),
            status,
        }),
    }
}

/// A command's process group, killed (SIGKILL) when dropped while still set.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        // Never 0 or 1: kill(-1) would signal every process we may signal.
        let id = self.0.and_then(|id| i32::try_from(id).ok()).filter(|&id| id > 1);
        let Some(pid) = id.and_then(rustix::process::Pid::from_raw) else {
            return;
        };
        if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
            tracing::debug!(group = pid.as_raw_nonzero().get(), error = %e, "cannot kill a notifier's process group");
        }
    }
}
