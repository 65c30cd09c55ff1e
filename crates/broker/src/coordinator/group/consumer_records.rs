//! A KIP-848 consumer group as `__consumer_offsets` records, in Kafka's coordinator record schemas (key versions 3-8,
//! values in the flexible encoding: compact strings and arrays, tagged fields):
//!
//! | key | value                                                                       |
//! |-----|-----------------------------------------------------------------------------|
//! | 3 ConsumerGroupMetadata (group)                    | Epoch (the group epoch)                      |
//! | 4 ConsumerGroupPartitionMetadata (group)           | Topics: id, name, partition count            |
//! | 5 ConsumerGroupMemberMetadata (group, member)      | instance/rack/client ids, subscription, ...  |
//! | 6 ConsumerGroupTargetAssignmentMetadata (group)    | AssignmentEpoch                              |
//! | 7 ConsumerGroupTargetAssignmentMember (group, member) | the member's target partitions            |
//! | 8 ConsumerGroupCurrentMemberAssignment (group, member) | member epoch, previous epoch, state, assigned and pending-revocation partitions |
//!
//! The shard writes, after every change of a group, the records whose value changed and tombstones for those that
//! no longer exist (`diff`), and rebuilds groups from them on load (`replay`), so members keep their ids and epochs
//! across a broker restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::assignor::Assignment;
use super::consumer_group::{ClassicMemberMetadata, ConsumerGroup, ConsumerMember, MemberState};
use super::records::{CoordinatorKey, RecordError};

/// The records of one group: encoded key → encoded value.
pub type GroupRecords = HashMap<Bytes, Bytes>;

// ---- the flexible encoding (KIP-482)

fn put_uvarint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

fn put_compact_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u64 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

fn put_compact_len(buf: &mut BytesMut, n: usize) {
    put_uvarint(buf, n as u64 + 1);
}

/// No tagged fields.
fn put_no_tags(buf: &mut BytesMut) {
    put_uvarint(buf, 0);
}

fn put_topic_partitions(buf: &mut BytesMut, a: &Assignment) {
    put_compact_len(buf, a.len());
    for (topic, partitions) in a {
        buf.put_slice(topic.as_bytes());
        put_compact_len(buf, partitions.len());
        for p in partitions {
            buf.put_i32(*p);
        }
        put_no_tags(buf);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            Err(RecordError(format!("truncated: need {n} bytes, {} left", self.0.remaining())))
        } else {
            Ok(())
        }
    }
    fn i8(&mut self) -> Result<i8, RecordError> {
        self.need(1)?;
        Ok(self.0.get_i8())
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn uuid(&mut self) -> Result<Uuid, RecordError> {
        self.need(16)?;
        let mut b = [0u8; 16];
        self.0.copy_to_slice(&mut b);
        Ok(Uuid::from_bytes(b))
    }
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            self.need(1)?;
            let b = self.0.get_u8();
            out |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(RecordError("varint too long".into()))
    }
    /// A compact array's length; None for null.
    fn compact_len(&mut self) -> Result<Option<usize>, RecordError> {
        let n = self.uvarint()?;
        if n == 0 {
            return Ok(None);
        }
        let n = (n - 1) as usize;
        // Every element takes at least one byte: a length beyond what is left is corrupt.
        self.need(n.min(1 << 20))?;
        Ok(Some(n))
    }
    fn compact_string(&mut self) -> Result<Option<String>, RecordError> {
        let Some(n) = self.compact_len()? else { return Ok(None) };
        self.need(n)?;
        let s = std::str::from_utf8(&self.0[..n]).map_err(|e| RecordError(e.to_string()))?.to_string();
        self.0.advance(n);
        Ok(Some(s))
    }
    fn compact_bytes(&mut self) -> Result<Bytes, RecordError> {
        let n = self.compact_len()?.unwrap_or(0);
        self.need(n)?;
        let b = Bytes::copy_from_slice(&self.0[..n]);
        self.0.advance(n);
        Ok(b)
    }
    fn string(&mut self) -> Result<String, RecordError> {
        self.compact_string()?.ok_or_else(|| RecordError("null in a non-nullable string".into()))
    }
    /// Skips the tagged fields (those Kafka added later: metadata hash, assignment epochs, ...).
    fn skip_tags(&mut self) -> Result<(), RecordError> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.need(size)?;
            self.0.advance(size);
        }
        Ok(())
    }
    fn topic_partitions(&mut self) -> Result<Assignment, RecordError> {
        let mut a = Assignment::new();
        for _ in 0..self.compact_len()?.unwrap_or(0) {
            let topic = self.uuid()?;
            let mut ps = BTreeSet::new();
            for _ in 0..self.compact_len()?.unwrap_or(0) {
                ps.insert(self.i32()?);
            }
            self.skip_tags()?;
            if !ps.is_empty() {
                a.entry(topic).or_default().extend(ps);
            }
        }
        Ok(a)
    }
    /// A value starts with its schema version; all of these have only version 0.
    fn version0(&mut self) -> Result<(), RecordError> {
        match self.i16()? {
            0 => Ok(()),
            v => Err(RecordError(format!("unsupported value version {v}"))),
        }
    }
}

