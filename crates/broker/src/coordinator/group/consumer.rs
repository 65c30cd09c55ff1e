//! The KIP-848 consumer group protocol as Kafka's GroupMetadataManager serves it: ConsumerGroupHeartbeat (join,
//! heartbeat, subscription changes, leave) with server-side assignment, and ConsumerGroupDescribe.
//!
//! Every change is persisted (the shard writes the group's changed records, consumer_records.rs) before the answer
//! goes out, so after a broker restart members continue with their ids, epochs and assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment as HeartbeatAssignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use regex_automata::meta::Regex;
use tokio::sync::oneshot;

use super::assignor::{self, Assignment, MemberSpec};
use super::consumer_group::{is_subset, ConsumerGroup, ConsumerMember, MemberState};
use super::records::CoordinatorKey;
use super::shard::{Effects, Group, Shard, TimerAction, TimerKey};
use crate::metadata::MetadataImage;

/// Epochs a member sends to leave: -1 leaves, -2 is a static member's temporary leave.
const LEAVE_EPOCH: i32 = -1;
const STATIC_LEAVE_EPOCH: i32 = -2;

fn error(e: ResponseError, message: &str) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(e.code())
        .with_error_message(Some(StrBytes::from_string(message.to_string())))
}

/// Kafka matches subscription regexes (RE2/J) against the whole topic name.
fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

/// The topics a group's members subscribe to, resolved against the image: name → (id, partitions).
pub(super) fn resolve_subscriptions(g: &ConsumerGroup, image: &MetadataImage) -> BTreeMap<String, (uuid::Uuid, i32)> {
    let mut out = BTreeMap::new();
    for m in g.members.values() {
        for n in &m.subscribed_topic_names {
            if let Some(t) = image.topic(n) {
                out.insert(n.clone(), (t.topic_id, t.partitions.len() as i32));
            }
        }
        if let Some(re) = m.subscribed_topic_regex.as_deref().and_then(|r| compile_regex(r).ok()) {
            // Internal topics too: Kafka's TopicRegexResolver matches every topic name of the image.
            for t in image.topics.values().filter(|t| re.is_match(&t.name)) {
                out.insert(t.name.clone(), (t.topic_id, t.partitions.len() as i32));
            }
        }
    }
    out
}

fn member_topics(m: &ConsumerMember, resolved: &BTreeMap<String, (uuid::Uuid, i32)>) -> BTreeSet<uuid::Uuid> {
    let re = m.subscribed_topic_regex.as_deref().and_then(|r| compile_regex(r).ok());
    resolved
        .iter()
        .filter(|(name, _)| m.subscribed_topic_names.contains(name) || re.as_ref().is_some_and(|r| r.is_match(name)))
        .map(|(_, (id, _))| *id)
        .collect()
}

/// Recomputes the target assignment at the group epoch (Kafka's TargetAssignmentBuilder).
pub(super) fn compute_target(g: &mut ConsumerGroup, default_assignor: &str) {
    let resolved = g.subscription_metadata.clone();
    let partitions: BTreeMap<uuid::Uuid, i32> = resolved.values().cloned().collect();
    // The assignor most members ask for, else the broker's default (Kafka picks the most popular one too).
    let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
    for m in g.members.values() {
        if let Some(a) = m.server_assignor.as_deref() {
            *votes.entry(a).or_default() += 1;
        }
    }
    let assignor = votes
        .into_iter()
        .max_by_key(|(_, c)| *c)
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| default_assignor.to_string());
    let specs: Vec<MemberSpec> = g
        .members
        .values()
        .map(|m| MemberSpec {
            member_id: &m.member_id,
            topics: member_topics(m, &resolved),
            current: g.target.get(&m.member_id),
        })
        .collect();
    let target = assignor::assign(&assignor, &specs, &partitions);
    g.target = target;
    g.assignment_epoch = g.group_epoch;
    tracing::info!(group = %g.group_id, epoch = g.group_epoch, assignor = %assignor, members = g.members.len(), "computed target assignment");
}

