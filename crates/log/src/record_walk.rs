//! Walks the records of one batch (Kafka's DefaultRecord, v2) as a stream, keeping none of them: what produce
//! validation and offset-by-timestamp lookups need (offset and timestamp deltas, whether a key is present). Keys,
//! values and headers are skipped as they stream past, so memory stays at the decoder's buffer whatever the batch
//! holds or claims, and a record whose declared length would take the batch past its decompression limit is refused
//! before it is decompressed.
//!
//! Errors are Kafka's: a section that cannot be decompressed or comes to more than the limit is CORRUPT_MESSAGE
//! ([`LogError::CorruptMessage`]); records that do not parse, or do not fill the section exactly, are INVALID_RECORD
//! ([`LogError::InvalidRecord`]), as Kafka's DefaultRecordBatch iterator throws InvalidRecordException.

use std::io::BufRead;

use crate::batch::{BatchHeader, HEADER_SIZE};
use crate::codec;
use crate::error::LogError;

/// What the walk reads of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub has_key: bool,
}

/// The records of one batch, in order; see the module docs.
pub struct RecordWalker<'a> {
    src: Box<dyn BufRead + 'a>,
    codec: u8,
    /// Decompressed bytes consumed so far, and the most the section may hold.
    consumed: u64,
    limit: u64,
    /// Records read so far, and how many the batch declares.
    read: i32,
    count: i32,
    /// Bytes of the current record not yet read.
    record_left: u64,
}

fn invalid(msg: impl Into<String>) -> LogError {
    LogError::InvalidRecord(msg.into())
}

impl<'a> RecordWalker<'a> {
    /// Walks the records of `batch` (one whole batch, as validated by `validate_batches` into `header`); its records
    /// section may decompress to at most `limit` bytes (see [`crate::decompressed_limit`]).
    pub fn new(batch: &'a [u8], header: &BatchHeader, limit: u64) -> Result<Self, LogError> {
        let body = batch
            .get(HEADER_SIZE..header.total_size())
            .ok_or_else(|| LogError::CorruptMessage("batch shorter than its length".into()))?;
        let codec = header.compression();
        Ok(RecordWalker {
            src: codec::decoder(codec, body, limit)?,
            codec,
            consumed: 0,
            limit,
            read: 0,
            count: header.record_count.max(0),
            record_left: 0,
        })
    }

    /// The next record; `None` once the declared number of records has been read and nothing follows them.
    #[allow(clippy::should_implement_trait)] // fallible, and ends with a check an Iterator would hide
    pub fn next(&mut self) -> Result<Option<RecordInfo>, LogError> {
        if self.read == self.count {
            return if self.fill()?.is_empty() {
                Ok(None)
            } else {
                Err(invalid(format!(
                    "Incorrect declared batch size, records still remaining after {} records",
                    self.count
                )))
            };
        }
        let index = self.read;
        self.record_left = u64::MAX;
        let len = self.varint()?;
        if len < 0 {
            return Err(invalid(format!("Invalid record size {len} of record {index}")));
        }
        let len = len as u64;
        if self.consumed.saturating_add(len) > self.limit {
            return Err(LogError::CorruptMessage(format!(
                "record {index} of {len} bytes takes the batch past {} decompressed bytes, the most one batch may hold",
                self.limit
            )));
        }
        self.record_left = len;
        self.skip(1)?; // attributes: unused in v2
        let timestamp_delta = self.varlong()?;
        let offset_delta = self.varint()?;
        let has_key = self.bytes_field("key", true)?;
        self.bytes_field("value", true)?;
        let headers = self.varint()?;
        if headers < 0 {
            return Err(invalid(format!("Found invalid number of record headers {headers} in record {index}")));
        }
        for _ in 0..headers {
            self.bytes_field("header key", false)?;
            self.bytes_field("header value", true)?;
        }
        if self.record_left != 0 {
            return Err(invalid(format!(
                "Invalid record size: record {index} has {} bytes beyond its fields",
                self.record_left
            )));
        }
        self.read += 1;
        Ok(Some(RecordInfo { timestamp_delta, offset_delta, has_key }))
    }