fn state_code(s: MemberState) -> i8 {
    // Kafka's MemberState values.
    match s {
        MemberState::Stable => 0,
        MemberState::UnrevokedPartitions => 1,
        MemberState::UnreleasedPartitions => 2,
    }
}

fn state_from(code: i8) -> MemberState {
    match code {
        1 => MemberState::UnrevokedPartitions,
        2 => MemberState::UnreleasedPartitions,
        // Stable, or a state a newer version wrote: reconciliation starts over from the member's assignment.
        _ => MemberState::Stable,
    }
}

fn epoch_value(epoch: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(epoch);
    put_no_tags(&mut b);
    b.freeze()
}

fn member_metadata_value(m: &ConsumerMember) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_compact_string(&mut b, m.instance_id.as_deref());
    put_compact_string(&mut b, m.rack_id.as_deref());
    put_compact_string(&mut b, Some(&m.client_id));
    put_compact_string(&mut b, Some(&m.client_host));
    put_compact_len(&mut b, m.subscribed_topic_names.len());
    for n in &m.subscribed_topic_names {
        put_compact_string(&mut b, Some(n));
    }
    put_compact_string(&mut b, m.subscribed_topic_regex.as_deref());
    b.put_i32(m.rebalance_timeout_ms);
    put_compact_string(&mut b, m.server_assignor.as_deref());
    match &m.classic {
        None => put_no_tags(&mut b),
        Some(c) => {
            // Tagged field 0: ClassicMemberMetadata.
            let mut t = BytesMut::new();
            t.put_i32(c.session_timeout_ms);
            put_compact_len(&mut t, c.protocols.len());
            for (name, metadata) in &c.protocols {
                put_compact_string(&mut t, Some(name));
                put_compact_len(&mut t, metadata.len());
                t.put_slice(metadata);
                put_no_tags(&mut t);
            }
            put_no_tags(&mut t);
            put_uvarint(&mut b, 1);
            put_uvarint(&mut b, 0);
            put_uvarint(&mut b, t.len() as u64);
            b.put_slice(&t);
        }
    }
    b.freeze()
}

fn current_assignment_value(m: &ConsumerMember) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(m.member_epoch);
    b.put_i32(m.previous_member_epoch);
    b.put_i8(state_code(m.state));
    put_topic_partitions(&mut b, &m.assigned);
    put_topic_partitions(&mut b, &m.pending_revocation);
    put_no_tags(&mut b);
    b.freeze()
}

fn target_member_value(a: &Assignment) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_topic_partitions(&mut b, a);
    put_no_tags(&mut b);
    b.freeze()
}

