//! The log cleaner (compaction for `cleanup.policy=compact`), following Kafka's LogCleaner:
//!
//! 1. Eligibility: the dirty part of the log runs from the cleaner checkpoint (or the log start) to the first
//!    uncleanable offset: the active segment, the first segment younger than `min.compaction.lag.ms`, or the first
//!    unstable transaction. A log is cleaned when dirty bytes / (clean + dirty bytes) reach
//!    `min.cleanable.dirty.ratio`, when dirty data is older than `max.compaction.lag.ms`, or when a retained
//!    tombstone's delete horizon has passed.
//! 2. A pass maps every key of the dirty part to its latest offset (bounded by `log.cleaner.dedupe.buffer.size`;
//!    the pass then ends at the last whole segment that fit).
//! 3. Every segment below the end of the map is rewritten, in groups of consecutive segments that fit in one
//!    segment, keeping a record only if it is the latest for its key (records without a key are dropped, as Kafka
//!    does), and dropping tombstones once `delete.retention.ms` has passed since the pass that first cleaned them.
//!    Retained records are copied byte for byte, so offsets, timestamps and headers are preserved; a batch that
//!    lost records is rebuilt around the survivors with the same base offset, last offset delta and base timestamp,
//!    recompressed with its own codec. The last batch of a group is kept (empty if need be) so the group still ends
//!    where it did, which keeps segment boundaries dense for recovery.
//! 4. Each group is written to `.cleaned` files, fsynced, and swapped in (see `Log::replace_segments`): crash-safe
//!    through the `.swap` commit point, which recovery completes.
//!
//! The active segment is never touched. Cleaner I/O goes through a shared [`Throttler`]. Transactional data is
//! handled through [`TransactionIndex`]: the pass stops at the first unstable offset, aborted batches are dropped,
//! and a COMMIT/ABORT marker goes as Kafka's cleaner decides: once a pass finds no batch of its transaction left,
//! the marker gets a delete horizon (`delete.retention.ms` from then, stamped in the batch as KIP-534 does), and a
//! pass after the horizon removes it.

mod offset_map;
pub(crate) mod state;
mod throttle;

use std::sync::Arc;
use std::time::Instant;

pub use throttle::Throttler;

use crate::batch::{self, BatchHeader, HEADER_SIZE};
use crate::codec;
use crate::config::{LogConfig, TimestampType};
use crate::error::LogError;
use crate::log::Log;
use crate::offset_index;
use crate::records::{self, RecordView};
use crate::segment::{Segment, CLEANED_SUFFIX, LOG_EXT};
use crate::time_index;
use offset_map::OffsetMap;
use state::CleanerState;

/// Broker-wide cleaner settings for one pass (Kafka's `log.cleaner.*`), already divided among cleaner threads.
#[derive(Clone, Debug)]
pub struct CleanerConfig {
    /// Memory for the key → offset map (`log.cleaner.dedupe.buffer.size` / threads).
    pub dedupe_buffer_bytes: usize,
    /// Read and write buffer size (`log.cleaner.io.buffer.size` / threads / 2).
    pub io_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { dedupe_buffer_bytes: 128 << 20, io_buffer_bytes: 256 << 10 }
    }
}

/// Transaction state the cleaner needs (Kafka's ProducerStateManager / transaction index). Until transactional
/// produce exists, [`NoTransactions`] says there is nothing unstable and nothing aborted.
pub trait TransactionIndex: Sync {
    /// The first offset of a transaction that is not yet committed or aborted: the cleaner stops before it.
    fn first_unstable_offset(&self) -> Option<i64>;
    /// Whether the transactional batch of `producer_id` starting at `base_offset` belongs to an aborted transaction
    /// (its records are then removed like superseded ones).
    fn is_aborted(&self, producer_id: i64, base_offset: i64) -> bool;
    /// Whether the batch of `producer_id` ending at `last_offset` is that producer's last data batch: it stays,
    /// emptied if none of its records do (Kafka's RETAIN_EMPTY), so the producer's last sequence survives cleaning
    /// and a retried batch is still answered as a duplicate after the producer state is rebuilt from the log.
    fn is_last_batch_of_producer(&self, _producer_id: i64, _last_offset: i64) -> bool {
        false
    }
}

