mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use strom_log::LogConfig;

#[test]
fn readers_and_flushers_run_alongside_appends() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        LogConfig { segment_bytes: 20_000, index_interval_bytes: 300, retention_ms: -1, ..LogConfig::default() };
    let (log, _) = open(dir.path(), config);
    let log = Arc::new(log);
    let done = Arc::new(AtomicBool::new(false));

    let writer = {
        let log = log.clone();
        thread::spawn(move || {
            for i in 0..3000i64 {
                let input = batch(1 + (i % 4) as i32, (i % 200) as usize, i);
                let mut buf = input.clone();
                log.append(&mut buf, EPOCH, i, false).unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let log = log.clone();
        let done = done.clone();
        readers.push(thread::spawn(move || {
            let mut x = r + 1;
            let mut reads = 0;
            while !done.load(Ordering::Acquire) {
                let end = log.log_end_offset();
                if end == 0 {
                    continue;
                }
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let offset = (x >> 33) as i64 % end;
                let result = log.read(offset, 4000, i64::MAX, true).unwrap();
                assert!(result.first_offset <= offset && offset <= result.last_offset);
                let mut next = result.first_offset;
                for b in split_batches(&result.records) {
                    assert!(common::testkit::crc_ok(b));
                    assert_eq!(common::testkit::base_offset_of(b), next);
                    next += i64::from(common::testkit::record_count_of(b));
                }
                assert_eq!(next, result.last_offset + 1);
                reads += 1;
            }
            reads
        }));
    }
    let flusher = {
        let log = log.clone();
        let done = done.clone();
        thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let durable = log.flush().unwrap();
                assert!(durable <= log.log_end_offset());
                assert!(log.flushed_offset() >= durable);
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    flusher.join().unwrap();
    assert_eq!(log.flush().unwrap(), log.log_end_offset());
    assert!(log.segment_count() > 5);
    let end = log.log_end_offset();
    drop(log);
    let (log, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), end);
}
