//! A partition this broker hosts: its log plus the state Kafka keeps per partition (log start offset, high
//! watermark, log end offset, leader epoch), the group-commit flusher, and the notifications fetch waiters use.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use strom_log::{AbortedTxn, AppendInfo, BatchHeader, EndTxnMarker, Log, LogError, ReadResult};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::TopicConfig;

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    log: Log,
    leader_epoch: AtomicI32,
    config: RwLock<TopicConfig>,
    /// Log end offset after each append; fetch long-polls wait on it.
    end_offset: watch::Sender<i64>,
    /// Offset up to which the log is fsynced; acks=all producers wait on it.
    flushed: watch::Sender<i64>,
    flush_wakeup: Notify,
    last_flush_ms: AtomicI64,
    closed: AtomicBool,
}

impl Partition {
    /// Wraps an opened log and starts its flusher task (must be called inside a tokio runtime).
    pub fn start(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Log,
        leader_epoch: i32,
        config: TopicConfig,
    ) -> Arc<Self> {
        let leo = log.log_end_offset();
        let p = Arc::new(Partition {
            topic,
            topic_id,
            index,
            end_offset: watch::Sender::new(leo),
            flushed: watch::Sender::new(log.flushed_offset()),
            log,
            leader_epoch: AtomicI32::new(leader_epoch),
            config: RwLock::new(config),
            flush_wakeup: Notify::new(),
            last_flush_ms: AtomicI64::new(now_ms()),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(Self::run_flusher(p.clone()));
        p
    }

    /// The group-commit loop: every wake-up syncs everything appended so far, so all the acks=all requests that
    /// arrived while the previous fsync ran share the next one.
    async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wakeup.notified().await;
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let p = self.clone();
            let result = tokio::task::spawn_blocking(move || p.log.flush()).await;
            match result {
                Ok(Ok(offset)) => {
                    self.last_flush_ms.store(now_ms(), Ordering::Relaxed);
                    self.flushed.send_if_modified(|f| {
                        let changed = offset > *f;
                        *f = (*f).max(offset);
                        changed
                    });
                }
                Ok(Err(e)) => {
                    // After a failed fsync the kernel may have dropped the dirty pages, so a retry could "succeed"
                    // without the data: Kafka halts when its log directory fails, and so does Strom, rather than
                    // acknowledge writes that are not on disk. Recovery on restart truncates to what is valid.
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "fsync failed; the log directory is unusable, stopping the broker");
                    std::process::exit(1);
                }
                Err(e) => {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e, "flush task failed");
                    return;
                }
            }
        }
    }

    /// Appends a produce request's record set that the caller validated with `validate_batches` (the headers it
    /// returned). Blocking (file write): call from a blocking thread.
    pub fn append(&self, records: &mut [u8], headers: Vec<BatchHeader>) -> Result<AppendInfo, LogError> {
        let info = self.log.append_validated(records, headers, self.leader_epoch(), now_ms(), false)?;
        if info.duplicate {
            // A producer's retry answered from its original offsets: nothing new to announce or flush.
            return Ok(info);
        }
        let leo = info.last_offset + 1;
        self.end_offset.send_replace(leo);
        let flush_messages = self.config.read().map(|c| c.flush_messages).unwrap_or(i64::MAX);
        if leo - self.log.flushed_offset() >= flush_messages {
            self.flush_wakeup.notify_one();
        }
        Ok(info)
    }

    /// Appends a group coordinator's records (Kafka's COORDINATOR origin: a transactional offset commit carries the
    /// producer's id and epoch, which are checked, but no sequence). Blocking (file write).
    pub fn append_coordinator(&self, records: &mut [u8], headers: Vec<BatchHeader>) -> Result<AppendInfo, LogError> {
        let info = self.log.append_from_coordinator(records, headers, self.leader_epoch(), now_ms())?;
        self.end_offset.send_replace(info.last_offset + 1);
        let flush_messages = self.config.read().map(|c| c.flush_messages).unwrap_or(i64::MAX);
        if info.last_offset + 1 - self.log.flushed_offset() >= flush_messages {
            self.flush_wakeup.notify_one();
        }
        Ok(info)
    }

    /// Appends a transaction marker (WriteTxnMarkers) and ends the producer's transaction here; the log end offset
    /// moves, which wakes fetch long-polls, read_committed ones included (the marker may release the LSO).
    /// Blocking (file write).
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
    ) -> Result<AppendInfo, LogError> {
        let info = self.log.append_marker(producer_id, producer_epoch, marker, self.leader_epoch(), now_ms())?;
        self.end_offset.send_replace(info.last_offset + 1);
        Ok(info)
    }

    /// Every offset below this one is on disk.
    pub fn flushed_offset(&self) -> i64 {
        *self.flushed.borrow()
    }

    /// Resolves once every offset below `end_offset` is on disk.
    pub async fn wait_durable(&self, end_offset: i64) {
        let mut rx = self.flushed.subscribe();
        if *rx.borrow() >= end_offset {
            return;
        }
        self.flush_wakeup.notify_one();
        let _ = rx.wait_for(|f| *f >= end_offset).await;
    }

    /// Asks for a background flush when `flush.ms` has elapsed since the last one.
    pub fn maybe_flush_on_time(&self, now: i64) {
        let flush_ms = self.config.read().map(|c| c.flush_ms).unwrap_or(i64::MAX);
        if flush_ms < i64::MAX
            && self.log.log_end_offset() > self.log.flushed_offset()
            && now - self.last_flush_ms.load(Ordering::Relaxed) >= flush_ms
        {
            self.flush_wakeup.notify_one();
        }
    }

    pub fn read(&self, offset: i64, max_bytes: usize, min_one_batch: bool) -> Result<ReadResult, LogError> {
        self.log.read(offset, max_bytes, self.high_watermark(), min_one_batch)
    }

    /// A read_committed read: nothing at or beyond the last stable offset, plus the aborted transactions the
    /// consumer must skip in what it gets (up to Kafka's upper bound, see `Log::fetch_upper_bound`).
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<(ReadResult, Vec<AbortedTxn>), LogError> {
        let r = self.log.read(offset, max_bytes, self.last_stable_offset(), min_one_batch)?;
        if r.is_empty() {
            return Ok((r, Vec::new()));
        }
        let upper = self.log.fetch_upper_bound(offset, r.records.len())?;
        let aborted = self.log.collect_aborted_transactions(offset, upper);
        Ok((r, aborted))
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn subscribe_end_offset(&self) -> watch::Receiver<i64> {
        self.end_offset.subscribe()
    }

    /// On a single replica the high watermark is the log end offset; replication will move it by follower fetches.
    pub fn high_watermark(&self) -> i64 {
        self.log.log_end_offset()
    }

    /// Kafka's LSO: the first offset of the oldest open transaction, or the high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.log.last_stable_offset(self.high_watermark())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn update_config(&self, config: TopicConfig) {
        self.log.update_config(config.log.clone());
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
    }

    /// Stops the flusher; the partition serves nothing afterwards.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush_wakeup.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
