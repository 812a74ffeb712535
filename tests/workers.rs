//! Thread per core, against the real binary with `workers = 4`: client connections are
//! spread over the workers (each accepts on its own `SO_REUSEPORT` socket) and every
//! worker keeps its own warm upstream connections; a listener added by SIGHUP is served
//! by the workers too, and SIGTERM stops them all with exit code 0; `max_connections`
//! holds across workers without a client waiting on an idle worker.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{free_port, ProxyProcess};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 backend that answers every request `ok` on kept-alive connections and
/// records which of its connections carried a request for `/w` (health probes aside).
async fn counting_backend() -> (SocketAddr, Arc<Mutex<HashSet<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let used = Arc::new(Mutex::new(HashSet::new()));
    let seen = used.clone();
    tokio::spawn(async move {
        for id in 0u64.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let used = seen.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line.starts_with("GET /w") {
                        used.lock().unwrap().insert(id);
                    }
                    // The rest of the head (requests here carry no body).
                    loop {
                        let mut field = String::new();
                        if read.read_line(&mut field).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if field == "\r\n" {
                            break;
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, used)
}

fn config(listeners: &[SocketAddr], admin: SocketAddr, backend: SocketAddr) -> String {
    config_with("", listeners, admin, backend)
}

fn config_with(extra: &str, listeners: &[SocketAddr], admin: SocketAddr, backend: SocketAddr) -> String {
    let mut text = format!("workers = 4\n{extra}[admin]\nbind = \"{admin}\"\n");
    for listen in listeners {
        text += &format!("[[listener]]\nbind = \"{listen}\"\n");
    }
    text + &format!("[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{backend}\"]\n")
}

/// One request on a connection of its own; the answer's body.
async fn get_once(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /w HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answer within 10 s")
        .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_the_workers_and_each_worker_reuses_its_own_upstream_connections() {
    let (backend, used) = counting_backend().await;
    let proxy = ProxyProcess::start(|listen, admin| config(&[listen], admin, backend));
    // One after another, each on a new client connection: with one shared pool, a
    // single upstream connection would carry them all.
    for _ in 0..40 {
        assert!(get_once(proxy.addr).await.ends_with("\r\n\r\nok\n"));
    }
    let upstream = used.lock().unwrap().len();
    assert!(
        (2..=4).contains(&upstream),
        "40 client connections went over {upstream} upstream connections: expected one per worker that accepted (2 to 4)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_by_sighup_is_served_by_the_workers_and_sigterm_stops_them() {
    let (backend, used) = counting_backend().await;
    let second: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut proxy = ProxyProcess::start(|listen, admin| config(&[listen], admin, backend));
    assert!(get_once(proxy.addr).await.ends_with("ok\n"));
    assert_eq!(used.lock().unwrap().len(), 1);
    proxy.write_config(&config(&[proxy.addr, second], proxy.admin, backend));
    proxy.signal("HUP");
    let mut served = false;
    for _ in 0..100 {
        if TcpStream::connect(second).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the added listener never accepted: {}", proxy.stderr());
    for _ in 0..40 {
        assert!(get_once(second).await.ends_with("ok\n"));
    }
    // Accepted on several workers: each one that served a request opened its own
    // upstream connection (one copy of the new listener on one worker: 2 at most).
    let upstream = used.lock().unwrap().len();
    assert!(
        upstream >= 3,
        "the added listener's 40 connections went over {upstream} upstream connections"
    );
    for _ in 0..10 {
        assert!(get_once(proxy.addr).await.ends_with("ok\n"));
    }
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}: {}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_the_same_port_fails_to_start_and_leaves_the_first_serving() {
    let (backend, _) = counting_backend().await;
    let first = ProxyProcess::start(|listen, admin| config(&[listen], admin, backend));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.toml");
    let other_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(&path, config(&[first.addr], other_admin, backend)).unwrap();
    let log = dir.path().join("second.log");
    let mut second = std::process::Command::new(common::process::BINARY)
        .args(["run", "--config"])
        .arg(&path)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut exit = None;
    for _ in 0..100 {
        exit = second.try_wait().unwrap();
        if exit.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = exit else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("a second proxy started on {} and kept running", first.addr);
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "a second proxy exited 0: {stderr}");
    assert!(stderr.contains("cannot listen on"), "stderr: {stderr}");
    for _ in 0..10 {
        assert!(get_once(first.addr).await.ends_with("ok\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_connections_1_each_client_in_turn_is_served_whichever_worker_accepts_it() {
    // Before: each worker's accept loop took a permit before accepting, so the one
    // permit sat with a worker whose socket was empty while clients queued on others.
    let (backend, _) = counting_backend().await;
    let limits = "[limits]\nmax_connections = 1\n";
    let proxy = ProxyProcess::start(|listen, admin| config_with(limits, &[listen], admin, backend));
    for _ in 0..12 {
        assert!(get_once(proxy.addr).await.ends_with("ok\n"));
    }
    // Still a limit: a second client waits while one connection is open.
    let mut held = TcpStream::connect(proxy.addr).await.unwrap();
    held.write_all(b"GET /w HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), held.read(&mut buf))
        .await
        .expect("the first client is served")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A second client sends its request...
    let mut waiting = TcpStream::connect(proxy.addr).await.unwrap();
    waiting
        .write_all(b"GET /w HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // ...and is not answered while the held connection gets 50 more answers.
    for _ in 0..50 {
        held.write_all(b"GET /w HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"ok\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), held.read(&mut buf))
                .await
                .expect("the held connection is served")
                .unwrap();
            assert!(n > 0, "the held connection was closed");
            answer.extend_from_slice(&buf[..n]);
        }
        let mut none = [0u8; 64];
        let early = waiting.try_read(&mut none);
        assert!(
            early
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "served beyond max_connections: {early:?}"
        );
    }
    drop(held);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), waiting.read_to_string(&mut answer))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert!(answer.ends_with("ok\n"));
}
