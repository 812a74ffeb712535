//! etcd's KV service: reads of a key or a prefix (at a revision), puts (under a
//! lease), and transactions of puts and deletes guarded by revision comparisons; the
//! accessors of the keys and headers etcd answers with.

use super::client::Client;
use super::error::Result;
use super::pb::{self, KeyValue, ResponseHeader};

impl Client {
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
}

/// Which keys a call covers: one, or all under a prefix.
#[derive(Debug, Clone, Copy, Default)]
pub(super) enum Range {
    #[default]
    Key,
    Prefix,
}

impl Range {
    /// etcd's `range_end`: empty for one key; for a prefix, the prefix with its last
    /// byte below 0xff raised by one (`\0`, every key, when there is none).
    pub(super) fn end(self, key: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
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
}
