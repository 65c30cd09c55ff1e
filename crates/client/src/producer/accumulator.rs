//! Records waiting to be sent, batched per partition. `send` appends here; the sender drains batches that are
//! ready (full, lingered long enough, flushed, or retried). Memory is bounded by `buffer.memory`: a record
//! reserves its size before it is appended and the batch gives it back when it completes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::batch::ProducerStamp;
use crate::error::{Error, Result};
use crate::record::{Header, RecordMetadata, TopicPartition};

/// Shared by the accumulator and every batch, so a batch gives its memory back whichever way it ends.
pub(crate) struct Budget {
    pub memory: Semaphore,
    /// Records appended and not yet completed; `flush` waits for zero.
    pub incomplete: AtomicUsize,
    pub drained: Notify,
}

pub(crate) struct PendingRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp: i64,
    pub tx: oneshot::Sender<Result<RecordMetadata>>,
}

pub(crate) struct Batch {
    pub tp: TopicPartition,
    pub records: Vec<PendingRecord>,
    /// Estimated bytes of the records (what the memory budget holds for this batch).
    pub size: usize,
    pub created: Instant,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
    /// Encoded once, on the first drain, and reused by retries.
    pub encoded: Option<Bytes>,
    /// The producer id, epoch and base sequence an idempotent producer gave the batch when it was encoded.
    pub stamp: Option<ProducerStamp>,
    count: usize,
    budget: Arc<Budget>,
}

impl Batch {
    /// Completes every record with its offset (`base_offset + i`, or -1 when unknown).
    pub fn succeed(mut self, base_offset: i64, log_append_time: Option<i64>) {
        for (i, r) in self.records.drain(..).enumerate() {
            let offset = if base_offset >= 0 { base_offset + i as i64 } else { -1 };
            let meta = RecordMetadata {
                topic: self.tp.topic.clone(),
                partition: self.tp.partition,
                offset,
                timestamp: log_append_time.unwrap_or(r.timestamp),
            };
            let _ = r.tx.send(Ok(meta));
        }
    }

    pub fn fail(mut self, err: &Error) {
        for r in self.records.drain(..) {
            let _ = r.tx.send(Err(err.clone()));
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.budget.memory.add_permits(self.size);
        if self.budget.incomplete.fetch_sub(self.count, Ordering::SeqCst) == self.count {
            self.budget.drained.notify_waiters();
        }
    }
}

/// One partition's queued batches and what it has in flight.
#[derive(Default)]
struct PartitionQueue {
    batches: VecDeque<Batch>,
    /// Batches of this partition in requests still waiting for their response.
    in_flight: usize,
    /// The (epoch, base sequence) of those that carry a producer stamp, for the idempotent ordering checks.
    in_flight_stamps: Vec<(i16, i32)>,
    /// The partition's epoch was bumped while batches of the old epoch were in flight: nothing new is sent until
    /// they are back (a retried one is then resent first, under the new epoch), so records keep their order.
    stalled: bool,
}

impl PartitionQueue {
    fn idle(&self) -> bool {
        self.batches.is_empty() && self.in_flight == 0 && !self.stalled
    }
}

pub(crate) struct Accumulator {
    queues: Mutex<HashMap<TopicPartition, PartitionQueue>>,
    /// Batches one partition may have in flight at once (1 keeps retries in order without sequence numbers).
    max_in_flight_per_partition: usize,
    pub budget: Arc<Budget>,
    /// Wakes the sender: a record was appended, a response arrived, a flush began.
    pub wake: Notify,
    flushing: AtomicUsize,
    closed: AtomicBool,
    batch_size: usize,
    linger: Duration,
}

/// What `append` did, for the sticky partitioner.
pub(crate) struct Appended {
    /// The record started a new batch after an existing one for the partition.
    pub rolled_over: bool,
}

impl Accumulator {
    pub fn new(
        buffer_memory: usize,
        batch_size: usize,
        linger: Duration,
        max_in_flight_per_partition: usize,
    ) -> Accumulator {
        Accumulator {
            queues: Mutex::new(HashMap::new()),
            max_in_flight_per_partition: max_in_flight_per_partition.max(1),
            budget: Arc::new(Budget {
                memory: Semaphore::new(buffer_memory.min(Semaphore::MAX_PERMITS)),
                incomplete: AtomicUsize::new(0),
                drained: Notify::new(),
            }),
            wake: Notify::new(),
            flushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            batch_size,
            linger,
        }
    }

