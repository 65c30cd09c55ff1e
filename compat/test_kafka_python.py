"""kafka-python 3.0.12 (pure Python client) against strom."""

from __future__ import annotations

import random
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import (InvalidPartitionsError, InvalidTopicError, MessageSizeTooLargeError,
                          TopicAlreadyExistsError, UnknownTopicOrPartitionError)

from conftest import unique
from helpers import producer as ck_producer, produce_sync, wait_partitions_writable

TIMEOUT = 30


@pytest.fixture(scope="module")
def kadmin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    yield a
    a.close()


def new_topic(kadmin, partitions=1, configs=None, prefix="kp"):
    name = unique(prefix)
    kadmin.create_topics({name: {"num_partitions": partitions, "configs": configs or {}}},
                         wait_for_metadata=True)
    wait_partitions_writable(kadmin.config["bootstrap_servers"], name, partitions)
    return name


def kp_producer(broker, **kw):
    conf = dict(bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=5,
                request_timeout_ms=20000)
    conf.update(kw)
    return KafkaProducer(**conf)


def kp_consumer(broker, **kw):
    conf = dict(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=20000)
    conf.update(kw)
    return KafkaConsumer(**conf)


def consume_all(broker, topic, partitions, expected, timeout=TIMEOUT, **kw):
    c = kp_consumer(broker, **kw)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        assert len(out) >= expected, f"consumed {len(out)} of {expected}"
        for recs in c.poll(timeout_ms=300).values():
            out.extend(recs)
        return out
    finally:
        c.close()


def make_records(n, partitions, base_ts):
    recs = []
    for i in range(n):
        rnd = random.Random(i)
        key = None if i % 11 == 3 else f"key-{i}".encode()
        value = f"value-{i}:".encode() + bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 5, 500, 2000])))
        headers = [] if i % 2 else [("h", f"{i}".encode()), ("dup", b"1"), ("dup", b"2"),
                                    ("empty", b"")]
        recs.append(dict(key=key, value=value, headers=headers, partition=i % partitions,
                         timestamp_ms=base_ts + i))
    return recs


def check(records, consumed, partitions):
    for p in range(partitions):
        want = [r for r in records if r["partition"] == p]
        got = sorted((c for c in consumed if c.partition == p), key=lambda c: c.offset)
        assert [c.offset for c in got] == list(range(len(want))), f"partition {p} offsets"
        for r, c in zip(want, got):
            assert c.key == r["key"]
            assert c.value == r["value"]
            assert [tuple(h) for h in c.headers] == r["headers"]
            assert c.timestamp == r["timestamp_ms"]
            assert c.timestamp_type == 0  # CreateTime


CASES = [(acks, comp) for acks in (0, 1, "all") for comp in (None, "gzip", "lz4")] + \
        [("all", "snappy"), ("all", "zstd")]


@pytest.mark.parametrize("acks,compression", CASES)
def test_roundtrip(broker, kadmin, acks, compression):
    partitions = 3
    topic = new_topic(kadmin, partitions)
    records = make_records(150, partitions, int(time.time() * 1000) - 7_200_000)
    p = kp_producer(broker, acks=acks, compression_type=compression)
    try:
        futures = [p.send(topic, **r) for r in records]
        p.flush(TIMEOUT)
        metas = [f.get(timeout=TIMEOUT) for f in futures]
    finally:
        p.close(timeout=5)
    if acks != 0:
        nxt = {q: 0 for q in range(partitions)}
        for r, m in zip(records, metas):
            assert (m.topic, m.partition) == (topic, r["partition"])
            assert m.offset == nxt[m.partition]
            nxt[m.partition] += 1
    consumed = consume_all(broker, topic, range(partitions), len(records))
    assert len(consumed) == len(records)
    check(records, consumed, partitions)


def test_offsets_api(broker, kadmin):
    topic = new_topic(kadmin, 2)
    base = int(time.time() * 1000) - 600_000
    p = kp_producer(broker, acks="all")
    try:
        for i in range(20):
            p.send(topic, value=f"v{i}".encode(), partition=i % 2, timestamp_ms=base + 100 * i)
        p.flush(TIMEOUT)
    finally:
        p.close(timeout=5)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    c = kp_consumer(broker)
    try:
        assert c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert c.end_offsets([tp0, tp1]) == {tp0: 10, tp1: 10}
        # Partition 0 has timestamps base+0, +200, ..., +1800 at offsets 0..9.
        res = c.offsets_for_times({tp0: base + 250, tp1: base + 100})
        assert res[tp0].offset == 2 and res[tp0].timestamp == base + 400
        assert res[tp1].offset == 0 and res[tp1].timestamp == base + 100
        res = c.offsets_for_times({tp0: base, tp1: base + 1_000_000})
        assert res[tp0].offset == 0 and res[tp0].timestamp == base
        assert res[tp1] is None  # no record that late
        # seek to a timestamp-derived offset and read from there
        c.assign([tp0])
        c.seek(tp0, 7)
        got = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 3 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                got.extend(recs)
        assert [(r.offset, r.value) for r in got] == [(7, b"v14"), (8, b"v16"), (9, b"v18")]
        assert c.position(tp0) == 10
    finally:
        c.close()


