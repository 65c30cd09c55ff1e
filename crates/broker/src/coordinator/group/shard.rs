//! One coordinator shard per hosted `__consumer_offsets` partition (Kafka's GroupCoordinatorShard run by the
//! CoordinatorRuntime, `coordinator/runtime.rs`): a single task owns the state of every group that hashes to the
//! partition, handles the requests and timers one at a time (so no rebalance race needs a lock), and writes the
//! records that each change produces to the partition. Answers that depend on a write are released once the write
//! is durable.
//!
//! Committed offsets (plain and transactional) change only when their records are durable: the runtime hands the
//! written records back (`on_committed`) and they are replayed as the load replays them, so OffsetFetch never sees an
//! offset whose write has not completed, and a failed write changes nothing. Group membership is applied when a
//! request is handled, as before: rebalances are driven by it, and no read exposes it as durable.
//!
//! The state is rebuilt from the partition when the shard starts, so a shard can later start on whichever
//! broker leads the partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::classic_group::{ClassicGroup, ClassicGroupState};
use super::config::GroupConfig;
use super::consumer_group::ConsumerGroup;
use super::consumer_records::{self, GroupRecords, LoadingGroup};
use super::offsets::OffsetStore;
use super::records::{CoordinatorKey, GroupMetadataValue, OffsetCommitValue};
use super::timer::Timers;
use super::txn_offsets::PendingTxnOffsets;
use crate::coordinator::runtime::{CoordinatorRecord, CoordinatorShard, Writes};
use crate::metadata::MetadataImage;
use crate::txn_markers::TransactionResult;

/// A group of either protocol; one id names one group.
pub enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

impl Group {
    /// No members: the group may be deleted, and its offsets expire from when it became so.
    pub fn is_empty(&self) -> bool {
        match self {
            Group::Classic(g) => g.members.is_empty() && g.pending_members.is_empty(),
            Group::Consumer(g) => g.members.is_empty(),
        }
    }

    /// The names ListGroups v5 reports as the group type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Group::Classic(_) => "classic",
            Group::Consumer(_) => "consumer",
        }
    }

    pub fn state_name(&self) -> &'static str {
        match self {
            Group::Classic(g) => g.state.name(),
            Group::Consumer(g) => g.state_name(),
        }
    }

    pub fn protocol_type(&self) -> String {
        match self {
            Group::Classic(g) => g.protocol_type.clone().unwrap_or_default(),
            Group::Consumer(_) => "consumer".into(),
        }
    }
}

/// What handling requests produced: records to write and answers released once they are written (the runtime's
/// `Writes`, with the group coordinator's record keys).
pub type Effects = Writes<Shard>;

impl Writes<Shard> {
    pub fn write(&mut self, key: CoordinatorKey, value: Option<Bytes>) {
        self.append_record(key.encode(), value);
    }

    /// A record of a producer's transaction (TxnOffsetCommit): written as that producer's transactional batch.
    pub fn write_transactional(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        key: CoordinatorKey,
        value: Option<Bytes>,
    ) {
        self.append_transactional(producer_id, producer_epoch, key.encode(), value);
    }

    /// A record whose key is already encoded.
    pub fn write_encoded(&mut self, key: Bytes, value: Option<Bytes>) {
        self.append_record(key, value);
    }
}

/// Named deadlines, as Kafka names its coordinator timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A member's (or pending member's) session: expires without a heartbeat.
    Heartbeat {
        group: String,
        member: String,
    },
    /// The end of a join phase (initial delay, or the rebalance timeout).
    Join {
        group: String,
    },
    /// Members that received the new generation must SyncGroup within the rebalance timeout.
    Sync {
        group: String,
    },
    /// A KIP-848 member must revoke partitions within its rebalance timeout.
    Revocation {
        group: String,
        member: String,
    },
    OffsetExpiry,
}

pub enum TimerAction {
    HeartbeatExpired { group: String, member: String },
    CompleteJoin { group: String },
    InitialRebalance { group: String, delay_ms: i32, remaining_ms: i32 },
    SyncExpired { group: String, generation: i32 },
    ConsumerSessionExpired { group: String, member: String },
    ConsumerRevocationExpired { group: String, member: String, epoch: i32 },
    ExpireOffsets,
}

/// A group described for DescribeGroups (classic) — Kafka's DescribedGroup without the wire shaping.
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    pub group_type: &'static str,
}

/// OffsetFetch's answer: (topic, partition, committed offset if any).
pub type FetchedOffsets = Vec<(String, i32, Option<OffsetCommitValue>)>;

/// OffsetFetch with require_stable: the offsets, and the partitions with pending transactional offsets.
pub type StableOffsets = (FetchedOffsets, std::collections::HashSet<(String, i32)>);

