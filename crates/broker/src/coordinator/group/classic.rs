//! The classic group protocol as Kafka's GroupMetadataManager runs it: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup drive the state machine Empty → PreparingRebalance → CompletingRebalance → Stable (→ Dead), with
//! member ids handed out by the coordinator (MEMBER_ID_REQUIRED), generations, static membership, the initial
//! rebalance delay, and session, rebalance and sync timeouts. Assignments are computed by the group's leader and
//! passed through untouched, so every client-side assignor works.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::classic_group::{ClassicGroup, ClassicGroupState as S, ClassicMember};
use super::config::GroupConfig;
use super::consumer_classic::ClassicJoin;
use super::offsets::{append_error_to_response, validate_classic_member};
use super::records::CoordinatorKey;
use super::shard::{Effects, Group, Shard, TimerAction, TimerKey};
use super::timer::Timers;
use crate::clock::now_ms;
use crate::metadata::MetadataImage;

/// What the classic rules need besides the group: the timers, the settings, and the records/answers to release.
pub struct Env<'a> {
    pub timers: &'a mut Timers<TimerKey, TimerAction>,
    pub config: &'a GroupConfig,
    pub fx: &'a mut Effects,
}

fn join_error(member_id: &str, e: ResponseError) -> JoinGroupResponse {
    JoinGroupResponse::default().with_member_id(StrBytes::from_string(member_id.to_string())).with_error_code(e.code())
}

fn opt(s: &Option<String>) -> Option<StrBytes> {
    s.clone().map(StrBytes::from_string)
}

/// The JoinGroup answer for the group's current generation.
fn current_generation_response(g: &ClassicGroup, member_id: &str, with_members: bool) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_members(if with_members { g.join_response_members() } else { Vec::new() })
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_generation_id(g.generation_id)
        .with_protocol_name(opt(&g.protocol_name))
        .with_protocol_type(opt(&g.protocol_type))
        .with_leader(StrBytes::from_string(g.leader_id.clone().unwrap_or_default()))
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

pub(super) fn write_group(g: &ClassicGroup, fx: &mut Effects) {
    fx.write(CoordinatorKey::GroupMetadata { group: g.group_id.clone() }, Some(g.to_record().encode()));
}

fn schedule_heartbeat(env: &mut Env, group: &str, member: &str, timeout_ms: i32) {
    env.timers.schedule(
        TimerKey::Heartbeat { group: group.to_string(), member: member.to_string() },
        Duration::from_millis(timeout_ms.max(0) as u64),
        TimerAction::HeartbeatExpired { group: group.to_string(), member: member.to_string() },
    );
}

fn cancel_heartbeat(env: &mut Env, group: &str, member: &str) {
    env.timers.cancel(&TimerKey::Heartbeat { group: group.to_string(), member: member.to_string() });
}

/// Kafka's acceptJoiningMember: the group may not grow past `group.max.size`.
fn accept_joining_member(g: &ClassicGroup, member_id: &str, max: usize) -> bool {
    match g.state {
        S::Empty | S::Dead => true,
        S::PreparingRebalance => {
            g.member(member_id).is_some_and(|m| m.is_awaiting_join()) || g.num_awaiting_join() < max
        }
        S::CompletingRebalance | S::Stable => g.has_member(member_id) || g.members.len() < max,
    }
}

struct JoinArgs {
    member_id: String,
    instance: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    version: i16,
}

