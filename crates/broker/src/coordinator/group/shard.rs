//! One coordinator shard per hosted `__consumer_offsets` partition (Kafka's GroupCoordinatorShard run by its
//! CoordinatorRuntime): a single task owns the state of every group that hashes to the partition, handles the
//! requests and timers one at a time (so no rebalance race needs a lock), and writes the records that each change
//! produces to the partition. Answers that depend on a write are released once the write is durable.
//!
//! The state is rebuilt from the partition when the shard starts, so a shard can later start on whichever
//! broker leads the partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use tokio::sync::{mpsc, oneshot};

use super::classic_group::{ClassicGroup, ClassicGroupState};
use super::config::GroupConfig;
use super::consumer_group::ConsumerGroup;
use super::consumer_records::{self, GroupRecords, LoadingGroup};
use super::offsets::OffsetStore;
use super::records::{CoordinatorKey, GroupMetadataValue, OffsetCommitValue};
use super::timer::Timers;
use super::txn_offsets::PendingTxnOffsets;
use crate::clock::now_ms;
use crate::metadata::MetadataImage;
use crate::partition::Partition;
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

type AfterWrite = Box<dyn FnOnce(Option<ResponseError>) + Send>;

/// What handling one batch of requests produced: records to append, and answers to release after the append.
#[derive(Default)]
pub struct Effects {
    records: Vec<(Bytes, Option<Bytes>)>,
    /// Records of a producer's transaction (TxnOffsetCommit): written as that producer's transactional batch.
    txn_records: Vec<TxnRecord>,
    after_write: Vec<AfterWrite>,
    /// Answers that depend only on one producer's transactional records (its batch is appended on its own, so a
    /// fenced producer fails alone).
    txn_after_write: Vec<(i64, AfterWrite)>,
}

struct TxnRecord {
    producer_id: i64,
    producer_epoch: i16,
    key: Bytes,
    value: Option<Bytes>,
}

impl Effects {
    pub fn write(&mut self, key: CoordinatorKey, value: Option<Bytes>) {
        self.records.push((key.encode(), value));
    }

    pub fn write_transactional(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        key: CoordinatorKey,
        value: Option<Bytes>,
    ) {
        self.txn_records.push(TxnRecord { producer_id, producer_epoch, key: key.encode(), value });
    }

    /// A record whose key is already encoded.
    pub fn write_encoded(&mut self, key: Bytes, value: Option<Bytes>) {
        self.records.push((key, value));
    }

    /// Sends `resp` once this batch's records are durable; if the write fails, `on_error` rewrites it first.
    pub fn reply<T: Send + 'static>(
        &mut self,
        tx: oneshot::Sender<T>,
        resp: T,
        on_error: impl FnOnce(T, ResponseError) -> T + Send + 'static,
    ) {
        self.after_write.push(after_write(tx, resp, on_error));
    }

    /// `reply` for an answer that depends only on `producer_id`'s transactional records.
    pub fn reply_transactional<T: Send + 'static>(
        &mut self,
        producer_id: i64,
        tx: oneshot::Sender<T>,
        resp: T,
        on_error: impl FnOnce(T, ResponseError) -> T + Send + 'static,
    ) {
        self.txn_after_write.push((producer_id, after_write(tx, resp, on_error)));
    }
}

fn after_write<T: Send + 'static>(
    tx: oneshot::Sender<T>,
    resp: T,
    on_error: impl FnOnce(T, ResponseError) -> T + Send + 'static,
) -> AfterWrite {
    Box::new(move |err| {
        let resp = match err {
            None => resp,
            Some(e) => on_error(resp, e),
        };
        let _ = tx.send(resp);
    })
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
}

/// How many queued requests one loop iteration handles before writing: their records share one append and one
/// fsync (the coordinator runtime's batching), which is what makes many small commits cheap.
const MAX_BATCH: usize = 512;

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
    pub fn on_loaded(&mut self) {
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
        for (t, p) in keys {
            self.offsets.remove(group_id, &t, p);
            fx.write(CoordinatorKey::OffsetCommit { group: group_id.to_string(), topic: t, partition: p }, None);
        }
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

/// One thing the load replays, in log order.
enum Loaded {
    Record(Bytes, Option<Bytes>),
    /// A record of a producer's transaction (a TxnOffsetCommit).
    Transactional(i64, Bytes, Option<Bytes>),
    /// A COMMIT or ABORT marker of a producer's transaction.
    Marker(i64, TransactionResult),
}

/// Reads the whole partition in log order. Blocking.
fn read_partition(p: &Partition) -> Result<Vec<Loaded>, String> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    let end = p.high_watermark();
    while offset < end {
        let r = p.read(offset, 1 << 20, true).map_err(|e| e.to_string())?;
        if r.is_empty() {
            break;
        }
        let mut bytes = r.records.clone();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| e.to_string())?;
        for set in sets {
            for rec in set.records {
                if rec.offset < offset {
                    continue;
                }
                if rec.control {
                    // EndTransactionMarker key: version (i16), type (i16: 0 abort, 1 commit).
                    match rec.key.as_deref().map(|k| k.get(2..4).map(|t| i16::from_be_bytes([t[0], t[1]]))) {
                        Some(Some(0)) => out.push(Loaded::Marker(rec.producer_id, TransactionResult::Abort)),
                        Some(Some(1)) => out.push(Loaded::Marker(rec.producer_id, TransactionResult::Commit)),
                        _ => {}
                    }
                    continue;
                }
                if let Some(k) = rec.key {
                    if rec.transactional {
                        out.push(Loaded::Transactional(rec.producer_id, k, rec.value));
                    } else {
                        out.push(Loaded::Record(k, rec.value));
                    }
                }
            }
        }
        offset = r.last_offset + 1;
    }
    Ok(out)
}

