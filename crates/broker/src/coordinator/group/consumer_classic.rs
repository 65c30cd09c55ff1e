//! Classic-protocol members in a KIP-848 consumer group (Kafka 4's mixed groups): a consumer still on
//! JoinGroup/SyncGroup/Heartbeat joins a group that uses the consumer protocol, and the coordinator serves it from the
//! group's server-side assignment, as Kafka's GroupMetadataManager does:
//!
//! - JoinGroup (protocol type "consumer"): the member's subscription and owned partitions come from its
//!   ConsumerProtocolSubscription; it becomes a member like any other (epoch bump, target assignment), reconciles
//!   towards its target using the partitions it says it owns, and gets its member epoch as the generation.
//! - SyncGroup returns the partitions it holds, encoded as a ConsumerProtocolAssignment.
//! - Heartbeat answers REBALANCE_IN_PROGRESS when it must rejoin: the group moved to a newer epoch, it has
//!   partitions to revoke, or partitions it waits for were released.
//! - LeaveGroup and its session timeout (its own `session.timeout.ms`) remove it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::assignor::{self, Assignment};
use super::classic::{prepare_rebalance, write_group, Env};
use super::classic_group::{ClassicGroup, ClassicGroupState, ClassicMember};
use super::consumer::{compute_target, resolve_subscriptions};
use super::consumer_group::{ClassicMemberMetadata, ConsumerGroup, ConsumerMember, MemberState};
use super::consumer_protocol;
use super::shard::{Effects, Group, Shard, TimerAction, TimerKey};
use crate::clock::now_ms;
use crate::metadata::MetadataImage;

/// What a classic JoinGroup carries, for a consumer group.
pub struct ClassicJoin {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub version: i16,
}

fn join_error(member_id: &str, e: ResponseError) -> JoinGroupResponse {
    JoinGroupResponse::default().with_member_id(StrBytes::from_string(member_id.to_string())).with_error_code(e.code())
}

/// Topic names → ids for the partitions a member reports owning; unknown topics are left out.
fn owned_by_name(owned: &[(String, Vec<i32>)], image: &MetadataImage) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in owned {
        if let Some(ti) = image.topic(t) {
            if !ps.is_empty() {
                a.entry(ti.topic_id).or_default().extend(ps.iter().cloned());
            }
        }
    }
    a
}

/// Kafka's supportsClassicProtocols: the "consumer" protocol type, and a protocol name every classic member has.
fn supports_classic_protocols(g: &ConsumerGroup, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
    if protocol_type != "consumer" || protocols.is_empty() {
        return false;
    }
    g.members
        .values()
        .filter_map(|m| m.classic.as_ref())
        .all(|c| c.protocols.iter().any(|(n, _)| protocols.iter().any(|(p, _)| p == n)))
}

/// Kafka's throwIfRebalanceInProgress for SyncGroup: a newer group epoch means rejoin first, unless the member
/// already rejoined and is revoking.
fn rebalance_in_progress(g: &ConsumerGroup, m: &ConsumerMember) -> bool {
    g.group_epoch > m.member_epoch && m.state != MemberState::UnrevokedPartitions
}

/// Kafka's waitingOnUnreleasedPartition: some partition of the member's target is still held by another member.
fn waiting_on_unreleased(g: &ConsumerGroup, member_id: &str) -> bool {
    let Some(target) = g.target.get(member_id) else { return false };
    let mine = g.members.get(member_id).map(|m| &m.assigned);
    target.iter().any(|(t, ps)| {
        ps.iter().any(|p| {
            !mine.is_some_and(|a| a.get(t).is_some_and(|s| s.contains(p)))
                && g.members.iter().any(|(id, o)| {
                    id != member_id
                        && [&o.assigned, &o.pending_revocation].iter().any(|a| a.get(t).is_some_and(|s| s.contains(p)))
                })
        })
    })
}

