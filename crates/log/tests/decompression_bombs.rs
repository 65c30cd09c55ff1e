//! Decompression bombs against the streaming record walk: every one is refused, and the process's peak resident
//! memory (VmHWM, reset before each walk) shows that none was inflated. This file holds a single test so that
//! nothing else runs in its process and the peak is its own.

use std::io::Write;

use strom_log::{decompressed_limit, validate_batches, LogError, RecordWalker, HEADER_SIZE};

const MAX_MESSAGE_BYTES: u32 = 1_048_588;
/// What each crafted bomb streams out: far beyond any limit, and more than the peak memory allowed below.
const BOMB_BYTES: u64 = 1 << 30;
/// The most a walk may add to the resident memory: the codecs' own buffers and windows (an lz4 block is up to
/// 4 MiB), nothing that grows with what the batch holds.
const WALK_MEMORY_LIMIT: u64 = 24 << 20;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A batch with `section` as its (compressed) records, claiming `record_count` records.
fn batch(codec: u8, record_count: i32, section: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_SIZE + section.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_SIZE - 12 + section.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]); // CRC, below
    b.extend_from_slice(&i16::from(codec).to_be_bytes());
    b.extend_from_slice(&(record_count - 1).to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&record_count.to_be_bytes());
    b.extend_from_slice(section);
    let crc = strom_log::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Streams `total` bytes into `w`: well-formed records with 1 MiB values of zeros (`records` true), or plain zeros.
fn stream(w: &mut dyn Write, total: u64, records: bool) {
    let zeros = vec![0u8; 1 << 16];
    let value_len: i64 = 1 << 20;
    let mut written = 0u64;
    let mut i = 0i64;
    while written < total {
        if records {
            let mut head = Vec::new();
            let mut fields = vec![0u8]; // attributes
            put_varint(&mut fields, 0); // timestamp delta
            put_varint(&mut fields, i); // offset delta
            put_varint(&mut fields, -1); // null key
            put_varint(&mut fields, value_len);
            let body_len = fields.len() as i64 + value_len + 1; // + header count
            put_varint(&mut head, body_len);
            w.write_all(&head).unwrap();
            w.write_all(&fields).unwrap();
            written += (head.len() + fields.len()) as u64;
        }
        let mut left = if records { value_len as u64 } else { total - written };
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            w.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        written += if records { value_len as u64 } else { total - written };
        if records {
            w.write_all(&[0]).unwrap(); // no headers
            written += 1;
        }
        i += 1;
    }
}

/// Snappy in snappy-java's framing, block by block as it is written.
struct Xerial(Vec<u8>, Vec<u8>);

impl Write for Xerial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while self.1.len() >= 32 * 1024 {
            let rest = self.1.split_off(32 * 1024);
            self.flush_block();
            self.1 = rest;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Xerial {
    fn new() -> Self {
        Xerial(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec(), Vec::new())
    }
    fn flush_block(&mut self) {
        let block = snap::raw::Encoder::new().compress_vec(&self.1).unwrap();
        self.0.extend_from_slice(&(block.len() as u32).to_be_bytes());
        self.0.extend_from_slice(&block);
        self.1.clear();
    }
    fn finish(mut self) -> Vec<u8> {
        if !self.1.is_empty() {
            self.flush_block();
        }
        self.0
    }
}

fn compressed(codec: u8, total: u64, records: bool) -> Vec<u8> {
    match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            stream(&mut e, total, records);
            e.finish().unwrap()
        }
        2 => {
            let mut e = Xerial::new();
            stream(&mut e, total, records);
            e.finish()
        }
        3 => {
            let mut e = lz4::EncoderBuilder::new().block_mode(lz4::BlockMode::Independent).build(Vec::new()).unwrap();
            stream(&mut e, total, records);
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        4 => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            stream(&mut e, total, records);
            e.finish().unwrap()
        }
        _ => unreachable!(),
    }
}

/// Walks the batch's records and checks the memory the walk took.
fn walk(b: &[u8]) -> Result<usize, LogError> {
    let before = rss_reset_peak();
    let result = walk_records(b);
    let peak = status_bytes("VmHWM:");
    assert!(peak.saturating_sub(before) < WALK_MEMORY_LIMIT, "the walk took {} MiB", (peak - before) >> 20);
    result
}

fn walk_records(b: &[u8]) -> Result<usize, LogError> {
    let h = validate_batches(b, u32::MAX).unwrap()[0];
    let mut w = RecordWalker::new(b, &h, decompressed_limit(h.record_count, MAX_MESSAGE_BYTES))?;
    let mut n = 0;
    while w.next()?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Resets the peak resident memory to the current one (Linux's clear_refs "5") and returns it.
fn rss_reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_bytes("VmRSS:")
}

#[test]
fn bombs_are_refused_without_being_inflated() {
    for codec in [1u8, 2, 3, 4] {
        // Well-formed records far past the limit: refused once the limit is reached.
        let b = batch(codec, 10_000, &compressed(codec, BOMB_BYTES, true));
        match walk(&b) {
            Err(LogError::CorruptMessage(m)) => assert!(m.contains("most one batch may hold"), "codec {codec}: {m}"),
            other => panic!("codec {codec}: records bomb gave {other:?}"),
        }
        // A run of zeros: refused at the first record, whose length is 0.
        let b = batch(codec, 1, &compressed(codec, BOMB_BYTES, false));
        assert!(matches!(walk(&b), Err(LogError::InvalidRecord(_))), "codec {codec}: zeros bomb");
    }
    // One record claiming a value of 2 GiB - 1: refused from its length, before anything is decompressed.
    let mut section = Vec::new();
    let mut fields = vec![0u8];
    put_varint(&mut fields, 0);
    put_varint(&mut fields, 0);
    put_varint(&mut fields, -1);
    put_varint(&mut fields, i64::from(i32::MAX));
    put_varint(&mut section, i64::from(i32::MAX));
    section.extend_from_slice(&fields);
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    e.write_all(&section).unwrap();
    let b = batch(4, 1, &e.finish().unwrap());
    assert!(matches!(walk(&b), Err(LogError::CorruptMessage(_))));
    // Snappy whose block header claims 4 GiB - 1 in a few bytes, raw and framed.
    let raw = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
    let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    framed.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    framed.extend_from_slice(&raw);
    for section in [&raw[..], &framed] {
        let b = batch(2, 1, section);
        assert!(matches!(walk(&b), Err(LogError::CorruptMessage(_))), "{b:?}");
    }
}
