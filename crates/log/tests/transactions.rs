//! Transactions in the log: the last stable offset, COMMIT/ABORT markers and their epoch checks, the aborted
//! transactions index (`.txnindex`), producer state snapshots with open transactions (format 2; format 1 still
//! loads), recovery after a crash with a transaction open, retention, and the cleaner around open and aborted
//! transactions.

mod common;

use std::path::Path;

use common::keyed::{decode, keyed_batch, rec};
use common::testkit::{build, BatchSpec};
use common::{files_with_ext, read_everything};
use strom_log::{
    compute_crc, AbortedTxn, CleanerConfig, CleanupPolicy, ControlType, EndTxnMarker, Log, LogConfig, LogError,
    Throttler,
};

const NOW: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;

/// Stamps producer id, epoch, base sequence and the transactional bit into a batch (and fixes its CRC).
fn make_transactional(b: Vec<u8>, pid: i64, epoch: i16, seq: i32) -> Vec<u8> {
    stamp(b, pid, epoch, seq, true)
}

/// Stamps producer id, epoch and base sequence (an idempotent producer's batch), transactional or not.
fn stamp(mut b: Vec<u8>, pid: i64, epoch: i16, seq: i32, transactional: bool) -> Vec<u8> {
    if transactional {
        let attrs = i16::from_be_bytes([b[21], b[22]]) | TRANSACTIONAL;
        b[21..23].copy_from_slice(&attrs.to_be_bytes());
    }
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn txn_batch(pid: i64, seq: i32, records: i32) -> Vec<u8> {
    let b = build(&BatchSpec { record_count: records, base_timestamp: NOW, ..Default::default() });
    make_transactional(b, pid, 0, seq)
}

fn plain(records: i32) -> Vec<u8> {
    build(&BatchSpec { record_count: records, base_timestamp: NOW, ..Default::default() })
}

fn append(log: &Log, mut b: Vec<u8>) -> Result<i64, LogError> {
    log.append(&mut b, 0, NOW, false).map(|i| i.first_offset)
}

fn marker(log: &Log, pid: i64, control_type: ControlType) -> Result<i64, LogError> {
    marker_with(log, pid, 0, control_type, 0)
}

fn marker_with(
    log: &Log,
    pid: i64,
    epoch: i16,
    control_type: ControlType,
    coordinator_epoch: i32,
) -> Result<i64, LogError> {
    log.append_marker(pid, epoch, EndTxnMarker { control_type, coordinator_epoch }, 0, NOW).map(|i| i.first_offset)
}

fn lso(log: &Log) -> i64 {
    log.last_stable_offset(log.log_end_offset())
}

fn aborted(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn { producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: lso }
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config).expect("open").0
}

#[test]
fn lso_markers_and_the_aborted_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(append(&log, plain(1)).unwrap(), 0);
    assert_eq!(append(&log, txn_batch(1, 0, 2)).unwrap(), 1); // 1-2: producer 1 opens at 1
    assert_eq!(lso(&log), 1);
    assert_eq!(append(&log, txn_batch(2, 0, 1)).unwrap(), 3); // producer 2 opens at 3
    assert_eq!(append(&log, txn_batch(1, 2, 1)).unwrap(), 4);
    assert_eq!(log.ongoing_transactions(), vec![(1, 1), (2, 3)]);
    // The LSO never passes the high watermark.
    assert_eq!(log.last_stable_offset(0), 0);

    // ABORT of producer 1 at 5: producer 2 still holds the LSO at 3, which the index entry records.
    assert_eq!(marker(&log, 1, ControlType::Abort).unwrap(), 5);
    assert_eq!(lso(&log), 3);
    assert_eq!(log.collect_aborted_transactions(0, 100), vec![aborted(1, 1, 5, 3)]);
    // Only transactions overlapping [fetch offset, upper bound) are listed.
    assert!(log.collect_aborted_transactions(6, 100).is_empty());
    assert!(log.collect_aborted_transactions(0, 1).is_empty());

    assert_eq!(marker(&log, 2, ControlType::Commit).unwrap(), 6);
    assert_eq!(lso(&log), 7);
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.collect_aborted_transactions(0, 100), vec![aborted(1, 1, 5, 3)]);
    // Kafka's file format: 34-byte entries of version 0.
    let bytes = std::fs::read(dir.path().join("00000000000000000000.txnindex")).unwrap();
    assert_eq!(bytes.len(), 34);
    assert_eq!(&bytes[..2], &[0, 0]);
    // read_committed reads stop at the LSO.
    append(&log, txn_batch(3, 0, 1)).unwrap(); // 7
    let r = log.read(0, 1 << 20, lso(&log), false).unwrap();
    assert_eq!(r.last_offset, 6);
}

