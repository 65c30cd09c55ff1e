//! The background task that moves ready batches from the accumulator to the partition leaders: one Produce
//! request per broker with at most one batch per partition, sent only while that connection has an in-flight slot
//! (so records keep batching while requests are outstanding), retried on retriable errors. An idempotent producer
//! keeps up to 5 batches per partition in flight: a batch answered OUT_OF_ORDER_SEQUENCE_NUMBER because an earlier
//! one is being retried is retried after it (the accumulator resends retries alone and in sequence order).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::accumulator::{Accumulator, Batch};
use super::transaction_manager::{TransactionManager, PRODUCE_V1_MAX};
use crate::batch::{self, RecordView};
use crate::cluster::Cluster;
use crate::config::ProducerConfig;
use crate::error::{Error, Result};
use crate::record::TopicPartition;

pub(crate) struct Sender {
    pub acc: Arc<Accumulator>,
    pub cluster: Arc<Cluster>,
    pub config: Arc<ProducerConfig>,
    /// Set when the producer is idempotent.
    txn: Option<Arc<TransactionManager>>,
    refreshing: AtomicBool,
}

/// OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, DUPLICATE_SEQUENCE_NUMBER.
const OUT_OF_ORDER_SEQUENCE: i16 = 45;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const DUPLICATE_SEQUENCE: i16 = 46;

impl Sender {
    pub fn new(
        acc: Arc<Accumulator>,
        cluster: Arc<Cluster>,
        config: Arc<ProducerConfig>,
        txn: Option<Arc<TransactionManager>>,
    ) -> Arc<Sender> {
        Arc::new(Sender { acc, cluster, config, txn, refreshing: AtomicBool::new(false) })
    }

    /// Fails a batch for good (`in_flight`: it was drained and not yet given back). A stamped one leaves its
    /// partition's sequence in doubt: an idempotent producer restarts it under a bumped epoch and holds the
    /// partition until what is in flight came back; a transactional one must abort (see the transaction manager).
    fn fail(&self, batch: Batch, err: &Error, in_flight: bool) {
        if in_flight {
            self.acc.sent(&batch);
        }
        if let Some(txn) = &self.txn {
            txn.handle_failed_batch(&batch.tp, err, batch.stamp.is_some());
            if batch.stamp.is_some() && !txn.is_transactional() {
                self.acc.stall(&batch.tp);
            }
        }
        batch.fail(err);
    }

    /// A transaction that must be aborted (or a fenced producer) sends nothing more, as Java's sender: queued
    /// records fail with the error that doomed the transaction.
    fn drop_doomed_batches(&self) {
        let Some(txn) = self.txn.as_ref().filter(|t| t.is_transactional()) else { return };
        let Some(err) = txn.doomed() else { return };
        for b in self.acc.take_queued() {
            if b.stamp.is_some() {
                txn.dropped_stamped_batch();
            }
            b.fail(&err);
        }
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            for b in self.acc.expire(now, self.config.delivery_timeout) {
                let err = Error::Timeout(format!("delivery to {}", b.tp), self.config.delivery_timeout);
                self.fail(b, &err, false);
            }
            self.drop_doomed_batches();
            let (ready, mut next) = self.acc.ready(now, |tp| self.txn.as_ref().is_none_or(|t| t.may_pipeline(tp)));
            let mut by_leader: BTreeMap<i32, Vec<TopicPartition>> = BTreeMap::new();
            let mut unknown = Vec::new();
            for tp in ready {
                match self.cluster.leader(&tp.topic, tp.partition) {
                    Some(l) => by_leader.entry(l).or_default().push(tp),
                    None => unknown.push(tp.topic),
                }
            }
            if !unknown.is_empty() {
                self.refresh_metadata(unknown);
                next = Some(earliest(next, now + self.config.client.retry_backoff));
            }
            let mut sent = false;
            for (leader, partitions) in by_leader {
                match self.send_to(leader, &partitions).await {
                    Ok(s) => sent |= s,
                    Err(e) => {
                        tracing::debug!(leader, error = %e, "cannot reach leader; backing off");
                        self.acc.back_off(&partitions, self.config.client.retry_backoff);
                        self.cluster.forget_connection(leader).await;
                        for tp in &partitions {
                            self.cluster.invalidate(&tp.topic);
                        }
                        next = Some(earliest(next, now + self.config.client.retry_backoff));
                    }
                }
            }
            if self.acc.is_closed() && self.acc.is_empty() && self.acc.budget.incomplete.load(Ordering::SeqCst) == 0 {
                return;
            }
            if sent {
                // More batches may be ready for the in-flight slots left (several per partition when idempotent).
                tokio::task::yield_now().await;
                continue;
            }
            // Wake for a new record or response, for the next linger deadline, or at least every second (timeouts).
            let deadline = next.unwrap_or(now + Duration::from_secs(1)).max(now + Duration::from_micros(100));
            tokio::select! {
                _ = self.acc.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    fn refresh_metadata(self: &Arc<Self>, mut topics: Vec<String>) {
        if self.refreshing.swap(true, Ordering::SeqCst) {
            return;
        }
        topics.sort();
        topics.dedup();
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.cluster.fetch_metadata(Some(&topics), me.config.allow_auto_create_topics).await {
                tracing::debug!(error = %e, "metadata refresh failed");
                tokio::time::sleep(me.config.client.retry_backoff).await;
            }
            me.refreshing.store(false, Ordering::SeqCst);
            me.acc.wake.notify_one();
        });
    }

