"""Differential scenarios through the Python clients: offsets assigned on
produce, and records read back (keys, values, headers, timestamps, leader
epochs) with confluent-kafka (librdkafka), kafka-python and aiokafka.

The producers run with idempotence off, so that what is compared is the plain
produce path, except in the confluent idempotent scenario (test_idempotence.py
and the Java reference client cover the idempotent default further). Consumers
use assign(), no group. Timestamps are set by the producer (CreateTime), so
they are the same on both brokers.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import wire
from obs import both

PARTITIONS = 3
TIMEOUT = 30


def record_set(t0: int) -> list[dict]:
    """The same varied records for every client: keyed, keyless, empty,
    tombstone, headers (repeated, empty, null), large, old and slightly
    future timestamps; explicit partitions and partitioner-chosen ones."""
    recs = [
        dict(key=b"k0", value=b"v0", headers=[("h1", b"a"), ("h2", b"")], partition=0, ts=t0),
        dict(key=None, value=b"no-key", headers=[], partition=1, ts=t0 + 1),
        dict(key=b"", value=b"", headers=[], partition=2, ts=t0 + 2),
        dict(key=b"tomb", value=None, headers=[], partition=0, ts=t0 + 3),
        dict(key=b"dup", value=b"x", headers=[("h", b"1"), ("h", b"2"), ("e", b"")], partition=1, ts=t0 + 4),
        dict(key=b"big", value=bytes(range(256)) * 400, headers=[], partition=2, ts=t0 + 5),
        dict(key=b"old", value=b"old-ts", headers=[], partition=0, ts=t0 - 3_600_000),
        dict(key=b"soon", value=b"future-ts", headers=[], partition=1, ts=t0 + 60_000),
        dict(key="unicodé".encode(), value="välue ✓".encode(), headers=[("ü", "ß".encode())],
             partition=2, ts=t0 + 6),
    ]
    for i in range(12):
        recs.append(dict(key=f"key-{i}".encode(), value=f"value-{i}".encode() * (i + 1),
                         headers=[("i", str(i).encode())] if i % 3 == 0 else [],
                         partition=i % PARTITIONS, ts=t0 + 100 + i))
    return recs


def make_topic(t, name, partitions=PARTITIONS, configs=None):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions, configs=configs or {})])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)


def rec_obs(partition, offset, key, value, headers, ts_type, ts, leader_epoch="n/a"):
    return {"partition": partition, "offset": offset, "key": key, "value": value,
            "headers": [[k, v] for k, v in (headers or [])], "timestamp_type": ts_type,
            "timestamp": ts, "leader_epoch": leader_epoch}


def by_position(recs):
    return sorted(recs, key=lambda r: (r["partition"], r["offset"]))


# ------------------------------------------------------------ confluent
def ck_produce(t, topic, recs, **conf):
    p = Producer({"bootstrap.servers": t.bootstrap, "enable.idempotence": False, "linger.ms": 5,
                  **conf})
    out = [None] * len(recs)
    for i, r in enumerate(recs):
        def cb(err, msg, i=i):
            out[i] = {"error": str(err) if err else None,
                      "partition": msg.partition(), "offset": msg.offset(),
                      "timestamp": list(msg.timestamp())}
        p.produce(topic, key=r["key"], value=r["value"], headers=r["headers"] or None,
                  partition=r["partition"], timestamp=r["ts"], on_delivery=cb)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    return out


def ck_consume(t, topic, partitions, expected, **conf):
    c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": "unused-differential",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "enable.partition.eof": False, **conf})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert not m.error(), m.error()
                got.append(m)
        for m in c.consume(num_messages=500, timeout=0.3):
            if not m.error():
                got.append(m)
        return by_position([rec_obs(m.partition(), m.offset(), m.key(), m.value(),
                                    m.headers(), m.timestamp()[0], m.timestamp()[1],
                                    m.leader_epoch()) for m in got])
    finally:
        c.close()


def test_confluent_produce_and_read_back(targets, differ, topic):
    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    def run(t):
        make_topic(t, topic)
        delivered = ck_produce(t, topic, recs)
        return {"delivered": delivered, "read_back": ck_consume(t, topic, PARTITIONS, len(recs))}

    differ.check("clients-confluent-produce-read", *both(targets, run))


def test_confluent_idempotent_produce_and_read_back(targets, differ, topic):
    """librdkafka's idempotent producer (InitProducerId, sequenced batches, acks=all)."""
    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    def run(t):
        make_topic(t, topic)
        delivered = ck_produce(t, topic, recs, **{"enable.idempotence": True, "acks": "all"})
        return {"delivered": delivered, "read_back": ck_consume(t, topic, PARTITIONS, len(recs))}

    differ.check("clients-confluent-idempotent-produce-read", *both(targets, run))


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_confluent_compression(targets, differ, topic, codec):
    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    def run(t):
        make_topic(t, topic)
        delivered = ck_produce(t, topic, recs, **{"compression.type": codec, "linger.ms": 50})
        return {"delivered": delivered, "read_back": ck_consume(t, topic, PARTITIONS, len(recs))}

    differ.check(f"clients-confluent-compression-{codec}", *both(targets, run))


