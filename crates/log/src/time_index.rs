//! Sparse time index: (largest timestamp so far, offset relative to the segment base of the first
//! batch that reached it), 12 bytes big-endian per entry. Written at the offset index cadence
//! when the segment's max timestamp grew, plus a final entry when the segment is sealed, so the
//! last entry is always the segment's max timestamp.

use std::io;

use crate::index::{IndexEntry, IndexFile};

/// Like Kafka's default segment.index.bytes (10 MiB).
pub(crate) const MAX_ENTRIES: usize = 10 * 1024 * 1024 / TimeEntry::SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.rel_offset.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            rel_offset: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        }
    }
}

pub(crate) type TimeIndex = IndexFile<TimeEntry>;

impl IndexFile<TimeEntry> {
    /// The last entry with a timestamp strictly below `timestamp`. Every batch before that entry's
    /// batch has a smaller max timestamp, so a search for the first batch reaching `timestamp`
    /// can start there. Strictly below (not Kafka's "at or below") keeps that true even when
    /// entries are rate-limited.
    pub(crate) fn lookup_before(&self, timestamp: i64) -> io::Result<Option<TimeEntry>> {
        self.search(|e| e.timestamp < timestamp)
    }
}

/// Timestamps strictly increase (entries are only added when the max grows) and offsets never
/// go backwards.
pub(crate) fn is_ordered(entries: &[TimeEntry]) -> bool {
    entries.windows(2).all(|w| w[0].timestamp < w[1].timestamp && w[0].rel_offset <= w[1].rel_offset)
}
