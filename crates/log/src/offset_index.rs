//! Sparse offset index: (offset relative to the segment base, file position) of a batch start,
//! 8 bytes big-endian per entry, added every `index.interval.bytes` (and for a segment's first
//! batch, so that a non-empty segment never has an empty index).

use std::io;

use crate::index::{IndexEntry, IndexFile};

/// Like Kafka's default segment.index.bytes (10 MiB): a full index forces a roll, which bounds the
/// memory an active segment's index can take.
pub(crate) const MAX_ENTRIES: usize = 10 * 1024 * 1024 / OffsetEntry::SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }

    fn decode(buf: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            position: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        }
    }
}

pub(crate) type OffsetIndex = IndexFile<OffsetEntry>;

impl IndexFile<OffsetEntry> {
    /// The last indexed batch starting at or before `rel_offset`.
    pub(crate) fn lookup(&self, rel_offset: u32) -> io::Result<Option<OffsetEntry>> {
        self.search(|e| e.rel_offset <= rel_offset)
    }
}

/// Entries must strictly increase in both offset and position.
pub(crate) fn is_ordered(entries: &[OffsetEntry]) -> bool {
    entries.windows(2).all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
}
