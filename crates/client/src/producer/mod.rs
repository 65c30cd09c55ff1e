//! The producer: `send` picks a partition and appends to the accumulator (waiting for `buffer.memory` when it is
//! full); a background sender batches records to the partition leaders. Idempotence is on by default, as in Java
//! (see `transaction_manager`): up to `max.in.flight.requests.per.connection` (at most 5) batches per partition are
//! in flight, retries are deduplicated by the broker and keep their order. Without it, retries may reorder or
//! duplicate records when more than one request is in flight. With `transactional.id` the producer is
//! transactional: `init_transactions`, then `begin_transaction` / `send` / `send_offsets_to_transaction` /
//! `commit_transaction` or `abort_transaction`.

mod accumulator;
mod sender;
mod transaction_manager;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::batch::{estimate_size, BATCH_OVERHEAD};
use crate::cluster::Cluster;
use crate::config::{PartitionerKind, ProducerConfig};
use crate::error::{Error, Result};
use crate::group::offsets::OffsetAndMetadata;
use crate::group::ConsumerGroupMetadata;
use crate::partitioner::{DefaultPartitioner, Partitioner, RoundRobinPartitioner};
use crate::record::{ProducerRecord, RecordMetadata, TopicPartition};
use accumulator::{Accumulator, PendingRecord};
use sender::Sender;
use transaction_manager::TransactionManager;
pub use transaction_manager::TransactionState;

/// Resolves when the broker acknowledged the record (or the producer gave up on it).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

struct Inner {
    config: Arc<ProducerConfig>,
    cluster: Arc<Cluster>,
    acc: Arc<Accumulator>,
    partitioner: Arc<dyn Partitioner>,
    /// Set when the producer is idempotent (and so when it is transactional).
    txn: Option<Arc<TransactionManager>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender finishes what was appended, then exits.
        self.acc.close();
    }
}