fn partition_metadata_value(topics: &BTreeMap<String, (Uuid, i32)>) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_compact_len(&mut b, topics.len());
    for (name, (id, partitions)) in topics {
        b.put_slice(id.as_bytes());
        put_compact_string(&mut b, Some(name));
        b.put_i32(*partitions);
        put_compact_len(&mut b, 0); // PartitionMetadata (racks): not tracked
        put_no_tags(&mut b);
    }
    put_no_tags(&mut b);
    b.freeze()
}

/// Every record that describes the group, in the order Kafka writes them for a new member (its metadata, the
/// group's subscription metadata and epoch, the target assignment, then the member's current assignment).
pub fn group_records(g: &ConsumerGroup) -> Vec<(CoordinatorKey, Bytes)> {
    let group = || g.group_id.clone();
    let mut out = Vec::with_capacity(3 + 3 * g.members.len());
    for m in g.members.values() {
        out.push((
            CoordinatorKey::ConsumerGroupMemberMetadata { group: group(), member: m.member_id.clone() },
            member_metadata_value(m),
        ));
    }
    out.push((
        CoordinatorKey::ConsumerGroupPartitionMetadata { group: group() },
        partition_metadata_value(&g.subscription_metadata),
    ));
    out.push((CoordinatorKey::ConsumerGroupMetadata { group: group() }, epoch_value(g.group_epoch)));
    for (member, a) in &g.target {
        out.push((
            CoordinatorKey::ConsumerGroupTargetAssignmentMember { group: group(), member: member.clone() },
            target_member_value(a),
        ));
    }
    out.push((
        CoordinatorKey::ConsumerGroupTargetAssignmentMetadata { group: group() },
        epoch_value(g.assignment_epoch),
    ));
    for m in g.members.values() {
        out.push((
            CoordinatorKey::ConsumerGroupCurrentMemberAssignment { group: group(), member: m.member_id.clone() },
            current_assignment_value(m),
        ));
    }
    out
}

/// The records to write to go from `before` (what the log holds for the group) to `now` (None: the group is gone):
/// tombstones of member records first, then changed values, then tombstones of the group's own records, so that,
/// as in Kafka, a group's metadata is deleted only after its members. Updates `before` to `now`.
pub fn diff(before: &mut GroupRecords, now: Option<&ConsumerGroup>) -> Vec<(Bytes, Option<Bytes>)> {
    let now_records = now.map(group_records).unwrap_or_default();
    let now_keys: std::collections::HashSet<Bytes> = now_records.iter().map(|(k, _)| k.encode()).collect();
    let mut member_tombstones = Vec::new();
    let mut group_tombstones = Vec::new();
    for key in before.keys() {
        if !now_keys.contains(key) {
            // Keys 5, 7, 8 name a member; 3, 4, 6 the group.
            let member_level = matches!(key.get(..2), Some([0, 5]) | Some([0, 7]) | Some([0, 8]));
            if member_level { &mut member_tombstones } else { &mut group_tombstones }.push(key.clone());
        }
    }
    // Kafka's tombstone order: per member its current assignment, target assignment, then metadata (keys 8, 7, 5);
    // for the group its target metadata, partition metadata, then group metadata (6, 4, 3).
    let key_type = |k: &Bytes| k.get(1).copied().unwrap_or(0);
    let member_of = |k: &Bytes| match CoordinatorKey::decode(k) {
        Ok(
            CoordinatorKey::ConsumerGroupMemberMetadata { member, .. }
            | CoordinatorKey::ConsumerGroupTargetAssignmentMember { member, .. }
            | CoordinatorKey::ConsumerGroupCurrentMemberAssignment { member, .. },
        ) => member,
        _ => String::new(),
    };
    member_tombstones.sort_by_cached_key(|k| (member_of(k), std::cmp::Reverse(key_type(k))));
    group_tombstones.sort_by_key(|k| std::cmp::Reverse(key_type(k)));
    let mut out = Vec::new();
    for k in member_tombstones {
        before.remove(&k);
        out.push((k, None));
    }
    for (key, value) in now_records {
        let k = key.encode();
        if before.get(&k) != Some(&value) {
            before.insert(k.clone(), value.clone());
            out.push((k, Some(value)));
        }
    }
    for k in group_tombstones {
        before.remove(&k);
        out.push((k, None));
    }
    out
}

