//! The files a log holds open are bounded: inactive segments' files are opened on demand and closed by the
//! [`FileCache`] beyond its capacity, while appends, recovery, reads across every segment, timestamp lookups,
//! retention and compaction work as before.
//!
//! One test function: it counts this process's descriptors in /proc/self/fd, which other tests running in parallel
//! in the same binary would disturb.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use strom_log::{FileCache, Log, LogConfig};

const BOUND: usize = 12;
const SEGMENTS: usize = 150;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Descriptors the log may hold: the bound plus the active segment's three files, and a few in flight.
fn assert_bounded(what: &str, baseline: usize, cache: &FileCache) {
    let now = open_fds();
    assert!(cache.open_files() <= BOUND, "{what}: the cache counts {} open files", cache.open_files());
    assert!(now <= baseline + BOUND + 3 + 2, "{what}: {now} descriptors open, {baseline} before the log was opened");
}

fn open_with(dir: &Path, config: LogConfig, cache: &Arc<FileCache>) -> Log {
    Log::open_with_cache(dir, config, cache.clone()).expect("open log").0
}

#[test]
fn inactive_segments_hold_a_bounded_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = open_fds();
    let config = LogConfig { segment_bytes: 1024, index_interval_bytes: 128, ..LogConfig::default() };
    let cache = FileCache::new(BOUND);
    let log = open_with(dir.path(), config.clone(), &cache);
    let mut model = Vec::new();
    let mut i = 0i64;
    while log.segment_count() < SEGMENTS {
        model.extend(append(&log, &batch(2, 100, 1_000 + i), 1_000 + i).1);
        i += 1;
        if i % 64 == 0 {
            assert_bounded("appending", baseline, &cache);
        }
    }
    log.flush().unwrap();
    assert_bounded("after appends and a flush", baseline, &cache);

    // Reads across every segment, each of them twice (the second pass reopens what the first closed).
    for _ in 0..2 {
        for s in &model {
            let r = log.read(s.base, 1, i64::MAX, true).unwrap();
            assert_eq!(&r.records[..], &s.bytes[..], "offset {}", s.base);
            assert_bounded("reading", baseline, &cache);
        }
    }
    // ListOffsets by timestamp, and the largest timestamp, reach into every segment's time index.
    for (n, s) in model.iter().enumerate().step_by(7) {
        let found = log.find_batch_by_timestamp(1_000 + n as i64, i64::MAX).unwrap().unwrap();
        assert_eq!(found.first_offset, s.base);
        assert_bounded("timestamp lookups", baseline, &cache);
    }
    assert_eq!(log.max_timestamp_batch(i64::MAX).unwrap().unwrap().first_offset, model.last().unwrap().base);
    assert!(cache.total_opens() > 0);

    // A clean restart, then a crash (no clean close): opening does not keep every segment's files open either.
    log.close().unwrap();
    drop(log);
    assert_eq!(open_fds(), baseline, "a closed and dropped log holds no descriptors");
    let log = open_with(dir.path(), config.clone(), &cache);
    assert_bounded("after a clean open", baseline, &cache);
    assert_reads_match(&log, &model);
    assert_bounded("reading after a clean open", baseline, &cache);
    drop(log);
    // Without a recovery point every segment is scanned and its indexes checked.
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let (log, report) = Log::open_with_cache(dir.path(), config.clone(), cache.clone()).unwrap();
    assert_eq!(report.recovered_segments, SEGMENTS);
    assert_bounded("after crash recovery of every segment", baseline, &cache);
    assert_reads_match(&log, &model);

    // Retention deletes the older half; reads of what is left still work and stay bounded.
    let keep_from = model[model.len() / 2].base;
    log.advance_log_start_offset(keep_from).unwrap();
    assert!(log.segment_count() < SEGMENTS);
    let kept: Vec<Stored> = model.iter().filter(|s| s.base >= keep_from).cloned().collect();
    assert_reads_match(&log, &kept);
    assert_bounded("after retention", baseline, &cache);
    drop(log);
    assert_eq!(cache.open_files(), 0);
}
