mod common;

use common::*;
use strom_log::{LogConfig, LogError, TimestampType};

#[test]
fn round_trip_at_every_offset_including_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open(dir.path(), small_config());
    assert_eq!(report.log_end_offset, 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));

    let mut model = Vec::new();
    for i in 0..60 {
        let (info, stored) = append(&log, &batch(1 + i % 5, 20 + (i as usize * 7) % 90, 1000 + i as i64), 5000);
        assert_eq!(info.first_offset, stored[0].base);
        assert_eq!(info.last_offset, stored[0].last);
        assert_eq!(info.batch_count, 1);
        assert_eq!(info.record_count, i64::from(1 + i % 5));
        assert_eq!(info.log_append_time, -1);
        assert_eq!(info.max_timestamp, 1000 + i as i64);
        model.extend(stored);
    }
    assert!(log.segment_count() > 1, "small segments should have rolled");
    assert_reads_match(&log, &model);
    assert_eq!(read_everything(&log), concat(&model));
    assert_eq!(log.size_bytes(), concat(&model).len() as u64);

    // Stored bytes are the input with only baseOffset and the leader epoch changed.
    let input = batch(3, 10, 77);
    let (info, stored) = append(&log, &input, 5000);
    assert_eq!(stored[0].bytes, stamped(&input, info.first_offset, EPOCH));
    assert!(common::testkit::crc_ok(&stored[0].bytes));
}

#[test]
fn multi_batch_append_is_one_record_set() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let mut set = batch(2, 10, 1);
    set.extend(batch(3, 10, 5));
    set.extend(batch(1, 10, 3));
    let (info, stored) = append(&log, &set, 10);
    assert_eq!((info.first_offset, info.last_offset, info.batch_count, info.record_count), (0, 5, 3, 6));
    assert_eq!(info.max_timestamp, 5);
    assert_eq!(stored.iter().map(|s| (s.base, s.last)).collect::<Vec<_>>(), vec![(0, 1), (2, 4), (5, 5)]);
    assert_eq!(log.log_end_offset(), 6);
    assert_reads_match(&log, &stored);
}

#[test]
fn max_bytes_and_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let model = fill(&log, 10, 2, 100, 0);
    let size = model[0].bytes.len();
    assert!(model.iter().all(|s| s.bytes.len() == size));

    let r = log.read(0, size * 3, i64::MAX, false).unwrap();
    assert_eq!((r.first_offset, r.last_offset, r.records.len()), (0, 5, size * 3));
    // A partial batch is trimmed off.
    let r = log.read(0, size * 3 + size / 2, i64::MAX, false).unwrap();
    assert_eq!((r.last_offset, r.records.len()), (5, size * 3));
    // Mid-batch start returns the containing batch.
    let r = log.read(3, size * 2, i64::MAX, false).unwrap();
    assert_eq!((r.first_offset, r.last_offset), (2, 5));
    // First batch larger than max_bytes: nothing, unless min_one_batch.
    let r = log.read(4, size - 1, i64::MAX, false).unwrap();
    assert!(r.is_empty());
    assert_eq!((r.first_offset, r.last_offset), (-1, -1));
    let r = log.read(4, 0, i64::MAX, true).unwrap();
    assert_eq!((r.first_offset, r.last_offset, r.records.len()), (4, 5, size));
    assert_eq!(&r.records[..], &model[2].bytes[..]);
}

#[test]
fn max_offset_is_an_exclusive_bound_on_last_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    fill(&log, 5, 3, 10, 0); // batches [0,2] [3,5] [6,8] [9,11] [12,14]
    let r = log.read(0, 1 << 20, 9, false).unwrap();
    assert_eq!((r.first_offset, r.last_offset), (0, 8));
    // A batch straddling the bound is excluded.
    let r = log.read(0, 1 << 20, 8, false).unwrap();
    assert_eq!((r.first_offset, r.last_offset), (0, 5));
    let r = log.read(6, 1 << 20, 8, true).unwrap();
    assert!(r.is_empty());
    let r = log.read(10, 1 << 20, 10, true).unwrap();
    assert!(r.is_empty());
}

