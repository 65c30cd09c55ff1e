//! The log cleaner: latest record per key, offsets/timestamps/headers preserved, codecs kept, tombstones and their
//! delete horizon, keyless records, lag settings, the active segment untouched, recovery of interrupted swaps, and
//! the I/O throttle.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use common::keyed::{decode, keyed_batch, rec, BatchInfo, In, Rec};
use common::{open, read_everything};
use strom_log::{CleanStats, CleanerConfig, CleanupPolicy, FileCache, Log, LogConfig, NoTransactions, Throttler};

const NOW: i64 = 1_700_000_000_000;

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 128,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

fn append(log: &Log, recs: &[In], codec: u8) {
    let mut b = keyed_batch(recs, codec);
    log.append(&mut b, 0, NOW, false).expect("append");
}

fn clean(log: &Log, now: i64) -> Option<CleanStats> {
    log.clean(now, &CleanerConfig::default(), &Throttler::new(f64::MAX), &NoTransactions).expect("clean")
}

/// (offset, key, value) triples, for readable assertion failures.
fn brief(recs: &[Rec]) -> Vec<(i64, String, Option<String>)> {
    let s = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).chars().take(14).collect::<String>());
    recs.iter().map(|r| (r.offset, s(&r.key).unwrap_or_default(), s(&r.value))).collect()
}

fn assert_same(actual: &[Rec], expected: &[Rec], what: &str) {
    assert_eq!(brief(actual), brief(expected), "{what}");
    assert_eq!(actual, expected, "{what}: timestamps or headers differ");
}

fn contents(log: &Log) -> (Vec<BatchInfo>, Vec<Rec>) {
    decode(&read_everything(log))
}

/// The records a correct cleaning of everything below `end` leaves: the latest record of each key (tombstones
/// included unless `drop_tombstones`), keyless records gone; everything from `end` on untouched.
fn expected(all: &[Rec], end: i64, drop_tombstones: bool) -> Vec<Rec> {
    // The pass only knows the keys below `end`: a newer value in the active segment does not count yet.
    let mut latest: HashMap<&Option<Vec<u8>>, i64> = HashMap::new();
    for r in all.iter().filter(|r| r.key.is_some() && r.offset < end) {
        latest.insert(&r.key, r.offset);
    }
    all.iter()
        .filter(|r| {
            r.offset >= end
                || (r.key.is_some() && latest[&r.key] == r.offset && !(drop_tombstones && r.value.is_none()))
        })
        .cloned()
        .collect()
}

/// `rounds` updates of `keys` keys, `per_batch` records per batch.
fn write_updates(log: &Log, keys: usize, rounds: usize, per_batch: usize, codec: u8) {
    let mut batch = Vec::new();
    for round in 0..rounds {
        for k in 0..keys {
            batch.push(rec(
                &format!("key-{k}"),
                Some(&format!("value-{k}-{round}-{}", "x".repeat(20))),
                NOW + round as i64,
            ));
            if batch.len() == per_batch {
                append(log, &batch, codec);
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        append(log, &batch, codec);
    }
}

#[test]
fn keeps_the_latest_record_per_key_and_never_touches_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    write_updates(&log, 10, 30, 1, 0);
    let (_, before) = contents(&log);
    let segments = log.segment_count();
    assert!(segments > 5, "{segments}");
    let active_base = *log.segment_base_offsets().last().unwrap();
    let end = log.log_end_offset();

    let stats = clean(&log, NOW).expect("a pass ran");
    assert_eq!(stats.end_offset, active_base);
    assert_eq!(stats.keys, 10);
    let (_, after) = contents(&log);
    assert_same(&after, &expected(&before, active_base, false), "cleaned");
    // Offsets, log end, log start and the active segment are as before.
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(*log.segment_base_offsets().last().unwrap(), active_base);
    // Full segments are cleaned one by one; the next pass merges the small cleaned ones (Kafka's grouping by size).
    assert_eq!(log.segment_count(), segments);
    // Reading at an offset that compaction removed returns the next surviving batch.
    let r = log.read(1, 1 << 20, i64::MAX, true).unwrap();
    assert!(r.first_offset >= 0 && r.last_offset >= 1);

    // Nothing new is dirty: no pass. New updates make it dirty again; the next pass removes what they supersede.
    assert!(clean(&log, NOW).is_none());
    write_updates(&log, 10, 20, 1, 0);
    let (_, before) = contents(&log);
    let stats = clean(&log, NOW).expect("second pass");
    assert!(stats.groups < stats.segments_cleaned, "{stats:?}");
    let (_, after) = contents(&log);
    assert_same(&after, &expected(&before, stats.end_offset, false), "cleaned");
}

#[test]
fn compressed_batches_are_recompressed_with_their_codec() {
    for codec in [1u8, 2, 3, 4] {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), compact_config());
        // Five records per batch over seven keys: batches lose some records but not all.
        write_updates(&log, 7, 20, 5, codec);
        let (_, before) = contents(&log);
        let stats = clean(&log, NOW).expect("pass");
        let (batches, after) = contents(&log);
        assert_same(&after, &expected(&before, stats.end_offset, false), &format!("codec {codec}"));
        assert!(batches.iter().filter(|b| b.record_count > 0).all(|b| b.codec == codec), "codec {codec}: {batches:?}");
        assert!(batches.iter().any(|b| b.record_count > 0 && b.record_count < 5), "some batch was rebuilt");
        // A rebuilt batch's max timestamp is its survivors'.
        for b in batches.iter().filter(|b| b.record_count > 0) {
            let max = after
                .iter()
                .filter(|r| r.offset >= b.base_offset && r.offset <= b.last_offset)
                .map(|r| r.timestamp)
                .max()
                .unwrap();
            assert_eq!(b.max_timestamp, max);
        }
    }
}

