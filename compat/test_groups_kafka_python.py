"""kafka-python 3.0.12 group consumers: two members (each in its own thread, as applications run them) share a
topic and commit after processing; a new consumer in the group resumes from the committed offsets after the
consumers restart and after the broker restarts (clean stop and kill -9)."""

from __future__ import annotations

import time

from kafka import TopicPartition

from conftest import unique
from helpers import KafkaPythonMember, create_topic, produce_sync, producer

BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "5"}
TIMEOUT = 60


Member = KafkaPythonMember


def produce(bootstrap, topic, prefix, n, partitions):
    produce_sync(producer(bootstrap), topic,
                 [{"value": f"{prefix}{i}".encode(), "partition": i % partitions} for i in range(n)])
    return {f"{prefix}{i}" for i in range(n)}


def wait_until(cond, what):
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def consume_new(bootstrap, group, topic, expected):
    m = Member(bootstrap, group, topic)
    try:
        wait_until(lambda: expected <= set(m.values), "the new records")
        time.sleep(1)  # any record before the committed offsets would show up now
        return m.values, {p: m.c.committed(TopicPartition(topic, p)) for p in range(4)}
    finally:
        m.close()


def test_group_resumes_after_consumer_and_broker_restarts(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("kpg"), unique("g")
    create_topic(b.bootstrap, topic, 4)
    m1, m2 = Member(b.bootstrap, group, topic), Member(b.bootstrap, group, topic)
    try:
        wait_until(lambda: len(m1.partitions) == 2 and len(m2.partitions) == 2, "the two members to share 4 partitions")
        first = produce(b.bootstrap, topic, "a", 200, 4)
        wait_until(lambda: first <= set(m1.values) | set(m2.values), "all records")
        assert m1.values and m2.values, "both members consumed"
        assert sorted(m1.values + m2.values) == sorted(first)
    finally:
        m1.close()
        m2.close()

    # Consumer restart: a new member resumes after the committed offsets.
    second = produce(b.bootstrap, topic, "b", 40, 4)
    got, _ = consume_new(b.bootstrap, group, topic, second)
    assert sorted(got) == sorted(second)

    # Broker restarts, clean and crash: the committed offsets come back from __consumer_offsets.
    total = 240
    for kill in (False, True):
        b.restart(kill=kill)
        more = produce(b.bootstrap, topic, f"c{kill}", 20, 4)
        total += 20
        got, committed = consume_new(b.bootstrap, group, topic, more)
        assert sorted(got) == sorted(more), f"after {'kill -9' if kill else 'restart'}"
        assert sum(committed.values()) == total
