"""Partition counts per request are bounded as in Apache Kafka's controller: a CreateTopics asking for more than
10,000 partitions in total is refused with POLICY_VIOLATION ("Excessively large number of partitions per request."),
with validate_only too, and nothing is created. A CreatePartitions adding more than that is refused at the topic that
crosses the bound with UNKNOWN_SERVER_ERROR, as Kafka answers it (Strom also says why), and that topic is not grown."""

import os

from confluent_kafka.admin import NewPartitions, NewTopic
from confluent_kafka import KafkaException

from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic

from conftest import unique
from helpers import admin, create_topic

POLICY_VIOLATION = 44
UNKNOWN_SERVER_ERROR = -1


def _error(fut):
    try:
        fut.result(30)
    except KafkaException as e:
        return e.args[0]
    return None


def _partition_dirs(broker, topic):
    return [d for d in os.listdir(broker.data_dir) if d.startswith(topic + "-")]


def test_create_topics_over_the_limit_is_refused_whole(broker):
    a = admin(broker.bootstrap)
    big, small = unique("big"), unique("small")
    for validate_only in (True, False):
        futs = a.create_topics([NewTopic(big, num_partitions=9_999), NewTopic(small, num_partitions=2)],
                               validate_only=validate_only, request_timeout=30)
        for name in (big, small):
            err = _error(futs[name])
            assert err is not None and err.code() == POLICY_VIOLATION, err
            assert "Excessively large number of partitions per request" in err.str()
    # 2^31-1 partitions in one topic (librdkafka refuses to send more than 100,000; kafka-python sends it):
    # refused at once, with nothing allocated for what it claims.
    huge = unique("huge")
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        resp = kp.create_topics([KpNewTopic(huge, num_partitions=2**31 - 1, replication_factor=1)],
                                raise_errors=False)
    finally:
        kp.close()
    assert [(t["name"], t["error_code"]) for t in resp["topics"]] == [(huge, POLICY_VIOLATION)], resp
    md = a.list_topics(timeout=10)
    for name in (big, small, huge):
        assert name not in md.topics
        assert _partition_dirs(broker, name) == []


def test_create_partitions_over_the_limit_is_refused(broker):
    name = unique("grow")
    a = create_topic(broker.bootstrap, name, partitions=1)
    for validate_only in (True, False):
        err = _error(a.create_partitions([NewPartitions(name, 10_002)], validate_only=validate_only,
                                         request_timeout=30)[name])
        assert err is not None and err.code() == UNKNOWN_SERVER_ERROR, err
    err = _error(a.create_partitions([NewPartitions(name, 100_000)], request_timeout=30)[name])
    assert err is not None and err.code() == UNKNOWN_SERVER_ERROR, err
    assert len(a.list_topics(topic=name, timeout=10).topics[name].partitions) == 1
    assert len(_partition_dirs(broker, name)) == 1
    # Within the limit, growing still works.
    assert _error(a.create_partitions([NewPartitions(name, 3)], request_timeout=30)[name]) is None


def test_deleting_a_topic_of_many_partitions_removes_every_directory(broker):
    import time

    name = unique("many")
    a = create_topic(broker.bootstrap, name, partitions=200)
    assert len(_partition_dirs(broker, name)) == 200
    a.delete_topics([name], request_timeout=30)[name].result(30)
    deadline = time.monotonic() + 60
    while _partition_dirs(broker, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _partition_dirs(broker, name) == []

