//! The coordinator runtime (Kafka's CoordinatorRuntime) shared by the group and transaction coordinators: it routes
//! a key to its internal-topic partition and that partition's shard task, loads the partition (replays its log into
//! the shard's state machine), feeds the shard its requests and timers one at a time, writes the records they
//! produce, and unloads the partition when this broker resigns as its coordinator.
//!
//! A coordinator is a [`CoordinatorShard`]: it replays records, handles a request by producing records to write and
//! completions to run once they are written ([`Writes`]), and fires its timers. The runtime owns everything else.
//!
//! Commit, then apply. Records produced by all the requests handled in one turn of the loop are appended together
//! (one batch, one fsync: the runtime's batching). A write's completions run on the shard once its records are
//! durable, or at once with the error when the append fails; only then is the state they describe applied
//! ([`CoordinatorShard::on_committed`] for records, the completions for the rest) and the request answered. So a read
//! served by the shard (OffsetFetch) sees only durable state, and a failed write leaves the state as it was.
//! Kafka gets this with a timeline data structure: writes apply at once to uncommitted versions that reads never
//! see and that a failure reverts. Applying on completion was chosen instead because both coordinators already had
//! completions that run after the write (the transaction coordinator's pending transitions, the group coordinator's
//! answers); only the committed offsets moved from "apply, then write" to "write, then replay what was written",
//! which is the load's own code path, so memory and log cannot disagree. The cost: a request handled while a write
//! is in flight decides on the durable state (an offset expiry does not delete an offset whose commit is in flight,
//! see the group shard).
//!
//! Appends run one at a time on a blocking thread; the loop goes on serving while earlier appends wait for their
//! fsync, and applies completions in log order.
//!
//! Back-pressure: each shard's request queue is bounded ([`REQUEST_QUEUE_CAPACITY`]); a caller whose shard's queue is
//! full waits for room instead of the queue growing without bound. The shard's own events (write completions,
//! marker results, retries) go through a separate queue: they come from work already admitted, and the shard must
//! never wait on itself.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::partition::Partition;
use crate::txn_markers::TransactionResult;

/// How many requests may wait in one shard's queue before callers wait for room. Kafka bounds the requests a broker
/// holds with `queued.max.requests` on its request channel rather than in the runtime; a bound of the same order per
/// shard keeps a hot group from holding memory without limit, and one turn of the loop takes a whole queue
/// ([`MAX_BATCH`]) into one write.
pub const REQUEST_QUEUE_CAPACITY: usize = 512;

/// How many queued requests (and own events) one turn of the loop handles before it writes: their records share one
/// append and one fsync, which is what makes many small commits cheap.
const MAX_BATCH: usize = REQUEST_QUEUE_CAPACITY;

/// How often a failing write of coordinator records is logged: clients retry it many times a second, and a line
/// per failure buried the log (a full disk).
const WRITE_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Kafka's `partitionFor`: `Utils.abs(key.hashCode()) % partitions`, with Java's String.hashCode over UTF-16 code
/// units, so a group or transactional id lands on the same partition number as in Kafka.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// One thing a load replays (and a committed write applies), in log order.
#[derive(Clone, Debug)]
pub enum CoordinatorRecord {
    Record {
        key: Bytes,
        value: Option<Bytes>,
    },
    /// A record of a producer's transaction (the group coordinator's TxnOffsetCommit).
    Transactional {
        producer_id: i64,
        key: Bytes,
        value: Option<Bytes>,
    },
    /// A COMMIT or ABORT marker of a producer's transaction.
    Marker {
        producer_id: i64,
        result: TransactionResult,
    },
}

/// A coordinator's state machine for one partition of its internal topic (Kafka's CoordinatorShard).
pub trait CoordinatorShard: Send + Sized + 'static {
    type Request: Send + 'static;

    /// Applies one record of the partition while loading.
    fn replay(&mut self, record: CoordinatorRecord);

    /// The load is complete: rebuild what is derived from the state, schedule timers, write what the load found due.
    fn on_loaded(&mut self, writes: &mut Writes<Self>);

    /// Handles one request: answer it at once, or produce records and completions that answer it once written.
    fn handle(&mut self, request: Self::Request, writes: &mut Writes<Self>);

    /// When the next timer is due, if any.
    fn next_deadline(&self) -> Option<Instant>;

    /// Fires the timers due at `now`.
    fn on_timers(&mut self, now: Instant, writes: &mut Writes<Self>);

    /// The records of a write are durable: apply them (before the write's completions run).
    fn on_committed(&mut self, _records: &[CoordinatorRecord]) {}

    /// The shard is being unloaded (this broker no longer coordinates the partition).
    fn on_unloaded(&mut self) {}

    /// Names the shard in log lines: how much state it loaded.
    fn loaded_summary(&self) -> String {
        String::new()
    }
}

