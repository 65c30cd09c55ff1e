"""Differential scenarios on brokers started with auto.create.topics.enable=false
(a second Kafka and a second Strom, for this module only)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

import conftest
import wire
from conftest import unique
from obs import both, metadata_obs


@pytest.fixture(scope="module")
def noauto(tmp_path_factory):
    made = []
    try:
        for name in ("kafka", "strom"):
            made.append(conftest._make(name, tmp_path_factory, {"auto.create.topics.enable": "false"}))
        yield tuple(made)
    finally:
        for t in made:
            t.stop()
            conftest._ACTIVE.remove(t)


def test_metadata_unknown_topic_auto_create_off(noauto, differ):
    """allow_auto_topic_creation=true, but the broker forbids it."""
    name = unique("na")

    def run(t):
        first = metadata_obs(wire.metadata(t, [name], allow_auto_create=True), t)["topics"]
        time.sleep(0.5)
        second = metadata_obs(wire.metadata(t, [name], allow_auto_create=True), t)["topics"]
        return {"first": first, "second": second}

    differ.check("auto-create-off-metadata", *both(noauto, run))


def test_produce_unknown_topic_auto_create_off(noauto, differ):
    """librdkafka producing to a topic that does not exist and will not be created."""
    name = unique("na")

    def run(t):
        p = Producer({"bootstrap.servers": t.bootstrap, "enable.idempotence": False,
                      "message.timeout.ms": 4000, "topic.metadata.refresh.interval.ms": 500})
        res = []
        p.produce(name, value=b"v", on_delivery=lambda e, m: res.append(e.name() if e else None))
        p.flush(15)
        raw = wire.produce(t, name, {0: wire.batch([(b"k", b"v", ())])})
        part = raw.responses[0].partition_responses[0]
        return {"confluent_delivery": res, "raw_produce": wire.err(part.error_code),
                "exists_after": wire.err(wire.metadata(t, [name]).topics[0].error_code)}

    differ.check("auto-create-off-produce", *both(noauto, run))


def test_explicit_create_still_works(noauto, differ):
    name = unique("na")

    def run(t):
        r = wire.create_topics(t, [dict(name=name, num_partitions=2)])
        wire.wait_topic(t, name, 2)
        return {"error_code": wire.err(r.topics[0].error_code),
                "metadata": metadata_obs(wire.metadata(t, [name], allow_auto_create=True), t)["topics"]}

    differ.check("auto-create-off-explicit-create", *both(noauto, run))
