//! ListOffsets, shared by the consumer (resets, offsets_for_times) and the admin client: asks each partition's
//! leader, refreshing metadata and retrying when leadership moved.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::record::TopicPartition;

/// Special timestamps of ListOffsets.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

/// An offset with the timestamp of its record (-1 when the broker does not say, as for earliest/latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    pub offset: i64,
    pub timestamp: i64,
}

/// Looks up the offset for each (partition, timestamp); `None` when no record has a timestamp at or after it.
pub async fn list_offsets(
    cluster: &Cluster,
    queries: &[(TopicPartition, i64)],
    read_committed: bool,
) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
    let mut out = HashMap::new();
    let mut todo: Vec<(TopicPartition, i64)> = queries.to_vec();
    let mut last_err = None;
    for _attempt in 0..5 {
        if todo.is_empty() {
            break;
        }
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, ts) in todo.drain(..) {
            let leader = match cluster.leader(&tp.topic, tp.partition) {
                Some(l) => l,
                None => {
                    let t = cluster.topic(&tp.topic, false, cluster.config().request_timeout).await?;
                    if !t.partitions.iter().any(|p| p.id == tp.partition) {
                        return Err(Error::UnknownPartition(tp.topic, tp.partition));
                    }
                    cluster.leader(&tp.topic, tp.partition).unwrap_or(-1)
                }
            };
            by_leader.entry(leader).or_default().push((tp, ts));
        }
        for (leader, parts) in by_leader {
            let result = async {
                let conn =
                    if leader >= 0 { cluster.connection(leader).await? } else { cluster.any_connection().await? };
                let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
                for (tp, ts) in &parts {
                    topics.entry(&tp.topic).or_default().push(
                        ListOffsetsPartition::default()
                            .with_partition_index(tp.partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(*ts),
                    );
                }
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_isolation_level(read_committed as i8)
                    .with_timeout_ms(cluster.config().request_timeout.as_millis() as i32)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                ListOffsetsTopic::default()
                                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    );
                conn.call(&req).await
            }
            .await;
            let resp = match result {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    if leader >= 0 {
                        cluster.forget_connection(leader).await;
                    }
                    for (tp, _) in &parts {
                        cluster.invalidate(&tp.topic);
                    }
                    last_err = Some(e);
                    todo.extend(parts);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for t in &resp.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    let Some((_, ts)) = parts.iter().find(|(q, _)| *q == tp) else { continue };
                    if p.error_code == 0 {
                        let v =
                            (p.offset >= 0).then_some(OffsetAndTimestamp { offset: p.offset, timestamp: p.timestamp });
                        out.insert(tp, v);
                    } else {
                        let e = Error::kafka(p.error_code, format!("list offsets of {tp}"), None);
                        if !e.is_retriable() {
                            return Err(e);
                        }
                        cluster.invalidate(&tp.topic);
                        todo.push((tp, *ts));
                        last_err = Some(e);
                    }
                }
            }
        }
        if !todo.is_empty() {
            tokio::time::sleep(cluster.config().retry_backoff).await;
        }
    }
    match (todo.is_empty(), last_err) {
        (false, Some(e)) => Err(e),
        _ => Ok(out),
    }
}
