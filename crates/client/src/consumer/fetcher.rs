//! One Fetch request to one leader and what came back per partition. Full fetches only (session epoch -1): the
//! client never opens fetch sessions, so it works with brokers that answer every fetch with session id 0.

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::batch;
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
                FetchTopic::default().with_topic(TopicName(StrBytes::from_string(tp.topic.clone()))).with_partitions(vec![part]),
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
                out.push((tp.clone(), PartitionFetch::Error(Error::kafka(p.error_code, format!("fetch {tp} at offset {offset}"), None))));
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
            for b in batches {
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
                next_offset = next_offset.max(b.next_offset);
            }
            out.push((tp, PartitionFetch::Records { records, next_offset, high_watermark: p.high_watermark }));
        }
    }
    Ok(out)
}
