//! The records of `__transaction_state`, in Kafka's schemas (kafka-protocol has no generated types for them):
//! TransactionLogKey (version 0: the transactional id) and TransactionLogValue versions 0 and 1. Version 1 is
//! flexible: compact strings and arrays, and tagged fields for the KIP-890 producer ids (tags 0, 1) and the client's
//! transaction version (tag 2). A null value is a tombstone (the transactional id expired).
//!
//! Kafka writes version 1 when the transaction uses transactions version 2 (its tagged fields only matter then) and
//! version 0 otherwise; both are read.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
#[error("malformed __transaction_state record: {0}")]
pub struct RecordError(pub String);

/// Kafka's TransactionState, with the byte ids it writes to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// The transactional id is being expired (written as a tombstone, never as a value).
    Dead,
    /// In memory only: the epoch is being bumped to fence a producer; persisted as PrepareAbort.
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The names DescribeTransactions and ListTransactions use (Kafka's TransactionState.name).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
            TxnState::Dead,
            TxnState::PrepareEpochFence,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The states a transition to `self` may start from (Kafka's validPreviousStates).
    pub fn valid_previous_states(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence, Empty, CompleteCommit, CompleteAbort],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }
}

/// A transaction's record value (TransactionLogValue).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionLogValue {
    pub producer_id: i64,
    /// KIP-890 (tag 0): the producer id before the last rotation.
    pub previous_producer_id: i64,
    /// KIP-890 (tag 1): the producer id a transaction ending with an exhausted epoch moves to.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub transaction_timeout_ms: i32,
    pub state: TxnState,
    /// topic → partitions; Kafka writes null in the Empty state and an array otherwise.
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
    pub last_update_timestamp_ms: i64,
    pub start_timestamp_ms: i64,
    /// Tag 2: the transaction version the client used (0/1: classic, 2: KIP-890 part 2).
    pub client_transaction_version: i16,
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + transactional_id.len());
    buf.put_i16(0);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Result<String, RecordError> {
    let r = &mut b;
    match get_i16(r)? {
        0 => get_string(r),
        v => Err(RecordError(format!("unknown TransactionLogKey version {v}"))),
    }
}

