//! One segment: a `.log` file of whole batches named after its base offset, plus its offset and
//! time indexes, and the in-memory facts about it that retention and timestamp lookups need.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use crate::batch::{BatchHeader, HEADER_SIZE, MIN_BATCH_LENGTH};
use crate::error::LogError;
use crate::file_cache::{FileCache, LazyFile};
use crate::log::ReadResult;
use crate::offset_index::{self, OffsetEntry, OffsetIndex};
use crate::time_index::{self, TimeEntry, TimeIndex};
use crate::txn_index::{TxnIndex, TXN_INDEX_EXT};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// Suffixes of the log cleaner's files: written as `.cleaned`, renamed to `.swap` (the commit point), then to
/// their final names; replaced segments pass through `.deleted`.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
pub(crate) const SWAP_SUFFIX: &str = ".swap";
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// Marks "no append yet" in `rolling_ts`.
const NO_TIMESTAMP: i64 = i64::MIN;
/// Header walks read this much at once so runs of small batches cost one pread.
const CURSOR_CHUNK: u64 = 8192;

/// Kafka's naming: base offset, zero-padded to 20 digits.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Splits `00000000000000000042.log.deleted` into (42, "log.deleted").
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// A timestamp and the base offset of the first batch that reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

struct Stats {
    /// Largest batch max timestamp in the segment (None while empty).
    max: Option<TimestampOffset>,
    /// Bytes appended since the last offset index entry.
    bytes_since_index: u64,
}

/// What recovery assembled for a segment.
pub(crate) struct Parts {
    pub log: LazyFile,
    pub size: u64,
    pub next_offset: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    pub max: Option<TimestampOffset>,
}

pub(crate) struct Segment {
    base_offset: i64,
    dir: PathBuf,
    /// Pinned open while the segment is active (or being built or recovered); afterwards opened on demand and
    /// closed by the broker's [`FileCache`], as are the index files.
    log: LazyFile,
    /// Committed size: readers never look past it, so a half-written batch is never served.
    size: AtomicU64,
    /// Offset after the last batch.
    next_offset: AtomicI64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// The aborted transactions whose ABORT marker is in this segment.
    txn_index: TxnIndex,
    stats: Mutex<Stats>,
    /// Wall-clock time of the first append, for segment.ms.
    rolling_ts: AtomicI64,
    /// Appends not yet fdatasync'ed.
    dirty_log: AtomicBool,
    /// Index writes (at seal) not yet fdatasync'ed.
    dirty_index: AtomicBool,
}

impl Segment {
    /// A new, empty active segment (stale files of the same name are truncated).
    pub(crate) fn create(dir: &Path, base_offset: i64, cache: &Arc<FileCache>) -> io::Result<Segment> {
        Segment::create_with_suffix(dir, base_offset, "", cache)
    }

    /// A new, empty segment whose files carry `suffix` after their usual names (the log cleaner writes
    /// `.cleaned` segments and renames them into place). `path()` always names the final files, and the files stay
    /// pinned open until `release`, since reopening by the final name before the rename would find another file.
    pub(crate) fn create_with_suffix(
        dir: &Path,
        base_offset: i64,
        suffix: &str,
        cache: &Arc<FileCache>,
    ) -> io::Result<Segment> {
        let named = |ext: &str| dir.join(format!("{}{suffix}", file_name(base_offset, ext)));
        let final_name = |ext: &str| dir.join(file_name(base_offset, ext));
        let log = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(named(LOG_EXT))?;
        let log = LazyFile::pinned(final_name(LOG_EXT), log, cache);
        let offset_index = OffsetIndex::create(&named(INDEX_EXT), final_name(INDEX_EXT), cache)?;
        let time_index = TimeIndex::create(&named(TIME_INDEX_EXT), final_name(TIME_INDEX_EXT), cache)?;
        let parts = Parts { log, size: 0, next_offset: base_offset, offset_index, time_index, max: None };
        let txn_path = dir.join(file_name(base_offset, TXN_INDEX_EXT));
        // A cleaned segment gets its entries when it is swapped in; a new one starts empty (a stale file of the
        // same name belongs to data that is gone).
        let txn_index = if suffix.is_empty() { TxnIndex::create(txn_path)? } else { TxnIndex::empty(txn_path) };
        Ok(Segment::with_txn_index(dir, base_offset, parts, txn_index))
    }