/// Runs on the shard when a write completes: `Ok` once its records are durable, the append's error otherwise.
pub type Completion<S> = Box<dyn FnOnce(&mut S, Result<(), ResponseError>, &mut Writes<S>) + Send>;

/// One record of a producer's transaction to write.
struct TxnRecord {
    producer_id: i64,
    producer_epoch: i16,
    key: Bytes,
    value: Option<Bytes>,
}

/// What handling requests produced: records to append, and what to run once they are written.
pub struct Writes<S> {
    records: Vec<(Bytes, Option<Bytes>)>,
    /// Records of producers' transactions, each producer's written as a transactional batch of its own (a fenced
    /// producer fails alone).
    txn_records: Vec<TxnRecord>,
    completions: Vec<Completion<S>>,
    /// Completions that depend only on one producer's transactional records.
    txn_completions: Vec<(i64, Completion<S>)>,
}

impl<S> Default for Writes<S> {
    fn default() -> Self {
        Writes { records: Vec::new(), txn_records: Vec::new(), completions: Vec::new(), txn_completions: Vec::new() }
    }
}

impl<S: 'static> Writes<S> {
    pub fn append_record(&mut self, key: Bytes, value: Option<Bytes>) {
        self.records.push((key, value));
    }

    pub fn append_transactional(&mut self, producer_id: i64, producer_epoch: i16, key: Bytes, value: Option<Bytes>) {
        self.txn_records.push(TxnRecord { producer_id, producer_epoch, key, value });
    }

    /// Runs `f` once the plain records of this turn are durable (or failed to be written).
    pub fn on_complete(&mut self, f: impl FnOnce(&mut S, Result<(), ResponseError>, &mut Writes<S>) + Send + 'static) {
        self.completions.push(Box::new(f));
    }

    /// `on_complete` for what depends only on `producer_id`'s transactional records.
    pub fn on_complete_transactional(
        &mut self,
        producer_id: i64,
        f: impl FnOnce(&mut S, Result<(), ResponseError>, &mut Writes<S>) + Send + 'static,
    ) {
        self.txn_completions.push((producer_id, Box::new(f)));
    }

    /// Sends `resp` once this turn's records are durable; if the write fails, `on_error` rewrites it first.
    pub fn reply<T: Send + 'static>(
        &mut self,
        tx: oneshot::Sender<T>,
        resp: T,
        on_error: impl FnOnce(T, ResponseError) -> T + Send + 'static,
    ) {
        self.on_complete(move |_, r, _| {
            let _ = tx.send(match r {
                Ok(()) => resp,
                Err(e) => on_error(resp, e),
            });
        });
    }

    /// `reply` for an answer that depends only on `producer_id`'s transactional records.
    pub fn reply_transactional<T: Send + 'static>(
        &mut self,
        producer_id: i64,
        tx: oneshot::Sender<T>,
        resp: T,
        on_error: impl FnOnce(T, ResponseError) -> T + Send + 'static,
    ) {
        self.on_complete_transactional(producer_id, move |_, r, _| {
            let _ = tx.send(match r {
                Ok(()) => resp,
                Err(e) => on_error(resp, e),
            });
        });
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.txn_records.is_empty()
            && self.completions.is_empty()
            && self.txn_completions.is_empty()
    }

    /// The plain records to write (for tests and for the shard's own checks).
    pub fn records(&self) -> &[(Bytes, Option<Bytes>)] {
        &self.records
    }

    /// Completes everything as the runtime would with `result`, without a log: the committed records applied first
    /// on success. For unit tests of a shard.
    #[cfg(test)]
    pub fn complete(self, shard: &mut S, result: Result<(), ResponseError>) -> Writes<S>
    where
        S: CoordinatorShard,
    {
        let mut next = Writes::default();
        if result.is_ok() {
            let mut committed: Vec<CoordinatorRecord> = self
                .records
                .iter()
                .map(|(k, v)| CoordinatorRecord::Record { key: k.clone(), value: v.clone() })
                .collect();
            committed.extend(self.txn_records.iter().map(|r| CoordinatorRecord::Transactional {
                producer_id: r.producer_id,
                key: r.key.clone(),
                value: r.value.clone(),
            }));
            shard.on_committed(&committed);
        }
        for f in self.completions.into_iter().chain(self.txn_completions.into_iter().map(|(_, f)| f)) {
            f(shard, result, &mut next);
        }
        next
    }
}

