//! RecordBatch v2 encoding and decoding. Written here rather than with kafka-protocol's RecordBatchEncoder
//! because that one keeps headers in a map (duplicate keys collapse) and splits batches on sequence numbers;
//! the compression codecs still come from kafka-protocol (whose closures return anyhow results, hence that
//! dependency; it never leaves this module).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::config::Compression;
use crate::error::{Error, Result};
use crate::record::{Header, TimestampType};

/// Bytes before the first record: base offset (8), length (4), leader epoch (4), magic (1), crc (4),
/// attributes (2), last offset delta (4), base and max timestamps (16), producer id (8), epoch (2),
/// base sequence (4), record count (4).
pub const BATCH_OVERHEAD: usize = 61;
const CRC_START: usize = 21;

/// One record to encode, borrowed from wherever the producer keeps it.
pub struct RecordView<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
}

/// An upper bound on a record's encoded size inside a batch (before compression).
pub fn estimate_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    let h: usize = headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10).sum();
    21 + key.map_or(0, |k| k.len()) + value.map_or(0, |v| v.len()) + h
}

/// Producer id, epoch and base sequence of an idempotent producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// A plain (non-idempotent) producer's batch.
    pub const NONE: ProducerStamp = ProducerStamp { producer_id: -1, epoch: -1, base_sequence: -1 };
}

