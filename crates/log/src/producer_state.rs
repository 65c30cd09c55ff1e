//! Per-partition idempotent-producer state, as Kafka's `ProducerStateManager` / `ProducerAppendInfo` keep it:
//! for every producer id its epoch and the metadata of its last 5 batches, so that a retried batch is recognised
//! and answered with its original offsets, a sequence gap is refused, and an older epoch is fenced.
//!
//! The state is rebuilt after a restart from the newest valid `<offset>.snapshot` file (written at segment roll
//! and at clean close) plus a replay of the batch headers after it, so dedupe survives kill -9.
//!
//! Transactions: a producer's first transactional batch opens its transaction on this partition (its first offset
//! is kept in the entry and in the set of ongoing transactions, whose smallest first offset is the partition's
//! first unstable offset); a COMMIT or ABORT marker from the coordinator closes it. Snapshot format 2 carries the
//! open transactions and the coordinator epoch; format 1 snapshots (idempotence only) still load.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::batch::BatchHeader;
use crate::control::{ControlType, EndTxnMarker};
use crate::error::LogError;
use crate::txn_index::AbortedTxn;

/// Kafka keeps the metadata of this many batches per producer (the client's max.in.flight.requests limit for
/// idempotence is 5 as well).
pub(crate) const NUM_BATCHES_TO_RETAIN: usize = 5;
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// Snapshots kept after writing a new one; older ones only matter if the newer ones are lost in a crash.
const SNAPSHOTS_TO_KEEP: usize = 3;
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"STRMPST1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"STRMPST2";

/// Where one batch of a producer landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp (what producer expiry compares against, as in Kafka).
    pub timestamp: i64,
}

/// What DescribeProducers shows of one producer on a partition (Kafka's ProducerStateEntry as listed by
/// `activeProducers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when no batch of this epoch is retained (e.g. only markers were written since the epoch began).
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// -1 when the producer has no open transaction here.
    pub current_txn_start_offset: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most `NUM_BATCHES_TO_RETAIN`.
    pub batches: VecDeque<BatchMetadata>,
    pub last_timestamp: i64,
    /// The epoch of the transaction coordinator that wrote this producer's last marker (-1 before any).
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction on this partition.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_timestamp: -1,
            coordinator_epoch: -1,
            current_txn_first_offset: None,
        }
    }

    /// Kafka's maybeUpdateProducerEpoch: a new epoch starts a new sequence space.
    fn update_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches.iter().find(|b| b.first_seq == first_seq && b.last_seq == last_seq).copied()
    }

    fn push(&mut self, epoch: i16, meta: BatchMetadata) {
        // A new epoch starts a new sequence space: older batches can never be duplicates again.
        self.update_epoch(epoch);
        if self.batches.len() == NUM_BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(meta);
        self.last_timestamp = meta.timestamp;
    }
}

/// The sequence of the last record of a batch; sequences wrap from i32::MAX to 0.
pub(crate) fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    if base_sequence > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + last_offset_delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

/// Who writes a batch (Kafka's AppendOrigin): clients' batches are deduplicated and sequence-checked; a
/// coordinator's (transactional offset commits) carry no sequence, so only epochs and transactions are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Client,
    Coordinator,
}

/// What an append must do after the producer checks.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Write the batches, then `commit` these entries.
    Append(Vec<(i64, ProducerEntry)>),
    /// A retry of a batch already in the log: answer with its offsets and write nothing.
    Duplicate(BatchMetadata),
}

