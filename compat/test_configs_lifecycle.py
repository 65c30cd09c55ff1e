"""The topic- and broker-configuration lifecycle through confluent-kafka's
AdminClient: describe_configs, alter_configs (legacy: replaces the set) and
incremental_alter_configs (SET / DELETE / APPEND / SUBTRACT), validated with
Kafka's error codes, persisted in the metadata log and applied live."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType

from conftest import unique
from helpers import admin, consumer, create_topic, producer, produce_sync, watermarks

BROKER_OVERRIDES = {"log.retention.check.interval.ms": "300"}
SET, DELETE, APPEND, SUBTRACT = (AlterConfigOpType.SET, AlterConfigOpType.DELETE,
                                 AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT)


def describe(a, restype, name):
    res = ConfigResource(restype, name)
    return a.describe_configs([res])[res].result(30)


def incremental(a, restype, name, ops, validate_only=False, **kw):
    """ops: [(key, value, op)]; returns the future's result or raises KafkaException."""
    res = ConfigResource(restype, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops])
    return a.incremental_alter_configs([res], validate_only=validate_only, **kw)[res].result(30)


def legacy_alter(a, restype, name, configs: dict):
    res = ConfigResource(restype, name, set_config=configs)
    return a.alter_configs([res])[res].result(30)


def error_code(fn) -> int:
    with pytest.raises(KafkaException) as e:
        fn()
    return e.value.args[0].code()


