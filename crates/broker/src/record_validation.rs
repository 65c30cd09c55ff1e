//! The checks Kafka's LogValidator makes on a produced record set beyond what strom-log checks (batch framing,
//! size, CRC): exactly one batch with base offset 0 per partition (produce v3+), every record well formed —
//! decompressed for compressed batches, so a batch whose codec flag lies is refused instead of breaking every
//! consumer of the partition — consecutive inner offsets, and record timestamps within the topic's bounds.
//! Records are walked as a stream (`strom_log::RecordWalker`) with a limit on the decompressed bytes
//! (`strom_log::decompressed_limit`), so a decompression bomb costs neither memory nor much time.

use kafka_protocol::ResponseError;
use strom_log::{BatchHeader, LogError, RecordWalker, TimestampType};

use crate::config::TopicConfig;

/// A refused record set: the partition's error, its message, and per-record errors (index in the batch).
#[derive(Debug)]
pub struct Rejection {
    pub error: ResponseError,
    pub message: String,
    pub record_errors: Vec<(i32, String)>,
}

/// Kafka's RecordBatch.NO_TIMESTAMP.
const NO_TIMESTAMP: i64 = -1;

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
    // Streamed, so memory stays at the decoder's buffer whatever the batch claims; the limit bounds the work.
    let limit = strom_log::decompressed_limit(header.record_count, config.log.max_message_bytes);
    let mut records = RecordWalker::new(records, header, limit).map_err(rejected)?;
    let check_time = header.timestamp_type() == TimestampType::CreateTime
        && config.log.message_timestamp_type == TimestampType::CreateTime;
    let (low, high) =
        (now.saturating_sub(config.timestamp_before_max_ms), now.saturating_add(config.timestamp_after_max_ms));
    let mut record_errors = Vec::new();
    let mut keyless = Vec::new();
    let mut index = 0i32;
    while let Some(record) = records.next().map_err(rejected)? {
        if record.offset_delta != index {
            return Err(Rejection::invalid(format!(
                "Inner record {index} has offset delta {}; inner offsets must be consecutive from 0",
                record.offset_delta
            )));
        }
        // A compacted topic keeps the latest record per key, so every record needs one (Kafka's validateKey).
        if config.log.cleanup_policy.compact && !record.has_key && !header.is_control() {
            keyless.push((index, "Compacted topic cannot accept message without key".to_string()));
        }
        // Wrapping, as Kafka's long arithmetic: the timestamp a consumer will compute from the same fields.
        let ts = header.base_timestamp.wrapping_add(record.timestamp_delta);
        // A record without a timestamp (-1) is not checked, as Kafka's validateTimestamp skips NO_TIMESTAMP.
        if check_time && ts != NO_TIMESTAMP && (ts < low || ts > high) {
            record_errors.push((
                index,
                format!("Timestamp {ts} of message with offset {index} is out of range. The timestamp should be within [{low}, {high}]"),
            ));
        }
        index += 1;
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

/// A refusal from the record walk: CORRUPT_MESSAGE for a section that cannot be decompressed or is too large,
/// INVALID_RECORD for records that do not parse.
fn rejected(e: LogError) -> Rejection {
    let (error, message) = match e {
        LogError::CorruptMessage(m) => (ResponseError::CorruptMessage, m),
        LogError::InvalidRecord(m) => (ResponseError::InvalidRecord, m),
        other => (crate::errors::log_error_code(&other), other.to_string()),
    };
    Rejection { error, message, record_errors: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
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

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// One encoded record with a key and a `value_len`-byte value of zeros.
    fn record(offset_delta: i64, timestamp_delta: i64, value_len: usize) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varint(&mut body, timestamp_delta);
        put_varint(&mut body, offset_delta);
        put_varint(&mut body, 1);
        body.push(b'k');
        put_varint(&mut body, value_len as i64);
        body.resize(body.len() + value_len, 0);
        body.push(0); // no headers
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i64);
        out.extend(body);
        out
    }

    /// A batch claiming `record_count` records with `section` (compressed with `codec`) as its records.
    fn raw_batch(codec: i16, record_count: i32, base_timestamp: i64, section: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((strom_log::HEADER_SIZE - 12 + section.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(&(record_count - 1).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&record_count.to_be_bytes());
        b.extend_from_slice(section);
        let crc = strom_log::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn with(key: &str, value: &str) -> TopicConfig {
        let overrides = [(key.to_string(), value.to_string())].into_iter().collect();
        TopicConfig::resolve(&crate::BrokerConfig::default(), &overrides)
    }

    fn check_with(b: &[u8], config: &TopicConfig, now: i64) -> Result<(), Rejection> {
        let headers = strom_log::validate_batches(b, u32::MAX).unwrap();
        validate(b, &headers, config, now)
    }

    #[test]
    fn refuses_decompression_bombs() {
        let now = 1_700_000_000_000;
        // Snappy whose block header claims 4 GiB - 1 in a few bytes (it used to be allocated whole).
        let b = raw_batch(2, 1, now, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
        let r = check(&b, now).unwrap_err();
        assert_eq!(r.error, ResponseError::CorruptMessage, "{}", r.message);
        // Well-formed zstd records that go on past the limit (64 records' worth of max.message.bytes): refused when
        // the limit is reached, not after the whole batch is inflated.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let value_len = 1 << 20;
        for i in 0..100 {
            std::io::Write::write_all(&mut enc, &record(i, 0, value_len)).unwrap();
        }
        let b = raw_batch(4, 100, now, &enc.finish().unwrap());
        let r = check(&b, now).unwrap_err();
        assert_eq!(r.error, ResponseError::CorruptMessage);
        assert!(r.message.contains("the most one batch may hold"), "{}", r.message);
        // The same records within the limit are fine.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        for i in 0..50 {
            std::io::Write::write_all(&mut enc, &record(i, 0, 1_000_000)).unwrap();
        }
        check(&raw_batch(4, 50, now, &enc.finish().unwrap()), now).unwrap();
        // A run of zeros is a record of length 0: INVALID_RECORD, as Kafka's record reader refuses it.
        let zeros = zstd::stream::encode_all(&vec![0u8; 1 << 20][..], 1).unwrap();
        assert_eq!(check(&raw_batch(4, 1, now, &zeros), now).unwrap_err().error, ResponseError::InvalidRecord);
    }

    #[test]
    fn a_field_longer_than_what_remains_is_an_invalid_record() {
        let now = 1_700_000_000_000;
        let mut rec = record(0, 0, 10);
        // The value's length (after length, attributes, timestamp delta, offset delta, key) claims 2^30 bytes.
        let value_len_at = 1 + 1 + 1 + 1 + 2;
        rec.splice(value_len_at..value_len_at + 1, [0x80, 0x80, 0x80, 0x80, 0x08]);
        rec[0] += 4;
        for codec in [0, 1] {
            let section = if codec == 0 {
                rec.clone()
            } else {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut e, &rec).unwrap();
                e.finish().unwrap()
            };
            let r = check(&raw_batch(codec, 1, now, &section), now).unwrap_err();
            assert_eq!(r.error, ResponseError::InvalidRecord, "codec {codec}: {}", r.message);
        }
    }

    #[test]
    fn records_without_a_timestamp_skip_the_range_check() {
        let now = 1_700_000_000_000;
        let config = with("message.timestamp.before.max.ms", "60000");
        // Kafka's NO_TIMESTAMP (-1) is not checked against message.timestamp.before.max.ms.
        let mut section = record(0, 0, 1);
        section.extend(record(1, 0, 1));
        check_with(&raw_batch(0, 2, -1, &section), &config, now).unwrap();
        // Any other timestamp that old is refused.
        let r = check_with(&raw_batch(0, 2, 0, &section), &config, now).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        let r = check_with(&raw_batch(0, 2, -2, &section), &config, now).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
    }

    #[test]
    fn record_timestamps_wrap_as_kafka_computes_them() {
        let now = 1_700_000_000_000;
        // With no upper bound, a record at i64::MAX - 1 + 5 is one Kafka (and every consumer) reads as i64::MIN + 3:
        // out of range, not saturated into it.
        let config = with("message.timestamp.after.max.ms", &i64::MAX.to_string());
        let mut section = record(0, 0, 1);
        section.extend(record(1, 5, 1));
        let r = check_with(&raw_batch(0, 2, i64::MAX - 1, &section), &config, now).unwrap_err();
        assert_eq!(r.error, ResponseError::InvalidTimestamp);
        assert_eq!(r.record_errors.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1]);
    }
}