#[test]
fn tombstones_survive_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    write_updates(&log, 6, 10, 1, 0);
    append(&log, &[rec("key-1", None, NOW), rec("key-2", None, NOW)], 0);
    write_updates(&log, 3, 1, 1, 0); // key-0..2 again: key-1 and key-2 live again, newer than their tombstones
    append(&log, &[rec("key-4", None, NOW)], 0);
    write_updates(&log, 1, 40, 1, 0); // roll the tombstones out of the active segment
    let (_, before) = contents(&log);

    let stats = clean(&log, NOW).expect("pass");
    let (_, after) = contents(&log);
    // First pass: the unsuperseded tombstone (key-4) stays, superseded ones (key-1, key-2) go.
    assert_same(&after, &expected(&before, stats.end_offset, false), "cleaned");
    assert!(after.iter().any(|r| r.key.as_deref() == Some(&b"key-4"[..]) && r.value.is_none()));

    // Within delete.retention.ms of that pass: still there, and no pass is due.
    assert!(clean(&log, NOW + 999).is_none());
    let cleanable = log.cleanability(NOW + 1_000, &NoTransactions).unwrap().unwrap();
    assert!(cleanable.forced && cleanable.needs_cleaning, "{cleanable:?}");
    let stats = clean(&log, NOW + 1_000).expect("pass for the expired tombstone");
    assert_eq!(stats.tombstones_removed, 1);
    let (_, after) = contents(&log);
    assert_same(&after, &expected(&before, stats.end_offset, true), "cleaned");
    assert!(!after.iter().any(|r| r.key.as_deref() == Some(&b"key-4"[..])));
}

#[test]
fn keyless_records_are_removed_and_headers_and_timestamps_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    let keyless = In { key: None, value: Some(b"no key".to_vec()), timestamp: NOW - 5, headers: vec![] };
    let mut with_headers = rec("k", Some("v"), NOW - 100);
    with_headers.headers.push(("null-header".into(), None));
    append(&log, &[keyless.clone(), with_headers, keyless], 0);
    write_updates(&log, 2, 40, 1, 0);
    let stats = clean(&log, NOW).expect("pass");
    let (_, after) = contents(&log);
    assert!(after.iter().all(|r| r.key.is_some()));
    let k = after.iter().find(|r| r.key.as_deref() == Some(&b"k"[..])).unwrap();
    assert_eq!((k.offset, k.timestamp), (1, NOW - 100));
    assert_eq!(k.headers[1], ("null-header".to_string(), None));
    assert!(stats.records_kept < stats.records_read);
}

