"""Requests pipelined on one connection reach the coordinator in arrival order.

Kafka processes a connection's requests one after another, so a client that
pipelines OffsetCommits (commitAsync) finds the last one committed. Strom
answers coordinator requests asynchronously; this checks it still hands them
to the group coordinator in the order they arrived.
"""

import struct

import kafkawire as w
from conftest import unique
from helpers import create_topic

API_OFFSET_COMMIT = 8
COMMITS = 400
ROUNDS = 5


def offset_commit_v2(correlation_id: int, group: str, topic: str, partition: int, offset: int) -> bytes:
    """A simple (generation -1, no member) OffsetCommit v2 frame."""
    body = w.string(group) + struct.pack(">i", -1) + w.string("") + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + w.string(topic) + struct.pack(">i", 1)
    body += struct.pack(">iq", partition, offset) + w.string("")
    return w.request_frame(API_OFFSET_COMMIT, 2, correlation_id, body)


def parse_offset_commit_v2(frame: bytes):
    r = w.Reader(frame)
    correlation_id = r.int32()
    errors = []
    for _ in range(r.int32()):
        r.string()
        for _ in range(r.int32()):
            r.int32()
            errors.append(r.int16())
    return correlation_id, errors


def test_pipelined_offset_commits_apply_in_order(broker):
    topic = unique("pipelined")
    create_topic(broker.bootstrap, topic, partitions=1)
    group = unique("pipelined-group")
    with w.connect(broker.port, timeout=60) as s:
        assert w.find_coordinator(s, 1, group) == 0
        for round_ in range(ROUNDS):
            base = round_ * COMMITS
            # All commits in one write, without reading any answer in between: as commitAsync does.
            s.sendall(b"".join(offset_commit_v2(1000 + i, group, topic, 0, base + i + 1) for i in range(COMMITS)))
            for i in range(COMMITS):
                correlation_id, errors = parse_offset_commit_v2(w.read_frame(s))
                assert correlation_id == 1000 + i
                assert errors == [0]
            err, offsets = w.offset_fetch_v7(s, 2, group, {topic: [0]})
            assert err == 0
            assert offsets[(topic, 0)] == (base + COMMITS, 0), f"round {round_}: an older commit won"