/// A cheaply cloneable handle; the background sender stops when the last handle is dropped or `close` is called.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// Connects to a bootstrap server (to fail early when none answers) and starts the sender.
    pub async fn new(config: ProducerConfig) -> Result<Producer> {
        let partitioner: Arc<dyn Partitioner> = match config.partitioner {
            PartitionerKind::Default => Arc::new(DefaultPartitioner::default()),
            PartitionerKind::RoundRobin => Arc::new(RoundRobinPartitioner::default()),
        };
        Self::with_partitioner(config, partitioner).await
    }

    /// Like `new`, with a custom partitioner for records sent without a partition.
    pub async fn with_partitioner(config: ProducerConfig, partitioner: Arc<dyn Partitioner>) -> Result<Producer> {
        if !matches!(config.acks, -1..=1) {
            return Err(Error::Config(format!("acks={} (use 0, 1 or -1)", config.acks)));
        }
        let idempotent = config.idempotence()?;
        let cluster = Cluster::new(config.client.clone())?;
        cluster.fetch_metadata(Some(&[]), false).await?;
        let txn = match (&config.transactional_id, idempotent) {
            // InitProducerId waits for init_transactions, which also finds the coordinator.
            (Some(id), _) => Some(Arc::new(TransactionManager::transactional(
                cluster.clone(),
                id.clone(),
                config.transaction_timeout,
                config.max_block,
            ))),
            (None, true) => Some(Arc::new(TransactionManager::idempotent(cluster.clone(), config.max_block).await?)),
            (None, false) => None,
        };
        // Without idempotence more than one batch in flight may reorder retries, as in Java; with it, sequence
        // numbers keep up to 5 in order.
        let per_partition =
            if txn.is_some() { config.client.max_in_flight.min(5) } else { config.client.max_in_flight };
        let acc = Arc::new(Accumulator::new(config.buffer_memory, config.batch_size, config.linger, per_partition));
        let config = Arc::new(config);
        let sender = Sender::new(acc.clone(), cluster.clone(), config.clone(), txn.clone());
        tokio::spawn(sender.run());
        Ok(Producer { inner: Arc::new(Inner { config, cluster, acc, partitioner, txn }) })
    }

    /// Queues a record: returns once it is in the accumulator (after waiting up to `max.block.ms` for metadata and
    /// buffer space), with a future that resolves to its partition and offset when the broker acknowledges it.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &*self.inner;
        if inner.acc.is_closed() {
            return Err(Error::Closed);
        }
        let start = Instant::now();
        let config = &inner.config;
        let size = estimate_size(record.key.as_deref(), record.value.as_deref(), &record.headers);
        if size + BATCH_OVERHEAD > config.max_request_size {
            return Err(Error::RecordTooLarge { size, limit: config.max_request_size, setting: "max.request.size" });
        }
        if size > config.buffer_memory {
            return Err(Error::RecordTooLarge { size, limit: config.buffer_memory, setting: "buffer.memory" });
        }
        let topic = inner.cluster.topic(&record.topic, config.allow_auto_create_topics, config.max_block).await?;
        let count = topic.partitions.len() as i32;
        if count == 0 {
            return Err(Error::UnknownTopic(record.topic));
        }
        let partition = match record.partition {
            Some(p) if p < 0 || p >= count => return Err(Error::UnknownPartition(record.topic, p)),
            Some(p) => p,
            None => inner.partitioner.partition(&record.topic, record.key.as_deref(), count),
        };
        if let Some(txn) = &inner.txn {
            txn.check_send()?;
            // A transaction's partitions are added before the first record to each is appended (so never sent
            // before the coordinator knows them).
            txn.maybe_add_partition(&TopicPartition { topic: record.topic.clone(), partition }).await?;
        }
        inner.acc.reserve(size, config.max_block.saturating_sub(start.elapsed())).await?;
        let (tx, rx) = oneshot::channel();
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        let pending = PendingRecord { key: record.key, value: record.value, headers: record.headers, timestamp, tx };
        let appended = inner.acc.append(TopicPartition { topic: record.topic, partition }, pending, size);
        if appended.rolled_over && record.partition.is_none() {
            inner.partitioner.on_new_batch(&topic.name, partition, count);
        }
        inner.acc.wake.notify_one();
        Ok(DeliveryFuture { rx })
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends everything queued now (ignoring `linger.ms`) and waits until every record sent so far completed.
    pub async fn flush(&self) {
        self.inner.acc.begin_flush();
        self.inner.acc.wait_drained().await;
        self.inner.acc.end_flush();
    }

    /// Flushes, then stops the sender; later sends fail with `Error::Closed`.
    pub async fn close(&self) {
        self.flush().await;
        self.inner.acc.close();
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The producer id from InitProducerId when the producer is idempotent (-1 for a transactional producer before
    /// `init_transactions`).
    pub fn producer_id(&self) -> Option<i64> {
        self.inner.txn.as_ref().map(|t| t.producer_id())
    }

    /// The producer epoch from InitProducerId when the producer is idempotent.
    pub fn producer_epoch(&self) -> Option<i16> {
        self.inner.txn.as_ref().map(|t| t.producer_epoch())
    }

    fn transactions(&self) -> Result<&TransactionManager> {
        match &self.inner.txn {
            Some(t) if t.is_transactional() => Ok(t),
            _ => Err(Error::TransactionState("the producer has no transactional.id".into())),
        }
    }

    /// The transaction state (Java's TransactionManager.State); `None` without `transactional.id`.
    pub fn transaction_state(&self) -> Option<TransactionState> {
        self.transactions().ok().map(|t| t.state())
    }

    /// Registers the transactional.id with its coordinator (FindCoordinator, InitProducerId): fences any earlier
    /// producer with the same id and completes (commits or aborts) its open transaction. Call once, before the first
    /// transaction; after a timeout it may be called again.
    pub async fn init_transactions(&self) -> Result<()> {
        self.transactions()?.init_transactions().await
    }

    /// Starts a transaction: records sent from now on are committed or aborted together.
    pub fn begin_transaction(&self) -> Result<()> {
        self.transactions()?.begin_transaction()
    }

    /// Adds a consumer group's offsets to the transaction (AddOffsetsToTxn, then TxnOffsetCommit to the group
    /// coordinator): they become the group's committed offsets only if the transaction commits. Offsets are the next
    /// record to read, as in `Consumer::commit_offsets`.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        self.transactions()?.send_offsets_to_transaction(offsets, group).await
    }

    /// Flushes the transaction's records, then commits it (EndTxn). When a record failed, the transaction is in
    /// ABORTABLE_ERROR and this returns that error: call `abort_transaction`. A fencing error is fatal.
    pub async fn commit_transaction(&self) -> Result<()> {
        let txn = self.transactions()?;
        txn.begin_commit()?;
        self.flush().await;
        txn.end_transaction(true).await
    }

    /// Aborts the transaction: records not sent yet are dropped (their futures fail with
    /// `Error::TransactionAborted`), those in flight complete, then the coordinator writes the abort markers.
    pub async fn abort_transaction(&self) -> Result<()> {
        let txn = self.transactions()?;
        txn.begin_abort()?;
        for b in self.inner.acc.take_queued() {
            if b.stamp.is_some() {
                txn.dropped_stamped_batch();
            }
            b.fail(&Error::TransactionAborted);
        }
        self.flush().await;
        txn.end_transaction(false).await
    }

    /// Number of partitions of `topic` (from the metadata cache, fetched if needed).
    pub async fn partition_count(&self, topic: &str) -> Result<usize> {
        let c = &self.inner.config;
        Ok(self.inner.cluster.topic(topic, c.allow_auto_create_topics, c.max_block).await?.partitions.len())
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
