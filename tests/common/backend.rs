//! Test backends: real hyper servers on loopback that answer with their name, count
//! their hits, and can stream, echo, sleep, upgrade, fail their health check or die.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use super::{pattern, Fnv};

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    probes: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    resumed: Arc<AtomicU64>,
    kill: watch::Sender<bool>,
}

type Reply = Response<Either<Full<Bytes>, PatternBody>>;

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on a given address (to bring a killed backend back on its port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        Self::start_with(name, addr, None).await
    }

    /// An HTTPS backend with this server config (ALPN decides HTTP/1.1 or h2).
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Backend {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        Self::start_with(name, "127.0.0.1:0".parse().unwrap(), Some(acceptor)).await
    }

    async fn start_with(name: &str, addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).expect("bind test backend");
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let probes = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let hang = Arc::new(AtomicBool::new(false));
        let resumed = Arc::new(AtomicU64::new(0));
        let (kill, killed) = watch::channel(false);
        let backend = Backend {
            name: name.to_string(),
            addr,
            hits: hits.clone(),
            probes: probes.clone(),
            healthy: healthy.clone(),
            hang: hang.clone(),
            resumed: resumed.clone(),
            kill,
        };
        let name: Arc<str> = name.into();
        tokio::spawn(accept_loop(
            listener,
            name,
            Flags {
                hits,
                probes,
                healthy,
                hang,
                resumed,
            },
            tls,
            killed,
        ));
        backend
    }

    /// Requests served, health checks not counted.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Health checks answered (`/healthz`, healthy or not): a count of probe rounds,
    /// to bound a window by probes seen rather than by wall time.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that resumed an earlier session.
    pub fn resumed_handshakes(&self) -> u64 {
        self.resumed.load(Ordering::SeqCst)
    }

    /// A hung backend accepts connections and reads requests but never answers.
    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Closes the listener and every open connection: the port now refuses.
    pub fn kill(&self) {
        self.kill.send_replace(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone)]
struct Flags {
    hits: Arc<AtomicU64>,
    probes: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    resumed: Arc<AtomicU64>,
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    flags: Flags,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut killed: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
            _ = killed.wait_for(|k| *k) => return,
        };
        let (name, flags, killed, tls) = (name.clone(), flags.clone(), killed.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, name, flags, killed).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            flags.resumed.fetch_add(1, Ordering::SeqCst);
                        }
                        serve(stream, name, flags, killed).await
                    }
                }
            }
        });
    }
}

async fn serve<S>(stream: S, name: Arc<str>, flags: Flags, mut killed: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(request, name.clone(), flags.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = killed.wait_for(|k| *k) => {}
    }
}

fn text(status: StatusCode, name: &str, body: String) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert("x-site", name.parse().unwrap());
    response
}

async fn handle(mut request: Request<Incoming>, name: Arc<str>, flags: Flags) -> Result<Reply, Infallible> {
    if flags.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        flags.probes.fetch_add(1, Ordering::SeqCst);
        let up = flags.healthy.load(Ordering::SeqCst);
        let status = if up {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(text(status, &name, "health\n".into()));
    }
    flags.hits.fetch_add(1, Ordering::SeqCst);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let reply = match segments.as_slice() {
        ["headers"] => {
            let mut lines: Vec<String> = request
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
                .collect();
            lines.push(format!("version: {:?}", request.version()));
            text(StatusCode::OK, &name, lines.join("\n"))
        }
        ["upload"] => {
            let mut body = request.into_body();
            let (mut bytes, mut fnv) = (0u64, Fnv::default());
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            bytes += data.len() as u64;
                            fnv.update(data);
                        }
                    }
                    Err(e) => return Ok(text(StatusCode::BAD_REQUEST, &name, e.to_string())),
                }
            }
            text(StatusCode::OK, &name, format!("bytes={bytes} fnv={:x}", fnv.0))
        }
        ["download", n] => {
            let mut response = Response::new(Either::Right(PatternBody {
                offset: 0,
                remaining: n.parse().unwrap_or(0),
            }));
            response.headers_mut().insert("x-site", name.parse().unwrap());
            response
        }
        ["sleep", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            text(StatusCode::OK, &name, name.to_string())
        }
        ["close"] => {
            let mut response = text(StatusCode::OK, &name, name.to_string());
            response.headers_mut().insert("connection", "close".parse().unwrap());
            response
        }
        ["status", code] => text(
            StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap(),
            &name,
            name.to_string(),
        ),
        ["ws"] => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut response = text(StatusCode::SWITCHING_PROTOCOLS, &name, String::new());
            response.headers_mut().insert("upgrade", "echo".parse().unwrap());
            response.headers_mut().insert("connection", "upgrade".parse().unwrap());
            response
        }
        _ => text(StatusCode::OK, &name, name.to_string()),
    };
    Ok(reply)
}

/// Streams `remaining` bytes of the test pattern in 64 KiB chunks, never all at once.
pub struct PatternBody {
    offset: u64,
    remaining: u64,
}

impl PatternBody {
    pub fn new(len: u64) -> Self {
        PatternBody {
            offset: 0,
            remaining: len,
        }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(64 * 1024) as usize;
        let chunk = pattern(self.offset, len);
        self.offset += len as u64;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// An address where nothing listens: connections are refused.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Accepts TCP connections and never answers (a hung site). Held until dropped.
pub async fn black_hole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}
