//! The part of etcd's v3 gRPC API the fleet uses, over tonic: KV (Range, Put, Txn with
//! puts and deletes), Watch, Lease (LeaseGrant, LeaseKeepAlive) and Auth
//! (Authenticate). The messages are written out with prost's derive (`pb`), with the
//! field numbers of etcd's `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto`
//! (frozen by etcd's v3 compatibility promise); fields the fleet does not need are
//! left out, and protobuf skips them on the wire. So the build needs no `protoc` and
//! no build script. The surface follows the `etcd-client` crate's (which this module
//! replaced), so the fleet's code reads as it did: `client` connects and calls, `kv`,
//! `lease` and `watch` are the three services, `error` what a call fails with. Only
//! the names the fleet writes are re-exported here; the answers' types come with the
//! calls.
//!
//! The module depends on nothing else in the crate: `tests/fleet.rs` includes it to
//! write to a real etcd the way a member does.

mod client;
mod error;
mod kv;
mod lease;
/// The messages, as etcd's protos define them (a subset of the fields).
mod pb;
mod watch;

pub use client::{Client, ConnectOptions};
pub use error::Error;
pub use kv::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
pub use lease::{LeaseKeepAliveStream, LeaseKeeper};
pub use pb::{Event, KeyValue};
pub use tonic::transport::{Certificate, ClientTlsConfig as TlsOptions, Identity};
pub use watch::{EventType, WatchOptions, WatchResponse};
