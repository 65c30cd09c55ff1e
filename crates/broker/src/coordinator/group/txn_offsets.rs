//! Transactional offset commits (Kafka's pending transactional offsets in OffsetMetadataManager): TxnOffsetCommit
//! writes the offsets to `__consumer_offsets` as a transactional batch with the producer's id and epoch, and keeps
//! them pending per producer. The transaction's marker on the partition settles them: COMMIT makes them the
//! group's committed offsets (unless a plain commit of the same partition came later: the most recent record wins,
//! as in Kafka), ABORT drops them. OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT while a partition
//! has pending offsets. Loading the partition replays the same: transactional records go pending, markers settle
//! them, and what is still open when the load ends stays pending for the marker to come.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::classic_group::{ClassicGroup, ClassicGroupState};
use super::consumer_group::validate_member_epoch;
use super::offsets::{append_error_to_response, validate_classic_member};
use super::records::{CoordinatorKey, OffsetCommitValue};
use super::shard::{Effects, Group, Shard};
use crate::clock::now_ms;
use crate::metadata::MetadataImage;
use crate::txn_markers::TransactionResult;

#[derive(Clone, Debug)]
struct Pending {
    value: OffsetCommitValue,
    /// A plain OffsetCommit of the same partition was written after this record: on COMMIT it stays.
    superseded: bool,
}

type GroupOffsets = BTreeMap<(String, i32), Pending>;

/// producer id → group → (topic, partition) → pending offset.
#[derive(Default)]
pub struct PendingTxnOffsets {
    by_producer: HashMap<i64, HashMap<String, GroupOffsets>>,
}

impl PendingTxnOffsets {
    pub fn put(&mut self, producer_id: i64, group: &str, topic: String, partition: i32, value: OffsetCommitValue) {
        self.by_producer
            .entry(producer_id)
            .or_default()
            .entry(group.to_string())
            .or_default()
            .insert((topic, partition), Pending { value, superseded: false });
    }

    /// A plain commit of (group, topic, partition) was written: it is newer than any pending transactional one.
    pub fn supersede(&mut self, group: &str, topic: &str, partition: i32) {
        for groups in self.by_producer.values_mut() {
            if let Some(p) = groups.get_mut(group).and_then(|o| o.get_mut(&(topic.to_string(), partition))) {
                p.superseded = true;
            }
        }
    }

    /// Partitions of `group` with offsets waiting for a transaction's end.
    pub fn pending_partitions(&self, group: &str) -> HashSet<(String, i32)> {
        self.by_producer.values().filter_map(|g| g.get(group)).flat_map(|o| o.keys().cloned()).collect()
    }

    pub fn remove(&mut self, producer_id: i64, group: &str, topic: &str, partition: i32) {
        let Some(groups) = self.by_producer.get_mut(&producer_id) else { return };
        if let Some(offsets) = groups.get_mut(group) {
            offsets.remove(&(topic.to_string(), partition));
            if offsets.is_empty() {
                groups.remove(group);
            }
        }
        if groups.is_empty() {
            self.by_producer.remove(&producer_id);
        }
    }

    /// Every pending (group, topic, partition) of one of `topics`, of any producer.
    pub fn keys_of_topics(&self, topics: &HashSet<String>) -> Vec<(String, String, i32)> {
        let mut out = Vec::new();
        for groups in self.by_producer.values() {
            for (group, offsets) in groups {
                for (t, p) in offsets.keys() {
                    if topics.contains(t) {
                        out.push((group.clone(), t.clone(), *p));
                    }
                }
            }
        }
        out
    }

    /// An offset tombstone deletes the partition's pending offsets of every producer too (Kafka's replay of a
    /// tombstone), so a later COMMIT marker does not bring them back.
    pub fn remove_all(&mut self, group: &str, topic: &str, partition: i32) {
        let producers: Vec<i64> = self.by_producer.keys().copied().collect();
        for producer_id in producers {
            self.remove(producer_id, group, topic, partition);
        }
    }

    fn take(&mut self, producer_id: i64) -> Option<HashMap<String, GroupOffsets>> {
        self.by_producer.remove(&producer_id)
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_producer.is_empty()
    }
}

fn response(
    req: &TxnOffsetCommitRequest,
    error: impl Fn(&str, i32) -> Option<ResponseError>,
) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse::default().with_topics(
        req.topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error(&t.name.0, p.partition_index).map_or(0, |e| e.code()))
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// Every partition of the request with the same error.
pub fn txn_offset_commit_failed(req: &TxnOffsetCommitRequest, e: ResponseError) -> TxnOffsetCommitResponse {
    response(req, |_, _| Some(e))
}

