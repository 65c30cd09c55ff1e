"""kafkajs 2.2.4 (npm, pure JavaScript) against Strom: a plain produce/consume round trip, and group consumers that
commit after every batch and resume from the committed offsets after the consumers restart and after the broker
restarts (clean stop and kill -9). kafkajs speaks older API versions than the other clients (JoinGroup v5, Fetch v11,
Produce v7, ApiVersions v2, OffsetCommit v5, ...), so this also covers those versions.

The clients run as node scripts (compat/js/client.js) with kafkajs installed by scripts/test (`npm ci` in compat/js);
the tests are skipped with the reason when node or the installed kafkajs is missing."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import unique
from helpers import create_topic

JS_DIR = Path(__file__).resolve().parent / "js"
BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0", "offsets.topic.num.partitions": "5"}
TIMEOUT = 60

if shutil.which("node") is None:
    pytest.skip("node is not installed: kafkajs tests need Node.js", allow_module_level=True)
if not (JS_DIR / "node_modules" / "kafkajs" / "package.json").exists():
    pytest.skip("kafkajs is not installed: run `npm ci` in compat/js (scripts/test does)", allow_module_level=True)


def node(*args, timeout=TIMEOUT) -> dict:
    proc = subprocess.run(["node", str(JS_DIR / "client.js"), *map(str, args)], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"node client.js {' '.join(map(str, args))} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Member:
    """A kafkajs group consumer in its own node process; its events are collected by a reader thread."""

    def __init__(self, bootstrap, topic, group):
        # stderr goes to a file: kafkajs logs its retries there, and a full pipe would block the member.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(["node", str(JS_DIR / "client.js"), "group", bootstrap, topic, group],
                                     cwd=JS_DIR, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.records: list[dict] = []
        self.assignments: list[list[int]] = []
        self.committed: dict | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            event = json.loads(line)
            if "assigned" in event:
                self.assignments.append(sorted(event["assigned"]))
            elif "records" in event:
                self.records.extend(event["records"])
            elif "committed" in event:
                self.committed = {int(p): o for p, o in event["committed"].items()}

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    @property
    def values(self) -> list[str]:
        return [r["value"] for r in list(self.records)]

    def stop(self):
        """Ask the member to leave the group (SIGTERM: the script disconnects and prints the committed offsets)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self):
        self.stop()
        try:
            self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.reader.join(10)
        assert self.proc.returncode == 0, f"kafkajs group member failed:\n{self.errors()}"


def wait_until(cond, what, member_list=()):
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        for m in member_list:
            assert m.proc.poll() is None, f"kafkajs member exited while waiting for {what}:\n{m.errors()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def produce(bootstrap, topic, prefix, n, partitions) -> set[str]:
    assert node("produce", bootstrap, topic, prefix, n, partitions)["produced"] == n
    return {f"{prefix}{i}" for i in range(n)}


def consume_new(bootstrap, topic, group, expected: set[str]):
    m = Member(bootstrap, topic, group)
    try:
        wait_until(lambda: expected <= set(m.values), "the new records", [m])
        time.sleep(1)  # any record before the committed offsets would show up now
    finally:
        m.close()
    return m


def test_produce_consume_round_trip(broker):
    topic = unique("kjs")
    create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, "v", 30, 3)
    m = consume_new(broker.bootstrap, topic, unique("g"), {f"v{i}" for i in range(30)})
    records = sorted(m.records, key=lambda r: int(r["value"][1:]))
    assert [r["value"] for r in records] == [f"v{i}" for i in range(30)]
    for i, r in enumerate(records):
        assert (r["key"], r["headers"], r["partition"], r["offset"]) == (f"k{i}", {"h": str(i)}, i % 3, i // 3)
    assert m.assignments[-1] == [0, 1, 2]
    assert m.committed == {0: 10, 1: 10, 2: 10}


def test_group_resumes_after_consumer_and_broker_restarts(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("kjg"), unique("g")
    create_topic(b.bootstrap, topic, 4)

    # Two members share the topic; each commits what it processed.
    m1, m2 = Member(b.bootstrap, topic, group), Member(b.bootstrap, topic, group)
    try:
        wait_until(lambda: m1.assignments[-1:] and m2.assignments[-1:] and len(m1.assignments[-1]) == 2
                   and len(m2.assignments[-1]) == 2, "the two members to share 4 partitions", [m1, m2])
        first = produce(b.bootstrap, topic, "a", 200, 4)
        wait_until(lambda: first <= set(m1.values) | set(m2.values), "all records", [m1, m2])
        assert m1.values and m2.values, "both members consumed"
        assert sorted(m1.values + m2.values) == sorted(first)
    finally:
        m1.stop()
        m2.stop()
        m1.close()
        m2.close()
    assert m2.committed == {p: 50 for p in range(4)}

    # Consumer restart: a new member resumes after the committed offsets, so it sees only the new records.
    second = produce(b.bootstrap, topic, "b", 40, 4)
    m = consume_new(b.bootstrap, topic, group, second)
    assert sorted(m.values) == sorted(second)
    assert m.committed == {p: 60 for p in range(4)}

    # Broker restarts, clean and crash: the committed offsets come back from __consumer_offsets.
    per_partition = 60
    for kill in (False, True):
        b.restart(kill=kill)
        more = produce(b.bootstrap, topic, f"c{kill}", 20, 4)
        per_partition += 5
        m = consume_new(b.bootstrap, topic, group, more)
        assert sorted(m.values) == sorted(more), f"after {'kill -9' if kill else 'restart'}"
        assert m.committed == {p: per_partition for p in range(4)}