#[test]
fn offset_out_of_range_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    fill(&log, 3, 2, 10, 0);
    assert!(log.read(6, 100, i64::MAX, true).unwrap().is_empty());
    match log.read(7, 100, i64::MAX, true) {
        Err(LogError::OffsetOutOfRange { requested: 7, log_start: 0, log_end: 6 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(log.read(-1, 100, i64::MAX, true), Err(LogError::OffsetOutOfRange { .. })));
    log.advance_log_start_offset(3).unwrap();
    assert!(matches!(
        log.read(2, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { requested: 2, log_start: 3, log_end: 6 })
    ));
    // The start offset is mid-batch: the containing batch is returned.
    assert_eq!(log.read(3, 100, i64::MAX, true).unwrap().first_offset, 2);
}

#[test]
fn rolls_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1000, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    let model = fill(&log, 20, 1, 200, 0);
    let per_batch = model[0].bytes.len() as u64;
    let per_segment = 1000 / per_batch;
    assert_eq!(log.segment_count() as u64, 20u64.div_ceil(per_segment));
    let bases = log.segment_base_offsets();
    assert_eq!(bases[1], per_segment as i64);
    assert_eq!(files_with_ext(dir.path(), "log").len(), bases.len());
    assert_eq!(files_with_ext(dir.path(), "log")[1], format!("{:020}.log", per_segment));
    assert_reads_match(&log, &model);

    // A record set bigger than segment.bytes is refused, as Kafka's RecordBatchTooLargeException
    // (RECORD_LIST_TOO_LARGE), and nothing changes.
    let end = log.log_end_offset();
    let mut big = batch(1, 3000, 0);
    let e = log.append(&mut big, 0, 0, false).unwrap_err();
    assert!(matches!(e, strom_log::LogError::RecordListTooLarge { max: 1000, .. }), "{e}");
    assert_eq!(log.log_end_offset(), end);
    assert_reads_match(&log, &model);
}

#[test]
fn rolls_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_ms: 1000, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    append(&log, &batch(1, 10, 0), 10_000);
    append(&log, &batch(1, 10, 0), 10_500);
    append(&log, &batch(1, 10, 0), 11_000);
    assert_eq!(log.segment_count(), 1);
    append(&log, &batch(1, 10, 0), 11_001);
    assert_eq!(log.segment_base_offsets(), vec![0, 3]);
    append(&log, &batch(1, 10, 0), 12_001);
    assert_eq!(log.segment_count(), 2);
    append(&log, &batch(1, 10, 0), 12_002);
    assert_eq!(log.segment_base_offsets(), vec![0, 3, 5]);
}

#[test]
fn index_lookups_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 20_000, index_interval_bytes: 100, ..LogConfig::default() };
    let model = {
        let (log, _) = open(dir.path(), config.clone());
        let model = fill(&log, 300, 3, 50, 0);
        log.close().unwrap();
        model
    };
    let (log, report) = open(dir.path(), config.clone());
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_segments, 0);
    assert!(log.segment_count() > 3);
    assert_reads_match(&log, &model);
    // Index files are non-trivial and whole.
    for name in files_with_ext(dir.path(), "index") {
        let len = std::fs::metadata(dir.path().join(&name)).unwrap().len();
        assert!(len > 8, "{name}: {len}");
        assert_eq!(len % 8, 0, "{name}");
    }
    // Appends continue where they left off.
    let (info, stored) = append(&log, &batch(2, 5, 1), 1);
    assert_eq!(info.first_offset, 900);
    let mut model = model;
    model.extend(stored);
    log.close().unwrap();
    drop(log);
    let (log, _) = open(dir.path(), config);
    assert_reads_match(&log, &model);
}

#[test]
fn log_append_time_rewrites_max_timestamp_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { message_timestamp_type: TimestampType::LogAppendTime, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    let input = build(&BatchSpec { record_count: 3, base_timestamp: 100, timestamp_step: 10, ..Default::default() });
    let (info, stored) = append(&log, &input, 123_456);
    assert_eq!(info.log_append_time, 123_456);
    assert_eq!(info.max_timestamp, 123_456);
    let b = &stored[0].bytes;
    assert!(common::testkit::crc_ok(b));
    assert_eq!(common::testkit::max_timestamp_of(b), 123_456);
    let h = strom_log::validate_batches(b, u32::MAX).unwrap()[0];
    assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(h.base_timestamp, 100);
    let r = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    assert_eq!(&r.records[..], &b[..]);
    assert_eq!(log.max_timestamp_batch(i64::MAX).unwrap().unwrap().first_offset, 0);
}