/// For lag: the committed offsets (topic, partition, offset) and the topics the group consumes.
pub type GroupOffsets = Option<(Vec<(String, i32, i64)>, Vec<String>)>;

/// The requests a shard serves. Each carries the channel its answer goes back on.
pub enum Request {
    Join {
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<JoinGroupResponse>,
    },
    Sync {
        req: SyncGroupRequest,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<SyncGroupResponse>,
    },
    Heartbeat {
        req: HeartbeatRequest,
        tx: oneshot::Sender<HeartbeatResponse>,
    },
    /// Members normalised to the v3+ batch form.
    Leave {
        group_id: String,
        members: Vec<leave_group_request::MemberIdentity>,
        tx: oneshot::Sender<LeaveGroupResponse>,
    },
    OffsetCommit {
        req: OffsetCommitRequest,
        version: i16,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<OffsetCommitResponse>,
    },
    OffsetFetch {
        group_id: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
        /// (member id, member epoch) of a KIP-848 member (OffsetFetch v9+), validated against the group.
        member: Option<(String, i32)>,
        tx: oneshot::Sender<Result<FetchedOffsets, ResponseError>>,
    },
    OffsetDelete {
        req: OffsetDeleteRequest,
        tx: oneshot::Sender<OffsetDeleteResponse>,
    },
    DescribeGroup {
        group_id: String,
        tx: oneshot::Sender<describe_groups_response::DescribedGroup>,
    },
    ListGroups {
        tx: oneshot::Sender<Vec<ListedGroup>>,
    },
    DeleteGroup {
        group_id: String,
        tx: oneshot::Sender<Option<ResponseError>>,
    },
    ConsumerHeartbeat {
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        client_id: String,
        client_host: String,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<ConsumerGroupHeartbeatResponse>,
    },
    ConsumerDescribe {
        group_id: String,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<consumer_group_describe_response::DescribedGroup>,
    },
    /// Committed offsets and the topics the group consumes (for lag).
    GroupOffsets {
        group_id: String,
        tx: oneshot::Sender<GroupOffsets>,
    },
    TxnOffsetCommit {
        req: TxnOffsetCommitRequest,
        image: Arc<MetadataImage>,
        tx: oneshot::Sender<TxnOffsetCommitResponse>,
    },
    /// A transaction's marker is durable on this partition: settle the producer's pending offsets.
    CompleteTransaction {
        producer_id: i64,
        result: TransactionResult,
        tx: oneshot::Sender<()>,
    },
    /// Topics were deleted from the metadata: drop every group's offsets for them.
    TopicsDeleted {
        topics: std::collections::HashSet<String>,
    },
    /// OffsetFetch with require_stable: the offsets plus the partitions whose offsets a transaction may still change.
    OffsetFetchStable {
        group_id: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
        member: Option<(String, i32)>,
        tx: oneshot::Sender<Result<StableOffsets, ResponseError>>,
    },
}

pub struct Shard {
    pub partition_index: i32,
    pub config: Arc<GroupConfig>,
    pub groups: HashMap<String, Group>,
    pub offsets: OffsetStore,
    pub txn_offsets: PendingTxnOffsets,
    pub timers: Timers<TimerKey, TimerAction>,
    /// What the partition holds for each KIP-848 group, so a change writes only the records that differ.
    consumer_records: HashMap<String, GroupRecords>,
    /// KIP-848 groups being rebuilt while the shard loads.
    loading: HashMap<String, LoadingGroup>,
    /// The metadata when the shard started: offsets loaded for topics it does not have belong to topics deleted
    /// while the shard was not running (or before tombstones were written), and are deleted after the load.
    image_at_start: Option<Arc<MetadataImage>>,
    /// Offsets whose commit is written but not yet durable, with how many such commits: offset expiry leaves them
    /// alone (the committed value it sees is about to be replaced).
    pub(super) in_flight_commits: HashMap<(String, String, i32), u32>,
}

impl Shard {
    pub fn new(partition_index: i32, config: Arc<GroupConfig>) -> Shard {
        Shard {
            partition_index,
            config,
            groups: HashMap::new(),
            offsets: OffsetStore::default(),
            txn_offsets: PendingTxnOffsets::default(),
            timers: Timers::default(),
            consumer_records: HashMap::new(),
            loading: HashMap::new(),
            image_at_start: None,
            in_flight_commits: HashMap::new(),
        }
    }

    /// See `image_at_start`.
    pub fn with_image(mut self, image: Arc<MetadataImage>) -> Shard {
        self.image_at_start = Some(image);
        self
    }

