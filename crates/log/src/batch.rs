//! RecordBatch v2 header parsing and validation, plus the few in-place rewrites the log makes
//! (base offset, partition leader epoch, LogAppendTime). Records themselves are never decoded:
//! batches are stored exactly as received.

use crate::config::TimestampType;
use crate::error::LogError;

/// baseOffset + batchLength: the bytes that precede what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed RecordBatch v2 header, up to and including recordCount.
pub const HEADER_SIZE: usize = 61;
/// The only supported magic.
pub const MAGIC_V2: i8 = 2;

const LENGTH_POS: usize = 8;
const LEADER_EPOCH_POS: usize = 12;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;
const LAST_OFFSET_DELTA_POS: usize = 23;
const BASE_TIMESTAMP_POS: usize = 27;
const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
const RECORD_COUNT_POS: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// none, gzip, snappy, lz4, zstd
const MAX_COMPRESSION_CODEC: u8 = 4;

/// Smallest legal `batchLength`: a header with no records.
pub(crate) const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;

/// The fixed header of one RecordBatch v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be<const N: usize>(buf: &[u8], pos: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[pos..pos + N]);
    out
}

impl BatchHeader {
    /// Parses the 61-byte header at the start of `buf`. Checks nothing beyond the length of
    /// `buf` (no magic, framing or CRC checks); see [`validate_batches`] for that.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
        if buf.len() < HEADER_SIZE {
            return Err(LogError::InvalidRecord(format!(
                "record batch header needs {HEADER_SIZE} bytes, got {}",
                buf.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(be(buf, 0)),
            batch_length: i32::from_be_bytes(be(buf, LENGTH_POS)),
            partition_leader_epoch: i32::from_be_bytes(be(buf, LEADER_EPOCH_POS)),
            magic: buf[MAGIC_POS] as i8,
            crc: u32::from_be_bytes(be(buf, CRC_POS)),
            attributes: i16::from_be_bytes(be(buf, ATTRIBUTES_POS)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA_POS)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP_POS)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP_POS)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID_POS)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH_POS)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE_POS)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT_POS)),
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// Size of the whole batch on the wire / on disk (12 + batchLength).
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
}

/// CRC-32C of a batch as Kafka defines it: from the attributes field to the end of the batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_POS..).unwrap_or(&[]))
}

/// A structurally invalid batch (Kafka's INVALID_RECORD); only a CRC mismatch is CORRUPT_MESSAGE.
fn corrupt(msg: String) -> LogError {
    LogError::InvalidRecord(msg)
}

/// Validates a record set of one or more concatenated RecordBatch v2 and returns their headers.
///
/// Checks, per batch: framing (the batch fits in the buffer and is at least a header long),
/// magic == 2, size <= `max_message_bytes`, CRC-32C, recordCount >= 1 with
/// lastOffsetDelta == recordCount - 1, and a known compression codec. Never panics.
pub fn validate_batches(records: &[u8], max_message_bytes: u32) -> Result<Vec<BatchHeader>, LogError> {
    let mut headers = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let header =
            validate_one(&records[pos..], max_message_bytes).map_err(|e| with_position(e, headers.len(), pos))?;
        pos += header.total_size();
        headers.push(header);
    }
    Ok(headers)
}

fn with_position(err: LogError, index: usize, pos: usize) -> LogError {
    match err {
        LogError::CorruptMessage(m) => LogError::CorruptMessage(format!("batch {index} at byte {pos}: {m}")),
        LogError::InvalidRecord(m) => corrupt(format!("batch {index} at byte {pos}: {m}")),
        other => other,
    }
}