def test_incremental_round_trip_and_sources(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg")
    create_topic(broker.bootstrap, topic, config={"retention.ms": "3600000"})
    c = describe(a, ResourceType.TOPIC, topic)
    assert c["retention.ms"].value == "3600000"
    assert c["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert c["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value

    incremental(a, ResourceType.TOPIC, topic, [
        ("retention.ms", None, DELETE),
        ("max.message.bytes", "500000", SET),
        ("cleanup.policy", "compact", APPEND),
    ])
    c = describe(a, ResourceType.TOPIC, topic)
    assert c["retention.ms"].value == "604800000"
    assert c["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert c["max.message.bytes"].value == "500000"
    assert c["cleanup.policy"].value == "delete,compact"
    assert c["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    incremental(a, ResourceType.TOPIC, topic, [("cleanup.policy", "delete", SUBTRACT)])
    assert describe(a, ResourceType.TOPIC, topic)["cleanup.policy"].value == "compact"

    # validate_only changes nothing.
    incremental(a, ResourceType.TOPIC, topic, [("max.message.bytes", "1000", SET)], validate_only=True)
    assert describe(a, ResourceType.TOPIC, topic)["max.message.bytes"].value == "500000"


def test_legacy_alter_configs_replaces_the_set(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg-legacy")
    create_topic(broker.bootstrap, topic, config={"retention.ms": "3600000", "segment.bytes": "2000000"})
    legacy_alter(a, ResourceType.TOPIC, topic, {"retention.bytes": "123456789"})
    c = describe(a, ResourceType.TOPIC, topic)
    assert c["retention.bytes"].value == "123456789"
    # Keys left out of a legacy AlterConfigs are removed, as in Kafka.
    assert c["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert c["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def test_bad_changes_are_refused_with_kafkas_codes(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg-bad")
    create_topic(broker.bootstrap, topic)
    T = ResourceType.TOPIC
    assert error_code(lambda: incremental(a, T, topic, [("no.such.config", "1", SET)])) == KafkaError.INVALID_CONFIG
    assert error_code(lambda: incremental(a, T, topic, [("retention.ms", "soon", SET)])) == KafkaError.INVALID_CONFIG
    assert error_code(lambda: incremental(a, T, topic, [("cleanup.policy", "shred", SET)])) == KafkaError.INVALID_CONFIG
    assert error_code(lambda: incremental(a, T, topic, [("min.cleanable.dirty.ratio", "2", SET)])) == KafkaError.INVALID_CONFIG
    assert error_code(lambda: incremental(a, T, topic, [("retention.ms", "5", APPEND)])) == KafkaError.INVALID_CONFIG
    # UNKNOWN_TOPIC_OR_PARTITION is retriable: librdkafka retries it until the request times out.
    assert error_code(lambda: incremental(a, T, unique("missing"), [("retention.ms", "5", SET)],
                                          request_timeout=3)) in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                                  KafkaError._TIMED_OUT)
    assert error_code(lambda: legacy_alter(a, T, topic, {"segment.bytes": "-5"})) == KafkaError.INVALID_CONFIG
    # Nothing of the refused changes stuck.
    assert describe(a, T, topic)["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # Broker: read-only keys, bad values and other brokers' ids are INVALID_REQUEST (Kafka's KAFKA-13609 behaviour).
    B = ResourceType.BROKER
    assert error_code(lambda: incremental(a, B, "1", [("node.id", "5", SET)])) == KafkaError.INVALID_REQUEST
    assert error_code(lambda: incremental(a, B, "1", [("log.retention.ms", "x", SET)])) == KafkaError.INVALID_REQUEST
    assert error_code(lambda: incremental(a, B, "1", [("log.no.such", "5", SET)])) == KafkaError.INVALID_REQUEST
    # (A request for another broker id is sent by librdkafka to that broker, which does not exist here.)


def test_max_message_bytes_applies_live(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg-size")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="all", compression_type="none", linger_ms=0, message_max_bytes=2_000_000)
    produce_sync(p, topic, [{"value": b"x" * 20_000, "partition": 0}])
    incremental(a, ResourceType.TOPIC, topic, [("max.message.bytes", "10000", SET)])
    errors = []
    p.produce(topic, b"x" * 20_000, partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors
    produce_sync(p, topic, [{"value": b"x" * 5_000, "partition": 0}])
    incremental(a, ResourceType.TOPIC, topic, [("max.message.bytes", None, DELETE)])
    produce_sync(p, topic, [{"value": b"x" * 20_000, "partition": 0}])


def test_retention_change_deletes_at_the_next_check(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg-ret")
    create_topic(broker.bootstrap, topic, config={"segment.bytes": "1048576"})
    old = int(time.time() * 1000) - 3_600_000
    p = producer(broker.bootstrap, acks="all", compression_type="none")
    produce_sync(p, topic, [{"value": b"r" * 2000, "partition": 0, "timestamp": old} for _ in range(1200)], timeout=60)
    tp = TopicPartition(topic, 0)
    c = consumer(broker.bootstrap)
    try:
        time.sleep(1.0)
        assert watermarks(c, tp) == (0, 1200)  # the default retention.ms keeps an hour-old record
        incremental(a, ResourceType.TOPIC, topic, [("retention.ms", "60000", SET)])
        deadline = time.monotonic() + 20
        while watermarks(c, tp)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        lo, hi = watermarks(c, tp)
        assert 0 < lo <= hi == 1200, (lo, hi)
    finally:
        c.close()


def test_dynamic_broker_configs(make_broker):
    """Per-broker dynamic configs (librdkafka cannot name the cluster-default
    resource "", which crates/cli/tests covers through `strom configs`)."""
    b = make_broker()
    a = admin(b.bootstrap)
    topic = unique("cfg-dyn")
    create_topic(b.bootstrap, topic)
    B = ResourceType.BROKER
    c = describe(a, B, "1")
    assert c["log.retention.hours"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not c["log.retention.ms"].is_read_only
    assert c["node.id"].is_read_only
    incremental(a, B, "1", [("log.retention.ms", "3600000", SET)])
    c = describe(a, B, "1")
    assert c["log.retention.ms"].value == "3600000"
    assert c["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    # Topic configs inherit the dynamic broker value, with the synonym chain.
    t = describe(a, ResourceType.TOPIC, topic)["retention.ms"]
    assert t.value == "3600000"
    assert t.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert "log.retention.ms" in t.synonyms  # (a dict by name in confluent-kafka)

    # Persisted in the metadata log: survives a restart.
    b.restart()
    a = admin(b.bootstrap)
    assert describe(a, ResourceType.TOPIC, topic)["retention.ms"].value == "3600000"
    legacy_alter(a, B, "1", {"log.retention.bytes": "1000000000"})  # replaces the set: retention.ms goes
    t = describe(a, ResourceType.TOPIC, topic)
    assert t["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert t["retention.bytes"].value == "1000000000"
    incremental(a, B, "1", [("log.retention.bytes", None, DELETE)])
    assert describe(a, ResourceType.TOPIC, topic)["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def produce_error(p, topic, **kw):
    errors = []
    p.produce(topic, partition=0, on_delivery=lambda err, msg: errors.append(err), **kw)
    p.flush(30)
    assert errors, "no delivery report"
    return errors[0]


def test_timestamp_configs_apply_live(broker):
    a = admin(broker.bootstrap)
    topic = unique("cfg-ts")
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, acks="all", linger_ms=0)
    hour_ago = int(time.time() * 1000) - 3_600_000
    assert produce_error(p, topic, value=b"old", timestamp=hour_ago) is None
    incremental(a, ResourceType.TOPIC, topic, [("message.timestamp.before.max.ms", "60000", SET)])
    err = produce_error(p, topic, value=b"old", timestamp=hour_ago)
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, err
    # LogAppendTime: the broker's clock replaces the producer's, and the bounds no longer apply.
    incremental(a, ResourceType.TOPIC, topic, [("message.timestamp.type", "LogAppendTime", SET)])
    before = int(time.time() * 1000)
    (m,) = produce_sync(p, topic, [{"value": b"stamped", "partition": 0, "timestamp": hour_ago}])
    ts_type, ts = m.timestamp()
    assert ts_type == 2 and ts >= before - 1000, m.timestamp()  # TIMESTAMP_LOG_APPEND_TIME


def test_record_set_larger_than_a_segment(broker):
    """max.message.bytes above segment.bytes: a batch that fits the first but not
    a segment is RECORD_LIST_TOO_LARGE, as Kafka's RecordBatchTooLargeException."""
    topic = unique("cfg-seg")
    create_topic(broker.bootstrap, topic, config={"segment.bytes": "1048576", "max.message.bytes": "3000000"})
    p = producer(broker.bootstrap, acks="all", compression_type="none", linger_ms=0,
                 message_max_bytes=4_000_000)
    err = produce_error(p, topic, value=b"x" * 1_500_000)
    assert err is not None and err.code() == KafkaError.RECORD_LIST_TOO_LARGE, err
    assert produce_error(p, topic, value=b"x" * 900_000) is None
