//! A KIP-848 consumer group: members with epochs, the group epoch (bumped by every membership or subscription
//! change), the target assignment computed by the server-side assignor at an assignment epoch, and each member's
//! reconciliation towards its target (Kafka's CurrentAssignmentBuilder): a member first revokes what it must give
//! up, then receives what other members have released, and only then reaches the assignment epoch.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kafka_protocol::ResponseError;

use super::assignor::Assignment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// Must acknowledge (heartbeat without them) the partitions in `pending_revocation`.
    UnrevokedPartitions,
    /// Waits for partitions of its target that other members still own.
    UnreleasedPartitions,
}

pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns, as the coordinator handed it out.
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    /// Set for a member that uses the classic protocol (JoinGroup/SyncGroup/Heartbeat) in this group.
    pub classic: Option<ClassicMemberMetadata>,
}

/// Kafka's ClassicMemberMetadata: what a classic-protocol member of a consumer group joined with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassicMemberMetadata {
    pub session_timeout_ms: i32,
    /// (protocol name, ConsumerProtocolSubscription) in the member's order of preference.
    pub protocols: Vec<(String, bytes::Bytes)>,
}

pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics' (name, id, partition count) when the target was computed: a change re-assigns.
    pub subscription_metadata: BTreeMap<String, (uuid::Uuid, i32)>,
}

pub fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(t, ps)| b.get(t).is_some_and(|bs| ps.is_subset(bs)))
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = ps.iter().filter(|p| !b.get(t).is_some_and(|bs| bs.contains(p))).cloned().collect();
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(bs).cloned().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

impl ConsumerGroup {
    pub fn new(group_id: String) -> ConsumerGroup {
        ConsumerGroup {
            group_id,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscription_metadata: BTreeMap::new(),
        }
    }

    /// Kafka's ConsumerGroupState names (ConsumerGroupDescribe, ListGroups).
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch != self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn subscribed_topic_names(&self) -> HashSet<String> {
        // Regex subscriptions are resolved into `subscription_metadata` when the target is computed.
        let mut names: HashSet<String> =
            self.members.values().flat_map(|m| m.subscribed_topic_names.iter().cloned()).collect();
        names.extend(self.subscription_metadata.keys().cloned());
        names
    }

    /// Kafka's ConsumerGroup.validateOffsetCommit.
    pub fn validate_offset_commit(&self, member_id: &str, epoch: i32, version: i16) -> Result<(), ResponseError> {
        if epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let m = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if m.classic.is_some() {
            // A classic member commits with its member epoch as the generation (any OffsetCommit version).
            return if epoch == m.member_epoch { Ok(()) } else { Err(ResponseError::IllegalGeneration) };
        }
        if version < 9 {
            // A KIP-848 member commits with OffsetCommit v9+, which carries its member epoch.
            return Err(ResponseError::UnsupportedVersion);
        }
        validate_member_epoch(epoch, m.member_epoch)
    }

    /// Kafka's ConsumerGroup.validateOffsetFetch (OffsetFetch v9+ from a member).
    pub fn validate_offset_fetch(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        if epoch < 0 && member_id.is_empty() {
            return Ok(());
        }
        let m = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        validate_member_epoch(epoch, m.member_epoch)
    }

