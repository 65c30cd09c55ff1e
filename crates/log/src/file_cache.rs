//! A bound on the file descriptors that inactive segments hold (`log.segment.open.files.max` in the broker).
//!
//! Every segment file (log, offset index, time index) is a [`LazyFile`]: the active segment's files are pinned
//! open, while a sealed segment's files are opened on first use and closed again by a [`FileCache`] shared by every
//! log of the broker once more than its capacity are open, least recently used first (a clock: an entry used since
//! the hand last passed gets a second chance). Without it a broker holds three descriptors per segment and a data
//! directory with many partitions or segments cannot even be opened.
//!
//! A reader gets an `Arc<File>`: closing a slot never pulls a file from under a read in progress, it only means
//! the next read opens it again. A segment removed from its log (retention, DeleteRecords, a cleaner swap, topic
//! deletion) is marked so: its files are never opened again by path, since that path may by then name another
//! segment's file (the cleaner's replacement keeps the first replaced segment's base offset). Such a read fails
//! with [`segment_gone`], and the log retries it with its new segment list.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// Default of `log.segment.open.files.max`.
pub const DEFAULT_OPEN_FILES_MAX: usize = 1024;

/// Broker-wide bound on the files of inactive segments held open. Pinned files (active segments, segments with
/// writes not yet fsynced, segments the cleaner is writing) are not counted: they are open whatever the bound.
pub struct FileCache {
    max: AtomicUsize,
    /// Files open and counted (slots registered in the ring whose registration is current).
    open: AtomicUsize,
    /// Total opens through the cache (for tests and metrics).
    opens: AtomicU64,
    ring: Mutex<Ring>,
}

struct Ring {
    /// Registered slots with the registration number they had; stale entries (the slot was closed, pinned or
    /// dropped since) are skipped and dropped when the hand reaches them.
    entries: VecDeque<(Weak<Inner>, u64)>,
    next_gen: u64,
}

impl FileCache {
    pub fn new(max: usize) -> Arc<FileCache> {
        Arc::new(FileCache {
            max: AtomicUsize::new(max.max(1)),
            open: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            ring: Mutex::new(Ring { entries: VecDeque::new(), next_gen: 1 }),
        })
    }

    /// The cache of logs opened without one (tests and tools); the broker makes its own from its config.
    pub fn shared() -> Arc<FileCache> {
        static SHARED: std::sync::OnceLock<Arc<FileCache>> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| FileCache::new(DEFAULT_OPEN_FILES_MAX)).clone()
    }

    pub fn max_open(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Inactive segments' files open right now.
    pub fn open_files(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// How many times a file was opened through the cache.
    pub fn total_opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an open slot in under a new registration number. Called under the slot's lock: the ring's lock is
    /// never held while taking a slot's, so slot → ring is the only lock order.
    fn register(&self, slot: &Arc<Inner>) {
        let mut ring = self.ring();
        let gen = ring.next_gen;
        ring.next_gen += 1;
        // Set before the ring lock is released, or the hand could take the new entry for a stale one.
        slot.gen.store(gen, Ordering::Release);
        ring.entries.push_back((Arc::downgrade(slot), gen));
        self.open.fetch_add(1, Ordering::AcqRel);
        // Stale entries pile up while nothing is evicted (segments deleted while open): drop them now and then.
        let live = self.open.load(Ordering::Acquire);
        if ring.entries.len() > 2 * live + 64 {
            ring.entries.retain(|(w, g)| w.upgrade().is_some_and(|s| s.gen.load(Ordering::Acquire) == *g));
        }
    }

    /// Closes the least recently used files until at most `max` are open.
    fn evict_over_limit(&self) {
        loop {
            let excess = self.open.load(Ordering::Acquire).saturating_sub(self.max_open());
            if excess == 0 {
                return;
            }
            let mut victims = Vec::with_capacity(excess);
            {
                let mut ring = self.ring();
                // Every entry is looked at at most twice (once to clear its reference bit).
                let mut budget = 2 * ring.entries.len();
                while victims.len() < excess && budget > 0 {
                    budget -= 1;
                    let Some((weak, gen)) = ring.entries.pop_front() else { break };
                    let Some(slot) = weak.upgrade() else { continue };
                    if slot.gen.load(Ordering::Acquire) != gen {
                        continue;
                    }
                    if slot.referenced.swap(false, Ordering::AcqRel) {
                        ring.entries.push_back((weak, gen));
                        continue;
                    }
                    victims.push((slot, gen));
                }
            }
            if victims.is_empty() {
                return;
            }
            for (slot, gen) in victims {
                slot.close_if(gen, self);
            }
        }
    }
}

/// A segment file that may be closed while the segment is inactive.
pub(crate) struct LazyFile {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    cache: Arc<FileCache>,
    state: Mutex<State>,
    /// Registration number while counted by the cache, 0 otherwise (mirrors `state`, readable without its lock).
    gen: AtomicU64,
    /// Used since the clock hand last passed.
    referenced: AtomicBool,
}

struct State {
    file: Option<Arc<File>>,
    pinned: bool,
    /// The segment left its log: never open the path again.
    removed: bool,
}

/// The error of a read of a segment that left its log and whose files were closed.
pub(crate) fn segment_gone(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, SegmentGone(path.display().to_string()))
}