#[test]
fn producer_and_coordinator_epochs_and_the_transaction_state_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append(&log, txn_batch(7, 0, 1)).unwrap();
    // A plain write from a producer with an open transaction.
    let plain_from_7 = make_transactional(plain(1), 7, 0, 1);
    let mut plain_from_7 = plain_from_7;
    plain_from_7[21..23].copy_from_slice(&0i16.to_be_bytes());
    let crc = compute_crc(&plain_from_7);
    plain_from_7[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(append(&log, plain_from_7), Err(LogError::InvalidTxnState(_))));

    // KIP-890: the coordinator ends the transaction with a bumped epoch; the old epoch is fenced afterwards.
    marker_with(&log, 7, 1, ControlType::Commit, 5).unwrap();
    assert!(matches!(marker_with(&log, 7, 0, ControlType::Abort, 5), Err(LogError::InvalidProducerEpoch(_))));
    assert!(matches!(marker_with(&log, 7, 1, ControlType::Abort, 4), Err(LogError::TransactionCoordinatorFenced(_))));
    assert!(matches!(append(&log, txn_batch(7, 1, 1)), Err(LogError::InvalidProducerEpoch(_))));
    // The new epoch starts its sequences at 0.
    append(&log, make_transactional(plain(1), 7, 1, 0)).unwrap();
    // A marker of a producer with nothing open here is written and indexes nothing.
    marker(&log, 99, ControlType::Abort).unwrap();
    assert!(log.collect_aborted_transactions(0, 100).is_empty());
    assert_eq!(log.first_unstable_offset(), Some(2));
}

#[test]
fn open_transactions_and_the_index_survive_a_crash_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 300, ..LogConfig::default() };
    {
        let log = open(dir.path(), config.clone());
        append(&log, txn_batch(1, 0, 1)).unwrap(); // 0: producer 1 opens
        for i in 0..6 {
            append(&log, txn_batch(2, i, 1)).unwrap(); // 1..6: producer 2, several segments
        }
        marker(&log, 2, ControlType::Abort).unwrap(); // 7
        append(&log, txn_batch(3, 0, 1)).unwrap(); // 8: producer 3 opens in the active segment
        assert!(log.segment_count() > 2);
        log.flush().unwrap();
        // Dropped without close: as after kill -9 (snapshots exist only from the rolls).
    }
    // Lose every transaction index file: the replay from the snapshot rebuilds what it covers.
    let mut removed = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "txnindex") {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    assert_eq!(removed, 1);
    let log = open(dir.path(), config.clone());
    assert_eq!(log.ongoing_transactions(), vec![(1, 0), (3, 8)]);
    assert_eq!(lso(&log), 0);
    // The abort's entry was rebuilt only if the replay saw the marker; the snapshot came before it.
    assert_eq!(log.collect_aborted_transactions(0, 100), vec![aborted(2, 1, 7, 0)]);
    marker(&log, 1, ControlType::Commit).unwrap(); // 9
    assert_eq!(lso(&log), 8);
    log.close().unwrap();

    // Clean close: snapshot format 2 at the log end, no replay; the state is the same.
    let log = open(dir.path(), config);
    assert_eq!(log.ongoing_transactions(), vec![(3, 8)]);
    assert_eq!(log.collect_aborted_transactions(0, 100), vec![aborted(2, 1, 7, 0)]);
    marker(&log, 3, ControlType::Abort).unwrap(); // 10
    assert_eq!(lso(&log), 11);
}

#[test]
fn format_1_snapshots_still_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), LogConfig::default());
        append(&log, make_transactional(plain(2), 4, 0, 0)).unwrap();
        log.close().unwrap();
    }
    // Rewrite the snapshot in format 1 (no coordinator epoch, no open transaction): producer 4, epoch 0, one
    // batch (sequences 0-1 at offsets 0-1).
    let snapshot = dir.path().join("00000000000000000002.snapshot");
    let mut body = Vec::new();
    body.extend(1u32.to_be_bytes());
    body.extend(4i64.to_be_bytes());
    body.extend(0i16.to_be_bytes());
    body.extend(NOW.to_be_bytes());
    body.push(1);
    for v in [0i32, 1] {
        body.extend(v.to_be_bytes());
    }
    for v in [0i64, 1, NOW] {
        body.extend(v.to_be_bytes());
    }
    let mut file = b"STRMPST1".to_vec();
    file.extend(crc32c::crc32c(&body).to_be_bytes());
    file.extend(body);
    std::fs::write(&snapshot, file).unwrap();
    let log = open(dir.path(), LogConfig::default());
    // Dedupe state came from the old snapshot: the same batch is a duplicate.
    let mut again = make_transactional(plain(2), 4, 0, 0);
    assert!(log.append(&mut again, 0, NOW, false).unwrap().duplicate);
    // Format 1 knew no transactions.
    assert!(log.ongoing_transactions().is_empty());
}

