"""Differential scenarios for issue 5: IncrementalAlterConfigs / AlterConfigs on
topics and brokers (operations, validation error codes, the resulting
DescribeConfigs values and sources), DeleteRecords (low watermarks and error
codes), keyless records on a compacted topic, and what a consumer from the
beginning sees once a compacted topic has been cleaned."""

from __future__ import annotations

import time

from kafka.protocol.admin import AlterConfigsRequest, DeleteRecordsRequest, IncrementalAlterConfigsRequest

import wire
from conftest import unique
from helpers import consume_partitions, producer, produce_sync
from obs import both

TOPIC = 2
BROKER = 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
SOURCES = {1: "TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG", 3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
           4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG"}


def incremental(t, resource_type, name, ops, validate_only=False):
    R = IncrementalAlterConfigsRequest
    res = R.AlterConfigsResource(resource_type=resource_type, resource_name=name, configs=[
        R.AlterConfigsResource.AlterableConfig(name=k, config_operation=op, value=v) for k, v, op in ops])
    r = wire.request(t, R(resources=[res], validate_only=validate_only), 1)
    return wire.err(r.responses[0].error_code)


def legacy(t, resource_type, name, configs: dict):
    R = AlterConfigsRequest
    res = R.AlterConfigsResource(resource_type=resource_type, resource_name=name, configs=[
        R.AlterConfigsResource.AlterableConfig(name=k, value=v) for k, v in configs.items()])
    r = wire.request(t, R(resources=[res], validate_only=False), 2)
    return wire.err(r.responses[0].error_code)


def described(t, resource_type, name, keys):
    r = wire.describe_configs(t, resource_type, name, keys=keys)
    return {c.name: [c.value, SOURCES.get(c.config_source, c.config_source)] for c in r.results[0].configs}


def make_topic(t, name, configs=None):
    r = wire.create_topics(t, [dict(name=name, num_partitions=1, configs=configs or {})])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, 1)


KEYS = ["retention.ms", "max.message.bytes", "cleanup.policy", "segment.bytes", "retention.bytes"]


def test_incremental_alter_configs_topic(targets, differ):
    name = unique("iac")

    def run(t):
        make_topic(t, name, {"retention.ms": "3600000", "segment.bytes": "2000000"})
        steps = {
            "set": incremental(t, TOPIC, name, [("max.message.bytes", "500000", SET)]),
            "delete": incremental(t, TOPIC, name, [("retention.ms", None, DELETE)]),
            "append": incremental(t, TOPIC, name, [("cleanup.policy", "compact", APPEND)]),
            "after-append": described(t, TOPIC, name, KEYS),
            "subtract": incremental(t, TOPIC, name, [("cleanup.policy", "delete", SUBTRACT)]),
            "validate-only": incremental(t, TOPIC, name, [("retention.bytes", "5", SET)], validate_only=True),
            "after": described(t, TOPIC, name, KEYS),
            "legacy": legacy(t, TOPIC, name, {"retention.bytes": "123456789"}),
            "after-legacy": described(t, TOPIC, name, KEYS),
        }
        return steps

    differ.check("incremental-alter-configs-topic", *both(targets, run))


ERROR_CASES = {
    "unknown-key": [("no.such.config", "1", SET)],
    "bad-long": [("retention.ms", "soon", SET)],
    "bad-policy": [("cleanup.policy", "shred", SET)],
    "ratio-above-1": [("min.cleanable.dirty.ratio", "2", SET)],
    "append-non-list": [("retention.ms", "5", APPEND)],
    "subtract-non-list": [("retention.ms", "5", SUBTRACT)],
    "duplicate-key": [("retention.ms", "5", SET), ("retention.ms", "6", SET)],
    "null-set": [("retention.ms", None, SET)],
    "unknown-op": [("retention.ms", "5", 7)],
    "min-lag-above-max-lag": [("min.compaction.lag.ms", "10", SET), ("max.compaction.lag.ms", "5", SET)],
}


def test_incremental_alter_configs_errors(targets, differ):
    name = unique("iace")

    def run(t):
        make_topic(t, name)
        out = {case: incremental(t, TOPIC, name, ops) for case, ops in ERROR_CASES.items()}
        out["unknown-topic"] = incremental(t, TOPIC, unique("missing"), [("retention.ms", "5", SET)])
        out["broker-read-only"] = incremental(t, BROKER, "1", [("node.id", "5", SET)])
        out["broker-bad-value"] = incremental(t, BROKER, "1", [("log.retention.ms", "x", SET)])
        out["broker-other-id"] = incremental(t, BROKER, "7", [("log.retention.ms", "5", SET)])
        out["state-after"] = described(t, TOPIC, name, ["retention.ms", "cleanup.policy"])
        return out

    differ.check("incremental-alter-configs-errors", *both(targets, run))


def test_dynamic_broker_configs(targets, differ):
    name = unique("dyn")
    keys = ["log.retention.ms", "log.cleaner.backoff.ms"]

    def run(t):
        make_topic(t, name)
        out = {
            "set-default": incremental(t, BROKER, "", [("log.retention.ms", "7200000", SET)]),
            "set-node": incremental(t, BROKER, "1", [("log.cleaner.backoff.ms", "1000", SET)]),
        }
        # Kafka applies dynamic broker configs asynchronously (metadata log -> broker publisher): compare the
        # settled state.
        deadline = time.monotonic() + 10
        while described(t, BROKER, "1", keys)["log.cleaner.backoff.ms"][0] != "1000" and time.monotonic() < deadline:
            time.sleep(0.2)
        out |= {
            "node": described(t, BROKER, "1", keys),
            "cluster-default": described(t, BROKER, "", keys),
            "topic": described(t, TOPIC, name, ["retention.ms"]),
        }
        # Leave the shared brokers as they were.
        out["reset-default"] = incremental(t, BROKER, "", [("log.retention.ms", None, DELETE)])
        out["reset-node"] = incremental(t, BROKER, "1", [("log.cleaner.backoff.ms", None, DELETE)])
        deadline = time.monotonic() + 10
        while described(t, TOPIC, name, ["retention.ms"])["retention.ms"][1] != "DEFAULT_CONFIG" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        out["topic-after-reset"] = described(t, TOPIC, name, ["retention.ms"])
        return out

    differ.check("dynamic-broker-configs", *both(targets, run))


