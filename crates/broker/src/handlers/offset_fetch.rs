//! OffsetFetch: committed offsets of one group (v1-7) or of many groups at once (v8+), for the partitions asked
//! for or, with a null topic list, all of them. A partition without a commit reads offset -1.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::coordinator::group::records::OffsetCommitValue;
use crate::coordinator::group::Request;
use crate::dispatch::ConnectionContext;

type Fetched = Vec<(String, i32, Option<OffsetCommitValue>)>;
/// Partitions whose offsets an open transaction may still change (only asked for with require_stable).
type Unstable = HashSet<(String, i32)>;

async fn fetch_group(
    ctx: &Arc<ConnectionContext>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> Result<(Fetched, Unstable), ResponseError> {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    let g = group_id.to_string();
    if require_stable {
        return ctx
            .broker
            .groups
            .call(&ctx.broker, group_id, |tx| Request::OffsetFetchStable { group_id: g, topics, member, tx })
            .await?;
    }
    let fetched = ctx
        .broker
        .groups
        .call(&ctx.broker, group_id, |tx| Request::OffsetFetch { group_id: g, topics, member, tx })
        .await??;
    Ok((fetched, Unstable::new()))
}

/// (partition, offset, error): a partition with pending transactional offsets reads UNSTABLE_OFFSET_COMMIT.
type TopicOffsets = Vec<(String, Vec<(i32, Option<OffsetCommitValue>, i16)>)>;

/// Groups the fetched offsets by topic, keeping the request's order.
fn by_topic(fetched: Fetched, unstable: &Unstable) -> TopicOffsets {
    let mut out: TopicOffsets = Vec::new();
    for (t, p, v) in fetched {
        // Kafka answers an unstable partition with no offset and the error, for the consumer to retry.
        let (v, e) = if unstable.contains(&(t.clone(), p)) {
            (None, ResponseError::UnstableOffsetCommit.code())
        } else {
            (v, 0)
        };
        match out.iter_mut().find(|(n, _)| *n == t) {
            Some((_, ps)) => ps.push((p, v, e)),
            None => out.push((t, vec![(p, v, e)])),
        }
    }
    out
}

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let group_id = g.group_id.0.to_string();
            let topics =
                g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            let member = if version >= 9 { g.member_id.map(|m| (m.to_string(), g.member_epoch)) } else { None };
            let mut out =
                OffsetFetchResponseGroup::default().with_group_id(GroupId(StrBytes::from_string(group_id.clone())));
            match fetch_group(ctx, &group_id, topics, member, req.require_stable).await {
                Ok((fetched, unstable)) => {
                    out.topics = by_topic(fetched, &unstable)
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, v, e)| {
                                            let v = v.unwrap_or_else(no_offset);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_error_code(e)
                                                .with_committed_offset(v.offset)
                                                .with_committed_leader_epoch(v.leader_epoch)
                                                .with_metadata(Some(StrBytes::from_string(v.metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                }
                Err(e) => out.error_code = e.code(),
            }
            groups.push(out);
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id = req.group_id.0.to_string();
    let asked: Option<Vec<(String, Vec<i32>)>> =
        req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    // require_stable exists from v7.
    let result = fetch_group(ctx, &group_id, asked.clone(), None, version >= 7 && req.require_stable).await;
    let (fetched, unstable, error) = match result {
        Ok((f, u)) => (f, u, None),
        // v1 has no top-level error: each asked partition carries it.
        Err(e) => (
            asked
                .unwrap_or_default()
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p, None)))
                .collect(),
            Unstable::new(),
            Some(e),
        ),
    };
    let partition_error = if version < 2 { error.map_or(0, |e| e.code()) } else { 0 };
    let topics = by_topic(fetched, &unstable)
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default().with_name(TopicName(StrBytes::from_string(t))).with_partitions(
                ps.into_iter()
                    .map(|(p, v, e)| {
                        let v = v.unwrap_or_else(no_offset);
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(v.offset)
                            .with_committed_leader_epoch(if version >= 5 { v.leader_epoch } else { -1 })
                            .with_metadata(Some(StrBytes::from_string(v.metadata)))
                            .with_error_code(if e != 0 { e } else { partition_error })
                    })
                    .collect(),
            )
        })
        .collect();
    let mut resp = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        resp.error_code = error.map_or(0, |e| e.code());
    }
    resp
}

fn no_offset() -> OffsetCommitValue {
    OffsetCommitValue {
        offset: -1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: -1,
        expire_timestamp: None,
    }
}