/// One batch of records; with a producer (id, epoch) a transactional batch of that producer.
fn encode_batch(records: &[(Bytes, Option<Bytes>)], producer: Option<(i64, i16)>, now: i64) -> Result<Vec<u8>, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: kafka-protocol splits batches where offset - sequence changes.
            sequence: i as i32,
            timestamp: now,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        recs.iter(),
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .map_err(|e| e.to_string())?;
    Ok(buf.to_vec())
}

/// Appends the records as one batch (a transactional batch of `producer` if given); returns the offset after the
/// last one. Blocking.
fn append(
    p: &Partition,
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
) -> Result<i64, ResponseError> {
    let mut buf = encode_batch(records, producer, now_ms()).map_err(|e| {
        tracing::error!(error = %e, "cannot encode coordinator records");
        ResponseError::UnknownServerError
    })?;
    let headers = strom_log::validate_batches(&buf, u32::MAX).map_err(|e| crate::errors::log_error_code(&e))?;
    let info = p.append_coordinator(&mut buf, headers).map_err(|e| crate::errors::log_error_code(&e))?;
    Ok(info.last_offset + 1)
}

/// One producer's transactional records of a flush.
struct ProducerRecords {
    producer: (i64, i16),
    records: Vec<(Bytes, Option<Bytes>)>,
}

fn by_producer(txn_records: Vec<TxnRecord>) -> Vec<ProducerRecords> {
    let mut out: Vec<ProducerRecords> = Vec::new();
    for r in txn_records {
        let producer = (r.producer_id, r.producer_epoch);
        match out.iter_mut().find(|g| g.producer == producer) {
            Some(g) => g.records.push((r.key, r.value)),
            None => out.push(ProducerRecords { producer, records: vec![(r.key, r.value)] }),
        }
    }
    out
}

