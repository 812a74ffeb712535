//! etcd's Lease service: a lease granted for a TTL, kept alive over one stream (a
//! keep-alive sent, its answer read); keys put under it go when it ends.

use tokio::sync::mpsc;
use tonic::codec::Streaming;

use super::client::Client;
use super::error::{Error, Result};
use super::pb;

impl Client {
    /// A new lease of `ttl` seconds; returns its id.
    pub async fn lease_grant(&mut self, ttl: i64) -> Result<i64> {
        let request = pb::LeaseGrantRequest { ttl, id: 0 };
        let answer: pb::LeaseGrantResponse = self.unary("/etcdserverpb.Lease/LeaseGrant", request).await?;
        Ok(answer.id)
    }

    /// Keeps lease `id` alive: one keep-alive now (its answer already read), one more
    /// per `LeaseKeeper::keep_alive`, each answered on the stream.
    pub async fn lease_keep_alive(&mut self, id: i64) -> Result<(LeaseKeeper, LeaseKeepAliveStream)> {
        let (sender, mut answers): (_, Streaming<pb::LeaseKeepAliveResponse>) = self
            .stream("/etcdserverpb.Lease/LeaseKeepAlive", pb::LeaseKeepAliveRequest { id })
            .await?;
        match answers.message().await? {
            Some(answer) if answer.ttl > 0 => {}
            Some(_) => return Err(Error::Protocol("lease not found")),
            None => return Err(Error::Protocol("the keep-alive stream ended")),
        }
        Ok((LeaseKeeper { id, sender }, LeaseKeepAliveStream(answers)))
    }
}

/// Sends a lease's keep-alives; dropping it ends the keep-alive stream.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    sender: mpsc::Sender<pb::LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// One keep-alive; its answer comes on the `LeaseKeepAliveStream`.
    pub async fn keep_alive(&mut self) -> Result<()> {
        self.sender
            .send(pb::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| Error::Protocol("the keep-alive stream closed"))
    }
}

/// etcd's answers to a lease's keep-alives.
#[derive(Debug)]
pub struct LeaseKeepAliveStream(Streaming<pb::LeaseKeepAliveResponse>);

impl LeaseKeepAliveStream {
    /// The next answer; `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>> {
        Ok(self.0.message().await?.map(LeaseKeepAliveResponse))
    }
}

#[derive(Debug, Clone)]
pub struct LeaseKeepAliveResponse(pb::LeaseKeepAliveResponse);

impl LeaseKeepAliveResponse {
    /// The time the lease has left, in seconds (0 or less: it is gone).
    pub fn ttl(&self) -> i64 {
        self.0.ttl
    }
}