fn validate_one(buf: &[u8], max_message_bytes: u32) -> Result<BatchHeader, LogError> {
    if buf.len() < LOG_OVERHEAD {
        return Err(corrupt(format!("{} trailing bytes are too short for a batch", buf.len())));
    }
    let batch_length = i32::from_be_bytes(be(buf, LENGTH_POS));
    if batch_length < 0 {
        return Err(corrupt(format!("negative batch length {batch_length}")));
    }
    let total = LOG_OVERHEAD + batch_length as usize;
    if total > buf.len() {
        return Err(corrupt(format!("batch of {total} bytes is truncated to {} bytes", buf.len())));
    }
    let batch = &buf[..total];
    if total <= MAGIC_POS {
        return Err(corrupt(format!("batch length {batch_length} is too small")));
    }
    let magic = batch[MAGIC_POS] as i8;
    if magic != MAGIC_V2 {
        // Magic 0/1 are real but legacy formats; anything else is garbage.
        return Err(if magic == 0 || magic == 1 {
            LogError::UnsupportedMagic(magic)
        } else {
            corrupt(format!("invalid magic {magic}"))
        });
    }
    if batch_length < MIN_BATCH_LENGTH {
        return Err(corrupt(format!("batch length {batch_length} is smaller than a v2 header")));
    }
    if total > max_message_bytes as usize {
        return Err(LogError::MessageTooLarge { size: total, max: max_message_bytes });
    }
    let header = BatchHeader::parse(batch)?;
    let crc = compute_crc(batch);
    if crc != header.crc {
        return Err(LogError::CorruptMessage(format!(
            "CRC mismatch: stored {:#010x}, computed {crc:#010x}",
            header.crc
        )));
    }
    if header.record_count < 1 {
        return Err(corrupt(format!("record count {} must be at least 1", header.record_count)));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(corrupt(format!(
            "lastOffsetDelta {} does not match record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    if header.compression() > MAX_COMPRESSION_CODEC {
        return Err(corrupt(format!("unknown compression codec {}", header.compression())));
    }
    Ok(header)
}

/// Stamps the broker-assigned base offset and leader epoch. Both lie before the CRC'd range, so
/// the CRC stays valid.
pub(crate) fn assign_offset_and_epoch(batch: &mut [u8], header: &mut BatchHeader, base_offset: i64, epoch: i32) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&epoch.to_be_bytes());
    header.base_offset = base_offset;
    header.partition_leader_epoch = epoch;
}

/// Kafka's `setMaxTimestamp`: sets the timestamp-type bit and maxTimestamp, recomputing the CRC
/// only if something changed.
pub(crate) fn set_max_timestamp(
    batch: &mut [u8],
    header: &mut BatchHeader,
    ts_type: TimestampType,
    max_timestamp: i64,
) {
    let attributes = match ts_type {
        TimestampType::CreateTime => header.attributes & !TIMESTAMP_TYPE_BIT,
        TimestampType::LogAppendTime => header.attributes | TIMESTAMP_TYPE_BIT,
    };
    if attributes == header.attributes && max_timestamp == header.max_timestamp {
        return;
    }
    batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    header.attributes = attributes;
    header.max_timestamp = max_timestamp;
    header.crc = crc;
}

/// A batch with the same header fields as `original` (base offset, lastOffsetDelta, baseTimestamp, producer
/// fields, attributes) around a new records section, as the log cleaner writes it: `record_count` and
/// `max_timestamp` are the retained records', the length and CRC are recomputed. An empty batch (no records left,
/// kept only to preserve its last offset) is written uncompressed, as Kafka's `writeEmptyHeader` does.
pub(crate) fn rebuild(original: &[u8], section: &[u8], record_count: i32, max_timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + section.len());
    out.extend_from_slice(&original[..HEADER_SIZE]);
    out.extend_from_slice(section);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_POS..LENGTH_POS + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&record_count.to_be_bytes());
    out[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    if record_count == 0 {
        let attributes = i16::from_be_bytes(be(&out, ATTRIBUTES_POS)) & !COMPRESSION_MASK;
        out[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    }
    let crc = compute_crc(&out);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Incremental CRC check used by recovery, which streams large batches instead of buffering them.
pub(crate) fn crc_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The part of the header covered by the CRC (attributes to recordCount).
pub(crate) fn header_crc_range(header: &[u8; HEADER_SIZE]) -> &[u8] {
    &header[ATTRIBUTES_POS..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{batch, build, BatchSpec};

    #[test]
    fn parses_a_built_batch() {
        let b = build(&BatchSpec { record_count: 3, base_timestamp: 1000, timestamp_step: 5, ..Default::default() });
        let h = validate_batches(&b, u32::MAX).unwrap();
        assert_eq!(h.len(), 1);
        let h = h[0];
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1010);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.compression(), 0);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_control() && !h.is_transactional());
    }

    #[test]
    fn validates_concatenated_batches() {
        let mut set = batch(1, 10, 1);
        set.extend(batch(4, 100, 2));
        set.extend(batch(2, 0, 3));
        let h = validate_batches(&set, u32::MAX).unwrap();
        assert_eq!(h.iter().map(|h| h.record_count).collect::<Vec<_>>(), vec![1, 4, 2]);
        assert!(validate_batches(&[], 100).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_crc() {
        let mut b = batch(2, 10, 1);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::CorruptMessage(_))));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut b = batch(1, 10, 1);
        b[MAGIC_POS] = 1;
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::UnsupportedMagic(1))));
        b[MAGIC_POS] = 7;
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::InvalidRecord(_))));
    }

    #[test]
    fn rejects_oversize_and_truncated() {
        let b = batch(3, 100, 1);
        assert!(matches!(
            validate_batches(&b, (b.len() - 1) as u32),
            Err(LogError::MessageTooLarge { size, .. }) if size == b.len()
        ));
        assert!(validate_batches(&b, b.len() as u32).is_ok());
        for cut in [1, 11, 12, 40, 61, b.len() - 1] {
            assert!(matches!(validate_batches(&b[..cut], u32::MAX), Err(LogError::InvalidRecord(_))), "cut {cut}");
        }
    }

    #[test]
    fn rejects_inconsistent_counts_and_codecs() {
        let b = build(&BatchSpec { record_count: 2, last_offset_delta: Some(5), ..Default::default() });
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::InvalidRecord(_))));
        let b = build(&BatchSpec { record_count: 0, ..Default::default() });
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::InvalidRecord(_))));
        let b = build(&BatchSpec { attributes: 5, ..Default::default() });
        assert!(matches!(validate_batches(&b, u32::MAX), Err(LogError::InvalidRecord(_))));
    }

    #[test]
    fn set_max_timestamp_keeps_crc_valid() {
        let mut b = batch(3, 20, 100);
        let mut h = validate_batches(&b, u32::MAX).unwrap()[0];
        set_max_timestamp(&mut b, &mut h, TimestampType::LogAppendTime, 9999);
        let parsed = validate_batches(&b, u32::MAX).unwrap()[0];
        assert_eq!(parsed, h);
        assert_eq!(parsed.max_timestamp, 9999);
        assert_eq!(parsed.base_timestamp, 100);
        assert_eq!(parsed.timestamp_type(), TimestampType::LogAppendTime);
        assign_offset_and_epoch(&mut b, &mut h, 42, 7);
        let parsed = validate_batches(&b, u32::MAX).unwrap()[0];
        assert_eq!((parsed.base_offset, parsed.partition_leader_epoch, parsed.last_offset()), (42, 7, 44));
    }
}
