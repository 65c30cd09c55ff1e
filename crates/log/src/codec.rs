//! The RecordBatch compression codecs (attribute bits 0-2: none, gzip, snappy, lz4, zstd), for the one place the
//! storage engine must look inside records: the log cleaner (decompress, drop superseded records, recompress with
//! the batch's own codec).
//!
//! They use the same crates kafka-protocol builds (flate2, snap, lz4, zstd), so the workspace compiles no new
//! codec, and the log crate can test compaction end to end without the broker supplying codecs.

use std::io::{Read, Write};

use crate::error::LogError;

pub(crate) const NONE: u8 = 0;
pub(crate) const GZIP: u8 = 1;
pub(crate) const SNAPPY: u8 = 2;
pub(crate) const LZ4: u8 = 3;
pub(crate) const ZSTD: u8 = 4;

/// snappy-java's stream header ("xerial" framing): Java producers write it, librdkafka reads it; raw snappy
/// blocks (what librdkafka writes) are also accepted on decompression.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_BLOCK: usize = 32 * 1024;

fn corrupt(codec: &str, e: impl std::fmt::Display) -> LogError {
    LogError::CorruptMessage(format!("cannot decompress {codec} records: {e}"))
}

/// Decompresses a batch's records section.
pub(crate) fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::with_capacity(data.len() * 4);
    match codec {
        NONE => out.extend_from_slice(data),
        GZIP => {
            flate2::read::GzDecoder::new(data).read_to_end(&mut out).map_err(|e| corrupt("gzip", e))?;
        }
        SNAPPY => {
            if data.len() >= XERIAL_HEADER_LEN && &data[..8] == XERIAL_MAGIC {
                let mut pos = XERIAL_HEADER_LEN;
                while pos < data.len() {
                    let len_bytes =
                        data.get(pos..pos + 4).ok_or_else(|| corrupt("snappy", "truncated block length"))?;
                    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
                    pos += 4;
                    let block = data.get(pos..pos + len).ok_or_else(|| corrupt("snappy", "truncated block"))?;
                    out.extend(snap::raw::Decoder::new().decompress_vec(block).map_err(|e| corrupt("snappy", e))?);
                    pos += len;
                }
            } else {
                out = snap::raw::Decoder::new().decompress_vec(data).map_err(|e| corrupt("snappy", e))?;
            }
        }
        LZ4 => {
            lz4::Decoder::new(data)
                .map_err(|e| corrupt("lz4", e))?
                .read_to_end(&mut out)
                .map_err(|e| corrupt("lz4", e))?;
        }
        ZSTD => {
            zstd::stream::copy_decode(data, &mut out).map_err(|e| corrupt("zstd", e))?;
        }
        other => return Err(LogError::CorruptMessage(format!("unknown compression codec {other}"))),
    }
    Ok(out)
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

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let c = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &c).unwrap(), data, "codec {codec}");
        }
        // librdkafka's raw snappy (no xerial framing) is read too.
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(SNAPPY, &raw).unwrap(), data);
        assert!(decompress(GZIP, b"not gzip").is_err());
        assert!(decompress(7, b"").is_err());
    }
}
