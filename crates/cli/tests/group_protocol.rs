//! The group coordinator spoken to over the wire with exact versions: the classic join/sync/heartbeat/leave
//! cycle and its errors, static membership, offsets (commit, fetch single and multi-group, delete), the admin
//! APIs, KIP-848 heartbeats, and group state surviving a kill -9.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::{Conn, Server};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;

const NONE: i16 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

fn start() -> Server {
    Server::start(&["group.initial.rebalance.delay.ms=0", "offsets.topic.num.partitions=5"])
}

fn create_topic(conn: &mut Conn, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    assert_eq!(conn.send(&req, 7).topics[0].error_code, NONE);
    // Clients look for their coordinator first; the first lookup creates __consumer_offsets.
    assert_eq!(conn.send(&FindCoordinatorRequest::default().with_key(s("g")), 3).error_code, NONE);
}

fn subscription(topics: &[&str]) -> Bytes {
    let sub = ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0).unwrap();
    buf.freeze()
}

fn join(
    conn: &mut Conn,
    g: &str,
    member: &str,
    instance: Option<&str>,
    protocol_type: &str,
    version: i16,
) -> JoinGroupResponse {
    let req = JoinGroupRequest::default()
        .with_group_id(group(g))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s(protocol_type))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription(&["t"]))]);
    conn.send(&req, version)
}

fn sync(
    conn: &mut Conn,
    g: &str,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
) -> SyncGroupResponse {
    let req = SyncGroupRequest::default()
        .with_group_id(group(g))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assignments
                .into_iter()
                .map(|(m, a)| {
                    sync_group_request::SyncGroupRequestAssignment::default().with_member_id(s(&m)).with_assignment(a)
                })
                .collect(),
        );
    conn.send(&req, 5)
}

fn heartbeat(conn: &mut Conn, g: &str, member: &str, generation: i32) -> i16 {
    let req =
        HeartbeatRequest::default().with_group_id(group(g)).with_member_id(s(member)).with_generation_id(generation);
    conn.send(&req, 4).error_code
}

fn commit(conn: &mut Conn, g: &str, member: &str, generation: i32, topic: &str, partition: i32, offset: i64) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(group(g))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(s("meta")))])]);
    conn.send(&req, 8).topics[0].partitions[0].error_code
}

fn fetch_offset(conn: &mut Conn, g: &str, topic: &str, partition: i32) -> (i64, String) {
    let req = OffsetFetchRequest::default().with_group_id(group(g)).with_topics(Some(vec![
        offset_fetch_request::OffsetFetchRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partition_indexes(vec![partition]),
    ]));
    let resp = conn.send(&req, 7);
    assert_eq!(resp.error_code, NONE);
    let p = &resp.topics[0].partitions[0];
    (p.committed_offset, p.metadata.as_ref().map(|m| m.to_string()).unwrap_or_default())
}

/// One member through MEMBER_ID_REQUIRED, join and sync; returns (member id, generation).
fn join_and_sync(conn: &mut Conn, g: &str) -> (String, i32) {
    let first = join(conn, g, "", None, "consumer", 9);
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    assert!(!first.member_id.is_empty());
    let j = join(conn, g, &first.member_id, None, "consumer", 9);
    assert_eq!(j.error_code, NONE);
    assert_eq!(j.member_id, first.member_id);
    assert_eq!(j.leader, j.member_id);
    assert_eq!(j.members.len(), 1);
    let member = j.member_id.to_string();
    let sy = sync(conn, g, &member, j.generation_id, vec![(member.clone(), Bytes::from_static(b"assignment-bytes"))]);
    assert_eq!(sy.error_code, NONE);
    assert_eq!(&sy.assignment[..], b"assignment-bytes");
    (member, j.generation_id)
}

#[test]
fn find_coordinator_single_and_batched() {
    let server = start();
    let mut c = server.connect();
    let r = c.send(&FindCoordinatorRequest::default().with_key(s("g1")), 0);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.port, server.port as i32);
    let r = c.send(&FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![s("a"), s("b")]), 4);
    assert_eq!(r.coordinators.len(), 2);
    assert!(r.coordinators.iter().all(|c| c.error_code == NONE && c.node_id.0 == 1));
    // Unknown key type.
    let r = c.send(&FindCoordinatorRequest::default().with_key_type(9).with_coordinator_keys(vec![s("a")]), 4);
    assert_eq!(r.coordinators[0].error_code, ResponseError::InvalidRequest.code());
}

