//! One Fetch request to one leader and what came back per partition. Full fetches only (session epoch -1): the
//! client never opens fetch sessions, so it works with brokers that answer every fetch with session id 0.
//! Control batches (transaction markers) are never returned; with `read_committed` the records of aborted
//! transactions are dropped too, from the response's aborted transactions as Java's fetcher does.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use std::collections::HashSet;

use kafka_protocol::messages::fetch_response::AbortedTransaction;

use crate::batch::{self, ControlType, DecodedBatch};
use crate::cluster::Cluster;
use crate::config::ConsumerConfig;
use crate::error::{Error, Result};
use crate::record::{ConsumerRecord, TopicPartition};

/// What a fetch returned for one partition.
pub(crate) enum PartitionFetch {
    /// Records at or after the fetch offset, and the offset to fetch next.
    Records { records: Vec<ConsumerRecord>, next_offset: i64, high_watermark: i64 },
    /// The broker reported an error for this partition.
    Error(Error),
}

pub(crate) async fn fetch(
    cluster: &Cluster,
    config: &ConsumerConfig,
    leader: i32,
    partitions: &[(TopicPartition, i64)],
    max_wait_ms: i32,
) -> Result<Vec<(TopicPartition, PartitionFetch)>> {
    let conn = cluster.connection(leader).await?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, offset) in partitions {
        let part = FetchPartition::default()
            .with_partition(tp.partition)
            .with_current_leader_epoch(-1)
            .with_fetch_offset(*offset)
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(config.max_partition_fetch_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == tp.topic) {
            Some(t) => t.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_max_bytes)
        .with_isolation_level(config.read_committed as i8)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let resp = conn.call(&req).await?;
    if resp.error_code != 0 {
        return Err(Error::kafka(resp.error_code, format!("fetch from broker {leader}"), None));
    }
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.to_string();
        for p in t.partitions {
            let tp = TopicPartition::new(topic.clone(), p.partition_index);
            let Some(&(_, offset)) = partitions.iter().find(|(q, _)| *q == tp) else { continue };
            if p.error_code != 0 {
                out.push((
                    tp.clone(),
                    PartitionFetch::Error(Error::kafka(p.error_code, format!("fetch {tp} at offset {offset}"), None)),
                ));
                continue;
            }
            let data = p.records.unwrap_or_default();
            let batches = match batch::decode_all(data, config.check_crcs) {
                Ok(b) => b,
                Err(e) => {
                    out.push((tp, PartitionFetch::Error(e)));
                    continue;
                }
            };
            let mut next_offset = offset;
            let mut records = Vec::new();
            let mut aborted =
                AbortedTransactions::new(if config.read_committed { p.aborted_transactions.as_deref() } else { None });
            for b in batches {
                next_offset = next_offset.max(b.next_offset);
                if !aborted.keep(&b) {
                    continue;
                }
                for r in b.records {
                    // A fetch from the middle of a batch returns the whole batch: skip what was already consumed.
                    if r.offset < offset {
                        continue;
                    }
                    records.push(ConsumerRecord {
                        topic: topic.clone(),
                        partition: tp.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        timestamp_type: b.timestamp_type,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
            }
            out.push((tp, PartitionFetch::Records { records, next_offset, high_watermark: p.high_watermark }));
        }
    }
    Ok(out)
}

/// The aborted transactions of one partition's fetch (Java's Fetcher logic): a producer's transaction is aborted
/// from its first offset up to its ABORT marker; its transactional batches in between are dropped.
struct AbortedTransactions {
    /// (first offset, producer id), by first offset.
    pending: Vec<(i64, i64)>,
    aborted_producers: HashSet<i64>,
}

impl AbortedTransactions {
    fn new(list: Option<&[AbortedTransaction]>) -> Self {
        let mut pending: Vec<(i64, i64)> =
            list.unwrap_or(&[]).iter().map(|a| (a.first_offset, a.producer_id.0)).collect();
        pending.sort_unstable_by(|a, b| b.cmp(a)); // popped from the end: lowest first offset first
        AbortedTransactions { pending, aborted_producers: HashSet::new() }
    }

    /// Whether the batch's records go to the application.
    fn keep(&mut self, b: &DecodedBatch) -> bool {
        let last_offset = b.next_offset - 1;
        while self.pending.last().is_some_and(|(first, _)| *first <= last_offset) {
            if let Some((_, pid)) = self.pending.pop() {
                self.aborted_producers.insert(pid);
            }
        }
        if b.control {
            if b.control_type == Some(ControlType::Abort) {
                self.aborted_producers.remove(&b.producer_id);
            }
            return false;
        }
        !(b.transactional && self.aborted_producers.contains(&b.producer_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ProducerId;

    fn batch(base: i64, n: i64, pid: i64, transactional: bool, control: Option<ControlType>) -> DecodedBatch {
        DecodedBatch {
            base_offset: base,
            next_offset: base + n,
            timestamp_type: crate::record::TimestampType::CreateTime,
            control: control.is_some(),
            transactional,
            producer_id: pid,
            control_type: control,
            records: Vec::new(),
        }
    }

    #[test]
    fn aborted_transactions_end_at_their_abort_marker() {
        let list = [AbortedTransaction::default().with_producer_id(ProducerId(7)).with_first_offset(2)];
        let mut a = AbortedTransactions::new(Some(&list));
        assert!(a.keep(&batch(0, 2, 7, true, None)), "producer 7's committed transaction before the aborted one");
        assert!(!a.keep(&batch(2, 3, 7, true, None)), "aborted");
        assert!(a.keep(&batch(5, 1, 8, true, None)), "another producer's transaction");
        assert!(a.keep(&batch(6, 1, 7, false, None)), "not transactional");
        assert!(!a.keep(&batch(7, 1, 7, true, Some(ControlType::Abort))), "markers are never returned");
        assert!(a.keep(&batch(8, 1, 7, true, None)), "the next transaction of producer 7");
        assert!(!a.keep(&batch(9, 1, 7, true, Some(ControlType::Commit))));
    }
}
