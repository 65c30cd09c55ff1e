//! OffsetCommit and OffsetFetch against a group's coordinator.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::connection::Connection;
use crate::error::{check, Result};
use crate::record::TopicPartition;

/// A committed offset and its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub metadata: String,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The member a commit comes from: generation (or member epoch) -1 and no member id for standalone commits.
#[derive(Debug, Clone, Default)]
pub struct Committer {
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
}

impl Committer {
    pub fn standalone() -> Committer {
        Committer { generation: -1, member_id: String::new(), instance_id: None }
    }
}

pub async fn commit(
    conn: &Connection,
    group: &str,
    who: &Committer,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> Result<()> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, o) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(o.offset)
                .with_committed_metadata(Some(s(&o.metadata))),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(who.generation)
        .with_member_id(s(&who.member_id))
        .with_group_instance_id(who.instance_id.as_deref().map(s))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| OffsetCommitRequestTopic::default().with_name(TopicName(s(t))).with_partitions(ps))
                .collect(),
        );
    let resp = conn.call(&req).await?;
    for t in resp.topics {
        for p in t.partitions {
            check(
                p.error_code,
                || format!("OffsetCommit of {}-{} for group {group}", t.name.0, p.partition_index),
                None,
            )?;
        }
    }
    Ok(())
}

/// Committed offsets of `partitions` (all the group has when None); partitions without one are left out.
pub async fn fetch(
    conn: &Connection,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
    let version = conn.version::<OffsetFetchRequest>()?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in partitions.unwrap_or(&[]) {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let mut out = BTreeMap::new();
    let mut keep = |topic: &str, p: i32, offset: i64, metadata: Option<StrBytes>| {
        if offset >= 0 {
            out.insert(
                TopicPartition::new(topic, p),
                OffsetAndMetadata { offset, metadata: metadata.map(|m| m.to_string()).unwrap_or_default() },
            );
        }
    };
    if version >= 8 {
        let topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default().with_name(TopicName(s(t))).with_partition_indexes(ps.clone())
                })
                .collect()
        });
        let req = OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(GroupId(s(group))).with_topics(topics)]);
        let resp = conn.call_version(&req, version).await?;
        for g in resp.groups {
            check(g.error_code, || format!("OffsetFetch for group {group}"), None)?;
            for t in g.topics {
                for p in t.partitions {
                    check(p.error_code, || format!("OffsetFetch of {}-{}", t.name.0, p.partition_index), None)?;
                    keep(&t.name.0, p.partition_index, p.committed_offset, p.metadata);
                }
            }
        }
    } else {
        let topics = partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default().with_name(TopicName(s(t))).with_partition_indexes(ps.clone())
                })
                .collect()
        });
        let req = OffsetFetchRequest::default().with_group_id(GroupId(s(group))).with_topics(topics);
        let resp = conn.call_version(&req, version).await?;
        check(resp.error_code, || format!("OffsetFetch for group {group}"), None)?;
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, || format!("OffsetFetch of {}-{}", t.name.0, p.partition_index), None)?;
                keep(&t.name.0, p.partition_index, p.committed_offset, p.metadata);
            }
        }
    }
    Ok(out)
}
