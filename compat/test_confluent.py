"""confluent-kafka (librdkafka 2.16) against strom: admin, produce, consume,
offsets, and the error codes Apache Kafka 4.x returns."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, OFFSET_END, TIMESTAMP_CREATE_TIME,
                             TIMESTAMP_LOG_APPEND_TIME, KafkaError,
                             KafkaException, TopicPartition)
from confluent_kafka.admin import (ConfigResource, ConfigSource, NewPartitions, NewTopic,
                                   OffsetSpec, ResourceType)

import kafkawire
from conftest import unique
from helpers import (admin, consume_partitions, consumer, create_topic, producer, produce_sync,
                     wait_for_topic)

TIMEOUT = 30


def admin_error(fut, timeout=TIMEOUT) -> KafkaError:
    """The KafkaError an admin future fails with (fails the test if it succeeds)."""
    with pytest.raises(KafkaException) as exc:
        fut.result(timeout)
    err = exc.value.args[0]
    assert isinstance(err, KafkaError), err
    return err


def source_of(entry) -> ConfigSource:
    return entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)


def topic_partition_count(a, topic):
    md = a.list_topics(topic=topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return len(t.partitions)


# ---------------------------------------------------------------- admin API

def test_create_describe_grow_delete(broker):
    a = admin(broker.bootstrap)
    name = unique("admin")
    configs = {"retention.ms": "3600000", "segment.bytes": "1048576", "cleanup.policy": "delete"}
    futs = a.create_topics([NewTopic(name, num_partitions=3, config=configs)],
                           operation_timeout=TIMEOUT)
    assert futs[name].result(TIMEOUT) is None
    wait_for_topic(broker.bootstrap, name, 3)

    md = a.list_topics(timeout=10)
    assert name in md.topics
    t = md.topics[name]
    assert sorted(t.partitions) == [0, 1, 2]
    assert len(md.brokers) == 1
    (broker_id,) = md.brokers
    assert md.brokers[broker_id].port == broker.port
    for p in t.partitions.values():
        assert p.leader == broker_id
        assert p.replicas == [broker_id]
        assert p.isrs == [broker_id]

    res = ConfigResource(ResourceType.TOPIC, name)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    for k, v in configs.items():
        assert entries[k].value == v, (k, entries[k])
    assert source_of(entries["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert source_of(entries["segment.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not entries["retention.ms"].is_default
    # Kafka describes every topic config, including the ones left at their defaults.
    assert entries["max.message.bytes"].value == "1048588"
    assert entries["max.message.bytes"].is_default
    assert entries["message.timestamp.type"].value == "CreateTime"
    assert entries["compression.type"].value == "producer"

    fut = a.create_partitions([NewPartitions(name, 5)], operation_timeout=TIMEOUT)
    assert fut[name].result(TIMEOUT) is None
    wait_for_topic(broker.bootstrap, name, 5)

    # New partitions are usable right away.
    p = producer(broker.bootstrap, acks="all")
    delivered = produce_sync(p, name, [{"value": b"x", "partition": 4}])
    assert delivered[0].partition() == 4 and delivered[0].offset() == 0

    fut = a.delete_topics([name], operation_timeout=TIMEOUT)
    assert fut[name].result(TIMEOUT) is None
    deadline = time.monotonic() + 15
    while name in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.1)

    # A deleted name can be created again, and starts empty.
    create_topic(broker.bootstrap, name, partitions=1)
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(name, 0), timeout=10) == (0, 0)
    finally:
        c.close()


def test_create_topics_validate_only(broker):
    a = admin(broker.bootstrap)
    name = unique("validate")
    fut = a.create_topics([NewTopic(name, num_partitions=2)], validate_only=True)
    assert fut[name].result(TIMEOUT) is None
    time.sleep(0.5)
    assert name not in a.list_topics(timeout=10).topics


def test_create_topic_errors(broker):
    a = admin(broker.bootstrap)
    name = unique("dup")
    create_topic(broker.bootstrap, name, partitions=2)

    err = admin_error(a.create_topics([NewTopic(name, num_partitions=2)])[name])
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err

    # librdkafka accepts -1 (broker default) and up; 0 reaches the broker.
    zero = unique("zero")
    err = admin_error(a.create_topics([NewTopic(zero, num_partitions=0)])[zero])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err

    # Broker error 17 INVALID_TOPIC_EXCEPTION is librdkafka's TOPIC_EXCEPTION.
    for bad in ("bad/name", "x" * 250, "..", "bad name", "ünïcode"):
        err = admin_error(a.create_topics([NewTopic(bad, num_partitions=1)])[bad])
        assert err.code() == KafkaError.TOPIC_EXCEPTION == 17, (bad, err)
    # 249 characters is the longest legal name.
    longest = "y" * 249
    assert a.create_topics([NewTopic(longest, num_partitions=1)])[longest].result(TIMEOUT) is None

    # Names differing only in '.' vs '_' collide (both map to the same metric names).
    dotted = unique("col") + ".x"
    create_topic(broker.bootstrap, dotted, partitions=1)
    underscored = dotted.replace(".", "_")
    err = admin_error(a.create_topics([NewTopic(underscored, num_partitions=1)])[underscored])
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err

    rf = unique("rf")
    err = admin_error(a.create_topics([NewTopic(rf, num_partitions=1, replication_factor=2)])[rf])
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err

    badcfg = unique("badcfg")
    err = admin_error(a.create_topics(
        [NewTopic(badcfg, num_partitions=1, config={"retention.ms": "not-a-number"})])[badcfg])
    assert err.code() == KafkaError.INVALID_CONFIG, err
    unknown_cfg = unique("unkcfg")
    err = admin_error(a.create_topics(
        [NewTopic(unknown_cfg, num_partitions=1, config={"no.such.config": "1"})])[unknown_cfg])
    assert err.code() == KafkaError.INVALID_CONFIG, err

    # None of the failed creates left a topic behind.
    topics = a.list_topics(timeout=10).topics
    for n in (zero, "bad/name", underscored, rf, badcfg, unknown_cfg):
        assert n not in topics, n


def test_partition_and_delete_errors(broker):
    a = admin(broker.bootstrap)
    name = unique("parts")
    create_topic(broker.bootstrap, name, partitions=3)

    err = admin_error(a.create_partitions([NewPartitions(name, 2)])[name])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err
    err = admin_error(a.create_partitions([NewPartitions(name, 3)])[name])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err
    assert topic_partition_count(a, name) == 3

    missing = unique("missing")
    err = admin_error(a.create_partitions([NewPartitions(missing, 4)])[missing])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    err = admin_error(a.delete_topics([missing])[missing])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    res = ConfigResource(ResourceType.TOPIC, missing)
    err = admin_error(a.describe_configs([res])[res])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_invalid_partitions_negative_reaches_broker(broker):
    """librdkafka refuses num_partitions < -1 locally, so send -5 with
    kafka-python's admin client (no local check) to reach the broker."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import InvalidPartitionsError
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    try:
        name = unique("neg")
        with pytest.raises(InvalidPartitionsError):
            ka.create_topics({name: {"num_partitions": -5}})
    finally:
        ka.close()


