//! Opening a partition directory: clean-up of leftovers from interrupted operations, loading the
//! segments (trusting them after a clean shutdown or below the recovery point, rescanning the
//! rest batch by batch), truncation of torn or corrupt tails, and index rebuilds.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::{self, BatchHeader, HEADER_SIZE, MAGIC_V2, MIN_BATCH_LENGTH};
use crate::checkpoint;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::file_cache::{FileCache, LazyFile};
use crate::log::RecoveryReport;
use crate::offset_index::{self, OffsetEntry, OffsetIndex};
use crate::segment::{self, Parts, Segment, TimestampOffset, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};
use crate::time_index::{self, TimeIndex};
use crate::txn_index::TXN_INDEX_EXT;

/// Read-ahead for recovery scans; batches larger than this are streamed through the CRC.
const SCAN_BUFFER: usize = 1 << 20;

pub(crate) struct Loaded {
    pub segments: Vec<Arc<Segment>>,
    pub log_start_offset: i64,
    pub recovery_point: i64,
    pub report: RecoveryReport,
}

#[derive(Clone, Copy)]
enum Trust {
    /// After a clean shutdown: every segment, with the active one's tail re-verified.
    Clean,
    /// After a crash: segments that end at or before this recovery point.
    Below(i64),
}

pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn load(dir: &Path, config: &LogConfig, cache: &Arc<FileCache>) -> Result<Loaded, LogError> {
    let existed = dir.is_dir();
    fs::create_dir_all(dir)?;
    if !existed {
        checkpoint::sync_parent(dir)?;
    }
    let interval = u64::from(config.index_interval_bytes);
    let marker = checkpoint::read_offset(dir, checkpoint::CLEAN_SHUTDOWN)?;

    let mut report = RecoveryReport::default();
    let mut clean = None;
    if let Some(marker_end) = marker {
        let mut attempt = RecoveryReport::default();
        let segments = load_segments(dir, &list_segments(dir)?, interval, Trust::Clean, cache, &mut attempt)?;
        let end = segments.last().map(|s| s.next_offset());
        if attempt.truncated_bytes == 0 && end.is_none_or(|e| e == marker_end) {
            attempt.clean_shutdown = true;
            report = attempt;
            clean = Some(segments);
        } else {
            tracing::warn!(dir = %dir.display(), marker_end, found_end = ?end, "clean-shutdown marker disagrees with the segments; running crash recovery");
        }
    }
    let mut segments = match clean {
        Some(segments) => segments,
        None => {
            let recovery_point = checkpoint::read_offset(dir, checkpoint::RECOVERY_POINT)?.unwrap_or(0);
            load_segments(dir, &list_segments(dir)?, interval, Trust::Below(recovery_point), cache, &mut report)?
        }
    };
    // The marker must not outlive this open, or a later crash would pass for a clean shutdown.
    if marker.is_some() {
        checkpoint::remove(dir, checkpoint::CLEAN_SHUTDOWN)?;
    }

    let checkpointed_start = checkpoint::read_offset(dir, checkpoint::LOG_START_OFFSET)?;
    if let (Some(start), Some(last)) = (checkpointed_start, segments.last()) {
        if start > last.next_offset() {
            // DeleteRecords moved the start past data a crash then lost: everything left is below
            // the start, so begin afresh there (as Kafka does).
            tracing::warn!(dir = %dir.display(), log_start_offset = start, log_end_offset = last.next_offset(), "log start offset is beyond the recovered log end; deleting all segments");
            for seg in segments.drain(..) {
                report.truncated_bytes += seg.size();
                seg.delete_files();
            }
        }
    }
    if segments.is_empty() {
        let base = checkpointed_start.unwrap_or(0).max(0);
        segments.push(Arc::new(Segment::create(dir, base, cache)?));
        checkpoint::sync_dir(dir)?;
    }

    let (active, closed) = segments.split_last().expect("at least one segment");
    for seg in closed {
        // Drops in-memory entries of rebuilt segments; their files are already complete.
        seg.seal()?;
        seg.release();
    }
    active.activate()?;
    if active.size() > 0 {
        let now = wall_clock_ms();
        let first_ts = first_batch_timestamp(active)?;
        // Kafka rolls by the first batch's timestamp after a restart; never let it lie in the future.
        active.set_rolling_ts(if first_ts >= 0 { first_ts.min(now) } else { now });
    }

    let log_end = active.next_offset();
    let first_base = segments[0].base_offset();
    let log_start_offset = checkpointed_start.unwrap_or(first_base).max(first_base).min(log_end);
    // Everything on disk is now durable (recovered segments were synced), so only the active
    // segment needs rescanning after a future crash.
    let recovery_point = active.base_offset();
    if checkpoint::read_offset(dir, checkpoint::RECOVERY_POINT)? != Some(recovery_point) {
        checkpoint::write_offset(dir, checkpoint::RECOVERY_POINT, recovery_point)?;
    }
    report.log_end_offset = log_end;
    Ok(Loaded { segments, log_start_offset, recovery_point, report })
}