    /// After loading: offsets of topics the metadata no longer has are deleted, as if their deletion had been seen.
    fn drop_offsets_of_deleted_topics(&mut self, fx: &mut Effects) {
        let Some(image) = self.image_at_start.take() else { return };
        let gone: std::collections::HashSet<String> = self
            .offsets
            .group_ids()
            .iter()
            .filter_map(|g| self.offsets.group(g))
            .flat_map(|o| o.keys().map(|(t, _)| t.clone()))
            .filter(|t| image.topic(t).is_none())
            .collect();
        if !gone.is_empty() {
            tracing::info!(partition = self.partition_index, topics = ?gone, "deleting offsets of deleted topics");
            self.on_topics_deleted(&gone, fx);
        }
    }

    /// Applies one record of the partition while loading (Kafka's replay).
    pub fn replay(&mut self, raw_key: &[u8], value: Option<&[u8]>) {
        let key = match CoordinatorKey::decode(raw_key) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(partition = self.partition_index, error = %e, "skipping unreadable __consumer_offsets key");
                return;
            }
        };
        match key {
            CoordinatorKey::OffsetCommit { group, topic, partition } => match value {
                Some(v) => match OffsetCommitValue::decode(v) {
                    Ok(v) => {
                        if !self.groups.contains_key(&group) {
                            let g = ClassicGroup::new(group.clone(), v.commit_timestamp);
                            self.groups.insert(group.clone(), Group::Classic(g));
                        }
                        // A plain commit after a transactional one is the most recent record for the partition.
                        self.txn_offsets.supersede(&group, &topic, partition);
                        self.offsets.put(&group, topic, partition, v);
                    }
                    Err(e) => tracing::warn!(group = %group, error = %e, "skipping unreadable offset commit value"),
                },
                None => {
                    self.offsets.remove(&group, &topic, partition);
                    self.txn_offsets.remove_all(&group, &topic, partition);
                }
            },
            CoordinatorKey::GroupMetadata { group } => match value {
                Some(v) => match GroupMetadataValue::decode(v) {
                    Ok(v) => {
                        self.groups.insert(group.clone(), Group::Classic(ClassicGroup::from_record(group, v)));
                    }
                    Err(e) => tracing::warn!(group = %group, error = %e, "skipping unreadable group metadata value"),
                },
                None => {
                    if matches!(self.groups.get(&group), Some(Group::Classic(_))) {
                        self.groups.remove(&group);
                    }
                }
            },
            CoordinatorKey::ConsumerGroupMetadata { ref group }
            | CoordinatorKey::ConsumerGroupPartitionMetadata { ref group }
            | CoordinatorKey::ConsumerGroupMemberMetadata { ref group, .. }
            | CoordinatorKey::ConsumerGroupTargetAssignmentMetadata { ref group }
            | CoordinatorKey::ConsumerGroupTargetAssignmentMember { ref group, .. }
            | CoordinatorKey::ConsumerGroupCurrentMemberAssignment { ref group, .. } => {
                let loading = self.loading.entry(group.clone()).or_default();
                if let Err(e) = loading.replay(&key, &Bytes::copy_from_slice(raw_key), value) {
                    tracing::warn!(group = %group, error = %e, "skipping unreadable consumer group record");
                }
            }
            CoordinatorKey::Other(_) => {}
        }
    }

    /// After loading: members of loaded groups must heartbeat within their session timeout (Kafka's onLoaded),
    /// and offset expiry starts ticking.
    pub fn rebuild_after_load(&mut self) {
        // KIP-848 groups take the place of any classic placeholder an offset record created; their members must
        // heartbeat within the session timeout (and revoke within the rebalance timeout), as after a join.
        let mut consumer_sessions = Vec::new();
        for (id, loading) in std::mem::take(&mut self.loading) {
            let Some((g, records)) = loading.finish() else { continue };
            for m in g.members.values() {
                consumer_sessions.push((
                    id.clone(),
                    m.member_id.clone(),
                    m.state,
                    m.member_epoch,
                    m.rebalance_timeout_ms,
                ));
            }
            self.consumer_records.insert(id.clone(), records);
            self.groups.insert(id, Group::Consumer(g));
        }
        for (group, member, state, epoch, rebalance_timeout) in consumer_sessions {
            self.timers.schedule(
                TimerKey::Heartbeat { group: group.clone(), member: member.clone() },
                Duration::from_millis(self.config.consumer_session_timeout_ms.max(0) as u64),
                TimerAction::ConsumerSessionExpired { group: group.clone(), member: member.clone() },
            );
            if state == super::consumer_group::MemberState::UnrevokedPartitions {
                self.timers.schedule(
                    TimerKey::Revocation { group: group.clone(), member: member.clone() },
                    Duration::from_millis(rebalance_timeout.max(0) as u64),
                    TimerAction::ConsumerRevocationExpired { group, member, epoch },
                );
            }
        }
        // Groups with no members and no offsets left (a deleted group's tombstones were compacted away, or the
        // group record was the last thing written) are not kept. Empty KIP-848 groups stay until offset expiry
        // deletes them with tombstones.
        let offsets = &self.offsets;
        self.groups.retain(|id, g| {
            !g.is_empty()
                || offsets.has_offsets(id)
                || matches!(g, Group::Classic(c) if c.protocol_type.is_some())
                || matches!(g, Group::Consumer(_))
        });
        let mut sessions = Vec::new();
        for (id, g) in &self.groups {
            if let Group::Classic(g) = g {
                for m in &g.members {
                    sessions.push((id.clone(), m.member_id.clone(), m.session_timeout_ms));
                }
            }
        }
        for (group, member, timeout) in sessions {
            self.schedule_heartbeat_expiry(&group, &member, timeout);
        }
        self.timers.schedule(
            TimerKey::OffsetExpiry,
            Duration::from_millis(self.config.offsets_retention_check_interval_ms),
            TimerAction::ExpireOffsets,
        );
    }

    pub fn schedule_heartbeat_expiry(&mut self, group: &str, member: &str, timeout_ms: i32) {
        self.timers.schedule(
            TimerKey::Heartbeat { group: group.to_string(), member: member.to_string() },
            Duration::from_millis(timeout_ms.max(0) as u64),
            TimerAction::HeartbeatExpired { group: group.to_string(), member: member.to_string() },
        );
    }

    fn handle(&mut self, r: Request, fx: &mut Effects) {
        let Some(r) = refuse_oversized_strings(r) else { return };
        match r {
            Request::Join { req, version, client_id, client_host, image, tx } => {
                let group_id = req.group_id.0.to_string();
                self.classic_join(req, version, client_id, client_host, &image, tx, fx);
                // An empty consumer group a classic member joins becomes a classic group.
                self.persist_consumer_group(&group_id, fx);
            }
            // Classic members of a KIP-848 group are served from the group's server-side assignment.
            Request::Sync { req, image, tx } => match self.groups.get(req.group_id.0.as_str()) {
                Some(Group::Consumer(_)) => self.classic_sync_to_consumer_group(req, &image, tx),
                _ => self.classic_sync(req, tx, fx),
            },
            Request::Heartbeat { req, tx } => {
                let resp = match self.groups.get(req.group_id.0.as_str()) {
                    Some(Group::Consumer(_)) => self.classic_heartbeat_to_consumer_group(req),
                    _ => self.classic_heartbeat(req),
                };
                let _ = tx.send(resp);
            }
            Request::Leave { group_id, members, tx } => match self.groups.get(&group_id) {
                Some(Group::Consumer(_)) => {
                    self.classic_leave_consumer_group(&group_id, members, tx, fx);
                    self.maybe_downgrade_consumer_group(&group_id, fx);
                    self.persist_consumer_group(&group_id, fx);
                }
                _ => self.classic_leave(group_id, members, tx, fx),
            },
            Request::OffsetCommit { req, version, image, tx } => self.offset_commit(req, version, image, tx, fx),
            Request::OffsetFetch { group_id, topics, member, tx } => {
                let _ = tx.send(self.offset_fetch(&group_id, topics, member));
            }
            Request::OffsetDelete { req, tx } => self.offset_delete(req, tx, fx),
            Request::DescribeGroup { group_id, tx } => {
                let _ = tx.send(self.describe_group(&group_id));
            }
            Request::ListGroups { tx } => {
                let _ = tx.send(self.list_groups());
            }
            Request::DeleteGroup { group_id, tx } => self.delete_group(&group_id, tx, fx),
            Request::ConsumerHeartbeat { req, version, client_id, client_host, image, tx } => {
                let group_id = req.group_id.0.to_string();
                self.consumer_heartbeat(req, version, client_id, client_host, &image, tx, fx);
                self.maybe_downgrade_consumer_group(&group_id, fx);
                self.persist_consumer_group(&group_id, fx);
            }
            Request::ConsumerDescribe { group_id, image, tx } => {
                let _ = tx.send(self.consumer_describe(&group_id, &image));
            }
            Request::GroupOffsets { group_id, tx } => {
                let _ = tx.send(self.group_offsets(&group_id));
            }
            Request::TxnOffsetCommit { req, image, tx } => self.txn_offset_commit(req, image, tx, fx),
            Request::CompleteTransaction { producer_id, result, tx } => {
                self.complete_transaction(producer_id, result);
                let _ = tx.send(());
            }
            Request::TopicsDeleted { topics } => self.on_topics_deleted(&topics, fx),
            Request::OffsetFetchStable { group_id, topics, member, tx } => {
                let unstable = self.txn_offsets.pending_partitions(&group_id);
                let _ = tx.send(self.offset_fetch(&group_id, topics, member).map(|o| (o, unstable)));
            }
        }
    }

    fn on_timer(&mut self, action: TimerAction, fx: &mut Effects) {
        match action {
            TimerAction::HeartbeatExpired { group, member } => self.classic_heartbeat_expired(&group, &member, fx),
            TimerAction::CompleteJoin { group } => {
                let Shard { groups, timers, config, .. } = self;
                if let Some(Group::Classic(g)) = groups.get_mut(&group) {
                    if g.is(ClassicGroupState::PreparingRebalance) {
                        super::classic::complete_join(g, &mut super::classic::Env { timers, config, fx });
                    }
                }
            }
            TimerAction::InitialRebalance { group, delay_ms, remaining_ms } => {
                self.initial_rebalance_elapsed(&group, delay_ms, remaining_ms, fx)
            }
            TimerAction::SyncExpired { group, generation } => self.classic_sync_expired(&group, generation, fx),
            TimerAction::ConsumerSessionExpired { group, member } => {
                self.consumer_session_expired(&group, &member, fx);
                self.maybe_downgrade_consumer_group(&group, fx);
                self.persist_consumer_group(&group, fx);
            }
            TimerAction::ConsumerRevocationExpired { group, member, epoch } => {
                self.consumer_revocation_expired(&group, &member, epoch, fx);
                self.maybe_downgrade_consumer_group(&group, fx);
                self.persist_consumer_group(&group, fx);
            }
            TimerAction::ExpireOffsets => {
                self.expire_offsets(fx);
                self.timers.schedule(
                    TimerKey::OffsetExpiry,
                    Duration::from_millis(self.config.offsets_retention_check_interval_ms),
                    TimerAction::ExpireOffsets,
                );
            }
        }
    }

    /// Writes the tombstones that delete a group: its offsets and its metadata.
    pub fn delete_group_records(&mut self, group_id: &str, fx: &mut Effects) {
        let keys: Vec<(String, i32)> =
            self.offsets.group(group_id).map(|o| o.keys().cloned().collect()).unwrap_or_default();
        // The offsets go when the tombstones are durable.
        for (t, p) in keys {
            fx.write(CoordinatorKey::OffsetCommit { group: group_id.to_string(), topic: t, partition: p }, None);
        }
        self.delete_group_metadata(group_id, fx);
    }

    /// Removes the group and writes the tombstones of its metadata (not of its offsets).
    pub fn delete_group_metadata(&mut self, group_id: &str, fx: &mut Effects) {
        match self.groups.remove(group_id) {
            Some(Group::Classic(_)) => fx.write(CoordinatorKey::GroupMetadata { group: group_id.to_string() }, None),
            Some(Group::Consumer(_)) => self.persist_consumer_group(group_id, fx),
            None => {}
        }
    }

    /// Writes what changed in a KIP-848 group since its records were last written: changed records, and
    /// tombstones for members that left or for the whole group when it is gone (deleted, or now classic).
    pub fn persist_consumer_group(&mut self, group_id: &str, fx: &mut Effects) {
        let now = match self.groups.get(group_id) {
            Some(Group::Consumer(g)) => Some(g),
            _ => None,
        };
        if now.is_none() && !self.consumer_records.contains_key(group_id) {
            return;
        }
        let before = self.consumer_records.entry(group_id.to_string()).or_default();
        for (k, v) in consumer_records::diff(before, now) {
            fx.write_encoded(k, v);
        }
        if before.is_empty() {
            self.consumer_records.remove(group_id);
        }
    }

    fn group_offsets(&self, group_id: &str) -> GroupOffsets {
        let group = self.groups.get(group_id);
        if group.is_none() && !self.offsets.has_offsets(group_id) {
            return None;
        }
        let committed = self
            .offsets
            .group(group_id)
            .map(|o| o.iter().map(|((t, p), v)| (t.clone(), *p, v.offset)).collect())
            .unwrap_or_default();
        let topics = match group {
            Some(Group::Classic(g)) => g.subscribed_topics().map(|t| t.into_iter().collect()).unwrap_or_default(),
            Some(Group::Consumer(g)) => g.subscribed_topic_names().into_iter().collect(),
            None => Vec::new(),
        };
        Some((committed, topics))
    }
}

