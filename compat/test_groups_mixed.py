"""Mixed consumer groups (Kafka 4): a classic-protocol consumer (kafka-python: JoinGroup/SyncGroup/Heartbeat) joins a
group that uses the KIP-848 consumer protocol (confluent-kafka with group.protocol=consumer). The coordinator assigns
both from the group's server-side assignment: they share the partitions, every record is consumed once with commits
after processing, and when the classic member leaves its partitions go back to the other member."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from conftest import unique
from helpers import KafkaPythonMember, create_topic, produce_sync, producer

BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "3"}
TIMEOUT = 60


def ClassicMember(bootstrap, group, topic):
    return KafkaPythonMember(bootstrap, group, topic, poll_ms=200, heartbeat_ms=500)


def wait_until(cond, what, step=None):
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if step:
            step()
        else:
            time.sleep(0.05)


def test_classic_member_joins_consumer_protocol_group(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("mix"), unique("g")
    create_topic(b.bootstrap, topic, 4)
    modern = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "group.protocol": "consumer",
                       "auto.offset.reset": "earliest", "enable.auto.commit": False})
    modern.subscribe([topic])
    modern_values: list[str] = []

    def step():
        m = modern.poll(0.05)
        if m is not None and not m.error():
            modern_values.append(m.value().decode())
            modern.commit(message=m, asynchronous=False)

    classic = None
    try:
        wait_until(lambda: len(modern.assignment()) == 4, "the consumer-protocol member to own all partitions", step)
        classic = ClassicMember(b.bootstrap, group, topic)
        wait_until(lambda: len(modern.assignment()) == 2 and len(classic.partitions) == 2,
                   "the two members to share the partitions", step)
        assert set(p.partition for p in modern.assignment()).isdisjoint(classic.partitions)
        values = {f"v{i}" for i in range(200)}
        produce_sync(producer(b.bootstrap), topic,
                     [{"value": f"v{i}".encode(), "partition": i % 4} for i in range(200)])
        wait_until(lambda: values <= set(modern_values) | set(classic.values), "all records", step)
        assert modern_values and classic.values, "both members consumed"
        assert sorted(modern_values + classic.values) == sorted(values), "each record once"

        # The classic member leaves (LeaveGroup): the consumer-protocol member gets everything back.
        classic.close()
        classic = None
        wait_until(lambda: len(modern.assignment()) == 4, "the partitions to come back", step)
        committed = modern.committed([TopicPartition(topic, p) for p in range(4)], timeout=30)
        assert [tp.offset for tp in committed] == [50, 50, 50, 50], "the classic member's commits count too"
    finally:
        if classic is not None:
            classic.close()
        modern.close()


def test_consumer_protocol_member_upgrades_classic_group(make_broker):
    """Kafka's online upgrade (group.consumer.migration.policy=bidirectional, the default): a consumer-protocol
    member joins a classic group that has a member, the group becomes a consumer group, and the two share the
    partitions; when the new member leaves, the classic member gets them all back."""
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("mix"), unique("g")
    create_topic(b.bootstrap, topic, 4)
    classic = ClassicMember(b.bootstrap, group, topic)
    modern = None
    modern_values: list[str] = []

    def step():
        if modern is None:
            time.sleep(0.05)
            return
        m = modern.poll(0.05)
        if m is not None and not m.error():
            modern_values.append(m.value().decode())
            modern.commit(message=m, asynchronous=False)

    try:
        wait_until(lambda: len(classic.partitions) == 4, "the classic member to own all partitions")
        modern = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "group.protocol": "consumer",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        modern.subscribe([topic])
        wait_until(lambda: len(modern.assignment()) == 2 and len(classic.partitions) == 2,
                   "the two members to share the partitions", step)
        values = {f"v{i}" for i in range(100)}
        produce_sync(producer(b.bootstrap), topic,
                     [{"value": f"v{i}".encode(), "partition": i % 4} for i in range(100)])
        wait_until(lambda: values <= set(modern_values) | set(classic.values), "all records", step)
        assert sorted(modern_values + classic.values) == sorted(values), "each record once"
        modern.close()
        modern = None
        wait_until(lambda: len(classic.partitions) == 4, "the partitions to go back to the classic member")
    finally:
        if modern is not None:
            modern.close()
        classic.close()
