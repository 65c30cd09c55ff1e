"""Differential scenarios for the idempotent producer through the raw protocol:
InitProducerId, a batch resent (same and new connection) answered with its
original offset, a sequence gap, an epoch bump and a fenced older epoch, a
batch without a sequence, a retry that fell out of the 5-batch window, and a
producer the broker has no state for. Producer ids differ between the brokers,
so only whether one was given is compared.
"""

from __future__ import annotations

import time

import kafkawire
import wire
from obs import both


def make_topic(t, name):
    r = wire.create_topics(t, [dict(name=name, num_partitions=1)])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, 1)


def init_producer_id(t):
    """InitProducerId, retried while the broker answers COORDINATOR_LOAD_IN_PROGRESS (14) as clients do: a fresh
    Kafka fetches its first block of producer ids from the controller asynchronously."""
    deadline = time.monotonic() + 30
    with kafkawire.connect(t.port) as s:
        for corr in range(1, 10_000):
            err, pid, epoch = kafkawire.init_producer_id(s, corr)
            if err != 14 or time.monotonic() > deadline:
                return err, pid, epoch
            time.sleep(0.1)
    raise AssertionError("unreachable")


def answer(t, topic, batch):
    p = wire.produce(t, topic, {0: batch}).responses[0].partition_responses[0]
    return {"error_code": wire.err(p.error_code), "base_offset": p.base_offset,
            "log_append_time_ms": p.log_append_time_ms, "log_start_offset": p.log_start_offset}


def test_idempotent_produce_sequences_and_epochs(targets, differ, topic):
    ts = (int(time.time()) - 60) * 1000

    def run(t):
        make_topic(t, topic)
        err, pid, epoch = init_producer_id(t)
        out = {"init": {"error_code": wire.err(err), "epoch": epoch, "has_id": pid >= 0}}

        def b(ep, seq, n=1):
            return kafkawire.idempotent_batch(pid, ep, seq, [b"v"] * n, ts)

        out["first"] = answer(t, topic, b(0, 0, 3))
        out["resent"] = answer(t, topic, b(0, 0, 3))
        out["next"] = answer(t, topic, b(0, 3, 2))
        out["resent-older"] = answer(t, topic, b(0, 0, 3))
        out["gap"] = answer(t, topic, b(0, 9))
        out["no-sequence"] = answer(t, topic, b(0, -1))
        for i in range(5):
            out[f"fill-{i}"] = answer(t, topic, b(0, 5 + i))
        out["resent-outside-window"] = answer(t, topic, b(0, 0, 3))
        out["bump-nonzero-sequence"] = answer(t, topic, b(1, 5))
        out["bump"] = answer(t, topic, b(1, 0))
        out["old-epoch"] = answer(t, topic, b(0, 10))
        out["old-epoch-duplicate"] = answer(t, topic, b(0, 9))
        out["after-bump"] = answer(t, topic, b(1, 1, 2))
        out["unknown-producer-any-sequence"] = answer(
            t, topic, kafkawire.idempotent_batch(pid + 1000, 0, 17, [b"x"], ts))
        return out

    differ.check("idempotent-produce", *both(targets, run))


def test_init_producer_id_requests(targets, differ):
    def run(t):
        out = {}
        init_producer_id(t)  # wait until the broker hands out ids
        with kafkawire.connect(t.port) as s:
            for v in range(0, 6):
                err, pid, epoch = kafkawire.init_producer_id(s, 10 + v, version=v)
                out[f"v{v}"] = {"error_code": wire.err(err), "epoch": epoch, "has_id": pid >= 0}
            err, pid, epoch = kafkawire.init_producer_id(s, 20, producer_id=5, producer_epoch=-1)
            out["id-without-epoch"] = {"error_code": wire.err(err), "producer_id": pid, "epoch": epoch}
            err, pid, epoch = kafkawire.init_producer_id(s, 21, transactional_id="")
            out["empty-transactional-id"] = {"error_code": wire.err(err), "producer_id": pid, "epoch": epoch}
        return out

    differ.check("init-producer-id", *both(targets, run))