impl Shard {
    // The fields of the shard's Join request, as they arrive.
    #[allow(clippy::too_many_arguments)]
    pub fn classic_join(
        &mut self,
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
        image: &MetadataImage,
        tx: oneshot::Sender<JoinGroupResponse>,
        fx: &mut Effects,
    ) {
        let group_id = req.group_id.0.to_string();
        let a = JoinArgs {
            member_id: req.member_id.to_string(),
            instance: req.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id,
            client_host,
            session_timeout_ms: req.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves as both.
            rebalance_timeout_ms: if version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
            protocol_type: req.protocol_type.to_string(),
            protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
            version,
        };
        let reject = |tx: oneshot::Sender<JoinGroupResponse>, e: ResponseError| {
            let _ = tx.send(join_error(&a.member_id, e));
        };
        if group_id.is_empty() {
            return reject(tx, ResponseError::InvalidGroupId);
        }
        if a.session_timeout_ms < self.config.min_session_timeout_ms
            || a.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return reject(tx, ResponseError::InvalidSessionTimeout);
        }
        if a.protocol_type.is_empty() || a.protocols.is_empty() {
            return reject(tx, ResponseError::InconsistentGroupProtocol);
        }
        match self.groups.get(&group_id) {
            None if !a.member_id.is_empty() => return reject(tx, ResponseError::UnknownMemberId),
            None => {
                self.groups.insert(group_id.clone(), Group::Classic(ClassicGroup::new(group_id.clone(), now_ms())));
            }
            Some(Group::Consumer(c)) => {
                if !c.members.is_empty() {
                    // A classic member joins a group that uses the consumer protocol (Kafka's mixed groups).
                    let join = ClassicJoin {
                        group_id,
                        member_id: a.member_id,
                        instance_id: a.instance,
                        client_id: a.client_id,
                        client_host: a.client_host,
                        session_timeout_ms: a.session_timeout_ms,
                        rebalance_timeout_ms: a.rebalance_timeout_ms,
                        protocol_type: a.protocol_type,
                        protocols: a.protocols,
                        version: a.version,
                    };
                    return self.classic_join_to_consumer_group(join, image, tx, fx);
                }
                // An empty consumer group becomes a classic group, as Kafka converts it.
                self.groups.insert(group_id.clone(), Group::Classic(ClassicGroup::new(group_id.clone(), now_ms())));
            }
            Some(Group::Classic(_)) => {}
        }
        let Shard { groups, timers, config, .. } = self;
        let Some(Group::Classic(g)) = groups.get_mut(&group_id) else { return };
        let mut env = Env { timers, config, fx };
        if !accept_joining_member(g, &a.member_id, env.config.max_size) {
            let _ = tx.send(join_error("", ResponseError::GroupMaxSizeReached));
        } else if a.member_id.is_empty() {
            join_unknown_member(g, a, tx, &mut env);
        } else {
            join_known_member(g, a, tx, &mut env);
        }
        // A group created by a join that failed right away is not kept.
        if g.is(S::Empty)
            && g.members.is_empty()
            && g.pending_members.is_empty()
            && g.generation_id == 0
            && !self.offsets.has_offsets(&group_id)
        {
            self.groups.remove(&group_id);
        }
    }

    pub fn classic_sync(&mut self, req: SyncGroupRequest, tx: oneshot::Sender<SyncGroupResponse>, fx: &mut Effects) {
        let fail = |e: ResponseError| SyncGroupResponse::default().with_error_code(e.code());
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let Shard { groups, timers, config, .. } = self;
        let g = match groups.get_mut(&group_id) {
            Some(Group::Classic(g)) => g,
            _ => {
                let _ = tx.send(fail(ResponseError::UnknownMemberId));
                return;
            }
        };
        let mut env = Env { timers, config, fx };
        if g.is(S::Dead) {
            let _ = tx.send(fail(ResponseError::CoordinatorNotAvailable));
            return;
        }
        if let Err(e) = validate_classic_member(g, &member_id, req.group_instance_id.as_deref()) {
            let _ = tx.send(fail(e));
            return;
        }
        if req.generation_id != g.generation_id {
            let _ = tx.send(fail(ResponseError::IllegalGeneration));
            return;
        }
        let inconsistent = |asked: &Option<StrBytes>, have: &Option<String>| match (asked, have) {
            (Some(a), Some(h)) => a.as_str() != h,
            _ => false,
        };
        if inconsistent(&req.protocol_type, &g.protocol_type) || inconsistent(&req.protocol_name, &g.protocol_name) {
            let _ = tx.send(fail(ResponseError::InconsistentGroupProtocol));
            return;
        }
        match g.state {
            S::PreparingRebalance => {
                let _ = tx.send(fail(ResponseError::RebalanceInProgress));
            }
            S::CompletingRebalance => {
                g.pending_sync.remove(&member_id);
                if let Some(m) = g.member_mut(&member_id) {
                    m.awaiting_sync = Some(tx);
                }
                schedule_heartbeat(
                    &mut env,
                    &group_id,
                    &member_id,
                    g.member(&member_id).map_or(0, |m| m.session_timeout_ms),
                );
                if g.is_leader(&member_id) {
                    // Members the leader left out get an empty assignment.
                    for m in &mut g.members {
                        m.assignment = req
                            .assignments
                            .iter()
                            .find(|x| x.member_id.as_str() == m.member_id)
                            .map(|x| x.assignment.clone())
                            .unwrap_or_default();
                    }
                    write_group(g, env.fx);
                    propagate_assignment(g, env.fx);
                    g.transition_to(S::Stable, now_ms());
                    env.timers.cancel(&TimerKey::Sync { group: group_id.clone() });
                    if !g.pending_sync.is_empty() {
                        schedule_pending_sync(g, &mut env);
                    }
                    tracing::info!(group = %group_id, generation = g.generation_id, members = g.members.len(), "group is stable");
                }
            }
            S::Stable => {
                g.pending_sync.remove(&member_id);
                let resp = SyncGroupResponse::default()
                    .with_protocol_type(opt(&g.protocol_type))
                    .with_protocol_name(opt(&g.protocol_name))
                    .with_assignment(g.member(&member_id).map(|m| m.assignment.clone()).unwrap_or_default());
                let _ = tx.send(resp);
            }
            S::Empty | S::Dead => {
                let _ = tx.send(fail(ResponseError::UnknownMemberId));
            }
        }
    }

    pub fn classic_heartbeat(&mut self, req: HeartbeatRequest) -> HeartbeatResponse {
        let fail = |e: ResponseError| HeartbeatResponse::default().with_error_code(e.code());
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let Some(Group::Classic(g)) = self.groups.get(&group_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        if g.is(S::Dead) {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(e) = validate_classic_member(g, &member_id, req.group_instance_id.as_deref()) {
            return fail(e);
        }
        if req.generation_id != g.generation_id {
            return fail(ResponseError::IllegalGeneration);
        }
        let state = g.state;
        let timeout = g.member(&member_id).map_or(0, |m| m.session_timeout_ms);
        match state {
            S::Empty => fail(ResponseError::UnknownMemberId),
            S::PreparingRebalance => {
                self.schedule_heartbeat_expiry(&group_id, &member_id, timeout);
                fail(ResponseError::RebalanceInProgress)
            }
            S::CompletingRebalance | S::Stable => {
                self.schedule_heartbeat_expiry(&group_id, &member_id, timeout);
                HeartbeatResponse::default()
            }
            S::Dead => fail(ResponseError::CoordinatorNotAvailable),
        }
    }

    pub fn classic_leave(
        &mut self,
        group_id: String,
        members: Vec<MemberIdentity>,
        tx: oneshot::Sender<LeaveGroupResponse>,
        fx: &mut Effects,
    ) {
        let Shard { groups, timers, config, .. } = self;
        let g = match groups.get_mut(&group_id) {
            Some(Group::Classic(g)) => g,
            Some(Group::Consumer(_)) | None => {
                // Kafka answers an unknown group per member, so each member learns it is unknown.
                let members = members
                    .iter()
                    .map(|m| {
                        MemberResponse::default()
                            .with_member_id(m.member_id.clone())
                            .with_group_instance_id(m.group_instance_id.clone())
                            .with_error_code(ResponseError::UnknownMemberId.code())
                    })
                    .collect();
                let _ = tx.send(LeaveGroupResponse::default().with_members(members));
                return;
            }
        };
        if g.is(S::Dead) {
            let _ =
                tx.send(LeaveGroupResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code()));
            return;
        }
        let mut env = Env { timers, config, fx };
        let mut responses = Vec::new();
        for m in members {
            let asked = m.member_id.to_string();
            let outcome: Result<String, ResponseError> = match m.group_instance_id.as_deref() {
                None => {
                    if g.pending_members.contains(&asked) || g.has_member(&asked) {
                        Ok(asked.clone())
                    } else {
                        Err(ResponseError::UnknownMemberId)
                    }
                }
                Some(instance) => match g.static_member_id(instance) {
                    None => Err(ResponseError::UnknownMemberId),
                    Some(existing) if !asked.is_empty() && existing != asked => Err(ResponseError::FencedInstanceId),
                    Some(existing) => Ok(existing.to_string()),
                },
            };
            let error = match outcome {
                Ok(id) => {
                    let reason = m.reason.as_deref().unwrap_or("not provided").to_string();
                    tracing::info!(group = %group_id, member = %id, reason = %reason, "member left the group");
                    if g.pending_members.contains(&id) {
                        g.remove(&id);
                        cancel_heartbeat(&mut env, &group_id, &id);
                        if g.is(S::PreparingRebalance) && g.has_all_members_joined() {
                            complete_join(g, &mut env);
                        }
                    } else {
                        cancel_heartbeat(&mut env, &group_id, &id);
                        remove_member_and_update_group(
                            g,
                            &id,
                            &format!("removing member {id} on LeaveGroup"),
                            &mut env,
                        );
                    }
                    0
                }
                Err(e) => e.code(),
            };
            responses.push(
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(error),
            );
        }
        let _ = tx.send(LeaveGroupResponse::default().with_members(responses));
    }

    pub fn classic_heartbeat_expired(&mut self, group_id: &str, member_id: &str, fx: &mut Effects) {
        let Shard { groups, timers, config, .. } = self;
        let Some(Group::Classic(g)) = groups.get_mut(group_id) else { return };
        let mut env = Env { timers, config, fx };
        if g.is(S::Dead) {
            return;
        }
        if g.pending_members.contains(member_id) {
            tracing::info!(group = %group_id, member = %member_id, "pending member expired before joining");
            g.remove(member_id);
            if g.is(S::PreparingRebalance) && g.has_all_members_joined() {
                complete_join(g, &mut env);
            }
            return;
        }
        let Some(m) = g.member(member_id) else { return };
        if m.has_satisfied_heartbeat() {
            return;
        }
        tracing::info!(group = %group_id, member = %member_id, "member's session expired");
        remove_member_and_update_group(
            g,
            member_id,
            &format!("removing member {member_id} on heartbeat expiration"),
            &mut env,
        );
    }

    pub fn initial_rebalance_elapsed(&mut self, group_id: &str, delay_ms: i32, remaining_ms: i32, fx: &mut Effects) {
        let Shard { groups, timers, config, .. } = self;
        let Some(Group::Classic(g)) = groups.get_mut(group_id) else { return };
        let mut env = Env { timers, config, fx };
        if !g.is(S::PreparingRebalance) {
            return;
        }
        if g.new_member_added && remaining_ms != 0 {
            // Members keep arriving: wait another delay, within the rebalance timeout.
            g.new_member_added = false;
            let new_delay = env.config.initial_rebalance_delay_ms.min(remaining_ms);
            let new_remaining = (remaining_ms - delay_ms).max(0);
            env.timers.schedule(
                TimerKey::Join { group: group_id.to_string() },
                Duration::from_millis(new_delay as u64),
                TimerAction::InitialRebalance {
                    group: group_id.to_string(),
                    delay_ms: new_delay,
                    remaining_ms: new_remaining,
                },
            );
        } else {
            complete_join(g, &mut env);
        }
    }

    pub fn classic_sync_expired(&mut self, group_id: &str, generation: i32, fx: &mut Effects) {
        let Shard { groups, timers, config, .. } = self;
        let Some(Group::Classic(g)) = groups.get_mut(group_id) else { return };
        let mut env = Env { timers, config, fx };
        if g.generation_id != generation
            || !matches!(g.state, S::CompletingRebalance | S::Stable)
            || g.pending_sync.is_empty()
        {
            return;
        }
        let missing: Vec<String> = g.pending_sync.iter().cloned().collect();
        tracing::info!(group = %group_id, members = ?missing, "removing members that did not send SyncGroup in time");
        for id in &missing {
            g.remove(id);
            cancel_heartbeat(&mut env, group_id, id);
        }
        prepare_rebalance(g, &format!("removing {missing:?} on pending sync request expiration"), &mut env);
    }
}