/// The log of one internal-topic partition as the runtime uses it. `Partition` in the broker; tests put a log of
/// their own here to fail or hold appends.
pub trait CoordinatorLog: Send + Sync + 'static {
    /// (topic, partition), for log lines.
    fn name(&self) -> (String, i32);
    fn log_start_offset(&self) -> i64;
    /// The offset after the last record a load reads.
    fn high_watermark(&self) -> i64;
    /// Whole batches from `offset` (at least one if there is one): their bytes and the last offset they hold, or
    /// None at the end. Blocking.
    fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<(Bytes, i64)>, String>;
    /// Appends one encoded batch; the offset after it. Blocking.
    fn append(&self, batch: &mut [u8]) -> Result<i64, ResponseError>;
    /// Every offset below this is durable.
    fn durable_end(&self) -> i64;
    /// Resolves once every offset below `end` is durable.
    fn wait_durable(&self, end: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The topic's `max.message.bytes`, which bounds how far a stored batch may decompress.
    fn max_message_bytes(&self) -> u32;
}

impl CoordinatorLog for Partition {
    fn name(&self) -> (String, i32) {
        (self.topic.clone(), self.index)
    }

    fn log_start_offset(&self) -> i64 {
        Partition::log_start_offset(self)
    }

    fn high_watermark(&self) -> i64 {
        Partition::high_watermark(self)
    }

    fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<(Bytes, i64)>, String> {
        let r = Partition::read(self, offset, max_bytes, true).map_err(|e| e.to_string())?;
        Ok((!r.is_empty()).then_some((r.records, r.last_offset)))
    }

    fn append(&self, batch: &mut [u8]) -> Result<i64, ResponseError> {
        let headers = strom_log::validate_batches(batch, u32::MAX).map_err(|e| crate::errors::log_error_code(&e))?;
        // Kafka's AppendOrigin.COORDINATOR: a transactional offset commit carries its producer's id and epoch, which
        // are checked, but no sequence.
        let info = self.append_coordinator(batch, headers).map_err(|e| crate::errors::log_error_code(&e))?;
        Ok(info.last_offset + 1)
    }

    fn durable_end(&self) -> i64 {
        self.flushed_offset()
    }

    fn wait_durable(&self, end: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Partition::wait_durable(self, end))
    }

    fn max_message_bytes(&self) -> u32 {
        self.config().log.max_message_bytes
    }
}

/// Reads the whole partition in log order, each batch decompressed within its bound. Blocking.
fn read_log(log: &dyn CoordinatorLog) -> Result<Vec<CoordinatorRecord>, String> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.high_watermark();
    let max_message_bytes = log.max_message_bytes();
    while offset < end {
        let Some((bytes, last_offset)) = log.read(offset, 1 << 20)? else { break };
        let headers = strom_log::validate_batches(&bytes, u32::MAX).map_err(|e| e.to_string())?;
        let mut at = 0usize;
        for h in headers {
            let size = h.total_size();
            let batch = bytes.get(at..at + size).ok_or("batch past the end of the read")?;
            at += size;
            let limit = strom_log::decompressed_limit(
                h.record_count,
                max_message_bytes.max(u32::try_from(size).unwrap_or(u32::MAX)),
            );
            for rec in strom_log::keyed_records(batch, &h, limit).map_err(|e| e.to_string())? {
                if rec.offset < offset {
                    continue;
                }
                if h.is_control() {
                    // EndTransactionMarker key: version (i16), type (i16: 0 abort, 1 commit).
                    let kind = rec.key.as_deref().and_then(|k| k.get(2..4)).map(|t| i16::from_be_bytes([t[0], t[1]]));
                    let result = match kind {
                        Some(0) => TransactionResult::Abort,
                        Some(1) => TransactionResult::Commit,
                        _ => continue,
                    };
                    out.push(CoordinatorRecord::Marker { producer_id: h.producer_id, result });
                    continue;
                }
                let Some(key) = rec.key else { continue };
                let (key, value) = (Bytes::from(key), rec.value.map(Bytes::from));
                out.push(if h.is_transactional() {
                    CoordinatorRecord::Transactional { producer_id: h.producer_id, key, value }
                } else {
                    CoordinatorRecord::Record { key, value }
                });
            }
        }
        offset = last_offset + 1;
    }
    Ok(out)
}

/// One batch of records; with a producer (id, epoch) a transactional batch of that producer.
pub fn encode_batch(
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
    now: i64,
) -> Result<Vec<u8>, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: kafka-protocol splits batches where offset - sequence changes.
            sequence: i as i32,
            timestamp: now,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

