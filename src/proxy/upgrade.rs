//! HTTP/1.1 upgrades (WebSocket and others): once the backend answers 101, the client's
//! connection is taken over from hyper, the backend's from its response body, and bytes
//! are copied both ways until either side closes (first any bytes the backend sent
//! right behind its 101). The tunnel counts as live work for the shutdown drain.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::shutdown::TaskToken;
use crate::upstream::H1Conn;

/// Joins the client's upgraded connection and the backend's in a background task.
pub fn spawn_tunnel(client: OnUpgrade, backend: H1Conn, token: TaskToken) {
    tokio::spawn(async move {
        let _token = token;
        let client = match client.await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let (mut backend, early) = backend.into_parts();
        if !early.is_empty() {
            if let Err(e) = client.write_all(&early).await {
                tracing::debug!(error = %e, "tunnel ended with an error");
                return;
            }
        }
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
        }
    });
}