def test_describe_cluster(broker):
    a = admin(broker.bootstrap)
    desc = a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert len(desc.nodes) == 1
    node = desc.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    assert desc.controller is not None and desc.controller.id == node.id
    assert desc.cluster_id


# -------------------------------------------------------- produce / consume

def make_records(n: int, partitions: int, base_ts: int):
    """Keyed records with headers and explicit timestamps, exercising null and
    empty keys/values, duplicate header keys and null header values."""
    records = []
    for i in range(n):
        rnd = random.Random(i)
        if i % 17 == 5:
            key = None
        elif i % 17 == 6:
            key = b""
        else:
            key = f"key-{i}".encode()
        if i % 23 == 7:
            value = None
        elif i % 23 == 8:
            value = b""
        else:
            size = rnd.choice([1, 10, 100, 1000, 3000])
            # Half-compressible binary payload with NULs and high bytes.
            value = f"value-{i}:".encode() + bytes(rnd.randrange(256) if j % 2 else j % 7
                                                   for j in range(size))
        if i % 3 == 0:
            headers = [("h1", f"a{i}".encode()), ("dup", b"first"), ("dup", b"second"),
                       ("null", None), ("empty", b"")]
        elif i % 3 == 1:
            headers = []
        else:
            headers = [("utf8-ключ", "значение".encode()), ("bin", bytes(range(256)))]
        records.append({"key": key, "value": value, "headers": headers,
                        "partition": i % partitions, "timestamp": base_ts + i * 7})
    return records


