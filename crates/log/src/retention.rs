//! Which segments retention may delete, as Kafka's `deletableSegments` decides: a prefix of the
//! segment list that stops at the first segment the policy keeps and never includes an empty
//! last segment (so a log always keeps at least one segment).

/// Number of leading segments (given by their sizes) that `delete` approves, oldest first.
pub(crate) fn deletable_prefix(sizes: &[u64], mut delete: impl FnMut(usize) -> bool) -> usize {
    let mut n = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let last_and_empty = i + 1 == sizes.len() && size == 0;
        if last_and_empty || !delete(i) {
            break;
        }
        n += 1;
    }
    n
}

/// retention.ms: the segment's newest data is older than the retention period.
pub(crate) fn expired(now_ms: i64, retention_ms: i64, largest_timestamp: i64) -> bool {
    retention_ms >= 0 && now_ms.saturating_sub(largest_timestamp) > retention_ms
}

/// retention.bytes: deletes oldest segments while what remains still reaches the limit.
pub(crate) struct SizeBudget {
    excess: i128,
}

impl SizeBudget {
    pub(crate) fn new(total_bytes: u64, retention_bytes: i64) -> SizeBudget {
        SizeBudget { excess: i128::from(total_bytes) - i128::from(retention_bytes) }
    }

    pub(crate) fn take(&mut self, segment_bytes: u64) -> bool {
        let after = self.excess - i128::from(segment_bytes);
        if after >= 0 {
            self.excess = after;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_stops_at_first_kept_segment() {
        let sizes = [10, 10, 10, 10];
        assert_eq!(deletable_prefix(&sizes, |i| i != 1), 1);
        assert_eq!(deletable_prefix(&sizes, |_| true), 4);
        assert_eq!(deletable_prefix(&[10, 10, 0], |_| true), 2);
        assert_eq!(deletable_prefix(&[0], |_| true), 0);
    }

    #[test]
    fn time_predicate() {
        assert!(expired(1000, 100, 899));
        assert!(!expired(1000, 100, 900));
        assert!(!expired(1000, -1, 0));
        assert!(!expired(i64::MIN, 100, i64::MAX));
    }

    #[test]
    fn size_budget_matches_kafka() {
        // 4 segments of 100 bytes, keep at most 250: deleting two leaves 200.
        let mut budget = SizeBudget::new(400, 250);
        let sizes = [100, 100, 100, 100];
        assert_eq!(deletable_prefix(&sizes, |i| budget.take(sizes[i])), 1);
        let mut budget = SizeBudget::new(400, 200);
        assert_eq!(deletable_prefix(&sizes, |i| budget.take(sizes[i])), 2);
        let mut budget = SizeBudget::new(400, 0);
        assert_eq!(deletable_prefix(&sizes, |i| budget.take(sizes[i])), 4);
    }
}
