mod common;

use common::*;
use strom_log::{LogConfig, LogError};

const HOUR: i64 = 3_600_000;

#[test]
fn retention_by_time_deletes_expired_segments_and_advances_log_start() {
    // Batch i is stamped i minutes.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { segment_bytes: 2000, retention_ms: HOUR, ..LogConfig::default() });
    let mut model = Vec::new();
    for i in 0..120i64 {
        model.extend(append(&log, &batch(1, 100, i * 60_000), 0).1);
    }
    let bases = log.segment_base_offsets();
    let size_before = log.size_bytes();

    // At now = 90 minutes, batches older than 30 minutes are expired; a segment goes once its
    // newest batch is.
    let now = 90 * 60_000;
    let report = log.apply_retention(now).unwrap();
    let expected_kept: Vec<i64> = bases
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let newest = bases.get(i + 1).map_or(119, |next| next - 1);
            now - newest * 60_000 <= HOUR
        })
        .map(|(_, b)| *b)
        .collect();
    assert_eq!(log.segment_base_offsets(), expected_kept);
    assert_eq!(report.deleted_segments, bases.len() - expected_kept.len());
    assert_eq!(report.log_start_offset, expected_kept[0]);
    assert_eq!(log.log_start_offset(), expected_kept[0]);
    assert_eq!(report.deleted_bytes, size_before - log.size_bytes());
    assert_eq!(files_with_ext(dir.path(), "log").len(), expected_kept.len());
    assert_eq!(files_with_ext(dir.path(), "timeindex").len(), expected_kept.len());
    assert!(matches!(log.read(expected_kept[0] - 1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    assert_reads_match(&log, &model);

    // Nothing more to do at the same time.
    assert_eq!(log.apply_retention(now).unwrap().deleted_segments, 0);
}

#[test]
fn retention_by_time_rolls_when_everything_expired() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 2000, retention_ms: HOUR, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config.clone());
    fill(&log, 30, 1, 100, 1000);
    let end = log.log_end_offset();
    let report = log.apply_retention(10 * HOUR).unwrap();
    assert!(report.deleted_segments >= 2);
    assert_eq!(log.segment_base_offsets(), vec![end]);
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (end, end, 0));
    assert!(log.read(end, 100, i64::MAX, true).unwrap().is_empty());
    // An empty active segment is never deleted.
    assert_eq!(log.apply_retention(20 * HOUR).unwrap().deleted_segments, 0);
    let (info, stored) = append(&log, &batch(1, 10, 5), 5);
    assert_eq!(info.first_offset, end);
    assert_reads_match(&log, &stored);
    log.close().unwrap();
    drop(log);
    let (log, _) = open(dir.path(), config);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end + 1));
}

#[test]
fn retention_by_time_uses_mtime_without_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 2000, retention_ms: HOUR, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    fill(&log, 30, 1, 100, -1); // ts0 = -1 is "no timestamp" for the first batch only
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // Data written just now (timestamps are tiny but the first segment has one of -1 and
    // others >= 0; all are ancient relative to `now`).
    let report = log.apply_retention(now).unwrap();
    assert!(report.deleted_segments > 0);

    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { segment_bytes: 2000, retention_ms: HOUR, ..LogConfig::default() });
    for _ in 0..30 {
        append(&log, &batch(1, 100, -1), 0);
    }
    assert!(log.segment_count() > 2);
    // Files were modified just now: not expired yet, but expired an hour and a bit later.
    assert_eq!(log.apply_retention(now).unwrap().deleted_segments, 0);
    assert!(log.apply_retention(now + 2 * HOUR).unwrap().deleted_segments > 0);
}

#[test]
fn retention_by_size_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 2000, retention_bytes: 5000, retention_ms: -1, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    let model = fill(&log, 100, 1, 100, 0);
    let sizes_before = log.size_bytes();
    assert!(sizes_before > 10_000);
    let report = log.apply_retention(i64::MAX).unwrap();
    assert!(report.deleted_segments > 0);
    let size = log.size_bytes();
    assert!(size >= 5000, "{size}");
    assert_eq!(report.deleted_bytes, sizes_before - size);
    // Deleting one more segment would go below the limit.
    let first_segment_size = {
        let bases = log.segment_base_offsets();
        model.iter().filter(|s| s.base >= bases[0] && s.base < bases[1]).map(|s| s.bytes.len() as u64).sum::<u64>()
    };
    assert!(size - first_segment_size < 5000);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    assert_reads_match(&log, &model);

    // retention.bytes = 0 deletes everything, rolling the active segment.
    let mut c = log.config();
    c.retention_bytes = 0;
    log.update_config(c);
    log.apply_retention(0).unwrap();
    assert_eq!(log.size_bytes(), 0);
    assert_eq!(log.log_start_offset(), 100);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn advance_log_start_offset_deletes_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { segment_bytes: 2000, ..LogConfig::default() });
    let model = fill(&log, 60, 2, 100, 0);
    let bases = log.segment_base_offsets();
    let target = bases[2] + 3;
    log.advance_log_start_offset(target).unwrap();
    assert_eq!(log.log_start_offset(), target);
    assert_eq!(log.segment_base_offsets(), bases[2..].to_vec());
    assert_eq!(files_with_ext(dir.path(), "log").len(), bases.len() - 2);
    // Moving backwards is a no-op; past the end is an error.
    log.advance_log_start_offset(1).unwrap();
    assert_eq!(log.log_start_offset(), target);
    assert!(matches!(log.advance_log_start_offset(121), Err(LogError::OffsetOutOfRange { requested: 121, .. })));
    // Up to the log end: the active segment stays.
    log.advance_log_start_offset(120).unwrap();
    assert_eq!(log.log_start_offset(), 120);
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(120, 100, i64::MAX, true).unwrap().is_empty());
    assert!(matches!(log.read(119, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    drop(model);
}