/// No transactions: nothing unstable, nothing aborted.
pub struct NoTransactions;

impl TransactionIndex for NoTransactions {
    fn first_unstable_offset(&self) -> Option<i64> {
        None
    }

    fn is_aborted(&self, _producer_id: i64, _base_offset: i64) -> bool {
        false
    }
}

/// How dirty a compacted log is, for choosing which log to clean next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cleanability {
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    pub dirty_ratio: f64,
    /// Cleaning is due regardless of the ratio (max.compaction.lag.ms or an expired tombstone horizon).
    pub forced: bool,
    /// A pass would do something now.
    pub needs_cleaning: bool,
}

/// What a pass did.
#[derive(Clone, Debug, Default)]
pub struct CleanStats {
    pub first_dirty: i64,
    /// The new first dirty offset.
    pub end_offset: i64,
    pub segments_cleaned: usize,
    pub groups: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub tombstones_removed: u64,
    pub keys: usize,
    pub elapsed_ms: u64,
}

/// The plan of a pass: the segments and bounds it works with.
struct Plan {
    segments: Vec<Arc<Segment>>,
    first_dirty: i64,
    first_uncleanable: i64,
    state: CleanerState,
}

fn first_batch_timestamp(seg: &Segment) -> Result<Option<i64>, LogError> {
    let mut first = None;
    seg.walk_all(|_, h| {
        first = Some(h.max_timestamp);
        false
    })?;
    Ok(first)
}

impl Log {
    fn cleaner_plan(&self, now_ms: i64, config: &LogConfig, txns: &dyn TransactionIndex) -> Result<Plan, LogError> {
        let state = self.cleaner_state()?;
        let segments: Vec<Arc<Segment>> = self.snapshot().iter().cloned().collect();
        let log_start = self.log_start_offset();
        let first_dirty = state.first_dirty.max(log_start);
        let active_base = segments.last().map_or(0, |s| s.base_offset());
        let mut first_uncleanable = active_base;
        if let Some(unstable) = txns.first_unstable_offset() {
            first_uncleanable = first_uncleanable.min(unstable);
        }
        if config.min_compaction_lag_ms > 0 {
            let horizon = now_ms.saturating_sub(config.min_compaction_lag_ms);
            if let Some(young) = segments
                .iter()
                .filter(|s| s.next_offset() > first_dirty && s.base_offset() < active_base)
                .find(|s| s.largest_timestamp() > horizon)
            {
                first_uncleanable = first_uncleanable.min(young.base_offset());
            }
        }
        // Passes end on segment boundaries.
        let first_uncleanable =
            segments.iter().rev().map(|s| s.base_offset()).find(|&b| b <= first_uncleanable).unwrap_or(0);
        Ok(Plan { segments, first_dirty, first_uncleanable, state })
    }

    fn cleaner_state(&self) -> Result<CleanerState, LogError> {
        let mut cached = self.cleaner_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.is_none() {
            *cached = Some(CleanerState::load(self.dir())?);
        }
        Ok(cached.clone().unwrap_or_default())
    }

    /// How dirty this log is; `None` unless its cleanup.policy includes `compact`.
    pub fn cleanability(&self, now_ms: i64, txns: &dyn TransactionIndex) -> Result<Option<Cleanability>, LogError> {
        let config = self.config();
        if !config.cleanup_policy.compact {
            return Ok(None);
        }
        let plan = self.cleaner_plan(now_ms, &config, txns)?;
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut first_dirty_segment = None;
        for s in &plan.segments {
            if s.base_offset() >= plan.first_uncleanable {
                break;
            }
            if s.next_offset() <= plan.first_dirty {
                clean_bytes += s.size();
            } else {
                dirty_bytes += s.size();
                first_dirty_segment.get_or_insert_with(|| s.clone());
            }
        }
        let total = clean_bytes + dirty_bytes;
        let dirty_ratio = if total == 0 { 0.0 } else { dirty_bytes as f64 / total as f64 };
        let lag_exceeded = match (&first_dirty_segment, config.max_compaction_lag_ms) {
            (Some(seg), lag) if lag < i64::MAX => {
                first_batch_timestamp(seg)?.is_some_and(|ts| ts >= 0 && now_ms.saturating_sub(ts) > lag)
            }
            _ => false,
        };
        let tombstones_due = clean_bytes > 0 && plan.state.tombstones_expired(now_ms, config.delete_retention_ms);
        let forced = (dirty_bytes > 0 && lag_exceeded) || tombstones_due;
        let needs_cleaning = forced || (dirty_bytes > 0 && dirty_ratio >= config.min_cleanable_dirty_ratio);
        Ok(Some(Cleanability { clean_bytes, dirty_bytes, dirty_ratio, forced, needs_cleaning }))
    }

