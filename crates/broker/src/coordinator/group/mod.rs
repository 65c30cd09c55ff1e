//! The group coordinator: consumer groups of both protocols (classic JoinGroup/SyncGroup and KIP-848
//! ConsumerGroupHeartbeat) and their committed offsets.
//!
//! A group belongs to the `__consumer_offsets` partition its id hashes to (Kafka's `partitionFor`), and is served
//! by that partition's shard (`shard.rs`), which keeps all of its state in that partition. The shards run on the
//! coordinator runtime (`coordinator/runtime.rs`); this type creates the topic on the first FindCoordinator, says
//! which partitions it hosts, and hands requests to the runtime.

mod admin;
pub mod assignor;
mod classic;
mod classic_group;
pub mod config;
mod consumer;
mod consumer_classic;
mod consumer_group;
pub mod consumer_protocol;
mod consumer_records;
mod offsets;
pub mod records;
mod shard;
mod timer;
mod txn_offsets;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

pub use config::GroupConfig;
pub(crate) use offsets::commit_response;
pub use shard::{ListedGroup, Request};
pub use txn_offsets::txn_offset_commit_failed;

use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::controller::{ensure_internal_topic, ApiError};
use crate::coordinator::runtime::{CoordinatorLog, CoordinatorRuntime, ShardRef};

pub use crate::topic_name::GROUP_METADATA_TOPIC_NAME;

pub use crate::coordinator::runtime::partition_for;

/// One partition's lag as the broker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// None: the group never committed for this partition.
    pub committed_offset: Option<i64>,
    pub log_end_offset: i64,
    /// From the committed offset, or from the log start offset when there is none (all retained records are
    /// unread), so partitions nobody committed for still show their backlog.
    pub lag: i64,
}

/// One partition's lag: from the committed offset (any i64 a client committed, so saturating), or from the log
/// start when the group has none.
fn partition_lag(log_end_offset: i64, committed: Option<i64>, log_start_offset: i64) -> i64 {
    match committed {
        Some(c) => log_end_offset.saturating_sub(c).max(0),
        None => log_end_offset.saturating_sub(log_start_offset).max(0),
    }
}

pub struct GroupCoordinator {
    config: Arc<GroupConfig>,
    runtime: CoordinatorRuntime<shard::Shard>,
    partition_count: OnceLock<i32>,
}

