//! A classic group (JoinGroup/SyncGroup protocol) and its members, as Kafka's ClassicGroup keeps them: the state
//! machine's state, the generation, the selected protocol, the leader, static members, and the members still
//! awaiting a JoinGroup or SyncGroup answer. The protocol's rules live in `classic.rs`; this module keeps the
//! group's own invariants (leader election, protocol selection, membership bookkeeping).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::records::{GroupMetadataValue, MemberMetadata};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicGroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicGroupState {
    /// The names Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            ClassicGroupState::Empty => "Empty",
            ClassicGroupState::PreparingRebalance => "PreparingRebalance",
            ClassicGroupState::CompletingRebalance => "CompletingRebalance",
            ClassicGroupState::Stable => "Stable",
            ClassicGroupState::Dead => "Dead",
        }
    }
}

pub struct ClassicMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub awaiting_join: Option<oneshot::Sender<JoinGroupResponse>>,
    pub awaiting_sync: Option<oneshot::Sender<SyncGroupResponse>>,
    /// Joined during the current rebalance and not yet through a completed join phase.
    pub is_new: bool,
}

impl ClassicMember {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    /// Same protocols with the same metadata, in the same order: a rejoin that changes nothing.
    pub fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }

    pub fn is_awaiting_sync(&self) -> bool {
        self.awaiting_sync.is_some()
    }

    /// Kafka's hasSatisfiedHeartbeat: members parked in a rebalance need no heartbeat, new members always do.
    pub fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.is_awaiting_join() || self.is_awaiting_sync())
    }
}

pub struct ClassicGroup {
    pub group_id: String,
    pub state: ClassicGroupState,
    pub previous_state: ClassicGroupState,
    /// Wall-clock time of the last state change (persisted; offsets of an Empty group expire from it).
    pub state_timestamp: Option<i64>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub generation_id: i32,
    /// In join order: the first member to join leads, and the leader gets the members in this order.
    pub members: Vec<ClassicMember>,
    /// Member ids handed out with MEMBER_ID_REQUIRED that have not joined with them yet.
    pub pending_members: HashSet<String>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pub pending_sync: HashSet<String>,
    /// group.instance.id → member id.
    pub static_members: HashMap<String, String>,
    /// A member joined during the initial (delayed) rebalance, so the delay is extended.
    pub new_member_added: bool,
}

impl ClassicGroup {
    pub fn new(group_id: String, now_ms: i64) -> ClassicGroup {
        ClassicGroup {
            group_id,
            state: ClassicGroupState::Empty,
            previous_state: ClassicGroupState::Empty,
            state_timestamp: Some(now_ms),
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            generation_id: 0,
            members: Vec::new(),
            pending_members: HashSet::new(),
            pending_sync: HashSet::new(),
            static_members: HashMap::new(),
            new_member_added: false,
        }
    }

    pub fn is(&self, s: ClassicGroupState) -> bool {
        self.state == s
    }

    pub fn transition_to(&mut self, s: ClassicGroupState, now_ms: i64) {
        self.previous_state = self.state;
        self.state = s;
        self.state_timestamp = Some(now_ms);
    }