    /// Stamps (first send) or restamps (an epoch bump since) an idempotent producer's batch, and encodes it once.
    fn prepare(&self, b: &mut Batch) -> Result<()> {
        let transactional = self.txn.as_ref().is_some_and(|t| t.is_transactional());
        if b.encoded.is_none() {
            let views: Vec<RecordView<'_>> = b
                .records
                .iter()
                .map(|r| RecordView {
                    timestamp: r.timestamp,
                    key: r.key.as_deref(),
                    value: r.value.as_deref(),
                    headers: &r.headers,
                })
                .collect();
            let stamp = self.txn.as_ref().map(|t| t.next(&b.tp, views.len() as i32));
            b.encoded = Some(batch::encode_batch(
                &views,
                self.config.compression,
                stamp.unwrap_or(batch::ProducerStamp::NONE),
                transactional,
            )?);
            b.stamp = stamp;
        } else if let (Some(txn), Some(old), Some(bytes)) = (&self.txn, b.stamp, &b.encoded) {
            if txn.is_stale(&b.tp, old) {
                let stamp = txn.next(&b.tp, b.records.len() as i32);
                tracing::debug!(tp = %b.tp, ?old, ?stamp, "resending a batch under the new epoch");
                b.encoded = Some(batch::restamp(bytes, stamp));
                b.stamp = Some(stamp);
            }
        }
        if let Some(stamp) = b.stamp {
            self.acc.stamped(&b.tp, stamp);
        }
        Ok(())
    }

