"""Differential scenarios for consumer groups: the classic protocol's answers and errors on the wire (JoinGroup's
MEMBER_ID_REQUIRED step, unknown protocol type, stale generation, unknown member, DescribeGroups of an unknown
group, OffsetFetch without commits), and what group consumers observe (confluent-kafka fair share and commits,
cooperative-sticky, KIP-848 group.protocol=consumer, kafka-python resuming from committed offsets, admin
list/describe/delete).

Member ids, hosts and timings differ by nature and are left out of the observations.
"""

from __future__ import annotations

import os
import struct
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka.protocol.admin import DescribeGroupsRequest
from kafka.protocol.consumer import (HeartbeatRequest, JoinGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
                                     SyncGroupRequest)
from kafka.protocol.metadata import FindCoordinatorRequest

import wire
from conftest import unique
from obs import both

TIMEOUT = 60


def make_topic(t, name, partitions):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions)])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)


def produce(t, topic, n, partitions):
    for p in range(partitions):
        recs = [(None, f"v{i}".encode(), ()) for i in range(n) if i % partitions == p]
        r = wire.produce(t, topic, {p: wire.batch(recs)})
        assert r.responses[0].partition_responses[0].error_code == 0


def subscription(topic: str) -> bytes:
    """ConsumerProtocolSubscription v0 for one topic."""
    t = topic.encode()
    return struct.pack(">hih", 0, 1, len(t)) + t + struct.pack(">i", -1)


