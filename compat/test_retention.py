"""Retention (cleanup.policy=delete): whole segments past retention.ms or
beyond retention.bytes are deleted, the log start offset (low watermark)
moves forward to a segment boundary, and consumers see the new start."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from conftest import unique
from helpers import consume_partitions, consumer, create_topic, producer, produce_sync, watermarks

SEGMENT = 1048576  # Kafka 4's minimum segment.bytes
RECORD = 2000
COUNT = 1600       # ~3.2 MB: three or four segments


def fill(b, topic, ts):
    p = producer(b.bootstrap, acks="all", compression_type="none", linger_ms=5)
    produce_sync(p, topic, [{"value": f"{i:08d}".encode() + b"r" * RECORD, "partition": 0,
                             "timestamp": ts} for i in range(COUNT)], timeout=60)


def wait_low_watermark_above_zero(c, tp, timeout=30, settle=1.2):
    """The watermarks once retention has moved the log start and then left it alone for `settle` seconds (several
    retention checks): a check that ran while the records were still arriving may be followed by another."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        lo, hi = watermarks(c, tp)
        if (lo, hi) != last:
            last, since = (lo, hi), time.monotonic()
        if (lo > 0 and time.monotonic() - since >= settle) or time.monotonic() > deadline:
            return lo, hi
        time.sleep(0.25)


def check_after_retention(b, topic, lo, hi):
    assert 0 < lo < hi == COUNT, (lo, hi)
    # Reading "from the beginning" starts at the new log start offset.
    msgs = consume_partitions(b.bootstrap, topic, [0], hi - lo, timeout=60)
    assert msgs[0].offset() == lo
    assert [m.offset() for m in msgs] == list(range(lo, hi))
    assert msgs[0].value().startswith(f"{lo:08d}".encode())
    # An offset below the log start is out of range: earliest resets to it.
    msgs = consume_partitions(b.bootstrap, topic, [0], 1, start=0, auto_offset_reset="earliest")
    assert msgs[0].offset() == lo


def test_time_based_retention(make_broker):
    b = make_broker(log_retention_check_interval_ms="300")
    topic = unique("ret-time")
    create_topic(b.bootstrap, topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT), "retention.ms": "60000"})
    now = int(time.time() * 1000)
    old = now - 3_600_000  # an hour old: past retention.ms
    n_old = 1100           # ~2.2 MB of expired records, then fresh ones
    p = producer(b.bootstrap, acks="all", compression_type="none", linger_ms=5)
    produce_sync(p, topic, [{"value": f"{i:08d}".encode() + b"r" * RECORD, "partition": 0,
                             "timestamp": old if i < n_old else now} for i in range(COUNT)],
                 timeout=60)
    tp = TopicPartition(topic, 0)
    c = consumer(b.bootstrap)
    try:
        wait_low_watermark_above_zero(c, tp)
        time.sleep(1.0)  # let a few more retention checks run
        lo, hi = watermarks(c, tp)
        # Only segments made entirely of expired records go.
        assert 0 < lo <= n_old, (lo, hi)
        # offsets_for_times for a time before everything gives the log start.
        (res,) = c.offsets_for_times([TopicPartition(topic, 0, old - 1000)], timeout=10)
        assert res.offset == lo
    finally:
        c.close()
    check_after_retention(b, topic, lo, hi)


def test_time_based_retention_expires_everything(make_broker):
    """When every record is past retention.ms, Kafka deletes the active
    segment too (rolling a new, empty one first): the log becomes empty, and
    the next record gets the next offset."""
    b = make_broker(log_retention_check_interval_ms="300")
    topic = unique("ret-all")
    create_topic(b.bootstrap, topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT), "retention.ms": "60000"})
    n = 800
    old = int(time.time() * 1000) - 3_600_000
    produce_sync(producer(b.bootstrap, acks="all", compression_type="none"), topic,
                 [{"value": b"o" * RECORD, "partition": 0, "timestamp": old} for _ in range(n)],
                 timeout=60)
    tp = TopicPartition(topic, 0)
    c = consumer(b.bootstrap)
    try:
        deadline = time.monotonic() + 30
        while watermarks(c, tp) != (n, n) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert watermarks(c, tp) == (n, n)
        (res,) = c.offsets_for_times([TopicPartition(topic, 0, old - 1000)], timeout=10)
        assert res.offset == -1  # no record at or after that time any more
    finally:
        c.close()
    delivered = produce_sync(producer(b.bootstrap, acks="all"), topic,
                             [{"value": b"fresh", "partition": 0}])
    assert delivered[0].offset() == n
    msgs = consume_partitions(b.bootstrap, topic, [0], 1)
    assert [(m.offset(), m.value()) for m in msgs] == [(n, b"fresh")]


def test_size_based_retention(make_broker):
    b = make_broker(log_retention_check_interval_ms="300")
    topic = unique("ret-size")
    create_topic(b.bootstrap, topic, partitions=1,
                 config={"segment.bytes": str(SEGMENT), "retention.bytes": str(SEGMENT)})
    fill(b, topic, int(time.time() * 1000))
    c = consumer(b.bootstrap)
    try:
        lo, hi = wait_low_watermark_above_zero(c, TopicPartition(topic, 0))
    finally:
        c.close()
    check_after_retention(b, topic, lo, hi)
    # What is left is no more than retention.bytes plus the active segment.
    assert (hi - lo) * RECORD <= 2 * SEGMENT + RECORD * 10


def test_no_retention_without_expiry(make_broker):
    b = make_broker(log_retention_check_interval_ms="300")
    topic = unique("ret-keep")
    create_topic(b.bootstrap, topic, partitions=1, config={"segment.bytes": str(SEGMENT)})
    fill(b, topic, int(time.time() * 1000))
    time.sleep(1.5)  # several retention checks
    c = consumer(b.bootstrap)
    try:
        assert watermarks(c, TopicPartition(topic, 0)) == (0, COUNT)
    finally:
        c.close()
