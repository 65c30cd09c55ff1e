//! What the cleaner remembers about a compacted log between passes, in the partition directory's
//! `cleaner-checkpoint` file (Kafka keeps the first half in `cleaner-offset-checkpoint`):
//!
//! - the first dirty offset: everything below it has been cleaned at least once;
//! - for each cleaned range, when it was first cleaned and whether tombstones survive in it. A tombstone becomes
//!   removable `delete.retention.ms` after the pass that first cleaned it (KIP-534's delete horizon), so a consumer
//!   reading from the beginning within that window still sees it. Kafka stores the horizon in the batch header;
//!   keeping it here leaves stored batches untouched.
//!
//! File format, one value per line: the first dirty offset, then `end cleaned_at_ms tombstones(0|1)` per range,
//! ranges ordered and contiguous from the log start.

use std::path::Path;

use crate::checkpoint;
use crate::error::LogError;

/// Ranges kept at most; older neighbours are merged (keeping the later time, so tombstones only live longer).
const MAX_RANGES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanedRange {
    /// Exclusive end offset; the range starts where the previous one ends.
    pub end: i64,
    /// Wall-clock time of the pass that first cleaned this range.
    pub cleaned_at: i64,
    /// Tombstones were retained in this range by the last pass.
    pub tombstones: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanerState {
    pub first_dirty: i64,
    pub ranges: Vec<CleanedRange>,
}

impl CleanerState {
    pub(crate) fn load(dir: &Path) -> Result<CleanerState, LogError> {
        let Some(text) = checkpoint::read_text(dir, checkpoint::CLEANER)? else {
            return Ok(CleanerState::default());
        };
        match parse(&text) {
            Some(s) => Ok(s),
            None => {
                // Safe fallback: the whole log counts as dirty and tombstones restart their delete horizon.
                tracing::warn!(dir = %dir.display(), "ignoring unparsable cleaner checkpoint");
                Ok(CleanerState::default())
            }
        }
    }

    pub(crate) fn save(&self, dir: &Path) -> Result<(), LogError> {
        let mut text = format!("{}\n", self.first_dirty);
        for r in &self.ranges {
            text.push_str(&format!("{} {} {}\n", r.end, r.cleaned_at, u8::from(r.tombstones)));
        }
        checkpoint::write_text(dir, checkpoint::CLEANER, &text)?;
        Ok(())
    }

    /// When the pass that first cleaned `offset` ran; `None` if it has never been cleaned.
    pub(crate) fn first_cleaned_at(&self, offset: i64) -> Option<i64> {
        if offset >= self.first_dirty {
            return None;
        }
        self.ranges.iter().find(|r| r.end > offset).map(|r| r.cleaned_at)
    }

    /// Some retained tombstone's delete horizon has passed: a pass would remove it even with no new dirty data.
    pub(crate) fn tombstones_expired(&self, now_ms: i64, delete_retention_ms: i64) -> bool {
        self.ranges.iter().any(|r| r.tombstones && r.cleaned_at.saturating_add(delete_retention_ms) <= now_ms)
    }

    /// Records a finished pass: `[old first dirty, end)` was cleaned for the first time at `now_ms`;
    /// `tombstone_offsets` are the offsets of every tombstone the pass kept (anywhere in the cleaned part).
    pub(crate) fn record_pass(&mut self, end: i64, now_ms: i64, log_start: i64, tombstone_offsets: &[i64]) {
        if end > self.first_dirty {
            self.ranges.push(CleanedRange { end, cleaned_at: now_ms, tombstones: false });
            self.first_dirty = end;
        }
        // Ranges wholly below the log start describe deleted data.
        self.ranges.retain(|r| r.end > log_start);
        let mut start = i64::MIN;
        for r in &mut self.ranges {
            r.tombstones = tombstone_offsets.iter().any(|&o| o >= start && o < r.end);
            start = r.end;
        }
        while self.ranges.len() > MAX_RANGES {
            let first = self.ranges.remove(0);
            let next = &mut self.ranges[0];
            next.cleaned_at = next.cleaned_at.max(first.cleaned_at);
            next.tombstones |= first.tombstones;
        }
    }
}

fn parse(text: &str) -> Option<CleanerState> {
    let mut lines = text.lines();
    let first_dirty = lines.next()?.trim().parse().ok()?;
    let mut ranges = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let end = f.next()?.parse().ok()?;
        let cleaned_at = f.next()?.parse().ok()?;
        let tombstones = f.next()? == "1";
        ranges.push(CleanedRange { end, cleaned_at, tombstones });
    }
    Some(CleanerState { first_dirty, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_track_first_cleaning_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CleanerState::load(dir.path()).unwrap();
        assert_eq!(s, CleanerState::default());
        s.record_pass(100, 1_000, 0, &[50]);
        s.record_pass(250, 2_000, 0, &[50, 200]);
        assert_eq!(s.first_cleaned_at(10), Some(1_000));
        assert_eq!(s.first_cleaned_at(100), Some(2_000));
        assert_eq!(s.first_cleaned_at(250), None);
        assert!(s.tombstones_expired(1_500, 400));
        assert!(!s.tombstones_expired(1_300, 400));
        s.save(dir.path()).unwrap();
        assert_eq!(CleanerState::load(dir.path()).unwrap(), s);
        // A pass that kept no tombstones clears the flags; ranges below the log start go.
        s.record_pass(250, 3_000, 120, &[]);
        assert_eq!(s.ranges.len(), 1);
        assert!(!s.tombstones_expired(i64::MAX, 0));
        for i in 0..100 {
            s.record_pass(300 + i, 4_000 + i, 0, &[]);
        }
        assert!(s.ranges.len() <= MAX_RANGES);
        std::fs::write(dir.path().join(checkpoint::CLEANER), "garbage").unwrap();
        assert_eq!(CleanerState::load(dir.path()).unwrap(), CleanerState::default());
    }
}
