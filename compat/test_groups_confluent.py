"""Consumer groups with confluent-kafka (librdkafka): fair share, failover after a member dies without leaving,
at-least-once with commits after processing, cooperative-sticky, static membership, the KIP-848 consumer
protocol, and committed offsets surviving a broker kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import unique
from helpers import create_topic, produce_sync, producer

BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "500", "offsets.topic.num.partitions": "10"}
MEMBER = Path(__file__).resolve().parent / "group_member.py"
SESSION_MS = 6000


def group_consumer(bootstrap: str, group: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base)


class Tracked:
    """An in-process consumer that records its assignment changes and what it consumed."""

    def __init__(self, consumer: Consumer, topic: str, commit: bool = True):
        self.c = consumer
        self.commit = commit
        self.assignment: set[int] = set()
        self.events: list[tuple[str, list[int], float]] = []
        self.values: list[str] = []
        consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, c, ps):
        parts = sorted(p.partition for p in ps)
        self.events.append(("assigned", parts, time.monotonic()))
        self.assignment |= set(parts)

    def _on_revoke(self, c, ps):
        parts = sorted(p.partition for p in ps)
        self.events.append(("revoked", parts, time.monotonic()))
        self.assignment -= set(parts)

    def poll(self, timeout=0.05):
        m = self.c.poll(timeout)
        if m is None or m.error():
            return
        self.values.append(m.value().decode())
        if self.commit:
            self.c.commit(message=m, asynchronous=False)


class Member:
    """A group member in a subprocess (group_member.py), killable with SIGKILL."""

    def __init__(self, bootstrap: str, group: str, topic: str, **conf):
        cfg = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
        }
        cfg.update(conf)
        self.proc = subprocess.Popen([sys.executable, str(MEMBER), json.dumps(cfg), topic],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    @property
    def assignment(self) -> set[int]:
        a: set[int] = set()
        for e in list(self.events):
            if e["event"] == "assigned":
                a |= set(e["partitions"])
            elif e["event"] == "revoked":
                a -= set(e["partitions"])
        return a

    def values(self) -> list[str]:
        return [e["value"] for e in list(self.events) if e["event"] == "record"]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.kill()


def wait_until(cond, timeout, step=None, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        else:
            time.sleep(0.05)
        if cond():
            return time.monotonic()
    raise AssertionError(f"timed out waiting for {what}")


def produce_values(bootstrap, topic, n, partitions):
    p = producer(bootstrap)
    produce_sync(p, topic, [{"value": f"v{i}".encode(), "partition": i % partitions} for i in range(n)])
    return {f"v{i}" for i in range(n)}


def test_fair_share_failover_and_nothing_skipped(broker):
    topic, group = unique("gt"), unique("g")
    create_topic(broker.bootstrap, topic, 6)
    expected = produce_values(broker.bootstrap, topic, 600, 6)
    # The member that will die processes slowly and commits after each record, so it dies mid-way.
    dying = Member(broker.bootstrap, group, topic, _commit=True, _delay=0.02)
    c1 = Tracked(group_consumer(broker.bootstrap, group), topic)
    c2 = Tracked(group_consumer(broker.bootstrap, group), topic)
    try:
        def step():
            c1.poll()
            c2.poll()

        wait_until(lambda: len(c1.assignment) == 2 and len(c2.assignment) == 2 and len(dying.assignment) == 2,
                   60, step, "a fair share of 2 partitions each")
        assert c1.assignment | c2.assignment | dying.assignment == set(range(6))
        wait_until(lambda: len(dying.values()) >= 20, 30, step, "the dying member to process records")
        dying.kill()
        killed = time.monotonic()
        done = wait_until(lambda: len(c1.assignment) + len(c2.assignment) == 6, 60, step,
                          "the survivors to take over all partitions")
        took = done - killed
        print(f"\nmember death to completed rebalance: {took:.2f}s (session.timeout.ms={SESSION_MS})")
        assert took >= SESSION_MS / 1000 * 0.8, "partitions moved before the session could have expired"
        assert took < SESSION_MS / 1000 + 15
        assert sorted([len(c1.assignment), len(c2.assignment)]) == [3, 3]
        wait_until(lambda: expected <= set(c1.values) | set(c2.values) | set(dying.values()), 60, step,
                   "every record to be consumed")
        # Commits after processing: nothing skipped, and the only repeats are the dying member's uncommitted tail.
        seen = c1.values + c2.values + dying.values()
        assert set(seen) == expected
        assert len(seen) - len(expected) <= 2
    finally:
        dying.stop()
        c1.c.close()
        c2.c.close()


def test_cooperative_sticky_keeps_unaffected_partitions(broker):
    topic, group = unique("gt"), unique("g")
    create_topic(broker.bootstrap, topic, 6)
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    c1 = Tracked(group_consumer(broker.bootstrap, group, **conf), topic, commit=False)
    try:
        wait_until(lambda: len(c1.assignment) == 6, 30, c1.poll, "c1 to own all partitions")
        before = set(c1.assignment)
        c2 = Tracked(group_consumer(broker.bootstrap, group, **conf), topic, commit=False)
        try:
            def step():
                c1.poll()
                c2.poll()

            wait_until(lambda: len(c1.assignment) == 3 and len(c2.assignment) == 3, 60, step, "a 3/3 split")
            # Incremental: c1 only ever gave up the 3 partitions c2 got, and never all of them at once.
            revoked = [p for kind, ps, _ in c1.events if kind == "revoked" for p in ps]
            assert sorted(revoked) == sorted(c2.assignment)
            assert c1.assignment <= before
            assert all(len(ps) < 6 for kind, ps, _ in c1.events if kind == "revoked")
        finally:
            c2.c.close()
    finally:
        c1.c.close()


def test_static_member_restart_without_rebalance(broker):
    topic, group = unique("gt"), unique("g")
    create_topic(broker.bootstrap, topic, 4)
    c1 = Tracked(group_consumer(broker.bootstrap, group, **{"group.instance.id": "stay"}), topic, commit=False)
    wait_until(lambda: len(c1.assignment) == 4, 30, c1.poll, "c1 to own all partitions")
    static = Member(broker.bootstrap, group, topic, **{"group.instance.id": "restarting", "session.timeout.ms": 30000})
    try:
        wait_until(lambda: len(c1.assignment) == 2 and len(static.assignment) == 2, 60, c1.poll, "a 2/2 split")
        mine = static.assignment
        events_before = len(c1.events)
        static.kill()
        static = Member(broker.bootstrap, group, topic, **{"group.instance.id": "restarting", "session.timeout.ms": 30000})
        wait_until(lambda: static.assignment == mine, 30, c1.poll, "the restarted static member to get its partitions back")
        # Give a rebalance the chance to show up, if one were triggered.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            c1.poll()
        assert len(c1.events) == events_before, f"c1 saw a rebalance: {c1.events[events_before:]}"
    finally:
        static.stop()
        c1.c.close()


def test_consumer_protocol_kip848(broker):
    topic, group = unique("gt"), unique("g848")
    create_topic(broker.bootstrap, topic, 4)
    expected = produce_values(broker.bootstrap, topic, 200, 4)
    conf = {"group.protocol": "consumer"}

    def mk():
        return Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **conf})

    c1 = Tracked(mk(), topic)
    c2 = Tracked(mk(), topic)
    try:
        def step():
            c1.poll()
            c2.poll()

        wait_until(lambda: len(c1.assignment) == 2 and len(c2.assignment) == 2, 60, step, "a 2/2 server-side split")
        wait_until(lambda: expected <= set(c1.values) | set(c2.values), 60, step, "all records")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept alive until its futures resolve
        d = admin.describe_consumer_groups([group])[group].result(30)
        assert len(d.members) == 2
        assert str(d.state).upper().endswith("STABLE")
    finally:
        c1.c.close()
        c2.c.close()
    # Committed offsets are there for the next member.
    c3 = mk()
    try:
        committed = c3.committed([TopicPartition(topic, p) for p in range(4)], timeout=30)
        assert sum(tp.offset for tp in committed) == 200
    finally:
        c3.close()


def test_group_offsets_survive_broker_kill9(make_broker):
    b = make_broker({"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "3"})
    topic, group = unique("gt"), unique("g")
    create_topic(b.bootstrap, topic, 2)
    produce_values(b.bootstrap, topic, 100, 2)
    c = Tracked(group_consumer(b.bootstrap, group), topic)
    wait_until(lambda: len(c.values) >= 100, 60, c.poll, "100 records")
    committed = c.c.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)
    assert sum(tp.offset for tp in committed) == 100
    c.c.close()
    b.kill9()
    b.start()
    produce_sync(producer(b.bootstrap), topic, [{"value": f"after{i}".encode(), "partition": i % 2} for i in range(10)])
    c = Tracked(group_consumer(b.bootstrap, group), topic)
    try:
        wait_until(lambda: len(c.values) >= 10, 60, c.poll, "the records after the restart")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            c.poll()
        assert sorted(c.values) == sorted(f"after{i}" for i in range(10)), "resumed from the committed offsets"
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        groups = admin.list_consumer_groups().result(30)
        assert group in {g.group_id for g in groups.valid}
    finally:
        c.c.close()


def test_consumer_protocol_members_continue_across_broker_kill9(make_broker):
    """KIP-848 group state (members, epochs, assignments) is persisted in __consumer_offsets: after a kill -9 and
    restart of the broker, the members go on heartbeating with their member ids and epochs, so there is no
    rebalance (no assignment change seen by the clients), and with commits after processing no record is skipped."""
    b = make_broker({"offsets.topic.num.partitions": "3"})
    topic, group = unique("gt"), unique("g848k")
    create_topic(b.bootstrap, topic, 4)
    before = produce_values(b.bootstrap, topic, 100, 4)

    def mk():
        return Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "group.protocol": "consumer",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})

    c1, c2 = Tracked(mk(), topic), Tracked(mk(), topic)

    def step():
        c1.poll()
        c2.poll()

    def described():
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        d = admin.describe_consumer_groups([group])[group].result(30)
        return {m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members}

    try:
        wait_until(lambda: len(c1.assignment) == 2 and len(c2.assignment) == 2, 60, step, "a 2/2 server-side split")
        wait_until(lambda: before <= set(c1.values) | set(c2.values), 60, step, "the first records")
        members_before = described()
        events_before = (len(c1.events), len(c2.events))
        b.kill9()
        b.start()
        after = {f"after{i}" for i in range(40)}
        produce_sync(producer(b.bootstrap), topic,
                     [{"value": f"after{i}".encode(), "partition": i % 4} for i in range(40)])
        wait_until(lambda: after <= set(c1.values) | set(c2.values), 60, step, "the records after the restart")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            step()
        assert described() == members_before, "same members with the same assignments"
        assert (len(c1.events), len(c2.events)) == events_before, \
            f"no rebalance after the restart: {c1.events[events_before[0]:]} {c2.events[events_before[1]:]}"
        values = c1.values + c2.values
        assert set(values) == before | after, "no record skipped"
        assert len(values) == len(set(values)), "nothing consumed twice: commits survived too"
    finally:
        c1.c.close()
        c2.c.close()