def norm_headers(h):
    return [tuple(x) for x in (h or [])]


def check_consumed(records, msgs, partitions):
    by_part = {p: [] for p in range(partitions)}
    for r in records:
        by_part[r["partition"]].append(r)
    got = {p: [] for p in range(partitions)}
    for m in msgs:
        got[m.partition()].append(m)
    for p in range(partitions):
        got[p].sort(key=lambda m: m.offset())
        assert [m.offset() for m in got[p]] == list(range(len(by_part[p]))), \
            f"partition {p}: offsets not 0..{len(by_part[p]) - 1} without gaps/duplicates"
        for r, m in zip(by_part[p], got[p]):
            where = f"partition {p} offset {m.offset()}"
            assert m.key() == r["key"], where
            assert m.value() == r["value"], where
            assert norm_headers(m.headers()) == norm_headers(r["headers"]), where
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, r["timestamp"]), where


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_consume_roundtrip(broker, acks, compression):
    partitions = 3
    topic = unique(f"rt-{acks}-{compression}")
    create_topic(broker.bootstrap, topic, partitions=partitions)
    base_ts = int(time.time() * 1000) - 86_400_000
    records = make_records(240, partitions, base_ts)
    p = producer(broker.bootstrap, acks=acks, compression_type=compression, linger_ms=20,
                 batch_num_messages=50)
    delivered = produce_sync(p, topic, records)

    if acks != "0":
        next_offset = {q: 0 for q in range(partitions)}
        for r, m in zip(records, delivered):
            assert m.partition() == r["partition"]
            assert m.offset() == next_offset[m.partition()], "delivery offsets not sequential"
            next_offset[m.partition()] += 1
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, r["timestamp"])

    msgs = consume_partitions(broker.bootstrap, topic, range(partitions), len(records))
    assert len(msgs) == len(records), "duplicates"
    check_consumed(records, msgs, partitions)

    c = consumer(broker.bootstrap)
    try:
        for q in range(partitions):
            expect = sum(1 for r in records if r["partition"] == q)
            assert c.get_watermark_offsets(TopicPartition(topic, q), timeout=10) == (0, expect)
    finally:
        c.close()


def test_consume_from_middle_and_end(broker):
    topic = unique("mid")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap, acks="all")
    produce_sync(p, topic, [{"value": f"m{i}".encode(), "partition": 0} for i in range(100)])
    msgs = consume_partitions(broker.bootstrap, topic, [0], 60, start=40)
    assert [m.offset() for m in msgs] == list(range(40, 100))
    assert msgs[0].value() == b"m40"

    # From OFFSET_END: nothing old, then exactly the new record.
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_END)])
        # (gives the consumer time to resolve OFFSET_END before the produce)
        assert [m for m in c.consume(10, timeout=2.0) if not m.error()] == []
        produce_sync(p, topic, [{"value": b"new", "partition": 0}])
        got = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            got = [m for m in c.consume(10, timeout=0.5) if not m.error()]
        assert [(m.offset(), m.value()) for m in got] == [(100, b"new")]
    finally:
        c.close()


def test_large_batches_and_long_poll(broker):
    """Records larger than one fetch response chunk, and a consumer that waits
    (fetch.wait.max.ms) for data produced after it started polling."""
    topic = unique("big")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap, acks="all", compression_type="none")
    values = [bytes([i]) * 300_000 for i in range(8)]
    produce_sync(p, topic, [{"value": v, "partition": 0} for v in values])
    # A batch larger than max.partition.fetch.bytes is still returned whole
    # (KIP-74), so the consumer makes progress.
    msgs = consume_partitions(broker.bootstrap, topic, [0], len(values),
                              fetch_max_bytes=1_000_000, max_partition_fetch_bytes=100_000)
    assert [m.value() for m in msgs] == values


