//! Control batches: the COMMIT and ABORT transaction markers (Kafka's `EndTransactionMarker`). A marker is a batch
//! with the control and transactional attribute bits, the producer's id and epoch, and one record whose key is
//! (version 0, type: 0 abort, 1 commit) and whose value is (version 0, coordinator epoch).

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::error::LogError;
use crate::records;

const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// KIP-534: the batch's base timestamp is its delete horizon (set by the cleaner on markers it may remove).
const DELETE_HORIZON_BIT: i16 = 0x40;
const ATTRIBUTES_POS: usize = 21;
const BASE_TIMESTAMP_POS: usize = 27;
const ABORT_TYPE: i16 = 0;
const COMMIT_TYPE: i16 = 1;

/// Whether a transaction's data counts (COMMIT) or is to be skipped by read_committed consumers (ABORT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub control_type: ControlType,
    pub coordinator_epoch: i32,
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A complete, CRC'd marker batch (base offset 0, to be stamped by the append).
pub(crate) fn marker_batch(producer_id: i64, producer_epoch: i16, marker: EndTxnMarker, timestamp: i64) -> Vec<u8> {
    let kind = match marker.control_type {
        ControlType::Abort => ABORT_TYPE,
        ControlType::Commit => COMMIT_TYPE,
    };
    let mut key = Vec::with_capacity(4);
    key.extend(0i16.to_be_bytes());
    key.extend(kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend(0i16.to_be_bytes());
    value.extend(marker.coordinator_epoch.to_be_bytes());
    let mut body = vec![0u8]; // record attributes
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, key.len() as i64);
    body.extend(&key);
    put_varint(&mut body, value.len() as i64);
    body.extend(&value);
    put_varint(&mut body, 0); // headers
    let mut record = Vec::with_capacity(body.len() + 2);
    put_varint(&mut record, body.len() as i64);
    record.extend(body);

    let mut b = Vec::with_capacity(HEADER_SIZE + record.len());
    b.extend(0i64.to_be_bytes());
    b.extend(((HEADER_SIZE - 12 + record.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes()); // partition leader epoch, stamped on append
    b.push(2); // magic
    b.extend([0u8; 4]); // crc
    b.extend((TRANSACTIONAL_BIT | CONTROL_BIT).to_be_bytes());
    b.extend(0i32.to_be_bytes()); // last offset delta
    b.extend(timestamp.to_be_bytes());
    b.extend(timestamp.to_be_bytes());
    b.extend(producer_id.to_be_bytes());
    b.extend(producer_epoch.to_be_bytes());
    b.extend((-1i32).to_be_bytes()); // base sequence
    b.extend(1i32.to_be_bytes()); // record count
    b.extend(record);
    let crc = crate::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The marker a control batch holds; `None` for other control records (Kafka also has LEADER_CHANGE and
/// snapshot records, which are not transaction markers).
pub(crate) fn parse_marker(batch: &[u8], h: &BatchHeader) -> Result<Option<EndTxnMarker>, LogError> {
    if !h.is_control() {
        return Ok(None);
    }
    let section = records::section(batch, h, records::stored_limit(h, 0))?;
    let recs = records::parse(&section, h.record_count)?;
    let Some(r) = recs.first() else { return Ok(None) };
    let bad = || LogError::CorruptMessage(format!("malformed control record at offset {}", h.base_offset));
    let key = r.key.ok_or_else(bad)?;
    if key.len() < 4 {
        return Err(bad());
    }
    let control_type = match i16::from_be_bytes([key[2], key[3]]) {
        ABORT_TYPE => ControlType::Abort,
        COMMIT_TYPE => ControlType::Commit,
        _ => return Ok(None),
    };
    let value = r.value.ok_or_else(bad)?;
    if value.len() < 6 {
        return Err(bad());
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Ok(Some(EndTxnMarker { control_type, coordinator_epoch }))
}

/// The delete horizon the cleaner stamped on a batch, if any.
pub(crate) fn delete_horizon(h: &BatchHeader) -> Option<i64> {
    (h.attributes & DELETE_HORIZON_BIT != 0).then_some(h.base_timestamp)
}

/// The batch with its delete horizon set (Kafka writes it as the base timestamp, with attribute bit 6).
pub(crate) fn with_delete_horizon(batch: &[u8], horizon: i64) -> Vec<u8> {
    let mut out = batch.to_vec();
    let attributes = i16::from_be_bytes([out[ATTRIBUTES_POS], out[ATTRIBUTES_POS + 1]]) | DELETE_HORIZON_BIT;
    out[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    out[BASE_TIMESTAMP_POS..BASE_TIMESTAMP_POS + 8].copy_from_slice(&horizon.to_be_bytes());
    let crc = crate::batch::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batches;

    #[test]
    fn markers_round_trip() {
        for control_type in [ControlType::Abort, ControlType::Commit] {
            let m = EndTxnMarker { control_type, coordinator_epoch: 7 };
            let b = marker_batch(42, 3, m, 1_000);
            let h = validate_batches(&b, u32::MAX).unwrap()[0];
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.record_count), (42, 3, 1));
            assert_eq!(parse_marker(&b, &h).unwrap(), Some(m));
        }
    }
}
