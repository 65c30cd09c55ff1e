//! Records inside a RecordBatch v2 (Kafka's DefaultRecord), read just far enough for the two jobs that need them:
//! the log cleaner (key, null value, offset and timestamp deltas, and the record's exact bytes so a retained record
//! is copied unchanged, headers included).

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::codec;
use crate::error::LogError;

/// One record, borrowed from a decompressed records section.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordView<'a> {
    /// The whole record as encoded, length prefix included: appending it to another batch with the same base offset
    /// and base timestamp keeps its offset, timestamp, key, value and headers exactly.
    pub raw: &'a [u8],
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// A tombstone: the value is null.
    pub value_is_null: bool,
}

fn corrupt(msg: impl Into<String>) -> LogError {
    LogError::CorruptMessage(msg.into())
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Zigzag LEB128, at most `max_bytes` long (5 for varint, 10 for varlong).
    fn varlong(&mut self, max_bytes: usize) -> Result<i64, LogError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = *self.buf.get(self.pos).ok_or_else(|| corrupt("record truncated inside a varint"))?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(corrupt("varint is too long"))
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.varlong(5)?;
        i32::try_from(v).map_err(|_| corrupt("varint out of range"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], LogError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| corrupt("record field overruns the record"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A varint-length-prefixed byte field; -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, LogError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < 0 => Err(corrupt(format!("invalid field length {n}"))),
            n => self.take(n as usize).map(Some),
        }
    }
}

/// Parses `expected` records from a decompressed records section; the section must hold exactly them.
pub(crate) fn parse(section: &[u8], expected: i32) -> Result<Vec<RecordView<'_>>, LogError> {
    let mut out = Vec::new();
    let mut c = Cursor { buf: section, pos: 0 };
    while c.pos < section.len() {
        let start = c.pos;
        let len = c.varint()?;
        if len < 0 {
            return Err(corrupt(format!("negative record length {len}")));
        }
        let body = c.take(len as usize)?;
        let raw = &section[start..c.pos];
        let mut r = Cursor { buf: body, pos: 0 };
        r.take(1)?; // attributes: unused in v2
        let timestamp_delta = r.varlong(10)?;
        let offset_delta = r.varint()?;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let headers = r.varint()?;
        for _ in 0..headers.max(0) {
            let name_len = r.varint()?;
            r.take(name_len.max(0) as usize)?;
            r.nullable_bytes()?;
        }
        if r.pos != body.len() {
            return Err(corrupt("record length does not match its fields"));
        }
        out.push(RecordView { raw, timestamp_delta, offset_delta, key, value, value_is_null: value.is_none() });
    }
    if out.len() != expected.max(0) as usize {
        return Err(corrupt(format!("batch declares {expected} records but holds {}", out.len())));
    }
    Ok(out)
}

/// The decompressed records section of a whole batch, refused if it comes to more than `limit` bytes.
pub(crate) fn section(batch: &[u8], header: &BatchHeader, limit: u64) -> Result<Vec<u8>, LogError> {
    let body = batch.get(HEADER_SIZE..header.total_size()).ok_or_else(|| corrupt("batch shorter than its length"))?;
    codec::decompress(header.compression(), body, limit)
}

/// One record of a stored batch with its offset, key and value, for readers that rebuild state from a log (the
/// coordinators loading their partitions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// The records of one whole batch (validated into `header`), decompressed to at most `limit` bytes (see
/// [`crate::decompressed_limit`]): a stored batch that claims more is refused, never inflated without bound.
pub fn keyed_records(batch: &[u8], header: &BatchHeader, limit: u64) -> Result<Vec<KeyedRecord>, LogError> {
    let section = section(batch, header, limit)?;
    let records = parse(&section, header.record_count)?;
    Ok(records
        .into_iter()
        .map(|r| KeyedRecord {
            offset: header.base_offset.wrapping_add(i64::from(r.offset_delta)),
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
        })
        .collect())
}

/// The decompression limit for a stored batch: the one produce validated it with, or more if `max_message_bytes`
/// has since been lowered below the batch's own size.
pub(crate) fn stored_limit(header: &BatchHeader, max_message_bytes: u32) -> u64 {
    let size = u32::try_from(header.total_size()).unwrap_or(u32::MAX);
    codec::decompressed_limit(header.record_count, max_message_bytes.max(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batches;
    use crate::testkit::{build, BatchSpec};

    #[test]
    fn parses_testkit_records() {
        let b = build(&BatchSpec { record_count: 3, value_len: 7, ..Default::default() });
        let h = validate_batches(&b, u32::MAX).unwrap()[0];
        let s = section(&b, &h, u64::MAX).unwrap();
        let recs = parse(&s, 3).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset_delta).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(recs.iter().map(|r| r.raw.len()).sum::<usize>(), s.len());
        assert!(parse(&s, 4).is_err());
        assert!(parse(&s[..s.len() - 1], 3).is_err());
    }

    /// Keyed records carry their absolute offsets and values (the limit binds compressed sections: `codec`'s tests).
    #[test]
    fn keyed_records_have_offsets_and_values() {
        let b = build(&BatchSpec { base_offset: 40, record_count: 3, value_len: 7, ..Default::default() });
        let h = validate_batches(&b, u32::MAX).unwrap()[0];
        let recs = keyed_records(&b, &h, u64::MAX).unwrap();
        assert_eq!(recs.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![40, 41, 42]);
        assert!(recs.iter().all(|r| r.value.as_ref().is_some_and(|v| v.len() == 7)));
    }
}
