//! HTTP/1.1 upgrades (WebSocket and others): once the backend answers 101, the client's
//! connection is handed over by its connection once the 101 is written, the backend's
//! taken from its response body, and bytes are copied both ways until either side
//! closes (first any bytes either side sent right behind its head). The tunnel counts
//! as live work for the shutdown drain.

use tokio::io::AsyncWriteExt;

use crate::proxy::h1::ClientUpgrade;
use crate::shutdown::TaskToken;
use crate::upstream::H1Conn;

/// Joins the client's upgraded connection and the backend's in a background task.
pub fn spawn_tunnel(client: ClientUpgrade, backend: H1Conn, token: TaskToken) {
    tokio::spawn(async move {
        let _token = token;
        let Some(client) = client.connection().await else {
            tracing::debug!("upgrade did not complete: the client's connection ended first");
            return;
        };
        let mut stream = client.stream;
        let (mut backend, early) = backend.into_parts();
        if !early.is_empty() {
            if let Err(e) = stream.write_all(&early).await {
                tracing::debug!(error = %e, "tunnel ended with an error");
                return;
            }
        }
        if !client.early.is_empty() {
            if let Err(e) = backend.write_all(&client.early).await {
                tracing::debug!(error = %e, "tunnel ended with an error");
                return;
            }
        }
        let mut client = stream;
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
        }
    });
}