#[test]
fn classic_cycle_errors_and_admin() {
    let server = start();
    let mut c = server.connect();
    create_topic(&mut c, "t", 2);
    c.send(&FindCoordinatorRequest::default().with_key(s("g")), 3);
    let (member, generation) = join_and_sync(&mut c, "g");
    assert_eq!(heartbeat(&mut c, "g", &member, generation), NONE);

    // Bad input: each the proper error, none disturbing the group.
    let bad = join(&mut c, "g", "", None, "connect", 9);
    assert_eq!(bad.error_code, ResponseError::InconsistentGroupProtocol.code(), "unknown protocol type");
    assert_eq!(heartbeat(&mut c, "g", "nobody", generation), ResponseError::UnknownMemberId.code());
    assert_eq!(heartbeat(&mut c, "g", &member, generation + 5), ResponseError::IllegalGeneration.code());
    assert_eq!(
        commit(&mut c, "g", &member, generation - 1, "t", 0, 5),
        ResponseError::IllegalGeneration.code(),
        "stale generation"
    );
    assert_eq!(commit(&mut c, "g", "nobody", generation, "t", 0, 5), ResponseError::UnknownMemberId.code());
    assert_eq!(commit(&mut c, "g", &member, generation, "nope", 0, 5), ResponseError::UnknownTopicOrPartition.code());
    let short = JoinGroupRequest::default()
        .with_group_id(group("g2"))
        .with_session_timeout_ms(10)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(s("range"))]);
    assert_eq!(c.send(&short, 5).error_code, ResponseError::InvalidSessionTimeout.code());
    assert_eq!(heartbeat(&mut c, "g", &member, generation), NONE, "the group is undisturbed");

    assert_eq!(commit(&mut c, "g", &member, generation, "t", 0, 42), NONE);
    assert_eq!(fetch_offset(&mut c, "g", "t", 0), (42, "meta".into()));
    assert_eq!(fetch_offset(&mut c, "g", "t", 1).0, -1, "no commit reads -1");

    // Multi-group OffsetFetch (v8) with all topics of a group (null) and an unknown group.
    let req = OffsetFetchRequest::default().with_groups(vec![
        offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group("g")).with_topics(None),
        offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group("other")).with_topics(None),
    ]);
    let r = c.send(&req, 8);
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 42);
    assert!(r.groups[1].topics.is_empty());

    // DescribeGroups / ListGroups.
    let d = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("g"), group("missing")]), 5);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].protocol_data.as_str(), "range");
    assert_eq!(d.groups[0].members.len(), 1);
    assert_eq!(&d.groups[0].members[0].member_assignment[..], b"assignment-bytes");
    assert_eq!(d.groups[1].group_state.as_str(), "Dead");
    let d6 = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("missing")]), 6);
    assert_eq!(d6.groups[0].error_code, ResponseError::GroupIdNotFound.code());
    let l = c.send(&ListGroupsRequest::default().with_states_filter(vec![s("Stable")]), 4);
    assert_eq!(l.groups.iter().map(|g| g.group_id.0.as_str()).collect::<Vec<_>>(), vec!["g"]);

    // A live group cannot be deleted, nor its subscribed topic's offsets.
    let del = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![group("g")]), 2);
    assert_eq!(del.results[0].error_code, ResponseError::NonEmptyGroup.code());
    let od = OffsetDeleteRequest::default().with_group_id(group("g")).with_topics(vec![
        offset_delete_request::OffsetDeleteRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(vec![
            offset_delete_request::OffsetDeleteRequestPartition::default().with_partition_index(0),
        ]),
    ]);
    assert_eq!(c.send(&od, 0).topics[0].partitions[0].error_code, ResponseError::GroupSubscribedToTopic.code());

    // Leave: the group becomes empty; then the offsets can be deleted and the group too.
    let leave = LeaveGroupRequest::default()
        .with_group_id(group("g"))
        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(s(&member))]);
    let lr = c.send(&leave, 5);
    assert_eq!(lr.members[0].error_code, NONE);
    let d = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("g")]), 5);
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    assert_eq!(c.send(&od, 0).topics[0].partitions[0].error_code, NONE);
    assert_eq!(fetch_offset(&mut c, "g", "t", 0).0, -1);
    let del = c.send(&DeleteGroupsRequest::default().with_groups_names(vec![group("g"), group("missing")]), 2);
    assert_eq!(del.results[0].error_code, NONE);
    assert_eq!(del.results[1].error_code, ResponseError::GroupIdNotFound.code());
}