/// A group being rebuilt from its records while the shard loads.
#[derive(Default)]
pub struct LoadingGroup {
    pub group: Option<ConsumerGroup>,
    /// Members that have a ConsumerGroupMemberMetadata record (a member needs one to exist).
    with_metadata: BTreeSet<String>,
    /// The records as read, so that the first change after loading writes only what differs.
    pub records: GroupRecords,
}

fn blank_member(member_id: &str) -> ConsumerMember {
    ConsumerMember {
        member_id: member_id.to_string(),
        instance_id: None,
        rack_id: None,
        client_id: String::new(),
        client_host: String::new(),
        member_epoch: 0,
        previous_member_epoch: -1,
        state: MemberState::Stable,
        rebalance_timeout_ms: -1,
        subscribed_topic_names: Vec::new(),
        subscribed_topic_regex: None,
        server_assignor: None,
        assigned: Assignment::new(),
        pending_revocation: Assignment::new(),
        classic: None,
    }
}

impl LoadingGroup {
    fn group(&mut self, group_id: &str) -> &mut ConsumerGroup {
        self.group.get_or_insert_with(|| ConsumerGroup::new(group_id.to_string()))
    }

    /// Applies one record (Kafka's replay): values upsert, tombstones delete. The order of record types does not
    /// matter, because compaction may have removed any older record.
    pub fn replay(&mut self, key: &CoordinatorKey, raw_key: &Bytes, value: Option<&[u8]>) -> Result<(), RecordError> {
        match value {
            Some(v) => {
                self.apply(key, v)?;
                self.records.insert(raw_key.clone(), Bytes::copy_from_slice(v));
            }
            None => {
                self.records.remove(raw_key);
                self.remove(key);
            }
        }
        Ok(())
    }

    fn apply(&mut self, key: &CoordinatorKey, v: &[u8]) -> Result<(), RecordError> {
        let mut r = Reader(v);
        r.version0()?;
        match key {
            CoordinatorKey::ConsumerGroupMetadata { group } => {
                let epoch = r.i32()?;
                self.group(group).group_epoch = epoch;
            }
            CoordinatorKey::ConsumerGroupPartitionMetadata { group } => {
                let mut topics = BTreeMap::new();
                for _ in 0..r.compact_len()?.unwrap_or(0) {
                    let id = r.uuid()?;
                    let name = r.string()?;
                    let partitions = r.i32()?;
                    for _ in 0..r.compact_len()?.unwrap_or(0) {
                        r.i32()?;
                        for _ in 0..r.compact_len()?.unwrap_or(0) {
                            r.compact_string()?;
                        }
                        r.skip_tags()?;
                    }
                    r.skip_tags()?;
                    topics.insert(name, (id, partitions));
                }
                self.group(group).subscription_metadata = topics;
            }
            CoordinatorKey::ConsumerGroupMemberMetadata { group, member } => {
                let instance_id = r.compact_string()?;
                let rack_id = r.compact_string()?;
                let client_id = r.string()?;
                let client_host = r.string()?;
                let mut names = Vec::new();
                for _ in 0..r.compact_len()?.unwrap_or(0) {
                    names.push(r.string()?);
                }
                let regex = r.compact_string()?;
                let rebalance_timeout_ms = r.i32()?;
                let server_assignor = r.compact_string()?;
                let mut classic = None;
                for _ in 0..r.uvarint()? {
                    let tag = r.uvarint()?;
                    let size = r.uvarint()? as usize;
                    r.need(size)?;
                    let (field, rest) = r.0.split_at(size);
                    r.0 = rest;
                    if tag == 0 {
                        let mut f = Reader(field);
                        let session_timeout_ms = f.i32()?;
                        let mut protocols = Vec::new();
                        for _ in 0..f.compact_len()?.unwrap_or(0) {
                            let name = f.string()?;
                            let metadata = f.compact_bytes()?;
                            f.skip_tags()?;
                            protocols.push((name, metadata));
                        }
                        classic = Some(ClassicMemberMetadata { session_timeout_ms, protocols });
                    }
                }
                let m = self.group(group).members.entry(member.clone()).or_insert_with(|| blank_member(member));
                m.instance_id = instance_id;
                m.rack_id = rack_id;
                m.client_id = client_id;
                m.client_host = client_host;
                m.subscribed_topic_names = names;
                m.subscribed_topic_regex = regex;
                m.rebalance_timeout_ms = rebalance_timeout_ms;
                m.server_assignor = server_assignor;
                m.classic = classic;
                self.with_metadata.insert(member.clone());
            }
            CoordinatorKey::ConsumerGroupTargetAssignmentMetadata { group } => {
                let epoch = r.i32()?;
                self.group(group).assignment_epoch = epoch;
            }
            CoordinatorKey::ConsumerGroupTargetAssignmentMember { group, member } => {
                let a = r.topic_partitions()?;
                self.group(group).target.insert(member.clone(), a);
            }
            CoordinatorKey::ConsumerGroupCurrentMemberAssignment { group, member } => {
                let member_epoch = r.i32()?;
                let previous_member_epoch = r.i32()?;
                let state = state_from(r.i8()?);
                let assigned = r.topic_partitions()?;
                let pending_revocation = r.topic_partitions()?;
                let m = self.group(group).members.entry(member.clone()).or_insert_with(|| blank_member(member));
                m.member_epoch = member_epoch;
                m.previous_member_epoch = previous_member_epoch;
                m.state = state;
                m.assigned = assigned;
                m.pending_revocation = pending_revocation;
            }
            _ => {}
        }
        Ok(())
    }

