"""aiokafka 0.14 group consumers: consume with commits, then resume from the committed offsets after a consumer
restart and after a broker restart (kill -9)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from conftest import unique
from helpers import create_topic, produce_sync, producer

BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "5"}
TIMEOUT = 60


def produce(bootstrap, topic, prefix, n, partitions):
    produce_sync(producer(bootstrap), topic,
                 [{"value": f"{prefix}{i}".encode(), "partition": i % partitions} for i in range(n)])
    return {f"{prefix}{i}" for i in range(n)}


async def consume_group(bootstrap, group, topic, members: int, want: int) -> list[str]:
    consumers = [AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                                  enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=1000,
                                  request_timeout_ms=30000)
                 for _ in range(members)]
    for c in consumers:
        await c.start()
    got: list[str] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(got) < want and time.monotonic() < deadline:
            for c in consumers:
                batch = await c.getmany(timeout_ms=200)
                for records in batch.values():
                    got.extend(r.value.decode() for r in records)
                if batch:
                    await c.commit()
        for c in consumers:
            for records in (await c.getmany(timeout_ms=500)).values():
                got.extend(r.value.decode() for r in records)
        return got
    finally:
        for c in consumers:
            await c.stop()


def test_group_resumes_after_consumer_and_broker_restarts(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("aiog"), unique("g")
    create_topic(b.bootstrap, topic, 4)
    first = produce(b.bootstrap, topic, "a", 200, 4)
    got = asyncio.run(consume_group(b.bootstrap, group, topic, 2, len(first)))
    assert sorted(got) == sorted(first)

    second = produce(b.bootstrap, topic, "b", 40, 4)
    got = asyncio.run(consume_group(b.bootstrap, group, topic, 1, len(second)))
    assert sorted(got) == sorted(second), "a restarted consumer resumes from the committed offsets"

    b.restart(kill=True)
    third = produce(b.bootstrap, topic, "c", 20, 4)
    got = asyncio.run(consume_group(b.bootstrap, group, topic, 1, len(third)))
    assert sorted(got) == sorted(third), "the committed offsets survive a broker kill -9"
