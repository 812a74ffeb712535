//! HTTP/1.1 as the proxy's clients speak it, on the wire: the client's stream type
//! (`stream`), the request head read strictly once (`request`), the request body read
//! off the connection as the upstream side asks for it (`reader`), the response head
//! and body framing written back (`response`), and the read buffers lent per worker
//! (`buffers`). The connection's life (timeouts, pipelining, 100-continue, upgrades,
//! the drain) is `proxy::h1_conn`'s; this module knows nothing of the proxy.

pub mod buffers;
pub mod reader;
pub mod request;
pub mod response;
mod stream;

pub use reader::{Decoder, Home, RequestReader};
pub use request::{parse, Framing, Head, Limits, Parsed, Refusal};
pub use stream::{ClientStream, Rewound};

/// What a request that asks to switch protocols carries in its extensions: the
/// client's connection, handed over once its 101 was written, with the bytes the client
/// sent after its head (already the new protocol's). (Shared: request extensions must
/// be `Clone`; the first to take it gets it.)
#[derive(Clone)]
pub struct ClientUpgrade(std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl ClientUpgrade {
    pub fn new(receiver: tokio::sync::oneshot::Receiver<Upgraded>) -> Self {
        ClientUpgrade(std::sync::Arc::new(std::sync::Mutex::new(Some(receiver))))
    }

    /// The connection once the 101 is written; `None` if it never will be.
    pub async fn connection(self) -> Option<Upgraded> {
        let receiver = self.0.lock().ok()?.take()?;
        receiver.await.ok()
    }
}

pub struct Upgraded {
    pub stream: ClientStream,
    pub early: bytes::Bytes,
}
