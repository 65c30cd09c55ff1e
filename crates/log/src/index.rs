//! Fixed-width index file machinery shared by the offset and time indexes.
//!
//! The active segment keeps every entry in memory so appends cost no syscalls and lookups no
//! preads; the entries reach the file on roll, clean close and recovery (a crash loses nothing
//! that recovery cannot rebuild, because the active segment is always rescanned after a crash).
//! Closed segments are searched with preads, so resident memory does not grow with the amount of
//! data stored.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::file_cache::{FileCache, LazyFile};

pub(crate) trait IndexEntry: Copy + PartialEq + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(buf: &[u8]) -> Self;
}

/// Once a file-backed binary search narrows to this many entries, one pread fetches them all.
const SCAN_ENTRIES: usize = 512;

pub(crate) struct IndexFile<E> {
    file: LazyFile,
    state: Mutex<State<E>>,
}

struct State<E> {
    /// Every entry, while the owning segment is active (or being rebuilt).
    mem: Option<Vec<E>>,
    len: usize,
    /// Entries already written to the file.
    persisted: usize,
    last: Option<E>,
}

fn encode_all<E: IndexEntry>(entries: &[E]) -> Vec<u8> {
    let mut buf = vec![0u8; entries.len() * E::SIZE];
    for (e, chunk) in entries.iter().zip(buf.chunks_exact_mut(E::SIZE)) {
        e.encode(chunk);
    }
    buf
}

fn decode_all<E: IndexEntry>(buf: &[u8]) -> Vec<E> {
    buf.chunks_exact(E::SIZE).map(E::decode).collect()
}

impl<E: IndexEntry> IndexFile<E> {
    fn with_state(file: LazyFile, mem: Option<Vec<E>>, len: usize, last: Option<E>) -> Self {
        IndexFile { file, state: Mutex::new(State { mem, len, persisted: len, last }) }
    }

    fn state(&self) -> MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates an empty index (truncating any stale file) for a new active segment.
    /// `reopen_path` is the name the file will have once the segment is in place (the cleaner writes under another).
    pub(crate) fn create(path: &Path, reopen_path: PathBuf, cache: &Arc<FileCache>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let file = LazyFile::pinned(reopen_path, file, cache);
        Ok(Self::with_state(file, Some(Vec::new()), 0, None))
    }

    /// Opens an index to be rebuilt: entries are re-added in memory and `persist_rebuilt` rewrites
    /// the file only if it differs.
    pub(crate) fn open_for_rebuild(path: &Path, cache: &Arc<FileCache>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let file = LazyFile::pinned(path.to_path_buf(), file, cache);
        let index = Self::with_state(file, Some(Vec::new()), 0, None);
        Ok(index)
    }