impl Shard {
    /// Kafka's online upgrade: a consumer-protocol member joins a non-empty classic group, which becomes a consumer
    /// group whose classic members keep their partitions at the classic generation (as member epoch and group
    /// epoch); parked JoinGroup/SyncGroup requests are answered REBALANCE_IN_PROGRESS, and the classic members then
    /// follow the group through heartbeats and rejoins. Err names why the group cannot be converted.
    pub fn upgrade_classic_group(&mut self, group_id: &str, image: &MetadataImage) -> Result<(), String> {
        let Some(Group::Classic(c)) = self.groups.get(group_id) else { return Err("it does not exist".into()) };
        if !self.config.consumer_upgrade_enabled {
            return Err("the online upgrade is disabled (group.consumer.migration.policy)".into());
        }
        if c.protocol_type.as_deref() != Some("consumer") {
            return Err("the group does not use the consumer embedded protocol".into());
        }
        if c.members.len() >= self.config.consumer_max_size {
            return Err("the group is full".into());
        }
        let Some(Group::Classic(mut c)) = self.groups.remove(group_id) else { unreachable!("checked above") };
        let generation = c.generation_id;
        let protocol = c.protocol_name.clone().unwrap_or_default();
        let mut g = ConsumerGroup::new(group_id.to_string());
        g.group_epoch = generation;
        g.assignment_epoch = generation;
        let mut sessions = Vec::new();
        for mut m in c.members.drain(..) {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(join_error(&m.member_id, ResponseError::RebalanceInProgress));
            }
            if let Some(tx) = m.awaiting_sync.take() {
                let _ =
                    tx.send(SyncGroupResponse::default().with_error_code(ResponseError::RebalanceInProgress.code()));
            }
            let subscription = consumer_protocol::subscription(&m.metadata(&protocol));
            let assigned = owned_by_name(&consumer_protocol::assignment_partitions(&m.assignment), image);
            g.target.insert(m.member_id.clone(), assigned.clone());
            sessions.push((m.member_id.clone(), m.session_timeout_ms));
            g.members.insert(
                m.member_id.clone(),
                ConsumerMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.group_instance_id.clone(),
                    rack_id: subscription.as_ref().and_then(|s| s.rack_id.clone()),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    member_epoch: generation,
                    previous_member_epoch: generation,
                    state: MemberState::Stable,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_topic_names: subscription.map(|s| s.topics).unwrap_or_default(),
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    assigned,
                    pending_revocation: Assignment::new(),
                    classic: Some(ClassicMemberMetadata {
                        session_timeout_ms: m.session_timeout_ms,
                        protocols: m.protocols.clone(),
                    }),
                },
            );
        }
        g.subscription_metadata = resolve_subscriptions(&g, image);
        tracing::info!(group = %group_id, generation, members = g.members.len(), "converted classic group to consumer group");
        self.timers.cancel(&TimerKey::Join { group: group_id.to_string() });
        self.timers.cancel(&TimerKey::Sync { group: group_id.to_string() });
        for (member, timeout) in sessions {
            self.timers.schedule(
                TimerKey::Heartbeat { group: group_id.to_string(), member: member.clone() },
                Duration::from_millis(timeout.max(0) as u64),
                TimerAction::ConsumerSessionExpired { group: group_id.to_string(), member },
            );
        }
        self.groups.insert(group_id.to_string(), Group::Consumer(g));
        Ok(())
    }

    /// Kafka's online downgrade: once a consumer-protocol member is gone and only classic members are left, the
    /// group becomes a classic group again (generation = the group epoch, each member keeping its partitions as its
    /// assignment) and rebalances, so the members rejoin through the classic protocol.
    pub fn maybe_downgrade_consumer_group(&mut self, group_id: &str, fx: &mut Effects) {
        let Some(Group::Consumer(g)) = self.groups.get(group_id) else { return };
        if !self.config.consumer_downgrade_enabled
            || g.members.is_empty()
            || g.members.values().any(|m| m.classic.is_none())
            || g.members.len() > self.config.max_size
        {
            return;
        }
        let Some(Group::Consumer(g)) = self.groups.remove(group_id) else { unreachable!("checked above") };
        // Assigned topics are subscribed ones, so the group's subscription metadata names them.
        let names: std::collections::HashMap<uuid::Uuid, &String> =
            g.subscription_metadata.iter().map(|(n, (id, _))| (*id, n)).collect();
        let mut c = ClassicGroup::new(group_id.to_string(), now_ms());
        c.generation_id = g.group_epoch;
        c.state = ClassicGroupState::Stable;
        for m in g.members.values() {
            let classic = m.classic.clone().expect("all members are classic");
            let partitions: Vec<(String, Vec<i32>)> = m
                .assigned
                .iter()
                .filter_map(|(t, ps)| names.get(t).map(|n| ((*n).clone(), ps.iter().cloned().collect())))
                .collect();
            c.add(ClassicMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: classic.session_timeout_ms,
                protocol_type: "consumer".into(),
                protocols: classic.protocols,
                assignment: consumer_protocol::encode_assignment(&partitions),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
            });
        }
        c.protocol_name = c.select_protocol();
        tracing::info!(group = %group_id, generation = c.generation_id, members = c.members.len(), "converted consumer group to classic group");
        for m in &c.members {
            self.timers.schedule(
                TimerKey::Heartbeat { group: group_id.to_string(), member: m.member_id.clone() },
                Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                TimerAction::HeartbeatExpired { group: group_id.to_string(), member: m.member_id.clone() },
            );
            self.timers.cancel(&TimerKey::Revocation { group: group_id.to_string(), member: m.member_id.clone() });
        }
        write_group(&c, fx);
        let Shard { timers, config, .. } = self;
        prepare_rebalance(
            &mut c,
            &format!("Downgrade group {group_id} from consumer to classic."),
            &mut Env { timers, config, fx },
        );
        self.groups.insert(group_id.to_string(), Group::Classic(c));
    }

    /// JoinGroup from a classic member to a non-empty consumer group.
    pub fn classic_join_to_consumer_group(
        &mut self,
        a: ClassicJoin,
        image: &MetadataImage,
        tx: oneshot::Sender<JoinGroupResponse>,
        fx: &mut Effects,
    ) {
        let default_assignor =
            self.config.consumer_assignors.first().cloned().unwrap_or_else(|| assignor::UNIFORM.to_string());
        let max_size = self.config.consumer_max_size;
        let Some(Group::Consumer(g)) = self.groups.get_mut(&a.group_id) else {
            let _ = tx.send(join_error(&a.member_id, ResponseError::UnknownMemberId));
            return;
        };
        let known = !a.member_id.is_empty();
        let member_id = if known { a.member_id.clone() } else { uuid::Uuid::new_v4().to_string() };
        if !g.members.contains_key(&member_id) && g.members.len() >= max_size {
            let _ = tx.send(join_error(&member_id, ResponseError::GroupMaxSizeReached));
            return;
        }
        if !supports_classic_protocols(g, &a.protocol_type, &a.protocols) {
            let _ = tx.send(join_error(&a.member_id, ResponseError::InconsistentGroupProtocol));
            return;
        }
        if !known && a.version >= 4 && a.instance_id.is_none() {
            // As for a classic group: a dynamic member learns its id first and joins again with it.
            let _ = tx.send(join_error(&member_id, ResponseError::MemberIdRequired));
            return;
        }
        let Some(subscription) = a.protocols.first().and_then(|(_, m)| consumer_protocol::subscription(m)) else {
            let _ = tx.send(join_error(&a.member_id, ResponseError::InconsistentGroupProtocol));
            return;
        };
        if g.members.get(&member_id).is_some_and(|m| m.classic.is_none()) {
            // The id of a member that uses the consumer protocol.
            let _ = tx.send(join_error(&member_id, ResponseError::InconsistentGroupProtocol));
            return;
        }
        let mut bump = false;
        let m = g.members.entry(member_id.clone()).or_insert_with(|| {
            bump = true;
            tracing::info!(group = %a.group_id, member = %member_id, "classic member joined consumer group");
            ConsumerMember {
                member_id: member_id.clone(),
                instance_id: None,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                member_epoch: 0,
                previous_member_epoch: -1,
                state: MemberState::Stable,
                rebalance_timeout_ms: a.rebalance_timeout_ms,
                subscribed_topic_names: Vec::new(),
                subscribed_topic_regex: None,
                server_assignor: None,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                classic: None,
            }
        });
        if m.subscribed_topic_names != subscription.topics {
            m.subscribed_topic_names = subscription.topics.clone();
            bump = true;
        }
        m.instance_id = a.instance_id.clone();
        if subscription.rack_id.is_some() {
            m.rack_id = subscription.rack_id.clone();
        }
        if a.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = a.rebalance_timeout_ms;
        }
        m.client_id = a.client_id.clone();
        m.client_host = a.client_host.clone();
        m.classic =
            Some(ClassicMemberMetadata { session_timeout_ms: a.session_timeout_ms, protocols: a.protocols.clone() });
        let resolved = resolve_subscriptions(g, image);
        if resolved != g.subscription_metadata {
            g.subscription_metadata = resolved;
            bump = true;
        }
        if bump {
            g.group_epoch += 1;
        }
        if g.group_epoch > g.assignment_epoch {
            compute_target(g, &default_assignor);
        }
        let owned = owned_by_name(&subscription.owned, image);
        g.reconcile(&member_id, Some(&owned));
        let m = &g.members[&member_id];
        let resp = JoinGroupResponse::default()
            .with_member_id(StrBytes::from_string(member_id.clone()))
            .with_generation_id(m.member_epoch)
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(a.protocols.first().map(|(n, _)| StrBytes::from_string(n.clone())));
        self.timers.schedule(
            TimerKey::Heartbeat { group: a.group_id.clone(), member: member_id.clone() },
            Duration::from_millis(a.session_timeout_ms.max(0) as u64),
            TimerAction::ConsumerSessionExpired { group: a.group_id.clone(), member: member_id },
        );
        fx.reply(tx, resp, move |resp, e| {
            let e = super::offsets::append_error_to_response(e);
            resp.with_error_code(e.code())
        });
    }

    /// SyncGroup from a classic member of a consumer group: its current partitions, once nothing makes it rejoin.
    pub fn classic_sync_to_consumer_group(
        &mut self,
        req: SyncGroupRequest,
        image: &Arc<MetadataImage>,
        tx: oneshot::Sender<SyncGroupResponse>,
    ) {
        let fail = |e: ResponseError| SyncGroupResponse::default().with_error_code(e.code());
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let Some(Group::Consumer(g)) = self.groups.get(&group_id) else {
            let _ = tx.send(fail(ResponseError::UnknownMemberId));
            return;
        };
        let Some(m) = g.members.get(&member_id).filter(|m| m.classic.is_some()) else {
            let _ = tx.send(fail(ResponseError::UnknownMemberId));
            return;
        };
        if req.generation_id != m.member_epoch {
            let _ = tx.send(fail(ResponseError::IllegalGeneration));
            return;
        }
        let classic = m.classic.as_ref().expect("classic member");
        let type_ok = req.protocol_type.as_ref().is_none_or(|t| t.as_str() == "consumer");
        let name_ok =
            req.protocol_name.as_ref().is_none_or(|n| classic.protocols.first().is_some_and(|(p, _)| p == n.as_str()));
        if !type_ok || !name_ok {
            let _ = tx.send(fail(ResponseError::InconsistentGroupProtocol));
            return;
        }
        if rebalance_in_progress(g, m) {
            let _ = tx.send(fail(ResponseError::RebalanceInProgress));
            return;
        }
        let partitions: Vec<(String, Vec<i32>)> = m
            .assigned
            .iter()
            .filter_map(|(t, ps)| image.topic_by_id(t).map(|ti| (ti.name.clone(), ps.iter().cloned().collect())))
            .collect();
        let timeout = classic.session_timeout_ms;
        let resp = SyncGroupResponse::default()
            .with_protocol_type(req.protocol_type.clone())
            .with_protocol_name(req.protocol_name.clone())
            .with_assignment(consumer_protocol::encode_assignment(&partitions));
        self.timers.schedule(
            TimerKey::Heartbeat { group: group_id.clone(), member: member_id.clone() },
            Duration::from_millis(timeout.max(0) as u64),
            TimerAction::ConsumerSessionExpired { group: group_id, member: member_id },
        );
        let _ = tx.send(resp);
    }

    /// Heartbeat from a classic member of a consumer group.
    pub fn classic_heartbeat_to_consumer_group(&mut self, req: HeartbeatRequest) -> HeartbeatResponse {
        let fail = |e: ResponseError| HeartbeatResponse::default().with_error_code(e.code());
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let Some(Group::Consumer(g)) = self.groups.get(&group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let Some(m) = g.members.get(&member_id).filter(|m| m.classic.is_some()) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if req.generation_id != m.member_epoch {
            return fail(ResponseError::IllegalGeneration);
        }
        let rejoin = m.member_epoch < g.group_epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !waiting_on_unreleased(g, &member_id));
        let timeout = m.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        self.timers.schedule(
            TimerKey::Heartbeat { group: group_id.clone(), member: member_id.clone() },
            Duration::from_millis(timeout.max(0) as u64),
            TimerAction::ConsumerSessionExpired { group: group_id, member: member_id },
        );
        if rejoin {
            fail(ResponseError::RebalanceInProgress)
        } else {
            HeartbeatResponse::default()
        }
    }

    /// LeaveGroup for members of a consumer group (classic members leave this way).
    pub fn classic_leave_consumer_group(
        &mut self,
        group_id: &str,
        members: Vec<MemberIdentity>,
        tx: oneshot::Sender<LeaveGroupResponse>,
        fx: &mut Effects,
    ) {
        let mut responses = Vec::new();
        for ident in members {
            let asked = ident.member_id.to_string();
            let found = match (self.groups.get(group_id), ident.group_instance_id.as_deref()) {
                (Some(Group::Consumer(g)), Some(instance)) => {
                    g.members.values().find(|m| m.instance_id.as_deref() == Some(instance)).map(|m| m.member_id.clone())
                }
                (Some(Group::Consumer(g)), None) => g.members.contains_key(&asked).then(|| asked.clone()),
                _ => None,
            };
            let error = match found {
                Some(id) if ident.group_instance_id.is_none() || asked.is_empty() || asked == id => {
                    self.remove_consumer_member(group_id, &id, "left the group");
                    None
                }
                Some(_) => Some(ResponseError::FencedInstanceId),
                None => Some(ResponseError::UnknownMemberId),
            };
            responses.push(
                MemberResponse::default()
                    .with_member_id(ident.member_id.clone())
                    .with_group_instance_id(ident.group_instance_id.clone())
                    .with_error_code(error.map_or(0, |e| e.code())),
            );
        }
        fx.reply(tx, LeaveGroupResponse::default().with_members(responses), |resp, e| {
            resp.with_error_code(super::offsets::append_error_to_response(e).code())
        });
    }
}