    /// A segment recovery found on disk, with its transaction index file if it has one.
    pub(crate) fn from_parts(dir: &Path, base_offset: i64, parts: Parts) -> io::Result<Segment> {
        let txn_index = TxnIndex::load(dir.join(file_name(base_offset, TXN_INDEX_EXT)))?;
        Ok(Segment::with_txn_index(dir, base_offset, parts, txn_index))
    }

    fn with_txn_index(dir: &Path, base_offset: i64, parts: Parts, txn_index: TxnIndex) -> Segment {
        Segment {
            txn_index,
            base_offset,
            dir: dir.to_path_buf(),
            log: parts.log,
            size: AtomicU64::new(parts.size),
            next_offset: AtomicI64::new(parts.next_offset),
            offset_index: parts.offset_index,
            time_index: parts.time_index,
            stats: Mutex::new(Stats { max: parts.max, bytes_since_index: 0 }),
            rolling_ts: AtomicI64::new(NO_TIMESTAMP),
            dirty_log: AtomicBool::new(false),
            dirty_index: AtomicBool::new(false),
        }
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn path(&self, ext: &str) -> PathBuf {
        self.dir.join(file_name(self.base_offset, ext))
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// The log file, opened if the cache had closed it.
    pub(crate) fn log_file(&self) -> io::Result<Arc<File>> {
        self.log.get()
    }

    fn handles(&self) -> [&LazyFile; 3] {
        [&self.log, self.offset_index.file(), self.time_index.file()]
    }

    /// The segment is no longer active (or no longer being built or checked): its files may be closed when idle.
    /// What is not yet fsynced is fsynced through whatever descriptor is open at the next flush (the kernel flushes
    /// the file, not the descriptor, and reports a write-back error not yet seen to a descriptor opened later).
    pub(crate) fn release(&self) {
        for h in self.handles() {
            h.unpin();
        }
    }

    /// The segment left its log: its files are never opened by name again (the name may now be another
    /// segment's); reads that find them closed fail with `file_cache::segment_gone` and are retried by the log.
    pub(crate) fn mark_removed(&self) {
        for h in self.handles() {
            h.mark_removed();
        }
    }

    pub(crate) fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }

    pub(crate) fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }

    pub(crate) fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    pub(crate) fn max_timestamp(&self) -> Option<TimestampOffset> {
        self.stats().max
    }

    pub(crate) fn rolling_ts(&self) -> Option<i64> {
        let ts = self.rolling_ts.load(Ordering::Acquire);
        (ts != NO_TIMESTAMP).then_some(ts)
    }

    /// Recovery found the valid data to end here.
    pub(crate) fn set_recovered_end(&self, size: u64, next_offset: i64) {
        self.size.store(size, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
    }

    pub(crate) fn set_rolling_ts(&self, ts: i64) {
        self.rolling_ts.store(ts, Ordering::Release);
    }

    pub(crate) fn set_bytes_since_index(&self, bytes: u64) {
        self.stats().bytes_since_index = bytes;
    }

    pub(crate) fn indexes_full(&self) -> bool {
        self.offset_index.len() >= offset_index::MAX_ENTRIES || self.time_index.len() >= time_index::MAX_ENTRIES
    }

    /// Offset relative to the base, saturated into u32 (callers keep real values in range).
    pub(crate) fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32
    }

    fn absolute(&self, rel_offset: u32) -> i64 {
        self.base_offset + i64::from(rel_offset)
    }