fn to_assignment(parts: &[kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions]) -> Assignment {
    let mut a = Assignment::new();
    for tp in parts {
        if !tp.partitions.is_empty() {
            a.entry(tp.topic_id).or_default().extend(tp.partitions.iter().cloned());
        }
    }
    a
}

fn heartbeat_assignment(a: &Assignment) -> HeartbeatAssignment {
    HeartbeatAssignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| TopicPartitions::default().with_topic_id(*t).with_partitions(ps.iter().cloned().collect()))
            .collect(),
    )
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn consumer_heartbeat(
        &mut self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        client_id: String,
        client_host: String,
        image: &MetadataImage,
        tx: oneshot::Sender<ConsumerGroupHeartbeatResponse>,
        fx: &mut Effects,
    ) {
        let group_id = req.group_id.0.to_string();
        let was_classic_with_record =
            matches!(self.groups.get(&group_id), Some(Group::Classic(c)) if c.protocol_type.is_some());
        let resp = self.consumer_heartbeat_inner(req, version, client_id, client_host, image);
        if was_classic_with_record && matches!(self.groups.get(&group_id), Some(Group::Consumer(_))) {
            // The empty classic group it replaces is deleted, as Kafka does when it converts a group.
            fx.write(CoordinatorKey::GroupMetadata { group: group_id }, None);
        }
        // Answered once the group's new state is durable: a member must never hold an epoch the log does not.
        fx.reply(tx, resp, |_, e| {
            let e = super::offsets::append_error_to_response(e);
            error(e, "writing the group's state failed")
        });
    }

    fn consumer_heartbeat_inner(
        &mut self,
        req: ConsumerGroupHeartbeatRequest,
        version: i16,
        client_id: String,
        client_host: String,
        image: &MetadataImage,
    ) -> ConsumerGroupHeartbeatResponse {
        let group_id = req.group_id.0.to_string();
        let epoch = req.member_epoch;
        let mut member_id = req.member_id.to_string();
        if !self.config.consumer_enabled {
            return error(
                ResponseError::UnsupportedVersion,
                "The consumer group protocol is disabled (group.coordinator.rebalance.protocols).",
            );
        }
        if group_id.is_empty() {
            return error(ResponseError::InvalidRequest, "GroupId can't be empty.");
        }
        if epoch < STATIC_LEAVE_EPOCH {
            return error(ResponseError::InvalidRequest, "MemberEpoch is invalid.");
        }
        if epoch == 0 {
            if req.rebalance_timeout_ms == -1 {
                return error(ResponseError::InvalidRequest, "RebalanceTimeoutMs must be provided in first request.");
            }
            if req.topic_partitions.as_ref().is_some_and(|t| !t.is_empty()) {
                return error(ResponseError::InvalidRequest, "TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return error(
                    ResponseError::InvalidRequest,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
            if member_id.is_empty() {
                if version >= 1 {
                    return error(ResponseError::InvalidRequest, "MemberId can't be empty.");
                }
                member_id = uuid::Uuid::new_v4().to_string();
            }
        } else if member_id.is_empty() {
            return error(ResponseError::InvalidRequest, "MemberId can't be empty.");
        }
        if let Some(a) = req.server_assignor.as_deref() {
            if !self.config.consumer_assignors.iter().any(|x| x == a) {
                return error(
                    ResponseError::UnsupportedAssignor,
                    &format!(
                        "ServerAssignor {a} is not supported. Supported assignors: {}.",
                        self.config.consumer_assignors.join(", ")
                    ),
                );
            }
        }
        if let Some(r) = req.subscribed_topic_regex.as_deref() {
            if let Err(e) = compile_regex(r) {
                return error(
                    ResponseError::InvalidRegularExpression,
                    &format!("SubscribedTopicRegex `{r}` is not a valid regular expression: {e}."),
                );
            }
        }

        // The group: created by a first join; an empty classic group (e.g. one that only has offsets) converts.
        match self.groups.get(&group_id) {
            None if epoch != 0 => {
                return error(ResponseError::UnknownMemberId, &format!("Group {group_id} not found."))
            }
            None => {
                self.groups.insert(group_id.clone(), Group::Consumer(ConsumerGroup::new(group_id.clone())));
            }
            Some(Group::Classic(c)) => {
                let empty = c.members.is_empty() && c.pending_members.is_empty();
                if epoch != 0 {
                    return error(
                        ResponseError::GroupIdNotFound,
                        &format!("Group {group_id} is not a consumer group."),
                    );
                }
                if empty {
                    self.groups.insert(group_id.clone(), Group::Consumer(ConsumerGroup::new(group_id.clone())));
                } else if let Err(why) = self.upgrade_classic_group(&group_id, image) {
                    return error(
                        ResponseError::GroupIdNotFound,
                        &format!("Cannot upgrade classic group {group_id} to consumer group because {why}."),
                    );
                }
            }
            Some(Group::Consumer(_)) => {}
        }
        let default_assignor =
            self.config.consumer_assignors.first().cloned().unwrap_or_else(|| assignor::UNIFORM.to_string());
        let session_timeout = self.config.consumer_session_timeout_ms;
        let heartbeat_interval = self.config.consumer_heartbeat_interval_ms;
        let max_size = self.config.consumer_max_size;
        let Some(Group::Consumer(g)) = self.groups.get_mut(&group_id) else {
            return error(ResponseError::UnknownServerError, "group vanished");
        };

        if epoch == LEAVE_EPOCH || epoch == STATIC_LEAVE_EPOCH {
            if g.members.remove(&member_id).is_none() {
                return error(
                    ResponseError::UnknownMemberId,
                    &format!("Member {member_id} is not a member of group {group_id}."),
                );
            }
            g.target.remove(&member_id);
            tracing::info!(group = %group_id, member = %member_id, "consumer group member left");
            g.group_epoch += 1;
            g.subscription_metadata = resolve_subscriptions(g, image);
            compute_target(g, &default_assignor);
            self.timers.cancel(&TimerKey::Heartbeat { group: group_id.clone(), member: member_id.clone() });
            self.timers.cancel(&TimerKey::Revocation { group: group_id.clone(), member: member_id.clone() });
            return ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(StrBytes::from_string(member_id)))
                .with_member_epoch(epoch)
                .with_heartbeat_interval_ms(0);
        }

        let owned = req.topic_partitions.as_deref().map(to_assignment);
        let mut bump = false;
        match g.members.get(&member_id) {
            None if epoch != 0 => {
                return error(
                    ResponseError::UnknownMemberId,
                    &format!("Member {member_id} is not a member of group {group_id}."),
                );
            }
            None => {
                if g.members.len() >= max_size {
                    return error(
                        ResponseError::GroupMaxSizeReached,
                        &format!("The consumer group has reached its maximum capacity of {max_size} members."),
                    );
                }
                g.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        member_id: member_id.clone(),
                        instance_id: req.instance_id.as_ref().map(|i| i.to_string()),
                        rack_id: req.rack_id.as_ref().map(|r| r.to_string()),
                        client_id: client_id.clone(),
                        client_host: client_host.clone(),
                        member_epoch: 0,
                        previous_member_epoch: -1,
                        state: MemberState::Stable,
                        rebalance_timeout_ms: req.rebalance_timeout_ms,
                        subscribed_topic_names: Vec::new(),
                        subscribed_topic_regex: None,
                        server_assignor: None,
                        assigned: Assignment::new(),
                        pending_revocation: Assignment::new(),
                        classic: None,
                    },
                );
                tracing::info!(group = %group_id, member = %member_id, "consumer group member joined");
                bump = true;
            }
            Some(m) if epoch != 0 => {
                if epoch > m.member_epoch {
                    return error(ResponseError::FencedMemberEpoch, &format!("The consumer group member has a greater member epoch ({epoch}) than the one known by the group coordinator ({})", m.member_epoch));
                }
                if epoch < m.member_epoch {
                    // A member that has not seen its new epoch yet may still be on the previous one.
                    let ok =
                        epoch == m.previous_member_epoch && owned.as_ref().is_none_or(|o| is_subset(o, &m.assigned));
                    if !ok {
                        return error(ResponseError::FencedMemberEpoch, &format!("The consumer group member has a smaller member epoch ({epoch}) than the one known by the group coordinator ({})", m.member_epoch));
                    }
                }
            }
            Some(_) => {}
        }
        let m = g.members.get_mut(&member_id).expect("member present");
        if let Some(names) = &req.subscribed_topic_names {
            let names: Vec<String> = names.iter().map(|n| n.0.to_string()).collect();
            if names != m.subscribed_topic_names {
                m.subscribed_topic_names = names;
                bump = true;
            }
        }
        if let Some(r) = &req.subscribed_topic_regex {
            let r = (!r.is_empty()).then(|| r.to_string());
            if r != m.subscribed_topic_regex {
                m.subscribed_topic_regex = r;
                bump = true;
            }
        }
        if let Some(a) = &req.server_assignor {
            let a = Some(a.to_string());
            if a != m.server_assignor {
                m.server_assignor = a;
                bump = true;
            }
        }
        if req.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(r) = &req.rack_id {
            m.rack_id = Some(r.to_string());
        }
        // Topic creation, deletion or new partitions in the subscription also re-assign.
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
        let was_unrevoked = g.members.get(&member_id).is_some_and(|m| m.state == MemberState::UnrevokedPartitions);
        let changed = g.reconcile(&member_id, owned.as_ref());
        let m = g.members.get(&member_id).expect("member present");
        let full_request = req.rebalance_timeout_ms != -1
            && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
            && req.topic_partitions.is_some();
        let mut resp = ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(member_id.clone())))
            .with_member_epoch(m.member_epoch)
            .with_heartbeat_interval_ms(heartbeat_interval);
        if epoch == 0 || full_request || changed {
            resp.assignment = Some(heartbeat_assignment(&m.assigned));
        }
        let revoking = m.state == MemberState::UnrevokedPartitions;
        let (rebalance_timeout, member_epoch) = (m.rebalance_timeout_ms, m.member_epoch);
        self.timers.schedule(
            TimerKey::Heartbeat { group: group_id.clone(), member: member_id.clone() },
            Duration::from_millis(session_timeout.max(0) as u64),
            TimerAction::ConsumerSessionExpired { group: group_id.clone(), member: member_id.clone() },
        );
        let key = TimerKey::Revocation { group: group_id.clone(), member: member_id.clone() };
        if revoking && !was_unrevoked {
            self.timers.schedule(
                key,
                Duration::from_millis(rebalance_timeout.max(0) as u64),
                TimerAction::ConsumerRevocationExpired { group: group_id, member: member_id, epoch: member_epoch },
            );
        } else if !revoking {
            self.timers.cancel(&key);
        }
        resp
    }

    pub(super) fn remove_consumer_member(&mut self, group_id: &str, member_id: &str, why: &str) {
        let Some(Group::Consumer(g)) = self.groups.get_mut(group_id) else { return };
        if g.members.remove(member_id).is_none() {
            return;
        }
        tracing::info!(group = %group_id, member = %member_id, reason = why, "removed consumer group member");
        g.target.remove(member_id);
        g.group_epoch += 1;
        let default_assignor =
            self.config.consumer_assignors.first().cloned().unwrap_or_else(|| assignor::UNIFORM.to_string());
        compute_target(g, &default_assignor);
        self.timers.cancel(&TimerKey::Heartbeat { group: group_id.to_string(), member: member_id.to_string() });
        self.timers.cancel(&TimerKey::Revocation { group: group_id.to_string(), member: member_id.to_string() });
    }

    pub fn consumer_session_expired(&mut self, group_id: &str, member_id: &str, _fx: &mut Effects) {
        self.remove_consumer_member(group_id, member_id, "session timeout expired");
    }

    pub fn consumer_revocation_expired(&mut self, group_id: &str, member_id: &str, epoch: i32, _fx: &mut Effects) {
        let still = matches!(self.groups.get(group_id), Some(Group::Consumer(g))
            if g.members.get(member_id).is_some_and(|m| m.member_epoch == epoch && m.state == MemberState::UnrevokedPartitions));
        if still {
            self.remove_consumer_member(
                group_id,
                member_id,
                "did not revoke its partitions within the rebalance timeout",
            );
        }
    }

    pub fn consumer_describe(&self, group_id: &str, image: &MetadataImage) -> DescribedGroup {
        let base = DescribedGroup::default().with_group_id(GroupId(StrBytes::from_string(group_id.to_string())));
        let g = match self.groups.get(group_id) {
            Some(Group::Consumer(g)) => g,
            Some(Group::Classic(_)) => {
                return base.with_error_code(ResponseError::GroupIdNotFound.code()).with_error_message(Some(
                    StrBytes::from_string(format!("Group {group_id} is not a consumer group.")),
                ))
            }
            None => {
                return base
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!("Group {group_id} not found."))))
            }
        };
        let describe = |a: &Assignment| {
            DescribedAssignment::default().with_topic_partitions(
                a.iter()
                    .map(|(t, ps)| {
                        DescribedTopicPartitions::default()
                            .with_topic_id(*t)
                            .with_topic_name(TopicName(StrBytes::from_string(
                                image.topic_by_id(t).map(|x| x.name.clone()).unwrap_or_default(),
                            )))
                            .with_partitions(ps.iter().cloned().collect())
                    })
                    .collect(),
            )
        };
        let members = g
            .members
            .values()
            .map(|m| {
                Member::default()
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                    .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
                    .with_member_epoch(m.member_epoch)
                    .with_client_id(StrBytes::from_string(m.client_id.clone()))
                    .with_client_host(StrBytes::from_string(m.client_host.clone()))
                    .with_subscribed_topic_names(
                        m.subscribed_topic_names.iter().map(|n| TopicName(StrBytes::from_string(n.clone()))).collect(),
                    )
                    .with_subscribed_topic_regex(m.subscribed_topic_regex.clone().map(StrBytes::from_string))
                    .with_assignment(describe(&m.assigned))
                    .with_target_assignment(describe(&g.target.get(&m.member_id).cloned().unwrap_or_default()))
                    .with_member_type(1)
            })
            .collect();
        let assignor = self.config.consumer_assignors.first().cloned().unwrap_or_default();
        base.with_group_state(StrBytes::from_static_str(g.state_name()))
            .with_group_epoch(g.group_epoch)
            .with_assignment_epoch(g.assignment_epoch)
            .with_assignor_name(StrBytes::from_string(assignor))
            .with_members(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataRecord;

    fn image(topics: &[&str]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for name in topics {
            let topic_id = uuid::Uuid::new_v4();
            img.apply(&MetadataRecord::TopicRecord { name: name.to_string(), topic_id });
            img.apply(&MetadataRecord::PartitionRecord {
                topic_id,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
            });
        }
        img
    }

    #[test]
    fn regex_subscriptions_resolve_internal_topics_too() {
        let mut g = ConsumerGroup::new("g".into());
        let m = ConsumerMember {
            member_id: "a".into(),
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: vec![],
            subscribed_topic_regex: Some("__.*|app-.*".into()),
            server_assignor: None,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            classic: None,
        };
        g.members.insert("a".into(), m);
        let img = image(&["__consumer_offsets", "__transaction_state", "app-1", "other"]);
        let resolved: Vec<String> = resolve_subscriptions(&g, &img).into_keys().collect();
        assert_eq!(resolved, vec!["__consumer_offsets", "__transaction_state", "app-1"]);
    }
}