    /// Runs one cleaning pass if the log needs one (see the module docs). Blocking; appends and reads proceed
    /// concurrently, the append lock is taken only to swap each cleaned group in. Returns `None` if there was
    /// nothing to do.
    pub fn clean(
        &self,
        now_ms: i64,
        cleaner: &CleanerConfig,
        throttler: &Throttler,
        txns: &dyn TransactionIndex,
    ) -> Result<Option<CleanStats>, LogError> {
        match self.clean_pass(now_ms, cleaner, throttler, txns) {
            // Retention removed a segment of the pass meanwhile (and its files were closed): the next pass starts over.
            Err(LogError::Io(e)) if crate::file_cache::is_segment_gone(&e) => {
                tracing::debug!(dir = %self.dir().display(), error = %e, "log changed during cleaning; pass abandoned");
                Ok(Some(CleanStats::default()))
            }
            other => other,
        }
    }

    fn clean_pass(
        &self,
        now_ms: i64,
        cleaner: &CleanerConfig,
        throttler: &Throttler,
        txns: &dyn TransactionIndex,
    ) -> Result<Option<CleanStats>, LogError> {
        let started = Instant::now();
        let config = self.config();
        match self.cleanability(now_ms, txns)? {
            Some(c) if c.needs_cleaning => {}
            _ => return Ok(None),
        }
        // Every closed segment becomes durable, so only the active segment is ever rescanned after a crash and the
        // cleaned segments (all below the recovery point) are trusted as written.
        self.flush()?;
        let plan = self.cleaner_plan(now_ms, &config, txns)?;
        let mut stats = CleanStats { first_dirty: plan.first_dirty, ..Default::default() };
        let (map, end) = build_offset_map(&plan, config.max_message_bytes, cleaner, throttler, txns, &mut stats)?;
        stats.keys = map.len();
        stats.end_offset = end;
        let to_clean: Vec<Arc<Segment>> =
            plan.segments.iter().filter(|s| s.base_offset() < end.max(plan.first_dirty)).cloned().collect();
        let mut tombstones = Vec::new();
        let filter = Filter {
            map: &map,
            state: &plan.state,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            max_message_bytes: config.max_message_bytes,
            txns,
            txn_batches_seen: Default::default(),
        };
        for group in group_segments(&to_clean, &config) {
            let Some(cleaned) =
                clean_group(self, &group, &filter, &config, cleaner, throttler, &mut stats, &mut tombstones)?
            else {
                return Ok(Some(stats));
            };
            if !self.replace_segments(&group, cleaned)? {
                // The log changed under us (retention, deletion, close): stop; the next pass starts over.
                tracing::debug!(dir = %self.dir().display(), "log changed during cleaning; pass abandoned");
                return Ok(Some(stats));
            }
            stats.segments_cleaned += group.len();
            stats.groups += 1;
        }
        let mut state = plan.state.clone();
        state.record_pass(end, now_ms, self.log_start_offset(), &tombstones);
        state.save(self.dir())?;
        *self.cleaner_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            dir = %self.dir().display(), first_dirty = stats.first_dirty, end_offset = stats.end_offset,
            segments = stats.segments_cleaned, read_bytes = stats.bytes_read, written_bytes = stats.bytes_written,
            records_kept = stats.records_kept, records_read = stats.records_read, elapsed_ms = stats.elapsed_ms,
            "cleaned log"
        );
        Ok(Some(stats))
    }
}