fn join_unknown_member(g: &mut ClassicGroup, a: JoinArgs, tx: oneshot::Sender<JoinGroupResponse>, env: &mut Env) {
    if g.is(S::Dead) {
        let _ = tx.send(join_error(&a.member_id, ResponseError::CoordinatorNotAvailable));
        return;
    }
    if !g.supports_protocols(&a.protocol_type, &a.protocols) {
        let _ = tx.send(join_error(&a.member_id, ResponseError::InconsistentGroupProtocol));
        return;
    }
    match a.instance.clone() {
        Some(instance) => {
            let new_id = new_member_id(&instance);
            match g.static_member_id(&instance).map(str::to_string) {
                Some(old_id) => update_static_member(g, &instance, &old_id, new_id, a, tx, env),
                None => add_member_then_rebalance(g, new_id, a, tx, env),
            }
        }
        None if a.version >= 4 => {
            // KIP-394: the member gets its id first and joins with it, so a retried JoinGroup cannot leave an
            // orphan member behind.
            let new_id = new_member_id(&a.client_id);
            g.pending_members.insert(new_id.clone());
            schedule_heartbeat(env, &g.group_id, &new_id, a.session_timeout_ms);
            let _ = tx.send(join_error(&new_id, ResponseError::MemberIdRequired));
        }
        None => {
            let new_id = new_member_id(&a.client_id);
            add_member_then_rebalance(g, new_id, a, tx, env);
        }
    }
}