#[test]
fn min_and_max_compaction_lag_and_dirty_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { min_compaction_lag_ms: 60_000, ..compact_config() };
    let (log, _) = open(dir.path(), config.clone());
    write_updates(&log, 5, 40, 1, 0); // timestamps NOW..NOW+40
                                      // Everything is younger than min.compaction.lag.ms: nothing is cleanable.
    let c = log.cleanability(NOW + 1_000, &NoTransactions).unwrap().unwrap();
    assert_eq!(c.dirty_bytes, 0);
    assert!(clean(&log, NOW + 1_000).is_none());
    assert!(clean(&log, NOW + 120_000).is_some());

    // A ratio of 1.0 never triggers on its own, but max.compaction.lag.ms does.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { min_cleanable_dirty_ratio: 1.0, max_compaction_lag_ms: 10_000, ..compact_config() };
    let (log, _) = open(dir.path(), config);
    write_updates(&log, 5, 40, 1, 0);
    clean(&log, NOW).expect("everything is dirty: ratio 1.0 reached");
    write_updates(&log, 5, 10, 1, 0);
    let c = log.cleanability(NOW + 5_000, &NoTransactions).unwrap().unwrap();
    assert!(!c.needs_cleaning && c.dirty_ratio < 1.0, "{c:?}");
    let c = log.cleanability(NOW + 20_000, &NoTransactions).unwrap().unwrap();
    assert!(c.forced && c.needs_cleaning, "{c:?}");

    // A delete-only log is never cleaned.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), LogConfig { cleanup_policy: CleanupPolicy::DELETE, ..compact_config() });
    write_updates(&log, 5, 40, 1, 0);
    assert!(log.cleanability(NOW, &NoTransactions).unwrap().is_none());
    assert!(clean(&log, NOW).is_none());
}

#[test]
fn cleaned_logs_reopen_after_clean_close_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    write_updates(&log, 8, 30, 3, 4);
    clean(&log, NOW).expect("pass");
    let expected_bytes = read_everything(&log);
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    log.close().unwrap();
    drop(log);
    let (log, report) = open(dir.path(), compact_config());
    assert!(report.clean_shutdown);
    assert_eq!(read_everything(&log), expected_bytes);
    drop(log);
    // Crash: no clean-shutdown marker, no recovery point: every segment (gaps and all) is rescanned.
    for f in ["clean-shutdown", "recovery-point"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let (log, report) = open(dir.path(), compact_config());
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    assert_eq!(read_everything(&log), expected_bytes);
    // The cleaner checkpoint survived: nothing is dirty.
    assert!(clean(&log, NOW).is_none());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn rename_all(dir: &Path, base: i64, from: &str, to: &str) {
    for ext in ["log", "index", "timeindex"] {
        let name = format!("{base:020}.{ext}");
        std::fs::rename(dir.join(format!("{name}{from}")), dir.join(format!("{name}{to}"))).unwrap();
    }
}

/// Reproduces the on-disk states a crash can leave during a swap and checks that recovery ends with either the
/// old segments or the cleaned one, never a mix.
#[test]
fn interrupted_swaps_recover_to_old_or_new() {
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("original");
    // Written in small segments, cleaned with a segment.bytes that makes them one group.
    let (log, _) = open(&original, compact_config());
    let config = LogConfig { segment_bytes: 1 << 20, ..compact_config() };
    write_updates(&log, 4, 30, 1, 0);
    let old_bases = log.segment_base_offsets();
    let old_bytes = read_everything(&log);
    log.close().unwrap();
    drop(log);
    let cleaned_dir = work.path().join("cleaned");
    copy_dir(&original, &cleaned_dir);
    let (log, _) = open(&cleaned_dir, config.clone());
    let stats = clean(&log, NOW).unwrap();
    assert_eq!(stats.groups, 1);
    let new_bytes = read_everything(&log);
    log.close().unwrap();
    drop(log);
    assert_ne!(old_bytes, new_bytes);
    let closed: Vec<i64> = old_bases[..old_bases.len() - 1].to_vec();
    let cleaned_file = |ext: &str| cleaned_dir.join(format!("{:020}.{ext}", closed[0]));

    // Returns a copy of the original directory with the cleaned group's files added as `suffix`.
    let stage = |name: &str, suffix: &str| {
        let d = work.path().join(name);
        copy_dir(&original, &d);
        for ext in ["log", "index", "timeindex"] {
            std::fs::copy(cleaned_file(ext), d.join(format!("{:020}.{ext}{suffix}", closed[0]))).unwrap();
        }
        // The crash happened before any clean close.
        let _ = std::fs::remove_file(d.join("clean-shutdown"));
        d
    };
    let reopen = |d: &Path| {
        let (log, _) = open(d, config.clone());
        let bytes = read_everything(&log);
        let leftovers: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        bytes
    };

    // Crash before the commit point: the cleaned files are discarded.
    assert_eq!(reopen(&stage("before-commit", ".cleaned")), old_bytes);
    // Crash right after the commit point: the swap is completed.
    assert_eq!(reopen(&stage("after-commit", ".swap")), new_bytes);
    // Crash after some old segments were renamed `.deleted` (including the one whose name the swap takes).
    let d = stage("mid-swap", ".swap");
    for base in &closed[..2] {
        rename_all(&d, *base, "", ".deleted");
    }
    assert_eq!(reopen(&d), new_bytes);
    // Crash after the index swap files took their final names but before the log did.
    let d = stage("late-swap", ".swap");
    for base in &closed {
        rename_all(&d, *base, "", ".deleted");
    }
    std::fs::rename(d.join(format!("{:020}.index.swap", closed[0])), d.join(format!("{:020}.index", closed[0])))
        .unwrap();
    assert_eq!(reopen(&d), new_bytes);
}

#[test]
fn the_throttle_bounds_cleaner_io() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    write_updates(&log, 50, 20, 10, 0);
    let rate = 200_000.0;
    let started = Instant::now();
    let stats =
        log.clean(NOW, &CleanerConfig::default(), &Throttler::new(rate), &NoTransactions).unwrap().expect("pass");
    let secs = started.elapsed().as_secs_f64();
    let io = (stats.bytes_read + stats.bytes_written) as f64;
    assert!(io > 40_000.0, "{stats:?}");
    // The last check window may end unslept; allow one window of slack.
    assert!(secs >= io / rate - 0.06, "{io} bytes in {secs}s at {rate} B/s");
}

