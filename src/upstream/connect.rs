//! Connector layers around hyper-util's `HttpConnector`: `CountingConnector` keeps
//! the `splitgate_upstream_connections` gauge (TLS layers on top, so plain and HTTPS
//! connections are both counted), and `Deadline` bounds a whole connect, TLS
//! handshake included, by `[timeouts].connect`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use metrics::Gauge;
use tower_service::Service;

#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    open: Gauge,
}

impl CountingConnector {
    pub fn new(inner: HttpConnector) -> Self {
        CountingConnector {
            inner,
            open: metrics::gauge!("splitgate_upstream_connections"),
        }
    }
}

/// A connection that lowers the gauge when it closes.
pub struct Counted<T> {
    inner: T,
    open: Gauge,
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

type Connecting<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl Service<Uri> for CountingConnector {
    type Response = Counted<<HttpConnector as Service<Uri>>::Response>;
    type Error = <HttpConnector as Service<Uri>>::Error;
    type Future = Connecting<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let open = self.open.clone();
        Box::pin(async move {
            let inner = connecting.await?;
            open.increment(1.0);
            Ok(Counted { inner, open })
        })
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fails a connect (TCP and TLS together) that takes longer than the deadline, as a
/// connect error, so it is retried and taken out like a refused connection.
#[derive(Clone)]
pub struct Deadline<C> {
    inner: C,
    limit: Duration,
}

impl<C> Deadline<C> {
    pub fn new(inner: C, limit: Duration) -> Self {
        Deadline { inner, limit }
    }
}

impl<C> Service<Uri> for Deadline<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!("connect (TCP and TLS) took longer than {limit:?}").into()),
            }
        })
    }
}
