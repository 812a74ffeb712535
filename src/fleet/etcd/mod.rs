//! The part of etcd's v3 gRPC API the fleet uses, over tonic: KV (Range, Put, Txn with
//! puts and deletes), Watch, Lease (LeaseGrant, LeaseKeepAlive) and Auth
//! (Authenticate). The messages are written out below with prost's derive, with the
//! field numbers of etcd's `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto`
//! (frozen by etcd's v3 compatibility promise); fields the fleet does not need are
//! left out, and protobuf skips them on the wire. So the build needs no `protoc` and
//! no build script. The surface follows the `etcd-client` crate's (which this module
//! replaced), so the fleet's code reads as it did.
//!
//! The module depends on nothing else in the crate: `tests/fleet.rs` includes it to
//! write to a real etcd the way a member does.

use std::time::Duration;

use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub use pb::{Event, KeyValue, ResponseHeader};
pub use tonic::transport::{Certificate, ClientTlsConfig as TlsOptions, Identity};

/// The messages, as etcd's protos define them (a subset of the fields).
mod pb;

/// What a call to etcd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("{}", chain(.0))]
    Transport(#[from] tonic::transport::Error),
    /// etcd's answer, or the channel's when etcd cannot be reached (boxed: a `Status`
    /// is large).
    #[error("{:?}: {}", .0.code(), chain(.0.as_ref()))]
    Status(Box<tonic::Status>),
    /// A stream that ended early, an answer that makes no sense.
    #[error("{0}")]
    Protocol(&'static str),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        Error::Status(Box::new(status))
    }
}

/// An error and its sources, each said once, tonic's wrappers left out: "tcp connect
/// error: Connection refused (os error 111)".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let said = if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            status.message().to_owned()
        } else if cause.is::<tonic::transport::Error>() && cause.source().is_some() {
            String::new() // "transport error": its source says what
        } else {
            cause.to_string()
        };
        if !said.is_empty() && !text.contains(&said) {
            text = if text.is_empty() {
                said
            } else {
                format!("{text}: {said}")
            };
        }
        next = cause.source();
    }
    text
}

pub type Result<T> = std::result::Result<T, Error>;

/// How to reach etcd: timeouts, HTTP/2 keep-alive, a user, TLS.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    user: Option<(String, String)>,
    keep_alive: Option<(Duration, Duration)>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    tls: Option<TlsOptions>,
}