fn first_batch_timestamp(seg: &Segment) -> io::Result<i64> {
    let mut header = [0u8; HEADER_SIZE];
    seg.log_file()?.read_exact_at(&mut header, 0)?;
    Ok(BatchHeader::parse(&header).map_or(-1, |h| h.max_timestamp))
}

/// Completes log-cleaner swaps that a crash interrupted (see `cleaner::swap`). A `<base>.log.swap` file is the
/// cleaner's commit point: it replaces every segment whose base offset lies in [base, end of the swap's data), so
/// those are removed and the swap files take their final names. Index swaps are optional: a missing one is rebuilt.
fn complete_swaps(dir: &Path) -> io::Result<()> {
    let mut swaps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some((base, ext)) = name.to_str().and_then(segment::parse_file_name) {
            if ext == format!("{LOG_EXT}{}", segment::SWAP_SUFFIX) {
                swaps.push(base);
            }
        }
    }
    if swaps.is_empty() {
        return Ok(());
    }
    swaps.sort_unstable();
    for base in swaps {
        let swap_path = |ext: &str| dir.join(format!("{}{}", segment::file_name(base, ext), segment::SWAP_SUFFIX));
        let log = File::open(swap_path(LOG_EXT))?;
        let size = log.metadata()?.len();
        let end = scan_batches(&log, 0, size, base, base, |_, _| {})?.next_offset;
        tracing::warn!(dir = %dir.display(), segment = base, end, "completing an interrupted log cleaner swap");
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((b, ext)) = segment::parse_file_name(name) {
                // The cleaned segment keeps the first one's transaction index name; the others' go with them.
                let replaced_txn_index = ext == TXN_INDEX_EXT && b > base;
                if b >= base
                    && b < end.max(base + 1)
                    && ([LOG_EXT, INDEX_EXT, TIME_INDEX_EXT].contains(&ext) || replaced_txn_index)
                {
                    fs::remove_file(dir.join(name))?;
                }
            }
        }
        for ext in [INDEX_EXT, TIME_INDEX_EXT, LOG_EXT] {
            let from = swap_path(ext);
            if from.exists() {
                fs::rename(&from, dir.join(segment::file_name(base, ext)))?;
            }
        }
    }
    checkpoint::sync_dir(dir)
}

/// Removes leftovers of interrupted operations and returns the base offsets of the segments.
fn list_segments(dir: &Path) -> io::Result<Vec<i64>> {
    complete_swaps(dir)?;
    let mut logs = BTreeSet::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if checkpoint::is_leftover_temp(name) {
            remove_leftover(dir, name);
            continue;
        }
        let Some((base, ext)) = segment::parse_file_name(name) else {
            continue;
        };
        match ext {
            LOG_EXT => {
                logs.insert(base);
            }
            INDEX_EXT | TIME_INDEX_EXT | TXN_INDEX_EXT => indexes.push((base, name.to_owned())),
            _ if [".deleted", ".swap", ".cleaned", ".tmp"].iter().any(|s| ext.ends_with(s)) => {
                remove_leftover(dir, name)
            }
            _ => {}
        }
    }
    // Indexes whose log is gone belong to a deletion that was interrupted.
    for (base, name) in indexes {
        if !logs.contains(&base) {
            remove_leftover(dir, &name);
        }
    }
    Ok(logs.into_iter().collect())
}

fn remove_leftover(dir: &Path, name: &str) {
    tracing::info!(dir = %dir.display(), file = name, "removing leftover file");
    if let Err(e) = fs::remove_file(dir.join(name)) {
        tracing::warn!(dir = %dir.display(), file = name, error = %e, "failed to remove leftover file");
    }
}

fn load_segments(
    dir: &Path,
    bases: &[i64],
    interval: u64,
    trust: Trust,
    cache: &Arc<FileCache>,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<Segment>>, LogError> {
    let mut out: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let trusted = match trust {
            Trust::Clean => true,
            Trust::Below(recovery_point) => next_base.is_some_and(|nb| nb <= recovery_point),
        };
        let opened = if trusted { open_trusted(dir, base, next_base, cache)? } else { None };
        let seg = match opened {
            Some(seg) => seg,
            None => {
                report.recovered_segments += 1;
                let (seg, outcome) = recover_segment(dir, base, interval, cache)?;
                report.truncated_bytes += outcome.truncated_bytes;
                report.rebuilt_indexes += usize::from(outcome.rebuilt_indexes);
                seg
            }
        };
        let end = seg.next_offset();
        // The one before is not the last: seal it now, so its files join the cache instead of every segment's files
        // being open at once.
        if let Some(prev) = out.last() {
            prev.seal()?;
            prev.release();
        }
        out.push(Arc::new(seg));
        if let Some(next_base) = next_base {
            if end != next_base {
                // Offsets are dense: whatever follows a truncation or a gap was never durable.
                for &later in &bases[i + 1..] {
                    report.truncated_bytes += delete_segment_files(dir, later, end);
                }
                break;
            }
        }
    }
    Ok(out)
}