    /// Kafka's canRebalance: the states from which PreparingRebalance may be entered.
    pub fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            ClassicGroupState::Stable | ClassicGroupState::CompletingRebalance | ClassicGroupState::Empty
        )
    }

    pub fn member(&self, id: &str) -> Option<&ClassicMember> {
        self.members.iter().find(|m| m.member_id == id)
    }

    pub fn member_mut(&mut self, id: &str) -> Option<&mut ClassicMember> {
        self.members.iter_mut().find(|m| m.member_id == id)
    }

    pub fn has_member(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    pub fn is_leader(&self, id: &str) -> bool {
        self.leader_id.as_deref() == Some(id)
    }

    pub fn static_member_id(&self, instance: &str) -> Option<&str> {
        self.static_members.get(instance).map(String::as_str)
    }

    pub fn add(&mut self, member: ClassicMember) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        if let Some(i) = &member.group_instance_id {
            self.static_members.insert(i.clone(), member.member_id.clone());
        }
        self.pending_members.remove(&member.member_id);
        self.members.push(member);
    }

    /// Removes a member (or a pending member id); a departing leader hands over to the next member.
    pub fn remove(&mut self, id: &str) -> Option<ClassicMember> {
        self.pending_members.remove(id);
        self.pending_sync.remove(id);
        let pos = self.members.iter().position(|m| m.member_id == id)?;
        let m = self.members.remove(pos);
        if let Some(i) = &m.group_instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(id) {
                self.static_members.remove(i);
            }
        }
        if self.is_leader(id) {
            self.leader_id = self.members.first().map(|m| m.member_id.clone());
        }
        Some(m)
    }

    pub fn num_awaiting_join(&self) -> usize {
        self.members.iter().filter(|m| m.is_awaiting_join()).count()
    }

    /// Every member has rejoined and no member id handed out is still outstanding.
    pub fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join() && self.pending_members.is_empty()
    }

    /// The protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let Some(first) = self.members.first() else { return Vec::new() };
        first
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| self.members.iter().all(|m| m.protocols.iter().any(|(p, _)| p == n)))
            .collect()
    }

    /// Kafka's supportsProtocols: a joining member must share the group's protocol type and at least one protocol
    /// every current member supports.
    pub fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(n, _)| candidates.contains(n))
    }

    /// Each member votes for its most preferred protocol among those all members support; the most votes win
    /// (ties go to the earlier member's preference).
    pub fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: Vec<(String, usize)> = Vec::new();
        for m in &self.members {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                match votes.iter_mut().find(|(v, _)| v == n) {
                    Some((_, c)) => *c += 1,
                    None => votes.push((n.clone(), 1)),
                }
            }
        }
        let max = votes.iter().map(|(_, c)| *c).max()?;
        votes.into_iter().find(|(_, c)| *c == max).map(|(n, _)| n)
    }

    /// Kafka's maybeElectNewJoinedLeader: the leader must be among the members that rejoined.
    pub fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else { return false };
        if self.member(&leader).is_some_and(|m| m.is_awaiting_join()) {
            return true;
        }
        match self.members.iter().find(|m| m.is_awaiting_join()) {
            Some(m) => {
                self.leader_id = Some(m.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// Next generation: CompletingRebalance with the selected protocol, or Empty when nobody is left.
    pub fn init_next_generation(&mut self, now_ms: i64) {
        self.generation_id += 1;
        if !self.members.is_empty() {
            self.protocol_name = self.select_protocol();
            self.transition_to(ClassicGroupState::CompletingRebalance, now_ms);
        } else {
            self.protocol_name = None;
            self.transition_to(ClassicGroupState::Empty, now_ms);
        }
        self.pending_sync.clear();
    }

    /// The members list the leader receives: each member's metadata for the selected protocol.
    pub fn join_response_members(&self) -> Vec<JoinGroupResponseMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_group_instance_id(m.group_instance_id.clone().map(StrBytes::from_string))
                    .with_metadata(m.metadata(&protocol))
            })
            .collect()
    }

    /// The group's persisted form (Kafka's GroupMetadataValue).
    pub fn to_record(&self) -> GroupMetadataValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp: self.state_timestamp.unwrap_or(-1),
            members: self
                .members
                .iter()
                .map(|m| MemberMetadata {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    session_timeout: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its record, as Kafka's loader does: Empty without members, else Stable.
    pub fn from_record(group_id: String, v: GroupMetadataValue) -> ClassicGroup {
        let mut g = ClassicGroup::new(group_id, v.current_state_timestamp);
        g.state_timestamp = (v.current_state_timestamp >= 0).then_some(v.current_state_timestamp);
        g.generation_id = v.generation;
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type.clone());
        g.protocol_name = v.protocol.clone();
        let protocol = v.protocol.clone().unwrap_or_default();
        for m in v.members {
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.push(ClassicMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
                rebalance_timeout_ms: m.rebalance_timeout,
                session_timeout_ms: m.session_timeout,
                protocol_type: v.protocol_type.clone(),
                protocols: vec![(protocol.clone(), m.subscription)],
                assignment: m.assignment,
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
            });
        }
        g.leader_id = v.leader.filter(|l| g.has_member(l)).or_else(|| g.members.first().map(|m| m.member_id.clone()));
        g.state = if g.members.is_empty() { ClassicGroupState::Empty } else { ClassicGroupState::Stable };
        g.previous_state = g.state;
        g
    }

    /// The longest rebalance timeout among members: how long a join phase may wait for all of them.
    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.members.iter().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Topics of the consumer-protocol subscriptions (for OffsetDelete and lag); empty for other protocol types.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = HashSet::new();
        for m in &self.members {
            topics.extend(super::consumer_protocol::subscription_topics(&m.metadata(&protocol))?);
        }
        Some(topics)
    }
}