/// A transaction a marker ended on this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// What writing a marker does to the producer state; `commit_marker` installs it after the write.
#[derive(Debug)]
pub(crate) struct PreparedMarker {
    producer_id: i64,
    entry: ProducerEntry,
    /// None for a marker of a transaction with no data here (Kafka writes it but indexes nothing).
    pub completed: Option<CompletedTxn>,
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions by first offset → producer id (Kafka's ongoingTxns).
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateManager {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    fn from_producers(producers: HashMap<i64, ProducerEntry>) -> ProducerStateManager {
        let ongoing = producers.iter().filter_map(|(id, e)| Some((e.current_txn_first_offset?, *id))).collect();
        ProducerStateManager { producers, ongoing }
    }

    /// The first offset of the oldest open transaction: nothing at or after it is stable.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// Every producer with state on this partition, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(id, e)| ActiveProducer {
                producer_id: *id,
                producer_epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// The last offset of each producer's last data batch (Kafka's lastRecordsOfActiveProducers): the cleaner keeps
    /// that batch, emptied if need be, so a retry of it is still recognised after the log is rebuilt.
    pub fn last_data_offsets(&self) -> HashMap<i64, i64> {
        self.producers.iter().filter_map(|(id, e)| Some((*id, e.batches.back()?.last_offset))).collect()
    }

    /// Open transactions as (producer id, first offset), oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.ongoing.iter().map(|(first, pid)| (*pid, *first)).collect()
    }

    /// Kafka's lastStableOffset(completedTxn): where the LSO stands once `txn` is complete.
    pub fn last_stable_offset_after(&self, txn: &CompletedTxn) -> i64 {
        self.ongoing.iter().find(|(_, pid)| **pid != txn.producer_id).map_or(txn.last_offset + 1, |(first, _)| *first)
    }

    /// Installs `entry` for `id`, keeping the ongoing-transaction set in step.
    fn install(&mut self, id: i64, entry: ProducerEntry) {
        let before = self.producers.get(&id).and_then(|e| e.current_txn_first_offset);
        if before != entry.current_txn_first_offset {
            if let Some(first) = before {
                self.ongoing.remove(&first);
            }
            if let Some(first) = entry.current_txn_first_offset {
                self.ongoing.insert(first, id);
            }
        }
        self.producers.insert(id, entry);
    }

    #[cfg(test)]
    pub(crate) fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks a client's batches (headers as validated, offsets still unassigned) that will be written from
    /// `first_offset` on, in Kafka's order: duplicate first (UnifiedLog.analyzeAndValidateProducerState), then
    /// epoch, then sequence (ProducerAppendInfo). Batches without a producer id are not tracked. `log_append_time`
    /// is the time the log stamps into the batches on a LogAppendTime topic: what the batch's timestamp will be.
    pub fn prepare(
        &self,
        headers: &[BatchHeader],
        first_offset: i64,
        log_append_time: Option<i64>,
        origin: Origin,
    ) -> Result<Prepared, LogError> {
        let mut updated: Vec<(i64, ProducerEntry)> = Vec::new();
        let mut offset = first_offset;
        for h in headers {
            let batch_first = offset;
            offset += i64::from(h.last_offset_delta) + 1;
            if h.producer_id < 0 {
                continue;
            }
            let first_seq = h.base_sequence;
            let last_seq = last_sequence(first_seq, h.last_offset_delta);
            let slot = match updated.iter().position(|(id, _)| *id == h.producer_id) {
                Some(i) => i,
                None => {
                    let current = self.producers.get(&h.producer_id);
                    if origin == Origin::Client {
                        if let Some(dup) = current.and_then(|e| e.find_duplicate(h.producer_epoch, first_seq, last_seq))
                        {
                            return Ok(Prepared::Duplicate(dup));
                        }
                    }
                    let entry = current.cloned().unwrap_or_else(|| ProducerEntry::new(-1));
                    updated.push((h.producer_id, entry));
                    updated.len() - 1
                }
            };
            let entry = &mut updated[slot].1;
            check_epoch(h, entry)?;
            if origin == Origin::Coordinator {
                // No sequence space: keep the epoch and the transaction, not batch metadata that could later pass
                // for a client's duplicate.
                if h.is_transactional() && entry.current_txn_first_offset.is_none() {
                    entry.current_txn_first_offset = Some(batch_first);
                }
                entry.update_epoch(h.producer_epoch);
                entry.last_timestamp = log_append_time.unwrap_or(h.max_timestamp);
                continue;
            }
            check_sequence(h, entry, first_seq)?;
            // Kafka's ProducerAppendInfo: a transactional batch opens the producer's transaction here; a plain
            // write while one is open would interleave with it.
            match (h.is_transactional(), entry.current_txn_first_offset) {
                (true, None) => entry.current_txn_first_offset = Some(batch_first),
                (false, Some(_)) => {
                    return Err(LogError::InvalidTxnState(format!(
                        "Expected transactional write from producer {} at offset {}",
                        h.producer_id, batch_first
                    )))
                }
                _ => {}
            }
            entry.push(
                h.producer_epoch,
                BatchMetadata {
                    first_seq,
                    last_seq,
                    first_offset: batch_first,
                    last_offset: offset - 1,
                    timestamp: log_append_time.unwrap_or(h.max_timestamp),
                },
            );
        }
        Ok(Prepared::Append(updated))
    }

    /// Installs what `prepare` computed, once the write succeeded.
    pub fn commit(&mut self, updated: Vec<(i64, ProducerEntry)>) {
        for (id, entry) in updated {
            self.install(id, entry);
        }
    }

    /// Checks a COMMIT/ABORT marker the coordinator writes at `offset`, as Kafka's appendEndTxnMarker: an older
    /// producer epoch is INVALID_PRODUCER_EPOCH, an older coordinator epoch TRANSACTION_COORDINATOR_FENCED.
    pub fn prepare_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        offset: i64,
        timestamp: i64,
    ) -> Result<PreparedMarker, LogError> {
        let mut entry = self.producers.get(&producer_id).cloned().unwrap_or_else(|| ProducerEntry::new(-1));
        if producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch(format!(
                "Epoch of producer {producer_id} at offset {offset} is {producer_epoch}, which is smaller than the last seen epoch {}",
                entry.epoch
            )));
        }
        if entry.coordinator_epoch > marker.coordinator_epoch {
            return Err(LogError::TransactionCoordinatorFenced(format!(
                "Invalid coordinator epoch for producerId {producer_id} at offset {offset}: {} (zombie), {} (current)",
                marker.coordinator_epoch, entry.coordinator_epoch
            )));
        }
        Ok(Self::marker_update(producer_id, &mut entry, producer_epoch, marker, offset, timestamp))
    }

    fn marker_update(
        producer_id: i64,
        entry: &mut ProducerEntry,
        producer_epoch: i16,
        marker: EndTxnMarker,
        offset: i64,
        timestamp: i64,
    ) -> PreparedMarker {
        let completed = entry.current_txn_first_offset.map(|first_offset| CompletedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            aborted: marker.control_type == ControlType::Abort,
        });
        entry.update_epoch(producer_epoch);
        entry.current_txn_first_offset = None;
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = timestamp;
        PreparedMarker { producer_id, entry: entry.clone(), completed }
    }

    /// Installs a written marker; returns the aborted-transaction index entry to add, if it aborted data here.
    pub fn commit_marker(&mut self, m: PreparedMarker) -> Option<AbortedTxn> {
        let aborted = m.completed.filter(|c| c.aborted).map(|c| AbortedTxn {
            producer_id: c.producer_id,
            first_offset: c.first_offset,
            last_offset: c.last_offset,
            last_stable_offset: self.last_stable_offset_after(&c),
        });
        self.install(m.producer_id, m.entry);
        aborted
    }

    /// Replays a batch already in the log (recovery): no checks, as Kafka loads with the replication origin.
    /// `marker` is the parsed marker of a control batch. Returns the aborted-transaction entry a replayed ABORT
    /// marker produces, so recovery can rebuild the transaction index.
    pub fn apply(&mut self, h: &BatchHeader, marker: Option<EndTxnMarker>) -> Option<AbortedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        if h.is_control() {
            let marker = marker?;
            let mut entry = self.producers.get(&h.producer_id).cloned().unwrap_or_else(|| ProducerEntry::new(-1));
            let m = Self::marker_update(
                h.producer_id,
                &mut entry,
                h.producer_epoch,
                marker,
                h.base_offset,
                h.max_timestamp,
            );
            return self.commit_marker(m);
        }
        let mut entry =
            self.producers.get(&h.producer_id).cloned().unwrap_or_else(|| ProducerEntry::new(h.producer_epoch));
        if h.producer_epoch < entry.epoch {
            return None;
        }
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset);
        }
        entry.push(
            h.producer_epoch,
            BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                timestamp: h.max_timestamp,
            },
        );
        self.install(h.producer_id, entry);
        None
    }

    /// Forgets producers idle for `expiration_ms` (Kafka's `producer.id.expiration.ms`); a later batch from one of
    /// them is accepted with any sequence, as for any unknown producer.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer with an open transaction is never expired (Kafka's isProducerExpired): its first offset holds
        // the LSO until the coordinator ends it.
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    // ---- snapshots ----

    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + self.producers.len() * 64);
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<ProducerStateManager> {
        // Format 1 (before transactions) has no coordinator epoch and no open transaction per producer.
        let (v2, rest) = match bytes.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => (true, rest),
            None => (false, bytes.strip_prefix(SNAPSHOT_MAGIC_V1)?),
        };
        let (crc, body) = rest.split_at_checked(4)?;
        if u32::from_be_bytes(crc.try_into().ok()?) != crc32c::crc32c(body) {
            return None;
        }
        let mut r = Reader(body);
        let n = r.u32()?;
        let mut producers = HashMap::with_capacity(n as usize);
        for _ in 0..n {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let (coordinator_epoch, txn_first) = if v2 { (r.i32()?, r.i64()?) } else { (-1, -1) };
            let count = r.u8()?;
            let mut batches = VecDeque::with_capacity(count as usize);
            for _ in 0..count {
                batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            let current_txn_first_offset = (txn_first >= 0).then_some(txn_first);
            producers.insert(
                id,
                ProducerEntry { epoch, batches, last_timestamp, coordinator_epoch, current_txn_first_offset },
            );
        }
        r.0.is_empty().then(|| ProducerStateManager::from_producers(producers))
    }

    /// Writes `<offset>.snapshot`: the state after every batch below `offset`. Not fsynced: a snapshot lost or
    /// torn by a crash fails its CRC on load and an older one (or a longer replay) is used instead.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> io::Result<()> {
        let path = snapshot_path(dir, offset);
        let tmp = path.with_extension("snapshot.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        // Durable before older snapshots are removed (as Kafka forces it): after a power cut an empty new file
        // and no old ones would leave replay from the log start, which retention may have moved past producers.
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        let mut offsets = list_snapshots(dir)?;
        offsets.sort_unstable();
        let excess = offsets.len().saturating_sub(SNAPSHOTS_TO_KEEP);
        for old in &offsets[..excess] {
            remove_snapshot(dir, *old);
        }
        Ok(())
    }

    /// Loads the newest readable snapshot at or below `log_end`, deleting any above it (they describe data a crash
    /// truncated). Returns the state and the offset replay must start from (0 without a snapshot).
    pub fn load_snapshot(dir: &Path, log_end: i64) -> io::Result<(ProducerStateManager, i64)> {
        let mut offsets = list_snapshots(dir)?;
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        for offset in offsets {
            if offset > log_end {
                remove_snapshot(dir, offset);
                continue;
            }
            match fs::read(snapshot_path(dir, offset)).ok().as_deref().and_then(ProducerStateManager::decode) {
                Some(state) => return Ok((state, offset)),
                None => {
                    tracing::warn!(dir = %dir.display(), offset, "ignoring unreadable producer state snapshot");
                    remove_snapshot(dir, offset);
                }
            }
        }
        Ok((ProducerStateManager::default(), 0))
    }
}