/// Reads whole batches of a segment in chunks of about `chunk` bytes, calling `visit` with each batch's bytes and
/// header; throttled on the bytes read.
fn for_each_batch(
    seg: &Segment,
    chunk: usize,
    throttler: &Throttler,
    bytes_read: &mut u64,
    mut visit: impl FnMut(&[u8], &BatchHeader, bool) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut headers = Vec::new();
    seg.walk_all(|pos, h| {
        headers.push((pos, *h));
        true
    })?;
    let count = headers.len();
    let mut i = 0;
    while i < count {
        let start = headers[i].0;
        let mut j = i + 1;
        let mut len = headers[i].1.total_size();
        while j < count && len + headers[j].1.total_size() <= chunk {
            len += headers[j].1.total_size();
            j += 1;
        }
        let buf = seg.read_at(start, len)?;
        throttler.throttle(len as u64);
        *bytes_read += len as u64;
        for (pos, h) in &headers[i..j] {
            let off = (pos - start) as usize;
            visit(&buf[off..off + h.total_size()], h, j == count && pos == &headers[count - 1].0)
                .map_err(|e| at_batch(seg, *pos, h, e))?;
        }
        i = j;
    }
    Ok(())
}

/// Names the file and offset of a batch the cleaner cannot read: the pass fails and the log is left as it is (the
/// cleaner retries later), so the operator can find and set aside the corrupt batch.
fn at_batch(seg: &Segment, pos: u64, h: &BatchHeader, e: LogError) -> LogError {
    let place = format!("{} position {pos}, batch at offset {}", seg.path(LOG_EXT).display(), h.base_offset);
    match e {
        LogError::CorruptMessage(m) => LogError::CorruptMessage(format!("{place}: {m}")),
        LogError::InvalidRecord(m) => LogError::InvalidRecord(format!("{place}: {m}")),
        other => other,
    }
}

/// Maps the keys of the dirty segments to their latest offsets; returns the map and the offset it covers up to
/// (a segment boundary).
fn build_offset_map(
    plan: &Plan,
    max_message_bytes: u32,
    cleaner: &CleanerConfig,
    throttler: &Throttler,
    txns: &dyn TransactionIndex,
    stats: &mut CleanStats,
) -> Result<(OffsetMap, i64), LogError> {
    let mut map = OffsetMap::new(cleaner.dedupe_buffer_bytes);
    let mut end = plan.first_dirty;
    let chunk = throttler.chunk_bytes(cleaner.io_buffer_bytes);
    for seg in &plan.segments {
        if seg.base_offset() >= plan.first_uncleanable {
            break;
        }
        if seg.next_offset() <= plan.first_dirty {
            continue;
        }
        if map.is_full() {
            break;
        }
        for_each_batch(seg, chunk, throttler, &mut stats.bytes_read, |bytes, h, _| {
            if h.is_control() || h.last_offset() < plan.first_dirty {
                return Ok(());
            }
            if h.is_transactional() && txns.is_aborted(h.producer_id, h.base_offset) {
                return Ok(());
            }
            let section = records::section(bytes, h, records::stored_limit(h, max_message_bytes))?;
            for r in records::parse(&section, h.record_count)? {
                let offset = h.base_offset + i64::from(r.offset_delta);
                if let (Some(key), true) = (r.key, offset >= plan.first_dirty) {
                    map.put(key, offset);
                }
            }
            Ok(())
        })?;
        end = seg.next_offset();
    }
    // `end` is where the next segment starts: segments are dense at their boundaries.
    Ok((map, end))
}