def coordinator_ready(t, group):
    """FindCoordinator until the coordinator answers (Kafka creates __consumer_offsets first), then OffsetFetch until
    the group's coordinator has loaded its partition (Kafka answers COORDINATOR_LOAD_IN_PROGRESS meanwhile)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        r = wire.request(t, FindCoordinatorRequest(key=group, key_type=0), 3)
        if r.error_code == 0:
            break
        assert time.monotonic() < deadline, r
        time.sleep(0.2)
    while True:
        f = wire.request(t, OffsetFetchRequest(group_id=group, topics=None, require_stable=False), 7)
        if f.error_code not in (14, 15, 16):  # load in progress, not available, not coordinator
            return
        assert time.monotonic() < deadline, f
        time.sleep(0.2)


def join(conn, group, member_id, topic, protocol_type="consumer", version=7):
    P = JoinGroupRequest.JoinGroupRequestProtocol
    return conn.send(JoinGroupRequest(group_id=group, session_timeout_ms=10000, rebalance_timeout_ms=10000,
                                      member_id=member_id, group_instance_id=None, protocol_type=protocol_type,
                                      protocols=[P(name="range", metadata=subscription(topic))], reason=None),
                     version)


def test_classic_protocol_answers_and_errors(targets, differ):
    group, topic = unique("dg"), unique("dgt")

    def run(t):
        make_topic(t, topic, 2)
        coordinator_ready(t, group)
        out = {}
        with wire.Conn(t.port) as c:
            first = join(c, group, "", topic)
            out["first_join"] = {"error": wire.err(first.error_code), "generation": first.generation_id,
                                 "has_member_id": bool(first.member_id)}
            j = join(c, group, first.member_id, topic)
            me = j.member_id
            out["join"] = {"error": wire.err(j.error_code), "generation": j.generation_id,
                           "protocol": j.protocol_name, "leader_is_me": j.leader == me, "members": len(j.members)}
            A = SyncGroupRequest.SyncGroupRequestAssignment
            s = c.send(SyncGroupRequest(group_id=group, generation_id=j.generation_id, member_id=me,
                                        group_instance_id=None, protocol_type="consumer", protocol_name="range",
                                        assignments=[A(member_id=me, assignment=b"\x00\x00")]), 5)
            out["sync"] = {"error": wire.err(s.error_code), "assignment": s.assignment}
            bad = join(c, group, "", topic, protocol_type="connect")
            out["unknown_protocol_type"] = wire.err(bad.error_code)

            def hb(member, gen):
                return wire.err(c.send(HeartbeatRequest(group_id=group, generation_id=gen, member_id=member,
                                                        group_instance_id=None), 4).error_code)
            out["heartbeat"] = hb(me, j.generation_id)
            out["heartbeat_unknown_member"] = hb("nobody", j.generation_id)
            out["heartbeat_wrong_generation"] = hb(me, j.generation_id + 1)

            def commit(gen, member):
                T = OffsetCommitRequest.OffsetCommitRequestTopic
                P = T.OffsetCommitRequestPartition
                r = c.send(OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=gen, member_id=member,
                                               group_instance_id=None, topics=[T(name=topic, partitions=[
                                                   P(partition_index=0, committed_offset=5, committed_leader_epoch=-1,
                                                     committed_metadata="m")])]), 8)
                return wire.err(r.topics[0].partitions[0].error_code)
            out["commit_stale_generation"] = commit(j.generation_id - 1, me)
            out["commit"] = commit(j.generation_id, me)
            F = OffsetFetchRequest.OffsetFetchRequestTopic
            f = c.send(OffsetFetchRequest(group_id=group, topics=[F(name=topic, partition_indexes=[0, 1])],
                                          require_stable=False), 7)
            out["fetch"] = [(p.partition_index, p.committed_offset, p.metadata, wire.err(p.error_code))
                            for tp in f.topics for p in tp.partitions]
            d = c.send(DescribeGroupsRequest(groups=[group, unique("missing")], include_authorized_operations=False), 5)
            out["describe"] = [(g.group_state, g.protocol_type, g.protocol_data, len(g.members), wire.err(g.error_code))
                               for g in d.groups]
        return out

    differ.check("groups-classic-wire", *both(targets, run))


def test_confluent_fair_share_and_commits(targets, differ):
    topic, group = unique("dgt"), unique("dg")

    def run(t):
        make_topic(t, topic, 6)
        produce(t, topic, 60, 6)
        consumers = [Consumer({"bootstrap.servers": t.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}) for _ in range(3)]
        for c in consumers:
            c.subscribe([topic])
        seen = []
        deadline = time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < deadline:
                for c in consumers:
                    m = c.poll(0.1)
                    if m is not None and not m.error():
                        seen.append(m.value().decode())
                        c.commit(message=m, asynchronous=False)
                if len(seen) >= 60 and all(len(c.assignment()) == 2 for c in consumers):
                    break
            sizes = sorted(len(c.assignment()) for c in consumers)
            committed = consumers[0].committed([TopicPartition(topic, p) for p in range(6)], timeout=30)
            return {"sizes": sizes, "records": sorted(set(seen)) == sorted(f"v{i}" for i in range(60)),
                    "committed": [tp.offset for tp in committed]}
        finally:
            for c in consumers:
                c.close()

    differ.check("groups-confluent-fair-share", *both(targets, run))


def test_cooperative_sticky(targets, differ):
    topic, group = unique("dgt"), unique("dg")

    def run(t):
        make_topic(t, topic, 6)
        revoked = []
        conf = {"bootstrap.servers": t.bootstrap, "group.id": group, "partition.assignment.strategy": "cooperative-sticky"}
        c1 = Consumer(conf)
        c1.subscribe([topic], on_revoke=lambda _, ps: revoked.extend(p.partition for p in ps))
        deadline = time.monotonic() + TIMEOUT
        while len(c1.assignment()) < 6 and time.monotonic() < deadline:
            c1.poll(0.1)
        c2 = Consumer(conf)
        c2.subscribe([topic])
        try:
            while time.monotonic() < deadline and not (len(c1.assignment()) == 3 and len(c2.assignment()) == 3):
                c1.poll(0.1)
                c2.poll(0.1)
            return {"sizes": [len(c1.assignment()), len(c2.assignment())], "revoked": len(revoked),
                    "revoked_went_to_c2": sorted(revoked) == sorted(p.partition for p in c2.assignment())}
        finally:
            c2.close()
            c1.close()

    differ.check("groups-cooperative-sticky", *both(targets, run))


def test_consumer_protocol_kip848(targets, differ):
    topic, group = unique("dgt"), unique("dg")

    def run(t):
        make_topic(t, topic, 4)
        produce(t, topic, 40, 4)
        conf = {"bootstrap.servers": t.bootstrap, "group.id": group, "group.protocol": "consumer",
                "auto.offset.reset": "earliest"}
        c1, c2 = Consumer(conf), Consumer(conf)
        c1.subscribe([topic])
        c2.subscribe([topic])
        seen = []
        deadline = time.monotonic() + TIMEOUT
        admin = AdminClient({"bootstrap.servers": t.bootstrap})
        try:
            while time.monotonic() < deadline and not (len(seen) >= 40 and len(c1.assignment()) == 2
                                                       and len(c2.assignment()) == 2):
                for c in (c1, c2):
                    m = c.poll(0.1)
                    if m is not None and not m.error():
                        seen.append(m.value().decode())
            d = admin.describe_consumer_groups([group])[group].result(30)
            return {"sizes": sorted([len(c1.assignment()), len(c2.assignment())]), "records": len(set(seen)),
                    "state": str(d.state), "members": len(d.members), "type": str(d.type)}
        finally:
            c1.close()
            c2.close()

    differ.check("groups-kip848", *both(targets, run))


def test_kafka_decodes_stroms_kip848_records(strom):
    """Strom writes a KIP-848 group's state in Kafka's coordinator record schemas: Kafka's own DumpLogSegments
    (--offsets-decoder, kafka-tools 4.3.1) decodes every record of Strom's __consumer_offsets segments."""
    import glob
    import subprocess
    from pathlib import Path

    topic, group = unique("dgt"), unique("dg")
    make_topic(strom, topic, 2)
    produce(strom, topic, 10, 2)
    c = Consumer({"bootstrap.servers": strom.bootstrap, "group.id": group, "group.protocol": "consumer",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(c.assignment()) < 2:
            assert time.monotonic() < deadline, "no assignment"
            c.poll(0.1)
    finally:
        c.close()
    libs = Path(__file__).resolve().parents[2] / ".cache" / "kafka-4.3.1" / "libs"
    segments = sorted(glob.glob(str(strom.data_dir / "**" / "__consumer_offsets-*" / "*.log"), recursive=True))
    assert segments, f"no __consumer_offsets segments under {strom.data_dir}"
    r = subprocess.run(["java", "-Xmx256m", "-cp", f"{libs}/*", "org.apache.kafka.tools.DumpLogSegments",
                        "--offsets-decoder", "--files", ",".join(segments)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "JAVA_TOOL_OPTIONS": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    records = [line for line in r.stdout.splitlines() if " key: " in line]
    mine = [line for line in records if f'"groupId":"{group}"' in line]
    types = {line.split('"type":"', 1)[1].split('"', 1)[0] for line in mine}
    assert {"3", "5", "6", "7", "8"} <= types, (types, mine[:5])
    bad = [line for line in records if '"type":"' not in line.split(" key: ", 1)[1]
           or not (" payload: {" in line or line.endswith("payload: <DELETE>"))]
    assert not bad, bad[:5]


def test_kafka_python_resumes_and_admin(targets, differ):
    topic, group = unique("dgt"), unique("dg")

    def consume(t, want):
        c = KafkaConsumer(topic, bootstrap_servers=t.bootstrap, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False)
        got = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < want and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                got.extend(r.value.decode() for r in recs)
            c.commit()
        for recs in c.poll(timeout_ms=1000).values():
            got.extend(r.value.decode() for r in recs)
        c.commit()
        c.close()
        return sorted(got)

    def run(t):
        make_topic(t, topic, 2)
        produce(t, topic, 20, 2)
        first = consume(t, 20)
        produce(t, topic, 6, 2)
        second = consume(t, 6)
        admin = AdminClient({"bootstrap.servers": t.bootstrap})
        listed = {g.group_id: str(g.state) for g in admin.list_consumer_groups().result(30).valid}
        described = admin.describe_consumer_groups([group])[group].result(30)
        deleted = admin.delete_consumer_groups([group])[group]
        try:
            deleted.result(30)
            delete = "NONE"
        except Exception as e:  # noqa: BLE001
            delete = e.args[0].name() if e.args else repr(e)
        try:
            admin.delete_consumer_groups([group])[group].result(30)
            again = "NONE"
        except Exception as e:  # noqa: BLE001
            again = e.args[0].name() if e.args else repr(e)
        return {"first": len(first), "second": second, "listed_state": listed.get(group),
                "described_state": str(described.state), "delete": delete, "delete_again": again}

    differ.check("groups-kafka-python-resume-admin", *both(targets, run))


def test_mixed_group_classic_member_joins_consumer_group(targets, differ):
    """Kafka 4 mixed groups: a classic member (kafka-python) joins a group that uses the consumer protocol
    (confluent-kafka group.protocol=consumer); both are assigned by the server, consume with commits, and the
    classic member's partitions return when it leaves."""
    topic, group = unique("dgt"), unique("dg")

    def run(t):
        make_topic(t, topic, 4)
        modern = Consumer({"bootstrap.servers": t.bootstrap, "group.id": group, "group.protocol": "consumer",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        modern.subscribe([topic])
        got: list[str] = []
        classic_got: list[str] = []

        def step():
            m = modern.poll(0.05)
            if m is not None and not m.error():
                got.append(m.value().decode())
                modern.commit(message=m, asynchronous=False)

        def until(cond):
            deadline = time.monotonic() + TIMEOUT
            while not cond() and time.monotonic() < deadline:
                step()
            return cond()

        out = {"modern_alone": until(lambda: len(modern.assignment()) == 4)}
        with wire.Conn(t.port) as c:
            out["raw_join_other_protocol_type"] = wire.err(join(c, group, "", topic, protocol_type="connect").error_code)
            first = join(c, group, "", topic)
            out["raw_join_first"] = {"error": wire.err(first.error_code), "has_member_id": bool(first.member_id)}
        classic = KafkaConsumer(topic, bootstrap_servers=t.bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)
        try:
            def both_step():
                step()
                batch = classic.poll(timeout_ms=50)
                for records in batch.values():
                    classic_got.extend(r.value.decode() for r in records)
                if batch:
                    classic.commit()

            def until_both(cond):
                deadline = time.monotonic() + TIMEOUT
                while not cond() and time.monotonic() < deadline:
                    both_step()
                return cond()

            out["shared"] = until_both(lambda: len(modern.assignment()) == 2 and len(classic.assignment()) == 2)
            produce(t, topic, 40, 4)
            out["all_consumed"] = until_both(lambda: len(got) + len(classic_got) >= 40)
            out["records"] = sorted(got + classic_got, key=lambda v: int(v[1:]))
            out["both_consumed"] = bool(got) and bool(classic_got)
        finally:
            classic.close()
        out["back_to_one"] = until(lambda: len(modern.assignment()) == 4)
        committed = modern.committed([TopicPartition(topic, p) for p in range(4)], timeout=30)
        out["committed"] = [tp.offset for tp in committed]
        modern.close()
        return out

    differ.check("groups-mixed-classic-in-consumer-group", *both(targets, run))


def test_mixed_group_consumer_member_upgrades_classic_group(targets, differ):
    """Kafka 4's online upgrade (group.consumer.migration.policy=bidirectional): a consumer-protocol member
    (confluent-kafka) joins a classic group with one kafka-python member; the group becomes a consumer group and the
    two share the partitions; after the new member leaves, the classic member owns everything again."""
    topic, group = unique("dgt"), unique("dg")

    def run(t):
        make_topic(t, topic, 4)
        admin = AdminClient({"bootstrap.servers": t.bootstrap})

        def group_type():
            d = admin.describe_consumer_groups([group])[group].result(30)
            return str(d.type)

        classic = KafkaConsumer(topic, bootstrap_servers=t.bootstrap, group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)
        modern = None
        got: list[str] = []
        classic_got: list[str] = []

        def step():
            batch = classic.poll(timeout_ms=50)
            for records in batch.values():
                classic_got.extend(r.value.decode() for r in records)
            if batch:
                classic.commit()
            if modern is not None:
                m = modern.poll(0.05)
                if m is not None and not m.error():
                    got.append(m.value().decode())
                    modern.commit(message=m, asynchronous=False)

        def until(cond):
            deadline = time.monotonic() + TIMEOUT
            while not cond() and time.monotonic() < deadline:
                step()
            return cond()

        try:
            out = {"classic_alone": until(lambda: len(classic.assignment()) == 4), "type_before": group_type()}
            modern = Consumer({"bootstrap.servers": t.bootstrap, "group.id": group, "group.protocol": "consumer",
                               "auto.offset.reset": "earliest", "enable.auto.commit": False})
            modern.subscribe([topic])
            out["shared"] = until(lambda: len(modern.assignment()) == 2 and len(classic.assignment()) == 2)
            out["type_mixed"] = group_type()
            produce(t, topic, 40, 4)
            out["all_consumed"] = until(lambda: len(got) + len(classic_got) >= 40)
            out["records"] = sorted(got + classic_got, key=lambda v: int(v[1:]))
            out["both_consumed"] = bool(got) and bool(classic_got)
            modern.close()
            modern = None
            out["classic_owns_all_again"] = until(lambda: len(classic.assignment()) == 4)
            out["type_after"] = group_type()
        finally:
            if modern is not None:
                modern.close()
            classic.close()
        return out

    differ.check("groups-mixed-upgrade-classic-group", *both(targets, run))
