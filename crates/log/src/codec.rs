//! The RecordBatch compression codecs (attribute bits 0-2: none, gzip, snappy, lz4, zstd).
//!
//! Decompression streams: [`decoder`] yields a records section through a small buffer, so what a batch claims (a
//! snappy length, a zstd frame size, a run of zeros) never decides how much memory is taken, and it stops with an
//! error once more than a limit has come out (see [`decompressed_limit`]). Produce validation and offset lookups walk
//! records straight from it; the log cleaner, which keeps records' bytes, collects them up to the same limit.
//!
//! It accepts exactly what kafka-protocol's decoders accept (what the broker took before it streamed): gzip's first
//! member, the lz4 frame format, zstd frames, and snappy either in snappy-java's "xerial" framing (what Java producers
//! write) or as one raw block (librdkafka's fallback, and what snappy-java reads too). The crates are the ones
//! kafka-protocol builds (flate2, snap, lz4, zstd), so the workspace compiles no new codec.

use std::io::{BufRead, BufReader, Read, Write};

use crate::error::LogError;

pub(crate) const NONE: u8 = 0;
pub(crate) const GZIP: u8 = 1;
pub(crate) const SNAPPY: u8 = 2;
pub(crate) const LZ4: u8 = 3;
pub(crate) const ZSTD: u8 = 4;

/// snappy-java's stream header ("xerial" framing), matched whole as kafka-protocol and snappy-java do.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_BLOCK: usize = 32 * 1024;

/// How much decompressed output is buffered between a codec and its reader.
const READ_BUFFER: usize = 16 * 1024;

/// Every record a legitimate producer writes is within `max.message.bytes` uncompressed (Kafka's producers check a
/// record's uncompressed size against `max.request.size` / `message.max.bytes`, which operators keep in line with the
/// broker's), and a batch holds at most a few such records' worth: Java producers close a batch at `batch.size` of
/// estimated compressed bytes, librdkafka at `batch.size` uncompressed. These bounds leave room for very well
/// compressed data while a bomb (a few KB that claim gigabytes) is refused after little work. Kafka has no such cap,
/// but its validator streams too; this bounds the CPU a bomb costs, as streaming bounds its memory.
const MIN_LIMIT_RECORDS: u64 = 8;
const MAX_LIMIT_RECORDS: u64 = 64;

/// The most bytes a batch of `record_count` records may decompress to under `max_message_bytes`:
/// `max_message_bytes` per record, counting at least [`MIN_LIMIT_RECORDS`] and at most [`MAX_LIMIT_RECORDS`] records.
pub fn decompressed_limit(record_count: i32, max_message_bytes: u32) -> u64 {
    let records = u64::try_from(record_count).unwrap_or(0).clamp(MIN_LIMIT_RECORDS, MAX_LIMIT_RECORDS);
    u64::from(max_message_bytes).saturating_mul(records)
}

fn corrupt(codec: &str, e: impl std::fmt::Display) -> LogError {
    LogError::CorruptMessage(format!("cannot decompress {codec} records: {e}"))
}

pub(crate) fn codec_name(codec: u8) -> &'static str {
    match codec {
        NONE => "uncompressed",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// A streaming reader of `data` (a batch's records section compressed with `codec`) that fails once it would yield
/// more than `limit` bytes (uncompressed data is read as it is). Errors met while reading are `io::Error`s; [`read_error`] turns them into a [`LogError`].
pub fn decoder<'a>(codec: u8, data: &'a [u8], limit: u64) -> Result<Box<dyn BufRead + 'a>, LogError> {
    let inner: Box<dyn Read + 'a> = match codec {
        // Read in place (the produce hot path): no more bytes than are there, so no limit to enforce.
        NONE => return Ok(Box::new(data)),
        GZIP => Box::new(GzipReader(flate2::bufread::GzDecoder::new(data))),
        SNAPPY => Box::new(SnappyReader::new(data, limit)?),
        LZ4 => Box::new(lz4::Decoder::new(data).map_err(|e| corrupt("lz4", e))?),
        // The window a frame asks for (libzstd allows up to 128 MiB) is only touched as output is produced, so the
        // limit bounds it too.
        ZSTD => Box::new(zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", e))?),
        other => return Err(LogError::CorruptMessage(format!("unknown compression codec {other}"))),
    };
    Ok(Box::new(BufReader::with_capacity(READ_BUFFER, Limited { inner, left: limit, limit })))
}

/// The error to report for an `io::Error` from a [`decoder`] of `codec`.
pub fn read_error(codec: u8, e: std::io::Error) -> LogError {
    corrupt(codec_name(codec), e)
}