/// Appends the records as one uncompressed batch (a transactional batch of `producer` if given); the offset after
/// it. Blocking.
pub fn append(
    log: &dyn CoordinatorLog,
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<i64, ResponseError> {
    let mut buf = encode_batch(records, producer, now_ms()).map_err(|e| {
        tracing::error!(error = %e, "cannot encode coordinator records");
        ResponseError::UnknownServerError
    })?;
    log.append(&mut buf)
}

/// One log line per interval for a repeated failure, with how many were not logged since the last one.
#[derive(Default)]
pub struct LogLimiter {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Some(failures not logged since the last line) when this one is to be logged.
    pub fn admit(&mut self, now: std::time::Instant, interval: Duration) -> Option<u64> {
        if self.last.is_some_and(|l| now.duration_since(l) < interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A write appended and waiting to be durable.
struct InFlight<S> {
    end: i64,
    records: Vec<CoordinatorRecord>,
    completions: Vec<Completion<S>>,
}

/// The queues of one running shard.
pub struct ShardRef<R> {
    requests: mpsc::Sender<R>,
    internal: mpsc::UnboundedSender<R>,
    /// The partition has been loaded.
    pub loaded: bool,
    /// This call started the shard (it loads now).
    pub started: bool,
}

impl<R> ShardRef<R> {
    /// Queues a request, waiting for room while the queue is full. Err: the shard stopped (NOT_COORDINATOR).
    pub async fn send(&self, r: R) -> Result<(), ResponseError> {
        self.requests.send(r).await.map_err(|_| ResponseError::NotCoordinator)
    }

    /// Queues one of the broker's own events (not a client's request): never waits.
    pub fn send_internal(&self, r: R) -> Result<(), ResponseError> {
        self.internal.send(r).map_err(|_| ResponseError::NotCoordinator)
    }
}

struct ShardHandle<R> {
    requests: mpsc::Sender<R>,
    internal: mpsc::UnboundedSender<R>,
    /// The log the shard was loaded from (its address): another one means the partition was re-created.
    log_id: usize,
    loaded: Arc<AtomicBool>,
    /// Dropped to stop the shard.
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Routes requests to the shards of one coordinator's internal topic and runs them (Kafka's CoordinatorRuntime).
pub struct CoordinatorRuntime<S: CoordinatorShard> {
    shards: Mutex<HashMap<i32, ShardHandle<S::Request>>>,
    queue_capacity: usize,
}

impl<S: CoordinatorShard> Default for CoordinatorRuntime<S> {
    fn default() -> Self {
        CoordinatorRuntime::new(REQUEST_QUEUE_CAPACITY)
    }
}

fn log_id(log: &Arc<dyn CoordinatorLog>) -> usize {
    Arc::as_ptr(log) as *const () as usize
}

impl<S: CoordinatorShard> CoordinatorRuntime<S> {
    pub fn new(queue_capacity: usize) -> Self {
        CoordinatorRuntime { shards: Mutex::new(HashMap::new()), queue_capacity: queue_capacity.max(1) }
    }

    /// The shard of partition `p`, started (and loading) if it is not running on `log`. `log` is the partition
    /// as this broker hosts it now: None stops a running shard (NOT_COORDINATOR), another one than the shard was
    /// loaded from replaces it (the partition was deleted and created again: the old state goes with its records).
    /// `make` builds the shard's empty state, given the sender of its own events.
    pub fn shard(
        &self,
        p: i32,
        log: Option<Arc<dyn CoordinatorLog>>,
        make: impl FnOnce(mpsc::WeakUnboundedSender<S::Request>) -> S,
    ) -> Result<ShardRef<S::Request>, ResponseError> {
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = shards.get(&p) {
            if !h.requests.is_closed() && log.as_ref().is_some_and(|l| log_id(l) == h.log_id) {
                return Ok(ShardRef {
                    requests: h.requests.clone(),
                    internal: h.internal.clone(),
                    loaded: h.loaded.load(Ordering::Acquire),
                    started: false,
                });
            }
        }
        // Dropping the old handle stops the old shard.
        shards.remove(&p);
        let log = log.ok_or(ResponseError::NotCoordinator)?;
        let (requests, rx) = mpsc::channel(self.queue_capacity);
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = oneshot::channel();
        let loaded = Arc::new(AtomicBool::new(false));
        let shard = make(internal.downgrade());
        let id = log_id(&log);
        let task = tokio::spawn(run(
            shard,
            log,
            Queues { rx, internal_rx, internal: internal.clone(), stop: stop_rx },
            loaded.clone(),
        ));
        shards.insert(
            p,
            ShardHandle {
                requests: requests.clone(),
                internal: internal.clone(),
                log_id: id,
                loaded,
                _stop: stop,
                task,
            },
        );
        Ok(ShardRef { requests, internal, loaded: false, started: true })
    }

    /// Unloads partition `p` (this broker resigns as its coordinator): the shard stops, requests still queued or
    /// waiting for a write are dropped (their callers get NOT_COORDINATOR), and its state is gone; loading the
    /// partition again rebuilds it from the log. The task's handle, to wait for it to end.
    pub fn unload(&self, p: i32) -> Option<tokio::task::JoinHandle<()>> {
        let h = self.shards.lock().unwrap_or_else(|e| e.into_inner()).remove(&p)?;
        Some(h.task)
    }

    /// Sends one of the broker's own events to every running shard.
    pub fn send_internal_to_all(&self, make: impl Fn() -> S::Request) {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        for h in shards.values() {
            let _ = h.internal.send(make());
        }
    }
}

struct Queues<R> {
    rx: mpsc::Receiver<R>,
    internal_rx: mpsc::UnboundedReceiver<R>,
    /// Kept so the own-events queue never closes while the shard runs.
    #[allow(dead_code)]
    internal: mpsc::UnboundedSender<R>,
    stop: oneshot::Receiver<()>,
}

/// The shard's task: load, then serve requests, own events and timers until stopped.
async fn run<S: CoordinatorShard>(
    mut shard: S,
    log: Arc<dyn CoordinatorLog>,
    mut q: Queues<S::Request>,
    loaded: Arc<AtomicBool>,
) {
    let (topic, partition) = log.name();
    let started = std::time::Instant::now();
    let l = log.clone();
    let load = tokio::task::spawn_blocking(move || read_log(&*l));
    let records = tokio::select! {
        _ = &mut q.stop => return,
        r = load => r,
    };
    match records {
        Ok(Ok(records)) => {
            let n = records.len();
            for r in records {
                shard.replay(r);
            }
            let mut writes = Writes::default();
            shard.on_loaded(&mut writes);
            loaded.store(true, Ordering::Release);
            tracing::info!(
                topic = %topic,
                partition,
                records = n,
                state = %shard.loaded_summary(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "coordinator shard loaded"
            );
            let mut runner = Runner { log, in_flight: VecDeque::new(), write_failures: LogLimiter::default() };
            runner.write(&mut shard, writes).await;
            runner.serve(shard, q).await;
        }
        Ok(Err(e)) => {
            // Serving from a partial state would hand out state that is not the committed one.
            tracing::error!(topic = %topic, partition, error = %e, "cannot load coordinator partition; shard stays down");
        }
        Err(e) => tracing::error!(topic = %topic, partition, error = %e, "coordinator load task failed"),
    }
}

struct Runner<S> {
    log: Arc<dyn CoordinatorLog>,
    in_flight: VecDeque<InFlight<S>>,
    write_failures: LogLimiter,
}

impl<S: CoordinatorShard> Runner<S> {
    async fn serve(&mut self, mut shard: S, mut q: Queues<S::Request>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let deadline = shard.next_deadline();
            let durable_wait = self.in_flight.front().map(|f| f.end);
            tokio::select! {
                biased;
                _ = &mut q.stop => break,
                r = q.internal_rx.recv() => if let Some(r) = r { batch.push(r) },
                _ = async {
                    match durable_wait {
                        Some(end) => self.log.wait_durable(end).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                r = q.rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => break,
                },
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            while batch.len() < MAX_BATCH {
                match q.internal_rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            while batch.len() < MAX_BATCH {
                match q.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let mut writes = Writes::default();
            // What is durable now is applied before the requests are handled, so they see it (a transaction's
            // marker on this partition settles offsets written before it).
            self.complete_durable(&mut shard, &mut writes);
            for r in batch.drain(..) {
                shard.handle(r, &mut writes);
            }
            let now = Instant::now();
            if shard.next_deadline().is_some_and(|d| d <= now) {
                shard.on_timers(now, &mut writes);
            }
            self.write(&mut shard, writes).await;
        }
        shard.on_unloaded();
    }

    /// Applies the writes that are durable, in log order, and runs their completions.
    fn complete_durable(&mut self, shard: &mut S, writes: &mut Writes<S>) {
        let durable = self.log.durable_end();
        while self.in_flight.front().is_some_and(|f| f.end <= durable) {
            let Some(f) = self.in_flight.pop_front() else { break };
            shard.on_committed(&f.records);
            for c in f.completions {
                c(shard, Ok(()), writes);
            }
        }
    }

    /// Writes what a turn produced: the plain records as one batch, each producer's transactional records as a
    /// batch of its own. Completions of a failed append run now with its error; the others once durable.
    /// Completions may produce more to write (a transaction's next step): written in turn.
    async fn write(&mut self, shard: &mut S, mut writes: Writes<S>) {
        while !writes.is_empty() {
            let Writes { records, txn_records, completions, txn_completions } = std::mem::take(&mut writes);
            if records.is_empty() && txn_records.is_empty() {
                if self.in_flight.is_empty() {
                    for c in completions.into_iter().chain(txn_completions.into_iter().map(|(_, f)| f)) {
                        c(shard, Ok(()), &mut writes);
                    }
                } else {
                    // After the writes before them, so that what they answer is applied first.
                    let end = self.in_flight.back().map_or(0, |f| f.end);
                    let completions = completions.into_iter().chain(txn_completions.into_iter().map(|(_, f)| f));
                    self.in_flight.push_back(InFlight { end, records: Vec::new(), completions: completions.collect() });
                }
                continue;
            }
            let log = self.log.clone();
            let groups = by_producer(txn_records);
            let appended = tokio::task::spawn_blocking(move || {
                let plain = (!records.is_empty()).then(|| (append(&*log, &records, None), records));
                let txns: Vec<ProducerAppend> = groups
                    .into_iter()
                    .map(|g| {
                        let result = append(&*log, &g.records, Some(g.producer));
                        (g.producer.0, g.records, result)
                    })
                    .collect();
                (plain, txns)
            })
            .await;
            let (plain, txns) = match appended {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "coordinator append task failed");
                    for c in completions.into_iter().chain(txn_completions.into_iter().map(|(_, f)| f)) {
                        c(shard, Err(ResponseError::UnknownServerError), &mut writes);
                    }
                    continue;
                }
            };
            let mut end = None;
            let mut committed = Vec::new();
            let mut durable: Vec<Completion<S>> = Vec::new();
            let mut failed: Vec<(Completion<S>, ResponseError)> = Vec::new();
            match plain {
                Some((Err(e), _)) => {
                    if let Some(suppressed) =
                        self.write_failures.admit(std::time::Instant::now(), WRITE_FAILURE_LOG_INTERVAL)
                    {
                        let (topic, partition) = self.log.name();
                        tracing::error!(topic = %topic, partition, error = ?e, suppressed, "writing coordinator records failed (suppressed: further failures since the last line)");
                    }
                    failed.extend(completions.into_iter().map(|c| (c, e)));
                }
                Some((Ok(e), records)) => {
                    end = Some(e);
                    committed.extend(records.into_iter().map(|(key, value)| CoordinatorRecord::Record { key, value }));
                    durable.extend(completions);
                }
                None => durable.extend(completions),
            }
            let mut txn_errors: HashMap<i64, ResponseError> = HashMap::new();
            for (producer_id, records, result) in txns {
                match result {
                    Ok(e) => {
                        end = end.max(Some(e));
                        committed.extend(records.into_iter().map(|(key, value)| CoordinatorRecord::Transactional {
                            producer_id,
                            key,
                            value,
                        }));
                    }
                    Err(e) => {
                        tracing::debug!(producer_id, error = ?e, "transactional coordinator records not written");
                        txn_errors.insert(producer_id, e);
                    }
                }
            }
            for (producer_id, c) in txn_completions {
                match txn_errors.get(&producer_id) {
                    Some(e) => failed.push((c, *e)),
                    None => durable.push(c),
                }
            }
            for (c, e) in failed {
                c(shard, Err(e), &mut writes);
            }
            let end = end.unwrap_or_else(|| self.in_flight.back().map_or(0, |f| f.end));
            self.in_flight.push_back(InFlight { end, records: committed, completions: durable });
        }
    }
}

/// One producer's transactional records as appended: (producer id, records, the append's end offset or error).
type ProducerAppend = (i64, Vec<(Bytes, Option<Bytes>)>, Result<i64, ResponseError>);

/// One producer's transactional records of a write.
struct ProducerRecords {
    producer: (i64, i16),
    records: Vec<(Bytes, Option<Bytes>)>,
}

fn by_producer(txn_records: Vec<TxnRecord>) -> Vec<ProducerRecords> {
    let mut out: Vec<ProducerRecords> = Vec::new();
    for r in txn_records {
        let producer = (r.producer_id, r.producer_epoch);
        match out.iter_mut().find(|g| g.producer == producer) {
            Some(g) => g.records.push((r.key, r.value)),
            None => out.push(ProducerRecords { producer, records: vec![(r.key, r.value)] }),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod testlog {
    //! A log in memory whose appends can be made to fail and whose durability is held until released.
    use super::*;

    pub struct MemLog {
        batches: Mutex<Vec<(i64, Bytes)>>,
        end: Mutex<i64>,
        /// The next appends fail with this error.
        pub fail: Mutex<Option<ResponseError>>,
        /// While set, appends stay un-durable until `release`.
        pub hold: AtomicBool,
        /// Appends block while this is true (a slow disk): `close_gate`, `open_gate`.
        gate: (Mutex<bool>, std::sync::Condvar),
        durable: tokio::sync::watch::Sender<i64>,
        pub appends: std::sync::atomic::AtomicUsize,
    }

    impl Default for MemLog {
        fn default() -> Self {
            MemLog {
                batches: Mutex::new(Vec::new()),
                end: Mutex::new(0),
                fail: Mutex::new(None),
                hold: AtomicBool::new(false),
                gate: (Mutex::new(false), std::sync::Condvar::new()),
                durable: tokio::sync::watch::Sender::new(0),
                appends: Default::default(),
            }
        }
    }

    impl MemLog {
        /// Makes everything appended so far durable.
        pub fn release(&self) {
            let end = *self.end.lock().unwrap();
            self.durable.send_replace(end);
        }

        pub fn close_gate(&self) {
            *self.gate.0.lock().unwrap() = true;
        }

        pub fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = false;
            self.gate.1.notify_all();
        }
    }

    impl CoordinatorLog for MemLog {
        fn name(&self) -> (String, i32) {
            ("mem".into(), 0)
        }
        fn log_start_offset(&self) -> i64 {
            0
        }
        fn high_watermark(&self) -> i64 {
            *self.end.lock().unwrap()
        }
        fn read(&self, offset: i64, _max_bytes: usize) -> Result<Option<(Bytes, i64)>, String> {
            let batches = self.batches.lock().unwrap();
            let Some((base, bytes)) = batches.iter().find(|(base, b)| {
                let h = strom_log::BatchHeader::parse(b).unwrap();
                *base <= offset && offset <= h.last_offset()
            }) else {
                return Ok(None);
            };
            let _ = base;
            let h = strom_log::BatchHeader::parse(bytes).unwrap();
            Ok(Some((bytes.clone(), h.last_offset())))
        }
        fn append(&self, batch: &mut [u8]) -> Result<i64, ResponseError> {
            self.appends.fetch_add(1, Ordering::SeqCst);
            let mut closed = self.gate.0.lock().unwrap();
            while *closed {
                closed = self.gate.1.wait(closed).unwrap();
            }
            drop(closed);
            if let Some(e) = *self.fail.lock().unwrap() {
                return Err(e);
            }
            let mut end = self.end.lock().unwrap();
            batch[0..8].copy_from_slice(&end.to_be_bytes());
            let h = strom_log::BatchHeader::parse(batch).unwrap();
            let base = *end;
            *end = h.last_offset() + 1;
            self.batches.lock().unwrap().push((base, Bytes::copy_from_slice(batch)));
            if !self.hold.load(Ordering::SeqCst) {
                self.durable.send_replace(*end);
            }
            Ok(*end)
        }
        fn durable_end(&self) -> i64 {
            *self.durable.borrow()
        }
        fn wait_durable(&self, end: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            let mut rx = self.durable.subscribe();
            Box::pin(async move {
                let _ = rx.wait_for(|d| *d >= end).await;
            })
        }
        fn max_message_bytes(&self) -> u32 {
            1 << 20
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testlog::MemLog;
    use super::*;

    /// A key-value state machine: Put writes a record and is applied when it is committed; Get reads.
    #[derive(Default)]
    struct Kv {
        map: HashMap<Bytes, Bytes>,
    }

    enum KvRequest {
        Put(Bytes, Bytes, oneshot::Sender<Result<(), ResponseError>>),
        Get(Bytes, oneshot::Sender<Option<Bytes>>),
    }

    impl CoordinatorShard for Kv {
        type Request = KvRequest;
        fn replay(&mut self, record: CoordinatorRecord) {
            if let CoordinatorRecord::Record { key, value: Some(v) } = record {
                self.map.insert(key, v);
            }
        }
        fn on_loaded(&mut self, _: &mut Writes<Self>) {}
        fn handle(&mut self, r: KvRequest, w: &mut Writes<Self>) {
            match r {
                KvRequest::Put(k, v, tx) => {
                    w.append_record(k, Some(v));
                    w.reply(tx, Ok(()), |_, e| Err(e));
                }
                KvRequest::Get(k, tx) => {
                    let _ = tx.send(self.map.get(&k).cloned());
                }
            }
        }
        fn next_deadline(&self) -> Option<Instant> {
            None
        }
        fn on_timers(&mut self, _: Instant, _: &mut Writes<Self>) {}
        fn on_committed(&mut self, records: &[CoordinatorRecord]) {
            for r in records {
                self.replay(r.clone());
            }
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Many callers of one shard whose writes are stuck (a slow disk): the queue holds at most its bound, the rest
    /// of the callers wait to be queued (nothing more is allocated for them), and all are served once it moves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_makes_callers_wait() {
        const BOUND: usize = 8;
        let runtime: CoordinatorRuntime<Kv> = CoordinatorRuntime::new(BOUND);
        let log = Arc::new(MemLog::default());
        let dyn_log: Arc<dyn CoordinatorLog> = log.clone();
        let shard = runtime.shard(0, Some(dyn_log.clone()), |_| Kv::default()).unwrap();
        // Hold the disk: the first write blocks the shard in its append.
        log.close_gate();
        let (tx, first) = oneshot::channel();
        shard.send(KvRequest::Put(b("k"), b("v0"), tx)).await.unwrap();
        while log.appends.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
            std::thread::yield_now();
        }
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut callers = Vec::new();
        for i in 0..BOUND * 4 {
            let requests = shard.requests.clone();
            let queued = queued.clone();
            callers.push(tokio::spawn(async move {
                let (tx, rx) = oneshot::channel();
                requests.send(KvRequest::Put(b("k"), b(&format!("v{}", i + 1)), tx)).await.unwrap();
                queued.fetch_add(1, Ordering::SeqCst);
                rx.await.unwrap()
            }));
        }
        while shard.requests.capacity() > 0 || queued.load(Ordering::SeqCst) < BOUND {
            tokio::task::yield_now().await;
        }
        assert_eq!(queued.load(Ordering::SeqCst), BOUND, "only the bound's worth of requests is queued");
        assert_eq!(callers.iter().filter(|c| c.is_finished()).count(), 0, "the other callers wait");
        log.open_gate();
        assert_eq!(first.await.unwrap(), Ok(()));
        for c in callers {
            assert_eq!(c.await.unwrap(), Ok(()));
        }
        assert_eq!(queued.load(Ordering::SeqCst), BOUND * 4);
    }

    /// Unload stops the shard; loading the partition again rebuilds the same state from the log.
    #[tokio::test]
    async fn unload_then_load_rebuilds_the_state() {
        let runtime: CoordinatorRuntime<Kv> = CoordinatorRuntime::default();
        let log: Arc<dyn CoordinatorLog> = Arc::new(MemLog::default());
        let shard = runtime.shard(0, Some(log.clone()), |_| Kv::default()).unwrap();
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let (tx, rx) = oneshot::channel();
            shard.send(KvRequest::Put(b(k), b(v), tx)).await.unwrap();
            assert_eq!(rx.await.unwrap(), Ok(()));
        }
        runtime.unload(0).unwrap().await.unwrap();
        let (tx, rx) = oneshot::channel();
        assert!(shard.send(KvRequest::Get(b("a"), tx)).await.is_err(), "an unloaded shard serves nothing");
        drop(rx);
        let shard = runtime.shard(0, Some(log), |_| Kv::default()).unwrap();
        assert!(shard.started);
        for (k, v) in [("a", Some(b("3"))), ("b", Some(b("2"))), ("c", None)] {
            let (tx, rx) = oneshot::channel();
            shard.send(KvRequest::Get(b(k), tx)).await.unwrap();
            assert_eq!(rx.await.unwrap(), v);
        }
    }

    #[test]
    fn a_repeated_failure_is_logged_once_per_interval_with_a_count() {
        let mut l = LogLimiter::default();
        let t0 = std::time::Instant::now();
        let interval = Duration::from_secs(10);
        assert_eq!(l.admit(t0, interval), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1), interval), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(2), interval), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(10), interval), Some(2));
        assert_eq!(l.admit(t0 + Duration::from_secs(11), interval), None);
    }

    #[test]
    fn partition_for_matches_kafka() {
        // Java: "my-group".hashCode() = -1906497762 → 1906497762 % 50 = 12.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        // Negative hash codes use the absolute value: "polygenelubricants".hashCode() == Integer.MIN_VALUE → 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert!(partition_for("группа", 7) < 7);
    }
}