fn delete_segment_files(dir: &Path, base: i64, log_end: i64) -> u64 {
    let log_path = dir.join(segment::file_name(base, LOG_EXT));
    let bytes = fs::metadata(&log_path).map_or(0, |m| m.len());
    tracing::warn!(dir = %dir.display(), segment = base, bytes, log_end, "deleting segment beyond the recovered log end");
    for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT] {
        let path = dir.join(segment::file_name(base, ext));
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "failed to delete segment file");
            }
        }
    }
    bytes
}

/// Opens a segment without scanning it, after sanity-checking its indexes against the log file
/// (as Kafka does: whole entries, first entry at the start, last entry inside the file). `None`
/// means "rescan and rebuild instead". For the last segment the bytes after the last index entry
/// are verified, which also yields the log end offset.
fn open_trusted(
    dir: &Path,
    base: i64,
    next_base: Option<i64>,
    cache: &Arc<FileCache>,
) -> Result<Option<Segment>, LogError> {
    let log_path = dir.join(segment::file_name(base, LOG_EXT));
    let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
    let size = log.metadata()?.len();
    let Some(offset_index) = OffsetIndex::open_existing(&dir.join(segment::file_name(base, INDEX_EXT)), cache)? else {
        return Ok(None);
    };
    let Some(time_index) = TimeIndex::open_existing(&dir.join(segment::file_name(base, TIME_INDEX_EXT)), cache)? else {
        return Ok(None);
    };
    let (Some(last), Some(last_time)) = (offset_index.last(), time_index.last()) else {
        // A non-empty segment always has index entries; an empty one is only valid at the end.
        if size == 0 && offset_index.len() == 0 && time_index.len() == 0 && next_base.is_none() {
            let log = LazyFile::pinned(log_path, log, cache);
            let parts = Parts { log, size, next_offset: base, offset_index, time_index, max: None };
            return Ok(Some(Segment::from_parts(dir, base, parts)?));
        }
        return Ok(None);
    };
    // The first entry indexes the first batch; after compaction that batch may start above the base offset.
    if size > i32::MAX as u64
        || offset_index.first()?.map(|e: OffsetEntry| e.position) != Some(0)
        || u64::from(last.position) >= size
    {
        return Ok(None);
    }
    let last_offset = base + i64::from(last.rel_offset);
    let mut max = TimestampOffset { timestamp: last_time.timestamp, offset: base + i64::from(last_time.rel_offset) };
    let next_offset = match next_base {
        Some(next_base) => {
            if last_offset >= next_base || max.offset >= next_base {
                return Ok(None);
            }
            next_base
        }
        None => {
            // It becomes the active segment and its indexes are loaded whole anyway: check them all.
            if !offset_index::is_ordered(&offset_index.entries()?) || !time_index::is_ordered(&time_index.entries()?) {
                return Ok(None);
            }
            let tail = scan_batches(&log, u64::from(last.position), size, last_offset, base, |_, h| {
                if h.max_timestamp > max.timestamp {
                    max = TimestampOffset { timestamp: h.max_timestamp, offset: h.base_offset };
                }
            })?;
            if tail.error.is_some() || max.offset >= tail.next_offset {
                return Ok(None);
            }
            tail.next_offset
        }
    };
    let log = LazyFile::pinned(log_path, log, cache);
    let parts = Parts { log, size, next_offset, offset_index, time_index, max: Some(max) };
    Ok(Some(Segment::from_parts(dir, base, parts)?))
}

#[derive(Default)]
struct Outcome {
    truncated_bytes: u64,
    rebuilt_indexes: bool,
}