#[test]
fn second_member_triggers_rebalance_and_first_sees_it() {
    let server = start();
    let mut c1 = server.connect();
    let mut c2 = server.connect();
    create_topic(&mut c1, "t", 2);
    let (m1, gen1) = join_and_sync(&mut c1, "g");
    // The second member's JoinGroup parks until m1 rejoins; m1 learns of the rebalance from its heartbeat.
    let id2 = join(&mut c2, "g", "", None, "consumer", 9).member_id.to_string();
    let t = std::thread::spawn(move || {
        let j = join(&mut c2, "g", &id2, None, "consumer", 9);
        (j, c2)
    });
    let mut rebalancing = false;
    for _ in 0..50 {
        if heartbeat(&mut c1, "g", &m1, gen1) == ResponseError::RebalanceInProgress.code() {
            rebalancing = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(rebalancing);
    let j1 = join(&mut c1, "g", &m1, None, "consumer", 9);
    let (j2, mut c2) = t.join().unwrap();
    assert_eq!(j1.error_code, NONE);
    assert_eq!(j2.error_code, NONE);
    assert_eq!(j1.generation_id, gen1 + 1);
    assert_eq!(j2.generation_id, gen1 + 1);
    assert_eq!(j1.leader.as_str(), m1, "the first member stays leader");
    assert_eq!(j1.members.len(), 2);
    assert!(j2.members.is_empty());
    // The follower's SyncGroup waits for the leader's.
    let m2 = j2.member_id.to_string();
    let gen2 = j2.generation_id;
    let t = std::thread::spawn(move || sync(&mut c2, "g", &m2, gen2, vec![]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s1 = sync(
        &mut c1,
        "g",
        &m1,
        gen2,
        vec![(m1.clone(), Bytes::from_static(b"a1")), (j2.member_id.to_string(), Bytes::from_static(b"a2"))],
    );
    let s2 = t.join().unwrap();
    assert_eq!(&s1.assignment[..], b"a1");
    assert_eq!(&s2.assignment[..], b"a2");
}

#[test]
fn static_member_restart_keeps_generation_and_fences_old_id() {
    let server = start();
    let mut c = server.connect();
    create_topic(&mut c, "t", 1);
    // Static members join without MEMBER_ID_REQUIRED.
    let j = join(&mut c, "g", "", Some("instance-1"), "consumer", 9);
    assert_eq!(j.error_code, NONE);
    let old = j.member_id.to_string();
    let s1 = sync(&mut c, "g", &old, j.generation_id, vec![(old.clone(), Bytes::from_static(b"a"))]);
    assert_eq!(s1.error_code, NONE);
    // Restart: same instance, unknown member id → new member id, same generation, no rebalance.
    let r = join(&mut c, "g", "", Some("instance-1"), "consumer", 9);
    assert_eq!(r.error_code, NONE);
    assert_ne!(r.member_id.as_str(), old);
    assert_eq!(r.generation_id, j.generation_id);
    assert!(r.skip_assignment, "the static leader is told to skip the assignment (KIP-814)");
    let d = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("g")]), 5);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    // The old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(group("g"))
        .with_member_id(s(&old))
        .with_group_instance_id(Some(s("instance-1")))
        .with_generation_id(j.generation_id);
    assert_eq!(c.send(&hb, 4).error_code, ResponseError::FencedInstanceId.code());
    let s2 = sync(&mut c, "g", &r.member_id, r.generation_id, vec![]);
    assert_eq!(&s2.assignment[..], b"a", "the assignment is kept");
}

#[test]
fn group_and_offsets_survive_kill9() {
    let mut server = start();
    let (member, generation);
    {
        let mut c = server.connect();
        create_topic(&mut c, "t", 1);
        (member, generation) = join_and_sync(&mut c, "g");
        assert_eq!(commit(&mut c, "g", &member, generation, "t", 0, 7), NONE);
        // A standalone (admin-style) commit to another group.
        assert_eq!(commit(&mut c, "solo", "", -1, "t", 0, 3), NONE);
    }
    server.restart_after_kill9();
    let mut c = server.connect();
    assert_eq!(fetch_offset(&mut c, "g", "t", 0).0, 7);
    assert_eq!(fetch_offset(&mut c, "solo", "t", 0).0, 3);
    let d = c.send(&DescribeGroupsRequest::default().with_groups(vec![group("g")]), 5);
    assert_eq!(d.groups[0].group_state.as_str(), "Stable");
    assert_eq!(d.groups[0].members[0].member_id.as_str(), member);
    // The reloaded member is still a member of the same generation.
    assert_eq!(heartbeat(&mut c, "g", &member, generation), NONE);
}

#[test]
fn consumer_protocol_heartbeat_assigns_and_fences() {
    let server = start();
    let mut c = server.connect();
    create_topic(&mut c, "t", 4);
    let hb = |member: &str, epoch: i32, owned: Option<Vec<consumer_group_heartbeat_request::TopicPartitions>>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group("cg"))
            .with_member_id(s(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
            .with_subscribed_topic_names(if epoch == 0 { Some(vec![TopicName(s("t"))]) } else { None })
            .with_topic_partitions(owned)
    };
    let a = c.send(&hb("member-a", 0, Some(vec![])), 1);
    assert_eq!(a.error_code, NONE, "{:?}", a.error_message);
    assert_eq!(a.member_epoch, 1);
    let assigned: usize = a.assignment.as_ref().unwrap().topic_partitions.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(assigned, 4);
    let topic_id = a.assignment.as_ref().unwrap().topic_partitions[0].topic_id;
    // b joins: it waits for a to release half.
    let b = c.send(&hb("member-b", 0, Some(vec![])), 1);
    assert_eq!(b.member_epoch, 2);
    let b_count: usize = b.assignment.as_ref().unwrap().topic_partitions.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(b_count, 0, "nothing is free yet");
    // a heartbeats: asked to revoke two, keeping epoch 1.
    let a2 = c.send(&hb("member-a", 1, None), 1);
    assert_eq!(a2.member_epoch, 1);
    let kept: Vec<i32> = a2.assignment.as_ref().unwrap().topic_partitions[0].partitions.clone();
    assert_eq!(kept.len(), 2);
    // a confirms it owns only the kept partitions: epoch 2.
    let owned = vec![consumer_group_heartbeat_request::TopicPartitions::default()
        .with_topic_id(topic_id)
        .with_partitions(kept)];
    let a3 = c.send(&hb("member-a", 1, Some(owned)), 1);
    assert_eq!(a3.member_epoch, 2);
    let b2 = c.send(&hb("member-b", 2, None), 1);
    let b_count: usize = b2.assignment.as_ref().unwrap().topic_partitions.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(b_count, 2);
    // Fencing and unknown members.
    assert_eq!(c.send(&hb("member-b", 9, None), 1).error_code, ResponseError::FencedMemberEpoch.code());
    assert_eq!(c.send(&hb("ghost", 3, None), 1).error_code, ResponseError::UnknownMemberId.code());
    let d = c.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec![group("cg")]), 0);
    assert_eq!(d.groups[0].error_code, NONE);
    assert_eq!(d.groups[0].members.len(), 2);
    assert_eq!(d.groups[0].group_epoch, 2);
    // Both protocols coexist: a classic member may join the consumer group (Kafka 4's mixed groups) when it speaks
    // the consumer protocol type, and a classic group works beside it.
    assert_eq!(join(&mut c, "cg", "", None, "connect", 9).error_code, ResponseError::InconsistentGroupProtocol.code());
    assert_eq!(join(&mut c, "cg", "", None, "consumer", 9).error_code, ResponseError::MemberIdRequired.code());
    assert_eq!(join(&mut c, "classic", "", None, "consumer", 9).error_code, ResponseError::MemberIdRequired.code());
    let l = c.send(&ListGroupsRequest::default(), 5);
    let cg = l.groups.iter().find(|g| g.group_id.0.as_str() == "cg").unwrap();
    assert_eq!(cg.group_type.as_str(), "consumer");
}

