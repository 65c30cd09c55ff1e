"""A fetch at the tail of a partition is read on the broker's runtime thread only while its bytes are in the page
cache; bytes that must come from the disk are read on the blocking pool instead. Here the active segment's pages are
dropped from the page cache (posix_fadvise DONTNEED, which any process may ask for a clean file) before the consumer
reads: every record must still come back, through the fallback."""

import os
from pathlib import Path

import kafkawire as w
from conftest import unique
from helpers import consume_partitions, create_topic, produce_sync, producer


def drop_cached_pages(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_tail_fetch_of_uncached_active_segment(broker):
    topic = unique("cold")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, acks="all", linger_ms=5)
    records = [{"value": f"v{i}".encode() * 100, "partition": 0} for i in range(2000)]
    produce_sync(p, topic, records)
    segments = sorted(Path(broker.data_dir, f"{topic}-0").glob("*.log"))
    assert len(segments) == 1, segments  # all of it in the active segment
    drop_cached_pages(segments[0])
    # The first fetch after the drop answers with the records, not an error (clients would retry an error and
    # hide it, so this asks on the wire).
    sock = w.connect(broker.port, timeout=30)
    try:
        first = w.fetch_v4(sock, 1, topic, {0: 0}, max_bytes=1 << 20)[(topic, 0)]
    finally:
        sock.close()
    assert first["error_code"] == 0 and first["records"], first["error_code"]
    drop_cached_pages(segments[0])
    got = consume_partitions(broker.bootstrap, topic, [0], expected=len(records))
    assert [m.value() for m in got] == [r["value"] for r in records]
