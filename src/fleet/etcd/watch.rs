//! etcd's Watch service: a watch of a key or a prefix from a revision, its answers
//! (the events of one revision each, or its cancellation) and the events' accessors.

use tokio::sync::mpsc;
use tonic::codec::Streaming;

use super::client::Client;
use super::error::{Error, Result};
use super::kv::Range;
use super::pb::{self, Event, KeyValue, ResponseHeader};

impl Client {
    /// Watches `key` (a prefix, with `WatchOptions::with_prefix`); returns once etcd
    /// has created the watch. Dropping the `Watcher` ends it.
    pub async fn watch(
        &mut self,
        key: impl Into<Vec<u8>>,
        options: Option<WatchOptions>,
    ) -> Result<(Watcher, WatchStream)> {
        let options = options.unwrap_or_default();
        let key = key.into();
        let create = pb::WatchCreateRequest {
            range_end: options.range.end(&key),
            key,
            start_revision: options.start_revision,
        };
        let request = pb::WatchRequest {
            request_union: Some(pb::WatchRequestUnion::CreateRequest(create)),
        };
        let (sender, mut answers): (_, Streaming<pb::WatchResponse>) =
            self.stream("/etcdserverpb.Watch/Watch", request).await?;
        let first = answers
            .message()
            .await?
            .ok_or(Error::Protocol("the watch stream ended"))?;
        if !first.created {
            return Err(Error::Protocol("etcd did not create the watch"));
        }
        let mut stream = WatchStream {
            stream: answers,
            pending: None,
        };
        // A watch created and cancelled at once (its start revision compacted away)
        // says so in the same answer: it is handed on as the stream's first message.
        if first.canceled || first.compact_revision > 0 || !first.events.is_empty() {
            stream.pending = Some(first);
        }
        Ok((Watcher { _sender: sender }, stream))
    }
}

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    range: Range,
    start_revision: i64,
}

impl WatchOptions {
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }

    pub fn with_prefix(mut self) -> Self {
        self.range = Range::Prefix;
        self
    }

    /// Events from this revision on (0: from the next one).
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

impl Event {
    pub fn event_type(&self) -> EventType {
        match self.r#type {
            1 => EventType::Delete,
            _ => EventType::Put,
        }
    }

    /// The key as written (a delete: the key, its value empty).
    pub fn kv(&self) -> Option<&KeyValue> {
        self.kv.as_ref()
    }
}

/// Holds a watch open; dropping it ends the watch.
#[derive(Debug)]
pub struct Watcher {
    _sender: mpsc::Sender<pb::WatchRequest>,
}

/// A watch's answers: events, or its cancellation.
#[derive(Debug)]
pub struct WatchStream {
    stream: Streaming<pb::WatchResponse>,
    /// An answer read while the watch was being created, handed on first.
    pending: Option<pb::WatchResponse>,
}

impl WatchStream {
    /// The next answer; `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        if let Some(first) = self.pending.take() {
            return Ok(Some(WatchResponse(first)));
        }
        Ok(self.stream.message().await?.map(WatchResponse))
    }
}

#[derive(Debug, Clone)]
pub struct WatchResponse(pb::WatchResponse);

impl WatchResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.0.header.as_ref()
    }

    /// etcd ended the watch (`cancel_reason` says why).
    pub fn canceled(&self) -> bool {
        self.0.canceled
    }

    /// Above 0: the watch's start revision was compacted away; this is the oldest
    /// revision left.
    pub fn compact_revision(&self) -> i64 {
        self.0.compact_revision
    }

    pub fn cancel_reason(&self) -> &str {
        &self.0.cancel_reason
    }

    /// The changes of one revision (a transaction's together), in order.
    pub fn events(&self) -> &[Event] {
        &self.0.events
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_watch_answer_decodes_with_fields_it_does_not_know() {
        let answer = pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 9,
                member_id: 1,
                revision: 42,
                raft_term: 2,
            }),
            watch_id: 0,
            created: false,
            canceled: false,
            compact_revision: 0,
            cancel_reason: String::new(),
            events: vec![pb::Event {
                r#type: 1,
                kv: Some(pb::KeyValue {
                    key: b"/sg/sites/a/weight".to_vec(),
                    mod_revision: 42,
                    ..Default::default()
                }),
            }],
        };
        let mut bytes = answer.encode_to_vec();
        // `fragment` (7: true), which this module leaves out.
        bytes.extend_from_slice(&[0x38, 0x01]);
        let decoded = WatchResponse(pb::WatchResponse::decode(bytes.as_slice()).expect("decodes"));
        assert_eq!(decoded.header().map(|h| (h.revision(), h.cluster_id())), Some((42, 9)));
        let event = &decoded.events()[0];
        assert_eq!(event.event_type(), EventType::Delete);
        assert_eq!(event.kv().map(|kv| kv.key()), Some(&b"/sg/sites/a/weight"[..]));
    }
}