fn join_known_member(g: &mut ClassicGroup, a: JoinArgs, tx: oneshot::Sender<JoinGroupResponse>, env: &mut Env) {
    let member_id = a.member_id.clone();
    if g.is(S::Dead) {
        let _ = tx.send(join_error(&member_id, ResponseError::CoordinatorNotAvailable));
        return;
    }
    if !g.supports_protocols(&a.protocol_type, &a.protocols) {
        let _ = tx.send(join_error(&member_id, ResponseError::InconsistentGroupProtocol));
        return;
    }
    if g.pending_members.contains(&member_id) {
        // The second step of KIP-394: the member joins with the id it was given.
        add_member_then_rebalance(g, member_id, a, tx, env);
        return;
    }
    if let Err(e) = validate_classic_member(g, &member_id, a.instance.as_deref()) {
        let _ = tx.send(join_error(&member_id, e));
        return;
    }
    let is_leader = g.is_leader(&member_id);
    let same = g.member(&member_id).is_some_and(|m| m.matches(&a.protocols));
    match g.state {
        S::PreparingRebalance => update_member_then_rebalance(g, &member_id, a, tx, env),
        S::CompletingRebalance if same => {
            // Same metadata: the member lost our answer; give it the current generation again.
            let resp = current_generation_response(g, &member_id, is_leader);
            let _ = tx.send(resp);
        }
        S::CompletingRebalance => update_member_then_rebalance(g, &member_id, a, tx, env),
        S::Stable if is_leader || !same => {
            // The leader rejoining, or a member with new metadata (e.g. a new subscription), rebalances.
            update_member_then_rebalance(g, &member_id, a, tx, env)
        }
        S::Stable => {
            let resp = current_generation_response(g, &member_id, false);
            let _ = tx.send(resp);
        }
        S::Empty | S::Dead => {
            let _ = tx.send(join_error(&member_id, ResponseError::UnknownMemberId));
        }
    }
}