#[test]
fn retention_keeps_the_state_of_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 300, retention_bytes: 1, ..LogConfig::default() };
    let log = open(dir.path(), config);
    append(&log, txn_batch(1, 0, 1)).unwrap();
    for _ in 0..6 {
        append(&log, plain(1)).unwrap();
    }
    log.apply_retention(NOW).unwrap();
    assert!(log.log_start_offset() > 0);
    // The transaction is still open (the LSO is clamped to the log start) and its marker still ends it.
    assert_eq!(log.ongoing_transactions(), vec![(1, 0)]);
    assert_eq!(lso(&log), log.log_start_offset());
    log.append_marker(1, 0, EndTxnMarker { control_type: ControlType::Abort, coordinator_epoch: 0 }, 0, NOW).unwrap();
    assert_eq!(lso(&log), log.log_end_offset());
}

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn keyed_txn(log: &Log, pid: i64, seq: i32, key: &str, value: &str) {
    let b = make_transactional(keyed_batch(&[rec(key, Some(value), NOW)], 0), pid, 0, seq);
    append(log, b).unwrap();
}

fn keyed_plain(log: &Log, key: &str, value: &str) {
    append(log, keyed_batch(&[rec(key, Some(value), NOW)], 0)).unwrap();
}

#[test]
fn cleaner_drops_aborted_data_and_stops_at_the_first_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compact_config());
    keyed_txn(&log, 1, 0, "k", "aborted"); // 0
    marker(&log, 1, ControlType::Abort).unwrap(); // 1
    keyed_plain(&log, "m", "plain"); // 2
    keyed_txn(&log, 2, 0, "j", "open-1"); // 3: stays open
    for i in 0..20 {
        keyed_plain(&log, "j", &format!("later-{i}"));
    }
    assert!(log.segment_count() > 3);
    let txns = log.transaction_state();
    log.clean(NOW, &CleanerConfig::default(), &Throttler::new(f64::MAX), &txns).unwrap();
    let (_, recs) = decode(&read_everything(&log));
    let values: Vec<(i64, String)> =
        recs.iter().filter_map(|r| Some((r.offset, String::from_utf8(r.value.clone()?).ok()?))).collect();
    // The aborted record is gone, the open transaction's record and everything after it are untouched.
    assert!(!values.iter().any(|(_, v)| v == "aborted"), "{values:?}");
    assert!(values.contains(&(3, "open-1".to_string())), "{values:?}");
    assert!(values.contains(&(4, "later-0".to_string())), "{values:?}");
    // The abort marker is kept (a control record with a key, not a data record).
    assert!(recs.iter().any(|r| r.offset == 1));
}

/// Kafka's RETAIN_EMPTY: an idempotent producer's last batch stays (emptied) when its records are superseded, so
/// a retry of it is still a duplicate after the producer state is rebuilt from the log alone.
#[test]
fn the_cleaner_keeps_each_producers_last_batch_so_a_retry_stays_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), compact_config());
    let batch = stamp(keyed_batch(&[rec("k", Some("idempotent"), NOW)], 0), 7, 0, 0, false);
    assert_eq!(append(&log, batch.clone()).unwrap(), 0);
    for i in 0..20 {
        keyed_plain(&log, "k", &format!("later-{i}"));
    }
    let txns = log.transaction_state();
    log.clean(NOW, &CleanerConfig::default(), &Throttler::new(f64::MAX), &txns).unwrap().expect("a pass ran");
    let (batches, recs) = decode(&read_everything(&log));
    assert!(!recs.iter().any(|r| r.offset == 0), "the superseded record is gone");
    let first = &batches[0];
    assert_eq!((first.base_offset, first.last_offset, first.record_count), (0, 0, 0), "its batch stays, empty");

    // Rebuild the producer state from the log alone (as if every snapshot were lost).
    drop(log);
    for f in files_with_ext(dir.path(), "snapshot") {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let log = open(dir.path(), compact_config());
    let end = log.log_end_offset();
    assert_eq!(append(&log, batch).unwrap(), 0, "the retry is answered with the original offset");
    assert_eq!(log.log_end_offset(), end, "and not written again");
}

