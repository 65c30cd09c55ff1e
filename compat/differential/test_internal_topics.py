"""Differential scenarios for the internal topic `__consumer_offsets`: what a client may and may not do to it.

Kafka 4.3 (no authorizer) refuses Produce to an internal topic (INVALID_TOPIC_EXCEPTION, unless the client id is
Kafka's "__admin_client") and DeleteRecords on it, flags it internal in Metadata (also while it does not exist), but
lets a client add partitions to it and delete it: groups keep their coordinator partition after CreatePartitions
(the partition count is fixed when the coordinator starts), and deleting the topic loses the committed offsets.
The destructive steps run on a dedicated Kafka+Strom pair.
"""

from __future__ import annotations

import time

from kafka.protocol.admin import DeleteRecordsRequest
from kafka.protocol.consumer import OffsetCommitRequest, OffsetFetchRequest

import wire
from conftest import unique
from obs import both
from test_groups import coordinator_ready, make_topic

OFFSETS = "__consumer_offsets"
TIMEOUT = 60


def metadata_of(t, name):
    m = wire.metadata(t, [name]).topics[0]
    return {"error": wire.err(m.error_code), "is_internal": m.is_internal, "partitions": len(m.partitions)}


def produce_error(t, version, acks=-1, client_id="strom-differential"):
    R = wire.ProduceRequest
    req = R(transactional_id=None, acks=acks, timeout_ms=10000, topic_data=[R.TopicProduceData(
        name=OFFSETS, topic_id=None, partition_data=[R.TopicProduceData.PartitionProduceData(
            index=0, records=wire.batch([(b"k", b"v", ())]))])])
    with wire.Conn(t.port) as c:
        c.corr += 1
        req.with_header(correlation_id=c.corr, client_id=client_id)
        c.sock.sendall(req.encode(version=version, header=True, framed=True))
        resp = req.header.get_response_class().decode(wire.kafkawire.read_frame(c.sock), version=version, header=True)
    p = resp.responses[0].partition_responses[0]
    return {"error": wire.err(p.error_code), "base_offset": p.base_offset if p.error_code else "<set>"}


def delete_records_error(t):
    D = DeleteRecordsRequest
    r = wire.request(t, D(topics=[D.DeleteRecordsTopic(name=OFFSETS, partitions=[
        D.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=0, offset=0)])], timeout_ms=10000), 2)
    p = r.topics[0].partitions[0]
    return {"error": wire.err(p.error_code), "low_watermark": p.low_watermark}


def test_clients_may_not_write_internal_topics(targets, differ):
    def run(t):
        coordinator_ready(t, unique("g"))
        return {
            "metadata": metadata_of(t, OFFSETS),
            "produce_v3": produce_error(t, 3),
            "produce_v9": produce_error(t, 9),
            "produce_v11_acks1": produce_error(t, 11, acks=1),
            "delete_records": delete_records_error(t),
            # A user topic named like an internal one is not internal.
            "user_topic_with_underscores": metadata_of(t, unique("__user")),
        }

    differ.check("internal-topic-writes-refused", *both(targets, run))


COORDINATOR_NOT_READY = (14, 15, 16)  # load in progress, not available, not coordinator: clients retry


def commit(t, group, topic, offset):
    T = OffsetCommitRequest.OffsetCommitRequestTopic
    P = T.OffsetCommitRequestPartition
    deadline = time.monotonic() + TIMEOUT
    while True:
        r = wire.request(t, OffsetCommitRequest(group_id=group, generation_id_or_member_epoch=-1, member_id="",
                                                group_instance_id=None, topics=[T(name=topic, partitions=[
                                                    P(partition_index=0, committed_offset=offset,
                                                      committed_leader_epoch=-1, committed_metadata="")])]), 8)
        code = r.topics[0].partitions[0].error_code
        if code not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
            return wire.err(code)
        time.sleep(0.2)


def fetch(t, group, topic):
    """The committed offset of partition 0, retrying while the coordinator loads (or moves)."""
    F = OffsetFetchRequest.OffsetFetchRequestTopic
    deadline = time.monotonic() + TIMEOUT
    while True:
        f = wire.request(t, OffsetFetchRequest(group_id=group, topics=[F(name=topic, partition_indexes=[0])],
                                               require_stable=False), 7)
        p = f.topics[0].partitions[0] if f.topics else None
        if f.error_code not in COORDINATOR_NOT_READY and (p is None or p.error_code not in COORDINATOR_NOT_READY):
            return p.committed_offset if f.error_code == 0 and p is not None and p.error_code == 0 else wire.err(
                f.error_code or p.error_code)
        assert time.monotonic() < deadline, f
        time.sleep(0.2)


def test_grow_and_delete_consumer_offsets(make_pair, differ):
    pair = make_pair({"offsets.topic.num.partitions": "2"})
    groups = [f"g{i}" for i in range(6)]  # fixed names: they hash to both partitions of 2 (and others of 4)
    topic = unique("it")

    def run(t):
        make_topic(t, topic, 1)
        coordinator_ready(t, groups[0])
        out = {"commits": [commit(t, g, topic, 10 + i) for i, g in enumerate(groups)]}
        r = wire.create_partitions(t, OFFSETS, 4)
        out["create_partitions"] = wire.err(r.results[0].error_code)
        deadline = time.monotonic() + TIMEOUT
        while metadata_of(t, OFFSETS)["partitions"] != 4 and time.monotonic() < deadline:
            time.sleep(0.1)  # Kafka's metadata shows new partitions a moment later
        out["metadata_after_growth"] = metadata_of(t, OFFSETS)
        # The groups stay on the partitions they hashed to when the coordinator started.
        out["fetch_after_growth"] = [fetch(t, g, topic) for g in groups]
        r = wire.delete_topics(t, [OFFSETS])
        out["delete_topics"] = wire.err(r.responses[0].error_code)
        deadline = time.monotonic() + TIMEOUT
        while wire.metadata(t, [OFFSETS]).topics[0].error_code == 0:
            assert time.monotonic() < deadline, "__consumer_offsets still listed after its deletion"
            time.sleep(0.1)
        out["metadata_after_delete"] = metadata_of(t, OFFSETS)
        # FindCoordinator creates it again (offsets.topic.num.partitions); the committed offsets are gone.
        coordinator_ready(t, groups[0])
        out["metadata_recreated"] = metadata_of(t, OFFSETS)
        out["fetch_after_delete"] = [fetch(t, g, topic) for g in groups]
        out["commit_again"] = commit(t, groups[0], topic, 99)
        out["fetch_again"] = fetch(t, groups[0], topic)
        # Kafka's escape hatch: the client id "__admin_client" may append to internal topics.
        out["produce_as_admin_client"] = produce_error(t, 9, client_id="__admin_client")
        return out

    differ.check("internal-topic-grow-and-delete", *both(pair, run))