fn add_member_then_rebalance(
    g: &mut ClassicGroup,
    member_id: String,
    a: JoinArgs,
    tx: oneshot::Sender<JoinGroupResponse>,
    env: &mut Env,
) {
    if g.is(S::PreparingRebalance) && g.previous_state == S::Empty {
        g.new_member_added = true;
    }
    g.add(ClassicMember {
        member_id: member_id.clone(),
        group_instance_id: a.instance.clone(),
        client_id: a.client_id,
        client_host: a.client_host,
        rebalance_timeout_ms: a.rebalance_timeout_ms,
        session_timeout_ms: a.session_timeout_ms,
        protocol_type: a.protocol_type,
        protocols: a.protocols,
        assignment: Bytes::new(),
        awaiting_join: Some(tx),
        awaiting_sync: None,
        is_new: true,
    });
    // A new member cannot heartbeat while its JoinGroup is parked; if it gave up, it is dropped after this.
    schedule_heartbeat(env, &g.group_id, &member_id, env.config.new_member_join_timeout_ms);
    maybe_prepare_rebalance_or_complete_join(g, &format!("adding new member {member_id}"), env);
}

fn update_member_then_rebalance(
    g: &mut ClassicGroup,
    member_id: &str,
    a: JoinArgs,
    tx: oneshot::Sender<JoinGroupResponse>,
    env: &mut Env,
) {
    if let Some(m) = g.member_mut(member_id) {
        m.protocols = a.protocols;
        m.rebalance_timeout_ms = a.rebalance_timeout_ms;
        m.session_timeout_ms = a.session_timeout_ms;
        if let Some(old) = m.awaiting_join.replace(tx) {
            // A duplicate JoinGroup replaces the parked one; the older request is told to rejoin.
            let _ = old.send(join_error(member_id, ResponseError::RebalanceInProgress));
        }
    }
    maybe_prepare_rebalance_or_complete_join(g, &format!("updating metadata for member {member_id}"), env);
}