/// (base offset, attributes) of every stored batch.
fn batch_attributes(log: &Log) -> Vec<(i64, i16)> {
    let data = read_everything(log);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().unwrap());
        let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
        out.push((base, i16::from_be_bytes([data[pos + 21], data[pos + 22]])));
        pos += 12 + len;
    }
    out
}

#[test]
fn markers_go_after_their_transaction_and_the_delete_horizon() {
    const CONTROL: i16 = 0x20;
    const DELETE_HORIZON: i16 = 0x40;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { delete_retention_ms: 1_000, ..compact_config() };
    let log = open(dir.path(), config);
    keyed_txn(&log, 1, 0, "k", "aborted"); // 0
    marker(&log, 1, ControlType::Abort).unwrap(); // 1
    keyed_txn(&log, 2, 0, "c", "committed"); // 2
    marker(&log, 2, ControlType::Commit).unwrap(); // 3
    keyed_txn(&log, 1, 1, "d", "next"); // 4: producer 1 goes on, so batch 0 is not its last (kept if it were)
    marker(&log, 1, ControlType::Commit).unwrap(); // 5
    let mut n = 0;
    let mut pass = |now: i64| {
        for _ in 0..6 {
            keyed_plain(&log, "m", &format!("filler-{n}"));
            n += 1;
        }
        let txns = log.transaction_state();
        log.clean(now, &CleanerConfig::default(), &Throttler::new(f64::MAX), &txns).unwrap().expect("a pass ran");
        batch_attributes(&log)
    };
    let marker_attrs =
        |batches: &[(i64, i16)], offset: i64| batches.iter().find(|(b, _)| *b == offset).map(|(_, a)| *a);

    // Pass 1 removes the aborted data; its marker stays (the pass saw a batch of the transaction).
    let batches = pass(NOW);
    assert_eq!(batches.first().map(|b| b.0), Some(1), "{batches:?}");
    assert_eq!(marker_attrs(&batches, 1).map(|a| a & (CONTROL | DELETE_HORIZON)), Some(CONTROL));
    // Pass 2 finds nothing of the aborted transaction left: the marker gets its delete horizon.
    let batches = pass(NOW + 10);
    assert_eq!(marker_attrs(&batches, 1).map(|a| a & DELETE_HORIZON), Some(DELETE_HORIZON));
    // The committed transaction's data is still there, so its marker stays.
    assert_eq!(marker_attrs(&batches, 3).map(|a| a & DELETE_HORIZON), Some(0));
    // Before the horizon the marker stays; after it, it goes.
    let batches = pass(NOW + 500);
    assert!(marker_attrs(&batches, 1).is_some());
    let batches = pass(NOW + 1_011);
    assert_eq!(marker_attrs(&batches, 1), None, "{batches:?}");
    assert!(marker_attrs(&batches, 2).is_some() && marker_attrs(&batches, 3).is_some());
    // Reopening replays the cleaned log: nothing is left open.
    drop(log);
    let log = open(dir.path(), LogConfig { delete_retention_ms: 1_000, ..compact_config() });
    assert!(log.ongoing_transactions().is_empty());
}

#[test]
fn aborted_transactions_are_bounded_by_the_next_indexed_batch() {
    for (interval, expected_upper) in [(1u32, 1i64), (4096, 4)] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), LogConfig { index_interval_bytes: interval, ..LogConfig::default() });
        append(&log, txn_batch(1, 0, 1)).unwrap(); // 0
        marker(&log, 1, ControlType::Abort).unwrap(); // 1
        append(&log, txn_batch(2, 0, 1)).unwrap(); // 2
        marker(&log, 2, ControlType::Abort).unwrap(); // 3
        let r = log.read(0, 1, i64::MAX, true).unwrap();
        assert_eq!(r.last_offset, 0);
        // Kafka's bound: the first indexed batch after the bytes read, else the end of the segment.
        let upper = log.fetch_upper_bound(0, r.records.len()).unwrap();
        assert_eq!(upper, expected_upper, "index.interval.bytes={interval}");
        let pids: Vec<i64> = log.collect_aborted_transactions(0, upper).iter().map(|a| a.producer_id).collect();
        assert_eq!(pids, if interval == 1 { vec![1] } else { vec![1, 2] });
    }
}