# ------------------------------------------------------------------ offsets

def test_offsets_for_times(broker):
    topic = unique("times")
    create_topic(broker.bootstrap, topic, partitions=1)
    base = int(time.time() * 1000) - 3_600_000
    deltas = [10, 30, 20, 50, 40, 40, 60]  # not monotonic on purpose
    p = producer(broker.bootstrap, acks="all")
    # Two produce calls => at least two batches.
    produce_sync(p, topic, [{"value": f"t{i}".encode(), "partition": 0, "timestamp": base + d}
                            for i, d in enumerate(deltas[:4])])
    produce_sync(p, topic, [{"value": f"t{i}".encode(), "partition": 0, "timestamp": base + d}
                            for i, d in enumerate(deltas[4:], start=4)])

    # ListOffsets by timestamp returns the first offset whose timestamp is >= t.
    expected = {0: 0, 10: 0, 11: 1, 25: 1, 30: 1, 31: 3, 45: 3, 50: 3, 51: 6, 60: 6}
    c = consumer(broker.bootstrap)
    try:
        for d, off in expected.items():
            res = c.offsets_for_times([TopicPartition(topic, 0, base + d)], timeout=10)
            assert res[0].error is None
            assert res[0].offset == off, f"t=base+{d}: got {res[0].offset}, want {off}"
        # After the last timestamp: no such offset (-1, OFFSET_END in librdkafka).
        res = c.offsets_for_times([TopicPartition(topic, 0, base + 61)], timeout=10)
        assert res[0].offset == -1
        res = c.offsets_for_times([TopicPartition(topic, 0, int(time.time() * 1000) + 3_600_000)],
                                  timeout=10)
        assert res[0].offset == -1
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 7)
    finally:
        c.close()

    # The admin ListOffsets API: earliest, latest, by timestamp, max timestamp.
    a = admin(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    for spec, want_offset, want_ts in [
            (OffsetSpec.earliest(), 0, None),
            (OffsetSpec.latest(), 7, None),
            (OffsetSpec.for_timestamp(base + 31), 3, base + 50),
            (OffsetSpec.max_timestamp(), 6, base + 60)]:
        info = a.list_offsets({tp: spec}, request_timeout=TIMEOUT)[tp].result(TIMEOUT)
        assert info.offset == want_offset, (spec, info.offset)
        if want_ts is not None:
            assert info.timestamp == want_ts, (spec, info.timestamp)


def test_out_of_range_offset(broker):
    topic = unique("oor")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap, acks="all")
    produce_sync(p, topic, [{"value": f"r{i}".encode(), "partition": 0} for i in range(10)])

    # auto.offset.reset=error: the out-of-range fetch surfaces as an error.
    c = consumer(broker.bootstrap, auto_offset_reset="error")
    try:
        c.assign([TopicPartition(topic, 0, 50)])
        err = None
        deadline = time.monotonic() + 20
        while err is None and time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.5):
                assert m.error() is not None, f"unexpected record at offset {m.offset()}"
                err = m.error()
        assert err is not None, "no error for an out-of-range offset"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
        assert "out of range" in err.str().lower(), err
    finally:
        c.close()

    # earliest: reset to the log start offset.
    msgs = consume_partitions(broker.bootstrap, topic, [0], 10, start=50,
                              auto_offset_reset="earliest")
    assert [m.offset() for m in msgs] == list(range(10))

    # latest: reset to the log end offset; only new records arrive.
    c = consumer(broker.bootstrap, auto_offset_reset="latest")
    try:
        c.assign([TopicPartition(topic, 0, 50)])
        # (gives the consumer time to hit the out-of-range error and reset)
        assert [m for m in c.consume(10, timeout=2.0) if not m.error()] == []
        produce_sync(p, topic, [{"value": b"late", "partition": 0}])
        got = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            got = [m for m in c.consume(10, timeout=0.5) if not m.error()]
        assert [(m.offset(), m.value()) for m in got] == [(10, b"late")]
    finally:
        c.close()