/// Encodes records as one batch with base offset 0 (the broker assigns offsets), no producer id, CreateTime.
pub fn encode(records: &[RecordView<'_>], compression: Compression) -> Result<Bytes> {
    encode_with(records, compression, ProducerStamp::NONE)
}

/// `encode` with an idempotent producer's id, epoch and base sequence.
pub fn encode_with(records: &[RecordView<'_>], compression: Compression, stamp: ProducerStamp) -> Result<Bytes> {
    encode_batch(records, compression, stamp, false)
}

/// `encode_with`, flagged as part of a transaction (attribute bit 4) when `transactional`.
pub fn encode_batch(
    records: &[RecordView<'_>],
    compression: Compression,
    stamp: ProducerStamp,
    transactional: bool,
) -> Result<Bytes> {
    if records.is_empty() {
        return Err(Error::Protocol("empty batch".into()));
    }
    let base_ts = records[0].timestamp;
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let body_size: usize = records.iter().map(|r| estimate_size(r.key, r.value, r.headers)).sum();
    let mut buf = BytesMut::with_capacity(BATCH_OVERHEAD + body_size);
    buf.put_i64(0);
    buf.put_i32(0); // length, patched below
    buf.put_i32(-1); // partition leader epoch: the broker sets it
    buf.put_i8(2);
    buf.put_u32(0); // crc, patched below
    buf.put_i16(compression.attribute() | if transactional { 0x10 } else { 0 });
    buf.put_i32(records.len() as i32 - 1);
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    buf.put_i64(stamp.producer_id);
    buf.put_i16(stamp.epoch);
    buf.put_i32(stamp.base_sequence);
    buf.put_i32(records.len() as i32);
    let write = |out: &mut BytesMut| -> anyhow::Result<()> {
        let mut rec = BytesMut::new();
        for (i, r) in records.iter().enumerate() {
            rec.clear();
            rec.put_i8(0);
            put_varlong(&mut rec, r.timestamp - base_ts);
            put_varint(&mut rec, i as i32);
            put_bytes(&mut rec, r.key);
            put_bytes(&mut rec, r.value);
            put_varint(&mut rec, r.headers.len() as i32);
            for h in r.headers {
                put_bytes(&mut rec, Some(h.key.as_bytes()));
                put_bytes(&mut rec, h.value.as_deref());
            }
            put_varint(out, rec.len() as i32);
            out.put_slice(&rec);
        }
        Ok(())
    };
    let codec_err = |e: anyhow::Error| Error::Protocol(format!("compression: {e}"));
    match compression {
        Compression::None => write(&mut buf).map_err(codec_err)?,
        Compression::Gzip => <Gzip as Compressor<BytesMut>>::compress(&mut buf, |b| write(b)).map_err(codec_err)?,
        Compression::Snappy => <Snappy as Compressor<BytesMut>>::compress(&mut buf, |b| write(b)).map_err(codec_err)?,
        Compression::Lz4 => <Lz4 as Compressor<BytesMut>>::compress(&mut buf, |b| write(b)).map_err(codec_err)?,
        Compression::Zstd => <Zstd as Compressor<BytesMut>>::compress(&mut buf, |b| write(b)).map_err(codec_err)?,
    }
    let len = (buf.len() - 12) as i32;
    buf[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(buf.freeze())
}

/// Rewrites an encoded batch's producer id, epoch and base sequence (and its CRC): a retried batch that was
/// stamped under an epoch since bumped is resent under the new epoch with a new sequence.
pub fn restamp(encoded: &Bytes, stamp: ProducerStamp) -> Bytes {
    let mut buf = BytesMut::from(&encoded[..]);
    buf[43..51].copy_from_slice(&stamp.producer_id.to_be_bytes());
    buf[51..53].copy_from_slice(&stamp.epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone)]
pub struct DecodedBatch {
    pub base_offset: i64,
    /// The offset after this batch: where the next fetch starts, even when all its records are control records.
    pub next_offset: i64,
    pub timestamp_type: TimestampType,
    pub control: bool,
    pub transactional: bool,
    pub producer_id: i64,
    /// For a control batch: what its marker says (the key of its one control record).
    pub control_type: Option<ControlType>,
    pub records: Vec<DecodedRecord>,
}

/// A transaction marker's type (the control record key's `type` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Other control records (e.g. KRaft's); consumers skip them like markers.
    Other(i16),
}

/// Decodes every complete batch in `data`; a partial batch at the end (the broker cuts at max bytes) is ignored.
pub fn decode_all(mut data: Bytes, check_crc: bool) -> Result<Vec<DecodedBatch>> {
    let mut out = Vec::new();
    while data.len() >= 12 {
        let len = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if len < 0 {
            return Err(Error::Protocol(format!("negative batch length {len}")));
        }
        let total = 12 + len as usize;
        if data.len() < total {
            break;
        }
        let batch = data.split_to(total);
        out.push(decode_batch(batch, check_crc)?);
    }
    Ok(out)
}

fn decode_batch(batch: Bytes, check_crc: bool) -> Result<DecodedBatch> {
    if batch.len() < BATCH_OVERHEAD {
        return Err(Error::Protocol("record batch shorter than its header".into()));
    }
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(Error::Protocol(format!("record batch magic {magic} (only v2 is supported)")));
    }
    let mut h = &batch[..BATCH_OVERHEAD];
    let base_offset = h.get_i64();
    h.advance(4 + 4 + 1);
    let crc = h.get_u32();
    if check_crc && crc32c::crc32c(&batch[CRC_START..]) != crc {
        return Err(Error::Protocol(format!("CRC mismatch in the batch at offset {base_offset}")));
    }
    let attributes = h.get_i16();
    let last_delta = h.get_i32();
    let base_ts = h.get_i64();
    let max_ts = h.get_i64();
    let producer_id = h.get_i64();
    h.advance(2 + 4);
    let count = h.get_i32();
    let timestamp_type = if attributes & 0x08 != 0 { TimestampType::LogAppendTime } else { TimestampType::CreateTime };
    let control = attributes & 0x20 != 0;
    let transactional = attributes & 0x10 != 0;
    let mut body = batch.slice(BATCH_OVERHEAD..);
    let codec_err = |e: anyhow::Error| Error::Protocol(format!("decompression: {e}"));
    let take = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.copy_to_bytes(b.remaining())) };
    body = match attributes & 0x07 {
        0 => body,
        1 => <Gzip as Decompressor<Bytes>>::decompress(&mut body, take).map_err(codec_err)?,
        2 => <Snappy as Decompressor<Bytes>>::decompress(&mut body, take).map_err(codec_err)?,
        3 => <Lz4 as Decompressor<Bytes>>::decompress(&mut body, take).map_err(codec_err)?,
        4 => <Zstd as Decompressor<Bytes>>::decompress(&mut body, take).map_err(codec_err)?,
        c => return Err(Error::Protocol(format!("unknown compression codec {c}"))),
    };
    let mut records = Vec::with_capacity(count.max(0) as usize);
    let mut control_type = None;
    if control {
        // The control record's key is (version: int16, type: int16): 0 = ABORT, 1 = COMMIT.
        if let Some(r) = decode_record(&mut body, base_offset, base_ts) {
            control_type = r.key.filter(|k| k.len() >= 4).map(|k| match i16::from_be_bytes([k[2], k[3]]) {
                0 => ControlType::Abort,
                1 => ControlType::Commit,
                t => ControlType::Other(t),
            });
        }
    } else {
        for _ in 0..count {
            let r = decode_record(&mut body, base_offset, base_ts)
                .ok_or_else(|| Error::Protocol(format!("truncated record in the batch at offset {base_offset}")))?;
            records.push(r);
        }
        if timestamp_type == TimestampType::LogAppendTime {
            for r in &mut records {
                r.timestamp = max_ts;
            }
        }
    }
    Ok(DecodedBatch {
        base_offset,
        next_offset: base_offset + last_delta as i64 + 1,
        timestamp_type,
        control,
        transactional,
        producer_id,
        control_type,
        records,
    })
}

fn decode_record(b: &mut Bytes, base_offset: i64, base_ts: i64) -> Option<DecodedRecord> {
    let len = get_varint(b)?;
    if len < 0 || b.len() < len as usize {
        return None;
    }
    let mut r = b.split_to(len as usize);
    if r.is_empty() {
        return None;
    }
    r.advance(1); // attributes: unused in v2
    let ts_delta = get_varlong(&mut r)?;
    let offset_delta = get_varint(&mut r)?;
    let key = get_bytes(&mut r)?;
    let value = get_bytes(&mut r)?;
    let n = get_varint(&mut r)?;
    let mut headers = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let k = get_bytes(&mut r)??;
        let v = get_bytes(&mut r)?;
        headers.push(Header { key: String::from_utf8_lossy(&k).into_owned(), value: v });
    }
    Some(DecodedRecord {
        offset: base_offset + offset_delta as i64,
        timestamp: base_ts + ts_delta,
        key,
        value,
        headers,
    })
}

