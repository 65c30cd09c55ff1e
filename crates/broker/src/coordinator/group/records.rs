//! The records of `__consumer_offsets`, in Kafka's own schemas (kafka-protocol has no generated types for them):
//! a key starts with its version, which names the record type (0/1 offset commit, 2 group metadata; 3+ are
//! KIP-848 records), and a value starts with its own schema version. A null value is a tombstone.
//!
//! KIP-848 consumer group records (keys 3-8) have their values in consumer_records.rs.
//!
//! Written versions are the ones Kafka 4.x writes: OffsetCommitValue v3 (v1 when the commit carries an expire
//! timestamp, from OffsetCommit v2-4 `retention_time_ms`), GroupMetadataValue v3. Every older version is read.

use bytes::{Buf, BufMut, Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct RecordError(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorKey {
    /// Key versions 0 and 1.
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    /// Key version 2.
    GroupMetadata {
        group: String,
    },
    /// Key versions 3-8: a KIP-848 consumer group's records (values in consumer_records.rs).
    ConsumerGroupMetadata {
        group: String,
    },
    ConsumerGroupPartitionMetadata {
        group: String,
    },
    ConsumerGroupMemberMetadata {
        group: String,
        member: String,
    },
    ConsumerGroupTargetAssignmentMetadata {
        group: String,
    },
    ConsumerGroupTargetAssignmentMember {
        group: String,
        member: String,
    },
    ConsumerGroupCurrentMemberAssignment {
        group: String,
        member: String,
    },
    /// Share and streams group records (versions 9+), which this coordinator does not serve; skipped on load.
    Other(i16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Only set by OffsetCommit v2-v4 with an explicit `retention_time_ms`.
    pub expire_timestamp: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    /// The member's metadata for the group's selected protocol (for consumers: ConsumerProtocolSubscription).
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

// ---- encoding

/// Whether `s` fits a record string (an i16 length). Requests are refused before a longer one reaches a record:
/// writing it would truncate it.
pub fn fits_record_string(s: &str) -> bool {
    s.len() <= i16::MAX as usize
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len().min(i16::MAX as usize) as i16);
    buf.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

/// Keys 3-8 (non-flexible, like every key): the version, the group id, and for member records the member id.
fn put_group_key(buf: &mut BytesMut, version: i16, group: &str, member: Option<&str>) {
    buf.put_i16(version);
    put_string(buf, group);
    if let Some(m) = member {
        put_string(buf, m);
    }
}

impl CoordinatorKey {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            CoordinatorKey::OffsetCommit { group, topic, partition } => {
                buf.put_i16(1);
                put_string(&mut buf, group);
                put_string(&mut buf, topic);
                buf.put_i32(*partition);
            }
            CoordinatorKey::GroupMetadata { group } => {
                buf.put_i16(2);
                put_string(&mut buf, group);
            }
            CoordinatorKey::ConsumerGroupMetadata { group } => put_group_key(&mut buf, 3, group, None),
            CoordinatorKey::ConsumerGroupPartitionMetadata { group } => put_group_key(&mut buf, 4, group, None),
            CoordinatorKey::ConsumerGroupMemberMetadata { group, member } => {
                put_group_key(&mut buf, 5, group, Some(member))
            }
            CoordinatorKey::ConsumerGroupTargetAssignmentMetadata { group } => put_group_key(&mut buf, 6, group, None),
            CoordinatorKey::ConsumerGroupTargetAssignmentMember { group, member } => {
                put_group_key(&mut buf, 7, group, Some(member))
            }
            CoordinatorKey::ConsumerGroupCurrentMemberAssignment { group, member } => {
                put_group_key(&mut buf, 8, group, Some(member))
            }
            CoordinatorKey::Other(v) => buf.put_i16(*v),
        }
        buf.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<CoordinatorKey, RecordError> {
        let r = &mut b;
        let version = get_i16(r)?;
        Ok(match version {
            0 | 1 => {
                CoordinatorKey::OffsetCommit { group: get_string(r)?, topic: get_string(r)?, partition: get_i32(r)? }
            }
            2 => CoordinatorKey::GroupMetadata { group: get_string(r)? },
            3 => CoordinatorKey::ConsumerGroupMetadata { group: get_string(r)? },
            4 => CoordinatorKey::ConsumerGroupPartitionMetadata { group: get_string(r)? },
            5 => CoordinatorKey::ConsumerGroupMemberMetadata { group: get_string(r)?, member: get_string(r)? },
            6 => CoordinatorKey::ConsumerGroupTargetAssignmentMetadata { group: get_string(r)? },
            7 => CoordinatorKey::ConsumerGroupTargetAssignmentMember { group: get_string(r)?, member: get_string(r)? },
            8 => CoordinatorKey::ConsumerGroupCurrentMemberAssignment { group: get_string(r)?, member: get_string(r)? },
            v if v >= 9 => CoordinatorKey::Other(v),
            v => return Err(RecordError(format!("unknown key version {v}"))),
        })
    }
}

impl OffsetCommitValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self.expire_timestamp {
            Some(expire) => {
                buf.put_i16(1);
                buf.put_i64(self.offset);
                put_string(&mut buf, &self.metadata);
                buf.put_i64(self.commit_timestamp);
                buf.put_i64(expire);
            }
            None => {
                buf.put_i16(3);
                buf.put_i64(self.offset);
                buf.put_i32(self.leader_epoch);
                put_string(&mut buf, &self.metadata);
                buf.put_i64(self.commit_timestamp);
            }
        }
        buf.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<OffsetCommitValue, RecordError> {
        let r = &mut b;
        let version = get_i16(r)?;
        if !(0..=3).contains(&version) {
            return Err(RecordError(format!("unsupported offset commit value version {version}")));
        }
        let offset = get_i64(r)?;
        let leader_epoch = if version >= 3 { get_i32(r)? } else { -1 };
        let metadata = get_string(r)?;
        let commit_timestamp = get_i64(r)?;
        let expire_timestamp = if version == 1 { Some(get_i64(r)?) } else { None };
        Ok(OffsetCommitValue { offset, leader_epoch, metadata, commit_timestamp, expire_timestamp })
    }
}

impl GroupMetadataValue {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.current_state_timestamp);
        buf.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut buf, &m.member_id);
            put_nullable_string(&mut buf, m.group_instance_id.as_deref());
            put_string(&mut buf, &m.client_id);
            put_string(&mut buf, &m.client_host);
            buf.put_i32(m.rebalance_timeout);
            buf.put_i32(m.session_timeout);
            put_bytes(&mut buf, &m.subscription);
            put_bytes(&mut buf, &m.assignment);
        }
        buf.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<GroupMetadataValue, RecordError> {
        let r = &mut b;
        let version = get_i16(r)?;
        if !(0..=3).contains(&version) {
            return Err(RecordError(format!("unsupported group metadata value version {version}")));
        }
        let protocol_type = get_string(r)?;
        let generation = get_i32(r)?;
        let protocol = get_nullable_string(r)?;
        let leader = get_nullable_string(r)?;
        let current_state_timestamp = if version >= 2 { get_i64(r)? } else { -1 };
        let count = get_i32(r)?;
        let mut members = Vec::with_capacity(count.clamp(0, 1024) as usize);
        for _ in 0..count.max(0) {
            let member_id = get_string(r)?;
            let group_instance_id = if version >= 3 { get_nullable_string(r)? } else { None };
            let client_id = get_string(r)?;
            let client_host = get_string(r)?;
            let rebalance_timeout = if version >= 1 { get_i32(r)? } else { -1 };
            let session_timeout = get_i32(r)?;
            let rebalance_timeout = if version >= 1 { rebalance_timeout } else { session_timeout };
            let subscription = get_bytes(r)?;
            let assignment = get_bytes(r)?;
            members.push(MemberMetadata {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                subscription,
                assignment,
            });
        }
        Ok(GroupMetadataValue { protocol_type, generation, protocol, leader, current_state_timestamp, members })
    }
}