def test_reads_null_header_values_from_other_clients(broker, kadmin):
    """kafka-python cannot produce a null header value; one written by
    librdkafka must still read back as None (distinct from b'')."""
    topic = new_topic(kadmin, 1)
    produce_sync(ck_producer(broker.bootstrap, acks="all"), topic, [
        {"key": b"k", "value": None, "partition": 0,
         "headers": [("null", None), ("empty", b""), ("x", b"y")]}])
    (rec,) = consume_all(broker, topic, [0], 1)
    assert rec.value is None
    assert [tuple(h) for h in rec.headers] == [("null", None), ("empty", b""), ("x", b"y")]


def test_admin_create_describe_delete(broker, kadmin):
    configs = {"retention.ms": "7200000", "segment.bytes": "2097152",
               "max.message.bytes": "500000"}
    topic = new_topic(kadmin, 4, configs)
    (desc,) = kadmin.describe_topics([topic])
    assert desc["name"] == topic and desc["error_code"] == 0
    assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2, 3]
    assert topic in kadmin.list_topics()

    res = ConfigResource(ConfigResourceType.TOPIC, topic)
    # Default filter: only configs not at their default (Kafka: source DYNAMIC_TOPIC_CONFIG).
    modified = kadmin.describe_configs([res])["topic"][topic]
    assert {k: v["value"] for k, v in modified.items()} == configs
    for v in modified.values():
        assert v["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    everything = kadmin.describe_configs([res], config_filter="all")["topic"][topic]
    assert everything["cleanup.policy"]["value"] == "delete"
    assert everything["cleanup.policy"]["config_source"] == "DEFAULT_CONFIG"
    assert everything["retention.ms"]["value"] == "7200000"
    # Asking for specific keys returns just those.
    only = kadmin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": None,
                                                                   "cleanup.policy": None})],
        config_filter="all")["topic"][topic]
    assert set(only) == {"retention.ms", "cleanup.policy"}

    kadmin.create_partitions({topic: 6})
    kadmin.wait_for_topics([topic])
    deadline = time.monotonic() + 10
    while True:
        (desc,) = kadmin.describe_topics([topic])
        if len(desc["partitions"]) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(desc["partitions"]) == 6

    kadmin.delete_topics([topic])
    deadline = time.monotonic() + 15
    while topic in kadmin.list_topics():
        assert time.monotonic() < deadline, "topic still listed after delete"
        time.sleep(0.1)


def test_admin_errors(broker, kadmin):
    topic = new_topic(kadmin, 1)
    with pytest.raises(TopicAlreadyExistsError):
        kadmin.create_topics({topic: {"num_partitions": 1}})
    with pytest.raises(InvalidPartitionsError):
        kadmin.create_topics({unique("zero"): {"num_partitions": 0}})
    with pytest.raises(InvalidTopicError):
        kadmin.create_topics({"bad/name": {"num_partitions": 1}})
    with pytest.raises(InvalidTopicError):
        kadmin.create_topics({"n" * 250: {"num_partitions": 1}})
    with pytest.raises(UnknownTopicOrPartitionError):
        kadmin.delete_topics([unique("missing")])
    with pytest.raises(InvalidPartitionsError):
        kadmin.create_partitions({topic: 1})
    # raise_errors=False hands back the per-topic error codes.
    res = kadmin.create_topics({topic: {"num_partitions": 1}, "bad/name": {"num_partitions": 1}},
                               raise_errors=False)
    codes = {t["name"]: t["error_code"] for t in res["topics"]}
    assert codes == {topic: 36, "bad/name": 17}  # TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION


def test_message_too_large(broker, kadmin):
    topic = new_topic(kadmin, 1, {"max.message.bytes": "5000"})
    p = kp_producer(broker, acks=1, max_request_size=1_000_000, retries=0)
    try:
        fut = p.send(topic, value=b"x" * 20_000, partition=0)
        with pytest.raises(MessageSizeTooLargeError):
            fut.get(timeout=TIMEOUT)
        ok = p.send(topic, value=b"y" * 100, partition=0).get(timeout=TIMEOUT)
        assert ok.offset == 0
    finally:
        p.close(timeout=5)
