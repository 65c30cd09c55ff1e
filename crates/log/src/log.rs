//! The per-partition log: the segment list, appends, reads, timestamp lookups, flushes,
//! retention and lifecycle (open / close / delete).
//!
//! Concurrency: appends and every change to the segment list are serialized by `append_lock`,
//! which is held for in-memory work plus the single write of an append, and for an fsync only where
//! the fsync is the commit point of a segment-list change that must not interleave with retention:
//! the directory fsync of a cleaner swap (once per cleaned group of segments, never per append).
//! Readers take a copy-on-write snapshot of the segment list and each segment's committed size
//! (atomics published after the write completes) and do their preads without any lock. Flushes
//! are serialized by their own lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use crate::batch::{self, validate_batches, BatchHeader};
use crate::checkpoint;
use crate::cleaner::state::CleanerState;
use crate::config::{LogConfig, TimestampType};
use crate::control::{self, EndTxnMarker};
use crate::error::{closed_error, LogError};
use crate::file_cache::{self, FileCache};
use crate::producer_state::{ActiveProducer, Origin, Prepared, ProducerStateManager};
use crate::recovery;
use crate::retention::{self, SizeBudget};
use crate::segment::{self, Segment, CLEANED_SUFFIX, DELETED_SUFFIX, INDEX_EXT, LOG_EXT, SWAP_SUFFIX, TIME_INDEX_EXT};
use crate::txn_index::AbortedTxn;

/// Result of a successful append.
#[derive(Debug, Clone)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, -1 for CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub batch_count: usize,
    pub record_count: i64,
    /// The batch was a producer's retry of one already in the log: nothing was written and the offsets are the
    /// original ones.
    pub duplicate: bool,
}

/// Whole batches as stored.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    /// Base offset of the first batch, -1 if empty.
    pub first_offset: i64,
    /// Last offset of the last batch, -1 if empty.
    pub last_offset: i64,
}

