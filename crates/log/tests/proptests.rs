mod common;

use common::*;
use proptest::prelude::*;
use strom_log::{validate_batches, Log, LogConfig};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn validate_batches_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), max in any::<u32>()) {
        if let Ok(headers) = validate_batches(&bytes, max) {
            prop_assert_eq!(headers.iter().map(|h| h.total_size()).sum::<usize>(), bytes.len());
        }
    }

    #[test]
    fn validate_batches_never_panics_on_mutated_batches(
        counts in proptest::collection::vec(1i32..4, 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        for (i, c) in counts.iter().enumerate() {
            bytes.extend(build(&BatchSpec { record_count: *c, value_len: 5, fill: i as u8, ..Default::default() }));
        }
        prop_assert_eq!(validate_batches(&bytes, u32::MAX).unwrap().len(), counts.len());
        for (at, value) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(headers) = validate_batches(&bytes, u32::MAX) {
            prop_assert_eq!(headers.iter().map(|h| h.total_size()).sum::<usize>(), bytes.len());
        }
    }
}

#[derive(Clone, Debug)]
struct Op {
    batches: Vec<(i32, usize, i64)>,
}

fn op() -> impl Strategy<Value = Op> {
    proptest::collection::vec((1i32..6, 0usize..300, 0i64..10_000), 1..4).prop_map(|batches| Op { batches })
}

fn apply(log: &Log, op: &Op, model: &mut Vec<Stored>) {
    let mut input = Vec::new();
    for (i, (count, len, ts)) in op.batches.iter().enumerate() {
        input.extend(build(&BatchSpec {
            record_count: *count,
            value_len: *len,
            base_timestamp: *ts,
            fill: (model.len() + i) as u8,
            ..Default::default()
        }));
    }
    // A record set larger than a segment is refused whole (RECORD_LIST_TOO_LARGE) and changes nothing.
    if input.len() as u64 > log.config().segment_bytes {
        let end = log.log_end_offset();
        let e = log.append(&mut input, 0, 0, false).unwrap_err();
        assert!(matches!(e, strom_log::LogError::RecordListTooLarge { .. }), "{e}");
        assert_eq!(log.log_end_offset(), end);
        return;
    }
    let (info, stored) = append(log, &input, 0);
    assert_eq!(info.first_offset, model.last().map_or(0, |s| s.last + 1));
    model.extend(stored);
}

/// What `read` must return according to the model: whole batches from the containing one, within
/// its segment, under max_bytes (at least one if min_one) and max_offset.
fn expected_read(
    model: &[Stored],
    bases: &[i64],
    offset: i64,
    max_bytes: usize,
    max_offset: i64,
    min_one: bool,
) -> Vec<u8> {
    let Some(start) = model.iter().position(|s| s.last >= offset) else {
        return Vec::new();
    };
    let seg_end = bases.iter().copied().find(|b| *b > model[start].base).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for s in &model[start..] {
        if s.base >= seg_end || s.last >= max_offset {
            break;
        }
        if out.len() + s.bytes.len() > max_bytes && !(out.is_empty() && min_one) {
            break;
        }
        out.extend_from_slice(&s.bytes);
    }
    out
}

fn check_reads(log: &Log, model: &[Stored], probes: &[(prop::sample::Index, usize, i64, bool)]) {
    assert_reads_match(log, model);
    let end = log.log_end_offset();
    let bases = log.segment_base_offsets();
    for (at, max_bytes, max_back, min_one) in probes {
        let offset = at.index(end as usize + 1) as i64;
        let max_offset = end - max_back;
        let got = log.read(offset, *max_bytes, max_offset, *min_one).unwrap();
        let want = if offset >= max_offset {
            Vec::new()
        } else {
            expected_read(model, &bases, offset, *max_bytes, max_offset, *min_one)
        };
        assert_eq!(
            &got.records[..],
            &want[..],
            "offset {offset} max_bytes {max_bytes} max_offset {max_offset} min_one {min_one}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn appends_read_back_exactly_across_reopen(
        segment_bytes in 400u64..6000,
        interval in 0u32..2000,
        first in proptest::collection::vec(op(), 1..40),
        second in proptest::collection::vec(op(), 0..20),
        clean in any::<bool>(),
        probes in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3000, 0i64..5, any::<bool>()), 20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes, index_interval_bytes: interval, ..LogConfig::default() };
        let mut model = Vec::new();
        {
            let (log, _) = open(dir.path(), config.clone());
            for op in &first {
                apply(&log, op, &mut model);
            }
            check_reads(&log, &model, &probes);
            if clean {
                log.close().unwrap();
            }
        }
        let (log, report) = open(dir.path(), config.clone());
        prop_assert_eq!(report.clean_shutdown, clean);
        prop_assert_eq!(report.truncated_bytes, 0);
        check_reads(&log, &model, &probes);
        for op in &second {
            apply(&log, op, &mut model);
        }
        check_reads(&log, &model, &probes);
        drop(log);
        let (log, _) = open(dir.path(), config);
        check_reads(&log, &model, &probes);
    }
}
