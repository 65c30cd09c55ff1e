//! The checks Kafka's LogValidator makes on a produced record set beyond what strom-log checks (batch framing,
//! size, CRC): exactly one batch with base offset 0 per partition (produce v3+), every record well formed —
//! decompressed for compressed batches, so a batch whose codec flag lies is refused instead of breaking every
//! consumer of the partition — consecutive inner offsets, and record timestamps within the topic's bounds.

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::ResponseError;
use strom_log::{BatchHeader, TimestampType, HEADER_SIZE};

use crate::config::TopicConfig;

/// A refused record set: the partition's error, its message, and per-record errors (index in the batch).
#[derive(Debug)]
pub struct Rejection {
    pub error: ResponseError,
    pub message: String,
    pub record_errors: Vec<(i32, String)>,
}

impl Rejection {
    fn invalid(message: impl Into<String>) -> Self {
        Rejection { error: ResponseError::InvalidRecord, message: message.into(), record_errors: Vec::new() }
    }
}

/// `records` is the partition's record set, `headers` what `strom_log::validate_batches` returned for it.
pub fn validate(records: &[u8], headers: &[BatchHeader], config: &TopicConfig, now: i64) -> Result<(), Rejection> {
    let [header] = headers else {
        return Err(Rejection::invalid(
            "Produce requests with version 3 or later must contain exactly one record batch per partition",
        ));
    };
    if header.base_offset != 0 {
        return Err(Rejection::invalid(format!(
            "The baseOffset of the record batch in the append should be 0, but it is {}",
            header.base_offset
        )));
    }
    let stored = &records[HEADER_SIZE..header.total_size()];
    // Uncompressed records are walked in place (the produce hot path); only compressed ones need a buffer.
    let decompressed;
    let body: &[u8] = match header.compression() {
        0 => stored,
        codec => {
            decompressed = decompress(codec, stored).map_err(|e| Rejection {
                error: ResponseError::CorruptMessage,
                message: e,
                record_errors: Vec::new(),
            })?;
            &decompressed
        }
    };
    let check_time = header.timestamp_type() == TimestampType::CreateTime
        && config.log.message_timestamp_type == TimestampType::CreateTime;
    let (low, high) =
        (now.saturating_sub(config.timestamp_before_max_ms), now.saturating_add(config.timestamp_after_max_ms));
    let mut reader = Reader { buf: body, pos: 0 };
    let mut record_errors = Vec::new();
    let mut keyless = Vec::new();
    for index in 0..header.record_count {
        let (ts_delta, has_key) = read_record(&mut reader, index).map_err(Rejection::invalid)?;
        // A compacted topic keeps the latest record per key, so every record needs one (Kafka's validateKey).
        if config.log.cleanup_policy.compact && !has_key && !header.is_control() {
            keyless.push((index, "Compacted topic cannot accept message without key".to_string()));
        }
        let ts = header.base_timestamp.saturating_add(ts_delta);
        if check_time && (ts < low || ts > high) {
            record_errors.push((
                index,
                format!("Timestamp {ts} of message with offset {index} is out of range. The timestamp should be within [{low}, {high}]"),
            ));
        }
    }
    if reader.pos != body.len() {
        return Err(Rejection::invalid(format!(
            "{} bytes after the last of {} records",
            body.len() - reader.pos,
            header.record_count
        )));
    }
    // As Kafka's processRecordErrors: any timestamp error makes it INVALID_TIMESTAMP, else INVALID_RECORD.
    if !keyless.is_empty() && record_errors.is_empty() {
        return Err(Rejection {
            error: ResponseError::InvalidRecord,
            message: "One or more records have been rejected: Compacted topic cannot accept message without key".into(),
            record_errors: keyless,
        });
    }
    if !record_errors.is_empty() {
        record_errors.extend(keyless);
        record_errors.sort_by_key(|(i, _)| *i);
        return Err(Rejection {
            error: ResponseError::InvalidTimestamp,
            message: "One or more records have been rejected due to invalid timestamp".into(),
            record_errors,
        });
    }
    Ok(())
}

