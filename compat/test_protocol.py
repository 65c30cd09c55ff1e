"""Produce and Fetch semantics checked on the wire, with hand-built requests.

Expected codes are Apache Kafka 4.x's: Produce v3+ requires exactly one
magic-2 batch per partition (ProduceRequest.validateRecords) and LogValidator
rejects inconsistent batch headers with INVALID_RECORD (87); a rejected batch
appends nothing.
"""

from __future__ import annotations

import gzip
import struct
import time

import pytest

import kafkawire as w
from conftest import unique
from helpers import consume_partitions, create_topic

ERR_OFFSET_OUT_OF_RANGE = 1
ERR_INVALID_REQUIRED_ACKS = 21
ERR_INVALID_RECORD = 87

ONE = w.record_batch([(b"k", b"v", [])])
TWO = w.record_batch([(b"k1", b"v1", []), (b"k2", b"v2", [])])


def _gzip_batch():
    """A valid batch whose records are gzip-compressed, built by hand."""
    plain = w.record_batch([(b"gk", b"gv", [("h", b"1")])])
    records = plain[61:]
    b = bytearray(plain[:61]) + gzip.compress(records)
    struct.pack_into(">i", b, w.BATCH_LENGTH, len(b) - 12)
    struct.pack_into(">h", b, w.BATCH_ATTRIBUTES, 1)
    return w.fix_crc(bytes(b))


BAD_RECORD_SETS = {
    "empty record set": b"",
    "two batches": ONE + ONE,
    "magic 1": w.patch(ONE, w.BATCH_MAGIC, ">b", 1, recrc=False),
    "truncated batch": ONE[:-5],
    "batch length past the end": w.patch(ONE, w.BATCH_LENGTH, ">i", len(ONE), recrc=False),
    "record count above lastOffsetDelta+1": w.patch(ONE, w.BATCH_RECORD_COUNT, ">i", 2),
    "record count below lastOffsetDelta+1": w.patch(TWO, w.BATCH_RECORD_COUNT, ">i", 1),
    "record count 0": w.patch(ONE, w.BATCH_RECORD_COUNT, ">i", 0),
    "lastOffsetDelta beyond records": w.patch(ONE, w.BATCH_LAST_OFFSET_DELTA, ">i", 5),
    "non-zero baseOffset": w.patch(ONE, w.BATCH_BASE_OFFSET, ">q", 7),
    "control batch from a client": w.patch(ONE, w.BATCH_ATTRIBUTES, ">h", 0x20),
}


@pytest.fixture(scope="module")
def topic(broker):
    name = unique("wire")
    create_topic(broker.bootstrap, name, partitions=2)
    return name


@pytest.fixture(scope="module")
def version(broker):
    with w.connect(broker.port) as s:
        _, _, keys = w.api_versions_v0(s)
    lo, hi = keys[w.API_PRODUCE]
    assert lo <= 8 <= hi, f"Produce v8 not supported ({lo}-{hi}); Kafka 4 supports 3-13"
    lo, hi = keys[w.API_FETCH]
    assert lo <= 4 <= hi, f"Fetch v4 not supported ({lo}-{hi}); Kafka 4 supports 4-17+"
    return 8


def high_watermark(sock, topic, partition):
    # Retry the transient errors Kafka gives right after a topic is created.
    deadline = time.monotonic() + 10
    while True:
        r = w.fetch_v4(sock, 999, topic, {partition: 0}, max_wait_ms=0)[(topic, partition)]
        if r["error_code"] == 0 or time.monotonic() > deadline:
            break
        assert r["error_code"] in (3, 5, 6), r  # UNKNOWN_TOPIC, LEADER_NOT_AVAILABLE, NOT_LEADER
        time.sleep(0.1)
    assert r["error_code"] == 0, r
    return r["high_watermark"]


@pytest.mark.parametrize("case", sorted(BAD_RECORD_SETS))
def test_invalid_record_sets_rejected(broker, topic, version, case):
    with w.connect(broker.port) as s:
        before = high_watermark(s, topic, 0)
        res = w.produce(s, version, 1, topic, {0: BAD_RECORD_SETS[case]})[(topic, 0)]
        assert res["error_code"] == ERR_INVALID_RECORD, (
            f"{case}: broker answered error {res['error_code']} "
            f"({res.get('error_message')!r}, base_offset {res['base_offset']}); "
            f"Kafka answers 87 INVALID_RECORD")
        assert res["base_offset"] == -1, res
        assert high_watermark(s, topic, 0) == before, "a rejected batch was appended"
        # The connection and partition keep working.
        res = w.produce(s, version, 2, topic, {0: ONE})[(topic, 0)]
        assert res["error_code"] == 0 and res["base_offset"] == before, res