def test_confluent_log_append_time(targets, differ, topic):
    """message.timestamp.type=LogAppendTime: the broker stamps the records."""
    t0 = int(time.time() * 1000) - 3_600_000
    recs = record_set(t0)[:6]

    def run(t):
        make_topic(t, topic, configs={"message.timestamp.type": "LogAppendTime"})
        before = int(time.time() * 1000)
        delivered = ck_produce(t, topic, recs)
        read = ck_consume(t, topic, PARTITIONS, len(recs))
        after = int(time.time() * 1000)

        def norm(ts):
            return "<broker time>" if before - 5 <= ts <= after + 5 else ts

        for d in delivered:
            d["timestamp"] = [d["timestamp"][0], norm(d["timestamp"][1])]
        for r in read:
            r["timestamp"] = norm(r["timestamp"])
        return {"delivered": delivered, "read_back": read}

    differ.check("clients-confluent-log-append-time", *both(targets, run))


# --------------------------------------------------------- kafka-python
def test_kafka_python_produce_and_read_back(targets, differ, topic):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    def run(t):
        make_topic(t, topic)
        p = KafkaProducer(bootstrap_servers=t.bootstrap, enable_idempotence=False, linger_ms=5,
                          acks=-1, request_timeout_ms=20000)
        futs = [p.send(topic, key=r["key"], value=r["value"], headers=r["headers"],
                       partition=r["partition"], timestamp_ms=r["ts"]) for r in recs]
        p.flush(TIMEOUT)
        delivered = []
        for f in futs:
            md = f.get(TIMEOUT)
            delivered.append({"partition": md.partition, "offset": md.offset, "timestamp": md.timestamp})
        p.close()
        c = KafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, enable_auto_commit=False,
                          auto_offset_reset="earliest", request_timeout_ms=20000)
        try:
            tps = [KTP(topic, i) for i in range(PARTITIONS)]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            got = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < len(recs) and time.monotonic() < deadline:
                for batch in c.poll(timeout_ms=500).values():
                    got.extend(batch)
            for batch in c.poll(timeout_ms=300).values():
                got.extend(batch)
        finally:
            c.close()
        read = by_position([rec_obs(m.partition, m.offset, m.key, m.value, m.headers,
                                    m.timestamp_type, m.timestamp, m.leader_epoch) for m in got])
        return {"delivered": delivered, "read_back": read}

    differ.check("clients-kafka-python-produce-read", *both(targets, run))


# ------------------------------------------------------------- aiokafka
def test_aiokafka_produce_and_read_back(targets, differ, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATP

    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    async def go(t):
        p = AIOKafkaProducer(bootstrap_servers=t.bootstrap, enable_idempotence=False, linger_ms=5,
                             acks="all", request_timeout_ms=20000)
        await p.start()
        try:
            futs = [await p.send(topic, key=r["key"], value=r["value"], headers=r["headers"],
                                 partition=r["partition"], timestamp_ms=r["ts"]) for r in recs]
            delivered = []
            for f in futs:
                md = await f
                # Not md.timestamp: for CreateTime aiokafka derives it on the client
                # from how records happened to be batched (timing-dependent); the
                # read-back timestamps below are the broker-observable ones.
                delivered.append({"partition": md.partition, "offset": md.offset})
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=20000)
        await c.start()
        try:
            tps = [ATP(topic, i) for i in range(PARTITIONS)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            got = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < len(recs) and time.monotonic() < deadline:
                for batch in (await c.getmany(timeout_ms=500)).values():
                    got.extend(batch)
            for batch in (await c.getmany(timeout_ms=300)).values():
                got.extend(batch)
        finally:
            await c.stop()
        read = by_position([rec_obs(m.partition, m.offset, m.key, m.value, list(m.headers),
                                    m.timestamp_type, m.timestamp) for m in got])
        return {"delivered": delivered, "read_back": read}

    def run(t):
        make_topic(t, topic)
        return asyncio.run(go(t))

    differ.check("clients-aiokafka-produce-read", *both(targets, run))


# ---------------------------------------------------- cross-client read
def test_cross_client_read(targets, differ, topic):
    """Produced by librdkafka (lz4, batched), read by kafka-python."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    t0 = int(time.time() * 1000) - 10_000
    recs = record_set(t0)

    def run(t):
        make_topic(t, topic)
        ck_produce(t, topic, recs, **{"compression.type": "lz4", "linger.ms": 50})
        c = KafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, enable_auto_commit=False,
                          auto_offset_reset="earliest", request_timeout_ms=20000)
        try:
            tps = [KTP(topic, i) for i in range(PARTITIONS)]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            got = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < len(recs) and time.monotonic() < deadline:
                for batch in c.poll(timeout_ms=500).values():
                    got.extend(batch)
        finally:
            c.close()
        return by_position([rec_obs(m.partition, m.offset, m.key, m.value, m.headers,
                                    m.timestamp_type, m.timestamp, m.leader_epoch) for m in got])

    differ.check("clients-cross-confluent-to-kafka-python", *both(targets, run))