def delete_records(t, topic, offset, partition=0):
    R = DeleteRecordsRequest
    req = R(topics=[R.DeleteRecordsTopic(name=topic, partitions=[
        R.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=partition, offset=offset)])],
        timeout_ms=10000)
    p = wire.request(t, req, 2).topics[0].partitions[0]
    return [p.low_watermark, wire.err(p.error_code)]


def test_delete_records(targets, differ):
    name, compacted = unique("delrec"), unique("delrec-c")

    def run(t):
        make_topic(t, name)
        make_topic(t, compacted, {"cleanup.policy": "compact"})
        p = producer(t.bootstrap, acks="all")
        produce_sync(p, name, [{"value": f"v{i}".encode(), "partition": 0} for i in range(10)])
        produce_sync(p, compacted, [{"key": b"k", "value": b"v", "partition": 0}])
        out = {
            "to-4": delete_records(t, name, 4),
            "below-start": delete_records(t, name, 2),
            "beyond-hw": delete_records(t, name, 11),
            "minus-1": delete_records(t, name, -1),
            "unknown-partition": delete_records(t, name, 0, partition=5),
            "compact-only": delete_records(t, compacted, 1),
        }
        lo = wire.list_offsets(t, name, {0: -2})
        out["earliest"] = lo.topics[0].partitions[0].offset
        return out

    differ.check("delete-records", *both(targets, run))


def test_keyless_record_on_compacted_topic(targets, differ):
    name = unique("keyless")

    def run(t):
        make_topic(t, name, {"cleanup.policy": "compact"})
        r = wire.produce(t, name, {0: wire.batch([(None, b"no key", [])])})
        keyed = wire.produce(t, name, {0: wire.batch([(b"k", b"v", [])])})
        part = r.responses[0].partition_responses[0]
        return {"keyless": wire.err(part.error_code),
                "record_errors": [e.batch_index for e in (part.record_errors or [])],
                "keyed": wire.err(keyed.responses[0].partition_responses[0].error_code)}

    differ.check("produce-keyless-compacted", *both(targets, run))


def test_compacted_topic_consumer_view(targets, differ):
    """Many updates per key and tombstones; once each broker's cleaner has run
    (Kafka's default log.cleaner.backoff.ms is 15 s), a consumer from the
    beginning sees each key once with its latest value, tombstones included."""
    name = unique("compact")
    keys, rounds = 40, 60
    records = []
    for r in range(rounds):
        for k in range(keys):
            records.append({"key": f"key-{k:02d}".encode(), "value": f"{r:03d}".encode() + b"x" * 1000,
                            "partition": 0})
    records += [{"key": b"key-03", "value": None, "partition": 0},
                {"key": b"key-07", "value": None, "partition": 0}]

    def run(t):
        make_topic(t, name, {"cleanup.policy": "compact", "segment.bytes": "1048576", "segment.ms": "200",
                             "min.cleanable.dirty.ratio": "0.01"})
        p = producer(t.bootstrap, acks="all", compression_type="gzip", linger_ms=20)
        produce_sync(p, name, records, timeout=120)
        time.sleep(0.5)  # segment.ms: the next append rolls the updates out of the active segment
        produce_sync(p, name, [{"key": b"zz-roll", "value": b"roll", "partition": 0}])
        deadline = time.monotonic() + 90
        while True:
            msgs = consume_partitions(t.bootstrap, name, [0], 1, timeout=30)
            if len(msgs) <= keys + 1 or time.monotonic() > deadline:
                break
            time.sleep(1)
        view = [(m.key().decode(), None if m.value() is None else m.value()[:3].decode()) for m in msgs]
        offsets = [m.offset() for m in msgs]
        return {"records": len(msgs), "view": view, "offsets_increasing": offsets == sorted(set(offsets)),
                "last_offset": offsets[-1]}

    differ.check("compacted-topic-consumer-view", *both(targets, run))


def test_record_set_larger_than_segment(targets, differ):
    """max.message.bytes above segment.bytes: MESSAGE_TOO_LARGE above the first,
    RECORD_LIST_TOO_LARGE between the two; message.timestamp.type changed live."""
    name = unique("segsize")

    def run(t):
        make_topic(t, name, {"segment.bytes": "1048576", "max.message.bytes": "3000000"})
        out = {}
        for label, size in [("900k", 900_000), ("1500k", 1_500_000), ("3100k", 3_100_000)]:
            r = wire.produce(t, name, {0: wire.batch([(b"k", b"x" * size, [])])})
            out[label] = wire.err(r.responses[0].partition_responses[0].error_code)
        out["set-log-append-time"] = incremental(t, TOPIC, name, [("message.timestamp.type", "LogAppendTime", SET)])
        r = wire.produce(t, name, {0: wire.batch([(b"k", b"v", [])], base_timestamp=1_000)})
        part = r.responses[0].partition_responses[0]
        out["log-append-time"] = [wire.err(part.error_code), part.log_append_time_ms > 1_000]
        return out

    differ.check("produce-larger-than-segment", *both(targets, run))