/// A static member rejoining with an unknown member id (a restart): it takes over its instance's membership
/// under a new member id, and in a Stable group with unchanged metadata no rebalance happens (KIP-345).
fn update_static_member(
    g: &mut ClassicGroup,
    instance: &str,
    old_id: &str,
    new_id: String,
    a: JoinArgs,
    tx: oneshot::Sender<JoinGroupResponse>,
    env: &mut Env,
) {
    let old_leader = g.leader_id.clone().unwrap_or_default();
    let group_id = g.group_id.clone();
    let Some(m) = g.member_mut(old_id) else { return };
    // The previous incarnation is fenced: whatever it still waits for fails.
    if let Some(old) = m.awaiting_join.take() {
        let _ = old.send(join_error(old_id, ResponseError::FencedInstanceId));
    }
    if let Some(old) = m.awaiting_sync.take() {
        let _ = old.send(SyncGroupResponse::default().with_error_code(ResponseError::FencedInstanceId.code()));
    }
    m.member_id = new_id.clone();
    m.protocols = a.protocols;
    m.rebalance_timeout_ms = a.rebalance_timeout_ms;
    m.session_timeout_ms = a.session_timeout_ms;
    m.client_id = a.client_id;
    m.client_host = a.client_host;
    let session = m.session_timeout_ms;
    g.static_members.insert(instance.to_string(), new_id.clone());
    if g.leader_id.as_deref() == Some(old_id) {
        g.leader_id = Some(new_id.clone());
    }
    if g.pending_sync.remove(old_id) {
        g.pending_sync.insert(new_id.clone());
    }
    cancel_heartbeat(env, &group_id, old_id);
    schedule_heartbeat(env, &group_id, &new_id, session);
    match g.state {
        S::Stable => {
            if g.select_protocol() == g.protocol_name {
                tracing::info!(group = %group_id, instance, member = %new_id, "static member rejoined without a rebalance");
                // KIP-814: a v9+ leader gets the members and is told to skip the assignment; an older leader is
                // not told it leads (the old leader id), so it does not reassign.
                let is_leader = g.is_leader(&new_id);
                let skip = a.version >= 9 && is_leader;
                let mut resp = current_generation_response(g, &new_id, skip).with_skip_assignment(skip);
                if is_leader && !skip {
                    resp.leader = StrBytes::from_string(old_leader);
                }
                write_group(g, env.fx);
                env.fx.reply(tx, resp, |r, e| r.with_error_code(append_error_to_response(e).code()));
            } else {
                if let Some(m) = g.member_mut(&new_id) {
                    m.awaiting_join = Some(tx);
                }
                maybe_prepare_rebalance_or_complete_join(
                    g,
                    &format!("static member {instance} changed the selected protocol"),
                    env,
                );
            }
        }
        S::CompletingRebalance => {
            let is_leader = g.is_leader(&new_id);
            let _ = tx.send(current_generation_response(g, &new_id, is_leader));
        }
        S::Empty | S::PreparingRebalance => {
            if let Some(m) = g.member_mut(&new_id) {
                m.awaiting_join = Some(tx);
            }
            maybe_prepare_rebalance_or_complete_join(
                g,
                &format!("updating metadata for static member {instance}"),
                env,
            );
        }
        S::Dead => {
            let _ = tx.send(join_error(&new_id, ResponseError::CoordinatorNotAvailable));
        }
    }
}