    /// Updates the max timestamp and adds index entries for a batch written at `position`.
    /// Shared by appends and index rebuilds so both produce the same entries.
    pub(crate) fn track_batch(&self, position: u64, batch: &BatchHeader, index_interval: u64) {
        let mut st = self.stats();
        if st.max.is_none_or(|m| batch.max_timestamp > m.timestamp) {
            st.max = Some(TimestampOffset { timestamp: batch.max_timestamp, offset: batch.base_offset });
        }
        // The first batch is always indexed so that an empty index means an empty segment.
        if self.offset_index.len() == 0 || st.bytes_since_index >= index_interval {
            self.offset_index
                .push(OffsetEntry { rel_offset: self.relative(batch.base_offset), position: position as u32 });
            if let Some(max) = st.max {
                self.push_time_entry_if_greater(max);
            }
            st.bytes_since_index = 0;
        }
        st.bytes_since_index += batch.total_size() as u64;
    }

    fn push_time_entry_if_greater(&self, max: TimestampOffset) {
        if self.time_index.last().is_none_or(|e| max.timestamp > e.timestamp) {
            self.time_index.push(TimeEntry { timestamp: max.timestamp, rel_offset: self.relative(max.offset) });
        }
    }

    /// Makes the time index's last entry the segment's max timestamp (entries are rate-limited).
    pub(crate) fn add_final_time_entry(&self) {
        if let Some(max) = self.max_timestamp() {
            self.push_time_entry_if_greater(max);
        }
    }