#[test]
fn retention_and_the_cleaner_coexist_with_compact_delete() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy { delete: true, compact: true },
        retention_bytes: 3000,
        ..compact_config()
    };
    let (log, _) = open(dir.path(), config);
    write_updates(&log, 5, 40, 1, 0);
    let r = log.apply_retention(NOW).unwrap();
    assert!(r.deleted_segments > 0 && log.log_start_offset() > 0);
    let (_, before) = contents(&log);
    let stats = clean(&log, NOW).expect("pass");
    assert!(stats.first_dirty >= log.log_start_offset());
    let (_, after) = contents(&log);
    assert_same(&after, &expected(&before, stats.end_offset, false), "cleaned");
}

#[test]
fn a_batch_the_cleaner_cannot_read_fails_the_pass_naming_it_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), compact_config());
    write_updates(&log, 7, 4, 5, 0);
    // A batch whose codec flag says zstd over uncompressed records (as a corrupt disk could hold): its CRC is
    // right, so only the cleaner, which looks inside, finds it.
    let mut bad = keyed_batch(&[rec("k1", Some("v"), NOW), rec("k2", Some("v"), NOW)], 0);
    bad[22] |= 4;
    let crc = strom_log::compute_crc(&bad);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    let bad_offset = log.append(&mut bad, 0, NOW, false).expect("append").first_offset;
    write_updates(&log, 7, 8, 5, 0);
    let before = read_everything(&log);
    let err = log.clean(NOW, &CleanerConfig::default(), &Throttler::new(f64::MAX), &NoTransactions).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(".log position ") && msg.contains(&format!("batch at offset {bad_offset}")), "{msg}");
    assert!(msg.contains("zstd"), "{msg}");
    assert_eq!(read_everything(&log), before, "the failed pass changed the log");
    assert!(common::files_with_ext(dir.path(), "cleaned").is_empty());
}

/// With room for a single open file, every segment's files are closed and opened again as the cleaner reads and
/// swaps (the cleaned segment takes the first replaced one's file names): the result is the same as with room for
/// all of them, and so are the reads after a restart.
#[test]
fn cleaning_with_one_open_file_allowed_matches_cleaning_with_many() {
    let roomy = tempfile::tempdir().unwrap();
    let tight = tempfile::tempdir().unwrap();
    let cache = FileCache::new(1);
    let logs = [
        Log::open_with_cache(roomy.path(), compact_config(), FileCache::new(10_000)).unwrap().0,
        Log::open_with_cache(tight.path(), compact_config(), cache.clone()).unwrap().0,
    ];
    for log in &logs {
        for round in 0..12 {
            for key in 0..8 {
                let value = format!("{round}-{}", "v".repeat(60));
                append(log, &[rec(&format!("k{key}"), Some(&value), NOW)], 0);
            }
        }
        assert!(log.segment_count() > 4);
        assert!(clean(log, NOW).is_some_and(|s| s.segments_cleaned > 0));
    }
    assert!(cache.open_files() <= 1);
    assert_same(&contents(&logs[1]).1, &contents(&logs[0]).1, "cleaned with one open file");
    let (_, cleaned) = contents(&logs[1]);
    logs[1].close().unwrap();
    let [_, tight_log] = logs;
    drop(tight_log);
    let (reopened, _) = Log::open_with_cache(tight.path(), compact_config(), cache.clone()).unwrap();
    assert_same(&contents(&reopened).1, &cleaned, "after a restart");
}
