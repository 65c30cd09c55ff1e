"""Log compaction (cleanup.policy=compact) with confluent-kafka: many updates
per key and tombstones are compacted by the broker's cleaner; a consumer from
the beginning reads exactly the latest value per key plus unexpired
tombstones, in offset order, with headers and timestamps intact; the same
with gzip and zstd batches; tombstones go after delete.retention.ms; keyless
records are refused; kill -9 in the middle of a cleaning pass recovers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from conftest import unique
from helpers import consume_partitions, create_topic, producer, produce_sync

BROKER_OVERRIDES = {"log.cleaner.backoff.ms": "100"}
KEYS = 50
ROUNDS = 40
SEGMENT = 1048576  # Kafka 4's minimum segment.bytes


def compact_topic(b, **extra):
    topic = unique("compact")
    config = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT), "segment.ms": "300",
              "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "600000"}
    config.update(extra)
    create_topic(b.bootstrap, topic, config=config)
    return topic


def write(b, topic, compression="none", tombstones=(), value_size=800):
    """ROUNDS updates of KEYS keys (values big enough to fill a few segments), then tombstones; returns the
    expected final state {key: (value or None, headers)}."""
    p = producer(b.bootstrap, acks="all", compression_type=compression, linger_ms=20)
    latest = {}
    records = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"key-{k:03d}".encode()
            value = f"{r:04d}-".encode() + bytes([65 + (k + r) % 26]) * value_size
            headers = [("round", str(r).encode()), ("k", key)]
            records.append({"key": key, "value": value, "headers": headers, "partition": 0})
            latest[key] = (value, headers)
    for k in tombstones:
        key = f"key-{k:03d}".encode()
        records.append({"key": key, "value": None, "partition": 0})
        latest[key] = (None, None)
    produce_sync(p, topic, records, timeout=120)
    # segment.ms has passed by the next append: it rolls the updates out of the active segment.
    time.sleep(0.5)
    produce_sync(p, topic, [{"key": b"zz-roll", "value": b"roll", "partition": 0}])
    return latest, len(records)


def read_all(b, topic, expected_min, timeout=30):
    return consume_partitions(b.bootstrap, topic, [0], expected_min, timeout=timeout)


def wait_compacted(b, topic, want, timeout=60):
    """Read from the beginning until the log holds `want` records (the cleaner has run)."""
    deadline = time.monotonic() + timeout
    while True:
        msgs = read_all(b, topic, 1)
        if len(msgs) <= want or time.monotonic() > deadline:
            return msgs
        time.sleep(0.3)


def check_state(msgs, latest, produced):
    offsets = [m.offset() for m in msgs]
    assert offsets == sorted(set(offsets)), "offset order, no duplicates"
    assert offsets[-1] == produced  # the roll record, last
    by_key = {}
    for m in msgs[:-1]:
        assert m.key() not in by_key, f"{m.key()} appears twice after compaction"
        by_key[m.key()] = m
    assert set(by_key) == set(latest)
    for key, (value, headers) in latest.items():
        m = by_key[key]
        assert m.value() == value, key
        if value is not None:
            assert m.headers() == headers
            assert m.timestamp()[1] > 0


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_latest_value_per_key_plus_tombstones(broker, compression):
    topic = compact_topic(broker)
    latest, produced = write(broker, topic, compression, tombstones=(3, 7, 11))
    msgs = wait_compacted(broker, topic, KEYS + 1)
    check_state(msgs, latest, produced)
    # Tombstones within delete.retention.ms are still there for a consumer from the beginning.
    tomb = [m for m in msgs if m.value() is None]
    assert sorted(m.key() for m in tomb) == [b"key-003", b"key-007", b"key-011"]


def test_tombstones_disappear_after_delete_retention(broker):
    topic = compact_topic(broker, **{"delete.retention.ms": "2000"})
    latest, produced = write(broker, topic, tombstones=(1, 2))
    msgs = wait_compacted(broker, topic, KEYS + 1)
    check_state(msgs, latest, produced)
    # With no new writes, the expired delete horizon alone makes the cleaner run again.
    msgs = wait_compacted(broker, topic, KEYS - 2 + 1, timeout=30)
    assert len(msgs) == KEYS - 2 + 1
    assert not [m for m in msgs if m.value() is None]
    del latest[b"key-001"], latest[b"key-002"]
    check_state(msgs, latest, produced)


def test_keyless_records_are_refused(broker):
    topic = compact_topic(broker)
    p = producer(broker.bootstrap, acks="all")
    errors = []
    p.produce(topic, value=b"no key", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD, errors
    produce_sync(p, topic, [{"key": b"k", "value": b"v", "partition": 0}])


def test_kill9_during_cleaning_recovers(make_broker):
    # A slow cleaner (100 KB/s) so that the kill lands in the middle of a pass.
    b = make_broker({"log.cleaner.backoff.ms": "100", "log.cleaner.io.max.bytes.per.second": "100000"})
    topic = compact_topic(b)
    latest, produced = write(b, topic, compression="gzip", tombstones=(5,))
    part_dir = Path(b.data_dir) / f"{topic}-0"
    deadline = time.monotonic() + 60
    while not any(n.endswith(".cleaned") for n in os.listdir(part_dir)):
        assert time.monotonic() < deadline, "the cleaner never started"
        time.sleep(0.05)
    b.kill9()
    b.overrides.pop("log.cleaner.io.max.bytes.per.second")
    # First without the cleaner, so that only recovery has touched the directory when it is listed (a new pass
    # would make .cleaned files of its own at once).
    b.overrides["log.cleaner.enable"] = "false"
    b.start()
    leftovers = [n for n in os.listdir(part_dir) if n.endswith((".cleaned", ".swap", ".deleted"))]
    assert not leftovers, leftovers
    b.stop()
    b.overrides.pop("log.cleaner.enable")
    b.start()
    # Whatever the kill interrupted, the log reads consistently, and the cleaner then finishes the job.
    msgs = wait_compacted(b, topic, KEYS + 1)
    check_state(msgs, latest, produced)