    /// Writes `data` (whole, already validated and stamped batches) with a single pwrite at the
    /// committed end, then indexes them and publishes the new committed size.
    pub(crate) fn append(
        &self,
        data: &[u8],
        batches: &[BatchHeader],
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<()> {
        let start = self.size.load(Ordering::Acquire);
        let log = self.log.get()?;
        if let Err(e) = log.write_all_at(data, start) {
            // Drop any partial write so the file never holds bytes past the committed size.
            let _ = log.set_len(start);
            return Err(e);
        }
        let mut pos = start;
        for batch in batches {
            self.track_batch(pos, batch, index_interval);
            pos += batch.total_size() as u64;
        }
        if let Some(last) = batches.last() {
            self.next_offset.store(last.last_offset() + 1, Ordering::Release);
        }
        let _ = self.rolling_ts.compare_exchange(NO_TIMESTAMP, now_ms, Ordering::AcqRel, Ordering::Acquire);
        self.dirty_log.store(true, Ordering::Release);
        self.size.store(pos, Ordering::Release);
        Ok(())
    }

    /// The segment stops being active: indexes go to disk and leave memory. The caller then `release`s its files
    /// (once they carry their final names).
    pub(crate) fn seal(&self) -> io::Result<()> {
        self.add_final_time_entry();
        let wrote_offsets = self.offset_index.seal()?;
        let wrote_times = self.time_index.seal()?;
        if wrote_offsets || wrote_times {
            self.dirty_index.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Clean close of the active segment: indexes complete and durable, kept in memory.
    pub(crate) fn persist_active_indexes(&self) -> io::Result<()> {
        self.add_final_time_entry();
        self.offset_index.write_pending()?;
        self.time_index.write_pending()?;
        self.offset_index.sync()?;
        self.time_index.sync()
    }

    /// Loads the indexes into memory so the segment can take appends.
    pub(crate) fn activate(&self) -> io::Result<()> {
        for h in self.handles() {
            h.pin()?;
        }
        self.offset_index.activate()?;
        self.time_index.activate()?;
        let last_indexed = self.offset_index.last().map_or(0, |e| u64::from(e.position));
        self.set_bytes_since_index(self.size().saturating_sub(last_indexed));
        Ok(())
    }

    /// fdatasyncs what was written since the last call. Index files only need it once the segment
    /// is sealed: the active segment's indexes are rebuilt by crash recovery anyway.
    pub(crate) fn sync_if_dirty(&self, include_indexes: bool) -> io::Result<()> {
        if self.dirty_log.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.log.get().and_then(|f| f.sync_data()) {
                self.dirty_log.store(true, Ordering::Release);
                return Err(e);
            }
        }
        // Aborted-transaction entries are durable with the markers they describe.
        self.txn_index.sync_if_dirty()?;
        if include_indexes && self.dirty_index.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.offset_index.sync().and_then(|()| self.time_index.sync()) {
                self.dirty_index.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Retention's notion of the segment's age: its largest timestamp, or the file's modification
    /// time if it holds no timestamps (as Kafka does).
    pub(crate) fn largest_timestamp(&self) -> i64 {
        match self.max_timestamp() {
            Some(m) if m.timestamp >= 0 => m.timestamp,
            _ => self
                .log
                .get()
                .and_then(|f| f.metadata())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(i64::MAX, |d| d.as_millis() as i64),
        }
    }

    /// fdatasyncs the log and both index files (a cleaned segment before it is swapped in).
    pub(crate) fn sync_all_files(&self) -> io::Result<()> {
        self.log.get()?.sync_data()?;
        self.offset_index.sync()?;
        self.time_index.sync()?;
        self.dirty_log.store(false, Ordering::Release);
        self.dirty_index.store(false, Ordering::Release);
        Ok(())
    }

    /// Visits every batch header from the start of the segment (the log cleaner's scan); `visit` gets the batch's
    /// position and header and returns false to stop.
    pub(crate) fn walk_all(&self, visit: impl FnMut(u64, &BatchHeader) -> bool) -> Result<(), LogError> {
        self.walk(0, self.size(), visit)
    }

    /// Reads `len` bytes at `pos` (whole batches the caller located with `walk_all`).
    pub(crate) fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.log.get()?.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// Unlinks the segment's files. Open handles (readers holding the segment) keep working.
    pub(crate) fn delete_files(&self) {
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT] {
            let path = self.path(ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "failed to delete segment file")
                }
            }
        }
    }

    fn corrupt(&self, pos: u64, what: &str) -> LogError {
        LogError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what} at position {pos}", self.path(LOG_EXT).display()),
        ))
    }

    fn cursor(&self, committed: u64) -> io::Result<HeaderCursor<'_>> {
        Ok(HeaderCursor { seg: self, file: self.log.get()?, limit: committed, buf: Vec::new(), buf_start: 0 })
    }

    /// Visits batches from `pos` (a batch start) until `visit` returns false or `committed`.
    fn walk(&self, pos: u64, committed: u64, visit: impl FnMut(u64, &BatchHeader) -> bool) -> Result<(), LogError> {
        self.cursor(committed)?.walk(pos, visit)
    }

    /// Position and header of the first batch whose last offset is >= `offset`: one index
    /// search, then a short header walk.
    pub(crate) fn find_batch(&self, offset: i64, committed: u64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut cursor = self.cursor(committed)?;
        self.find_batch_with(&mut cursor, offset)
    }

    fn find_batch_with(
        &self,
        cursor: &mut HeaderCursor<'_>,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let start = match self.offset_index.lookup(self.relative(offset))? {
            Some(e) if u64::from(e.position) < cursor.limit => u64::from(e.position),
            _ => 0,
        };
        let mut found = None;
        cursor.walk(start, |pos, h| {
            if h.last_offset() >= offset {
                found = Some((pos, *h));
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// Kafka's fetchUpperBoundOffset: the offset of the first indexed batch at or after the end of a read of
    /// `read_len` bytes that started with the batch holding `offset`; None if no index entry lies beyond it.
    pub(crate) fn fetch_upper_bound(&self, offset: i64, read_len: u64) -> Result<Option<i64>, LogError> {
        let Some((pos, _)) = self.find_batch(offset, self.size())? else { return Ok(None) };
        let target = pos + read_len;
        let next = self.offset_index.first_not(|e| u64::from(e.position) < target)?;
        Ok(next.map(|e| self.absolute(e.rel_offset)))
    }

    /// Visits the header of every committed batch whose last offset is >= `offset` (producer state replay).
    pub(crate) fn walk_headers_from(
        &self,
        offset: i64,
        mut visit: impl FnMut(u64, &BatchHeader),
    ) -> Result<(), LogError> {
        let mut cursor = self.cursor(self.size())?;
        let Some((pos, _)) = self.find_batch_with(&mut cursor, offset)? else {
            return Ok(());
        };
        cursor.walk(pos, |p, h| {
            visit(p, h);
            true
        })
    }

    /// Whole batches from the one containing `offset`; see `Log::read`. `None` if no batch of
    /// this segment reaches `offset`.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Option<ReadResult>, LogError> {
        let committed = self.size();
        let mut cursor = self.cursor(committed)?;
        let Some((pos, first)) = self.find_batch_with(&mut cursor, offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= max_offset {
            return Ok(Some(ReadResult::empty()));
        }
        let first_size = first.total_size();
        let len = if first_size > max_bytes {
            if !min_one_batch {
                return Ok(Some(ReadResult::empty()));
            }
            first_size
        } else {
            (committed - pos).min(max_bytes as u64) as usize
        };
        // Small reads (consumers at the tail) are often already in the header walk's buffer.
        let buf = match cursor.take_range(pos, len) {
            Some(bytes) => bytes,
            None => {
                let mut buf = vec![0u8; len];
                crate::page_cache::read_exact_at(&cursor.file, &mut buf, pos)?;
                Bytes::from(buf)
            }
        };
        // Trim to whole batches below max_offset by walking the headers in memory.
        let (mut end, mut last_offset) = (0usize, -1i64);
        while end + HEADER_SIZE <= buf.len() {
            let h = BatchHeader::parse(&buf[end..])?;
            if h.batch_length < MIN_BATCH_LENGTH {
                return Err(self.corrupt(pos + end as u64, "invalid batch length"));
            }
            if end + h.total_size() > buf.len() || h.last_offset() >= max_offset {
                break;
            }
            last_offset = h.last_offset();
            end += h.total_size();
        }
        Ok(Some(ReadResult { records: buf.slice(..end), first_offset: first.base_offset, last_offset }))
    }

    /// Reads exactly the batch at `pos`.
    pub(crate) fn read_batch(&self, pos: u64, header: &BatchHeader) -> Result<ReadResult, LogError> {
        let mut buf = vec![0u8; header.total_size()];
        self.log.get()?.read_exact_at(&mut buf, pos)?;
        Ok(ReadResult {
            records: Bytes::from(buf),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        })
    }

    /// First batch with maxTimestamp >= `ts` among batches whose last offset is in [lo, hi).
    pub(crate) fn find_by_timestamp(&self, ts: i64, lo: i64, hi: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let committed = self.size();
        let start_rel = self.time_index.lookup_before(ts)?.map_or(0, |e| e.rel_offset);
        let start = self.absolute(start_rel).max(lo);
        let Some((pos, _)) = self.find_batch(start, committed)? else {
            return Ok(None);
        };
        let mut found = None;
        self.walk(pos, committed, |p, h| {
            if h.last_offset() >= hi {
                return false;
            }
            if h.last_offset() >= lo && h.max_timestamp >= ts {
                found = Some((p, *h));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// The (first) batch with the largest maxTimestamp among batches whose last offset is in
    /// [lo, hi).
    pub(crate) fn max_timestamp_in_range(&self, lo: i64, hi: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let committed = self.size();
        let Some(max) = self.max_timestamp() else {
            return Ok(None);
        };
        let visible = |h: &BatchHeader| h.last_offset() >= lo && h.last_offset() < hi;
        if self.next_offset() <= hi {
            if let Some((pos, h)) = self.find_batch(max.offset, committed)? {
                if visible(&h) {
                    return Ok(Some((pos, h)));
                }
            }
        }
        // Part of the segment is out of range. A time index entry's batch is the first to reach
        // its timestamp, so nothing before it can beat it: scan from the last entry in range.
        let hi_rel = self.relative(hi);
        let mut start = None;
        if let Some(e) = self.time_index.search(|e| e.rel_offset < hi_rel)? {
            let mut candidate = self.find_batch(self.absolute(e.rel_offset), committed)?;
            if matches!(candidate, Some((_, h)) if h.last_offset() >= hi) {
                // That batch straddles `hi`; the previous entry's batch lies wholly below it.
                candidate = match self.time_index.search(|x| x.rel_offset < e.rel_offset)? {
                    Some(prev) => self.find_batch(self.absolute(prev.rel_offset), committed)?,
                    None => None,
                };
            }
            if let Some((pos, h)) = candidate {
                if h.last_offset() >= lo {
                    start = Some(pos);
                }
            }
        }
        let start = match start {
            Some(pos) => pos,
            None => match self.find_batch(lo.max(self.base_offset), committed)? {
                Some((pos, _)) => pos,
                None => return Ok(None),
            },
        };
        let mut best: Option<(u64, BatchHeader)> = None;
        self.walk(start, committed, |p, h| {
            if h.last_offset() >= hi {
                return false;
            }
            if h.last_offset() >= lo && best.is_none_or(|(_, b)| h.max_timestamp > b.max_timestamp) {
                best = Some((p, *h));
            }
            true
        })?;
        Ok(best)
    }
}

/// Reads batch headers through a small window over the committed part of the file.
struct HeaderCursor<'a> {
    seg: &'a Segment,
    /// Taken once per read so the cache cannot close it in the middle.
    file: Arc<File>,
    limit: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl HeaderCursor<'_> {
    /// Visits batches from `pos` (a batch start) until `visit` returns false or the limit.
    fn walk(&mut self, mut pos: u64, mut visit: impl FnMut(u64, &BatchHeader) -> bool) -> Result<(), LogError> {
        while let Some(h) = self.header_at(pos)? {
            if !visit(pos, &h) {
                break;
            }
            pos += h.total_size() as u64;
        }
        Ok(())
    }

    /// The bytes `[pos, pos + len)` if the buffer already holds them.
    fn take_range(&mut self, pos: u64, len: usize) -> Option<Bytes> {
        let start = pos.checked_sub(self.buf_start)? as usize;
        if start + len > self.buf.len() {
            return None;
        }
        Some(Bytes::from(std::mem::take(&mut self.buf)).slice(start..start + len))
    }

    fn header_at(&mut self, pos: u64) -> Result<Option<BatchHeader>, LogError> {
        if pos >= self.limit {
            return Ok(None);
        }
        if self.limit - pos < HEADER_SIZE as u64 {
            return Err(self.seg.corrupt(pos, "partial batch header"));
        }
        let header_end = pos + HEADER_SIZE as u64;
        if pos < self.buf_start || header_end > self.buf_start + self.buf.len() as u64 {
            let n = CURSOR_CHUNK.min(self.limit - pos) as usize;
            self.buf.resize(n, 0);
            crate::page_cache::read_exact_at(&self.file, &mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let off = (pos - self.buf_start) as usize;
        let h = BatchHeader::parse(&self.buf[off..off + HEADER_SIZE])?;
        if h.batch_length < MIN_BATCH_LENGTH || h.last_offset_delta < 0 || pos + h.total_size() as u64 > self.limit {
            return Err(self.seg.corrupt(pos, "invalid batch header"));
        }
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some((42, "log")));
        assert_eq!(parse_file_name("00000000000000000042.log.deleted"), Some((42, "log.deleted")));
        assert_eq!(parse_file_name("0000000000000000042.log"), None);
        assert_eq!(parse_file_name("partition.metadata"), None);
        assert_eq!(parse_file_name("recovery-point"), None);
    }
}