def test_compression_flag_without_compressed_payload_rejected(broker, topic, version):
    """attributes say gzip, the records are not: Kafka fails decompression
    (it answers UNKNOWN_SERVER_ERROR, -1) and appends nothing."""
    bad = w.patch(ONE, w.BATCH_ATTRIBUTES, ">h", 1)
    with w.connect(broker.port) as s:
        before = high_watermark(s, topic, 1)
        res = w.produce(s, version, 3, topic, {1: bad})[(topic, 1)]
        assert res["error_code"] != 0, f"accepted at offset {res['base_offset']}: {res}"
        assert high_watermark(s, topic, 1) == before, "an undecodable batch was appended"


def test_hand_built_gzip_batch_accepted(broker, version):
    topic = unique("gzip")
    create_topic(broker.bootstrap, topic, partitions=1)
    with w.connect(broker.port) as s:
        res = w.produce(s, version, 4, topic, {0: _gzip_batch()})[(topic, 0)]
        assert res["error_code"] == 0 and res["base_offset"] == 0, res
    (m,) = consume_partitions(broker.bootstrap, topic, [0], 1)
    assert (m.offset(), m.key(), m.value(), m.headers()) == (0, b"gk", b"gv", [("h", b"1")])


def test_invalid_acks(broker, topic, version):
    with w.connect(broker.port) as s:
        res = w.produce(s, version, 5, topic, {0: ONE}, acks=2)[(topic, 0)]
        assert res["error_code"] == ERR_INVALID_REQUIRED_ACKS, res


def test_acks_zero_gets_no_response(broker, topic, version):
    """With acks=0 the broker sends no Produce response at all; the next
    response on the connection belongs to the next request."""
    with w.connect(broker.port) as s:
        before = high_watermark(s, topic, 0)
        s.sendall(w.request_frame(w.API_PRODUCE, version, 6,
                                  w.produce_request_body(topic, {0: TWO}, acks=0)))
        corr, err, _ = w.api_versions_v0(s, 7)
        assert (corr, err) == (7, 0)
        assert high_watermark(s, topic, 0) == before + 2


def test_fetch_offsets(broker, topic, version):
    name = unique("fetch")
    create_topic(broker.bootstrap, name, partitions=1)
    with w.connect(broker.port) as s:
        res = w.produce(s, version, 8, name, {0: TWO})[(name, 0)]
        assert res["error_code"] == 0 and res["base_offset"] == 0

        r = w.fetch_v4(s, 9, name, {0: 0})[(name, 0)]
        assert r["error_code"] == 0 and r["high_watermark"] == 2
        (base_offset, length) = struct.unpack_from(">qi", r["records"], 0)
        assert base_offset == 0 and length + 12 == len(TWO) and len(r["records"]) >= len(TWO)
        # Everything the CRC covers comes back byte-identical (Kafka only
        # assigns offsets and the leader epoch, outside the CRC).
        assert r["records"][w.BATCH_MAGIC:len(TWO)] == TWO[w.BATCH_MAGIC:]

        # Fetching from the middle of a batch returns the whole batch (the
        # client skips the records before its offset).
        r = w.fetch_v4(s, 10, name, {0: 1})[(name, 0)]
        assert r["error_code"] == 0
        assert struct.unpack_from(">q", r["records"], 0)[0] == 0

        # At the log end: no error, no records (after max_wait_ms).
        r = w.fetch_v4(s, 11, name, {0: 2}, max_wait_ms=50)[(name, 0)]
        assert r["error_code"] == 0 and r["high_watermark"] == 2
        assert not r["records"]

        # Past the end, and negative: OFFSET_OUT_OF_RANGE.
        for off in (3, 1000, -5):
            r = w.fetch_v4(s, 12, name, {0: off})[(name, 0)]
            assert r["error_code"] == ERR_OFFSET_OUT_OF_RANGE, (off, r)
            assert not r["records"]

        # Unknown partition of a known topic.
        r = w.fetch_v4(s, 13, name, {5: 0})[(name, 5)]
        assert r["error_code"] == w.ERR_UNKNOWN_TOPIC_OR_PARTITION, r
