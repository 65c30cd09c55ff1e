//! The aborted-transactions index of a segment (Kafka's `TransactionIndex`, file `<base offset>.txnindex`): one
//! 34-byte entry per ABORT marker in the segment: version (i16, 0), producer id, first offset, last offset (the
//! marker's) and the last stable offset when the transaction ended, all big-endian. Fetch with read_committed
//! returns the entries that overlap the fetched range so that consumers skip the aborted records.
//!
//! Entries are few (one per aborted transaction), so they are kept in memory as well; the file is created on the
//! first entry, appended to, fsynced with the segment, and rebuilt by recovery from the replayed markers.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) const TXN_INDEX_EXT: &str = "txnindex";
const ENTRY_SIZE: usize = 34;
const VERSION: i16 = 0;

/// One aborted transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was written: an entry whose LSO is at or beyond a
    /// fetch's upper bound means no later segment can hold an aborted transaction overlapping the fetch.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..2].copy_from_slice(&VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |p: usize| b.get(p..p + 8).and_then(|s| s.try_into().ok()).map(i64::from_be_bytes);
        if b.get(0..2) != Some(&VERSION.to_be_bytes()[..]) {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        })
    }
}

pub(crate) struct TxnIndex {
    path: PathBuf,
    entries: Mutex<Vec<AbortedTxn>>,
    dirty: AtomicBool,
}

impl TxnIndex {
    /// An index with no entries whose file (if a stale one exists) is removed.
    pub(crate) fn create(path: PathBuf) -> io::Result<TxnIndex> {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(TxnIndex::empty(path))
    }

    /// An index with no entries that does not touch the file (the cleaner's new segments).
    pub(crate) fn empty(path: PathBuf) -> TxnIndex {
        TxnIndex { path, entries: Mutex::new(Vec::new()), dirty: AtomicBool::new(false) }
    }

    /// Loads the file if it exists. A torn trailing entry (crash during an append) or an unreadable one ends the
    /// index there; recovery re-appends what the log says from the replay point on.
    pub(crate) fn load(path: PathBuf) -> io::Result<TxnIndex> {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_SIZE);
        for chunk in bytes.chunks(ENTRY_SIZE) {
            match (chunk.len() == ENTRY_SIZE).then(|| AbortedTxn::decode(chunk)).flatten() {
                Some(e) => entries.push(e),
                None => {
                    tracing::warn!(path = %path.display(), "transaction index ends in an unreadable entry; truncating");
                    break;
                }
            }
        }
        let index = TxnIndex { path, entries: Mutex::new(entries), dirty: AtomicBool::new(false) };
        if bytes.len() != index.lock().len() * ENTRY_SIZE {
            index.rewrite(&index.lock())?;
        }
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AbortedTxn>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn entries(&self) -> Vec<AbortedTxn> {
        self.lock().clone()
    }

    pub(crate) fn append(&self, entry: AbortedTxn) -> io::Result<()> {
        let mut entries = self.lock();
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&entry.encode())?;
        entries.push(entry);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops the entries of markers at or after `offset` (recovery replays them again).
    pub(crate) fn truncate_from(&self, offset: i64) -> io::Result<()> {
        let mut entries = self.lock();
        let keep = entries.iter().take_while(|e| e.last_offset < offset).count();
        if keep == entries.len() {
            return Ok(());
        }
        entries.truncate(keep);
        self.rewrite(&entries)
    }

    /// Replaces the entries (the cleaner's merged index for a cleaned segment).
    pub(crate) fn replace(&self, new: Vec<AbortedTxn>) -> io::Result<()> {
        let mut entries = self.lock();
        *entries = new;
        self.rewrite(&entries)
    }

    fn rewrite(&self, entries: &[AbortedTxn]) -> io::Result<()> {
        if entries.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("txnindex.tmp");
        let mut f = fs::File::create(&tmp)?;
        for e in entries {
            f.write_all(&e.encode())?;
        }
        f.sync_data()?;
        fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    /// Entries overlapping [fetch_offset, upper_bound), and whether the search is complete (an entry's LSO reaches
    /// the upper bound, so later segments cannot add anything), as Kafka's collectAbortedTxns.
    pub(crate) fn collect(&self, fetch_offset: i64, upper_bound: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for e in self.lock().iter() {
            if e.last_offset >= fetch_offset && e.first_offset < upper_bound {
                out.push(*e);
            }
            if e.last_stable_offset >= upper_bound {
                return true;
            }
        }
        false
    }

    pub(crate) fn sync_if_dirty(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let r = fs::File::open(&self.path).and_then(|f| f.sync_data());
            if let Err(e) = r {
                if e.kind() != io::ErrorKind::NotFound {
                    self.dirty.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn { producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: lso }
    }

    #[test]
    fn entries_are_34_bytes_in_kafka_order_and_survive_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let idx = TxnIndex::create(path.clone()).unwrap();
        assert!(!path.exists(), "created lazily");
        idx.append(e(7, 0, 5, 6)).unwrap();
        idx.append(e(8, 3, 9, 10)).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(i64::from_be_bytes(bytes[2..10].try_into().unwrap()), 7);
        assert_eq!(i64::from_be_bytes(bytes[26..34].try_into().unwrap()), 6);
        // A torn entry is cut on load.
        let mut torn = bytes.clone();
        torn.extend([0u8; 10]);
        fs::write(&path, &torn).unwrap();
        let loaded = TxnIndex::load(path.clone()).unwrap();
        assert_eq!(loaded.entries(), vec![e(7, 0, 5, 6), e(8, 3, 9, 10)]);
        assert_eq!(fs::read(&path).unwrap().len(), 68);
        loaded.truncate_from(9).unwrap();
        assert_eq!(TxnIndex::load(path).unwrap().entries(), vec![e(7, 0, 5, 6)]);
    }

    #[test]
    fn collect_returns_overlapping_entries_and_completion() {
        let dir = tempfile::tempdir().unwrap();
        let idx = TxnIndex::create(dir.path().join("x.txnindex")).unwrap();
        idx.append(e(1, 0, 4, 5)).unwrap();
        idx.append(e(2, 6, 10, 11)).unwrap();
        let mut out = Vec::new();
        assert!(!idx.collect(5, 20, &mut out));
        assert_eq!(out, vec![e(2, 6, 10, 11)]);
        out.clear();
        assert!(idx.collect(0, 5, &mut out));
        assert_eq!(out, vec![e(1, 0, 4, 5)]);
    }
}