/// Groups consecutive segments into runs that fit in one segment (size, index entries, 32-bit relative offsets),
/// as Kafka's groupSegmentsBySize does.
fn group_segments(segments: &[Arc<Segment>], config: &LogConfig) -> Vec<Vec<Arc<Segment>>> {
    let max_size = config.segment_bytes.min(i32::MAX as u64);
    let mut groups: Vec<Vec<Arc<Segment>>> = Vec::new();
    let mut current: Vec<Arc<Segment>> = Vec::new();
    let (mut size, mut offsets, mut times) = (0u64, 0usize, 0usize);
    for seg in segments {
        let fits = current.first().is_some_and(|first| {
            size + seg.size() <= max_size
                && offsets + seg.offset_index().len() < offset_index::MAX_ENTRIES
                && times + seg.time_index().len() < time_index::MAX_ENTRIES
                && seg.next_offset() - 1 - first.base_offset() <= i64::from(i32::MAX)
        });
        if !fits && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            (size, offsets, times) = (0, 0, 0);
        }
        size += seg.size();
        offsets += seg.offset_index().len();
        times += seg.time_index().len();
        current.push(seg.clone());
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The retention rule for records.
struct Filter<'a> {
    map: &'a OffsetMap,
    state: &'a CleanerState,
    now_ms: i64,
    delete_retention_ms: i64,
    /// For the decompression limit of the batches read.
    max_message_bytes: u32,
    txns: &'a dyn TransactionIndex,
    /// Producers with a transactional batch seen since their last marker in this pass (Kafka's
    /// CleanedTransactionMetadata): their next marker must stay.
    txn_batches_seen: std::cell::RefCell<std::collections::HashSet<i64>>,
}

enum Outcome {
    Keep,
    Drop,
    Rewrite(Vec<u8>),
}

impl Filter<'_> {
    /// Kafka's shouldRetainRecord: keyless records go; a record superseded by a later one for its key goes; a
    /// tombstone goes once delete.retention.ms has passed since its first cleaning.
    fn retain(&self, r: &RecordView<'_>, offset: i64, tombstones_removed: &mut u64) -> bool {
        let Some(key) = r.key else { return false };
        if self.map.get(key).is_some_and(|latest| offset < latest) {
            return false;
        }
        if r.value_is_null {
            let expired = self
                .state
                .first_cleaned_at(offset)
                .is_some_and(|t| t.saturating_add(self.delete_retention_ms) <= self.now_ms);
            if expired {
                *tombstones_removed += 1;
                return false;
            }
        }
        true
    }

    /// Decides one batch; `must_keep_last`: the batch ends the group and must survive (empty if need be).
    fn batch(
        &self,
        bytes: &[u8],
        h: &BatchHeader,
        must_keep_last: bool,
        stats: &mut CleanStats,
        tombstones: &mut Vec<i64>,
    ) -> Result<Outcome, LogError> {
        if h.is_control() {
            return self.control_batch(bytes, h, must_keep_last);
        }
        if h.is_transactional() {
            self.txn_batches_seen.borrow_mut().insert(h.producer_id);
        }
        let aborted = h.is_transactional() && self.txns.is_aborted(h.producer_id, h.base_offset);
        let section = records::section(bytes, h, records::stored_limit(h, self.max_message_bytes))?;
        let recs = records::parse(&section, h.record_count)?;
        stats.records_read += recs.len() as u64;
        let mut kept: Vec<&RecordView<'_>> = Vec::with_capacity(recs.len());
        for r in &recs {
            let offset = h.base_offset + i64::from(r.offset_delta);
            if !aborted && self.retain(r, offset, &mut stats.tombstones_removed) {
                if r.value_is_null {
                    tombstones.push(offset);
                }
                kept.push(r);
            }
        }
        stats.records_kept += kept.len() as u64;
        if kept.len() == recs.len() {
            return Ok(Outcome::Keep);
        }
        if kept.is_empty() {
            let keep_empty = must_keep_last
                || (h.producer_id >= 0 && self.txns.is_last_batch_of_producer(h.producer_id, h.last_offset()));
            return Ok(if keep_empty {
                Outcome::Rewrite(batch::rebuild(bytes, &[], 0, h.max_timestamp))
            } else {
                Outcome::Drop
            });
        }
        let mut body = Vec::with_capacity(kept.iter().map(|r| r.raw.len()).sum());
        for r in &kept {
            body.extend_from_slice(r.raw);
        }
        let section = codec::compress(h.compression(), &body)?;
        let max_timestamp = match h.timestamp_type() {
            TimestampType::LogAppendTime => h.max_timestamp,
            TimestampType::CreateTime => {
                kept.iter().map(|r| h.base_timestamp.saturating_add(r.timestamp_delta)).max().unwrap_or(h.max_timestamp)
            }
        };
        Ok(Outcome::Rewrite(batch::rebuild(bytes, &section, kept.len() as i32, max_timestamp)))
    }
}

