//! The producer: `send` picks a partition and appends to the accumulator (waiting for `buffer.memory` when it is
//! full); a background sender batches records to the partition leaders. Idempotence is on by default, as in Java
//! (see `idempotence`): retries are deduplicated by the broker and keep their order. Without it, retries may reorder
//! or duplicate records when more than one request is in flight.

mod accumulator;
mod idempotence;
mod sender;

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
use crate::partitioner::{DefaultPartitioner, Partitioner, RoundRobinPartitioner};
use crate::record::{ProducerRecord, RecordMetadata, TopicPartition};
use accumulator::{Accumulator, PendingRecord};
use idempotence::Idempotence;
use sender::Sender;

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
    idem: Option<Arc<Idempotence>>,
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
        let idem = if idempotent {
            Some(Arc::new(Idempotence::init(&cluster, config.max_block, config.client.retry_backoff).await?))
        } else {
            None
        };
        let acc = Arc::new(Accumulator::new(config.buffer_memory, config.batch_size, config.linger));
        let config = Arc::new(config);
        let sender = Sender::new(acc.clone(), cluster.clone(), config.clone(), idem.clone());
        tokio::spawn(sender.run());
        Ok(Producer { inner: Arc::new(Inner { config, cluster, acc, partitioner, idem }) })
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

    /// The producer id from InitProducerId when the producer is idempotent.
    pub fn producer_id(&self) -> Option<i64> {
        self.inner.idem.as_ref().map(|i| i.producer_id())
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