#[derive(Debug)]
struct SegmentGone(String);

impl std::fmt::Display for SegmentGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: the segment was removed from the log", self.0)
    }
}

impl std::error::Error for SegmentGone {}

/// Whether `e` is [`segment_gone`].
pub(crate) fn is_segment_gone(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SegmentGone>())
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

impl LazyFile {
    /// A file opened by the caller, pinned open (an active segment, or one being built or checked).
    pub(crate) fn pinned(path: PathBuf, file: File, cache: &Arc<FileCache>) -> LazyFile {
        LazyFile {
            inner: Arc::new(Inner {
                path,
                cache: cache.clone(),
                state: Mutex::new(State { file: Some(Arc::new(file)), pinned: true, removed: false }),
                gen: AtomicU64::new(0),
                referenced: AtomicBool::new(false),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open file, opening it if the cache closed it.
    pub(crate) fn get(&self) -> io::Result<Arc<File>> {
        let mut st = self.state();
        if let Some(f) = &st.file {
            self.inner.referenced.store(true, Ordering::Release);
            return Ok(f.clone());
        }
        if st.removed {
            return Err(segment_gone(&self.inner.path));
        }
        let file = Arc::new(open_rw(&self.inner.path)?);
        self.inner.cache.opens.fetch_add(1, Ordering::Relaxed);
        st.file = Some(file.clone());
        self.inner.cache.register(&self.inner);
        drop(st);
        self.inner.cache.evict_over_limit();
        Ok(file)
    }

    /// Keeps the file open (and uncounted) until `unpin`.
    pub(crate) fn pin(&self) -> io::Result<()> {
        let mut st = self.state();
        if st.pinned {
            return Ok(());
        }
        if st.file.is_none() {
            if st.removed {
                return Err(segment_gone(&self.inner.path));
            }
            st.file = Some(Arc::new(open_rw(&self.inner.path)?));
            self.inner.cache.opens.fetch_add(1, Ordering::Relaxed);
        } else if self.inner.gen.swap(0, Ordering::AcqRel) != 0 {
            self.inner.cache.open.fetch_sub(1, Ordering::AcqRel);
        }
        st.pinned = true;
        Ok(())
    }

    /// Hands the open file to the cache, which closes it when it needs room.
    pub(crate) fn unpin(&self) {
        let mut st = self.state();
        if !st.pinned {
            return;
        }
        st.pinned = false;
        if st.file.is_some() {
            self.inner.cache.register(&self.inner);
        }
        drop(st);
        self.inner.cache.evict_over_limit();
    }

    /// The segment left its log: a file still open stays usable until the cache closes it, then reads fail with
    /// [`segment_gone`].
    pub(crate) fn mark_removed(&self) {
        self.state().removed = true;
    }

    #[cfg(test)]
    pub(crate) fn is_open(&self) -> bool {
        self.state().file.is_some()
    }
}

impl Inner {
    fn close_if(&self, gen: u64, cache: &FileCache) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.pinned || self.gen.load(Ordering::Acquire) != gen {
            return;
        }
        self.gen.store(0, Ordering::Release);
        st.file = None;
        cache.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if *self.gen.get_mut() != 0 {
            self.cache.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, n: usize, cache: &Arc<FileCache>) -> Vec<LazyFile> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("f{i}"));
                std::fs::write(&path, [i as u8]).unwrap();
                let f = LazyFile::pinned(path.clone(), File::open(&path).unwrap(), cache);
                f.unpin();
                f
            })
            .collect()
    }

    #[test]
    fn at_most_max_unpinned_files_stay_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(3);
        let fs = files(dir.path(), 8, &cache);
        assert_eq!(cache.open_files(), 3);
        assert_eq!(fs.iter().filter(|f| f.is_open()).count(), 3);
        for f in &fs {
            let file = f.get().unwrap();
            let mut b = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut b, 0).unwrap();
            assert!(cache.open_files() <= 3);
        }
        // Pinned files are open whatever the bound and not counted.
        for f in &fs[..5] {
            f.pin().unwrap();
        }
        assert!(fs[..5].iter().all(LazyFile::is_open));
        assert!(cache.open_files() <= 3);
        for f in &fs[..5] {
            f.unpin();
        }
        assert_eq!(cache.open_files(), 3);
        drop(fs);
        assert_eq!(cache.open_files(), 0);
    }

    #[test]
    fn a_removed_file_is_never_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(1);
        let fs = files(dir.path(), 2, &cache);
        assert!(!fs[0].is_open() && fs[1].is_open());
        fs[0].mark_removed();
        fs[1].mark_removed();
        // Still open: keeps serving until closed.
        assert!(fs[1].get().is_ok());
        let e = fs[0].get().unwrap_err();
        assert!(is_segment_gone(&e), "{e}");
    }
}
