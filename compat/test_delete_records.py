"""DeleteRecords through confluent-kafka's AdminClient.delete_records: the
log start offset (low watermark) moves on demand, consumers behind it follow
auto.offset.reset, and the new start survives a restart."""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition

from conftest import unique
from helpers import admin, consume_partitions, consumer, create_topic, producer, produce_sync, watermarks


def delete_records(bootstrap, topic, partition, offset):
    a = admin(bootstrap)
    tp = TopicPartition(topic, partition, offset)
    return a.delete_records([tp], request_timeout=10)[tp].result(30)


def fill(bootstrap, topic, n, size=100):
    p = producer(bootstrap, acks="all", compression_type="none")
    produce_sync(p, topic, [{"value": f"{i:06d}".encode() + b"v" * size, "partition": 0} for i in range(n)])


def test_delete_records_moves_the_low_watermark(make_broker):
    b = make_broker()
    topic = unique("delrec")
    create_topic(b.bootstrap, topic, config={"segment.bytes": "1048576"})
    fill(b.bootstrap, topic, 1000)
    res = delete_records(b.bootstrap, topic, 0, 300)
    assert res.low_watermark == 300
    tp = TopicPartition(topic, 0)
    c = consumer(b.bootstrap)
    try:
        assert watermarks(c, tp) == (300, 1000)
    finally:
        c.close()
    # From the beginning now means from 300, mid-segment: no earlier record is returned.
    msgs = consume_partitions(b.bootstrap, topic, [0], 700)
    assert [m.offset() for m in msgs] == list(range(300, 1000))
    assert msgs[0].value().startswith(b"000300")

    # A consumer positioned before the start follows auto.offset.reset.
    msgs = consume_partitions(b.bootstrap, topic, [0], 1, start=5, auto_offset_reset="earliest")
    assert msgs[0].offset() == 300
    c = consumer(b.bootstrap, auto_offset_reset="latest")
    try:
        c.assign([TopicPartition(topic, 0, 5)])
        for _ in range(10):
            assert c.consume(num_messages=10, timeout=0.3) == []
        produce_sync(producer(b.bootstrap, acks="all"), topic, [{"value": b"after", "partition": 0}])
        got = []
        for _ in range(20):
            got += [m for m in c.consume(num_messages=10, timeout=0.3) if not m.error()]
            if got:
                break
        assert [(m.offset(), m.value()) for m in got] == [(1000, b"after")]
    finally:
        c.close()
    c = consumer(b.bootstrap, auto_offset_reset="error")
    try:
        c.assign([TopicPartition(topic, 0, 5)])
        errs = []
        for _ in range(20):
            for m in c.consume(num_messages=10, timeout=0.3):
                if m.error():
                    errs.append(m.error().code())
            if errs:
                break
        assert KafkaError._AUTO_OFFSET_RESET in errs, errs
    finally:
        c.close()

    # Deleting below the start is a no-op; -1 means "up to the high watermark"; restart keeps the start.
    assert delete_records(b.bootstrap, topic, 0, 100).low_watermark == 300
    assert delete_records(b.bootstrap, topic, 0, OFFSET_END).low_watermark == 1001
    b.restart(kill=True)
    c = consumer(b.bootstrap)
    try:
        assert watermarks(c, TopicPartition(topic, 0)) == (1001, 1001)
    finally:
        c.close()


def test_delete_records_errors(make_broker):
    b = make_broker()
    topic = unique("delrec-err")
    create_topic(b.bootstrap, topic)
    fill(b.bootstrap, topic, 10)
    with pytest.raises(KafkaException) as e:
        delete_records(b.bootstrap, topic, 0, 11)
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    # A compact-only topic keeps its history: Kafka refuses with POLICY_VIOLATION.
    compacted = unique("delrec-compact")
    create_topic(b.bootstrap, compacted, config={"cleanup.policy": "compact"})
    p = producer(b.bootstrap, acks="all")
    produce_sync(p, compacted, [{"key": b"k", "value": b"v", "partition": 0}])
    with pytest.raises(KafkaException) as e:
        delete_records(b.bootstrap, compacted, 0, 1)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