    /// Waits up to `max_block` for `size` bytes of `buffer.memory`; the bytes then belong to the appended record.
    pub async fn reserve(&self, size: usize, max_block: Duration) -> Result<()> {
        let n = u32::try_from(size).map_err(|_| Error::RecordTooLarge {
            size,
            limit: u32::MAX as usize,
            setting: "u32",
        })?;
        match tokio::time::timeout(max_block, self.budget.memory.acquire_many(n)).await {
            Ok(Ok(permit)) => {
                permit.forget();
                Ok(())
            }
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout("waiting for buffer.memory".into(), max_block)),
        }
    }

    /// Appends a record whose `size` bytes were reserved.
    pub fn append(&self, tp: TopicPartition, record: PendingRecord, size: usize) -> Appended {
        self.budget.incomplete.fetch_add(1, Ordering::SeqCst);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = &mut queues.entry(tp.clone()).or_default().batches;
        if let Some(last) = queue.back_mut() {
            if last.encoded.is_none() && last.size + size <= self.batch_size {
                last.records.push(record);
                last.size += size;
                last.count += 1;
                return Appended { rolled_over: false };
            }
        }
        let rolled_over = !queue.is_empty();
        queue.push_back(Batch {
            tp,
            records: vec![record],
            size,
            created: Instant::now(),
            attempts: 0,
            retry_at: None,
            encoded: None,
            stamp: None,
            count: 1,
            budget: self.budget.clone(),
        });
        Appended { rolled_over }
    }

    /// Partitions whose first batch may be sent now, and when to look again for the others. A partition with a
    /// batch in flight gets another only if `may_pipeline` says so.
    pub fn ready(
        &self,
        now: Instant,
        may_pipeline: impl Fn(&TopicPartition) -> bool,
    ) -> (Vec<TopicPartition>, Option<Instant>) {
        let flushing = self.flushing.load(Ordering::SeqCst) > 0 || self.closed.load(Ordering::SeqCst);
        // Someone is blocked on buffer.memory: send everything rather than linger.
        let exhausted = self.budget.memory.available_permits() < self.batch_size;
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for (tp, q) in queues.iter() {
            let Some(first) = q.batches.front() else { continue };
            if q.in_flight >= self.max_in_flight_per_partition {
                continue;
            }
            // A retry of a stamped batch goes alone, once everything sent before it is back (Java's
            // RecordAccumulator does the same): it must not overtake, nor be overtaken by, other sequences.
            if q.in_flight > 0 && (first.stamp.is_some() || q.stalled || !may_pipeline(tp)) {
                continue;
            }
            if let Some(t) = first.retry_at.filter(|t| *t > now) {
                at(t);
                continue;
            }
            let lingered = first.created + self.linger;
            if flushing
                || exhausted
                || q.batches.len() > 1
                || first.size >= self.batch_size
                || first.attempts > 0
                || lingered <= now
            {
                ready.push(tp.clone());
            } else {
                at(lingered);
            }
        }
        (ready, next)
    }