impl ReadResult {
    pub fn empty() -> ReadResult {
        ReadResult { records: Bytes::new(), first_offset: -1, last_offset: -1 }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Segments scanned batch by batch.
    pub recovered_segments: usize,
    /// Bytes cut from torn or corrupt tails plus the size of segments deleted after them.
    pub truncated_bytes: u64,
    /// Segments whose index files had to be rewritten.
    pub rebuilt_indexes: usize,
    /// The previous close was clean and the scan was skipped.
    pub clean_shutdown: bool,
    pub log_end_offset: i64,
}

#[derive(Debug, Default)]
pub struct RetentionReport {
    pub deleted_segments: usize,
    pub deleted_bytes: u64,
    pub log_start_offset: i64,
}

type SegmentList = Arc<Vec<Arc<Segment>>>;

/// What `append_lock` guards: the producer state is checked and updated under the same lock as the write, so two
/// concurrent retries cannot both pass the sequence check.
#[derive(Default)]
struct Lifecycle {
    closed: bool,
    producers: ProducerStateManager,
}

pub struct Log {
    dir: PathBuf,
    /// Where inactive segments' files are held open (shared by every log of a broker).
    cache: Arc<FileCache>,
    config: RwLock<LogConfig>,
    append_lock: Mutex<Lifecycle>,
    /// Copy-on-write, so readers never wait for an append.
    segments: RwLock<SegmentList>,
    log_start: AtomicI64,
    log_end: AtomicI64,
    flushed: AtomicI64,
    /// Base offset of the segment that was active at the last flush; every earlier segment is
    /// durable with its indexes. Persisted so crash recovery can start there.
    recovery_point: AtomicI64,
    flush_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
    /// A segment file was created since the last directory fsync.
    dir_dirty: AtomicBool,
    deleted: AtomicBool,
    /// The log cleaner's checkpoint, loaded on first use (compacted logs only).
    pub(crate) cleaner_state: Mutex<Option<CleanerState>>,
    /// First offset of the oldest open transaction (`NO_UNSTABLE` if none), published after every append so fetches
    /// read it without the append lock.
    first_unstable: AtomicI64,
}

const NO_UNSTABLE: i64 = i64::MAX;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Opens or creates the partition directory and recovers it, with inactive segments' files in the process-wide
    /// [`FileCache::shared`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, RecoveryReport), LogError> {
        Log::open_with_cache(dir, config, FileCache::shared())
    }

    /// `open`, with inactive segments' files held in `cache` (the broker's `log.segment.open.files.max`).
    pub fn open_with_cache(
        dir: &Path,
        config: LogConfig,
        cache: Arc<FileCache>,
    ) -> Result<(Log, RecoveryReport), LogError> {
        let loaded = recovery::load(dir, &config, &cache)?;
        let log_end = loaded.report.log_end_offset;
        let producers = rebuild_producer_state(dir, &loaded.segments, log_end)?;
        let first_unstable = producers.first_unstable_offset().unwrap_or(NO_UNSTABLE);
        tracing::debug!(dir = %dir.display(), segments = loaded.segments.len(), log_start = loaded.log_start_offset, log_end, "opened log");
        let log = Log {
            dir: dir.to_path_buf(),
            cache,
            config: RwLock::new(config),
            append_lock: Mutex::new(Lifecycle { closed: false, producers }),
            segments: RwLock::new(Arc::new(loaded.segments)),
            log_start: AtomicI64::new(loaded.log_start_offset),
            log_end: AtomicI64::new(log_end),
            flushed: AtomicI64::new(log_end),
            recovery_point: AtomicI64::new(loaded.recovery_point),
            flush_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            dir_dirty: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            cleaner_state: Mutex::new(None),
            first_unstable: AtomicI64::new(first_unstable),
        };
        Ok((log, loaded.report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes effect from the next append / retention run.
    pub fn update_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// Sum of the segments' committed sizes.
    pub fn size_bytes(&self) -> u64 {
        self.snapshot().iter().map(|s| s.size()).sum()
    }

    /// Highest log end offset a `flush` (or recovery / clean open) has made durable.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Number of segments (for metrics and tests).
    pub fn segment_count(&self) -> usize {
        self.snapshot().len()
    }

    /// Base offsets of the segments, oldest first (for metrics and tests).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.snapshot().iter().map(|s| s.base_offset()).collect()
    }

    /// Base offset of the active segment. A read at or above it is a tail read: its offset index is in memory and
    /// its bytes are the most recently written, so the read is normally served from the page cache.
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset()
    }

    pub(crate) fn snapshot(&self) -> SegmentList {
        self.segments.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn file_cache(&self) -> &Arc<FileCache> {
        &self.cache
    }

    /// Runs a read against the current segment list, again if it found a segment that left the list (retention, a
    /// cleaner swap) after the snapshot and whose files were closed since: such changes are made under the append
    /// lock, so once it has been taken the next snapshot no longer holds that segment.
    fn retry_gone<T>(&self, mut read: impl FnMut(&SegmentList) -> Result<T, LogError>) -> Result<T, LogError> {
        loop {
            let segments = self.snapshot();
            match read(&segments) {
                Err(LogError::Io(e)) if file_cache::is_segment_gone(&e) => {
                    drop(lock(&self.append_lock));
                    // Unchanged: the log was deleted, or a failed swap left a removed segment in the list.
                    if Arc::ptr_eq(&segments, &self.snapshot()) {
                        return Err(LogError::Io(e));
                    }
                }
                other => return other,
            }
        }
    }

    fn active(&self) -> Arc<Segment> {
        self.snapshot().last().cloned().expect("a log always has at least one segment")
    }

    /// Replaces the segment list; callers hold `append_lock`.
    fn publish(&self, change: impl FnOnce(&mut Vec<Arc<Segment>>)) {
        let mut guard = self.segments.write().unwrap_or_else(PoisonError::into_inner);
        let mut list = Vec::clone(&guard);
        change(&mut list);
        *guard = Arc::new(list);
    }

    /// Appends a produce request's record set for this partition (one or more RecordBatch v2).
    /// The whole set is validated first and rejected atomically; then offsets and the leader
    /// epoch are stamped in place (plus LogAppendTime if configured) and the bytes are written
    /// with one write. Does not fsync.
    pub fn append(
        &self,
        records: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
        allow_control: bool,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        if records.len() > i32::MAX as usize {
            return Err(LogError::MessageTooLarge { size: records.len(), max: config.max_message_bytes });
        }
        let headers = validate_batches(records, config.max_message_bytes)?;
        self.append_validated(records, headers, leader_epoch, now_ms, allow_control)
    }

    /// `append` for a record set the caller has already passed through [`validate_batches`] (with this log's
    /// `max.message.bytes`), so the CRC of every batch is not computed twice on the produce path. `headers` must
    /// be exactly what `validate_batches` returned for these bytes.
    pub fn append_validated(
        &self,
        records: &mut [u8],
        headers: Vec<BatchHeader>,
        leader_epoch: i32,
        now_ms: i64,
        allow_control: bool,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(records, headers, leader_epoch, now_ms, allow_control, Origin::Client)
    }

    /// `append_validated` for records a coordinator writes (Kafka's AppendOrigin.COORDINATOR): producer epochs
    /// and transactions are tracked and checked, sequences are not (the group coordinator's transactional offset
    /// commits carry the producer's id and epoch but no sequence).
    pub fn append_from_coordinator(
        &self,
        records: &mut [u8],
        headers: Vec<BatchHeader>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(records, headers, leader_epoch, now_ms, false, Origin::Coordinator)
    }

    fn append_inner(
        &self,
        records: &mut [u8],
        mut headers: Vec<BatchHeader>,
        leader_epoch: i32,
        now_ms: i64,
        allow_control: bool,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        if !allow_control {
            if let Some(h) = headers.iter().find(|h| h.is_control()) {
                return Err(LogError::InvalidRecord(format!(
                    "control batch (base offset {}) from a producer",
                    h.base_offset
                )));
            }
        }
        // Kafka's UnifiedLog.append: a record set must fit in one segment.
        if records.len() as u64 > config.effective_segment_bytes() {
            return Err(LogError::RecordListTooLarge { size: records.len(), max: config.effective_segment_bytes() });
        }
        let record_count: i64 = headers.iter().map(|h| i64::from(h.last_offset_delta) + 1).sum();

        let mut state = lock(&self.append_lock);
        if state.closed {
            return Err(closed_error());
        }
        let first_offset = self.log_end.load(Ordering::Acquire);
        if headers.is_empty() {
            return Ok(AppendInfo {
                first_offset: -1,
                last_offset: -1,
                max_timestamp: -1,
                log_append_time: -1,
                log_start_offset: self.log_start_offset(),
                batch_count: 0,
                record_count: 0,
                duplicate: false,
            });
        }
        let stamped_time = (config.message_timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let updated_producers = match state.producers.prepare(&headers, first_offset, stamped_time, origin)? {
            Prepared::Append(updated) => updated,
            Prepared::Duplicate(dup) => {
                return Ok(AppendInfo {
                    first_offset: dup.first_offset,
                    last_offset: dup.last_offset,
                    max_timestamp: dup.timestamp,
                    // Kafka answers a duplicate with the original batch's timestamp here, whatever the topic's
                    // timestamp type (UnifiedLog.append: LogAppendInfo built from the duplicate's metadata).
                    log_append_time: dup.timestamp,
                    log_start_offset: self.log_start_offset(),
                    batch_count: 0,
                    record_count: 0,
                    duplicate: true,
                });
            }
        };
        let last_offset = first_offset + record_count - 1;
        let mut active = self.active();
        if should_roll(&active, &config, records.len() as u64, last_offset, now_ms) {
            active = self.roll_locked(&state.producers)?;
        }
        let log_append_time = match config.message_timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        stamp(records, &mut headers, first_offset, leader_epoch, config.message_timestamp_type, now_ms);
        active.append(records, &headers, u64::from(config.index_interval_bytes), now_ms)?;
        // Stamping set the real base offsets; the producer entries were computed with the same ones.
        state.producers.commit(updated_producers);
        // The first unstable offset before the log end, so a reader never sees the new data as stable.
        self.publish_first_unstable(&state.producers);
        // Published after the segment's committed size, so readers that see this offset also see the bytes.
        self.log_end.store(last_offset + 1, Ordering::Release);
        drop(state);
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp: headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1),
            log_append_time,
            log_start_offset: self.log_start_offset(),
            batch_count: headers.len(),
            record_count,
            duplicate: false,
        })
    }

    fn publish_first_unstable(&self, producers: &ProducerStateManager) {
        self.first_unstable.store(producers.first_unstable_offset().unwrap_or(NO_UNSTABLE), Ordering::Release);
    }

    /// Appends a COMMIT or ABORT marker (a control batch) for `producer_id` at the log end, as the transaction
    /// coordinator's WriteTxnMarkers does: checks the producer and coordinator epochs, ends the producer's open
    /// transaction here, and records an aborted one in the segment's transaction index. Does not fsync.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let mut records = control::marker_batch(producer_id, producer_epoch, marker, now_ms);
        let mut headers = validate_batches(&records, u32::MAX)?;
        let mut state = lock(&self.append_lock);
        if state.closed {
            return Err(closed_error());
        }
        let offset = self.log_end.load(Ordering::Acquire);
        let prepared = state.producers.prepare_marker(producer_id, producer_epoch, marker, offset, now_ms)?;
        let mut active = self.active();
        if should_roll(&active, &config, records.len() as u64, offset, now_ms) {
            active = self.roll_locked(&state.producers)?;
        }
        stamp(&mut records, &mut headers, offset, leader_epoch, config.message_timestamp_type, now_ms);
        active.append(&records, &headers, u64::from(config.index_interval_bytes), now_ms)?;
        let index_result = match state.producers.commit_marker(prepared) {
            Some(aborted) => active.txn_index().append(aborted),
            None => Ok(()),
        };
        // The marker is in the segment either way: publish it, so no later append reuses its offset.
        self.publish_first_unstable(&state.producers);
        self.log_end.store(offset + 1, Ordering::Release);
        drop(state);
        if let Err(e) = index_result {
            // Reads until the next recovery would miss this aborted transaction: report a storage error.
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot append to the transaction index");
            return Err(e.into());
        }
        let log_append_time = match config.message_timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        Ok(AppendInfo {
            first_offset: offset,
            last_offset: offset,
            max_timestamp: now_ms,
            log_append_time,
            log_start_offset: self.log_start_offset(),
            batch_count: 1,
            record_count: 1,
            duplicate: false,
        })
    }

    /// The first offset of the oldest open transaction, if any (never below the log start offset).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let f = self.first_unstable.load(Ordering::Acquire);
        (f != NO_UNSTABLE).then(|| f.max(self.log_start_offset()))
    }

    /// Kafka's last stable offset: read_committed consumers read below it. `high_watermark` is the partition's.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.first_unstable_offset().map_or(high_watermark, |f| f.min(high_watermark))
    }

    /// The producers with state on this partition (what DescribeProducers lists).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        lock(&self.append_lock).producers.active_producers()
    }

    /// Open transactions on this partition as (producer id, first offset), oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        lock(&self.append_lock).producers.ongoing_transactions()
    }

    /// Aborted transactions overlapping [fetch_offset, upper_bound), from the segment holding `fetch_offset` on
    /// (Kafka's collectAbortedTransactions): what a read_committed fetch returns so the consumer skips them.
    pub fn collect_aborted_transactions(&self, fetch_offset: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        let segments = self.snapshot();
        let idx = segments.partition_point(|s| s.base_offset() <= fetch_offset).saturating_sub(1);
        let mut out = Vec::new();
        for seg in &segments[idx..] {
            if seg.txn_index().collect(fetch_offset, upper_bound, &mut out) {
                break;
            }
        }
        out
    }

    /// The upper bound of the aborted transactions a read of `read_len` bytes from `offset` returns (Kafka's
    /// LocalLog.addAbortedTransactions): the first indexed batch after the bytes read, else the end of the
    /// segment read from (the next segment's base offset, or the log end offset).
    pub fn fetch_upper_bound(&self, offset: i64, read_len: usize) -> Result<i64, LogError> {
        self.retry_gone(|segments| self.fetch_upper_bound_in(segments, offset, read_len))
    }

    fn fetch_upper_bound_in(&self, segments: &SegmentList, offset: i64, read_len: usize) -> Result<i64, LogError> {
        let idx = segments.partition_point(|s| s.base_offset() <= offset);
        if let Some(seg) = idx.checked_sub(1).and_then(|i| segments.get(i)) {
            if let Some(bound) = seg.fetch_upper_bound(offset, read_len as u64)? {
                return Ok(bound);
            }
        }
        Ok(segments.get(idx).map_or_else(|| self.log_end_offset(), |s| s.base_offset()))
    }

    /// What the log cleaner needs to know about transactions (see [`crate::TransactionIndex`]): where the first
    /// open transaction starts and which transactional batches were aborted.
    pub fn transaction_state(&self) -> LogTransactions {
        LogTransactions {
            first_unstable: self.first_unstable_offset(),
            aborted: self.snapshot().iter().flat_map(|s| s.txn_index().entries()).collect(),
            last_data_offsets: lock(&self.append_lock).producers.last_data_offsets(),
        }
    }

    /// Starts a new segment at the log end offset and snapshots the producer state there (as Kafka does at every
    /// roll, so recovery replays at most the active segment); callers hold `append_lock`.
    fn roll_locked(&self, producers: &ProducerStateManager) -> Result<Arc<Segment>, LogError> {
        let old = self.active();
        if old.size() == 0 {
            return Ok(old);
        }
        let base = self.log_end.load(Ordering::Acquire);
        producers.write_snapshot(&self.dir, base)?;
        // Create first so that a failure leaves the old segment active and untouched.
        let new = Arc::new(Segment::create(&self.dir, base, &self.cache)?);
        if let Err(e) = old.seal() {
            new.delete_files();
            return Err(e.into());
        }
        old.release();
        self.publish(|list| list.push(new.clone()));
        self.dir_dirty.store(true, Ordering::Release);
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled new segment");
        Ok(new)
    }

    /// Makes everything appended so far durable; returns the log end offset now durable.
    pub fn flush(&self) -> Result<i64, LogError> {
        let _flush = lock(&self.flush_lock);
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<i64, LogError> {
        // Everything below this offset is in the segments of the snapshot taken next.
        let log_end = self.log_end.load(Ordering::Acquire);
        let segments = self.snapshot();
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            seg.sync_if_dirty(i < last)?;
        }
        if !self.deleted.load(Ordering::Acquire) {
            if self.dir_dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = checkpoint::sync_dir(&self.dir) {
                    self.dir_dirty.store(true, Ordering::Release);
                    return Err(e.into());
                }
            }
            if let Some(active) = segments.last() {
                let recovery_point = active.base_offset();
                if recovery_point > self.recovery_point.load(Ordering::Acquire) {
                    checkpoint::write_offset(&self.dir, checkpoint::RECOVERY_POINT, recovery_point)?;
                    self.recovery_point.store(recovery_point, Ordering::Release);
                }
            }
        }
        self.flushed.fetch_max(log_end, Ordering::AcqRel);
        Ok(log_end)
    }

    /// Reads whole batches starting with the one containing `offset`, up to `max_bytes` (or one
    /// whole batch if `min_one_batch`), excluding batches whose last offset is >= `max_offset`.
    /// Reads stay within one segment, as Kafka's do.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        self.retry_gone(|segments| self.read_in(segments, offset, max_bytes, max_offset, min_one_batch))
    }

    fn read_in(
        &self,
        segments: &SegmentList,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadResult, LogError> {
        let log_end = self.log_end_offset();
        let log_start = self.log_start_offset();
        let out_of_range = || LogError::OffsetOutOfRange { requested: offset, log_start, log_end };
        if offset < log_start || offset > log_end {
            return Err(out_of_range());
        }
        if offset == log_end || offset >= max_offset {
            return Ok(ReadResult::empty());
        }
        let idx = segments.partition_point(|s| s.base_offset() <= offset);
        if idx == 0 {
            // Retention removed the segment after the bounds check.
            return Err(out_of_range());
        }
        for seg in &segments[idx - 1..] {
            if let Some(result) = seg.read(offset, max_bytes, max_offset, min_one_batch)? {
                return Ok(result);
            }
        }
        Ok(ReadResult::empty())
    }

    /// First batch whose maxTimestamp >= `ts`, among batches with offsets in [log start,
    /// `max_offset`). The broker decodes it to find the exact record.
    pub fn find_batch_by_timestamp(&self, ts: i64, max_offset: i64) -> Result<Option<ReadResult>, LogError> {
        self.retry_gone(|segments| self.find_batch_by_timestamp_in(segments, ts, max_offset))
    }

    fn find_batch_by_timestamp_in(
        &self,
        segments: &SegmentList,
        ts: i64,
        max_offset: i64,
    ) -> Result<Option<ReadResult>, LogError> {
        let log_start = self.log_start_offset();
        for seg in segments.iter() {
            if seg.base_offset() >= max_offset {
                break;
            }
            if seg.next_offset() <= log_start || seg.max_timestamp().is_none_or(|m| m.timestamp < ts) {
                continue;
            }
            if let Some((pos, header)) = seg.find_by_timestamp(ts, log_start, max_offset)? {
                return seg.read_batch(pos, &header).map(Some);
            }
        }
        Ok(None)
    }

    /// The batch holding the largest timestamp (the first such batch if tied), among batches with
    /// offsets in [log start, `max_offset`).
    pub fn max_timestamp_batch(&self, max_offset: i64) -> Result<Option<ReadResult>, LogError> {
        self.retry_gone(|segments| self.max_timestamp_batch_in(segments, max_offset))
    }

    fn max_timestamp_batch_in(&self, segments: &SegmentList, max_offset: i64) -> Result<Option<ReadResult>, LogError> {
        let log_start = self.log_start_offset();
        let mut best: Option<(&Arc<Segment>, u64, BatchHeader)> = None;
        for seg in segments.iter() {
            if seg.base_offset() >= max_offset {
                break;
            }
            let Some(seg_max) = seg.max_timestamp() else {
                continue;
            };
            let can_beat = best.is_none_or(|(_, _, b)| seg_max.timestamp > b.max_timestamp);
            if seg.next_offset() <= log_start || !can_beat {
                continue;
            }
            if let Some((pos, header)) = seg.max_timestamp_in_range(log_start, max_offset)? {
                if best.is_none_or(|(_, _, b)| header.max_timestamp > b.max_timestamp) {
                    best = Some((seg, pos, header));
                }
            }
        }
        best.map(|(seg, pos, header)| seg.read_batch(pos, &header)).transpose()
    }

    /// Deletes old segments per retention.ms and retention.bytes (Kafka's rules, see
    /// `retention`), rolling first if the active segment itself must go.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let config = self.config();
        let mut removed = Vec::new();
        {
            let state = lock(&self.append_lock);
            if state.closed {
                return Ok(RetentionReport { log_start_offset: self.log_start_offset(), ..Default::default() });
            }
            removed.extend(self.remove_below_log_start_locked(&state.producers)?);
            // retention.ms / retention.bytes apply only to `delete` logs; a compact-only log loses segments
            // only below its log start offset (DeleteRecords), as in Kafka's deleteOldSegments.
            let delete = config.cleanup_policy.delete;
            if delete && config.retention_ms >= 0 {
                let segments = self.snapshot();
                let sizes: Vec<u64> = segments.iter().map(|s| s.size()).collect();
                let n = retention::deletable_prefix(&sizes, |i| {
                    retention::expired(now_ms, config.retention_ms, segments[i].largest_timestamp())
                });
                removed.extend(self.remove_prefix_locked(n, &state.producers)?);
            }
            if delete && config.retention_bytes >= 0 {
                let sizes: Vec<u64> = self.snapshot().iter().map(|s| s.size()).collect();
                let mut budget = SizeBudget::new(sizes.iter().sum(), config.retention_bytes);
                let n = retention::deletable_prefix(&sizes, |i| budget.take(sizes[i]));
                removed.extend(self.remove_prefix_locked(n, &state.producers)?);
            }
        }
        let deleted_bytes = self.delete_segment_files(&removed);
        let report = RetentionReport {
            deleted_segments: removed.len(),
            deleted_bytes,
            log_start_offset: self.log_start_offset(),
        };
        if report.deleted_segments > 0 {
            tracing::info!(dir = %self.dir.display(), segments = report.deleted_segments, bytes = deleted_bytes, log_start = report.log_start_offset, "retention deleted segments");
        }
        Ok(report)
    }

    /// Forgets idempotent producers whose last batch is older than `expiration_ms` (`producer.id.expiration.ms`).
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        lock(&self.append_lock).producers.remove_expired(now_ms, expiration_ms)
    }

    /// Advances the log start offset (DeleteRecords) and deletes segments entirely below it.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<(), LogError> {
        let removed = {
            let state = lock(&self.append_lock);
            if state.closed {
                return Err(closed_error());
            }
            let log_start = self.log_start_offset();
            let log_end = self.log_end_offset();
            if offset > log_end || offset < 0 {
                return Err(LogError::OffsetOutOfRange { requested: offset, log_start, log_end });
            }
            if offset <= log_start {
                return Ok(());
            }
            self.log_start.store(offset, Ordering::Release);
            self.remove_below_log_start_locked(&state.producers)?
        };
        // Persisted before the files go, so a crash in between cannot move the start backwards.
        self.persist_log_start()?;
        self.delete_segment_files(&removed);
        Ok(())
    }

    fn persist_log_start(&self) -> Result<(), LogError> {
        let _guard = lock(&self.checkpoint_lock);
        if self.deleted.load(Ordering::Acquire) {
            return Ok(());
        }
        checkpoint::write_offset(&self.dir, checkpoint::LOG_START_OFFSET, self.log_start_offset())?;
        Ok(())
    }

    /// Removes (from the list) segments whose successor starts at or below the log start offset.
    fn remove_below_log_start_locked(&self, producers: &ProducerStateManager) -> Result<Vec<Arc<Segment>>, LogError> {
        let segments = self.snapshot();
        let log_start = self.log_start_offset();
        let n = segments.windows(2).take_while(|w| w[1].base_offset() <= log_start).count();
        self.remove_prefix_locked(n, producers)
    }

    /// Removes the first `n` segments from the list (rolling first if that is all of them) and
    /// advances the log start offset; the caller deletes their files after releasing the lock.
    fn remove_prefix_locked(&self, n: usize, producers: &ProducerStateManager) -> Result<Vec<Arc<Segment>>, LogError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n >= self.snapshot().len() {
            self.roll_locked(producers)?;
        }
        // Never leave the log without a segment.
        let n = n.min(self.snapshot().len() - 1);
        let mut removed = Vec::new();
        let mut new_first = 0;
        self.publish(|list| {
            removed = list.drain(..n).collect();
            new_first = list[0].base_offset();
        });
        for seg in &removed {
            seg.mark_removed();
        }
        self.log_start.fetch_max(new_first, Ordering::AcqRel);
        Ok(removed)
    }

    fn delete_segment_files(&self, removed: &[Arc<Segment>]) -> u64 {
        removed
            .iter()
            .map(|seg| {
                let size = seg.size();
                seg.delete_files();
                size
            })
            .sum()
    }

    /// Swaps a cleaned segment (written as `.cleaned` files, already durable) in for the consecutive segments `old`
    /// it replaces. Under the append lock, so retention, DeleteRecords and close cannot interleave; returns false
    /// (and removes the cleaned files) if `old` is no longer part of the log.
    ///
    /// Crash safety (Kafka's replaceSegments): renaming `.cleaned` to `.swap` is the commit point (the log file
    /// last, then a directory fsync); the replaced segments are renamed `.deleted`, the swap files take their
    /// final names, and the `.deleted` files are removed. Recovery completes a swap whose `.log.swap` exists and
    /// discards `.cleaned` files, so a crash at any point leaves either the old segments or the cleaned one.
    pub(crate) fn replace_segments(&self, old: &[Arc<Segment>], new: Arc<Segment>) -> Result<bool, LogError> {
        let base = new.base_offset();
        let state = lock(&self.append_lock);
        let list = self.snapshot();
        let start = list.iter().position(|s| Arc::ptr_eq(s, &old[0]));
        let intact = start
            .is_some_and(|i| i + old.len() < list.len() && old.iter().zip(&list[i..]).all(|(a, b)| Arc::ptr_eq(a, b)));
        let (Some(start), true, false) = (start, intact, state.closed || self.deleted.load(Ordering::Acquire)) else {
            drop(state);
            remove_suffixed_files(&self.dir, base, CLEANED_SUFFIX);
            return Ok(false);
        };
        let renamed = |ext: &str, from: &str, to: &str| {
            let name = segment::file_name(base, ext);
            std::fs::rename(self.dir.join(format!("{name}{from}")), self.dir.join(format!("{name}{to}")))
        };
        for ext in [INDEX_EXT, TIME_INDEX_EXT, LOG_EXT] {
            renamed(ext, CLEANED_SUFFIX, SWAP_SUFFIX)?;
        }
        checkpoint::sync_dir(&self.dir)?;
        // Committed: from here on recovery finishes the swap if we crash. The old segments' names are about to
        // change hands, so they must not be opened by name again.
        for seg in old {
            seg.mark_removed();
        }
        let mut doomed = Vec::new();
        for seg in old {
            for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                let from = seg.path(ext);
                let to = self.dir.join(format!("{}{DELETED_SUFFIX}", segment::file_name(seg.base_offset(), ext)));
                std::fs::rename(&from, &to)?;
                doomed.push(to);
            }
        }
        for ext in [INDEX_EXT, TIME_INDEX_EXT, LOG_EXT] {
            renamed(ext, SWAP_SUFFIX, "")?;
        }
        // The cleaned segment indexes the aborted transactions of every segment it replaces (their markers are
        // kept); written under the append lock so no marker can land in between.
        let merged: Vec<AbortedTxn> = old.iter().flat_map(|s| s.txn_index().entries()).collect();
        if let Err(e) = new.txn_index().replace(merged) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the cleaned segment's transaction index");
        }
        for seg in &old[1..] {
            let _ = std::fs::remove_file(seg.path(crate::txn_index::TXN_INDEX_EXT));
        }
        // Its files now have their final names: they may be closed and opened again by them.
        new.release();
        self.publish(|l| {
            l.splice(start..start + old.len(), [new]);
        });
        drop(state);
        checkpoint::sync_dir(&self.dir)?;
        // Readers still holding the old segments keep reading the unlinked files.
        for path in doomed {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "failed to delete replaced segment file");
            }
        }
        Ok(true)
    }

    /// Clean shutdown: flush, complete the active segment's indexes and write the clean-shutdown
    /// marker so the next open skips the scan. Later appends fail; reads keep working.
    pub fn close(&self) -> Result<(), LogError> {
        let mut state = lock(&self.append_lock);
        if state.closed {
            return Ok(());
        }
        {
            let _flush = lock(&self.flush_lock);
            self.flush_locked()?;
        }
        self.active().persist_active_indexes()?;
        // Lets the next open skip the replay.
        state.producers.write_snapshot(&self.dir, self.log_end_offset())?;
        checkpoint::write_offset(&self.dir, checkpoint::CLEAN_SHUTDOWN, self.log_end_offset())?;
        state.closed = true;
        tracing::debug!(dir = %self.dir.display(), log_end = self.log_end_offset(), "closed log");
        Ok(())
    }

    /// The directory is about to be renamed or removed by someone else (topic deletion): segments' files are never
    /// opened by name again, since the name may come to hold another log's files (a topic created again). Readers
    /// still holding open files keep reading them; the others get an I/O error.
    pub fn detach_files(&self) {
        let _state = lock(&self.append_lock);
        for seg in self.snapshot().iter() {
            seg.mark_removed();
        }
    }

    /// Removes the directory and everything in it. Readers still holding segments keep reading
    /// the unlinked files.
    pub fn delete(&self) -> Result<(), LogError> {
        let mut state = lock(&self.append_lock);
        state.closed = true;
        self.deleted.store(true, Ordering::Release);
        for seg in self.snapshot().iter() {
            seg.mark_removed();
        }
        // Wait out in-flight flushes and checkpoint writes so nothing is recreated in the directory.
        let _flush = lock(&self.flush_lock);
        let _checkpoint = lock(&self.checkpoint_lock);
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // Best effort: the directory is gone either way.
        let _ = checkpoint::sync_parent(&self.dir);
        tracing::info!(dir = %self.dir.display(), "deleted log");
        Ok(())
    }
}