fn maybe_prepare_rebalance_or_complete_join(g: &mut ClassicGroup, reason: &str, env: &mut Env) {
    if g.can_rebalance() {
        prepare_rebalance(g, reason, env);
    } else if g.is(S::PreparingRebalance) && g.previous_state != S::Empty && g.has_all_members_joined() {
        // The initial rebalance is only ended by its delay; later ones as soon as everyone is in.
        complete_join(g, env);
    }
}

pub(super) fn prepare_rebalance(g: &mut ClassicGroup, reason: &str, env: &mut Env) {
    if g.is(S::CompletingRebalance) {
        // Members waiting for their assignment must rejoin instead.
        reset_and_propagate_assignment_with_error(g, ResponseError::RebalanceInProgress);
    }
    env.timers.cancel(&TimerKey::Sync { group: g.group_id.clone() });
    let initial = g.is(S::Empty);
    g.transition_to(S::PreparingRebalance, now_ms());
    tracing::info!(group = %g.group_id, generation = g.generation_id, reason, "preparing to rebalance");
    let key = TimerKey::Join { group: g.group_id.clone() };
    if initial {
        // A new group waits `group.initial.rebalance.delay.ms` for more members, so a starting fleet does not
        // rebalance once per member.
        let delay = env.config.initial_rebalance_delay_ms;
        let remaining = (g.rebalance_timeout_ms() - delay).max(0);
        env.timers.schedule(
            key,
            Duration::from_millis(delay as u64),
            TimerAction::InitialRebalance { group: g.group_id.clone(), delay_ms: delay, remaining_ms: remaining },
        );
    } else if g.has_all_members_joined() {
        complete_join(g, env);
    } else {
        env.timers.schedule(
            key,
            Duration::from_millis(g.rebalance_timeout_ms().max(0) as u64),
            TimerAction::CompleteJoin { group: g.group_id.clone() },
        );
    }
}