fn put_varint(b: &mut BytesMut, v: i32) {
    put_unsigned(b, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

fn put_varlong(b: &mut BytesMut, v: i64) {
    put_unsigned(b, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_unsigned(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_bytes(b: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(b, -1),
        Some(v) => {
            put_varint(b, v.len() as i32);
            b.put_slice(v);
        }
    }
}

fn get_unsigned(b: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        if b.is_empty() {
            return None;
        }
        let byte = b.get_u8();
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn get_varint(b: &mut Bytes) -> Option<i32> {
    let u = get_unsigned(b)? as u32;
    Some(((u >> 1) as i32) ^ -((u & 1) as i32))
}

fn get_varlong(b: &mut Bytes) -> Option<i64> {
    let u = get_unsigned(b)?;
    Some(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// `Some(None)` for a null (-1 length) field, `None` when the bytes run out.
fn get_bytes(b: &mut Bytes) -> Option<Option<Bytes>> {
    let len = get_varint(b)?;
    if len < 0 {
        return Some(None);
    }
    if b.len() < len as usize {
        return None;
    }
    Some(Some(b.split_to(len as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<Header> {
        vec![
            Header { key: "h".into(), value: Some(Bytes::from_static(b"1")) },
            Header { key: "h".into(), value: Some(Bytes::from_static(b"2")) },
            Header { key: "null".into(), value: None },
        ]
    }

    #[test]
    fn round_trip_with_every_codec_keeps_duplicate_headers_and_timestamps() {
        let hs = headers();
        let big = vec![7u8; 5000];
        let recs = [
            RecordView { timestamp: 1_000, key: Some(b"k1"), value: Some(b"v1"), headers: &hs },
            RecordView { timestamp: 999, key: None, value: None, headers: &[] },
            RecordView { timestamp: 2_000, key: Some(b""), value: Some(&big), headers: &[] },
        ];
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&recs, c).unwrap();
            // kafka-protocol's decoder agrees on framing and CRC.
            let mut check = bytes.clone();
            kafka_protocol::records::RecordBatchDecoder::decode(&mut check).unwrap();
            let batches = decode_all(bytes, true).unwrap();
            assert_eq!(batches.len(), 1);
            let b = &batches[0];
            assert_eq!((b.base_offset, b.next_offset), (0, 3));
            let r = &b.records;
            assert_eq!(r.len(), 3, "{c:?}");
            assert_eq!(r[0].headers, hs);
            assert_eq!((r[0].timestamp, r[1].timestamp, r[2].timestamp), (1_000, 999, 2_000));
            assert_eq!((r[1].key.clone(), r[1].value.clone()), (None, None));
            assert_eq!(r[2].key.as_deref(), Some(&b""[..]));
            assert_eq!(r[2].value.as_deref(), Some(&big[..]));
            assert_eq!(r[2].offset, 2);
        }
    }

    #[test]
    fn partial_trailing_batch_is_ignored_and_crc_is_checked() {
        let one = encode(&[RecordView { timestamp: 1, key: None, value: Some(b"x"), headers: &[] }], Compression::None)
            .unwrap();
        let mut two = BytesMut::from(&one[..]);
        two.put_slice(&one[..one.len() - 3]);
        assert_eq!(decode_all(two.freeze(), true).unwrap().len(), 1);
        let mut bad = BytesMut::from(&one[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(decode_all(bad.freeze(), true).is_err());
    }

    #[test]
    fn restamped_transactional_batch_keeps_its_records_and_a_valid_crc() {
        let recs = [RecordView { timestamp: 5, key: Some(b"k"), value: Some(b"v"), headers: &[] }];
        let stamp = ProducerStamp { producer_id: 9, epoch: 1, base_sequence: 4 };
        let bytes = encode_batch(&recs, Compression::Lz4, stamp, true).unwrap();
        let new = ProducerStamp { producer_id: 9, epoch: 2, base_sequence: 0 };
        let again = restamp(&bytes, new);
        let mut check = again.clone();
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut check).unwrap();
        let r = &decoded.records[0];
        assert!(r.transactional);
        assert_eq!((r.producer_id, r.producer_epoch, r.sequence), (9, 2, 0));
        let b = &decode_all(again, true).unwrap()[0];
        assert!(b.transactional && !b.control);
        assert_eq!(b.records[0].value.as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn varints_match_kafka_zigzag() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, i32::MAX as i64, i64::MIN, i64::MAX] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(get_varlong(&mut b.freeze()), Some(v));
        }
        let mut b = BytesMut::new();
        put_varint(&mut b, -1);
        assert_eq!(&b[..], &[1]);
    }
}