/// Decompresses a whole records section, refusing one that comes to more than `limit` bytes.
pub(crate) fn decompress(codec: u8, data: &[u8], limit: u64) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::new();
    decoder(codec, data, limit)?.read_to_end(&mut out).map_err(|e| read_error(codec, e))?;
    Ok(out)
}

/// Fails a read that would take the output past `limit` (an error, not an end: a truncated section must not pass).
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Asking for one byte more than is left tells "ends exactly at the limit" from "goes past it".
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!("records decompress to more than {} bytes", self.limit)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// One gzip member and nothing after it, as kafka-protocol's decoder accepted.
struct GzipReader<'a>(flate2::bufread::GzDecoder<&'a [u8]>);

impl Read for GzipReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.0.get_ref().is_empty() {
            return Err(std::io::Error::other(format!("{} bytes after the gzip stream", self.0.get_ref().len())));
        }
        Ok(n)
    }
}

/// The most a snappy block of `len` bytes can decompress to: its densest element is a 3-byte copy of 64 bytes.
fn snappy_max_expansion(len: usize) -> u64 {
    (len as u64).saturating_mul(64) / 3
}

/// Snappy in either framing. The raw format lets a copy reach anywhere back in its block, so a block is decompressed
/// whole; it is allocated only after its claimed length is checked against what its bytes can hold and the limit.
struct SnappyReader<'a> {
    /// Xerial blocks not yet decompressed (empty for a raw block).
    rest: &'a [u8],
    block: Vec<u8>,
    pos: usize,
    /// Decompressed bytes the blocks so far claimed.
    claimed: u64,
    limit: u64,
}

impl<'a> SnappyReader<'a> {
    fn new(data: &'a [u8], limit: u64) -> Result<Self, LogError> {
        if data.is_empty() {
            return Err(corrupt("snappy", "expected some bytes in snappy stream"));
        }
        let mut r = SnappyReader { rest: &[], block: Vec::new(), pos: 0, claimed: 0, limit };
        match data.strip_prefix(XERIAL_HEADER) {
            Some(blocks) => r.rest = blocks,
            None => r.decompress_block(data).map_err(|e| corrupt("snappy", e))?,
        }
        Ok(r)
    }

    fn decompress_block(&mut self, block: &[u8]) -> std::io::Result<()> {
        let len = snap::raw::decompress_len(block).map_err(std::io::Error::other)?;
        if len as u64 > snappy_max_expansion(block.len()) {
            return Err(std::io::Error::other(format!(
                "a block of {} bytes claims {len} bytes decompressed, more than it can hold",
                block.len()
            )));
        }
        self.claimed = self.claimed.saturating_add(len as u64);
        if self.claimed > self.limit {
            return Err(std::io::Error::other(format!("records decompress to more than {} bytes", self.limit)));
        }
        self.block.clear();
        self.block.resize(len, 0);
        let n = snap::raw::Decoder::new().decompress(block, &mut self.block).map_err(std::io::Error::other)?;
        self.block.truncate(n);
        self.pos = 0;
        Ok(())
    }