#[test]
fn offsets_with_a_retention_of_their_own_expire() {
    let server = Server::start(&[
        "group.initial.rebalance.delay.ms=0",
        "offsets.topic.num.partitions=5",
        "offsets.retention.check.interval.ms=100",
    ]);
    let mut c = server.connect();
    create_topic(&mut c, "t", 1);
    // OffsetCommit v2-4 may carry a retention time; the standalone group "short" disappears with its offsets.
    let req = OffsetCommitRequest::default()
        .with_group_id(group("short"))
        .with_generation_id_or_member_epoch(-1)
        .with_retention_time_ms(300)
        .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(9)])]);
    assert_eq!(c.send(&req, 2).topics[0].partitions[0].error_code, NONE);
    assert_eq!(commit(&mut c, "kept", "", -1, "t", 0, 4), NONE);
    assert_eq!(fetch_offset(&mut c, "short", "t", 0).0, 9);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(fetch_offset(&mut c, "short", "t", 0).0, -1);
    assert_eq!(fetch_offset(&mut c, "kept", "t", 0).0, 4);
    let l = c.send(&ListGroupsRequest::default(), 3);
    let names: Vec<&str> = l.groups.iter().map(|g| g.group_id.0.as_str()).collect();
    assert_eq!(names, vec!["kept"]);
}

/// Benchmark (run with `--ignored --nocapture`): 100 groups, each with its own connection committing one offset at
/// a time (each commit answered once durable), for a few seconds; prints commits/s.
#[test]
#[ignore]
fn bench_commit_throughput_100_groups() {
    let server = start();
    let mut c = server.connect();
    create_topic(&mut c, "t", 1);
    let secs = 5;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let mut conn = server.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let g = format!("bench-{i}");
                conn.send(&FindCoordinatorRequest::default().with_key(s(&g)), 3);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(commit(&mut conn, &g, "", -1, "t", 0, n as i64), NONE);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(secs));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!("commits/s with 100 groups: {:.0} ({total} commits in {secs} s)", total as f64 / secs as f64);
}