/// The end of the join phase: members that did not rejoin are dropped (static ones are kept: they may be
/// restarting), the next generation starts, and every parked JoinGroup is answered (the leader gets the members).
pub fn complete_join(g: &mut ClassicGroup, env: &mut Env) {
    let group_id = g.group_id.clone();
    env.timers.cancel(&TimerKey::Join { group: group_id.clone() });
    let gone: Vec<String> = g
        .members
        .iter()
        .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
        .map(|m| m.member_id.clone())
        .collect();
    for id in &gone {
        g.remove(id);
        cancel_heartbeat(env, &group_id, id);
    }
    if !gone.is_empty() {
        tracing::info!(group = %group_id, members = ?gone, "removed members that did not rejoin");
    }
    if g.is(S::Dead) {
        return;
    }
    if !g.maybe_elect_new_joined_leader() && !g.members.is_empty() {
        // Nobody rejoined (only static members that are away): wait another rebalance timeout for them or for
        // their sessions to expire.
        tracing::warn!(group = %group_id, "could not complete rebalance because no members rejoined");
        env.timers.schedule(
            TimerKey::Join { group: group_id.clone() },
            Duration::from_millis(g.rebalance_timeout_ms().max(0) as u64),
            TimerAction::CompleteJoin { group: group_id },
        );
        return;
    }
    g.init_next_generation(now_ms());
    if g.is(S::Empty) {
        tracing::info!(group = %group_id, generation = g.generation_id, "group is now empty");
        write_group(g, env.fx);
        return;
    }
    tracing::info!(
        group = %group_id, generation = g.generation_id, members = g.members.len(),
        protocol = g.protocol_name.as_deref().unwrap_or(""), "join phase complete"
    );
    let leader_members = g.join_response_members();
    let base = current_generation_response(g, "", false);
    let leader = g.leader_id.clone();
    let mut sessions = Vec::new();
    for m in &mut g.members {
        let is_leader = leader.as_deref() == Some(m.member_id.as_str());
        let mut resp = base.clone().with_member_id(StrBytes::from_string(m.member_id.clone()));
        if is_leader {
            resp.members = leader_members.clone();
        }
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(resp);
        }
        m.is_new = false;
        sessions.push((m.member_id.clone(), m.session_timeout_ms));
    }
    for (id, timeout) in sessions {
        schedule_heartbeat(env, &group_id, &id, timeout);
        g.pending_sync.insert(id);
    }
    schedule_pending_sync(g, env);
}

fn schedule_pending_sync(g: &ClassicGroup, env: &mut Env) {
    env.timers.schedule(
        TimerKey::Sync { group: g.group_id.clone() },
        Duration::from_millis(g.rebalance_timeout_ms().max(0) as u64),
        TimerAction::SyncExpired { group: g.group_id.clone(), generation: g.generation_id },
    );
}

/// The leader's assignment reaches every member waiting in SyncGroup, once the group record is durable.
fn propagate_assignment(g: &mut ClassicGroup, fx: &mut Effects) {
    let protocol_type = opt(&g.protocol_type);
    let protocol_name = opt(&g.protocol_name);
    for m in &mut g.members {
        if let Some(tx) = m.awaiting_sync.take() {
            let resp = SyncGroupResponse::default()
                .with_protocol_type(protocol_type.clone())
                .with_protocol_name(protocol_name.clone())
                .with_assignment(m.assignment.clone());
            fx.reply(tx, resp, |r, e| {
                r.with_error_code(append_error_to_response(e).code()).with_assignment(Bytes::new())
            });
        }
    }
}

fn reset_and_propagate_assignment_with_error(g: &mut ClassicGroup, e: ResponseError) {
    for m in &mut g.members {
        m.assignment = Bytes::new();
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(SyncGroupResponse::default().with_error_code(e.code()));
        }
    }
}

fn remove_member_and_update_group(g: &mut ClassicGroup, member_id: &str, reason: &str, env: &mut Env) {
    // A new member can time out while its JoinGroup is parked: tell it, so a live client rejoins.
    if let Some(m) = g.member_mut(member_id) {
        if let Some(tx) = m.awaiting_join.take() {
            let _ = tx.send(join_error("", ResponseError::UnknownMemberId));
        }
        if let Some(tx) = m.awaiting_sync.take() {
            let _ = tx.send(SyncGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code()));
        }
    }
    g.remove(member_id);
    match g.state {
        S::Stable | S::CompletingRebalance => maybe_prepare_rebalance_or_complete_join(g, reason, env),
        S::PreparingRebalance if g.has_all_members_joined() => complete_join(g, env),
        _ => {}
    }
}