fn decompress(codec: u8, body: &[u8]) -> Result<Bytes, String> {
    let mut input = Bytes::copy_from_slice(body);
    let take = |b: &mut Bytes| Ok(std::mem::take(b));
    let out = match codec {
        1 => Gzip::decompress(&mut input, take),
        2 => Snappy::decompress(&mut input, take),
        3 => Lz4::decompress(&mut input, take),
        4 => Zstd::decompress(&mut input, take),
        other => return Err(format!("unknown compression codec {other}")),
    };
    out.map_err(|e| format!("Failed to decompress the record batch (codec {codec}): {e:#}"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varlong(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("record truncated inside a varint")?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                // Zigzag decoding, as Kafka's varints are signed.
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| format!("varint {v} out of int range"))
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.buf.len() - self.pos < n {
            return Err("record field runs past the end of its record".into());
        }
        self.pos += n;
        Ok(())
    }

    /// A nullable length-prefixed field (-1 is null); returns whether it was present.
    fn bytes_field(&mut self, what: &str, nullable: bool) -> Result<bool, String> {
        let len = self.varint()?;
        match len {
            -1 if nullable => Ok(false),
            n if n >= 0 => self.skip(n as usize).map(|()| true),
            n => Err(format!("invalid {what} length {n}")),
        }
    }
}

/// Walks one record (Kafka's v2 record format); returns its timestamp delta and whether it has a key.
fn read_record(r: &mut Reader, index: i32) -> Result<(i64, bool), String> {
    let len = r.varint()?;
    if len < 0 || (len as usize) > r.buf.len() - r.pos {
        return Err(format!("record {index} has invalid length {len}"));
    }
    let end = r.pos + len as usize;
    let mut rec = Reader { buf: &r.buf[..end], pos: r.pos };
    rec.skip(1)?; // attributes (unused in v2)
    let ts_delta = rec.varlong()?;
    let offset_delta = rec.varint()?;
    if offset_delta != index {
        return Err(format!(
            "Inner record {index} has offset delta {offset_delta}; inner offsets must be consecutive from 0"
        ));
    }
    let has_key = rec.bytes_field("key", true)?;
    rec.bytes_field("value", true)?;
    let headers = rec.varint()?;
    if headers < 0 {
        return Err(format!("record {index} has invalid header count {headers}"));
    }
    for _ in 0..headers {
        rec.bytes_field("header key", false)?;
        rec.bytes_field("header value", true)?;
    }
    if rec.pos != end {
        return Err(format!("record {index} has {} bytes beyond its fields", end - rec.pos));
    }
    r.pos = end;
    Ok((ts_delta, has_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

    fn batch(compression: Compression, ts: i64) -> Vec<u8> {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: ts + i,
                key: Some(Bytes::from_static(b"k")),
                value: if i == 1 { None } else { Some(Bytes::from(vec![7u8; 100])) },
                headers: [(kafka_protocol::protocol::StrBytes::from_static_str("h"), None)].into_iter().collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf.to_vec()
    }

    fn config() -> TopicConfig {
        TopicConfig::resolve(&crate::BrokerConfig::default(), &Default::default())
    }

    fn check(b: &[u8], now: i64) -> Result<(), Rejection> {
        let headers = strom_log::validate_batches(b, u32::MAX).unwrap();
        validate(b, &headers, &config(), now)
    }

    #[test]
    fn accepts_every_codec() {
        let now = 1_700_000_000_000;
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            check(&batch(c, now), now).unwrap();
        }
    }

    #[test]
    fn refuses_a_lying_codec_flag_and_future_timestamps() {
        let now = 1_700_000_000_000;
        let mut b = batch(Compression::None, now);
        b[22] |= 1; // attributes low byte: claim gzip
        let crc = strom_log::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&b, now).unwrap_err().error, ResponseError::CorruptMessage);
        let r = check(&batch(Compression::Lz4, now + 2 * 3_600_000), now).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        assert_eq!(r.record_errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn compacted_topics_refuse_keyless_records() {
        let now = 1_700_000_000_000;
        let mut overrides = std::collections::BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        let compact = TopicConfig::resolve(&crate::BrokerConfig::default(), &overrides);
        let keyed = batch(Compression::Gzip, now);
        let headers = strom_log::validate_batches(&keyed, u32::MAX).unwrap();
        validate(&keyed, &headers, &compact, now).unwrap();
        let records: Vec<Record> = (0..2)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kafka_protocol::records::TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: now,
                key: (i == 0).then(|| Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions { version: 2, compression: Compression::Zstd };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).unwrap();
        let headers = strom_log::validate_batches(&buf, u32::MAX).unwrap();
        let r = validate(&buf, &headers, &compact, now).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidRecord);
        assert_eq!(r.record_errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1]);
        validate(&buf, &headers, &config(), now).unwrap();
    }

    #[test]
    fn refuses_nonzero_base_offset_and_two_batches() {
        let now = 1_700_000_000_000;
        let mut b = batch(Compression::None, now);
        b[7] = 7;
        assert_eq!(check(&b, now).unwrap_err().error, ResponseError::InvalidRecord);
        let mut two = batch(Compression::None, now);
        two.extend(batch(Compression::None, now));
        assert_eq!(check(&two, now).unwrap_err().error, ResponseError::InvalidRecord);
    }
}
