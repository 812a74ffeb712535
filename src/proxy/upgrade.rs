//! HTTP/1.1 upgrades (WebSocket and others): once the backend answers 101, both sides'
//! connections are taken over from hyper and bytes are copied both ways until either
//! side closes. The tunnel counts as live work for the shutdown drain.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::shutdown::TaskToken;

/// Joins the client's and the backend's upgraded connections in a background task.
pub fn spawn_tunnel(client: OnUpgrade, backend: OnUpgrade, token: TaskToken) {
    tokio::spawn(async move {
        let _token = token;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
        }
    });
}
