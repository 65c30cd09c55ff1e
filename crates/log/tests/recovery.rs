mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use strom_log::LogConfig;

fn last_log_file(dir: &Path) -> PathBuf {
    dir.join(files_with_ext(dir, "log").pop().unwrap())
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Appends, flushes, then "crashes" (drops the log without close).
fn crashed_log(dir: &Path, config: LogConfig, n: usize) -> Vec<Stored> {
    let (log, _) = open(dir, config);
    let model = fill(&log, n, 2, 60, 1000);
    log.flush().unwrap();
    model
}

#[test]
fn clean_reopen_skips_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        let model = fill(&log, 100, 2, 60, 1000);
        log.close().unwrap();
        model
    };
    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert_eq!((report.recovered_segments, report.truncated_bytes, report.rebuilt_indexes), (0, 0, 0));
    assert_eq!(report.log_end_offset, 200);
    assert_eq!(log.flushed_offset(), 200);
    assert_reads_match(&log, &model);
    // The marker is consumed by the open: a crash now must not look clean.
    drop(log);
    let (log, report) = open(dir.path(), small_config());
    assert!(!report.clean_shutdown);
    // Only the active segment is after the recovery point.
    assert_eq!(report.recovered_segments, 1);
    assert_eq!(report.truncated_bytes, 0);
    assert_reads_match(&log, &model);
}

#[test]
fn empty_log_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    log.close().unwrap();
    let (log, report) = open(dir.path(), LogConfig::default());
    assert!(report.clean_shutdown);
    assert_eq!(log.log_end_offset(), 0);
    drop(log);
    let (log, report) = open(dir.path(), LogConfig::default());
    assert!(!report.clean_shutdown);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(files_with_ext(dir.path(), "log"), vec!["00000000000000000000.log".to_string()]);
}

#[test]
fn torn_tail_is_truncated_to_the_last_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let model = crashed_log(dir.path(), small_config(), 50);
    let path = last_log_file(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    set_len(&path, len - 7);
    let last_size = model.last().unwrap().bytes.len() as u64;

    let (log, report) = open(dir.path(), small_config());
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, last_size - 7);
    assert_eq!(report.log_end_offset, model.last().unwrap().base);
    assert_eq!(fs::metadata(&path).unwrap().len(), len - last_size);
    let kept = &model[..model.len() - 1];
    assert_reads_match(&log, kept);
    // Appends reuse the lost offsets.
    let (info, _) = append(&log, &batch(1, 5, 0), 0);
    assert_eq!(info.first_offset, model.last().unwrap().base);
}

#[test]
fn torn_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = crashed_log(dir.path(), LogConfig::default(), 10);
    let path = last_log_file(dir.path());
    let total = concat(&model).len() as u64;
    let last_size = model[9].bytes.len() as u64;
    set_len(&path, total - last_size + 30);
    let (log, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report.truncated_bytes, 30);
    assert_reads_match(&log, &model[..9]);
}

#[test]
fn corrupt_crc_in_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = crashed_log(dir.path(), small_config(), 30);
    let path = last_log_file(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes[len as usize - 3] ^= 0x55;
    fs::write(&path, &bytes).unwrap();

    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.truncated_bytes, model.last().unwrap().bytes.len() as u64);
    assert_reads_match(&log, &model[..model.len() - 1]);
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    for garbage in [vec![0u8; 4096], (0..200u32).map(|i| (i * 37) as u8).collect::<Vec<_>>(), vec![0xff; 5]] {
        let dir = tempfile::tempdir().unwrap();
        let model = crashed_log(dir.path(), small_config(), 30);
        let path = last_log_file(dir.path());
        OpenOptions::new().append(true).open(&path).unwrap().write_all(&garbage).unwrap();
        let (log, report) = open(dir.path(), small_config());
        assert_eq!(report.truncated_bytes, garbage.len() as u64);
        assert_reads_match(&log, &model);
    }
}