// ---- decoding helpers: every read is bounds-checked, the bytes come from disk

fn need(r: &[u8], n: usize) -> Result<(), RecordError> {
    if r.remaining() < n {
        Err(RecordError(format!("truncated: need {n} bytes, {} left", r.remaining())))
    } else {
        Ok(())
    }
}

fn get_i16(r: &mut &[u8]) -> Result<i16, RecordError> {
    need(r, 2)?;
    Ok(r.get_i16())
}

fn get_i32(r: &mut &[u8]) -> Result<i32, RecordError> {
    need(r, 4)?;
    Ok(r.get_i32())
}

fn get_i64(r: &mut &[u8]) -> Result<i64, RecordError> {
    need(r, 8)?;
    Ok(r.get_i64())
}

fn get_nullable_string(r: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let len = get_i16(r)?;
    if len < 0 {
        return Ok(None);
    }
    need(r, len as usize)?;
    let s = std::str::from_utf8(&r[..len as usize]).map_err(|e| RecordError(e.to_string()))?.to_string();
    r.advance(len as usize);
    Ok(Some(s))
}

fn get_string(r: &mut &[u8]) -> Result<String, RecordError> {
    get_nullable_string(r)?.ok_or_else(|| RecordError("null in a non-nullable string".into()))
}

fn get_bytes(r: &mut &[u8]) -> Result<Bytes, RecordError> {
    let len = get_i32(r)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    need(r, len as usize)?;
    let b = Bytes::copy_from_slice(&r[..len as usize]);
    r.advance(len as usize);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_round_trip_and_kafka_layout() {
        let key = CoordinatorKey::OffsetCommit { group: "g".into(), topic: "t".into(), partition: 7 };
        let k = key.encode();
        // version 1, "g", "t", partition 7: Kafka's OffsetCommitKey bytes
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        assert_eq!(CoordinatorKey::decode(&k).unwrap(), key);
        let v = OffsetCommitValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp: 1000,
            expire_timestamp: None,
        };
        let b = v.encode();
        assert_eq!(&b[..2], &[0, 3]);
        assert_eq!(OffsetCommitValue::decode(&b).unwrap(), v);
        let v1 = OffsetCommitValue { expire_timestamp: Some(5000), leader_epoch: -1, ..v };
        assert_eq!(OffsetCommitValue::decode(&v1.encode()).unwrap(), v1);
    }

    #[test]
    fn group_metadata_round_trip() {
        let v = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 99,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 300000,
                session_timeout: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupMetadataValue::decode(&v.encode()).unwrap(), v);
        assert_eq!(
            CoordinatorKey::decode(&CoordinatorKey::GroupMetadata { group: "g".into() }.encode()).unwrap(),
            CoordinatorKey::GroupMetadata { group: "g".into() }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let v = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp: 0,
            members: vec![],
        }
        .encode();
        for n in 0..v.len() {
            assert!(GroupMetadataValue::decode(&v[..n]).is_err());
        }
        assert!(CoordinatorKey::decode(&[]).is_err());
    }
}
