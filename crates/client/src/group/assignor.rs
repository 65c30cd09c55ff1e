//! Client-side partition assignors of the classic protocol, run by the group leader, with the Java client's and
//! librdkafka's protocol names: `range`, `roundrobin` and `cooperative-sticky` (incremental: a partition that
//! moves is first revoked by its owner and assigned in a follow-up rebalance). Also the consumer protocol's
//! subscription and assignment blobs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedPartitions;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::record::TopicPartition;

/// What a member sends in JoinGroup: its topics and, for cooperative rebalancing, what it owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub generation: i32,
}

/// The version written: v1 carries owned partitions (cooperative-sticky needs them), v2 the generation.
const SUBSCRIPTION_VERSION: i16 = 2;

fn group_by_topic(parts: &[TopicPartition]) -> BTreeMap<String, Vec<i32>> {
    let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in parts {
        m.entry(tp.topic.clone()).or_default().push(tp.partition);
    }
    m
}

pub fn encode_subscription(s: &Subscription) -> Bytes {
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(s.topics.iter().map(|t| StrBytes::from_string(t.clone())).collect())
        .with_owned_partitions(
            group_by_topic(&s.owned)
                .into_iter()
                .map(|(t, ps)| {
                    OwnedPartitions::default().with_topic(TopicName(StrBytes::from_string(t))).with_partitions(ps)
                })
                .collect(),
        )
        .with_generation_id(s.generation);
    let mut buf = BytesMut::new();
    buf.put_i16(SUBSCRIPTION_VERSION);
    let _ = sub.encode(&mut buf, SUBSCRIPTION_VERSION);
    buf.freeze()
}

pub fn decode_subscription(b: &Bytes) -> Option<Subscription> {
    let mut b = b.clone();
    if b.remaining() < 2 {
        return None;
    }
    let v = b.get_i16().clamp(0, 3);
    let s = ConsumerProtocolSubscription::decode(&mut b, v).ok()?;
    Some(Subscription {
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        owned: s
            .owned_partitions
            .iter()
            .flat_map(|o| o.partitions.iter().map(move |p| TopicPartition::new(o.topic.0.to_string(), *p)))
            .collect(),
        generation: s.generation_id,
    })
}

pub fn encode_assignment(parts: &[TopicPartition]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        group_by_topic(parts)
            .into_iter()
            .map(|(t, ps)| {
                AssignedPartitions::default().with_topic(TopicName(StrBytes::from_string(t))).with_partitions(ps)
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    let _ = a.encode(&mut buf, 0);
    buf.freeze()
}

/// The partitions of an assignment blob (an empty blob is an empty assignment).
pub fn decode_assignment(b: &Bytes) -> Option<Vec<TopicPartition>> {
    let mut b = b.clone();
    if b.remaining() < 2 {
        return Some(Vec::new());
    }
    let v = b.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut b, v).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| TopicPartition::new(t.topic.0.to_string(), *p)))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    pub fn parse(name: &str) -> Option<Assignor> {
        match name.trim() {
            "range" | "org.apache.kafka.clients.consumer.RangeAssignor" => Some(Assignor::Range),
            "roundrobin" | "org.apache.kafka.clients.consumer.RoundRobinAssignor" => Some(Assignor::RoundRobin),
            "cooperative-sticky" | "org.apache.kafka.clients.consumer.CooperativeStickyAssignor" => {
                Some(Assignor::CooperativeSticky)
            }
            _ => None,
        }
    }

    /// The protocol name on the wire (the Java client's and librdkafka's).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// The leader's assignment: member id → partitions. `partitions` gives each subscribed topic's count.
    pub fn assign(
        self,
        members: &[(String, Subscription)],
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.iter().map(|(m, _)| (m.clone(), Vec::new())).collect();
        let mut sorted: Vec<&(String, Subscription)> = members.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        match self {
            Assignor::Range => {
                for (topic, &count) in partitions {
                    let subs: Vec<&String> =
                        sorted.iter().filter(|(_, s)| s.topics.contains(topic)).map(|(m, _)| m).collect();
                    if subs.is_empty() {
                        continue;
                    }
                    let (per, extra) = (count / subs.len() as i32, count % subs.len() as i32);
                    let mut next = 0;
                    for (i, m) in subs.iter().enumerate() {
                        let take = per + i32::from((i as i32) < extra);
                        out.entry((*m).clone())
                            .or_default()
                            .extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
                        next += take;
                    }
                }
            }
            Assignor::RoundRobin => {
                let mut i = 0usize;
                for (topic, &count) in partitions {
                    for p in 0..count {
                        // The next member (in a circle) that subscribes to the topic.
                        for _ in 0..sorted.len() {
                            let (m, s) = sorted[i % sorted.len()];
                            i += 1;
                            if s.topics.contains(topic) {
                                out.entry(m.clone()).or_default().push(TopicPartition::new(topic.clone(), p));
                                break;
                            }
                        }
                    }
                }
            }
            Assignor::CooperativeSticky => return cooperative_sticky(&sorted, partitions),
        }
        out
    }
}

