//! An HTTP/1.1 client connection's state between requests (its stream, what is
//! buffered, its clocks and limits), and how the connection ends: a refusal answered
//! by the proxy itself, and the closing that lets the last answer reach the client.
//! Its life is `h1_conn`'s; one exchange is `h1_exchange`'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::activity::Activity;
use super::h1::{self, ClientStream, Refusal};
use super::headers::ClientInfo;
use super::Proxy;
use crate::config::Timeouts;

/// One client connection's HTTP/1.1 state between requests.
pub(super) struct Connection<'a> {
    /// `None` only while a request's body reader holds the read half.
    pub stream: Option<ClientStream>,
    /// Bytes read and not used yet (a pipelined head); `None` when there are none.
    pub buf: Option<BytesMut>,
    pub activity: Arc<Activity>,
    pub client: Arc<ClientInfo>,
    pub proxy: &'a Arc<Proxy>,
    pub timeouts: &'a Timeouts,
    pub limits: h1::Limits,
    pub shutdown: &'a mut watch::Receiver<bool>,
    /// The process drains (since this `now_ms`): answers say `Connection: close`.
    pub draining: Option<u64>,
}

impl Connection<'_> {
    /// Answers `refusal` itself and closes the connection.
    pub(super) async fn refuse(&mut self, refusal: Refusal) {
        let answer = format!(
            "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{}",
            refusal.status.as_str(),
            refusal.status.canonical_reason().unwrap_or(""),
            refusal.text.len(),
            refusal.text
        );
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let written = tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer.as_bytes())).await;
        if let Ok(Ok(())) = written {
            self.proxy.client_metrics.sent.increment(answer.len() as u64);
        }
        self.close().await;
    }

    /// Closes after the last answer: the write side first, then what the client still
    /// sends is read and dropped for a moment (bounded), so that the kernel does not
    /// answer it with a reset that could destroy the answer before the client reads it.
    pub(super) async fn close(&mut self) {
        self.buf = None;
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        // On the heap: an array here would sit in every connection's task.
        let mut sink = vec![0u8; 4096];
        let mut left: usize = 256 * 1024;
        let linger = async {
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    }
}