impl Shard {
    /// TxnOffsetCommit: validate the committer against the group (v3+ carries member, generation and instance id),
    /// then write the offsets as the producer's transactional records and keep them pending.
    pub fn txn_offset_commit(
        &mut self,
        req: TxnOffsetCommitRequest,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<TxnOffsetCommitResponse>,
        fx: &mut Effects,
    ) {
        let group_id = req.group_id.0.to_string();
        if let Err(e) = self.validate_txn_offset_commit(&req) {
            let _ = tx.send(response(&req, |_, _| Some(e)));
            return;
        }
        let producer_id = req.producer_id.0;
        let now = now_ms();
        let mut errors: HashMap<(String, i32), ResponseError> = HashMap::new();
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
                    expire_timestamp: None,
                };
                fx.write_transactional(
                    producer_id,
                    req.producer_epoch,
                    CoordinatorKey::OffsetCommit {
                        group: group_id.clone(),
                        topic: topic.clone(),
                        partition: p.partition_index,
                    },
                    Some(value.encode()),
                );
                // Pending once durable (the runtime hands the record back to `on_committed`), not here.
            }
        }
        if !self.groups.contains_key(&group_id) {
            // Kafka creates a simple group for a commit from outside group management (generation -1).
            self.groups.insert(group_id.clone(), Group::Classic(ClassicGroup::new(group_id.clone(), now)));
        }
        let resp = response(&req, |t, p| errors.get(&(t.to_string(), p)).copied());
        fx.reply_transactional(producer_id, tx, resp, |mut resp, e| {
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

    /// Kafka's validateTransactionalOffsetCommit: an unknown group is accepted only from outside group management
    /// (generation < 0); otherwise the group validates as for OffsetCommit, except that the member fields are
    /// optional (older versions do not carry them) and a stale KIP-848 member epoch reads ILLEGAL_GENERATION.
    fn validate_txn_offset_commit(&self, req: &TxnOffsetCommitRequest) -> Result<(), ResponseError> {
        let generation = req.generation_id;
        let member_id = req.member_id.as_str();
        let instance = req.group_instance_id.as_ref().map(|i| i.as_str());
        match self.groups.get(req.group_id.0.as_str()) {
            None if generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration),
            Some(Group::Classic(g)) => {
                if g.is(ClassicGroupState::Dead) {
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
                if generation < 0 && g.is(ClassicGroupState::Empty) {
                    return Ok(());
                }
                if generation >= 0 || !member_id.is_empty() || instance.is_some() {
                    validate_classic_member(g, member_id, instance)?;
                    if generation != g.generation_id {
                        return Err(ResponseError::IllegalGeneration);
                    }
                }
                if g.is(ClassicGroupState::CompletingRebalance) {
                    return Err(ResponseError::RebalanceInProgress);
                }
                Ok(())
            }
            Some(Group::Consumer(g)) => {
                if generation < 0 && g.members.is_empty() {
                    return Ok(());
                }
                if generation < 0 && member_id.is_empty() && instance.is_none() {
                    return Ok(());
                }
                let m = g.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
                validate_member_epoch(generation, m.member_epoch).map_err(|e| match e {
                    ResponseError::StaleMemberEpoch => ResponseError::IllegalGeneration,
                    other => other,
                })
            }
        }
    }

    /// The producer's transaction ended on this partition (its marker is durable, or was replayed on load).
    pub fn complete_transaction(&mut self, producer_id: i64, result: TransactionResult) {
        let Some(groups) = self.txn_offsets.take(producer_id) else { return };
        if result == TransactionResult::Abort {
            return;
        }
        for (group, offsets) in groups {
            for ((topic, partition), pending) in offsets {
                if !pending.superseded {
                    self.offsets.put(&group, topic, partition, pending.value);
                }
            }
            if !self.groups.contains_key(&group) {
                let g = ClassicGroup::new(group.clone(), now_ms());
                self.groups.insert(group.clone(), Group::Classic(g));
            }
        }
    }

    /// Load: a transactional OffsetCommit record of `producer_id`.
    pub fn replay_transactional(&mut self, producer_id: i64, key: &[u8], value: Option<&[u8]>) {
        match (CoordinatorKey::decode(key), value.map(OffsetCommitValue::decode)) {
            (Ok(CoordinatorKey::OffsetCommit { group, topic, partition }), Some(Ok(v))) => {
                self.txn_offsets.put(producer_id, &group, topic, partition, v);
            }
            (Ok(CoordinatorKey::OffsetCommit { .. }), Some(Err(e))) => {
                tracing::warn!(partition = self.partition_index, error = %e, "skipping unreadable transactional offset commit value")
            }
            (Ok(_), _) => {}
            (Err(e), _) => {
                tracing::warn!(partition = self.partition_index, error = %e, "skipping unreadable transactional key")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::GroupConfig;
    use super::*;

    fn value(offset: i64) -> OffsetCommitValue {
        OffsetCommitValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 1,
            expire_timestamp: None,
        }
    }

    #[test]
    fn commit_applies_abort_drops_and_later_plain_commits_win() {
        let mut shard = Shard::new(0, Arc::new(GroupConfig::default()));
        shard.txn_offsets.put(7, "g", "t".into(), 0, value(10));
        shard.txn_offsets.put(7, "g", "t".into(), 1, value(11));
        shard.txn_offsets.put(8, "g", "t".into(), 2, value(12));
        assert_eq!(shard.txn_offsets.pending_partitions("g").len(), 3);
        // A plain commit of t-1 after the transactional one: it wins when the transaction commits.
        shard.offsets.put("g", "t".into(), 1, value(99));
        shard.txn_offsets.supersede("g", "t", 1);
        shard.complete_transaction(7, TransactionResult::Commit);
        assert_eq!(shard.offsets.get("g", "t", 0).map(|v| v.offset), Some(10));
        assert_eq!(shard.offsets.get("g", "t", 1).map(|v| v.offset), Some(99));
        shard.complete_transaction(8, TransactionResult::Abort);
        assert!(shard.offsets.get("g", "t", 2).is_none());
        assert!(shard.txn_offsets.is_empty());
    }
}
