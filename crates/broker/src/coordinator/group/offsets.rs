//! Committed offsets (Kafka's OffsetMetadataManager): OffsetCommit, OffsetFetch, OffsetDelete and the expiry of
//! offsets per `offsets.retention.minutes`. Every change is an OffsetCommit record (a tombstone to delete) in the
//! shard's `__consumer_offsets` partition; the in-memory map is rebuilt from those records on load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::classic_group::{ClassicGroup, ClassicGroupState};
use super::records::{CoordinatorKey, OffsetCommitValue};
use super::shard::{Effects, Group, Shard};
use crate::clock::now_ms;
use crate::metadata::MetadataImage;

/// group → (topic, partition) → committed offset.
#[derive(Default)]
pub struct OffsetStore {
    groups: HashMap<String, BTreeMap<(String, i32), OffsetCommitValue>>,
}

impl OffsetStore {
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetCommitValue> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    pub fn group(&self, group: &str) -> Option<&BTreeMap<(String, i32), OffsetCommitValue>> {
        self.groups.get(group)
    }

    pub fn put(&mut self, group: &str, topic: String, partition: i32, v: OffsetCommitValue) {
        self.groups.entry(group.to_string()).or_default().insert((topic, partition), v);
    }

    pub fn remove(&mut self, group: &str, topic: &str, partition: i32) -> Option<OffsetCommitValue> {
        let offsets = self.groups.get_mut(group)?;
        let v = offsets.remove(&(topic.to_string(), partition));
        if offsets.is_empty() {
            self.groups.remove(group);
        }
        v
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|g| !g.is_empty())
    }

    /// Every (group, topic, partition) with an offset for one of `topics`.
    pub fn keys_of_topics(&self, topics: &HashSet<String>) -> Vec<(String, String, i32)> {
        let mut out = Vec::new();
        for (group, offsets) in &self.groups {
            for (t, p) in offsets.keys() {
                if topics.contains(t) {
                    out.push((group.clone(), t.clone(), *p));
                }
            }
        }
        out
    }

    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}