# ------------------------------------------------------------- limits/errors

def test_message_too_large_topic_config(broker):
    topic = unique("maxbytes")
    create_topic(broker.bootstrap, topic, partitions=1, config={"max.message.bytes": "10000"})
    p = producer(broker.bootstrap, acks="all", compression_type="none",
                 message_max_bytes=1_000_000)
    results = []
    p.produce(topic, value=b"x" * 20_000, partition=0,
              on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT) == 0
    assert len(results) == 1 and results[0] is not None, results
    # Broker MESSAGE_TOO_LARGE (10) surfaces as librdkafka's MSG_SIZE_TOO_LARGE.
    assert results[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, results[0]

    # A record under the limit still goes through, at offset 0 (nothing was appended).
    delivered = produce_sync(p, topic, [{"value": b"y" * 9_000, "partition": 0}])
    assert delivered[0].offset() == 0


def test_message_too_large_broker_config(make_broker):
    b = make_broker(message_max_bytes="6000")
    topic = unique("brokermax")
    create_topic(b.bootstrap, topic, partitions=1)
    a = admin(b.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    # The topic-level default follows the broker's message.max.bytes.
    assert entries["max.message.bytes"].value == "6000"
    p = producer(b.bootstrap, acks="1", compression_type="none")
    results = []
    p.produce(topic, value=b"z" * 8_000, partition=0,
              on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT) == 0
    assert results and results[0] is not None and \
        results[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, results


def test_timestamp_too_far_in_future_rejected(broker):
    """Kafka 4 defaults message.timestamp.after.max.ms to 1 hour (KIP-1030):
    a CreateTime more than an hour ahead is INVALID_TIMESTAMP."""
    topic = unique("future")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap, acks="all")
    results = []
    p.produce(topic, value=b"future", partition=0,
              timestamp=int(time.time() * 1000) + 2 * 3_600_000,
              on_delivery=lambda err, msg: results.append(err))
    assert p.flush(TIMEOUT) == 0
    assert results and results[0] is not None and \
        results[0].code() == KafkaError.INVALID_TIMESTAMP, results
    # Within the hour is fine.
    delivered = produce_sync(p, topic, [{"value": b"soon", "partition": 0,
                                         "timestamp": int(time.time() * 1000) + 600_000}])
    assert delivered[0].offset() == 0


def test_log_append_time_topic(broker):
    """message.timestamp.type=LogAppendTime: the broker stamps every record
    with its own clock (the producer's timestamp is replaced, and is not
    checked against message.timestamp.after.max.ms)."""
    topic = unique("lat")
    create_topic(broker.bootstrap, topic, partitions=1,
                 config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    delivered = produce_sync(producer(broker.bootstrap, acks="all"), topic, [
        {"value": b"old", "partition": 0, "timestamp": 1_000_000},
        {"value": b"future", "partition": 0, "timestamp": before + 10 * 3_600_000},
        {"value": b"none", "partition": 0}])
    after = int(time.time() * 1000)
    for m in delivered:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, m.timestamp()
        assert before - 1000 <= ts <= after + 1000, (ts, before, after)
    msgs = consume_partitions(broker.bootstrap, topic, [0], 3)
    for m, d in zip(msgs, delivered):
        assert m.timestamp() == d.timestamp()


def test_describe_broker_configs(make_broker):
    b = make_broker(num_partitions="3", log_retention_ms="7200000")
    a = admin(b.bootstrap)
    (broker_id,) = a.list_topics(timeout=10).brokers
    res = ConfigResource(ResourceType.BROKER, str(broker_id))
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["num.partitions"].value == "3"
    assert source_of(entries["num.partitions"]) == ConfigSource.STATIC_BROKER_CONFIG
    assert entries["log.retention.ms"].value == "7200000"
    assert entries["auto.create.topics.enable"].value == "true"
    assert source_of(entries["auto.create.topics.enable"]) == ConfigSource.DEFAULT_CONFIG
    assert entries["message.max.bytes"].value == "1048588"
    # A topic created now inherits the broker's retention as its default.
    topic = unique("inherit")
    create_topic(b.bootstrap, topic, partitions=1)
    tres = ConfigResource(ResourceType.TOPIC, topic)
    tentries = a.describe_configs([tres])[tres].result(TIMEOUT)
    assert tentries["retention.ms"].value == "7200000"
    assert source_of(tentries["retention.ms"]) == ConfigSource.STATIC_BROKER_CONFIG


def test_auto_create_on_produce_uses_num_partitions(make_broker):
    b = make_broker(num_partitions="3")
    topic = unique("auto")
    p = producer(b.bootstrap, acks="all")
    delivered = produce_sync(p, topic, [{"key": f"k{i}".encode(), "value": b"v"}
                                        for i in range(30)])
    assert {m.topic() for m in delivered} == {topic}
    a = admin(b.bootstrap)
    assert topic_partition_count(a, topic) == 3
    msgs = consume_partitions(b.bootstrap, topic, range(3), 30)
    assert len(msgs) == 30
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(TIMEOUT)
    assert entries["cleanup.policy"].value == "delete"


def test_consumer_metadata_does_not_auto_create(broker):
    """Metadata requests with allow_auto_topic_creation=false (what consumers
    send) never create a topic, even when auto.create.topics.enable=true."""
    topic = unique("noauto")
    c = consumer(broker.bootstrap, allow_auto_create_topics=False)
    try:
        md = c.list_topics(topic=topic, timeout=10)
        assert md.topics[topic].error is not None
        assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()
    with kafkawire.connect(broker.port) as s:
        brokers = kafkawire.metadata_v4_brokers(s)  # ensure the connection works
        assert brokers
    time.sleep(0.5)
    assert topic not in admin(broker.bootstrap).list_topics(timeout=10).topics


def test_unknown_topic_without_auto_create(make_broker):
    b = make_broker(auto_create_topics_enable="false")
    topic = unique("ghost")
    a = admin(b.bootstrap)
    md = a.list_topics(topic=topic, timeout=10)
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # Fetching from it: the broker answers UNKNOWN_TOPIC_OR_PARTITION (3) for
    # the partition (librdkafka itself only logs this for assign()ed
    # partitions, so look at the wire).
    with kafkawire.connect(b.port) as s:
        res = kafkawire.fetch_v4(s, 11, topic, {0: 0})
        assert res[(topic, 0)]["error_code"] == kafkawire.ERR_UNKNOWN_TOPIC_OR_PARTITION, res

    # An assign()ed consumer gets nothing, and neither its metadata requests
    # nor its fetches create the topic.
    c = consumer(b.bootstrap, topic_metadata_propagation_max_ms=1000)
    try:
        md = c.list_topics(topic=topic, timeout=10)
        assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for m in c.consume(10, timeout=0.5):
                assert m.error() is not None, "record from a topic that does not exist"
                assert m.error().code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                            KafkaError._UNKNOWN_TOPIC,
                                            KafkaError._UNKNOWN_PARTITION), m.error()
        with pytest.raises(KafkaException) as exc:
            c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert exc.value.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                            KafkaError._UNKNOWN_PARTITION)
    finally:
        c.close()
    assert topic not in a.list_topics(timeout=10).topics

    # A producer's records fail instead of creating the topic.
    p = producer(b.bootstrap, acks="all", message_timeout_ms=5000,
                 topic_metadata_propagation_max_ms=1000)
    results = []
    p.produce(topic, value=b"v", on_delivery=lambda err, msg: results.append(err))
    p.flush(TIMEOUT)
    assert results and results[0] is not None, results
    assert results[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), \
        results[0]
    assert topic not in a.list_topics(timeout=10).topics

    # Explicit creation still works.
    create_topic(b.bootstrap, topic, partitions=2)
    assert topic_partition_count(a, topic) == 2