#[test]
fn corruption_in_an_unflushed_middle_segment_drops_everything_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        fill(&log, 100, 2, 60, 1000) // never flushed: no recovery point beyond 0
    };
    let logs = files_with_ext(dir.path(), "log");
    assert!(logs.len() >= 4);
    let victim = dir.path().join(&logs[1]);
    let len = fs::metadata(&victim).unwrap().len();
    set_len(&victim, len - 1);
    let second_base: i64 = logs[2][..20].parse().unwrap();

    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.recovered_segments, 2);
    let kept: Vec<Stored> = model.iter().filter(|s| s.last < second_base).cloned().collect();
    let kept = &kept[..kept.len() - 1];
    assert_eq!(log.log_end_offset(), kept.last().unwrap().last + 1);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(files_with_ext(dir.path(), "log").len(), 2);
    assert_eq!(files_with_ext(dir.path(), "index").len(), 2);
    assert_reads_match(&log, kept);
}

#[test]
fn flushed_data_survives_a_crash_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), small_config());
    let mut model = fill(&log, 40, 2, 60, 1000);
    let durable = log.flush().unwrap();
    assert_eq!(durable, log.log_end_offset());
    assert_eq!(log.flushed_offset(), durable);
    let flushed_model = model.clone();
    model.extend(fill(&log, 3, 2, 60, 2000));
    drop(log);
    // The unflushed tail was torn mid-batch.
    let path = last_log_file(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    set_len(&path, len - 20);
    let (log, _) = open(dir.path(), small_config());
    assert!(log.log_end_offset() >= durable);
    model.pop();
    assert_reads_match(&log, &model);
    assert!(model.len() > flushed_model.len());
}

#[test]
fn missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        let model = fill(&log, 80, 2, 60, 1000);
        log.close().unwrap();
        model
    };
    let indexes = files_with_ext(dir.path(), "index");
    let time_indexes = files_with_ext(dir.path(), "timeindex");
    let before: Vec<Vec<u8>> = indexes.iter().map(|n| fs::read(dir.path().join(n)).unwrap()).collect();
    fs::remove_file(dir.path().join(&indexes[0])).unwrap();
    fs::remove_file(dir.path().join(&time_indexes[1])).unwrap();
    fs::remove_file(dir.path().join(indexes.last().unwrap())).unwrap();

    let (log, report) = open(dir.path(), small_config());
    assert!(report.clean_shutdown);
    assert_eq!(report.rebuilt_indexes, 3);
    assert_eq!(report.truncated_bytes, 0);
    assert_reads_match(&log, &model);
    let after: Vec<Vec<u8>> = indexes.iter().map(|n| fs::read(dir.path().join(n)).unwrap()).collect();
    assert_eq!(before, after, "rebuilt indexes equal the originals");
    assert!(dir.path().join(&time_indexes[1]).exists());
    let ts = log.find_batch_by_timestamp(1030, i64::MAX).unwrap().unwrap();
    assert_eq!(ts.first_offset, 60);
}

#[test]
fn corrupt_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        let model = fill(&log, 120, 2, 60, 1000);
        log.close().unwrap();
        model
    };
    let indexes = files_with_ext(dir.path(), "index");
    let time_indexes = files_with_ext(dir.path(), "timeindex");
    assert!(indexes.len() > 5);
    // Not a whole number of entries.
    OpenOptions::new().append(true).open(dir.path().join(&indexes[0])).unwrap().write_all(&[1, 2, 3]).unwrap();
    // Last entry points past the end of the log.
    let mut bogus = fs::read(dir.path().join(&indexes[1])).unwrap();
    bogus.extend([0, 0, 0, 99, 0, 1, 0, 0]);
    fs::write(dir.path().join(&indexes[1]), bogus).unwrap();
    // Zero-length index of a non-empty segment.
    fs::write(dir.path().join(&indexes[2]), []).unwrap();
    // Time index entry beyond the segment.
    let mut bogus = fs::read(dir.path().join(&time_indexes[3])).unwrap();
    bogus.extend(i64::MAX.to_be_bytes());
    bogus.extend(100_000u32.to_be_bytes());
    fs::write(dir.path().join(&time_indexes[3]), bogus).unwrap();
    // Active segment's index out of order.
    let active_index = dir.path().join(indexes.last().unwrap());
    let mut entries = fs::read(&active_index).unwrap();
    assert!(entries.len() >= 16);
    entries.rotate_left(8);
    fs::write(&active_index, entries).unwrap();

    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.rebuilt_indexes, 5);
    assert_reads_match(&log, &model);
    assert_eq!(log.max_timestamp_batch(i64::MAX).unwrap().unwrap().first_offset, 238);
}