    /// Sends one request with the ready batches led by `leader`, if its connection has a free in-flight slot.
    /// Returns whether a request went out.
    async fn send_to(self: &Arc<Self>, leader: i32, partitions: &[TopicPartition]) -> Result<bool> {
        let conn = self.cluster.connection(leader).await?;
        let Some(permit) = conn.try_reserve() else { return Ok(false) };
        // Produce v12+ asks for KIP-890's server-side partition adds: a v1 transaction stays below it (as Java's
        // sender), a v2 one relies on it.
        let version = match &self.txn {
            Some(t) if t.is_transactional() && !t.is_transaction_v2() => {
                conn.version_at_most::<ProduceRequest>(PRODUCE_V1_MAX)?
            }
            _ => conn.version::<ProduceRequest>()?,
        };
        let mut batches = self.acc.drain(partitions, self.config.max_request_size);
        let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut failed = Vec::new();
        for (i, b) in batches.iter_mut().enumerate() {
            if let Err(e) = self.prepare(b) {
                failed.push((i, e));
                continue;
            }
            let bytes = b.encoded.clone().unwrap_or_default();
            if bytes.len() > self.config.max_request_size {
                failed.push((
                    i,
                    Error::RecordTooLarge {
                        size: bytes.len(),
                        limit: self.config.max_request_size,
                        setting: "max.request.size",
                    },
                ));
                continue;
            }
            topics
                .entry(&b.tp.topic)
                .or_default()
                .push(PartitionProduceData::default().with_index(b.tp.partition).with_records(Some(bytes)));
        }
        let req = ProduceRequest::default()
            .with_transactional_id(
                self.config.transactional_id.as_deref().map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
            )
            .with_acks(self.config.acks)
            .with_timeout_ms(self.config.client.request_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_data(parts)
                    })
                    .collect(),
            );
        for (i, e) in failed.into_iter().rev() {
            let b = batches.remove(i);
            self.fail(b, &e, true);
        }
        if batches.is_empty() {
            return Ok(false);
        }
        if self.config.acks == 0 {
            // No response will come: the records count as sent once queued on the connection.
            let sent = conn.send_oneway(&req, version);
            drop(permit);
            self.complete(leader, batches, sent.map(|_| None)).await;
            return Ok(true);
        }
        let response = conn.send(&req, version, Some(permit));
        let me = self.clone();
        tokio::spawn(async move {
            let result = match response {
                Ok(fut) => fut.await.map(Some),
                Err(e) => Err(e),
            };
            me.complete(leader, batches, result).await;
            me.acc.wake.notify_one();
        });
        Ok(true)
    }

    /// Completes, retries or fails each batch of a request from its partition's result.
    async fn complete(&self, leader: i32, batches: Vec<Batch>, result: Result<Option<ProduceResponse>>) {
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if e.needs_metadata_refresh() {
                    self.cluster.forget_connection(leader).await;
                }
                for b in batches {
                    self.retry_or_fail(b, e.clone());
                }
                return;
            }
        };
        let Some(resp) = resp else {
            for b in batches {
                self.acc.sent(&b);
                b.succeed(-1, None);
            }
            return;
        };
        let mut results = HashMap::new();
        for t in &resp.responses {
            for p in &t.partition_responses {
                results.insert((t.name.0.to_string(), p.index), p);
            }
        }
        for b in batches {
            let Some(p) = results.get(&(b.tp.topic.clone(), b.tp.partition)).copied() else {
                let e = Error::Protocol(format!("no result for {} in the produce response", b.tp));
                self.fail(b, &e, true);
                continue;
            };
            match p.error_code {
                0 => {
                    self.acc.sent(&b);
                    if let (Some(txn), Some(stamp)) = (&self.txn, b.stamp) {
                        txn.acked(&b.tp, stamp);
                    }
                    let append_time = (p.log_append_time_ms != -1).then_some(p.log_append_time_ms);
                    b.succeed(p.base_offset, append_time);
                }
                // Already written by an earlier attempt; the broker no longer knows its offset.
                DUPLICATE_SEQUENCE => {
                    self.acc.sent(&b);
                    b.succeed(-1, None);
                }
                code => {
                    let msg = p.error_message.as_ref().map(|m| m.to_string());
                    let e = Error::kafka(code, format!("produce to {}", b.tp), msg);
                    match b.stamp {
                        Some(stamp) if matches!(code, OUT_OF_ORDER_SEQUENCE | UNKNOWN_PRODUCER_ID) => {
                            // Explained by an earlier batch that is still being retried, or by an epoch bump since:
                            // resend in order. Otherwise the broker lost track of the sequence: the batch fails.
                            let stale = self.txn.as_ref().is_some_and(|t| t.is_stale(&b.tp, stamp));
                            if stale || self.acc.earlier_sequence_pending(&b.tp, stamp) {
                                tracing::debug!(tp = %b.tp, ?stamp, code, "sequence error behind an earlier batch; retrying in order");
                                self.acc.requeue(b, self.config.client.retry_backoff);
                            } else {
                                self.fail(b, &e, true);
                            }
                        }
                        _ => self.retry_or_fail(b, e),
                    }
                }
            }
        }
    }

    fn retry_or_fail(&self, batch: Batch, err: Error) {
        if err.needs_metadata_refresh() {
            self.cluster.invalidate(&batch.tp.topic);
        }
        let backoff = self.config.client.retry_backoff;
        let in_time = batch.created.elapsed() + backoff < self.config.delivery_timeout;
        if err.is_retriable() && batch.attempts < self.config.retries && in_time {
            tracing::debug!(tp = %batch.tp, attempt = batch.attempts + 1, error = %err, "retrying batch");
            self.acc.requeue(batch, backoff);
        } else {
            self.fail(batch, &err, true);
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}
