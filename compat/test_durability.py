"""Crash and restart durability.

An acks=all acknowledgement means the record is in the log: after SIGKILL of
the broker process (not of the machine, so the OS page cache survives, which
is exactly what Apache Kafka relies on with its default flush settings) and a
restart on the same data directory, every acknowledged record must be at its
acknowledged offset with its value. A clean SIGTERM restart keeps everything
and new records continue at the next offset.
"""

from __future__ import annotations

import time

from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, ResourceType

from conftest import unique
from helpers import (admin, consume_partitions, consumer, create_topic, producer, produce_sync,
                     wait_for_topic, watermarks)

TIMEOUT = 30
SEGMENT = 1048576  # Kafka 4's minimum segment.bytes: several segments per partition here


def read_log(bootstrap, topic, partitions):
    """{partition: {offset: Message}} for everything up to the high watermark."""
    c = consumer(bootstrap)
    try:
        highs = {p: watermarks(c, TopicPartition(topic, p)) for p in partitions}
    finally:
        c.close()
    total = sum(hi - lo for lo, hi in highs.values())
    msgs = consume_partitions(bootstrap, topic, partitions, total, timeout=60)
    log = {p: {} for p in partitions}
    for m in msgs:
        assert m.offset() not in log[m.partition()], f"offset {m.offset()} delivered twice"
        log[m.partition()][m.offset()] = m
    for p, (lo, hi) in highs.items():
        assert lo == 0, (p, lo)
        assert sorted(log[p]) == list(range(hi)), f"partition {p}: gaps below high watermark {hi}"
    return log, {p: hi for p, (_, hi) in highs.items()}


def assert_clean_exit(code):
    # A clean shutdown exits normally (0; a JVM reports 143 after running its
    # shutdown hooks). A negative code means it died from the signal unhandled.
    assert code in (0, 143), f"broker exit code {code} after SIGTERM"


def test_acked_records_survive_sigkill(make_broker, tmp_path):
    b = make_broker(log_segment_bytes=str(SEGMENT))
    topic = unique("crash")
    partitions = 3
    create_topic(b.bootstrap, topic, partitions=partitions, config={"segment.bytes": str(SEGMENT)})

    acks_file = tmp_path / "acked.txt"
    acked = []
    ackf = open(acks_file, "w")

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))
            ackf.write(f"{msg.partition()} {msg.offset()} {msg.value()[:10].decode()}\n")

    p = producer(b.bootstrap, acks="all", linger_ms=2, message_timeout_ms=20000,
                 queue_buffering_max_messages=20000)
    filler = b"." * 800
    target = 4000
    seq = 0
    deadline = time.monotonic() + 60
    while len(acked) < target:
        assert time.monotonic() < deadline, f"only {len(acked)} acks in 60s"
        try:
            p.produce(topic, value=f"{seq:010d}".encode() + filler, partition=seq % partitions,
                      on_delivery=on_delivery)
            seq += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    # Crash the broker while more records are queued and in flight: a burst
    # without polling, then SIGKILL straight away.
    for _ in range(500):
        try:
            p.produce(topic, value=f"{seq:010d}".encode() + filler, partition=seq % partitions,
                      on_delivery=on_delivery)
            seq += 1
        except BufferError:
            break
    b.kill9()
    in_flight = len(p)
    p.purge(in_queue=True, in_flight=True)
    p.poll(1)
    ackf.close()
    del p
    n_acked = len(acked)
    assert n_acked >= target
    assert in_flight > 0, "nothing was in flight at the crash; the test proves less than it should"

    b.start()
    log, highs = read_log(b.bootstrap, topic, range(partitions))
    seen = {}
    for part, off, value in acked:
        key = (part, off)
        assert key not in seen, f"offset {key} acknowledged twice"
        seen[key] = value
        assert off in log[part], f"acked record p{part}@{off} missing after crash (high {highs[part]})"
        assert log[part][off].value() == value, f"p{part}@{off} has different content after crash"
    for part in range(partitions):
        assert highs[part] >= max(o for q, o, _ in acked if q == part) + 1

    # The restarted broker appends after what it recovered.
    delivered = produce_sync(producer(b.bootstrap, acks="all"), topic,
                             [{"value": b"after-crash", "partition": q} for q in range(partitions)])
    assert [m.offset() for m in delivered] == [highs[q] for q in range(partitions)]
    # And survives a second crash with both old and new data intact.
    b.restart(kill=True)
    log2, highs2 = read_log(b.bootstrap, topic, range(partitions))
    assert highs2 == {q: highs[q] + 1 for q in range(partitions)}
    for part, off, value in acked[::97]:
        assert log2[part][off].value() == value
    for q in range(partitions):
        assert log2[q][highs[q]].value() == b"after-crash"


