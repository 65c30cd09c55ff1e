"""Decompression bombs in Produce requests, over raw sockets (issue 11, item 2).

A produced compressed batch is validated record by record from a stream, never
inflated whole, and refused once its records pass a limit derived from its
record count and max.message.bytes (CORRUPT_MESSAGE), or at the first record
that does not parse (INVALID_RECORD, as Kafka's record reader). The broker's
peak resident memory (VmHWM) stays far below what the bombs claim, and it goes
on serving produce and fetch.
"""

import socket
import struct
import zlib

import lz4.frame
import zstandard

import kafkawire as w
from conftest import unique
from helpers import consume_partitions, create_topic

ERR_INVALID_RECORD = 87
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
# Well beyond anything a bomb may cost, and far below what the bombs claim (GiBs).
PEAK_RSS_LIMIT = 512 << 20
XERIAL_HEADER = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"


def batch(codec: int, record_count: int, section: bytes) -> bytes:
    """A magic-2 batch claiming `record_count` records, with `section` as its compressed records."""
    after_crc = (
        struct.pack(">h", codec)
        + struct.pack(">i", record_count - 1)
        + struct.pack(">qq", 0, 0)
        + struct.pack(">qhi", -1, -1, -1)
        + struct.pack(">i", record_count)
        + section
    )
    after_length = struct.pack(">i", 0) + b"\x02" + struct.pack(">I", w.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def record_stream(total: int, value_len: int = 1 << 20):
    """Chunks of well-formed records with `value_len`-byte values of zeros, `total` bytes in all."""
    zeros = bytes(1 << 16)
    written, i = 0, 0
    while written < total:
        fields = b"\x00" + w.zigzag_varint(0) + w.zigzag_varint(i) + w.zigzag_varint(-1) + w.zigzag_varint(value_len)
        head = w.zigzag_varint(len(fields) + value_len + 1) + fields
        yield head
        for _ in range(value_len // len(zeros)):
            yield zeros
        yield b"\x00"  # no headers
        written += len(head) + value_len + 1
        i += 1


def zero_stream(total: int):
    zeros = bytes(1 << 20)
    for _ in range(total // len(zeros)):
        yield zeros


def compress(codec: int, chunks) -> bytes:
    if codec == GZIP:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return b"".join(c.compress(x) for x in chunks) + c.flush()
    if codec == LZ4:
        c = lz4.frame.LZ4FrameCompressor(block_linked=False)
        return c.begin() + b"".join(c.compress(x) for x in chunks) + c.flush()
    if codec == ZSTD:
        c = zstandard.ZstdCompressor(level=1).compressobj()
        return b"".join(c.compress(x) for x in chunks) + c.flush()
    raise ValueError(codec)


def peak_rss(broker) -> int:
    with open(f"/proc/{broker.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def produce_error(sock, topic: str, records: bytes, correlation_id: int) -> int:
    res = w.produce(sock, 8, correlation_id, topic, {0: records})
    return res[(topic, 0)]["error_code"]


def test_snappy_claiming_4_gib_is_refused_four_at_once(broker):
    topic = unique("bomb-snappy")
    create_topic(broker.bootstrap, topic, partitions=1)
    raw = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x00])  # a raw block whose length says 4 GiB - 1
    framed = XERIAL_HEADER + struct.pack(">I", len(raw)) + raw
    socks = [w.connect(broker.port) for _ in range(8)]
    try:
        # Sent together, as the four that used to abort the broker, before any answer is read.
        for i, s in enumerate(socks):
            body = w.produce_request_body(topic, {0: batch(SNAPPY, 1, raw if i % 2 else framed)})
            s.sendall(w.request_frame(w.API_PRODUCE, 8, 10 + i, body))
        for i, s in enumerate(socks):
            corr, res = w.parse_produce_response(w.read_frame(s), 8)
            assert corr == 10 + i
            assert res[(topic, 0)]["error_code"] == w.ERR_CORRUPT_MESSAGE, res
    finally:
        for s in socks:
            s.close()
    assert peak_rss(broker) < PEAK_RSS_LIMIT


def test_records_bombs_are_refused_at_the_limit(broker):
    topic = unique("bomb-records")
    create_topic(broker.bootstrap, topic, partitions=1)
    # Sizes that keep each compressed batch within the default max.message.bytes.
    bombs = {ZSTD: 1 << 30, GZIP: 256 << 20, LZ4: 200 << 20}
    with w.connect(broker.port) as s:
        for n, (codec, size) in enumerate(bombs.items()):
            # Well-formed records far past the limit (64 x max.message.bytes for this record count).
            records = batch(codec, 10_000, compress(codec, record_stream(size)))
            assert len(records) < 1_000_000, (codec, len(records))
            assert produce_error(s, topic, records, 100 + n) == w.ERR_CORRUPT_MESSAGE, codec
            # A plain run of zeros: a first record of length 0.
            records = batch(codec, 1, compress(codec, zero_stream(size)))
            assert produce_error(s, topic, records, 200 + n) == ERR_INVALID_RECORD, codec
    assert peak_rss(broker) < PEAK_RSS_LIMIT


def test_broker_serves_after_bombs(broker):
    topic = unique("after-bombs")
    create_topic(broker.bootstrap, topic, partitions=1)
    with w.connect(broker.port) as s:
        records = batch(ZSTD, 10_000, compress(ZSTD, record_stream(256 << 20)))
        assert produce_error(s, topic, records, 300) == w.ERR_CORRUPT_MESSAGE
        # A legitimate compressed batch on the same connection is stored and fetched back as it was sent.
        good = batch(ZSTD, 3, compress(ZSTD, [w.encode_record(i, 0, b"k%d" % i, b"v%d" % i) for i in range(3)]))
        res = w.produce(s, 8, 301, topic, {0: good})
        assert res[(topic, 0)]["error_code"] == 0 and res[(topic, 0)]["base_offset"] == 0, res
        fetched = w.fetch_v4(s, 302, topic, {0: 0})[(topic, 0)]
        assert fetched["error_code"] == 0 and fetched["high_watermark"] == 3, fetched
        # Fetch sends the stored batch unchanged (no decompression): only the base offset, leader epoch and CRC
        # region around them may differ, and the compressed records are byte for byte the same.
        assert fetched["records"][61:] == good[61:]
    msgs = consume_partitions(broker.bootstrap, topic, [0], 3)
    assert [(m.key(), m.value()) for m in msgs] == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]
    assert peak_rss(broker) < PEAK_RSS_LIMIT
    assert broker.running()
    # New connections are served too.
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s2:
        _, err, _ = w.api_versions_v0(s2, 400)
        assert err == 0
