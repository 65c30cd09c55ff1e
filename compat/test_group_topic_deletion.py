"""Deleting a topic deletes every group's committed offsets for it (Kafka's group coordinator writes offset
tombstones when topics are deleted): a topic re-created with the same name is consumed from its start, and the
group lists no offsets for the deleted topic, also after a restart."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

from conftest import unique
from helpers import admin, create_topic, produce_sync, producer

TIMEOUT = 30


def group_offsets(bootstrap: str, group: str) -> dict:
    """Every committed offset of the group, as OffsetFetch for all partitions answers it."""
    a = admin(bootstrap)
    fut = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT)
    res = fut[group].result(TIMEOUT)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def delete_topic(bootstrap: str, name: str):
    a = admin(bootstrap)
    a.delete_topics([name], operation_timeout=TIMEOUT)[name].result(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while name in a.list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.1)


def test_deleted_topic_offsets_are_dropped(make_broker):
    broker = make_broker({"offsets.topic.num.partitions": "3"})
    topic, other, group = unique("deleted"), unique("kept"), unique("g")
    create_topic(broker.bootstrap, topic)
    create_topic(broker.bootstrap, other)
    p = producer(broker.bootstrap, acks="all")
    produce_sync(p, topic, [{"value": b"old-%d" % i} for i in range(300)])

    # The group commits 300 records of the topic, and one offset of a topic that stays.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 300), TopicPartition(other, 0, 0)], asynchronous=False)
    finally:
        c.close()
    assert group_offsets(broker.bootstrap, group) == {(topic, 0): 300, (other, 0): 0}

    delete_topic(broker.bootstrap, topic)
    create_topic(broker.bootstrap, topic)
    produce_sync(p, topic, [{"value": b"new-%d" % i} for i in range(500)])
    del p  # no producer reconnecting through the restart below

    assert group_offsets(broker.bootstrap, group) == {(other, 0): 0}
    # Durable: the tombstones are replayed after a restart, the offset does not come back.
    broker.restart()
    assert group_offsets(broker.bootstrap, group) == {(other, 0): 0}

    # A member of the group starts from the beginning of the new topic and reads all of it.
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    got = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 500 and time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(m)
    finally:
        c.close()
    assert len(got) == 500, f"read {len(got)} of 500 records of the re-created topic"
    assert got[0].offset() == 0 and got[0].value() == b"new-0"