    fn fill(&mut self) -> Result<&[u8], LogError> {
        let codec = self.codec;
        self.src.fill_buf().map_err(|e| codec::read_error(codec, e))
    }

    fn consume(&mut self, n: usize) {
        self.src.consume(n);
        self.consumed += n as u64;
        self.record_left -= n as u64;
    }

    /// Skips `n` bytes of the current record.
    fn skip(&mut self, mut n: u64) -> Result<(), LogError> {
        if n > self.record_left {
            return Err(invalid(format!("a field of record {} runs past the end of its record", self.read)));
        }
        while n > 0 {
            let available = self.fill()?.len();
            if available == 0 {
                return Err(invalid(format!("Incorrect declared batch size, premature EOF in record {}", self.read)));
            }
            let step = available.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, LogError> {
        if self.record_left == 0 {
            return Err(invalid(format!("record {} ends inside a field", self.read)));
        }
        let index = self.read;
        let b = *self
            .fill()?
            .first()
            .ok_or_else(|| invalid(format!("Incorrect declared batch size, premature EOF in record {index}")))?;
        self.consume(1);
        Ok(b)
    }

    /// Zigzag LEB128 of at most `max_bytes` bytes (5 for an int, 10 for a long).
    fn zigzag(&mut self, max_bytes: u32) -> Result<i64, LogError> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(invalid(format!("varint longer than {max_bytes} bytes in record {}", self.read)))
    }

    fn varlong(&mut self) -> Result<i64, LogError> {
        self.zigzag(10)
    }

    fn varint(&mut self) -> Result<i32, LogError> {
        let v = self.zigzag(5)?;
        i32::try_from(v).map_err(|_| invalid(format!("varint {v} out of int range in record {}", self.read)))
    }

    /// A length-prefixed field (-1 is null where `nullable`); returns whether it was present.
    fn bytes_field(&mut self, what: &str, nullable: bool) -> Result<bool, LogError> {
        match self.varint()? {
            -1 if nullable => Ok(false),
            n if n >= 0 => self.skip(n as u64).map(|()| true),
            n => Err(invalid(format!("Invalid {what} length {n} in record {}", self.read))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batches;
    use crate::testkit::{build, BatchSpec};

    fn walk(batch: &[u8], limit: u64) -> Result<Vec<RecordInfo>, LogError> {
        let h = validate_batches(batch, u32::MAX)?[0];
        let mut w = RecordWalker::new(batch, &h, limit)?;
        let mut out = Vec::new();
        while let Some(r) = w.next()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn walks_testkit_records() {
        let b = build(&BatchSpec { record_count: 3, value_len: 7, timestamp_step: 5, ..Default::default() });
        let recs = walk(&b, u64::MAX).unwrap();
        assert_eq!(
            recs.iter().map(|r| (r.offset_delta, r.timestamp_delta)).collect::<Vec<_>>(),
            [(0, 0), (1, 5), (2, 10)]
        );
        assert!(recs.iter().all(|r| !r.has_key));
    }

    #[test]
    fn refuses_a_record_count_that_lies() {
        for count in [2, 4] {
            let mut b = build(&BatchSpec { record_count: 3, ..Default::default() });
            b[23..27].copy_from_slice(&(count - 1i32).to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crate::batch::compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let e = walk(&b, u64::MAX).unwrap_err();
            assert!(matches!(&e, LogError::InvalidRecord(m) if m.contains("Incorrect declared batch size")), "{e}");
        }
    }

    #[test]
    fn a_record_longer_than_the_limit_is_refused_before_it_is_read() {
        let b = build(&BatchSpec { record_count: 2, value_len: 100, ..Default::default() });
        let section = (b.len() - HEADER_SIZE) as u64;
        assert_eq!(walk(&b, section).unwrap().len(), 2);
        assert!(matches!(walk(&b, section - 1), Err(LogError::CorruptMessage(_))));
    }
}