def test_clean_restart_keeps_everything(make_broker):
    b = make_broker(log_segment_bytes=str(SEGMENT))
    topic = unique("clean")
    create_topic(b.bootstrap, topic, partitions=2, config={"segment.bytes": str(SEGMENT)})
    base = int(time.time() * 1000) - 1_000_000
    records = [{"key": f"k{i}".encode(), "value": f"{i:06d}".encode() + b"#" * 600,
                "partition": i % 2, "timestamp": base + i, "headers": [("n", str(i).encode())]}
               for i in range(3000)]
    produce_sync(producer(b.bootstrap, acks="all", compression_type="lz4"), topic, records[:1500])
    produce_sync(producer(b.bootstrap, acks="all", compression_type="none"), topic, records[1500:])

    assert_clean_exit(b.stop())
    b.start()

    log, highs = read_log(b.bootstrap, topic, [0, 1])
    assert highs == {0: 1500, 1: 1500}
    for i, r in enumerate(records):
        m = log[r["partition"]][i // 2]
        assert (m.key(), m.value(), m.headers()) == (r["key"], r["value"], r["headers"]), i
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, r["timestamp"]), i

    # The time index is usable after restart.
    c = consumer(b.bootstrap)
    try:
        res = c.offsets_for_times([TopicPartition(topic, 0, base + 2001),
                                   TopicPartition(topic, 1, base + 1)], timeout=10)
        assert [t.offset for t in res] == [1001, 0]
    finally:
        c.close()

    # New records continue at the next offset.
    delivered = produce_sync(producer(b.bootstrap, acks="all"), topic,
                             [{"value": b"next", "partition": 0}, {"value": b"next", "partition": 1}])
    assert [m.offset() for m in delivered] == [1500, 1500]

    # Twice more, clean then crash: nothing lost, nothing duplicated.
    assert_clean_exit(b.stop())
    b.start()
    b.restart(kill=True)
    _, highs = read_log(b.bootstrap, topic, [0, 1])
    assert highs == {0: 1501, 1: 1501}


def test_topic_metadata_survives_restart(make_broker):
    b = make_broker()
    a = admin(b.bootstrap)
    kept = unique("kept")
    grown = unique("grown")
    gone = unique("gone")
    create_topic(b.bootstrap, kept, partitions=2, config={"retention.ms": "86400000",
                                                           "max.message.bytes": "200000"})
    create_topic(b.bootstrap, grown, partitions=1)
    create_topic(b.bootstrap, gone, partitions=1)
    a.create_partitions([NewPartitions(grown, 4)])[grown].result(TIMEOUT)
    wait_for_topic(b.bootstrap, grown, 4)
    a.delete_topics([gone], operation_timeout=TIMEOUT)[gone].result(TIMEOUT)
    produce_sync(producer(b.bootstrap, acks="all"), grown,
                 [{"value": f"g{q}".encode(), "partition": q} for q in range(4)])

    # Crash right after the admin operations were acknowledged.
    b.restart(kill=True)
    a = admin(b.bootstrap)
    topics = a.list_topics(timeout=10).topics
    assert kept in topics and len(topics[kept].partitions) == 2
    assert grown in topics and len(topics[grown].partitions) == 4
    assert gone not in topics
    res = ConfigResource(ResourceType.TOPIC, kept)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["retention.ms"].value == "86400000"
    assert entries["max.message.bytes"].value == "200000"
    msgs = consume_partitions(b.bootstrap, grown, range(4), 4)
    assert sorted((m.partition(), m.value()) for m in msgs) == [(q, f"g{q}".encode())
                                                                for q in range(4)]

    # Clean restart too.
    assert_clean_exit(b.stop())
    b.start()
    a = admin(b.bootstrap)
    topics = a.list_topics(timeout=10).topics
    assert kept in topics and grown in topics and gone not in topics
    assert len(topics[grown].partitions) == 4


