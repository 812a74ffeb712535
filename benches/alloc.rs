//! Allocations per proxied request. A counting global allocator (here, never in the
//! binary) wraps the system one; the backend and the client are plain blocking sockets
//! on their own threads that allocate nothing per request, so what is counted between
//! two marks is the proxy's own work. Prints allocations and bytes per request for
//! small GET responses over kept-alive connections; then the heap bytes still held per
//! idle client connection (each served one request and stays open).
//! Run: `cargo bench --bench alloc` (knobs: ALLOC_REQUESTS, ALLOC_CONNS, ALLOC_IDLE).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use splitgate::server::Server;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicI64 = AtomicI64::new(0);
/// Blocks allocated and not yet freed, by size class (bucket i: sizes below 2^(i+1)).
static LIVE_BY_SIZE: [AtomicI64; 24] = [const { AtomicI64::new(0) }; 24];

fn size_class(size: usize) -> usize {
    (usize::BITS - size.max(1).leading_zeros()).saturating_sub(1).min(23) as usize
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(new_size)].fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-type: text/plain\r\n\r\nsite=a\n";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Answers every request head (ends with a blank line; no bodies) with `RESPONSE`.
fn serve_backend(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut filled = 0;
            loop {
                let Ok(n) = stream.read(&mut buf[filled..]) else { return };
                if n == 0 {
                    return;
                }
                filled += n;
                // Answer each complete head in the buffer.
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    if stream.write_all(RESPONSE).is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
            }
        });
    }
}

/// Sends `count` GETs one after another on one connection, reading each response.
fn client(addr: SocketAddr, count: u64) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let request = b"GET /x HTTP/1.1\r\nhost: bench\r\nuser-agent: alloc-bench\r\n\r\n";
    let mut buf = [0u8; 4096];
    for _ in 0..count {
        if stream.write_all(request).is_err() {
            return;
        }
        let mut filled = 0;
        loop {
            let Ok(n) = stream.read(&mut buf[filled..]) else { return };
            if n == 0 {
                return;
            }
            filled += n;
            // The proxy's response ends with the backend's 7-byte body.
            if buf[..filled].ends_with(b"site=a\n") {
                break;
            }
        }
    }
}

fn main() {
    let requests = env("ALLOC_REQUESTS", 20_000);
    let conns = env("ALLOC_CONNS", 4);
    let backend = TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_addr = backend.local_addr().expect("backend address");
    std::thread::spawn(move || serve_backend(backend));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server, addr) = runtime.block_on(async {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[[site]]\nname = \"a\"\nweight = 1\nbackends = [\"{backend_addr}\"]\nhealth = {{ interval = \"1h\" }}\n"
        );
        let config = splitgate::config::parse(Path::new("bench"), &text).expect("bench config");
        let server = Server::start(config, None).await.expect("proxy");
        let addr = server.proxy_addrs().await[0];
        (server, addr)
    });
    // Warm up: connections opened, pools filled, lazy statics set.
    let warm: Vec<_> = (0..conns)
        .map(|_| std::thread::spawn(move || client(addr, 200)))
        .collect();
    warm.into_iter().for_each(|t| drop(t.join()));
    let per_conn = requests / conns;
    let (allocs, bytes) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    let clients: Vec<_> = (0..conns)
        .map(|_| std::thread::spawn(move || client(addr, per_conn)))
        .collect();
    clients.into_iter().for_each(|t| drop(t.join()));
    let total = per_conn * conns;
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
    let bytes = BYTES.load(Ordering::Relaxed) - bytes;
    println!(
        "alloc bench: {total} requests on {conns} connections: {:.1} allocations and {:.0} bytes allocated per request",
        allocs as f64 / total as f64,
        bytes as f64 / total as f64
    );
    idle_connections(addr, env("ALLOC_IDLE", 1000));
    runtime.block_on(server.shutdown());
}

/// Heap bytes held per idle client connection: `count` connections each send one GET,
/// read the answer and stay open.
fn idle_connections(addr: SocketAddr, count: u64) {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = LIVE.load(Ordering::Relaxed);
    let by_size = || LIVE_BY_SIZE.each_ref().map(|n| n.load(Ordering::Relaxed));
    let blocks_before = by_size();
    let mut held = Vec::new();
    let request = b"GET /x HTTP/1.1\r\nhost: bench\r\n\r\n";
    for _ in 0..count {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            break;
        };
        let mut buf = [0u8; 1024];
        let mut filled = 0;
        if stream.write_all(request).is_err() {
            break;
        }
        while !buf[..filled].ends_with(b"site=a\n") {
            match stream.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        held.push(stream);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "alloc bench: {} idle client connections hold {:.0} heap bytes each",
        held.len(),
        (after - before) as f64 / held.len().max(1) as f64
    );
    let n = held.len().max(1) as f64;
    let blocks: Vec<String> = by_size()
        .iter()
        .zip(blocks_before)
        .enumerate()
        .filter(|(_, (now, then))| (**now - *then) as f64 / n >= 0.05)
        .map(|(class, (now, then))| {
            format!(
                "{}-{} B: {:.2}",
                1u64 << class,
                (1u64 << (class + 1)) - 1,
                (*now - then) as f64 / n
            )
        })
        .collect();
    println!(
        "alloc bench: blocks held per idle connection, by size: {}",
        blocks.join(", ")
    );
}
