//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[path = "../../src/testkit.rs"]
pub mod testkit;

pub mod keyed;

use std::path::Path;

use strom_log::{AppendInfo, Log, LogConfig, RecoveryReport};

#[allow(unused_imports)]
pub use testkit::{batch, build, split_batches, stamped, BatchSpec};

pub const EPOCH: i32 = 3;

/// Small segments and a small index interval so tests exercise rolls and index lookups.
pub fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 256, ..LogConfig::default() }
}

pub fn open(dir: &Path, config: LogConfig) -> (Log, RecoveryReport) {
    Log::open(dir, config).expect("open log")
}

/// A batch as it went into the log.
#[derive(Clone, Debug)]
pub struct Stored {
    pub base: i64,
    pub last: i64,
    pub bytes: Vec<u8>,
}

/// Appends `input` and returns what the log should now hold for it.
pub fn append(log: &Log, input: &[u8], now_ms: i64) -> (AppendInfo, Vec<Stored>) {
    let mut buf = input.to_vec();
    let info = log.append(&mut buf, EPOCH, now_ms, false).expect("append");
    let mut stored = Vec::new();
    for b in split_batches(&buf) {
        let base = testkit::base_offset_of(b);
        let count = testkit::record_count_of(b) as i64;
        stored.push(Stored { base, last: base + count - 1, bytes: b.to_vec() });
    }
    (info, stored)
}

/// Appends `n` single batches of `records` records each, timestamps `ts0`, `ts0 + 1`, ...
pub fn fill(log: &Log, n: usize, records: i32, value_len: usize, ts0: i64) -> Vec<Stored> {
    let mut all = Vec::new();
    for i in 0..n {
        let (_, stored) = append(log, &batch(records, value_len, ts0 + i as i64), ts0 + i as i64);
        all.extend(stored);
    }
    all
}

/// Checks that reading at every offset returns the batch containing it, byte for byte.
pub fn assert_reads_match(log: &Log, model: &[Stored]) {
    for s in model {
        for offset in s.base..=s.last {
            if offset < log.log_start_offset() {
                continue;
            }
            let r = log.read(offset, 1, i64::MAX, true).expect("read");
            assert_eq!(r.first_offset, s.base, "offset {offset}");
            assert_eq!(r.last_offset, s.last, "offset {offset}");
            assert_eq!(&r.records[..], &s.bytes[..], "offset {offset}");
        }
    }
    if let Some(last) = model.last() {
        assert_eq!(log.log_end_offset(), last.last + 1);
    }
}

/// Everything readable from the log start, concatenated.
pub fn read_everything(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX, true).expect("read");
        assert!(!r.is_empty(), "empty read at {offset}");
        out.extend_from_slice(&r.records);
        offset = r.last_offset + 1;
    }
    out
}

pub fn concat(model: &[Stored]) -> Vec<u8> {
    model.iter().flat_map(|s| s.bytes.iter().copied()).collect()
}

pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    v.sort();
    v
}
