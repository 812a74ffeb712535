//! The byte stream to one backend: a TCP connection that keeps the open-connections
//! gauge and the quick-ACK rule for backends that keep Nagle's algorithm on (`Conn`),
//! or TLS over it (`Io`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use metrics::Gauge;
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The transport: plain TCP or TLS over it (boxed: TLS state is large and rare).
pub(crate) enum Io {
    Plain(Conn),
    Tls(Box<tokio_rustls::client::TlsStream<Conn>>),
}

/// A TCP connection to a backend that lowers the gauge when it closes, and asks the
/// kernel for an immediate ACK when the bytes received so far end where a backend may
/// pause: a backend that keeps Nagle's algorithm on and writes a response head and
/// body (or chunks) in separate sends would otherwise hold the next part until our
/// delayed ACK (~40 ms). The kernel leaves quick-ACK mode on its own, hence the re-arm.
/// Plain HTTP/1.1 pauses after a line end ("\r\n": a head, a chunk); a read that ends
/// inside a body is followed by more without a wait, so no ACK is forced there (an
/// immediate ACK costs a packet). Under TLS the bytes say nothing: every wait re-arms.
pub(crate) struct Conn {
    tcp: TcpStream,
    open: Gauge,
    tls: bool,
    /// The last read ended where the backend may wait for our ACK.
    ack_now: bool,
}

impl Conn {
    /// Counts the connection open in `open` until it drops; `tls`: TLS runs over it.
    pub(super) fn new(tcp: TcpStream, open: Gauge, tls: bool) -> Conn {
        open.increment(1.0);
        Conn {
            tcp,
            open,
            tls,
            ack_now: false,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.ack_now = self.tls || buf.filled()[before..].ends_with(b"\r\n");
            }
            Poll::Pending if self.ack_now => {
                self.ack_now = false;
                let _ = SockRef::from(&self.tcp).set_tcp_quickack(true);
            }
            _ => {}
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write(cx, data),
            Io::Tls(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

impl Io {
    /// The TCP connection when no TLS runs over it (the bytes on it are the body's own).
    pub(super) fn plain_tcp(&self) -> Option<&TcpStream> {
        match self {
            Io::Plain(conn) => Some(&conn.tcp),
            Io::Tls(_) => None,
        }
    }
}