fn check_epoch(h: &BatchHeader, entry: &ProducerEntry) -> Result<(), LogError> {
    if h.producer_epoch < entry.epoch {
        // Since Kafka 2.7 produce answers INVALID_PRODUCER_EPOCH here rather than the fatal PRODUCER_FENCED.
        return Err(LogError::InvalidProducerEpoch(format!(
            "Epoch of producer {} at offset {} is {}, which is smaller than the last seen epoch {}",
            h.producer_id, h.base_offset, h.producer_epoch, entry.epoch
        )));
    }
    Ok(())
}

fn check_sequence(h: &BatchHeader, entry: &ProducerEntry, first_seq: i32) -> Result<(), LogError> {
    if h.producer_epoch != entry.epoch {
        // A bumped epoch must start again at 0; an unknown producer (no epoch yet) may start anywhere.
        if first_seq != 0 && entry.epoch != -1 {
            return Err(LogError::OutOfOrderSequence(format!(
                "Invalid sequence number for new epoch of producer {}: {} (request epoch), {} (seq. number), {} (current producer epoch)",
                h.producer_id, h.producer_epoch, first_seq, entry.epoch
            )));
        }
        return Ok(());
    }
    // Kafka's checkSequence: with no batch of this epoch (a marker bumped the epoch), the next sequence is 0; only a
    // producer without a known epoch (state lost to expiry or retention) may start anywhere.
    let last = entry.last_seq().unwrap_or(-1);
    if entry.epoch != -1 && !in_sequence(last, first_seq) {
        return Err(LogError::OutOfOrderSequence(format!(
            "Out of order sequence number for producer {}: {} (incoming seq. number), {} (current end sequence number)",
            h.producer_id, first_seq, last
        )));
    }
    Ok(())
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(crate::segment::file_name(offset, SNAPSHOT_EXT))
}

fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((offset, SNAPSHOT_EXT)) = crate::segment::parse_file_name(name) {
            out.push(offset);
        }
    }
    Ok(out)
}

fn remove_snapshot(dir: &Path, offset: i64) {
    if let Err(e) = fs::remove_file(snapshot_path(dir, offset)) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), offset, error = %e, "failed to remove producer state snapshot");
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batches;
    use crate::config::LogConfig;
    use crate::log::Log;
    use crate::testkit::{build, BatchSpec};

    fn idem(pid: i64, epoch: i16, seq: i32, records: i32) -> Vec<u8> {
        build(&BatchSpec {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
            base_timestamp: 1_000,
            ..Default::default()
        })
    }

    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        validate_batches(&idem(pid, epoch, seq, records), u32::MAX).unwrap()[0]
    }

    /// Runs prepare + commit as an append at `offset` would.
    fn append(m: &mut ProducerStateManager, h: BatchHeader, offset: i64) -> Result<Option<BatchMetadata>, LogError> {
        match m.prepare(&[h], offset, None, Origin::Client)? {
            Prepared::Append(u) => {
                m.commit(u);
                Ok(None)
            }
            Prepared::Duplicate(d) => Ok(Some(d)),
        }
    }

    fn append_log(log: &Log, pid: i64, epoch: i16, seq: i32, records: i32) -> Result<crate::AppendInfo, LogError> {
        log.append(&mut idem(pid, epoch, seq, records), 0, 1_000, false)
    }

    #[test]
    fn last_sequence_wraps_at_i32_max() {
        assert_eq!(last_sequence(0, 4), 4);
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(i32::MAX, 1));
    }

    #[test]
    fn in_order_batches_are_accepted_and_gaps_rejected() {
        let mut m = ProducerStateManager::default();
        assert_eq!(append(&mut m, header(7, 0, 0, 3), 0).unwrap(), None);
        assert_eq!(append(&mut m, header(7, 0, 3, 2), 3).unwrap(), None);
        let err = append(&mut m, header(7, 0, 6, 1), 5).unwrap_err();
        assert!(matches!(err, LogError::OutOfOrderSequence(_)), "{err:?}");
        // The failed check left the state untouched.
        assert_eq!(m.entry(7).unwrap().last_seq(), Some(4));
        assert_eq!(append(&mut m, header(7, 0, 5, 1), 5).unwrap(), None);
    }

    #[test]
    fn any_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut m = ProducerStateManager::default();
        for i in 0..6 {
            append(&mut m, header(1, 0, i * 2, 2), 100 + i64::from(i) * 2).unwrap();
        }
        // Batch 0 fell out of the window: now it is an out-of-order sequence, as in Kafka.
        assert!(matches!(append(&mut m, header(1, 0, 0, 2), 200), Err(LogError::OutOfOrderSequence(_))));
        let dup = append(&mut m, header(1, 0, 2, 2), 200).unwrap().unwrap();
        assert_eq!((dup.first_offset, dup.last_offset, dup.first_seq, dup.last_seq), (102, 103, 2, 3));
        let dup = append(&mut m, header(1, 0, 10, 2), 200).unwrap().unwrap();
        assert_eq!(dup.first_offset, 110);
        // Same first sequence but a different length is not a duplicate.
        assert!(matches!(append(&mut m, header(1, 0, 10, 1), 200), Err(LogError::OutOfOrderSequence(_))));
    }

    #[test]
    fn epochs_fence_older_and_reset_sequences() {
        let mut m = ProducerStateManager::default();
        append(&mut m, header(3, 1, 0, 5), 0).unwrap();
        assert!(matches!(append(&mut m, header(3, 0, 5, 1), 5), Err(LogError::InvalidProducerEpoch(_))));
        // A bumped epoch must restart at 0.
        assert!(matches!(append(&mut m, header(3, 2, 5, 1), 5), Err(LogError::OutOfOrderSequence(_))));
        assert_eq!(append(&mut m, header(3, 2, 0, 1), 5).unwrap(), None);
        // The old epoch's batch is no longer a duplicate but fenced.
        assert!(matches!(append(&mut m, header(3, 1, 0, 5), 6), Err(LogError::InvalidProducerEpoch(_))));
    }

    #[test]
    fn unknown_producers_may_start_at_any_sequence_and_sequences_wrap() {
        let mut m = ProducerStateManager::default();
        append(&mut m, header(9, 0, i32::MAX - 1, 2), 0).unwrap();
        assert_eq!(m.entry(9).unwrap().last_seq(), Some(i32::MAX));
        append(&mut m, header(9, 0, 0, 1), 2).unwrap();
        let wrapped = header(9, 0, i32::MAX, 3);
        let mut m2 = ProducerStateManager::default();
        append(&mut m2, wrapped, 0).unwrap();
        assert_eq!(m2.entry(9).unwrap().last_seq(), Some(1));
        append(&mut m2, header(9, 0, 2, 1), 3).unwrap();
    }

    #[test]
    fn several_batches_in_one_append_are_checked_in_order() {
        let m = ProducerStateManager::default();
        let hs = [header(1, 0, 0, 2), header(1, 0, 2, 2)];
        let Prepared::Append(u) = m.prepare(&hs, 10, None, Origin::Client).unwrap() else { panic!() };
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].1.batches.iter().map(|b| b.first_offset).collect::<Vec<_>>(), vec![10, 12]);
        assert!(m.prepare(&[header(1, 0, 0, 2), header(1, 0, 3, 2)], 10, None, Origin::Client).is_err());
    }

    #[test]
    fn idle_producers_expire() {
        let mut m = ProducerStateManager::default();
        append(&mut m, header(1, 0, 0, 1), 0).unwrap();
        assert_eq!(m.remove_expired(1_000 + 99, 100), 0);
        assert_eq!(m.remove_expired(1_000 + 100, 100), 1);
        // Forgotten: any sequence is accepted again.
        append(&mut m, header(1, 0, 42, 1), 1).unwrap();
    }

    #[test]
    fn snapshots_round_trip_and_corrupt_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ProducerStateManager::default();
        append(&mut m, header(1, 0, 0, 2), 0).unwrap();
        append(&mut m, header(2, 4, 7, 1), 2).unwrap();
        m.write_snapshot(dir.path(), 3).unwrap();
        let (loaded, from) = ProducerStateManager::load_snapshot(dir.path(), 3).unwrap();
        assert_eq!(from, 3);
        assert_eq!(loaded.producers, m.producers);
        // A snapshot beyond the log end describes truncated data and is dropped.
        let (empty, from) = ProducerStateManager::load_snapshot(dir.path(), 2).unwrap();
        assert_eq!((empty.len(), from), (0, 0));
        assert!(list_snapshots(dir.path()).unwrap().is_empty());
        m.write_snapshot(dir.path(), 3).unwrap();
        fs::write(snapshot_path(dir.path(), 5), b"STRMPST1garbage").unwrap();
        let (loaded, from) = ProducerStateManager::load_snapshot(dir.path(), 10).unwrap();
        assert_eq!((loaded.len(), from), (2, 3));
    }

    #[test]
    fn log_returns_the_original_offsets_for_a_duplicate_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&mut crate::testkit::batch(3, 10, 1_000), 0, 1_000, false).unwrap();
        let first = append_log(&log, 5, 0, 0, 2).unwrap();
        assert_eq!((first.first_offset, first.duplicate), (3, false));
        let size = log.size_bytes();
        let again = append_log(&log, 5, 0, 0, 2).unwrap();
        assert_eq!((again.first_offset, again.last_offset, again.duplicate), (3, 4, true));
        // Kafka reports the original batch's timestamp as the log append time of a duplicate.
        assert_eq!(again.log_append_time, 1_000);
        assert_eq!((log.size_bytes(), log.log_end_offset()), (size, 5));
        assert!(matches!(append_log(&log, 5, 0, 3, 1), Err(LogError::OutOfOrderSequence(_))));
        assert_eq!(log.log_end_offset(), 5);
    }

    #[test]
    fn concurrent_retries_of_one_batch_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        let log = std::sync::Arc::new(log);
        for seq in 0..50 {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let log = log.clone();
                    std::thread::spawn(move || append_log(&log, 11, 0, seq, 1).unwrap())
                })
                .collect();
            let infos: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            // The check and the write happen under one lock: exactly one thread wrote, all got its offset.
            assert_eq!(infos.iter().filter(|i| !i.duplicate).count(), 1);
            assert!(infos.iter().all(|i| i.first_offset == i64::from(seq)));
        }
        assert_eq!(log.log_end_offset(), 50);
    }

    #[test]
    fn state_is_rebuilt_from_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
            append_log(&log, 5, 0, 0, 2).unwrap();
            append_log(&log, 5, 0, 2, 2).unwrap();
            log.flush().unwrap();
            // Dropped without close: no snapshot, as after kill -9.
        }
        assert!(list_snapshots(dir.path()).unwrap().is_empty());
        let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
        let dup = append_log(&log, 5, 0, 0, 2).unwrap();
        assert_eq!((dup.first_offset, dup.duplicate), (0, true));
        assert!(matches!(append_log(&log, 5, 0, 5, 1), Err(LogError::OutOfOrderSequence(_))));
        assert_eq!(append_log(&log, 5, 0, 4, 1).unwrap().first_offset, 4);
    }

    #[test]
    fn snapshot_at_roll_plus_replay_and_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 200, ..LogConfig::default() };
        {
            let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
            for i in 0..10 {
                append_log(&log, 1, 0, i, 1).unwrap();
            }
            append_log(&log, 2, 3, 100, 1).unwrap();
            assert!(log.segment_count() > 2);
            log.flush().unwrap();
        }
        let snapshots = list_snapshots(dir.path()).unwrap();
        assert!(!snapshots.is_empty() && snapshots.len() <= SNAPSHOTS_TO_KEEP);
        {
            let (log, _) = Log::open(dir.path(), config.clone()).unwrap();
            // Producer 1's batch 9 was after the last snapshot (replayed), batch 5 is in the snapshot window.
            assert_eq!(append_log(&log, 1, 0, 9, 1).unwrap().first_offset, 9);
            assert_eq!(append_log(&log, 1, 0, 5, 1).unwrap().first_offset, 5);
            assert!(append_log(&log, 2, 3, 100, 1).unwrap().duplicate);
            append_log(&log, 1, 0, 10, 1).unwrap();
            log.close().unwrap();
        }
        let (log, report) = Log::open(dir.path(), config).unwrap();
        assert!(report.clean_shutdown);
        let dup = append_log(&log, 1, 0, 10, 1).unwrap();
        assert_eq!((dup.first_offset, dup.duplicate), (11, true));
        assert!(matches!(append_log(&log, 2, 2, 101, 1), Err(LogError::InvalidProducerEpoch(_))));
    }
}