impl CoordinatorShard for Shard {
    type Request = Request;

    fn replay(&mut self, record: CoordinatorRecord) {
        match record {
            CoordinatorRecord::Record { key, value } => Shard::replay(self, &key, value.as_deref()),
            CoordinatorRecord::Transactional { producer_id, key, value } => {
                self.replay_transactional(producer_id, &key, value.as_deref())
            }
            CoordinatorRecord::Marker { producer_id, result } => self.complete_transaction(producer_id, result),
        }
    }

    fn on_loaded(&mut self, writes: &mut Effects) {
        self.rebuild_after_load();
        self.drop_offsets_of_deleted_topics(writes);
    }

    fn handle(&mut self, request: Request, writes: &mut Effects) {
        Shard::handle(self, request, writes)
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.timers.next_deadline()
    }

    fn on_timers(&mut self, now: tokio::time::Instant, writes: &mut Effects) {
        while let Some(action) = self.timers.pop_expired(now) {
            self.on_timer(action, writes);
        }
    }

    /// Offsets (plain, transactional, tombstones) are applied from their durable records, as on load. The group
    /// records were applied when their request was handled.
    fn on_committed(&mut self, records: &[CoordinatorRecord]) {
        for r in records {
            match r {
                CoordinatorRecord::Record { key, value } => {
                    if matches!(CoordinatorKey::decode(key), Ok(CoordinatorKey::OffsetCommit { .. })) {
                        Shard::replay(self, key, value.as_deref());
                    }
                }
                CoordinatorRecord::Transactional { producer_id, key, value } => {
                    self.replay_transactional(*producer_id, key, value.as_deref())
                }
                CoordinatorRecord::Marker { .. } => {}
            }
        }
    }

