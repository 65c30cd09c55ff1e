//! Records of the metadata log, named after KRaft's metadata records.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A new topic; its partitions follow as PartitionRecords.
    TopicRecord {
        name: String,
        topic_id: Uuid,
    },
    /// A partition's replica set, leader and leader epoch (a new partition, or a change of leadership later).
    PartitionRecord {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
    },
    /// A topic-level config override (`value: None` removes it).
    ConfigRecord {
        topic_id: Uuid,
        name: String,
        value: Option<String>,
    },
    RemoveTopicRecord {
        topic_id: Uuid,
    },
    /// A dynamic broker config (KRaft's ConfigRecord with resource type BROKER): `resource` is a broker id, or ""
    /// for the cluster-wide default; `value: None` removes it.
    BrokerConfigRecord {
        resource: String,
        name: String,
        value: Option<String>,
    },
    /// KRaft's ProducerIdsRecord: `broker_id` took the block of producer ids below `next_producer_id`; ids are
    /// handed out in blocks so none is ever reused, even across restarts.
    ProducerIdsRecord {
        broker_id: i32,
        next_producer_id: i64,
    },
}