fn cooperative_sticky(
    members: &[&(String, Subscription)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let n = members.len();
    let eligible = |i: usize, tp: &TopicPartition| members[i].1.topics.contains(&tp.topic);
    let mut owner: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    let mut previous: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    let mut counts = vec![0usize; n];
    // 1. Sticky: members keep what they own (the highest generation wins a partition claimed twice).
    let mut claims: Vec<(i32, usize, TopicPartition)> = Vec::new();
    for (i, (_, s)) in members.iter().enumerate() {
        for tp in &s.owned {
            claims.push((s.generation, i, tp.clone()));
        }
    }
    claims.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, i, tp) in claims {
        let exists = partitions.get(&tp.topic).is_some_and(|&c| tp.partition < c);
        if exists && eligible(i, &tp) && !owner.contains_key(&tp) {
            owner.insert(tp.clone(), i);
            previous.insert(tp, i);
            counts[i] += 1;
        }
    }
    // 2. The rest to the least loaded subscriber.
    for (topic, &count) in partitions {
        for p in 0..count {
            let tp = TopicPartition::new(topic.clone(), p);
            if owner.contains_key(&tp) {
                continue;
            }
            if let Some(i) = (0..n).filter(|&i| eligible(i, &tp)).min_by_key(|&i| (counts[i], i)) {
                owner.insert(tp, i);
                counts[i] += 1;
            }
        }
    }
    // 3. Balance: move from a member to a subscriber holding at least two fewer.
    loop {
        let mut moved = false;
        let keys: Vec<TopicPartition> = owner.keys().rev().cloned().collect();
        for tp in keys {
            let from = owner[&tp];
            if let Some(to) = (0..n)
                .filter(|&i| i != from && eligible(i, &tp) && counts[i] + 2 <= counts[from])
                .min_by_key(|&i| (counts[i], i))
            {
                owner.insert(tp, to);
                counts[from] -= 1;
                counts[to] += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    // 4. Cooperative: a partition changing owner is withheld this round; its owner revokes it and rejoins, and
    // the follow-up rebalance hands it over.
    let mut out: BTreeMap<String, Vec<TopicPartition>> = members.iter().map(|(m, _)| (m.clone(), Vec::new())).collect();
    for (tp, i) in owner {
        if previous.get(&tp).is_some_and(|&prev| prev != i) {
            continue;
        }
        out.entry(members[i].0.clone()).or_default().push(tp);
    }
    out
}

/// For a member after SyncGroup: what it must give up (owned, not assigned) and what is new.
pub fn diff(owned: &[TopicPartition], assigned: &[TopicPartition]) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    let o: BTreeSet<&TopicPartition> = owned.iter().collect();
    let a: BTreeSet<&TopicPartition> = assigned.iter().collect();
    (o.difference(&a).map(|t| (*t).clone()).collect(), a.difference(&o).map(|t| (*t).clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(topics: &[&str], owned: &[(&str, i32)]) -> Subscription {
        Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
            generation: 1,
        }
    }

    #[test]
    fn blobs_round_trip() {
        let s = sub(&["a"], &[("a", 1)]);
        assert_eq!(decode_subscription(&encode_subscription(&s)), Some(s));
        let parts = vec![TopicPartition::new("a", 0), TopicPartition::new("b", 3)];
        assert_eq!(decode_assignment(&encode_assignment(&parts)), Some(parts));
    }

    #[test]
    fn range_and_roundrobin() {
        let members = vec![("m1".to_string(), sub(&["t"], &[])), ("m2".to_string(), sub(&["t"], &[]))];
        let parts = BTreeMap::from([("t".to_string(), 3)]);
        let r = Assignor::Range.assign(&members, &parts);
        assert_eq!(r["m1"].len(), 2);
        assert_eq!(r["m2"], vec![TopicPartition::new("t", 2)]);
        let rr = Assignor::RoundRobin.assign(&members, &parts);
        assert_eq!(rr["m1"], vec![TopicPartition::new("t", 0), TopicPartition::new("t", 2)]);
    }

    #[test]
    fn cooperative_sticky_withholds_moving_partitions() {
        let all: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        let members = vec![("a".to_string(), sub(&["t"], &all)), ("b".to_string(), sub(&["t"], &[]))];
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let first = Assignor::CooperativeSticky.assign(&members, &parts);
        assert_eq!(first["a"].len(), 3, "a keeps half");
        assert!(first["b"].is_empty(), "b waits for a to revoke");
        // Second round: a owns only its 3.
        let kept: Vec<(&str, i32)> = first["a"].iter().map(|tp| ("t", tp.partition)).collect();
        let members = vec![("a".to_string(), sub(&["t"], &kept)), ("b".to_string(), sub(&["t"], &[]))];
        let second = Assignor::CooperativeSticky.assign(&members, &parts);
        assert_eq!(second["a"], first["a"]);
        assert_eq!(second["b"].len(), 3);
    }
}