    fn remove(&mut self, key: &CoordinatorKey) {
        let Some(g) = self.group.as_mut() else { return };
        match key {
            CoordinatorKey::ConsumerGroupMetadata { .. } => self.group = None,
            CoordinatorKey::ConsumerGroupMemberMetadata { member, .. } => {
                g.members.remove(member);
                self.with_metadata.remove(member);
            }
            CoordinatorKey::ConsumerGroupTargetAssignmentMember { member, .. } => {
                g.target.remove(member);
            }
            // The member itself goes with its metadata record; the group's epochs and subscription metadata
            // go with the group.
            _ => {}
        }
    }

    /// The loaded group, without members whose metadata record is missing (half-written or compacted state).
    pub fn finish(mut self) -> Option<(ConsumerGroup, GroupRecords)> {
        let mut g = self.group.take()?;
        let with_metadata = &self.with_metadata;
        g.members.retain(|id, _| with_metadata.contains(id));
        Some((g, self.records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConsumerGroup {
        let t = Uuid::from_u128(7);
        let mut g = ConsumerGroup::new("g".into());
        g.group_epoch = 5;
        g.assignment_epoch = 5;
        g.subscription_metadata.insert("orders".into(), (t, 3));
        let mut m = blank_member("m1");
        m.instance_id = Some("i".into());
        m.client_id = "c".into();
        m.client_host = "/127.0.0.1".into();
        m.subscribed_topic_names = vec!["orders".into()];
        m.server_assignor = Some("uniform".into());
        m.rebalance_timeout_ms = 45000;
        m.classic = Some(ClassicMemberMetadata {
            session_timeout_ms: 10000,
            protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        });
        m.member_epoch = 5;
        m.previous_member_epoch = 4;
        m.state = MemberState::UnrevokedPartitions;
        m.assigned = Assignment::from([(t, BTreeSet::from([0, 1]))]);
        m.pending_revocation = Assignment::from([(t, BTreeSet::from([2]))]);
        g.members.insert("m1".into(), m);
        g.target.insert("m1".into(), Assignment::from([(t, BTreeSet::from([0, 1]))]));
        g
    }

    fn load(records: &[(Bytes, Option<Bytes>)]) -> Option<(ConsumerGroup, GroupRecords)> {
        let mut l = LoadingGroup::default();
        for (k, v) in records {
            let key = CoordinatorKey::decode(k).unwrap();
            l.replay(&key, k, v.as_deref()).unwrap();
        }
        l.finish()
    }

    #[test]
    fn a_group_survives_its_records() {
        let g = sample();
        let mut persisted = GroupRecords::new();
        let written = diff(&mut persisted, Some(&g));
        assert_eq!(written.len(), 6);
        // Nothing changed: nothing to write.
        assert!(diff(&mut persisted, Some(&g)).is_empty());
        let (back, records) = load(&written).unwrap();
        assert_eq!(records, persisted);
        assert_eq!((back.group_epoch, back.assignment_epoch), (5, 5));
        assert_eq!(back.subscription_metadata, g.subscription_metadata);
        assert_eq!(back.target, g.target);
        let (a, b) = (&back.members["m1"], &g.members["m1"]);
        assert_eq!(
            (a.member_epoch, a.previous_member_epoch, a.state),
            (b.member_epoch, b.previous_member_epoch, b.state)
        );
        assert_eq!((&a.assigned, &a.pending_revocation), (&b.assigned, &b.pending_revocation));
        assert_eq!(
            (&a.instance_id, &a.client_id, &a.subscribed_topic_names, &a.server_assignor),
            (&b.instance_id, &b.client_id, &b.subscribed_topic_names, &b.server_assignor)
        );
        assert_eq!(a.rebalance_timeout_ms, 45000);
        assert_eq!(a.classic, b.classic);
    }

    #[test]
    fn a_member_leaving_and_the_group_deleted_write_tombstones() {
        let mut g = sample();
        let mut persisted = GroupRecords::new();
        let mut log = diff(&mut persisted, Some(&g));
        g.members.clear();
        g.target.clear();
        g.group_epoch = 6;
        g.assignment_epoch = 6;
        let left = diff(&mut persisted, Some(&g));
        // three member tombstones first (current assignment, target, metadata, as Kafka), then the new epochs
        assert!(left[..3].iter().all(|(_, v)| v.is_none()));
        assert_eq!(left[..3].iter().map(|(k, _)| k[1]).collect::<Vec<_>>(), vec![8, 7, 5]);
        assert_eq!(left.len(), 5);
        log.extend(left.clone());
        let (back, _) = load(&log).unwrap();
        assert!(back.members.is_empty() && back.target.is_empty());
        assert_eq!(back.group_epoch, 6);
        let deleted = diff(&mut persisted, None);
        assert!(deleted.iter().all(|(_, v)| v.is_none()));
        assert_eq!(deleted.last().map(|(k, _)| k.get(..2).unwrap().to_vec()), Some(vec![0, 3]));
        assert!(persisted.is_empty());
        log.extend(deleted);
        assert!(load(&log).is_none());
    }

    #[test]
    fn unknown_tagged_fields_are_skipped_and_garbage_is_an_error() {
        // ConsumerGroupMetadataValue with MetadataHash (tag 0, 8 bytes), as Kafka 4.1+ writes it.
        let mut v = BytesMut::new();
        v.put_i16(0);
        v.put_i32(9);
        put_uvarint(&mut v, 1);
        put_uvarint(&mut v, 0);
        put_uvarint(&mut v, 8);
        v.put_i64(12345);
        let key = CoordinatorKey::ConsumerGroupMetadata { group: "g".into() };
        let mut l = LoadingGroup::default();
        l.replay(&key, &key.encode(), Some(&v)).unwrap();
        assert_eq!(l.group.as_ref().unwrap().group_epoch, 9);
        let member = CoordinatorKey::ConsumerGroupCurrentMemberAssignment { group: "g".into(), member: "m".into() };
        for n in 0..current_assignment_value(&sample().members["m1"]).len() {
            let bytes = current_assignment_value(&sample().members["m1"]);
            let _ = l.replay(&member, &member.encode(), Some(&bytes[..n])); // no panic on truncation
        }
        assert!(l.replay(&member, &member.encode(), Some(&[0, 0, 0])).is_err());
    }
}
