"""The data directory against damage: a flipped byte in the middle of the metadata log (`meta/metadata.log`)
refuses to start and names the file and offset, touching no partition directory; a torn tail of arbitrary bytes is
truncated with a warning; a directory the metadata does not name is renamed aside, never deleted; a partition whose
log cannot be opened is offline while the others serve."""

from __future__ import annotations

import os
import re
import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import unique
from helpers import admin, consume_partitions, create_topic, produce_sync, producer

HEADER_LEN = 12  # magic (8 bytes) + format version (u32)


def frame_starts(data: bytes) -> list[int]:
    """Offsets of the frames (u32 length, u32 CRC, payload) after the file header."""
    starts, pos = [], HEADER_LEN
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        starts.append(pos)
        pos += 8 + length
    assert pos == len(data), "the metadata log does not end at a frame boundary"
    return starts


def tree(root) -> dict[str, int]:
    """Every directory and file under `root` (size for files, -1 for directories), except the broker's own log."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root)] = -1
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=30)}
    finally:
        c.close()


def wait_log_line(b, pattern: str, timeout: float = 30.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, b.log_path.read_text(errors="replace"))
        if m or time.monotonic() > deadline:
            assert m, f"no log line matching {pattern!r}\n{b.log_tail()}"
            return m
        time.sleep(0.1)


def test_metadata_log_damage(make_broker):
    b = make_broker()
    topics = [unique("meta-a"), unique("meta-b")]
    group = unique("meta-group")
    for t in topics:
        create_topic(b.bootstrap, t, partitions=2)
    p = producer(b.bootstrap)
    for t in topics:
        produce_sync(p, t, [{"value": f"{t}-{i}".encode(), "partition": i % 2} for i in range(100)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(t, i, 0) for t in topics for i in range(2)])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 200 and time.monotonic() < deadline:
            seen += sum(1 for m in c.consume(num_messages=200 - seen, timeout=0.5) if not m.error())
        assert seen == 200
        c.commit(asynchronous=False)
    finally:
        c.close()
    tps = [TopicPartition(t, i) for t in topics for i in range(2)]
    offsets = committed(b.bootstrap, group, tps)
    assert list(offsets.values()) == [50] * 4
    assert b.stop() == 0

    log = b.data_dir / "meta" / "metadata.log"
    good = log.read_bytes()
    starts = frame_starts(good)
    assert len(starts) >= 3
    middle = starts[len(starts) // 2]
    at = middle + 8 + (starts[len(starts) // 2 + 1] - middle - 8) // 2
    before = tree(b.data_dir)
    bad = bytearray(good)
    bad[at] ^= 0x10
    log.write_bytes(bytes(bad))

    # Corruption before the tail: refuse, name the file and the damaged frame's offset, change nothing.
    with pytest.raises(RuntimeError, match="exited with"):
        b.start(timeout=30)
    assert b.proc.returncode != 0
    text = b.log_path.read_text(errors="replace")
    assert str(log) in text and f"offset {middle}" in text, b.log_tail()
    assert tree(b.data_dir) == before
    assert log.read_bytes() == bytes(bad)

    # The byte restored: everything is there.
    log.write_bytes(good)
    b.start()
    for t in topics:
        assert len(consume_partitions(b.bootstrap, t, [0, 1], 100)) == 100
    assert committed(b.bootstrap, group, tps) == offsets
    assert b.stop() == 0

    # A torn tail of arbitrary bytes (not UTF-8): truncated with a warning naming the file and offset.
    end = log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"\x00\x00\x00\x30\xff\xfe\x80garbage\xc3")
    b.start()
    m = wait_log_line(b, r"truncating a torn tail of the metadata log.*")
    assert str(log) in m.group(0) and f"offset={end}" in m.group(0), m.group(0)
    assert log.stat().st_size == end
    for t in topics:
        assert len(consume_partitions(b.bootstrap, t, [0, 1], 100)) == 100
    assert committed(b.bootstrap, group, tps) == offsets
    assert b.stop() == 0

    # A partition-like directory no topic owns: renamed aside with its contents, not deleted.
    stray = b.data_dir / "foo-0"
    stray.mkdir()
    (stray / "00000000000000000000.log").write_bytes(b"someone's data")
    b.start()
    wait_log_line(b, r"renamed aside")
    assert not stray.exists()
    aside = [d for d in os.listdir(b.data_dir) if d.startswith("foo-0.") and d.endswith("-stray")]
    assert len(aside) == 1, os.listdir(b.data_dir)
    assert (b.data_dir / aside[0] / "00000000000000000000.log").read_bytes() == b"someone's data"
    for t in topics:
        assert len(consume_partitions(b.bootstrap, t, [0, 1], 100)) == 100


def test_partition_that_cannot_open_is_offline(make_broker):
    """A partition whose log cannot be opened does not stop the broker: Metadata reports KAFKA_STORAGE_ERROR for it
    and the other partitions serve."""
    b = make_broker()
    good, bad = unique("serving"), unique("broken")
    for t in (good, bad):
        create_topic(b.bootstrap, t, partitions=2)
    produce_sync(producer(b.bootstrap), good, [{"value": b"v", "partition": i % 2} for i in range(10)])
    assert b.stop() == 0
    # A file where the partition's directory was: its log cannot be opened.
    part = b.data_dir / f"{bad}-1"
    part.rename(b.data_dir / "kept-aside-by-the-test")
    part.write_bytes(b"not a directory")

    b.start()
    wait_log_line(b, rf"cannot open the partition's log.*topic={bad} partition=1")
    md = admin(b.bootstrap).list_topics(topic=bad, timeout=10).topics[bad]
    assert md.partitions[0].error is None and md.partitions[0].leader == 1
    assert md.partitions[1].error is not None and md.partitions[1].error.code() == KafkaError.KAFKA_STORAGE_ERROR
    assert md.partitions[1].leader == -1
    assert len(consume_partitions(b.bootstrap, good, [0, 1], 10)) == 10
    produce_sync(producer(b.bootstrap), bad, [{"value": b"w", "partition": 0}])
    assert len(consume_partitions(b.bootstrap, bad, [0], 1)) == 1
    assert part.read_bytes() == b"not a directory"