#[test]
fn create_time_keeps_bytes_except_offset_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let input = build(&BatchSpec {
        record_count: 4,
        base_timestamp: 7,
        timestamp_step: 3,
        producer_id: 9,
        ..Default::default()
    });
    let (_, stored) = append(&log, &input, 1);
    assert_eq!(stored[0].bytes, stamped(&input, 0, EPOCH));
    assert_eq!(common::testkit::leader_epoch_of(&stored[0].bytes), EPOCH);
}

fn assert_rejected(log: &strom_log::Log, input: &[u8], check: impl Fn(&LogError) -> bool) {
    let end = log.log_end_offset();
    let size = log.size_bytes();
    let mut buf = input.to_vec();
    let err = log.append(&mut buf, EPOCH, 0, false).unwrap_err();
    assert!(check(&err), "unexpected error {err:?}");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), size);
}

#[test]
fn bad_input_is_rejected_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_message_bytes: 500, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    let model = fill(&log, 3, 1, 10, 0);
    let good = batch(2, 10, 0);

    let mut bad_crc = batch(2, 10, 0);
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let mut set = good.clone();
    set.extend(&bad_crc);
    assert_rejected(&log, &set, |e| matches!(e, LogError::CorruptMessage(_)));

    let mut bad_magic = batch(1, 10, 0);
    bad_magic[16] = 1;
    let mut set = good.clone();
    set.extend(&bad_magic);
    assert_rejected(&log, &set, |e| matches!(e, LogError::UnsupportedMagic(1)));

    let mut set = good.clone();
    set.extend(batch(1, 600, 0));
    assert_rejected(&log, &set, |e| matches!(e, LogError::MessageTooLarge { max: 500, .. }));

    let mut set = good.clone();
    set.extend(&good[..good.len() - 3]);
    assert_rejected(&log, &set, |e| matches!(e, LogError::InvalidRecord(_)));
    assert_rejected(&log, &good[..30], |e| matches!(e, LogError::InvalidRecord(_)));

    let control = build(&BatchSpec { attributes: 0x20, ..Default::default() });
    let mut set = good.clone();
    set.extend(&control);
    assert_rejected(&log, &set, |e| matches!(e, LogError::InvalidRecord(_)));
    assert_reads_match(&log, &model);
    let mut buf = control.clone();
    log.append(&mut buf, EPOCH, 0, true).unwrap();
    let (info, _) = append(&log, &good, 0);
    assert_eq!(info.first_offset, 4);
}

#[test]
fn empty_record_set_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let info = log.append(&mut [], EPOCH, 0, false).unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.batch_count), (-1, -1, 0));
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn closed_log_refuses_appends_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    let model = fill(&log, 2, 1, 10, 0);
    log.close().unwrap();
    log.close().unwrap();
    let mut buf = batch(1, 10, 0);
    assert!(matches!(log.append(&mut buf, EPOCH, 0, false), Err(LogError::Io(_))));
    assert_reads_match(&log, &model);
}

#[test]
fn delete_removes_the_directory_while_readers_hold_segments() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("topic-0");
    let (log, _) = open(&dir, small_config());
    let model = fill(&log, 40, 1, 100, 0);
    log.delete().unwrap();
    assert!(!dir.exists());
    // Reads may still succeed from unlinked files or fail cleanly, but never panic.
    let _ = log.read(0, 1000, i64::MAX, true);
    assert!(log.append(&mut batch(1, 1, 0), EPOCH, 0, false).is_err());
    let (log2, report) = open(&dir, small_config());
    assert_eq!(report.log_end_offset, 0);
    assert_eq!(log2.log_end_offset(), 0);
    drop(model);
}

#[test]
fn update_config_applies_to_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig::default());
    append(&log, &batch(1, 10, 0), 0);
    let mut c = log.config();
    c.message_timestamp_type = TimestampType::LogAppendTime;
    log.update_config(c);
    assert_eq!(log.config().message_timestamp_type, TimestampType::LogAppendTime);
    let (info, _) = append(&log, &batch(1, 10, 0), 99);
    assert_eq!(info.log_append_time, 99);
}

#[test]
fn relative_directory_paths_work() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let name = dir.path().file_name().unwrap().to_owned();
    let relative = std::path::Path::new(&name).join("t-0");
    let (log, _) = open(&relative, LogConfig::default());
    fill(&log, 2, 1, 1, 0);
    log.close().unwrap();
    let (log, report) = open(&relative, LogConfig::default());
    assert!(report.clean_shutdown);
    log.delete().unwrap();
}
