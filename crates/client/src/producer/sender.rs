//! The background task that moves ready batches from the accumulator to the partition leaders: one Produce
//! request per broker with at most one batch per partition, sent only while that connection has an in-flight slot
//! (so records keep batching while requests are outstanding), retried on retriable errors.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::accumulator::{Accumulator, Batch};
use super::idempotence::Idempotence;
use crate::batch::{self, ProducerStamp, RecordView};
use crate::cluster::Cluster;
use crate::config::ProducerConfig;
use crate::error::{Error, Result};
use crate::record::TopicPartition;

pub(crate) struct Sender {
    pub acc: Arc<Accumulator>,
    pub cluster: Arc<Cluster>,
    pub config: Arc<ProducerConfig>,
    /// Set when the producer is idempotent.
    idem: Option<Arc<Idempotence>>,
    refreshing: AtomicBool,
}

impl Sender {
    pub fn new(acc: Arc<Accumulator>, cluster: Arc<Cluster>, config: Arc<ProducerConfig>, idem: Option<Arc<Idempotence>>) -> Arc<Sender> {
        Arc::new(Sender { acc, cluster, config, idem, refreshing: AtomicBool::new(false) })
    }

    /// Fails a batch for good; a sequenced one leaves its partition's sequence in doubt, so that restarts.
    fn fail(&self, batch: Batch, err: &Error) {
        if let (true, Some(idem)) = (batch.sequenced, &self.idem) {
            if let Err(e) = idem.reset(&batch.tp) {
                tracing::error!(tp = %batch.tp, error = %e, "cannot restart the partition's sequence");
            }
        }
        batch.fail(err);
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            for b in self.acc.expire(now, self.config.delivery_timeout) {
                let err = Error::Timeout(format!("delivery to {}", b.tp), self.config.delivery_timeout);
                self.fail(b, &err);
            }
            let (ready, mut next) = self.acc.ready(now);
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
            for (leader, partitions) in by_leader {
                if let Err(e) = self.send_to(leader, &partitions).await {
                    tracing::debug!(leader, error = %e, "cannot reach leader; backing off");
                    self.acc.back_off(&partitions, self.config.client.retry_backoff);
                    self.cluster.forget_connection(leader).await;
                    for tp in &partitions {
                        self.cluster.invalidate(&tp.topic);
                    }
                    next = Some(earliest(next, now + self.config.client.retry_backoff));
                }
            }
            if self.acc.is_closed() && self.acc.is_empty() && self.acc.budget.incomplete.load(Ordering::SeqCst) == 0 {
                return;
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

    /// Sends one request with the ready batches led by `leader`, if its connection has a free in-flight slot.
    async fn send_to(self: &Arc<Self>, leader: i32, partitions: &[TopicPartition]) -> Result<()> {
        let conn = self.cluster.connection(leader).await?;
        let Some(permit) = conn.try_reserve() else { return Ok(()) };
        let version = conn.version::<ProduceRequest>()?;
        // One batch per partition in flight keeps retries in order (and, when idempotent, in sequence).
        let mute = self.config.client.max_in_flight == 1 || self.idem.is_some();
        let mut batches = self.acc.drain(partitions, self.config.max_request_size, mute);
        let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut too_large = Vec::new();
        for (i, b) in batches.iter_mut().enumerate() {
            if b.encoded.is_none() {
                let views: Vec<RecordView<'_>> = b
                    .records
                    .iter()
                    .map(|r| RecordView { timestamp: r.timestamp, key: r.key.as_deref(), value: r.value.as_deref(), headers: &r.headers })
                    .collect();
                let stamp = match &self.idem {
                    Some(idem) => {
                        b.sequenced = true;
                        idem.next(&b.tp, views.len() as i32)
                    }
                    None => ProducerStamp::NONE,
                };
                b.encoded = Some(batch::encode_with(&views, self.config.compression, stamp)?);
            }
            let bytes = b.encoded.clone().unwrap_or_default();
            if bytes.len() > self.config.max_request_size {
                too_large.push(i);
                continue;
            }
            topics
                .entry(&b.tp.topic)
                .or_default()
                .push(PartitionProduceData::default().with_index(b.tp.partition).with_records(Some(bytes)));
        }
        let req = ProduceRequest::default()
            .with_acks(self.config.acks)
            .with_timeout_ms(self.config.client.request_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        TopicProduceData::default().with_name(TopicName(StrBytes::from_string(t.to_string()))).with_partition_data(parts)
                    })
                    .collect(),
            );
        for i in too_large.into_iter().rev() {
            let b = batches.remove(i);
            let size = b.encoded.as_ref().map_or(0, |e| e.len());
            self.fail(b, &Error::RecordTooLarge { size, limit: self.config.max_request_size, setting: "max.request.size" });
        }
        if batches.is_empty() {
            return Ok(());
        }
        if self.config.acks == 0 {
            // No response will come: the records count as sent once queued on the connection.
            let sent = conn.send_oneway(&req, version);
            drop(permit);
            self.complete(leader, batches, sent.map(|_| None)).await;
            return Ok(());
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
        Ok(())
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
                self.acc.unmute(&b.tp);
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
                self.acc.unmute(&b.tp);
                self.fail(b, &e);
                continue;
            };
            if p.error_code == 0 {
                self.acc.unmute(&b.tp);
                let append_time = (p.log_append_time_ms != -1).then_some(p.log_append_time_ms);
                b.succeed(p.base_offset, append_time);
            } else {
                let msg = p.error_message.as_ref().map(|m| m.to_string());
                let e = Error::kafka(p.error_code, format!("produce to {}", b.tp), msg);
                self.retry_or_fail(b, e);
            }
        }
    }

    fn retry_or_fail(&self, batch: Batch, err: Error) {
        self.acc.unmute(&batch.tp);
        if err.needs_metadata_refresh() {
            self.cluster.invalidate(&batch.tp.topic);
        }
        let backoff = self.config.client.retry_backoff;
        let in_time = batch.created.elapsed() + backoff < self.config.delivery_timeout;
        if err.is_retriable() && batch.attempts < self.config.retries && in_time {
            tracing::debug!(tp = %batch.tp, attempt = batch.attempts + 1, error = %err, "retrying batch");
            self.acc.requeue(batch, backoff);
        } else {
            self.fail(batch, &err);
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}