impl Filter<'_> {
    /// A transaction marker stays while any batch of its transaction is left (this pass saw one since the
    /// producer's previous marker); then it gets a delete horizon, and goes once the horizon has passed.
    fn control_batch(&self, bytes: &[u8], h: &BatchHeader, must_keep_last: bool) -> Result<Outcome, LogError> {
        let data_left = self.txn_batches_seen.borrow_mut().remove(&h.producer_id);
        if data_left || crate::control::parse_marker(bytes, h)?.is_none() {
            return Ok(Outcome::Keep);
        }
        match crate::control::delete_horizon(h) {
            Some(horizon) if horizon <= self.now_ms && !must_keep_last => Ok(Outcome::Drop),
            Some(_) => Ok(Outcome::Keep),
            None => Ok(Outcome::Rewrite(crate::control::with_delete_horizon(
                bytes,
                self.now_ms.saturating_add(self.delete_retention_ms),
            ))),
        }
    }
}

/// Writes the cleaned version of one group to `.cleaned` files and makes them durable. `None` if the log was
/// closed meanwhile.
#[allow(clippy::too_many_arguments)]
fn clean_group(
    log: &Log,
    group: &[Arc<Segment>],
    filter: &Filter<'_>,
    config: &LogConfig,
    cleaner: &CleanerConfig,
    throttler: &Throttler,
    stats: &mut CleanStats,
    tombstones: &mut Vec<i64>,
) -> Result<Option<Arc<Segment>>, LogError> {
    let base = group[0].base_offset();
    let cleaned = Segment::create_with_suffix(log.dir(), base, CLEANED_SUFFIX, log.file_cache())?;
    let result = (|| -> Result<(), LogError> {
        let chunk = throttler.chunk_bytes(cleaner.io_buffer_bytes);
        let interval = u64::from(config.index_interval_bytes);
        let mut out: Vec<u8> = Vec::new();
        let mut out_headers: Vec<BatchHeader> = Vec::new();
        let flush_out =
            |out: &mut Vec<u8>, headers: &mut Vec<BatchHeader>, written: &mut u64| -> Result<(), LogError> {
                if out.is_empty() {
                    return Ok(());
                }
                cleaned.append(out, headers, interval, filter.now_ms)?;
                throttler.throttle(out.len() as u64);
                *written += out.len() as u64;
                out.clear();
                headers.clear();
                Ok(())
            };
        let last = group.len() - 1;
        let mut read = 0u64;
        let mut written = 0u64;
        for (i, seg) in group.iter().enumerate() {
            for_each_batch(seg, chunk, throttler, &mut read, |bytes, h, is_last_in_segment| {
                let must_keep = i == last && is_last_in_segment;
                let outcome = filter.batch(bytes, h, must_keep, stats, tombstones)?;
                let kept: std::borrow::Cow<'_, [u8]> = match outcome {
                    Outcome::Keep => bytes.into(),
                    Outcome::Drop => return Ok(()),
                    Outcome::Rewrite(b) => b.into(),
                };
                let header = BatchHeader::parse(&kept[..HEADER_SIZE])?;
                out.extend_from_slice(&kept);
                out_headers.push(header);
                if out.len() >= chunk {
                    flush_out(&mut out, &mut out_headers, &mut written)?;
                }
                Ok(())
            })?;
        }
        flush_out(&mut out, &mut out_headers, &mut written)?;
        stats.bytes_read += read;
        stats.bytes_written += written;
        cleaned.seal()?;
        cleaned.sync_all_files()?;
        Ok(())
    })();
    if let Err(e) = result {
        crate::log::remove_suffixed_files(log.dir(), base, CLEANED_SUFFIX);
        return Err(e);
    }
    Ok(Some(Arc::new(cleaned)))
}