/// How often a failing write of coordinator records is logged: clients retry it many times a second, and a line
/// per failure buried the log (a full disk).
const WRITE_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One log line per interval for a repeated failure, with how many were not logged since the last one.
#[derive(Default)]
pub struct LogLimiter {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Some(failures not logged since the last line) when this one is to be logged.
    pub fn admit(&mut self, now: std::time::Instant, interval: Duration) -> Option<u64> {
        if self.last.is_some_and(|l| now.duration_since(l) < interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The shard's task: load, then serve requests and timers until the coordinator drops the sender.
pub async fn run(mut shard: Shard, partition: Arc<Partition>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let started = std::time::Instant::now();
    let p = partition.clone();
    match tokio::task::spawn_blocking(move || read_partition(&p)).await {
        Ok(Ok(records)) => {
            let n = records.len();
            for loaded in &records {
                match loaded {
                    Loaded::Record(k, v) => shard.replay(k, v.as_deref()),
                    Loaded::Transactional(pid, k, v) => shard.replay_transactional(*pid, k, v.as_deref()),
                    Loaded::Marker(pid, result) => shard.complete_transaction(*pid, *result),
                }
            }
            shard.on_loaded();
            tracing::info!(
                partition = shard.partition_index,
                records = n,
                groups = shard.groups.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "group coordinator shard loaded"
            );
        }
        Ok(Err(e)) => {
            // Serving from a partial state would hand out offsets that are not the committed ones.
            tracing::error!(partition = shard.partition_index, error = %e, "cannot load __consumer_offsets partition; shard stays down");
            return;
        }
        Err(e) => {
            tracing::error!(partition = shard.partition_index, error = %e, "shard load task failed");
            return;
        }
    }
    let mut write_failures = LogLimiter::default();
    let mut fx = Effects::default();
    shard.drop_offsets_of_deleted_topics(&mut fx);
    for (producer_id, keys) in flush(&partition, fx, &mut write_failures).await {
        shard.discard_unwritten_txn_offsets(producer_id, &keys);
    }
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let deadline = shard.timers.next_deadline();
        tokio::select! {
            r = rx.recv() => match r {
                Some(r) => batch.push(r),
                None => return,
            },
            _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => {}
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut fx = Effects::default();
        for r in batch.drain(..) {
            shard.handle(r, &mut fx);
        }
        let now = tokio::time::Instant::now();
        while let Some(action) = shard.timers.pop_expired(now) {
            shard.on_timer(action, &mut fx);
        }
        for (producer_id, keys) in flush(&partition, fx, &mut write_failures).await {
            // Not written (a fenced epoch, a storage error): these offsets were never part of the transaction.
            shard.discard_unwritten_txn_offsets(producer_id, &keys);
        }
    }
}

/// Writes what one loop iteration produced and releases the answers once durable: the plain records as one batch,
/// each producer's transactional records as a batch of its own (a fenced producer fails alone). Returns the
/// producers whose transactional records were not written, with the keys of those records.
async fn flush(partition: &Arc<Partition>, fx: Effects, write_failures: &mut LogLimiter) -> Vec<(i64, Vec<Bytes>)> {
    let Effects { records, txn_records, after_write, txn_after_write } = fx;
    if records.is_empty() && txn_records.is_empty() {
        for f in after_write.into_iter().chain(txn_after_write.into_iter().map(|(_, f)| f)) {
            f(None);
        }
        return Vec::new();
    }
    let p = partition.clone();
    let groups = by_producer(txn_records);
    let appended = tokio::task::spawn_blocking(move || {
        let plain = (!records.is_empty()).then(|| append(&p, &records, None));
        let txns: Vec<(i64, Vec<Bytes>, Result<i64, ResponseError>)> = groups
            .into_iter()
            .map(|g| {
                let result = append(&p, &g.records, Some(g.producer));
                (g.producer.0, g.records.into_iter().map(|(k, _)| k).collect(), result)
            })
            .collect();
        (plain, txns)
    })
    .await;
    let (plain, txns) = match appended {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "coordinator append task failed");
            for f in after_write.into_iter().chain(txn_after_write.into_iter().map(|(_, f)| f)) {
                f(Some(ResponseError::UnknownServerError));
            }
            return Vec::new();
        }
    };
    let mut end = None;
    let mut now_failed: Vec<(AfterWrite, ResponseError)> = Vec::new();
    let mut durable: Vec<AfterWrite> = Vec::new();
    match plain {
        Some(Err(e)) => {
            if let Some(suppressed) = write_failures.admit(std::time::Instant::now(), WRITE_FAILURE_LOG_INTERVAL) {
                tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, suppressed, "writing coordinator records failed (suppressed: further failures since the last line)");
            }
            now_failed.extend(after_write.into_iter().map(|f| (f, e)));
        }
        Some(Ok(e)) => {
            end = Some(e);
            durable.extend(after_write);
        }
        None => durable.extend(after_write),
    }
    let mut failed_producers = Vec::new();
    let mut txn_errors: HashMap<i64, ResponseError> = HashMap::new();
    for (producer_id, keys, result) in txns {
        match result {
            Ok(e) => end = end.max(Some(e)),
            Err(e) => {
                tracing::debug!(producer_id, error = %e, "transactional offset commit not written");
                txn_errors.insert(producer_id, e);
                failed_producers.push((producer_id, keys));
            }
        }
    }
    for (producer_id, f) in txn_after_write {
        match txn_errors.get(&producer_id) {
            Some(e) => now_failed.push((f, *e)),
            None => durable.push(f),
        }
    }
    for (f, e) in now_failed {
        f(Some(e));
    }
    let p = partition.clone();
    tokio::spawn(async move {
        if let Some(end) = end {
            p.wait_durable(end).await;
        }
        for f in durable {
            f(None);
        }
    });
    failed_producers
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
        assert_eq!(fx.records.len(), 1);
        for f in fx.after_write {
            f(Some(ResponseError::KafkaStorageError));
        }
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, ResponseError::CoordinatorNotAvailable.code());
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
        assert!(fx.records.is_empty());
        for f in fx.after_write {
            f(None);
        }
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.topics[0].partitions[0].error_code, ResponseError::OffsetMetadataTooLarge.code());

        // A group id over a record string.
        let req = commit_request("t", 5).with_group_id(GroupId(StrBytes::from_string(long.clone())));
        let (tx, mut rx) = oneshot::channel();
        let mut fx = Effects::default();
        shard.handle(Request::OffsetCommit { req, version: 8, image: image_with("t"), tx }, &mut fx);
        assert!(fx.records.is_empty());
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
        for f in fx.after_write {
            f(None);
        }
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
        assert_eq!(fx.records.len(), 3, "a tombstone per committed and pending offset of the deleted topic");
        assert!(fx.records.iter().all(|(_, v)| v.is_none()));
        assert!(shard.offsets.get("g", "t", 0).is_some());
        assert!(shard.offsets.get("g", "gone", 0).is_none() && !shard.offsets.has_offsets("h"));
        assert!(shard.txn_offsets.pending_partitions("g").is_empty());

        // A live deletion of the other topic.
        let mut fx = Effects::default();
        shard.on_topics_deleted(&["t".to_string()].into(), &mut fx);
        assert_eq!(fx.records.len(), 1);
        assert!(!shard.offsets.has_offsets("g"));
    }

    #[test]
    fn a_repeated_failure_is_logged_once_per_interval_with_a_count() {
        let mut l = LogLimiter::default();
        let t0 = std::time::Instant::now();
        let interval = Duration::from_secs(10);
        assert_eq!(l.admit(t0, interval), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_secs(1), interval), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(2), interval), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(10), interval), Some(2));
        assert_eq!(l.admit(t0 + Duration::from_secs(11), interval), None);
    }
}