/// OffsetCommit's per-partition outcome, before it is shaped into the response.
pub(crate) fn commit_response(
    req: &OffsetCommitRequest,
    error: impl Fn(&str, i32) -> Option<ResponseError>,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error(&t.name.0, p.partition_index).map_or(0, |e| e.code()))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Kafka maps a failed write of coordinator records to the codes clients know how to retry (its
/// CoordinatorOperationExceptionHelper), with one difference: Kafka answers KAFKA_STORAGE_ERROR with NOT_COORDINATOR
/// because its failed log directory takes the partition offline and the coordinator resigns, so the client's next
/// FindCoordinator gets COORDINATOR_NOT_AVAILABLE and backs off. Strom's partition stays where it is, and
/// NOT_COORDINATOR sent clients straight back to rejoin in a hot loop: a coordinator whose log cannot be written is
/// unavailable, which is what those clients would be told next on Kafka.
pub fn append_error_to_response(e: ResponseError) -> ResponseError {
    match e {
        ResponseError::UnknownTopicOrPartition
        | ResponseError::NotEnoughReplicas
        | ResponseError::RequestTimedOut
        | ResponseError::KafkaStorageError => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
        ResponseError::MessageTooLarge | ResponseError::RecordListTooLarge | ResponseError::InvalidFetchSize => {
            ResponseError::UnknownServerError
        }
        other => other,
    }
}

impl Shard {
    /// Kafka's per-partition checks of an offset commit (plain or transactional): the partition exists and the
    /// metadata fits `offset.metadata.max.bytes`.
    pub(super) fn offset_partition_error(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
        metadata: Option<&str>,
    ) -> Option<ResponseError> {
        if image.topic(topic).is_none_or(|k| !k.partitions.contains_key(&partition)) {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if metadata.is_some_and(|m| {
            // The record's metadata is a string of at most i16::MAX bytes, whatever offset.metadata.max.bytes says.
            m.len() > self.config.offset_metadata_max_bytes || !super::records::fits_record_string(m)
        }) {
            Some(ResponseError::OffsetMetadataTooLarge)
        } else {
            None
        }
    }

    /// OffsetCommit: validate the committer against the group (generation or member epoch), then write one
    /// record per partition. The answer waits for the records to be durable.
    pub fn offset_commit(
        &mut self,
        req: OffsetCommitRequest,
        version: i16,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<OffsetCommitResponse>,
        fx: &mut Effects,
    ) {
        let group_id = req.group_id.0.to_string();
        if let Err(e) = self.validate_offset_commit(&req, version) {
            let _ = tx.send(commit_response(&req, |_, _| Some(e)));
            return;
        }
        let now = now_ms();
        // OffsetCommit v2-v4 may ask for a retention of its own; -1 (and every later version) uses the broker's.
        let expire_timestamp =
            (version <= 4 && req.retention_time_ms != -1).then(|| now.saturating_add(req.retention_time_ms));
        let mut errors: HashMap<(String, i32), ResponseError> = HashMap::new();
        let mut written = Vec::new();
        for t in &req.topics {
            let topic = t.name.0.to_string();
            for p in &t.partitions {
                if let Some(e) =
                    self.offset_partition_error(&image, &topic, p.partition_index, p.committed_metadata.as_deref())
                {
                    errors.insert((topic.clone(), p.partition_index), e);
                    continue;
                }
                let value = OffsetCommitValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                    commit_timestamp: now,
                    expire_timestamp,
                };
                fx.write(
                    CoordinatorKey::OffsetCommit {
                        group: group_id.clone(),
                        topic: topic.clone(),
                        partition: p.partition_index,
                    },
                    Some(value.encode()),
                );
                // Applied once durable (the runtime hands the record back to `on_committed`), not here.
                written.push((group_id.clone(), topic.clone(), p.partition_index));
            }
        }
        for k in &written {
            *self.in_flight_commits.entry(k.clone()).or_default() += 1;
        }
        if !written.is_empty() {
            fx.on_complete(move |shard: &mut Shard, _, _| {
                for k in written {
                    if let std::collections::hash_map::Entry::Occupied(mut e) = shard.in_flight_commits.entry(k) {
                        *e.get_mut() -= 1;
                        if *e.get() == 0 {
                            e.remove();
                        }
                    }
                }
            });
        }
        // A commit for a group nobody created (a standalone consumer, an admin tool) creates an Empty group, as
        // Kafka does, so that ListGroups and DescribeGroups show it.
        if !self.groups.contains_key(&group_id) {
            self.groups.insert(group_id.clone(), Group::Classic(ClassicGroup::new(group_id.clone(), now)));
        }
        let resp = commit_response(&req, |t, p| errors.get(&(t.to_string(), p)).copied());
        fx.reply(tx, resp, |mut resp, e| {
            let e = append_error_to_response(e);
            for t in &mut resp.topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = e.code();
                    }
                }
            }
            resp
        });
    }

    fn validate_offset_commit(&self, req: &OffsetCommitRequest, version: i16) -> Result<(), ResponseError> {
        let group_id = req.group_id.0.as_str();
        let generation = req.generation_id_or_member_epoch;
        let member_id = req.member_id.as_str();
        let instance = req.group_instance_id.as_ref().map(|i| i.as_str());
        match self.groups.get(group_id) {
            None => {
                if generation < 0 {
                    Ok(())
                } else if version >= 9 {
                    Err(ResponseError::GroupIdNotFound)
                } else {
                    Err(ResponseError::IllegalGeneration)
                }
            }
            Some(Group::Classic(g)) => {
                if g.is(ClassicGroupState::Dead) {
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
                if generation < 0 && g.is(ClassicGroupState::Empty) {
                    // Admin tools and consumers without group management commit to empty groups.
                    return Ok(());
                }
                if generation >= 0 || !member_id.is_empty() || instance.is_some() {
                    validate_classic_member(g, member_id, instance)?;
                    if generation != g.generation_id {
                        return Err(ResponseError::IllegalGeneration);
                    }
                } else if !g.is(ClassicGroupState::Empty) {
                    return Err(ResponseError::UnknownMemberId);
                }
                if g.is(ClassicGroupState::CompletingRebalance) {
                    // The member holds the new generation but not yet its assignment: it must finish SyncGroup.
                    return Err(ResponseError::RebalanceInProgress);
                }
                Ok(())
            }
            Some(Group::Consumer(g)) => g.validate_offset_commit(member_id, generation, version),
        }
    }

    /// OffsetFetch for one group: the committed offsets of the partitions asked for (all when `topics` is None).
    pub fn offset_fetch(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(String, i32)>,
    ) -> Result<super::shard::FetchedOffsets, ResponseError> {
        if let (Some(Group::Consumer(g)), Some((member_id, epoch))) = (self.groups.get(group_id), member.as_ref()) {
            g.validate_offset_fetch(member_id, *epoch)?;
        }
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .map(|(t, p)| {
                    let v = self.offsets.get(group_id, &t, p).cloned();
                    (t, p, v)
                })
                .collect(),
            None => self
                .offsets
                .group(group_id)
                .map(|o| o.iter().map(|((t, p), v)| (t.clone(), *p, Some(v.clone()))).collect())
                .unwrap_or_default(),
        })
    }

    /// OffsetDelete: only for partitions of topics the group does not consume right now.
    pub fn offset_delete(
        &mut self,
        req: OffsetDeleteRequest,
        tx: oneshot::Sender<OffsetDeleteResponse>,
        fx: &mut Effects,
    ) {
        let group_id = req.group_id.0.to_string();
        let subscribed: HashSet<String> = match self.groups.get(&group_id) {
            None => {
                let _ = tx.send(OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code()));
                return;
            }
            Some(Group::Classic(g)) if g.is(ClassicGroupState::Dead) => {
                let _ = tx.send(OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code()));
                return;
            }
            Some(Group::Classic(g)) => {
                if g.is(ClassicGroupState::Empty) {
                    HashSet::new()
                } else {
                    match g.subscribed_topics() {
                        Some(t) => t,
                        // A non-empty group whose protocol the broker cannot read: Kafka refuses outright.
                        None => {
                            let _ = tx.send(
                                OffsetDeleteResponse::default().with_error_code(ResponseError::NonEmptyGroup.code()),
                            );
                            return;
                        }
                    }
                }
            }
            Some(Group::Consumer(g)) => g.subscribed_topic_names(),
        };
        let mut topics = Vec::new();
        for t in &req.topics {
            let name = t.name.0.to_string();
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let error = if subscribed.contains(&name) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    // Deleted once the tombstone is durable.
                    if self.offsets.get(&group_id, &name, p.partition_index).is_some() {
                        fx.write(
                            CoordinatorKey::OffsetCommit {
                                group: group_id.clone(),
                                topic: name.clone(),
                                partition: p.partition_index,
                            },
                            None,
                        );
                    }
                    0
                };
                partitions.push(
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error),
                );
            }
            topics.push(OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions));
        }
        fx.reply(tx, OffsetDeleteResponse::default().with_topics(topics), |r, e| {
            r.with_error_code(append_error_to_response(e).code())
        });
    }

    /// Removes offsets past their retention (Kafka's cleanupGroupMetadata), and groups left with neither members
    /// nor offsets.
    /// Topics were deleted: the offsets of every group for them go, committed and pending alike, with tombstones so
    /// that a topic re-created with the same name is consumed from its start (Kafka's onPartitionsDeleted).
    pub fn on_topics_deleted(&mut self, topics: &HashSet<String>, fx: &mut Effects) {
        let mut keys = self.offsets.keys_of_topics(topics);
        keys.extend(self.txn_offsets.keys_of_topics(topics));
        keys.sort();
        keys.dedup();
        // Committed and pending offsets go when the tombstones are durable (their replay removes both).
        for (group, topic, partition) in keys {
            fx.write(CoordinatorKey::OffsetCommit { group, topic, partition }, None);
        }
    }

    pub fn expire_offsets(&mut self, fx: &mut Effects) {
        let now = now_ms();
        let retention = self.config.offsets_retention_ms;
        // Groups whose every offset expires now: their tombstones are not durable yet, so they still have offsets.
        let mut emptied: HashSet<String> = HashSet::new();
        for group_id in self.offsets.group_ids() {
            // (base timestamp for offsets without an explicit expiry, topics that must be kept)
            let condition: Option<(Option<i64>, HashSet<String>)> = match self.groups.get(&group_id) {
                None => Some((None, HashSet::new())),
                Some(Group::Classic(g)) => match &g.protocol_type {
                    None => Some((None, HashSet::new())),
                    Some(_) if g.is(ClassicGroupState::Empty) => Some((g.state_timestamp, HashSet::new())),
                    Some(_) if g.is(ClassicGroupState::Stable) => g.subscribed_topics().map(|t| (None, t)),
                    Some(_) => None,
                },
                Some(Group::Consumer(g)) => Some((None, g.subscribed_topic_names())),
            };
            let Some((base, keep)) = condition else { continue };
            let expired: Vec<(String, i32)> = self
                .offsets
                .group(&group_id)
                .into_iter()
                .flatten()
                .filter(|((t, p), v)| {
                    !keep.contains(t)
                        // A commit in flight replaces the value seen here.
                        && !self.in_flight_commits.contains_key(&(group_id.clone(), t.clone(), *p))
                        && match v.expire_timestamp {
                            Some(at) => now >= at,
                            None => now - base.unwrap_or(v.commit_timestamp) >= retention,
                        }
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !expired.is_empty() && self.offsets.group(&group_id).is_some_and(|o| o.len() == expired.len()) {
                emptied.insert(group_id.clone());
            }
            // Removed once the tombstones are durable.
            for (t, p) in &expired {
                fx.write(
                    CoordinatorKey::OffsetCommit { group: group_id.clone(), topic: t.clone(), partition: *p },
                    None,
                );
            }
            if !expired.is_empty() {
                tracing::info!(group = %group_id, offsets = expired.len(), "expired committed offsets");
            }
        }
        // Groups with no members and no offsets left are deleted, as Kafka does (not while a commit for them is in
        // flight: it is an offset they will have).
        let committing: HashSet<&str> = self.in_flight_commits.keys().map(|(g, _, _)| g.as_str()).collect();
        let empty: Vec<String> = self
            .groups
            .iter()
            .filter(|(id, g)| {
                g.is_empty()
                    && (!self.offsets.has_offsets(id) || emptied.contains(*id))
                    && !committing.contains(id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in empty {
            if emptied.contains(&id) {
                // Its offsets' tombstones were just written.
                self.delete_group_metadata(&id, fx);
            } else {
                self.delete_group_records(&id, fx);
            }
            tracing::info!(group = %id, "removed empty group without offsets");
        }
    }
}

/// Kafka's ClassicGroup.validateMember: the member must exist and, when static, be the instance's current member.
pub fn validate_classic_member(g: &ClassicGroup, member_id: &str, instance: Option<&str>) -> Result<(), ResponseError> {
    if let Some(i) = instance {
        match g.static_member_id(i) {
            None => return Err(ResponseError::UnknownMemberId),
            Some(existing) if existing != member_id => return Err(ResponseError::FencedInstanceId),
            Some(_) => {}
        }
    }
    if !g.has_member(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::classic_group::ClassicGroup;
    use super::super::config::GroupConfig;
    use super::super::shard::{Effects, Group, Shard};
    use super::*;

    fn value(offset: i64, commit_timestamp: i64) -> OffsetCommitValue {
        OffsetCommitValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp,
            expire_timestamp: None,
        }
    }

    #[test]
    fn expiry_follows_kafka_rules() {
        let config = GroupConfig { offsets_retention_ms: 60_000, ..GroupConfig::default() };
        let mut shard = Shard::new(0, Arc::new(config));
        let now = now_ms();
        // A standalone consumer's offsets expire by their own commit time.
        shard.offsets.put("solo", "t".into(), 0, value(5, now - 120_000));
        shard.offsets.put("solo", "t".into(), 1, value(6, now));
        // An Empty group's offsets expire from when the group became empty, even if committed long ago.
        let mut empty = ClassicGroup::new("empty".into(), now - 1_000);
        empty.protocol_type = Some("consumer".into());
        shard.groups.insert("empty".into(), Group::Classic(empty));
        shard.offsets.put("empty", "t".into(), 0, value(7, now - 600_000));
        // An explicit expire timestamp (OffsetCommit v2-4 retention) wins.
        shard.offsets.put(
            "explicit",
            "t".into(),
            0,
            OffsetCommitValue { expire_timestamp: Some(now - 1), ..value(8, now) },
        );
        // An old offset whose new commit is in flight is left to that commit.
        shard.offsets.put("busy", "t".into(), 0, value(9, now - 120_000));
        shard.in_flight_commits.insert(("busy".into(), "t".into(), 0), 1);
        let mut fx = Effects::default();
        shard.expire_offsets(&mut fx);
        assert!(shard.offsets.get("solo", "t", 0).is_some(), "removed once the tombstone is durable");
        fx.complete(&mut shard, Ok(()));
        assert!(shard.offsets.get("busy", "t", 0).is_some());
        assert!(shard.offsets.get("solo", "t", 0).is_none());
        assert!(shard.offsets.get("solo", "t", 1).is_some());
        assert!(shard.offsets.get("empty", "t", 0).is_some(), "the group became empty only a second ago");
        assert!(shard.offsets.get("explicit", "t", 0).is_none());
        // A group with neither members nor offsets is removed.
        assert!(!shard.groups.contains_key("explicit"));
        assert!(shard.groups.contains_key("empty"));
    }
}
