"""kcat 1.7.1 (librdkafka 2.0.2, an older client) against strom."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from conftest import unique
from helpers import create_topic, producer, produce_sync

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed (scripts/test installs it)")


def kcat(broker, *args, stdin: str | None = None, timeout: float = 60) -> str:
    cmd = [KCAT, "-b", broker.bootstrap, *args]
    proc = subprocess.run(cmd, input=stdin.encode() if stdin is not None else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\nstderr:\n{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


def test_list_metadata(broker):
    topic = unique("kc-meta")
    create_topic(broker.bootstrap, topic, partitions=3)
    out = kcat(broker, "-L")
    assert " 1 brokers:" in out, out
    assert re.search(rf"broker \d+ at 127\.0\.0\.1:{broker.port}\b", out), out
    assert f' topic "{topic}" with 3 partitions:' in out, out
    for p in range(3):
        assert re.search(rf"partition {p}, leader \d+, replicas: \d+, isrs: \d+", out), out

    # Metadata for one topic only.
    out = kcat(broker, "-L", "-t", topic)
    assert f' topic "{topic}" with 3 partitions:' in out
    assert " 1 topics:" in out


def test_list_metadata_json(broker):
    topic = unique("kc-json")
    create_topic(broker.bootstrap, topic, partitions=2)
    md = json.loads(kcat(broker, "-L", "-J"))
    assert len(md["brokers"]) == 1
    (b,) = md["brokers"]
    assert b["name"] == f"127.0.0.1:{broker.port}"
    assert md["controllerid"] == b["id"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics
    t = topics[topic]
    assert "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1]
    for p in t["partitions"]:
        assert p["leader"] == b["id"]
        assert [r["id"] for r in p["replicas"]] == [b["id"]]
        assert [r["id"] for r in p["isrs"]] == [b["id"]]


def test_produce_consume_keyed_lines(broker):
    topic = unique("kc-lines")
    create_topic(broker.bootstrap, topic, partitions=1)
    lines = [f"key{i}:value number {i}" for i in range(300)]
    lines += ["colon:a:b:c", "emptyvalue:", "unicode:ключ→значение ✓"]
    kcat(broker, "-P", "-t", topic, "-K:", "-X", "acks=all", stdin="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\n")
    assert out.splitlines() == lines

    # Offsets and partition are reported as produced.
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p %o %k\n")
    assert out.splitlines()[:3] == ["0 0 key0", "0 1 key1", "0 2 key2"]
    assert out.splitlines()[-1] == f"0 {len(lines) - 1} unicode"

    # Consume a range from the middle: -o 100 -c 5.
    out = kcat(broker, "-C", "-t", topic, "-o", "100", "-c", "5", "-f", "%o:%k\n")
    assert out.splitlines() == [f"{o}:key{o}" for o in range(100, 105)]

    # Negative offset = relative to the end.
    out = kcat(broker, "-C", "-t", topic, "-o", "-2", "-e", "-f", "%k\n")
    assert out.splitlines() == ["emptyvalue", "unicode"]


def test_produce_consume_multiple_partitions(broker):
    topic = unique("kc-parts")
    create_topic(broker.bootstrap, topic, partitions=3)
    lines = [f"user{i % 20}:event {i}" for i in range(240)]
    kcat(broker, "-P", "-t", topic, "-K:", stdin="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p|%o|%k|%s\n")
    rows = [r.split("|") for r in out.splitlines()]
    assert sorted(f"{k}:{s}" for _, _, k, s in rows) == sorted(lines)
    # The same key always lands in the same partition, and offsets are dense per partition.
    part_of = {}
    per_part = {}
    for p, o, k, s in rows:
        assert part_of.setdefault(k, p) == p
        per_part.setdefault(p, []).append(int(o))
    for p, offs in per_part.items():
        assert offs == list(range(len(offs))), p
    # Per-key order is preserved.
    for k in {k for _, _, k, _ in rows}:
        got = [s for _, _, kk, s in rows if kk == k]
        want = [ln.split(":", 1)[1] for ln in lines if ln.split(":", 1)[0] == k]
        assert got == want


def test_headers_explicit_partition(broker):
    topic = unique("kc-hdr")
    create_topic(broker.bootstrap, topic, partitions=2)
    kcat(broker, "-P", "-t", topic, "-p", "1", "-H", "trace=abc", "-H", "dup=1", "-H", "dup=2",
         "-K:", stdin="k:v\n")
    out = kcat(broker, "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e",
               "-f", "%p|%o|%k|%s|%h\n")
    assert out.splitlines() == ["1|0|k|v|trace=abc,dup=1,dup=2"]
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%s\n")
    assert out == ""


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_produce(broker, codec):
    topic = unique(f"kc-{codec}")
    create_topic(broker.bootstrap, topic, partitions=1)
    lines = [f"{i}:{'compressible payload ' * 20}{i}" for i in range(200)]
    kcat(broker, "-P", "-t", topic, "-K:", "-z", codec, stdin="\n".join(lines) + "\n")
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k:%s\n")
    assert out.splitlines() == lines


def test_query_offset_by_timestamp(broker):
    topic = unique("kc-query")
    create_topic(broker.bootstrap, topic, partitions=1)
    base = int(time.time() * 1000) - 60_000
    produce_sync(producer(broker.bootstrap, acks="all"), topic,
                 [{"value": f"{i}".encode(), "partition": 0, "timestamp": base + 1000 * i}
                  for i in range(10)])
    out = kcat(broker, "-Q", "-t", f"{topic}:0:{base + 3500}")
    assert re.search(rf"{re.escape(topic)} \[0\] offset 4\b", out), out
    out = kcat(broker, "-Q", "-t", f"{topic}:0:{base}")
    assert re.search(rf"{re.escape(topic)} \[0\] offset 0\b", out), out
