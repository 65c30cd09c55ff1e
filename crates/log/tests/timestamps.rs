mod common;

use common::*;
use strom_log::{Log, LogConfig};

/// Deterministic pseudo-random timestamps with ties and regressions.
fn timestamps(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed;
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let jitter = ((x >> 33) % 400) as i64;
            (i as i64) * 10 + jitter - 200
        })
        .collect()
}

fn expected_by_timestamp(model: &[Stored], ts: i64, log_start: i64, max_offset: i64) -> Option<i64> {
    model
        .iter()
        .filter(|s| s.last >= log_start && s.last < max_offset)
        .find(|s| common::testkit::max_timestamp_of(&s.bytes) >= ts)
        .map(|s| s.base)
}

fn expected_max(model: &[Stored], log_start: i64, max_offset: i64) -> Option<i64> {
    let mut best: Option<(i64, i64)> = None;
    for s in model.iter().filter(|s| s.last >= log_start && s.last < max_offset) {
        let ts = common::testkit::max_timestamp_of(&s.bytes);
        if best.is_none_or(|(b, _)| ts > b) {
            best = Some((ts, s.base));
        }
    }
    best.map(|(_, base)| base)
}

fn check_all(log: &Log, model: &[Stored]) {
    let end = log.log_end_offset();
    let start = log.log_start_offset();
    let bounds: Vec<i64> =
        [0, 1, 7, end / 3, end / 2, end - 5, end - 1, end, i64::MAX].into_iter().filter(|b| *b >= 0).collect();
    let max_ts = model.iter().map(|s| common::testkit::max_timestamp_of(&s.bytes)).max().unwrap();
    for &max_offset in &bounds {
        for ts in (-300..max_ts + 20).step_by(37) {
            let got = log.find_batch_by_timestamp(ts, max_offset).unwrap();
            let want = expected_by_timestamp(model, ts, start, max_offset);
            assert_eq!(got.as_ref().map(|r| r.first_offset), want, "ts {ts} max_offset {max_offset}");
            if let Some(r) = got {
                let s = model.iter().find(|s| s.base == r.first_offset).unwrap();
                assert_eq!(&r.records[..], &s.bytes[..]);
                assert_eq!(r.last_offset, s.last);
            }
        }
        let got = log.max_timestamp_batch(max_offset).unwrap().map(|r| r.first_offset);
        assert_eq!(got, expected_max(model, start, max_offset), "max_offset {max_offset}");
    }
}

fn build_log(dir: &std::path::Path, config: LogConfig, ts: &[i64]) -> (Log, Vec<Stored>) {
    let (log, _) = open(dir, config);
    let mut model = Vec::new();
    for (i, &t) in ts.iter().enumerate() {
        let spec = BatchSpec {
            record_count: 1 + (i % 3) as i32,
            value_len: 40,
            base_timestamp: t - 5,
            timestamp_step: 5,
            fill: i as u8,
            ..Default::default()
        };
        model.extend(append(&log, &build(&spec), 0).1);
    }
    (log, model)
}

#[test]
fn timestamp_lookups_across_segments_match_brute_force() {
    for (seed, interval) in [(1u64, 256u32), (2, 0), (3, 100_000)] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 3000, index_interval_bytes: interval, ..LogConfig::default() };
        let ts = timestamps(150, seed);
        let (log, model) = build_log(dir.path(), config.clone(), &ts);
        assert!(log.segment_count() > 3);
        check_all(&log, &model);
        // After a clean reopen (closed segments file-backed) and after a crash recovery.
        log.close().unwrap();
        drop(log);
        let (log, _) = open(dir.path(), config.clone());
        check_all(&log, &model);
        drop(log);
        let (log, report) = open(dir.path(), config.clone());
        assert!(!report.clean_shutdown);
        check_all(&log, &model);
        // With a log start offset in the middle of a segment.
        let start = model[40].base + 1;
        log.advance_log_start_offset(start).unwrap();
        check_all(&log, &model);
    }
}

#[test]
fn increasing_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let ts: Vec<i64> = (0..100).map(|i| 1000 + i * 10).collect();
    let (log, model) = build_log(dir.path(), small_config(), &ts);
    check_all(&log, &model);
    assert_eq!(
        log.find_batch_by_timestamp(1055, i64::MAX).unwrap().map(|r| r.first_offset),
        expected_by_timestamp(&model, 1055, 0, i64::MAX)
    );
    assert!(log.find_batch_by_timestamp(99_999, i64::MAX).unwrap().is_none());
    assert_eq!(log.max_timestamp_batch(i64::MAX).unwrap().map(|r| r.first_offset), expected_max(&model, 0, i64::MAX));
}

#[test]
fn empty_log_has_no_timestamp_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    assert!(log.find_batch_by_timestamp(0, i64::MAX).unwrap().is_none());
    assert!(log.max_timestamp_batch(i64::MAX).unwrap().is_none());
}