    fn loaded_summary(&self) -> String {
        format!("groups={}", self.groups.len())
    }
}

/// A request whose strings would go into a group record that cannot hold them (an i16 length: group id, member and
/// instance ids, protocol type and names) is answered INVALID_REQUEST here, instead of the strings being truncated
/// in the record. Kafka fails to serialise such a record. Offset metadata is refused per partition
/// (OFFSET_METADATA_TOO_LARGE, `offset_partition_error`).
fn refuse_oversized_strings(r: Request) -> Option<Request> {
    use super::records::fits_record_string as fits;
    let invalid = ResponseError::InvalidRequest;
    match r {
        Request::Join { req, tx, .. }
            if !(fits(&req.group_id)
                && fits(&req.member_id)
                && req.group_instance_id.as_deref().is_none_or(fits)
                && fits(&req.protocol_type)
                && req.protocols.iter().all(|p| fits(&p.name))) =>
        {
            let _ = tx.send(
                JoinGroupResponse::default()
                    .with_error_code(invalid.code())
                    .with_generation_id(-1)
                    .with_member_id(req.member_id),
            );
            None
        }
        Request::Sync { req, tx, .. }
            if !(fits(&req.group_id)
                && fits(&req.member_id)
                && req.group_instance_id.as_deref().is_none_or(fits)
                && req.protocol_type.as_deref().is_none_or(fits)
                && req.protocol_name.as_deref().is_none_or(fits)) =>
        {
            let _ = tx.send(SyncGroupResponse::default().with_error_code(invalid.code()));
            None
        }
        Request::OffsetCommit { req, tx, .. } if !fits(&req.group_id) => {
            let _ = tx.send(super::offsets::commit_response(&req, |_, _| Some(invalid)));
            None
        }
        Request::TxnOffsetCommit { req, tx, .. } if !fits(&req.group_id) => {
            let _ = tx.send(super::txn_offsets::txn_offset_commit_failed(&req, invalid));
            None
        }
        r => Some(r),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::metadata::MetadataRecord;

    pub(crate) fn image_with(topic: &str) -> Arc<MetadataImage> {
        let mut img = MetadataImage::default();
        let topic_id = uuid::Uuid::new_v4();
        img.apply(&MetadataRecord::TopicRecord { name: topic.to_string(), topic_id });
        img.apply(&MetadataRecord::PartitionRecord {
            topic_id,
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
        });
        Arc::new(img)
    }

    pub(crate) fn commit_request(topic: &str, offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])])
    }

    /// A write of `__consumer_offsets` that fails with a storage error (a full disk) makes the coordinator
    /// unavailable to the client, which backs off, rather than NOT_COORDINATOR, which sent it straight back.
    #[test]
    fn a_storage_error_answers_coordinator_not_available() {
        let mut shard = Shard::new(0, Arc::new(GroupConfig::default()));
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        shard.handle(
            Request::OffsetCommit { req: commit_request("t", 5), version: 8, image: image_with("t"), tx },
            &mut fx,
        );
        assert_eq!(fx.records().len(), 1);
        fx.complete(&mut shard, Err(ResponseError::KafkaStorageError));
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, ResponseError::CoordinatorNotAvailable.code());
        assert!(shard.offsets.get("g", "t", 0).is_none(), "a failed write changes nothing");
    }

    /// Strings longer than a record string can hold are refused, not truncated into the record.
    #[test]
    fn oversized_strings_are_refused_not_truncated() {
        let mut shard =
            Shard::new(0, Arc::new(GroupConfig { offset_metadata_max_bytes: 1 << 20, ..GroupConfig::default() }));
        let long = "x".repeat(i16::MAX as usize + 1);

        // Offset metadata over a record string, although offset.metadata.max.bytes would allow it.
        let mut req = commit_request("t", 5);
        req.topics[0].partitions[0].committed_metadata = Some(StrBytes::from_string(long.clone()));
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        shard.handle(Request::OffsetCommit { req, version: 8, image: image_with("t"), tx }, &mut fx);
        assert!(fx.records().is_empty());
        fx.complete(&mut shard, Ok(()));
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, ResponseError::OffsetMetadataTooLarge.code());

        // A group id over a record string.
        let req = commit_request("t", 5).with_group_id(GroupId(StrBytes::from_string(long.clone())));
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        shard.handle(Request::OffsetCommit { req, version: 8, image: image_with("t"), tx }, &mut fx);
        assert!(fx.records().is_empty());
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, ResponseError::InvalidRequest.code());

        // A protocol name over a record string in JoinGroup.
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("j")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default().with_name(StrBytes::from_string(long))
            ]);
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        let join = Request::Join {
            req,
            version: 9,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            image: image_with("t"),
            tx,
        };
        shard.handle(join, &mut fx);
        assert_eq!(rx.try_recv().unwrap().error_code, ResponseError::InvalidRequest.code());
        assert!(!shard.groups.contains_key("j"));
    }

    /// OffsetCommit v2-v4's retention time is any i64 from the client: the expire timestamp saturates.
    #[test]
    fn a_huge_retention_time_does_not_overflow() {
        let mut shard = Shard::new(0, Arc::new(GroupConfig::default()));
        let req = commit_request("t", 5).with_retention_time_ms(i64::MAX);
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        shard.handle(Request::OffsetCommit { req, version: 2, image: image_with("t"), tx }, &mut fx);
        fx.complete(&mut shard, Ok(()));
        assert_eq!(rx.try_recv().unwrap().topics[0].partitions[0].error_code, 0);
        assert_eq!(shard.offsets.get("g", "t", 0).unwrap().expire_timestamp, Some(i64::MAX));
    }

    fn committed(offset: i64) -> OffsetCommitValue {
        OffsetCommitValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
            expire_timestamp: None,
        }
    }

    /// Offsets of a topic deleted while the shard was not running (or before its tombstones were written) are
    /// deleted, with tombstones, once it has loaded; pending transactional offsets of a deleted topic go too.
    #[test]
    fn offsets_of_deleted_topics_are_deleted_after_the_load() {
        let mut shard = Shard::new(0, Arc::new(GroupConfig::default())).with_image(image_with("t"));
        shard.offsets.put("g", "t".into(), 0, committed(1));
        shard.offsets.put("g", "gone".into(), 0, committed(2));
        shard.offsets.put("h", "gone".into(), 3, committed(3));
        shard.txn_offsets.put(9, "g", "gone".into(), 1, committed(4));
        let mut fx = Effects::default();
        shard.drop_offsets_of_deleted_topics(&mut fx);
        assert_eq!(fx.records().len(), 3, "a tombstone per committed and pending offset of the deleted topic");
        assert!(fx.records().iter().all(|(_, v)| v.is_none()));
        assert!(shard.offsets.get("g", "gone", 0).is_some(), "deleted once the tombstones are durable");
        fx.complete(&mut shard, Ok(()));
        assert!(shard.offsets.get("g", "t", 0).is_some());
        assert!(shard.offsets.get("g", "gone", 0).is_none() && !shard.offsets.has_offsets("h"));
        assert!(shard.txn_offsets.pending_partitions("g").is_empty());

        // A live deletion of the other topic.
        let mut fx = Effects::default();
        shard.on_topics_deleted(&["t".to_string()].into(), &mut fx);
        assert_eq!(fx.records().len(), 1);
        fx.complete(&mut shard, Ok(()));
        assert!(!shard.offsets.has_offsets("g"));
    }

    use crate::coordinator::runtime::testlog::MemLog;
    use crate::coordinator::runtime::{CoordinatorLog, CoordinatorRuntime, ShardRef};

    fn start(runtime: &CoordinatorRuntime<Shard>, log: &Arc<MemLog>) -> ShardRef<Request> {
        let log: Arc<dyn CoordinatorLog> = log.clone();
        runtime
            .shard(0, Some(log), |_| Shard::new(0, Arc::new(GroupConfig::default())).with_image(image_with("t")))
            .unwrap()
    }

    fn send_commit(shard: &ShardRef<Request>, group: &str, offset: i64) -> oneshot::Receiver<OffsetCommitResponse> {
        let (tx, rx) = oneshot::channel();
        let req = commit_request("t", offset).with_group_id(GroupId(StrBytes::from_string(group.to_string())));
        shard.send_internal(Request::OffsetCommit { req, version: 8, image: image_with("t"), tx }).unwrap();
        rx
    }

    async fn commit(shard: &ShardRef<Request>, group: &str, offset: i64) -> i16 {
        send_commit(shard, group, offset).await.unwrap().topics[0].partitions[0].error_code
    }

    /// What OffsetFetch answers for the group's partition t-0.
    async fn fetch(shard: &ShardRef<Request>, group: &str) -> Option<i64> {
        let (tx, rx) = oneshot::channel();
        let r = Request::OffsetFetch {
            group_id: group.to_string(),
            topics: Some(vec![("t".to_string(), vec![0])]),
            member: None,
            tx,
        };
        shard.send(r).await.unwrap();
        let fetched = rx.await.unwrap().unwrap();
        fetched[0].2.as_ref().map(|v| v.offset)
    }

    /// A commit whose append fails is answered with the mapped error and is not applied: OffsetFetch still returns
    /// the offset committed before it, and a later commit works.
    #[tokio::test]
    async fn a_failed_commit_is_not_visible_to_offset_fetch() {
        let runtime = CoordinatorRuntime::default();
        let log = Arc::new(MemLog::default());
        let shard = start(&runtime, &log);
        assert_eq!(commit(&shard, "g", 3).await, 0);
        *log.fail.lock().unwrap() = Some(ResponseError::KafkaStorageError);
        assert_eq!(commit(&shard, "g", 5).await, ResponseError::CoordinatorNotAvailable.code());
        assert_eq!(fetch(&shard, "g").await, Some(3), "the failed commit changed nothing");
        *log.fail.lock().unwrap() = None;
        assert_eq!(commit(&shard, "g", 7).await, 0);
        assert_eq!(fetch(&shard, "g").await, Some(7));
        // A group's first commit failing leaves it without an offset.
        *log.fail.lock().unwrap() = Some(ResponseError::NotEnoughReplicas);
        assert_eq!(commit(&shard, "fresh", 1).await, ResponseError::CoordinatorNotAvailable.code());
        assert_eq!(fetch(&shard, "fresh").await, None);
    }

    /// While a commit is written but not yet durable, OffsetFetch answers the committed offset, not the pending one;
    /// once it is durable, the commit is answered and visible.
    #[tokio::test]
    async fn offset_fetch_does_not_see_a_commit_in_flight() {
        let runtime = CoordinatorRuntime::default();
        let log = Arc::new(MemLog::default());
        let shard = start(&runtime, &log);
        assert_eq!(commit(&shard, "g", 3).await, 0);
        log.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        let appends = log.appends.load(std::sync::atomic::Ordering::SeqCst);
        let mut pending = send_commit(&shard, "g", 5);
        while log.appends.load(std::sync::atomic::Ordering::SeqCst) == appends {
            tokio::task::yield_now().await;
        }
        assert_eq!(fetch(&shard, "g").await, Some(3), "a commit that is not durable is not visible");
        assert!(pending.try_recv().is_err(), "nor answered");
        log.release();
        assert_eq!(pending.await.unwrap().topics[0].partitions[0].error_code, 0);
        assert_eq!(fetch(&shard, "g").await, Some(5));
    }

    /// Unloading the partition drops its state; loading it again rebuilds the same state from the log.
    #[tokio::test]
    async fn unload_then_reload_rebuilds_the_same_state() {
        let runtime = CoordinatorRuntime::default();
        let log = Arc::new(MemLog::default());
        let shard = start(&runtime, &log);
        for (g, o) in [("a", 1), ("b", 2), ("a", 3), ("c", 4)] {
            assert_eq!(commit(&shard, g, o).await, 0);
        }
        let (tx, rx) = oneshot::channel();
        shard.send(Request::DeleteGroup { group_id: "c".into(), tx }).await.unwrap();
        assert_eq!(rx.await.unwrap(), None);
        let state = |shard: ShardRef<Request>| async move {
            let (tx, rx) = oneshot::channel();
            shard.send(Request::ListGroups { tx }).await.unwrap();
            let mut groups: Vec<(String, &str)> =
                rx.await.unwrap().into_iter().map(|g| (g.group_id, g.state)).collect();
            groups.sort();
            let mut offsets = Vec::new();
            for g in ["a", "b", "c"] {
                offsets.push(fetch(&shard, g).await);
            }
            (groups, offsets)
        };
        let before = state(start(&runtime, &log)).await;
        assert_eq!(before.1, vec![Some(3), Some(2), None]);
        runtime.unload(0).unwrap().await.unwrap();
        assert!(shard.send(Request::ListGroups { tx: oneshot::channel().0 }).await.is_err(), "unloaded");
        let reloaded = start(&runtime, &log);
        assert!(reloaded.started);
        assert_eq!(state(reloaded).await, before);
    }
}