#[test]
fn inconsistent_clean_marker_falls_back_to_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), LogConfig::default());
        let model = fill(&log, 10, 1, 10, 0);
        log.close().unwrap();
        model
    };
    fs::write(dir.path().join("clean-shutdown"), "12345\n").unwrap();
    let (log, report) = open(dir.path(), LogConfig::default());
    assert!(!report.clean_shutdown);
    assert_reads_match(&log, &model);
}

#[test]
fn leftovers_are_cleaned_and_foreign_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let model = crashed_log(dir.path(), LogConfig::default(), 5);
    let p = dir.path();
    fs::write(p.join("00000000000000000000.log.deleted"), b"x").unwrap();
    fs::write(p.join("00000000000000000042.index.swap"), b"x").unwrap();
    fs::write(p.join("00000000000000099999.index"), b"x").unwrap();
    fs::write(p.join("00000000000000099999.timeindex"), b"x").unwrap();
    fs::write(p.join("recovery-point.tmp"), b"x").unwrap();
    fs::write(p.join("partition.metadata"), b"keep").unwrap();
    fs::write(p.join("leader-epoch-checkpoint"), b"keep").unwrap();
    let (log, _) = open(p, LogConfig::default());
    let mut names: Vec<String> =
        fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "00000000000000000000.index",
            "00000000000000000000.log",
            "00000000000000000000.timeindex",
            "leader-epoch-checkpoint",
            "partition.metadata",
            "recovery-point",
        ]
    );
    assert_reads_match(&log, &model);
}

#[test]
fn log_start_offset_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        let model = fill(&log, 60, 2, 60, 1000);
        log.advance_log_start_offset(45).unwrap();
        model
    };
    let (log, _) = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 45);
    assert!(log.segment_base_offsets()[0] <= 45);
    assert_reads_match(&log, &model);
}

#[test]
fn log_start_beyond_recovered_end_starts_a_fresh_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = open(dir.path(), LogConfig::default());
        fill(&log, 10, 1, 10, 0);
        log.advance_log_start_offset(10).unwrap();
    }
    let path = last_log_file(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    set_len(&path, len - 1);
    let (log, _) = open(dir.path(), LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert_eq!(log.segment_base_offsets(), vec![10]);
    let (info, _) = append(&log, &batch(1, 1, 0), 0);
    assert_eq!(info.first_offset, 10);
}

#[test]
fn recovery_point_limits_the_scan_to_new_segments() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let (log, _) = open(dir.path(), small_config());
        let mut model = fill(&log, 60, 2, 60, 1000);
        log.flush().unwrap();
        let segments_at_flush = log.segment_count();
        model.extend(fill(&log, 60, 2, 60, 2000));
        assert!(log.segment_count() > segments_at_flush + 1);
        model
    };
    let (log, report) = open(dir.path(), small_config());
    assert!(report.recovered_segments > 2);
    assert!(report.recovered_segments < log.segment_count());
    assert_reads_match(&log, &model);
}

#[test]
fn batches_larger_than_the_scan_buffer_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_message_bytes: 8 << 20, ..LogConfig::default() };
    let model = {
        let (log, _) = open(dir.path(), config.clone());
        let mut model = Vec::new();
        for i in 0..3 {
            model.extend(append(&log, &batch(2, 3 << 20, i), 0).1);
        }
        model
    };
    let (log, report) = open(dir.path(), config.clone());
    assert_eq!(report.truncated_bytes, 0);
    assert_reads_match(&log, &model);
    drop(log);

    // Corrupt a byte deep inside the last batch, past the first megabyte.
    let path = last_log_file(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let last_start = bytes.len() - model[2].bytes.len();
    bytes[last_start + (2 << 20)] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (log, report) = open(dir.path(), config);
    assert_eq!(report.truncated_bytes, model[2].bytes.len() as u64);
    assert_reads_match(&log, &model[..2]);
}
