"""Open files and partitions' storage: inactive log segments hold a bounded number of open files
(`log.segment.open.files.max`), so a broker whose data holds more segment files than its open-files limit allows
still starts, after a clean shutdown and after a crash, and serves every record, reading across every segment; and a
topic creation that cannot get its partitions' storage leaves nothing behind.

The broker is first run with the machine's limit to write many segments (segment.ms=1 rolls a segment on nearly
every produce), then restarted with a soft and hard RLIMIT_NOFILE far below three files per segment, so it cannot
raise it."""

import os
import sys

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from conftest import unique
from helpers import admin, consume_partitions, consumer, create_topic, producer, produce_sync

PARTITIONS = 4
SEGMENTS_PER_PARTITION = 70
NOFILE = 200
OPEN_FILES_MAX = 24


def with_nofile_limit(broker, limit):
    """Runs the broker's command with RLIMIT_NOFILE soft = hard = `limit` (exec keeps the pid)."""
    command = broker.command
    setter = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]),) * 2); "
              "os.execv(sys.argv[2], sys.argv[2:])")
    broker.command = lambda: [sys.executable, "-c", setter, str(limit)] + command()


def segment_count(broker, topic, p):
    return sum(1 for f in os.listdir(broker.data_dir / f"{topic}-{p}") if f.endswith(".log"))


def test_more_segment_files_than_the_fd_limit_restart_and_read_back(make_broker):
    # One __consumer_offsets partition: each partition's active segment keeps its files open whatever the bound.
    b = make_broker({"log.segment.open.files.max": str(OPEN_FILES_MAX), "offsets.topic.num.partitions": "1"})
    topic = unique("segs")
    create_topic(b.bootstrap, topic, partitions=PARTITIONS, config={"segment.ms": "1"})
    p = producer(b.bootstrap, acks="all", linger_ms=0)
    expected = {}
    for part in range(PARTITIONS):
        n = 0
        # One record per request, each after the last was acknowledged: a segment rolls once a millisecond passed.
        while segment_count(b, topic, part) < SEGMENTS_PER_PARTITION:
            produce_sync(p, topic, [{"partition": part, "key": b"k%d" % n, "value": b"%d-%d" % (part, n)}])
            n += 1
        expected[part] = n
    total_files = sum(3 * segment_count(b, topic, part) for part in range(PARTITIONS))
    assert total_files > 2 * NOFILE

    def read_back():
        msgs = consume_partitions(b.bootstrap, topic, range(PARTITIONS), sum(expected.values()), timeout=60)
        got = {}
        for m in msgs:
            got.setdefault(m.partition(), []).append(m.value())
        for part, n in expected.items():
            assert got.get(part) == [b"%d-%d" % (part, i) for i in range(n)], f"partition {part}"
        # ListOffsets by timestamp searches the segments' time indexes.
        c = consumer(b.bootstrap)
        try:
            found = c.offsets_for_times([TopicPartition(topic, part, 0) for part in range(PARTITIONS)], timeout=15)
            assert [tp.offset for tp in found] == [0] * PARTITIONS
        finally:
            c.close()

    with_nofile_limit(b, NOFILE)
    b.restart()
    read_back()
    fds = len(os.listdir(f"/proc/{b.proc.pid}/fd"))
    assert fds < NOFILE
    # A crash: the restart recovers with the same bound.
    b.restart(kill=True)
    read_back()
    assert "Too many open files" not in b.log_path.read_text(errors="replace")


def test_a_creation_that_runs_out_of_descriptors_leaves_no_topic(make_broker):
    """CreateTopics is all or nothing: a topic whose partitions' logs cannot all be created (here the broker runs
    out of descriptors, three per partition's active segment) is refused with KAFKA_STORAGE_ERROR, and neither the
    topic nor any of its directories exists, also after a restart. A creation that fits still works."""
    b = make_broker({"offsets.topic.num.partitions": "1"}, start=False)
    with_nofile_limit(b, NOFILE)
    b.start()
    big, small = unique("big"), unique("small")
    a = admin(b.bootstrap)
    fut = a.create_topics([NewTopic(big, num_partitions=NOFILE)], request_timeout=60)[big]
    with pytest.raises(KafkaException) as e:
        fut.result(60)
    assert e.value.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR, e.value
    assert f"of topic {big}" in e.value.args[0].str()

    def absent():
        assert big not in a.list_topics(timeout=10).topics
        assert [d for d in os.listdir(b.data_dir) if d.startswith(big)] == []

    absent()
    b.restart()
    a = admin(b.bootstrap)
    absent()
    create_topic(b.bootstrap, small, partitions=3)
    produce_sync(producer(b.bootstrap), small, [{"value": b"v%d" % i, "partition": i % 3} for i in range(9)])
    assert len(consume_partitions(b.bootstrap, small, range(3), 9)) == 9