impl ConnectOptions {
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Logs in as this user (etcd's Authenticate); every call carries the token.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// HTTPS: the CA and, optionally, this client's identity.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// HTTP/2 pings every `interval` (idle or not); the connection is dropped when one
    /// is not answered within `timeout`.
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// Each call's deadline (for a stream: until etcd's first answer).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let invalid = |why: String| Error::Endpoint(url.to_owned(), why);
        let mut endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
        match (&self.tls, url.starts_with("https://")) {
            (Some(tls), true) => endpoint = endpoint.tls_config(tls.clone())?,
            (None, false) => {}
            (Some(_), false) => return Err(invalid("TLS needs an https:// endpoint".into())),
            (None, true) => return Err(invalid("an https:// endpoint needs TLS options".into())),
        }
        if let Some((interval, timeout)) = self.keep_alive {
            endpoint = endpoint
                .keep_alive_while_idle(true)
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        if let Some(timeout) = self.timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        Ok(endpoint)
    }
}

/// A connection to an etcd cluster (balanced over its endpoints); cheap to clone.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    /// etcd's auth token, sent as the `token` metadata of every call.
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client of these endpoints. Connections are made on the first call (and made
    /// again after a failure), except that a user logs in here.
    pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(
        endpoints: S,
        options: Option<ConnectOptions>,
    ) -> Result<Client> {
        let options = options.unwrap_or_default();
        let endpoints = endpoints
            .as_ref()
            .iter()
            .map(|url| options.endpoint(url.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let channel = match endpoints.as_slice() {
            [] => return Err(Error::Endpoint(String::new(), "no etcd endpoint".into())),
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        let mut client = Client { channel, token: None };
        if let Some((name, password)) = options.user {
            let request = pb::AuthenticateRequest { name, password };
            let answer: pb::AuthenticateResponse = client.unary("/etcdserverpb.Auth/Authenticate", request).await?;
            let token = MetadataValue::try_from(answer.token.as_str())
                .map_err(|_| Error::Protocol("etcd's auth token is not valid metadata"))?;
            client.token = Some(token);
        }
        Ok(client)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    async fn ready(&self) -> Result<tonic::client::Grpc<Channel>> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("etcd is not reachable: {e}")))?;
        Ok(grpc)
    }

    async fn unary<Q, A>(&self, path: &'static str, message: Q) -> Result<A>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.ready().await?;
        let answer = grpc
            .unary(
                self.request(message),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await?;
        Ok(answer.into_inner())
    }

    /// A bidirectional stream opened with `first`; the sender sends more.
    async fn stream<Q, A>(&self, path: &'static str, first: Q) -> Result<(mpsc::Sender<Q>, Streaming<A>)>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let (sender, receiver) = mpsc::channel(16);
        sender
            .send(first)
            .await
            .map_err(|_| Error::Protocol("the request stream closed"))?;
        let mut grpc = self.ready().await?;
        let answers = grpc
            .streaming(
                self.request(ReceiverStream::new(receiver)),
                PathAndQuery::from_static(path),
                ProstCodec::default(),
            )
            .await?;
        Ok((sender, answers.into_inner()))
    }

    pub async fn get(&mut self, key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Result<GetResponse> {
        let options = options.unwrap_or_default();
        let key = key.into();
        let request = pb::RangeRequest {
            range_end: options.range.end(&key),
            key,
            revision: options.revision,
            keys_only: options.keys_only,
        };
        Ok(GetResponse(self.unary("/etcdserverpb.KV/Range", request).await?))
    }

    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<()> {
        let request = options.unwrap_or_default().request(key.into(), value.into());
        let _: pb::PutResponse = self.unary("/etcdserverpb.KV/Put", request).await?;
        Ok(())
    }

    pub async fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        Ok(TxnResponse(self.unary("/etcdserverpb.KV/Txn", txn.0).await?))
    }

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

/// Which keys a call covers: one, or all under a prefix.
#[derive(Debug, Clone, Copy, Default)]
enum Range {
    #[default]
    Key,
    Prefix,
}

impl Range {
    /// etcd's `range_end`: empty for one key; for a prefix, the prefix with its last
    /// byte below 0xff raised by one (`\0`, every key, when there is none).
    fn end(self, key: &[u8]) -> Vec<u8> {
        match self {
            Range::Key => Vec::new(),
            Range::Prefix => match key.iter().rposition(|&b| b < 0xff) {
                Some(i) => {
                    let mut end = key[..=i].to_vec();
                    end[i] += 1;
                    end
                }
                None => vec![0],
            },
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    range: Range,
    revision: i64,
    keys_only: bool,
}

impl GetOptions {
    pub fn new() -> GetOptions {
        GetOptions::default()
    }

    pub fn with_prefix(mut self) -> Self {
        self.range = Range::Prefix;
        self
    }

    /// Reads as of this revision (etcd answers an error for a compacted one).
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    lease: i64,
}

impl PutOptions {
    pub fn new() -> PutOptions {
        PutOptions::default()
    }

    /// The key is deleted when this lease ends.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }

    fn request(self, key: Vec<u8>, value: Vec<u8>) -> pb::PutRequest {
        pb::PutRequest {
            key,
            value,
            lease: self.lease,
        }
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

/// How a comparison of a transaction compares (etcd's four; the fleet needs `Equal`).
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal = 0,
    Greater = 1,
    Less = 2,
    NotEqual = 3,
}

/// One comparison of a transaction's `when`.
#[derive(Debug, Clone)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: i32, value: pb::Target) -> Compare {
        Compare(pb::Compare {
            result: op as i32,
            target,
            key: key.into(),
            target_union: Some(value),
        })
    }

    /// The revision that created the key (0: absent).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, 1, pb::Target::CreateRevision(revision))
    }

    /// The revision of the key's last change (compare-and-set writes).
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, 2, pb::Target::ModRevision(revision))
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, options: Option<PutOptions>) -> TxnOp {
        let put = options.unwrap_or_default().request(key.into(), value.into());
        TxnOp(pb::RequestOp {
            request: Some(pb::Request::Put(put)),
        })
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> TxnOp {
        let delete = pb::DeleteRangeRequest {
            key: key.into(),
            range_end: Vec::new(),
        };
        TxnOp(pb::RequestOp {
            request: Some(pb::Request::DeleteRange(delete)),
        })
    }
}

/// A transaction: if every comparison of `when` holds, `and_then` (else nothing);
/// all at one revision.
#[derive(Debug, Clone, Default)]
pub struct Txn(pb::TxnRequest);

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compares: impl Into<Vec<Compare>>) -> Self {
        self.0.compare = compares.into().into_iter().map(|c| c.0).collect();
        self
    }

    pub fn and_then(mut self, ops: impl Into<Vec<TxnOp>>) -> Self {
        self.0.success = ops.into().into_iter().map(|o| o.0).collect();
        self
    }
}

impl ResponseHeader {
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The store's revision when the call was served.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

impl KeyValue {
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn value(&self) -> &[u8] {
        &self.value
    }

    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }

    pub fn mod_revision(&self) -> i64 {
        self.mod_revision
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

#[derive(Debug, Clone)]
pub struct GetResponse(pb::RangeResponse);

impl GetResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.0.header.as_ref()
    }

    pub fn kvs(&self) -> &[KeyValue] {
        &self.0.kvs
    }
}

#[derive(Debug, Clone)]
pub struct TxnResponse(pb::TxnResponse);

impl TxnResponse {
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.0.header.as_ref()
    }

    /// Whether every comparison held (`and_then` ran).
    pub fn succeeded(&self) -> bool {
        self.0.succeeded
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
    use std::sync::Arc;

    use prost::Message as _;

    use super::*;

    #[test]
    fn a_prefix_range_ends_after_the_prefix() {
        assert_eq!(Range::Prefix.end(b"/sg/"), b"/sg0".to_vec());
        assert_eq!(Range::Prefix.end(b"a\xff"), b"b".to_vec());
        assert_eq!(Range::Prefix.end(b"\xff\xff"), vec![0]);
        assert_eq!(Range::Prefix.end(b""), vec![0]);
        assert!(Range::Key.end(b"/sg/").is_empty());
    }

    /// `compare create_revision("k") = 0` then `put("k", "v", lease 7)` on the wire:
    /// the comparison's 0 is sent (a oneof field is, even when 0), EQUAL (0) is not.
    #[test]
    fn a_transaction_is_encoded_as_etcd_reads_it() {
        let txn = Txn::new()
            .when([Compare::create_revision("k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("k", "v", Some(PutOptions::new().with_lease(7)))]);
        let bytes = txn.0.encode_to_vec();
        // compare (1): target CREATE (2: 1), key (3: "k"), create_revision (5: 0);
        // success (2): request_put (2): key (1), value (2), lease (3: 7).
        let expected: &[u8] = &[
            0x0a, 0x07, 0x10, 0x01, 0x1a, 0x01, b'k', 0x28, 0x00, //
            0x12, 0x0a, 0x12, 0x08, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x18, 0x07,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn an_error_says_its_causes_once_without_tonics_wrappers() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let mut status = tonic::Status::unavailable("tcp connect error");
        status.set_source(Arc::new(refused));
        let error = Error::from(status);
        assert_eq!(error.to_string(), "Unavailable: tcp connect error: Connection refused");
    }

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