/// A log's transactions as of one moment, for a cleaning pass.
pub struct LogTransactions {
    first_unstable: Option<i64>,
    aborted: Vec<AbortedTxn>,
    /// Producer id → last offset of its last data batch.
    last_data_offsets: std::collections::HashMap<i64, i64>,
}

impl crate::cleaner::TransactionIndex for LogTransactions {
    fn first_unstable_offset(&self) -> Option<i64> {
        self.first_unstable
    }

    fn is_aborted(&self, producer_id: i64, base_offset: i64) -> bool {
        self.aborted
            .iter()
            .any(|a| a.producer_id == producer_id && a.first_offset <= base_offset && base_offset < a.last_offset)
    }

    fn is_last_batch_of_producer(&self, producer_id: i64, last_offset: i64) -> bool {
        self.last_data_offsets.get(&producer_id) == Some(&last_offset)
    }
}

/// Best-effort removal of a segment's files carrying `suffix` (an abandoned cleaning).
pub(crate) fn remove_suffixed_files(dir: &Path, base: i64, suffix: &str) {
    for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
        let path = dir.join(format!("{}{suffix}", segment::file_name(base, ext)));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "failed to remove cleaner file")
            }
        }
    }
}

/// The producer state as of `log_end`: the newest snapshot plus a replay of the batch headers after it.
/// The transaction indexes are rebuilt from the same replay: entries for markers at or after the replay start are
/// dropped and re-added from the markers read back, so an index torn or lost in a crash is made whole again.
fn rebuild_producer_state(
    dir: &Path,
    segments: &[Arc<Segment>],
    log_end: i64,
) -> Result<ProducerStateManager, LogError> {
    let (mut producers, from) = ProducerStateManager::load_snapshot(dir, log_end)?;
    for seg in segments.iter() {
        seg.txn_index().truncate_from(from.min(log_end))?;
    }
    for seg in segments.iter().filter(|s| s.next_offset() > from) {
        let mut failed: Option<LogError> = None;
        seg.walk_headers_from(from.max(seg.base_offset()), |pos, h| {
            if failed.is_some() {
                return;
            }
            let marker = if h.is_control() && h.producer_id >= 0 {
                let parsed = seg
                    .read_at(pos, h.total_size())
                    .map_err(LogError::from)
                    .and_then(|bytes| control::parse_marker(&bytes, h));
                match parsed {
                    Ok(m) => m,
                    Err(e) => {
                        failed = Some(e);
                        return;
                    }
                }
            } else {
                None
            };
            if let Some(aborted) = producers.apply(h, marker) {
                if let Err(e) = seg.txn_index().append(aborted) {
                    failed = Some(e.into());
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    if producers.len() > 0 {
        tracing::debug!(dir = %dir.display(), producers = producers.len(), snapshot = from, "rebuilt producer state");
    }
    Ok(producers)
}

/// Kafka's roll conditions, checked only for a non-empty active segment (an oversized append
/// goes into an empty segment rather than rolling forever).
fn should_roll(active: &Segment, config: &LogConfig, incoming: u64, last_offset: i64, now_ms: i64) -> bool {
    let size = active.size();
    if size == 0 {
        return false;
    }
    size.saturating_add(incoming) > config.effective_segment_bytes()
        || active.rolling_ts().is_some_and(|t| now_ms.saturating_sub(t) > config.max_segment_ms())
        // Relative offsets in both indexes are 32-bit.
        || last_offset - active.base_offset() > i64::from(i32::MAX)
        || active.indexes_full()
}

/// Assigns offsets and the leader epoch in place and applies the topic's timestamp type.
fn stamp(
    records: &mut [u8],
    headers: &mut [BatchHeader],
    first_offset: i64,
    epoch: i32,
    ts_type: TimestampType,
    now_ms: i64,
) {
    let (mut pos, mut next_offset) = (0usize, first_offset);
    for h in headers.iter_mut() {
        let bytes = &mut records[pos..pos + h.total_size()];
        batch::assign_offset_and_epoch(bytes, h, next_offset, epoch);
        match ts_type {
            // Kafka sets only maxTimestamp and the attribute bit (and so the CRC).
            TimestampType::LogAppendTime => batch::set_max_timestamp(bytes, h, ts_type, now_ms),
            // Records are not decoded, so the producer's maxTimestamp stands; only a stray
            // LogAppendTime bit is cleared, as Kafka's validator would.
            TimestampType::CreateTime => {
                let max = h.max_timestamp;
                batch::set_max_timestamp(bytes, h, ts_type, max);
            }
        }
        pos += h.total_size();
        next_offset = h.last_offset() + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn log_is_send_and_sync() {
        assert_send_sync::<Log>();
    }
}