    /// Opens an existing index, file-backed. `None` if it is missing or not a whole number of
    /// entries (the caller then rebuilds it).
    pub(crate) fn open_existing(path: &Path, cache: &Arc<FileCache>) -> io::Result<Option<Self>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = file.metadata()?.len();
        if bytes % E::SIZE as u64 != 0 {
            return Ok(None);
        }
        let len = (bytes / E::SIZE as u64) as usize;
        let last = if len > 0 { Some(read_entry(&file, len - 1)?) } else { None };
        Ok(Some(Self::with_state(LazyFile::pinned(path.to_path_buf(), file, cache), None, len, last)))
    }

    pub(crate) fn len(&self) -> usize {
        self.state().len
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.state().last
    }

    pub(crate) fn first(&self) -> io::Result<Option<E>> {
        let st = self.state();
        match &st.mem {
            Some(mem) => Ok(mem.first().copied()),
            None if st.len == 0 => Ok(None),
            None => read_entry(&*self.file.get()?, 0).map(Some),
        }
    }

    /// All entries (used to sanity-check the index of the segment that becomes active).
    pub(crate) fn entries(&self) -> io::Result<Vec<E>> {
        let st = self.state();
        match &st.mem {
            Some(mem) => Ok(mem.clone()),
            None => {
                let mut buf = vec![0u8; st.len * E::SIZE];
                self.file.get()?.read_exact_at(&mut buf, 0)?;
                Ok(decode_all(&buf))
            }
        }
    }

    pub(crate) fn push(&self, entry: E) {
        let mut st = self.state();
        match st.mem.as_mut() {
            Some(mem) => mem.push(entry),
            None => {
                // Only active segments are appended to and they always hold their entries in
                // memory; write through so a logic slip cannot corrupt the file.
                debug_assert!(false, "push to a sealed index");
                let mut buf = vec![0u8; E::SIZE];
                entry.encode(&mut buf);
                if self.file.get().and_then(|f| f.write_all_at(&buf, (st.len * E::SIZE) as u64)).is_err() {
                    return;
                }
                st.persisted += 1;
            }
        }
        st.len += 1;
        st.last = Some(entry);
    }

    /// The first entry for which `pred` fails, where `pred` is true for a prefix of the entries.
    pub(crate) fn first_not(&self, pred: impl Fn(&E) -> bool) -> io::Result<Option<E>> {
        let st = self.state();
        if let Some(mem) = &st.mem {
            return Ok(mem.get(mem.partition_point(&pred)).copied());
        }
        let len = st.len;
        drop(st);
        let file = self.file.get()?;
        let (mut lo, mut hi) = (0usize, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&read_entry(&file, mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo < len {
            read_entry(&file, lo).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The last entry for which `pred` holds, where `pred` is true for a prefix of the entries.
    pub(crate) fn search(&self, pred: impl Fn(&E) -> bool) -> io::Result<Option<E>> {
        let st = self.state();
        if let Some(mem) = &st.mem {
            let n = mem.partition_point(&pred);
            return Ok(n.checked_sub(1).map(|i| mem[i]));
        }
        // Sealed: the file no longer changes, so search it without holding the lock.
        let len = st.len;
        drop(st);
        if len == 0 {
            return Ok(None);
        }
        let file = self.file.get()?;
        let (mut lo, mut hi) = (0usize, len);
        let mut best = None;
        while hi - lo > SCAN_ENTRIES {
            let mid = lo + (hi - lo) / 2;
            let e = read_entry(&file, mid)?;
            if pred(&e) {
                best = Some(e);
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if hi > lo {
            let mut buf = vec![0u8; (hi - lo) * E::SIZE];
            file.read_exact_at(&mut buf, (lo * E::SIZE) as u64)?;
            for e in decode_all::<E>(&buf) {
                if !pred(&e) {
                    break;
                }
                best = Some(e);
            }
        }
        Ok(best)
    }

    /// Writes entries not yet in the file. Returns whether anything was written.
    pub(crate) fn write_pending(&self) -> io::Result<bool> {
        let mut st = self.state();
        Self::write_pending_locked(&self.file, &mut st)
    }

    fn write_pending_locked(file: &LazyFile, st: &mut State<E>) -> io::Result<bool> {
        if st.persisted >= st.len {
            return Ok(false);
        }
        let Some(mem) = &st.mem else { return Ok(false) };
        let buf = encode_all(&mem[st.persisted..st.len]);
        file.get()?.write_all_at(&buf, (st.persisted * E::SIZE) as u64)?;
        st.persisted = st.len;
        Ok(true)
    }

    /// Writes pending entries and drops the in-memory copy (the segment is no longer active).
    /// Returns whether anything was written.
    pub(crate) fn seal(&self) -> io::Result<bool> {
        let mut st = self.state();
        let wrote = Self::write_pending_locked(&self.file, &mut st)?;
        st.mem = None;
        Ok(wrote)
    }

    /// Loads the file into memory so the segment can take appends again.
    pub(crate) fn activate(&self) -> io::Result<()> {
        let mut st = self.state();
        if st.mem.is_none() {
            let mut buf = vec![0u8; st.len * E::SIZE];
            self.file.get()?.read_exact_at(&mut buf, 0)?;
            st.mem = Some(decode_all(&buf));
        }
        Ok(())
    }

    /// After a rebuild: makes the file hold exactly the in-memory entries, rewriting (and
    /// syncing) it only if it differs. Returns whether it was rewritten.
    pub(crate) fn persist_rebuilt(&self) -> io::Result<bool> {
        let mut st = self.state();
        let Some(mem) = &st.mem else { return Ok(false) };
        let wanted = encode_all(&mem[..]);
        let file = self.file.get()?;
        let current_len = file.metadata()?.len();
        let same = current_len == wanted.len() as u64 && {
            let mut current = vec![0u8; wanted.len()];
            file.read_exact_at(&mut current, 0)?;
            current == wanted
        };
        if !same {
            file.write_all_at(&wanted, 0)?;
            file.set_len(wanted.len() as u64)?;
            file.sync_data()?;
        }
        st.persisted = st.len;
        Ok(!same)
    }

    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.get()?.sync_data()
    }

    /// The file handle, pinned open while the segment is active and cached otherwise.
    pub(crate) fn file(&self) -> &LazyFile {
        &self.file
    }
}

fn read_entry<E: IndexEntry>(file: &File, i: usize) -> io::Result<E> {
    let mut buf = [0u8; 16];
    let buf = &mut buf[..E::SIZE];
    file.read_exact_at(buf, (i * E::SIZE) as u64)?;
    Ok(E::decode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset_index::OffsetEntry;

    fn entry(i: u32) -> OffsetEntry {
        OffsetEntry { rel_offset: i * 10, position: i * 100 }
    }

    #[test]
    fn memory_and_file_searches_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let index = IndexFile::<OffsetEntry>::create(&path, path.clone(), &FileCache::shared()).unwrap();
        for i in 0..3000 {
            index.push(entry(i));
        }
        let probes = [0u32, 5, 10, 11, 9999, 15_000, 29_990, 29_991, 100_000];
        let in_mem: Vec<_> = probes.iter().map(|&t| index.search(|e| e.rel_offset <= t).unwrap()).collect();
        assert!(index.seal().unwrap());
        let on_file: Vec<_> = probes.iter().map(|&t| index.search(|e| e.rel_offset <= t).unwrap()).collect();
        assert_eq!(in_mem, on_file);
        assert_eq!(on_file[0], Some(entry(0)));
        assert_eq!(on_file[3], Some(entry(1)));
        assert_eq!(on_file[8], Some(entry(2999)));
        assert_eq!(index.search(|e| e.position > 1_000_000).unwrap(), None);

        let reopened = IndexFile::<OffsetEntry>::open_existing(&path, &FileCache::shared()).unwrap().unwrap();
        assert_eq!(reopened.len(), 3000);
        assert_eq!(reopened.last(), Some(entry(2999)));
        assert_eq!(reopened.first().unwrap(), Some(entry(0)));
        reopened.activate().unwrap();
        reopened.push(entry(3000));
        assert!(reopened.write_pending().unwrap());
        assert_eq!(IndexFile::<OffsetEntry>::open_existing(&path, &FileCache::shared()).unwrap().unwrap().len(), 3001);
    }

    #[test]
    fn partial_entry_files_are_rejected_and_rebuilds_only_rewrite_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(IndexFile::<OffsetEntry>::open_existing(&path, &FileCache::shared()).unwrap().is_none());

        let rebuilt = IndexFile::<OffsetEntry>::open_for_rebuild(&path, &FileCache::shared()).unwrap();
        rebuilt.push(entry(0));
        rebuilt.push(entry(1));
        assert!(rebuilt.persist_rebuilt().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        let again = IndexFile::<OffsetEntry>::open_for_rebuild(&path, &FileCache::shared()).unwrap();
        again.push(entry(0));
        again.push(entry(1));
        assert!(!again.persist_rebuilt().unwrap());
    }
}