/// Scans a whole segment, truncating it at the first torn or invalid batch, and rebuilds its
/// indexes from what remains.
fn recover_segment(
    dir: &Path,
    base: i64,
    interval: u64,
    cache: &Arc<FileCache>,
) -> Result<(Segment, Outcome), LogError> {
    let log_path = dir.join(segment::file_name(base, LOG_EXT));
    let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
    let file_size = log.metadata()?.len();
    let log = LazyFile::pinned(log_path, log, cache);
    let offset_index = OffsetIndex::open_for_rebuild(&dir.join(segment::file_name(base, INDEX_EXT)), cache)?;
    let time_index = TimeIndex::open_for_rebuild(&dir.join(segment::file_name(base, TIME_INDEX_EXT)), cache)?;
    let parts = Parts { log, size: 0, next_offset: base, offset_index, time_index, max: None };
    let seg = Segment::from_parts(dir, base, parts)?;
    let log = seg.log_file()?;
    let scan = scan_batches(&log, 0, file_size, base, base, |pos, h| seg.track_batch(pos, h, interval))?;
    let mut outcome = Outcome::default();
    if let Some(reason) = &scan.error {
        let bytes = file_size - scan.valid_end;
        tracing::warn!(dir = %dir.display(), segment = base, position = scan.valid_end, bytes, reason = %reason, "truncating log segment at the first invalid batch");
        log.set_len(scan.valid_end)?;
        outcome.truncated_bytes = bytes;
    }
    // What survived recovery counts as flushed, so make it so.
    log.sync_data()?;
    seg.set_recovered_end(scan.valid_end, scan.next_offset);
    seg.add_final_time_entry();
    let offsets_rewritten = seg.offset_index().persist_rebuilt()?;
    let times_rewritten = seg.time_index().persist_rebuilt()?;
    outcome.rebuilt_indexes = offsets_rewritten || times_rewritten;
    if outcome.rebuilt_indexes {
        tracing::info!(dir = %dir.display(), segment = base, "rebuilt segment indexes");
    }
    Ok((seg, outcome))
}

pub(crate) struct ScanEnd {
    /// Position after the last valid batch.
    pub valid_end: u64,
    /// Offset after the last valid batch.
    pub next_offset: i64,
    /// Why scanning stopped before `end`, if it did.
    pub error: Option<String>,
}

/// Positional reads over `[pos, end)` of a file, so scans never depend on a shared file cursor.
struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

/// Validates batches in `[start, end)` (framing, magic, CRC, offsets increasing from `expected`:
/// gaps are legal, the log cleaner leaves them), calling `on_batch` for each valid one, and stops at
/// the first bad one.
pub(crate) fn scan_batches(
    file: &File,
    start: u64,
    end: u64,
    expected: i64,
    segment_base: i64,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanEnd> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, PositionedReader { file, pos: start, end });
    let (mut pos, mut next) = (start, expected);
    let stop =
        |pos: u64, next: i64, reason: String| Ok(ScanEnd { valid_end: pos, next_offset: next, error: Some(reason) });
    while pos < end {
        let remaining = end - pos;
        if remaining < HEADER_SIZE as u64 {
            return stop(pos, next, format!("{remaining} trailing bytes are too short for a batch"));
        }
        let mut header = [0u8; HEADER_SIZE];
        reader.read_exact(&mut header)?;
        let h = BatchHeader::parse(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if let Some(reason) = header_problem(&h, remaining, next, segment_base) {
            return stop(pos, next, reason);
        }
        // Stream the body through the CRC rather than buffering batches of arbitrary size.
        let mut crc = batch::crc_append(0, batch::header_crc_range(&header));
        let mut left = h.total_size() - HEADER_SIZE;
        while left > 0 {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                return stop(pos, next, "file shrank during the scan".to_owned());
            }
            let n = chunk.len().min(left);
            crc = batch::crc_append(crc, &chunk[..n]);
            reader.consume(n);
            left -= n;
        }
        if crc != h.crc {
            return stop(pos, next, format!("CRC mismatch in the batch at offset {}", h.base_offset));
        }
        on_batch(pos, &h);
        pos += h.total_size() as u64;
        next = h.last_offset() + 1;
    }
    Ok(ScanEnd { valid_end: pos, next_offset: next, error: None })
}

fn header_problem(h: &BatchHeader, remaining: u64, expected: i64, segment_base: i64) -> Option<String> {
    if h.batch_length < MIN_BATCH_LENGTH {
        return Some(format!("invalid batch length {}", h.batch_length));
    }
    if h.total_size() as u64 > remaining {
        return Some(format!("torn batch: {} bytes but only {remaining} remain", h.total_size()));
    }
    if h.magic != MAGIC_V2 {
        return Some(format!("invalid magic {}", h.magic));
    }
    if h.last_offset_delta < 0 {
        return Some(format!("negative lastOffsetDelta {}", h.last_offset_delta));
    }
    if h.base_offset < expected {
        return Some(format!("batch base offset {} is below the expected {expected}", h.base_offset));
    }
    if h.last_offset() - segment_base > i64::from(i32::MAX) {
        return Some(format!("offset {} is too far from the segment base {segment_base}", h.last_offset()));
    }
    None
}