    /// Decompresses the next xerial block into `block`; false at the end.
    fn next_block(&mut self) -> std::io::Result<bool> {
        let bad = |what: &str| std::io::Error::other(format!("snappy stream truncated: {what}"));
        while self.pos == self.block.len() {
            if self.rest.is_empty() {
                return Ok(false);
            }
            let (len, rest) = self.rest.split_first_chunk::<4>().ok_or_else(|| bad("block length"))?;
            let len = u32::from_be_bytes(*len) as usize;
            let block = rest.get(..len).ok_or_else(|| bad("block"))?;
            self.rest = &rest[len..];
            self.decompress_block(block)?;
        }
        Ok(true)
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.next_block()? {
            return Ok(0);
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Compresses a records section with `codec`, in the framing Kafka's Java client writes (so every client reads it).
pub(crate) fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, LogError> {
    let io = |codec: &str, e: std::io::Error| LogError::Io(std::io::Error::other(format!("{codec} compression: {e}")));
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| io("gzip", e))?;
            enc.finish().map_err(|e| io("gzip", e))
        }
        SNAPPY => {
            let mut out = XERIAL_HEADER.to_vec();
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = enc.compress_vec(chunk).map_err(|e| io("snappy", std::io::Error::other(e)))?;
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        LZ4 => {
            // Kafka's KafkaLZ4BlockInputStream reads only independent blocks.
            let mut enc = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .level(4)
                .build(Vec::new())
                .map_err(|e| io("lz4", e))?;
            enc.write_all(data).map_err(|e| io("lz4", e))?;
            let (out, result) = enc.finish();
            result.map_err(|e| io("lz4", e))?;
            Ok(out)
        }
        ZSTD => zstd::stream::encode_all(data, 3).map_err(|e| io("zstd", e)),
        other => Err(LogError::CorruptMessage(format!("unknown compression codec {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: u64 = u64::MAX;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c, NO_LIMIT).unwrap(), data, "codec {codec}");
            // Exactly at the limit passes, one byte under it is refused (uncompressed data is what it is).
            assert_eq!(decompress(codec, &c, data.len() as u64).unwrap(), data, "codec {codec}");
            assert_eq!(decompress(codec, &c, data.len() as u64 - 1).is_err(), codec != NONE, "codec {codec}");
        }
        // librdkafka's raw snappy (no xerial framing) is read too.
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(SNAPPY, &raw, NO_LIMIT).unwrap(), data);
        assert!(decompress(GZIP, b"not gzip", NO_LIMIT).is_err());
        assert!(decompress(7, b"", NO_LIMIT).is_err());
        assert!(decompress(SNAPPY, b"", NO_LIMIT).is_err());
    }

    #[test]
    fn snappy_at_its_best_ratio_is_not_mistaken_for_a_lie() {
        let zeros = vec![0u8; 1 << 20];
        let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert_eq!(decompress(SNAPPY, &raw, NO_LIMIT).unwrap(), zeros);
        assert_eq!(decompress(SNAPPY, &compress(SNAPPY, &zeros).unwrap(), NO_LIMIT).unwrap(), zeros);
    }

    #[test]
    fn snappy_claims_beyond_the_bytes_or_the_limit_are_refused_before_allocating() {
        // A raw block whose length varint says 4 GiB - 1, then one literal byte.
        let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
        let e = decompress(SNAPPY, &raw, NO_LIMIT).unwrap_err().to_string();
        assert!(e.contains("more than it can hold"), "{e}");
        let mut xerial = XERIAL_HEADER.to_vec();
        xerial.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw);
        let e = decompress(SNAPPY, &xerial, NO_LIMIT).unwrap_err().to_string();
        assert!(e.contains("more than it can hold"), "{e}");
        // Blocks that could hold what they claim, but more in all than the limit allows.
        let block = snap::raw::Encoder::new().compress_vec(&[0u8; 30_000]).unwrap();
        let mut many = XERIAL_HEADER.to_vec();
        for _ in 0..10 {
            many.extend_from_slice(&(block.len() as u32).to_be_bytes());
            many.extend_from_slice(&block);
        }
        assert_eq!(decompress(SNAPPY, &many, 300_000).unwrap().len(), 300_000);
        let e = decompress(SNAPPY, &many, 299_999).unwrap_err().to_string();
        assert!(e.contains("more than 299999 bytes"), "{e}");
    }

    #[test]
    fn accepts_what_kafka_protocol_accepts() {
        use bytes::Bytes;
        use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
        fn theirs(codec: u8, data: &[u8]) -> Option<Vec<u8>> {
            let mut input = Bytes::copy_from_slice(data);
            let take = |b: &mut Bytes| Ok(std::mem::take(b));
            match codec {
                GZIP => Gzip::decompress(&mut input, take),
                SNAPPY => Snappy::decompress(&mut input, take),
                LZ4 => Lz4::decompress(&mut input, take),
                ZSTD => Zstd::decompress(&mut input, take),
                _ => unreachable!(),
            }
            .ok()
            .map(|b| b.to_vec())
        }
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 13).to_le_bytes()).collect();
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let one = compress(codec, &data).unwrap();
            let mut cases = vec![one.clone(), one[..one.len() - 1].to_vec(), one[..one.len() / 2].to_vec()];
            let mut twice = one.clone();
            twice.extend_from_slice(&one);
            cases.push(twice);
            let mut garbage = one.clone();
            garbage.extend_from_slice(b"trailing garbage");
            cases.push(garbage);
            let mut flipped = one.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x5a;
            cases.push(flipped);
            for (i, case) in cases.iter().enumerate() {
                // Compared by length and a checksum: a failure must not print megabytes.
                let sum = |v: Option<Vec<u8>>| v.map(|v| (v.len(), crc32c::crc32c(&v)));
                let ours = decompress(codec, case, NO_LIMIT).ok();
                assert_eq!(sum(ours), sum(theirs(codec, case)), "codec {codec} case {i}");
            }
        }
    }
}