impl TransactionLogValue {
    pub fn encode(&self) -> Bytes {
        let flexible = self.client_transaction_version >= 2;
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i16(if flexible { 1 } else { 0 });
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.transaction_timeout_ms);
        buf.put_i8(self.state.id());
        // As Kafka's TransactionLog: null partitions in the Empty state, an array (maybe empty) otherwise.
        let empty = self.state == TxnState::Empty;
        if flexible {
            if empty {
                put_uvarint(&mut buf, 0); // null compact array
            } else {
                put_uvarint(&mut buf, self.partitions.len() as u32 + 1);
                for (topic, parts) in &self.partitions {
                    put_uvarint(&mut buf, topic.len() as u32 + 1);
                    buf.put_slice(topic.as_bytes());
                    put_uvarint(&mut buf, parts.len() as u32 + 1);
                    for p in parts {
                        buf.put_i32(*p);
                    }
                    put_uvarint(&mut buf, 0); // no tagged fields in the partition struct
                }
            }
        } else if empty {
            buf.put_i32(-1);
        } else {
            buf.put_i32(self.partitions.len() as i32);
            for (topic, parts) in &self.partitions {
                put_string(&mut buf, topic);
                buf.put_i32(parts.len() as i32);
                for p in parts {
                    buf.put_i32(*p);
                }
            }
        }
        buf.put_i64(self.last_update_timestamp_ms);
        buf.put_i64(self.start_timestamp_ms);
        if flexible {
            // Tagged fields in tag order, each only when it differs from its default.
            let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
            if self.previous_producer_id != -1 {
                tags.push((0, self.previous_producer_id.to_be_bytes().to_vec()));
            }
            if self.next_producer_id != -1 {
                tags.push((1, self.next_producer_id.to_be_bytes().to_vec()));
            }
            if self.client_transaction_version != 0 {
                tags.push((2, self.client_transaction_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut buf, tags.len() as u32);
            for (tag, data) in tags {
                put_uvarint(&mut buf, tag);
                put_uvarint(&mut buf, data.len() as u32);
                buf.put_slice(&data);
            }
        }
        buf.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<TransactionLogValue, RecordError> {
        let r = &mut b;
        let version = get_i16(r)?;
        if !(0..=1).contains(&version) {
            return Err(RecordError(format!("unknown TransactionLogValue version {version}")));
        }
        let flexible = version >= 1;
        let producer_id = get_i64(r)?;
        let producer_epoch = get_i16(r)?;
        let transaction_timeout_ms = get_i32(r)?;
        let state_id = get_i8(r)?;
        let state =
            TxnState::from_id(state_id).ok_or_else(|| RecordError(format!("unknown transaction state {state_id}")))?;
        let mut partitions = BTreeMap::new();
        let count: i64 = if flexible { get_uvarint(r)? as i64 - 1 } else { get_i32(r)? as i64 };
        for _ in 0..count.max(0) {
            let topic = if flexible {
                let len = get_uvarint(r)? as usize;
                get_utf8(r, len.saturating_sub(1))?
            } else {
                get_string(r)?
            };
            let n: i64 = if flexible { get_uvarint(r)? as i64 - 1 } else { get_i32(r)? as i64 };
            let mut set = BTreeSet::new();
            for _ in 0..n.max(0) {
                set.insert(get_i32(r)?);
            }
            if flexible {
                skip_tagged_fields(r)?;
            }
            partitions.entry(topic).or_insert_with(BTreeSet::new).extend(set);
        }
        let last_update_timestamp_ms = get_i64(r)?;
        let start_timestamp_ms = get_i64(r)?;
        let mut v = TransactionLogValue {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            transaction_timeout_ms,
            state,
            partitions,
            last_update_timestamp_ms,
            start_timestamp_ms,
            client_transaction_version: 0,
        };
        if flexible {
            let n = get_uvarint(r)?;
            for _ in 0..n {
                let tag = get_uvarint(r)?;
                let size = get_uvarint(r)? as usize;
                if r.remaining() < size {
                    return Err(RecordError("truncated tagged field".into()));
                }
                let mut data = &r[..size];
                match tag {
                    0 => v.previous_producer_id = get_i64(&mut data)?,
                    1 => v.next_producer_id = get_i64(&mut data)?,
                    2 => v.client_transaction_version = get_i16(&mut data)?,
                    _ => {}
                }
                r.advance(size);
            }
        }
        Ok(v)
    }
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let n = s.len().min(i16::MAX as usize);
    buf.put_i16(n as i16);
    buf.put_slice(&s.as_bytes()[..n]);
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn need(r: &[u8], n: usize) -> Result<(), RecordError> {
    if r.remaining() < n {
        Err(RecordError("truncated".into()))
    } else {
        Ok(())
    }
}

fn get_i8(r: &mut &[u8]) -> Result<i8, RecordError> {
    need(r, 1)?;
    Ok(r.get_i8())
}

fn get_i16(r: &mut &[u8]) -> Result<i16, RecordError> {
    need(r, 2)?;
    Ok(r.get_i16())
}

fn get_i32(r: &mut &[u8]) -> Result<i32, RecordError> {
    need(r, 4)?;
    Ok(r.get_i32())
}

fn get_i64(r: &mut &[u8]) -> Result<i64, RecordError> {
    need(r, 8)?;
    Ok(r.get_i64())
}

fn get_uvarint(r: &mut &[u8]) -> Result<u32, RecordError> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        let b = get_i8(r)? as u8;
        v |= ((b & 0x7f) as u32) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(RecordError("varint too long".into()))
}

fn get_utf8(r: &mut &[u8], len: usize) -> Result<String, RecordError> {
    need(r, len)?;
    let s = std::str::from_utf8(&r[..len]).map_err(|e| RecordError(e.to_string()))?.to_string();
    r.advance(len);
    Ok(s)
}

fn get_string(r: &mut &[u8]) -> Result<String, RecordError> {
    let len = get_i16(r)?;
    if len < 0 {
        return Err(RecordError("null string".into()));
    }
    get_utf8(r, len as usize)
}

fn skip_tagged_fields(r: &mut &[u8]) -> Result<(), RecordError> {
    let n = get_uvarint(r)?;
    for _ in 0..n {
        get_uvarint(r)?;
        let size = get_uvarint(r)? as usize;
        need(r, size)?;
        r.advance(size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(tv: i16) -> TransactionLogValue {
        let mut partitions = BTreeMap::new();
        partitions.insert("orders".to_string(), BTreeSet::from([0, 3]));
        partitions.insert("__consumer_offsets".to_string(), BTreeSet::from([12]));
        TransactionLogValue {
            producer_id: 1001,
            previous_producer_id: if tv >= 2 { 1000 } else { -1 },
            next_producer_id: -1,
            producer_epoch: 7,
            transaction_timeout_ms: 60000,
            state: TxnState::Ongoing,
            partitions,
            last_update_timestamp_ms: 1_700_000_000_123,
            start_timestamp_ms: 1_700_000_000_000,
            client_transaction_version: tv,
        }
    }

    #[test]
    fn key_is_version_0_and_the_id() {
        let k = encode_key("tx-1");
        assert_eq!(&k[..], &[0, 0, 0, 4, b't', b'x', b'-', b'1']);
        assert_eq!(decode_key(&k).unwrap(), "tx-1");
        assert!(decode_key(&[0, 1, 0, 0]).is_err());
    }

    #[test]
    fn value_v0_layout_matches_kafka() {
        let mut v = value(0);
        v.partitions.clear();
        v.state = TxnState::Empty;
        let b = v.encode();
        let mut expected = vec![0u8, 0];
        expected.extend(1001i64.to_be_bytes());
        expected.extend(7i16.to_be_bytes());
        expected.extend(60000i32.to_be_bytes());
        expected.push(0);
        expected.extend((-1i32).to_be_bytes()); // null partitions
        expected.extend(1_700_000_000_123i64.to_be_bytes());
        expected.extend(1_700_000_000_000i64.to_be_bytes());
        assert_eq!(&b[..], &expected[..]);
        assert_eq!(TransactionLogValue::decode(&b).unwrap(), v);
    }

    #[test]
    fn values_round_trip_in_both_versions() {
        for tv in [0, 2] {
            let v = value(tv);
            let b = v.encode();
            assert_eq!(i16::from_be_bytes([b[0], b[1]]), if tv >= 2 { 1 } else { 0 });
            assert_eq!(TransactionLogValue::decode(&b).unwrap(), v);
        }
        let mut v = value(2);
        v.next_producer_id = 5000;
        v.partitions.clear();
        assert_eq!(TransactionLogValue::decode(&v.encode()).unwrap(), v);
    }

    #[test]
    fn unknown_tags_are_skipped_and_garbage_is_an_error() {
        let mut b = BytesMut::from(&value(2).encode()[..]);
        // Replace the tag section: 3 known tags, re-encoded with an extra unknown tag 9 in front.
        let v = TransactionLogValue::decode(&b).unwrap();
        let body_len = b.len() - (1 + (1 + 1 + 8) + (1 + 1 + 2));
        b.truncate(body_len);
        b.put_u8(3);
        b.put_u8(0);
        b.put_u8(8);
        b.put_i64(1000);
        b.put_u8(2);
        b.put_u8(2);
        b.put_i16(2);
        b.put_u8(9);
        b.put_u8(1);
        b.put_u8(0xff);
        assert_eq!(TransactionLogValue::decode(&b).unwrap(), v);
        assert!(TransactionLogValue::decode(&[0, 0, 1]).is_err());
        assert!(TransactionLogValue::decode(&[0, 7]).is_err());
    }
}
