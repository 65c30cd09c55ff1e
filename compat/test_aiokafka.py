"""aiokafka 0.14.0 (asyncio client) against strom. Each test drives its own
event loop with asyncio.run (no pytest-asyncio needed)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError

from conftest import unique
from helpers import producer as ck_producer, produce_sync, wait_partitions_writable

TIMEOUT = 30


async def create_topic(broker, partitions=1, configs=None, prefix="aio"):
    name = unique(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs or {})])
        errors = [t[1] for t in resp.topic_errors]
        assert errors == [0], resp
        deadline = time.monotonic() + TIMEOUT
        while True:
            md = await admin.describe_topics([name])
            t = md[0]
            if t["error_code"] == 0 and len(t["partitions"]) == partitions and all(
                    p["leader"] >= 0 for p in t["partitions"]):
                wait_partitions_writable(broker.bootstrap, name, partitions)
                return name
            assert time.monotonic() < deadline, f"topic not ready: {t}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


def aio_producer(broker, **kw):
    conf = dict(bootstrap_servers=broker.bootstrap, enable_idempotence=False, linger_ms=5,
                request_timeout_ms=20000)
    conf.update(kw)
    return AIOKafkaProducer(**conf)


def aio_consumer(broker, **kw):
    conf = dict(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=20000)
    conf.update(kw)
    return AIOKafkaConsumer(**conf)


async def consume_all(broker, topic, partitions, expected, timeout=TIMEOUT):
    c = aio_consumer(broker)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for recs in (await c.getmany(timeout_ms=500)).values():
                out.extend(recs)
        assert len(out) >= expected, f"consumed {len(out)} of {expected}"
        for recs in (await c.getmany(timeout_ms=300)).values():
            out.extend(recs)
        return out
    finally:
        await c.stop()


def make_records(n, partitions, base_ts):
    recs = []
    for i in range(n):
        rnd = random.Random(1000 + i)
        key = None if i % 13 == 2 else f"k{i}".encode()
        value = None if i % 29 == 4 else \
            f"v{i}|".encode() + bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 8, 800])))
        headers = [] if i % 2 else [("trace", f"{i}".encode()), ("dup", b"a"), ("dup", b"b")]
        recs.append(dict(key=key, value=value, headers=headers, partition=i % partitions,
                         timestamp_ms=base_ts + 3 * i))
    return recs


CASES = [(acks, comp) for acks in (0, 1, "all") for comp in (None, "gzip", "lz4")] + \
        [("all", "snappy"), ("all", "zstd")]


@pytest.mark.parametrize("acks,compression", CASES)
def test_roundtrip(broker, acks, compression):
    async def run():
        partitions = 2
        topic = await create_topic(broker, partitions)
        records = make_records(150, partitions, int(time.time() * 1000) - 3_600_000)
        p = aio_producer(broker, acks=acks, compression_type=compression)
        await p.start()
        try:
            futs = [await p.send(topic, value=r["value"], key=r["key"], partition=r["partition"],
                                 timestamp_ms=r["timestamp_ms"], headers=r["headers"])
                    for r in records]
            await p.flush()
            metas = [await f for f in futs]
        finally:
            await p.stop()
        if acks != 0:
            nxt = {q: 0 for q in range(partitions)}
            for r, m in zip(records, metas):
                assert m.partition == r["partition"]
                assert m.offset == nxt[m.partition]
                nxt[m.partition] += 1
        consumed = await consume_all(broker, topic, range(partitions), len(records))
        assert len(consumed) == len(records)
        for q in range(partitions):
            want = [r for r in records if r["partition"] == q]
            got = sorted((c for c in consumed if c.partition == q), key=lambda c: c.offset)
            assert [c.offset for c in got] == list(range(len(want)))
            for r, c in zip(want, got):
                assert c.key == r["key"]
                assert c.value == r["value"]
                assert [tuple(h) for h in c.headers] == r["headers"]
                assert c.timestamp == r["timestamp_ms"]
                assert c.timestamp_type == 0
    asyncio.run(run())


def test_offsets_api(broker):
    async def run():
        topic = await create_topic(broker, 1)
        base = int(time.time() * 1000) - 100_000
        p = aio_producer(broker, acks="all")
        await p.start()
        try:
            for i in range(10):
                await p.send_and_wait(topic, value=f"x{i}".encode(), partition=0,
                                      timestamp_ms=base + 1000 * i)
        finally:
            await p.stop()
        tp = TopicPartition(topic, 0)
        c = aio_consumer(broker)
        await c.start()
        try:
            assert await c.beginning_offsets([tp]) == {tp: 0}
            assert await c.end_offsets([tp]) == {tp: 10}
            res = await c.offsets_for_times({tp: base + 4500})
            assert res[tp].offset == 5 and res[tp].timestamp == base + 5000
            res = await c.offsets_for_times({tp: base + 9000})
            assert res[tp].offset == 9
            res = await c.offsets_for_times({tp: base + 9001})
            assert res[tp] is None
            c.assign([tp])
            c.seek(tp, 8)
            got = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < 2 and time.monotonic() < deadline:
                for recs in (await c.getmany(tp, timeout_ms=500)).values():
                    got.extend(recs)
            assert [(r.offset, r.value) for r in got] == [(8, b"x8"), (9, b"x9")]
            assert c.highwater(tp) == 10
        finally:
            await c.stop()
    asyncio.run(run())


def test_reads_null_header_values_from_other_clients(broker):
    async def run():
        topic = await create_topic(broker, 1)
        produce_sync(ck_producer(broker.bootstrap, acks="all"), topic, [
            {"key": None, "value": b"v", "partition": 0,
             "headers": [("null", None), ("empty", b"")]}])
        (rec,) = await consume_all(broker, topic, [0], 1)
        assert rec.key is None
        assert [tuple(h) for h in rec.headers] == [("null", None), ("empty", b"")]
    asyncio.run(run())


def test_message_too_large(broker):
    async def run():
        topic = await create_topic(broker, 1, {"max.message.bytes": "4000"})
        p = aio_producer(broker, acks=1, max_request_size=1_000_000, max_batch_size=100_000)
        await p.start()
        try:
            with pytest.raises(MessageSizeTooLargeError):
                await p.send_and_wait(topic, value=b"x" * 10_000, partition=0)
            meta = await p.send_and_wait(topic, value=b"ok", partition=0)
            assert meta.offset == 0
        finally:
            await p.stop()
    asyncio.run(run())


def test_admin_describe_configs_and_delete(broker):
    async def run():
        topic = await create_topic(broker, 2, {"retention.ms": "123456789"})
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)
        await admin.start()
        try:
            (resp,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)])
            (resource,) = resp.resources
            error_code, _, _, name, entries = resource[:5]
            assert error_code == 0 and name == topic
            values = {e[0]: e[1] for e in entries}
            assert values["retention.ms"] == "123456789"
            assert values["cleanup.policy"] == "delete"
            resp = await admin.delete_topics([topic])
            assert [e[1] for e in resp.topic_error_codes] == [0]
            deadline = time.monotonic() + 15
            while topic in await admin.list_topics():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
    asyncio.run(run())