    /// Partitions owned by other members (assigned or still being revoked): not free to hand out yet.
    fn owned_by_others(&self, member_id: &str) -> HashSet<(uuid::Uuid, i32)> {
        let mut out = HashSet::new();
        for (id, m) in &self.members {
            if id == member_id {
                continue;
            }
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    out.extend(ps.iter().map(|p| (*t, *p)));
                }
            }
        }
        out
    }

    /// Moves a member towards its target (Kafka's CurrentAssignmentBuilder). `owned` is what the member reported
    /// owning in this heartbeat (None when it did not say). Returns true if the member's assignment changed.
    pub fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>) -> bool {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let taken = self.owned_by_others(member_id);
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(member_id) else { return false };
        let before = (m.assigned.clone(), m.member_epoch, m.state);
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = match owned {
                Some(o) => intersect(o, &m.pending_revocation).is_empty(),
                None => false,
            };
            if !revoked {
                return false;
            }
            m.pending_revocation.clear();
            m.state = MemberState::Stable;
        }
        if m.member_epoch != assignment_epoch || m.state == MemberState::UnreleasedPartitions {
            let revoke = minus(&m.assigned, &target);
            if !revoke.is_empty() {
                // Give up first; the member keeps its epoch until it confirms.
                m.assigned = intersect(&m.assigned, &target);
                m.pending_revocation = revoke;
                m.state = MemberState::UnrevokedPartitions;
            } else {
                let mut next = Assignment::new();
                let mut unreleased = false;
                for (t, ps) in &target {
                    for p in ps {
                        let mine = m.assigned.get(t).is_some_and(|s| s.contains(p));
                        if mine || !taken.contains(&(*t, *p)) {
                            next.entry(*t).or_default().insert(*p);
                        } else {
                            unreleased = true;
                        }
                    }
                }
                m.assigned = next;
                if m.member_epoch != assignment_epoch {
                    m.previous_member_epoch = m.member_epoch;
                    m.member_epoch = assignment_epoch;
                }
                m.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
            }
        }
        (m.assigned.clone(), m.member_epoch, m.state) != before
    }
}

/// Kafka's member epoch check: a newer epoch than the coordinator's is fenced; an older one is stale.
pub fn validate_member_epoch(received: i32, expected: i32) -> Result<(), ResponseError> {
    if received > expected {
        Err(ResponseError::FencedMemberEpoch)
    } else if received < expected {
        Err(ResponseError::StaleMemberEpoch)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> ConsumerMember {
        ConsumerMember {
            member_id: id.into(),
            instance_id: None,
            rack_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: vec!["t".into()],
            subscribed_topic_regex: None,
            server_assignor: None,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            classic: None,
        }
    }

    #[test]
    fn partitions_move_only_after_revocation() {
        let t = uuid::Uuid::new_v4();
        let mut g = ConsumerGroup::new("g".into());
        g.members.insert("a".into(), member("a"));
        g.group_epoch = 1;
        g.assignment_epoch = 1;
        g.target.insert("a".into(), Assignment::from([(t, BTreeSet::from([0, 1]))]));
        assert!(g.reconcile("a", None));
        assert_eq!(g.members["a"].member_epoch, 1);
        // b joins: target moves partition 1 to b.
        g.members.insert("b".into(), member("b"));
        g.group_epoch = 2;
        g.assignment_epoch = 2;
        g.target.insert("a".into(), Assignment::from([(t, BTreeSet::from([0]))]));
        g.target.insert("b".into(), Assignment::from([(t, BTreeSet::from([1]))]));
        // b cannot have 1 while a owns it.
        g.reconcile("b", None);
        assert_eq!(g.members["b"].state, MemberState::UnreleasedPartitions);
        assert!(g.members["b"].assigned.is_empty());
        // a is asked to revoke 1 and keeps epoch 1 until it confirms.
        g.reconcile("a", None);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        assert_eq!(g.members["a"].member_epoch, 1);
        let owned = Assignment::from([(t, BTreeSet::from([0]))]);
        g.reconcile("a", Some(&owned));
        assert_eq!(g.members["a"].member_epoch, 2);
        assert_eq!(g.members["a"].state, MemberState::Stable);
        g.reconcile("b", None);
        assert_eq!(g.members["b"].assigned, Assignment::from([(t, BTreeSet::from([1]))]));
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn epochs_are_checked() {
        assert_eq!(validate_member_epoch(3, 3), Ok(()));
        assert_eq!(validate_member_epoch(4, 3), Err(ResponseError::FencedMemberEpoch));
        assert_eq!(validate_member_epoch(2, 3), Err(ResponseError::StaleMemberEpoch));
    }
}
