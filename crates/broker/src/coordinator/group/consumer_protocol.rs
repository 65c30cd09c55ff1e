//! Reading the embedded consumer protocol (protocol type "consumer"): the subscription a member sends in
//! JoinGroup and the assignment the leader sends in SyncGroup. The broker passes both through untouched; it only
//! looks inside to know which topics a group consumes (OffsetDelete, lag, expiry) and to describe assignments.
//! Each blob is a version (int16) followed by the struct at that version; versions newer than the schema are read
//! as the newest known, as Kafka's ConsumerProtocol does (fields are only ever appended).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopicPartition;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const MAX_VERSION: i16 = 3;

/// The topics a subscription names; `None` if the blob is not a consumer protocol subscription.
pub fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut b = metadata.clone();
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16().clamp(0, MAX_VERSION);
    let s = ConsumerProtocolSubscription::decode(&mut b, version).ok()?;
    Some(s.topics.iter().map(|t| t.to_string()).collect())
}

/// A classic member's subscription as the KIP-848 bridge needs it: topics, owned partitions (v1+), rack (v3+).
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned: Vec<(String, Vec<i32>)>,
    pub rack_id: Option<String>,
}

/// Decodes a ConsumerProtocolSubscription; `None` if the blob is not one.
pub fn subscription(metadata: &Bytes) -> Option<Subscription> {
    let mut b = metadata.clone();
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16().clamp(0, MAX_VERSION);
    let s = ConsumerProtocolSubscription::decode(&mut b, version).ok()?;
    Some(Subscription {
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        owned: s.owned_partitions.iter().map(|tp| (tp.topic.0.to_string(), tp.partitions.clone())).collect(),
        rack_id: s.rack_id.map(|r| r.to_string()),
    })
}

/// (topic, partitions) of an assignment; empty for an empty or foreign blob.
pub fn assignment_partitions(assignment: &Bytes) -> Vec<(String, Vec<i32>)> {
    let mut b = assignment.clone();
    if b.remaining() < 2 {
        return Vec::new();
    }
    let version = b.get_i16().clamp(0, MAX_VERSION);
    match ConsumerProtocolAssignment::decode(&mut b, version) {
        Ok(a) => a.assigned_partitions.into_iter().map(|tp| (tp.topic.0.to_string(), tp.partitions)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Encodes an assignment at version 0 (what every consumer reads); used by the KIP-848 classic-member bridge
/// and tests.
pub fn encode_assignment(partitions: &[(String, Vec<i32>)]) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|(t, p)| {
                AssignedTopicPartition::default()
                    .with_topic(kafka_protocol::messages::TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(p.clone())
            })
            .collect(),
    );
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 0);
    if a.encode(&mut buf, 0).is_err() {
        return Bytes::new();
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subscription_and_assignment() {
        let s = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("a"), StrBytes::from_static_str("b")]);
        let mut buf = bytes::BytesMut::new();
        bytes::BufMut::put_i16(&mut buf, 1);
        s.encode(&mut buf, 1).unwrap();
        assert_eq!(subscription_topics(&buf.freeze()), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(subscription_topics(&Bytes::from_static(b"\x00")), None);
        let a = encode_assignment(&[("a".into(), vec![0, 2])]);
        assert_eq!(assignment_partitions(&a), vec![("a".to_string(), vec![0, 2])]);
        assert!(assignment_partitions(&Bytes::new()).is_empty());
    }
}