impl GroupCoordinator {
    pub fn new(broker: &BrokerConfig) -> GroupCoordinator {
        GroupCoordinator {
            config: Arc::new(GroupConfig::from_broker(broker)),
            runtime: CoordinatorRuntime::default(),
            partition_count: OnceLock::new(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Partitions of `__consumer_offsets` that group ids hash over: the topic's when the coordinator starts (the
    /// config's when it does not exist yet), then fixed, as Kafka's GroupCoordinatorService fixes it at startup. So
    /// partitions added by CreatePartitions do not move groups away from their offsets until the next restart.
    pub fn num_partitions(&self, broker: &Broker) -> i32 {
        *self.partition_count.get_or_init(|| {
            broker
                .image()
                .topic(GROUP_METADATA_TOPIC_NAME)
                .map(|t| t.partitions.len() as i32)
                .unwrap_or(self.config.offsets_topic_num_partitions)
        })
    }

    pub fn partition_of(&self, broker: &Broker, group_id: &str) -> i32 {
        partition_for(group_id, self.num_partitions(broker))
    }

    /// Creates `__consumer_offsets` if it does not exist yet (Kafka does so on the first FindCoordinator).
    /// Blocking: call from a blocking thread.
    pub fn ensure_topic(&self, broker: &Broker) -> Result<(), ApiError> {
        if broker.image().topic(GROUP_METADATA_TOPIC_NAME).is_some() {
            return Ok(());
        }
        let mut configs = BTreeMap::new();
        configs.insert("segment.bytes".to_string(), self.config.offsets_topic_segment_bytes.to_string());
        configs.insert("compression.type".to_string(), "producer".to_string());
        // As Kafka's: compacted, so the latest offset and group record per key are kept forever and the rest
        // is cleaned away.
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        ensure_internal_topic(broker, GROUP_METADATA_TOPIC_NAME, self.config.offsets_topic_num_partitions, configs)
    }

    /// Starts a shard for every hosted `__consumer_offsets` partition, so groups are loaded (and dead members'
    /// sessions expire) without waiting for a request. Called when the broker starts.
    pub fn start_hosted(&self, broker: &Broker) {
        for p in 0..self.num_partitions(broker) {
            let _ = self.shard_for_partition(broker, p);
        }
    }

    /// The shard of partition `p` as this broker hosts it now: started (loading) if not running; a partition
    /// deleted (and maybe created again) replaces the old shard, whose groups are gone with the records they were
    /// loaded from, as in Kafka.
    fn shard_for_partition(&self, broker: &Broker, p: i32) -> Result<ShardRef<Request>, ResponseError> {
        let current = broker.replicas.get(GROUP_METADATA_TOPIC_NAME, p).map(|l| l as Arc<dyn CoordinatorLog>);
        let config = self.config.clone();
        self.runtime.shard(p, current, |_| shard::Shard::new(p, config).with_image(broker.image()))
    }

    /// This broker no longer coordinates partition `p` of `__consumer_offsets`: its shard stops and its groups are
    /// dropped from memory (they are rebuilt from the partition wherever it is loaded next). The shard's task, to
    /// wait for it to end.
    pub fn unload(&self, p: i32) -> Option<tokio::task::JoinHandle<()>> {
        self.runtime.unload(p)
    }

    /// Sends a request to the group's shard and waits for its answer. While the shard's queue is full the caller
    /// waits for room.
    pub async fn call<T>(
        &self,
        broker: &Broker,
        group_id: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, ResponseError> {
        let p = self.partition_of(broker, group_id);
        let shard = self.shard_for_partition(broker, p)?;
        let (otx, orx) = oneshot::channel();
        shard.send(make(otx)).await?;
        crate::dispatch::handed_off();
        // A dropped answer means the shard stopped (its partition went away): the client looks again.
        orx.await.map_err(|_| ResponseError::NotCoordinator)
    }

    /// A transaction's markers are durable on these `__consumer_offsets` partitions: their shards settle the
    /// producer's pending transactional offsets (Kafka's onTransactionCompleted).
    pub async fn on_transaction_completed(
        &self,
        broker: &Broker,
        producer_id: i64,
        partitions: &[i32],
        result: crate::txn_markers::TransactionResult,
    ) {
        let mut waits = Vec::new();
        for &p in partitions {
            match self.shard_for_partition(broker, p) {
                Ok(shard) => {
                    let (otx, orx) = oneshot::channel();
                    if shard.send_internal(Request::CompleteTransaction { producer_id, result, tx: otx }).is_ok() {
                        waits.push(orx);
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = p, producer_id, error = ?e, "no group coordinator shard to complete a transaction")
                }
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }

    /// Topics were deleted (the metadata change is durable): every running shard drops its groups' offsets for them.
    /// Not blocking, no runtime needed: shards not running now drop such offsets when they load (`Shard::new`'s
    /// image), which also covers a restart between the metadata commit and the tombstones.
    pub fn on_topics_deleted(&self, topics: &BTreeSet<String>) {
        if topics.is_empty() {
            return;
        }
        let topics: std::collections::HashSet<String> = topics.iter().cloned().collect();
        self.runtime.send_internal_to_all(|| Request::TopicsDeleted { topics: topics.clone() });
    }

    /// Every group on every hosted shard.
    pub async fn list_groups(&self, broker: &Broker) -> Vec<ListedGroup> {
        let mut receivers = Vec::new();
        for p in 0..self.num_partitions(broker) {
            if let Ok(shard) = self.shard_for_partition(broker, p) {
                let (otx, orx) = oneshot::channel();
                if shard.send(Request::ListGroups { tx: otx }).await.is_ok() {
                    receivers.push(orx);
                }
            }
        }
        let mut out = Vec::new();
        for r in receivers {
            if let Ok(groups) = r.await {
                out.extend(groups);
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// The group's lag per partition, computed here from the committed offsets and the hosted partitions: every
    /// partition it committed for, plus every partition of the topics its members subscribe to. None when the group
    /// does not exist.
    pub async fn lag(&self, broker: &Broker, group_id: &str) -> Result<Option<Vec<PartitionLag>>, ResponseError> {
        let Some((committed, topics)) =
            self.call(broker, group_id, |tx| Request::GroupOffsets { group_id: group_id.to_string(), tx }).await?
        else {
            return Ok(None);
        };
        let image = broker.image();
        let mut wanted: BTreeMap<(String, i32), Option<i64>> = BTreeMap::new();
        for t in &topics {
            if let Some(ti) = image.topic(t) {
                for p in ti.partitions.keys() {
                    wanted.insert((t.clone(), *p), None);
                }
            }
        }
        for (t, p, o) in committed {
            wanted.insert((t, p), Some(o));
        }
        let mut out = Vec::new();
        let topics_seen: BTreeSet<String> = wanted.keys().map(|(t, _)| t.clone()).collect();
        for t in topics_seen {
            for ((_, p), committed) in wanted.range((t.clone(), i32::MIN)..=(t.clone(), i32::MAX)) {
                let Some(part) = broker.replicas.get(&t, *p) else { continue };
                let leo = part.high_watermark();
                let lag = partition_lag(leo, *committed, part.log_start_offset());
                out.push(PartitionLag {
                    topic: t.clone(),
                    partition: *p,
                    committed_offset: *committed,
                    log_end_offset: leo,
                    lag,
                });
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::partition_lag;

    #[test]
    fn lag_of_any_committed_offset_does_not_overflow() {
        assert_eq!(partition_lag(100, Some(40), 0), 60);
        assert_eq!(partition_lag(100, Some(500), 0), 0);
        assert_eq!(partition_lag(100, None, 30), 70);
        // Offsets a client may commit: lag is clamped, never an overflow (a panic in debug builds).
        assert_eq!(partition_lag(100, Some(i64::MIN), 0), i64::MAX);
        assert_eq!(partition_lag(100, Some(i64::MAX), 0), 0);
        assert_eq!(partition_lag(100, Some(-1), 0), 101);
    }
}
