//! Zero-copy bodies: a body of known length between a plain TCP backend and a plain TCP
//! client moves through a kernel pipe with `splice(2)` (HAProxy's `option splice-auto`),
//! never through user space. The system calls are rustix's (safe wrappers); pipes are
//! kept per worker thread for reuse. TLS and HTTP/2 keep the copying path. Bounded: a
//! side that makes no progress for `stall` ends the move with an error.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bodies shorter than this are copied (a pipe's system calls cost more than the copy).
pub(crate) const SPLICE_MIN: u64 = 64 * 1024;
/// What a pipe is asked to hold (the kernel's default is 64 KiB).
const PIPE_SIZE: usize = 256 * 1024;
/// Pipes kept per worker for reuse.
const KEPT: usize = 64;

/// A pipe, empty whenever it is in the pool.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

fn take_pipe() -> io::Result<Pipe> {
    if let Some(pipe) = PIPES.with(|pipes| pipes.borrow_mut().pop()) {
        return Ok(pipe);
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    let size = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
        .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
        .unwrap_or(64 * 1024);
    Ok(Pipe { read, write, size })
}

fn give_pipe(pipe: Pipe) {
    PIPES.with(|pipes| {
        let mut pipes = pipes.borrow_mut();
        if pipes.len() < KEPT {
            pipes.push(pipe);
        }
    });
}

/// Moves exactly `len` bytes from `from` to `to`; `moved` hears of each piece that
/// reached `to`. An error (a side closed or stalled) leaves the byte count unknown to
/// the peer: both connections must close then.
pub(crate) async fn splice_exact(
    from: &TcpStream,
    to: &TcpStream,
    len: u64,
    stall: Duration,
    mut moved: impl FnMut(usize),
) -> io::Result<()> {
    let pipe = take_pipe()?;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let (mut left, mut in_pipe) = (len, 0usize);
    while left > 0 || in_pipe > 0 {
        if left > 0 && in_pipe < pipe.size {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(pipe.size - in_pipe);
            match from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, &pipe.write, None, want, flags)?)
            }) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed inside the body",
                    ))
                }
                Ok(n) => {
                    left -= n as u64;
                    in_pipe += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if in_pipe == 0 {
                        wait(from.readable(), stall).await?;
                        continue;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if in_pipe > 0 {
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(&pipe.read, None, to, None, in_pipe, flags)?)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    moved(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(to.writable(), stall).await?,
                Err(e) => return Err(e),
            }
        }
    }
    give_pipe(pipe);
    Ok(())
}

async fn wait(ready: impl std::future::Future<Output = io::Result<()>>, stall: Duration) -> io::Result<()> {
    match tokio::time::timeout(stall, ready).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no progress while splicing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn exactly_the_length_moves_and_what_follows_stays() {
        let (mut backend, backend_side) = pair().await;
        let (client_side, mut client) = pair().await;
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = body.clone();
        sent.extend_from_slice(b"NEXT");
        let writer = tokio::spawn(async move {
            backend.write_all(&sent).await.unwrap();
            backend
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 3_000_000];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        let mut total = 0;
        splice_exact(
            &backend_side,
            &client_side,
            body.len() as u64,
            Duration::from_secs(5),
            |n| total += n,
        )
        .await
        .unwrap();
        assert_eq!(total, body.len());
        assert_eq!(reader.await.unwrap(), body);
        let _backend = writer.await.unwrap();
        let mut next = [0u8; 4];
        let mut side = backend_side;
        side.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"NEXT", "bytes after the body stay on the backend's socket");
    }

    #[tokio::test]
    async fn a_backend_that_closes_early_is_an_error() {
        let (mut backend, backend_side) = pair().await;
        let (client_side, _client) = pair().await;
        backend.write_all(b"short").await.unwrap();
        drop(backend);
        let result = splice_exact(&backend_side, &client_side, 100_000, Duration::from_secs(5), |_| {}).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