    /// Takes the first batch of each partition (already known ready), up to `max_bytes` in total (at least one),
    /// and counts them in flight until `sent` or `requeue` (their stamps are recorded by `stamped`).
    pub fn drain(&self, partitions: &[TopicPartition], max_bytes: usize) -> Vec<Batch> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut total = 0;
        for tp in partitions {
            let Some(q) = queues.get_mut(tp) else { continue };
            let Some(first) = q.batches.front() else { continue };
            if !out.is_empty() && total + first.size > max_bytes {
                break;
            }
            total += first.size;
            if let Some(b) = q.batches.pop_front() {
                if q.in_flight == 0 {
                    q.stalled = false;
                }
                q.in_flight += 1;
                out.push(b);
            }
        }
        out
    }

    /// A drained batch's producer stamp, known once the sender stamped (or restamped) it.
    pub fn stamped(&self, tp: &TopicPartition, stamp: ProducerStamp) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get_mut(tp) {
            q.in_flight_stamps.push((stamp.epoch, stamp.base_sequence));
        }
    }

    fn take_in_flight(queues: &mut HashMap<TopicPartition, PartitionQueue>, batch: &Batch) {
        if let Some(q) = queues.get_mut(&batch.tp) {
            q.in_flight = q.in_flight.saturating_sub(1);
            if let Some(s) = batch.stamp {
                if let Some(i) = q.in_flight_stamps.iter().position(|x| *x == (s.epoch, s.base_sequence)) {
                    q.in_flight_stamps.swap_remove(i);
                }
            }
            if q.idle() {
                queues.remove(&batch.tp);
            }
        }
    }

    /// The batch's request is answered (or failed for good): it is no longer in flight.
    pub fn sent(&self, batch: &Batch) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        Self::take_in_flight(&mut queues, batch);
    }

    /// True when a batch of the same partition and epoch with a lower sequence than `stamp` is still in flight or
    /// waiting for a retry: an OUT_OF_ORDER_SEQUENCE_NUMBER for `stamp` then only means that one is missing.
    pub fn earlier_sequence_pending(&self, tp: &TopicPartition, stamp: ProducerStamp) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(q) = queues.get(tp) else { return false };
        let earlier = |epoch: i16, seq: i32| epoch == stamp.epoch && seq < stamp.base_sequence;
        q.in_flight_stamps.iter().any(|&(e, s)| earlier(e, s))
            || q.batches.iter().filter_map(|b| b.stamp).any(|s| earlier(s.epoch, s.base_sequence))
    }

    /// The partition's epoch was bumped: hold new batches back until what is in flight came back.
    pub fn stall(&self, tp: &TopicPartition) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = queues.get_mut(tp).filter(|q| q.in_flight > 0) {
            q.stalled = true;
        }
    }

    /// Puts an in-flight batch back for another attempt after `backoff`: stamped batches in sequence order ahead
    /// of everything not yet stamped, so retries go out in their original order.
    pub fn requeue(&self, mut batch: Batch, backoff: Duration) {
        batch.attempts += 1;
        batch.retry_at = Some(Instant::now() + backoff);
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        Self::take_in_flight(&mut queues, &batch);
        let q = &mut queues.entry(batch.tp.clone()).or_default().batches;
        let at = match batch.stamp {
            Some(mine) => q
                .iter()
                .position(|b| b.stamp.is_none_or(|s| s.epoch != mine.epoch || s.base_sequence > mine.base_sequence))
                .unwrap_or(q.len()),
            None => 0,
        };
        q.insert(at, batch);
    }

    /// Delays the first batches of these partitions (their broker is unreachable).
    pub fn back_off(&self, partitions: &[TopicPartition], backoff: Duration) {
        let until = Instant::now() + backoff;
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for tp in partitions {
            if let Some(b) = queues.get_mut(tp).and_then(|q| q.batches.front_mut()) {
                b.retry_at = Some(until);
            }
        }
    }

    /// Takes every queued batch (none in flight): an aborted transaction's records are not sent any more.
    pub fn take_queued(&self) -> Vec<Batch> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for q in queues.values_mut() {
            out.extend(q.batches.drain(..));
        }
        queues.retain(|_, q| !q.idle());
        out
    }

    /// Removes batches that waited longer than `delivery_timeout`.
    pub fn expire(&self, now: Instant, delivery_timeout: Duration) -> Vec<Batch> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for q in queues.values_mut() {
            while q.batches.front().is_some_and(|b| now.duration_since(b.created) >= delivery_timeout) {
                if let Some(b) = q.batches.pop_front() {
                    out.push(b);
                }
            }
        }
        queues.retain(|_, q| !q.idle());
        out
    }

    /// No batch is queued (some may still be in flight).
    pub fn is_empty(&self) -> bool {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).values().all(|q| q.batches.is_empty())
    }

    pub fn begin_flush(&self) {
        self.flushing.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn end_flush(&self) {
        self.flushing.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until every appended record completed.
    pub async fn wait_drained(&self) {
        loop {
            let notified = self.budget.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.budget.incomplete.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> (PendingRecord, oneshot::Receiver<Result<RecordMetadata>>) {
        let (tx, rx) = oneshot::channel();
        (PendingRecord { key: None, value: Some(Bytes::from_static(b"v")), headers: vec![], timestamp: 1, tx }, rx)
    }

    #[test]
    fn batches_fill_to_batch_size_then_roll_over() {
        let acc = Accumulator::new(1 << 20, 100, Duration::from_secs(60), 5);
        let tp = TopicPartition::new("t", 0);
        let mut rolled = vec![];
        let mut rxs = vec![];
        for _ in 0..5 {
            let (r, rx) = record();
            rxs.push(rx);
            rolled.push(acc.append(tp.clone(), r, 40).rolled_over);
        }
        // 40+40 fit in 100; the third starts a new batch, the fifth another.
        assert_eq!(rolled, vec![false, false, true, false, true]);
        // The first batch is ready (more batches queued behind it) although linger has not passed.
        let (ready, _) = acc.ready(Instant::now(), |_| true);
        assert_eq!(ready, vec![tp.clone()]);
        let drained = acc.drain(&ready, 1 << 20);
        assert_eq!(drained[0].records.len(), 2);
    }

    #[test]
    fn linger_decides_readiness_of_a_lone_batch() {
        let acc = Accumulator::new(1 << 20, 1000, Duration::from_millis(50), 5);
        let (r, _rx) = record();
        acc.append(TopicPartition::new("t", 0), r, 10);
        let now = Instant::now();
        let (ready, next) = acc.ready(now, |_| true);
        assert!(ready.is_empty());
        assert!(next.is_some_and(|t| t > now));
        let (ready, _) = acc.ready(now + Duration::from_millis(60), |_| true);
        assert_eq!(ready.len(), 1);
        acc.begin_flush();
        assert_eq!(acc.ready(now, |_| true).0.len(), 1, "a flush makes every batch ready");
    }

    #[test]
    fn retries_go_alone_and_in_sequence_order() {
        let acc = Accumulator::new(1 << 20, 10, Duration::ZERO, 5);
        let tp = TopicPartition::new("t", 0);
        let mut rxs = vec![];
        for _ in 0..4 {
            let (r, rx) = record();
            rxs.push(rx);
            acc.append(tp.clone(), r, 10); // one batch each (batch.size 10)
        }
        // Three batches go out pipelined, stamped 0, 1, 2.
        let mut sent = vec![];
        for seq in 0..3 {
            let mut b = acc.drain(&acc.ready(Instant::now(), |_| true).0, 1 << 20).pop().unwrap();
            let stamp = ProducerStamp { producer_id: 1, epoch: 0, base_sequence: seq };
            b.stamp = Some(stamp);
            acc.stamped(&tp, stamp);
            sent.push(b);
        }
        let third = sent.pop().unwrap();
        let second = sent.pop().unwrap();
        // The third fails behind the second: an earlier sequence is still in flight.
        assert!(acc.earlier_sequence_pending(&tp, third.stamp.unwrap()));
        acc.requeue(third, Duration::ZERO);
        acc.requeue(second, Duration::ZERO);
        // Retries wait for what is in flight (sequence 0), then go first, in sequence order, one at a time.
        assert!(acc.ready(Instant::now(), |_| true).0.is_empty());
        let first = sent.pop().unwrap();
        acc.sent(&first);
        let b = acc.drain(&acc.ready(Instant::now(), |_| true).0, 1 << 20).pop().unwrap();
        assert_eq!(b.stamp.unwrap().base_sequence, 1);
        acc.stamped(&tp, b.stamp.unwrap());
        assert!(acc.ready(Instant::now(), |_| true).0.is_empty(), "the next retry waits for this one");
        acc.sent(&b);
        let b = acc.drain(&acc.ready(Instant::now(), |_| true).0, 1 << 20).pop().unwrap();
        assert_eq!(b.stamp.unwrap().base_sequence, 2);
        acc.stamped(&tp, b.stamp.unwrap());
        // The fresh batch behind the retries may be pipelined again.
        let fresh = acc.drain(&acc.ready(Instant::now(), |_| true).0, 1 << 20).pop().unwrap();
        assert!(fresh.stamp.is_none());
    }

    #[test]
    fn the_first_batch_of_a_partition_goes_alone_until_acknowledged() {
        let acc = Accumulator::new(1 << 20, 10, Duration::ZERO, 5);
        let tp = TopicPartition::new("t", 0);
        let mut rxs = vec![];
        for _ in 0..2 {
            let (r, rx) = record();
            rxs.push(rx);
            acc.append(tp.clone(), r, 10);
        }
        let first = acc.drain(&acc.ready(Instant::now(), |_| false).0, 1 << 20).pop().unwrap();
        assert!(acc.ready(Instant::now(), |_| false).0.is_empty(), "no pipelining before the first acknowledgement");
        assert_eq!(acc.ready(Instant::now(), |_| true).0, vec![tp.clone()]);
        acc.sent(&first);
        assert_eq!(acc.ready(Instant::now(), |_| false).0, vec![tp]);
    }

    #[tokio::test]
    async fn buffer_memory_blocks_until_a_batch_completes() {
        let acc = Accumulator::new(100, 1000, Duration::ZERO, 5);
        acc.reserve(80, Duration::from_millis(10)).await.unwrap();
        let (r, rx) = record();
        acc.append(TopicPartition::new("t", 0), r, 80);
        let err = acc.reserve(40, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(..)), "{err}");
        let batch = acc.drain(&[TopicPartition::new("t", 0)], 1000).pop().unwrap();
        batch.succeed(42, None);
        assert_eq!(rx.await.unwrap().unwrap().offset, 42);
        acc.reserve(40, Duration::from_millis(50)).await.unwrap();
        assert_eq!(acc.budget.incomplete.load(Ordering::SeqCst), 0);
    }
}
