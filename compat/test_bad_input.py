"""Malformed and hostile input on raw sockets.

Reference behaviour is Apache Kafka 4.x: SocketServer closes a connection
whose frame size exceeds socket.request.max.bytes (104857600) or is negative,
whose request header names an unknown API key, or whose request cannot be
parsed; ApiVersions with an unsupported version is answered with an
ApiVersions v0 response carrying UNSUPPORTED_VERSION (35); a produced batch
with a bad CRC is rejected per partition with CORRUPT_MESSAGE (2). None of
this may affect other connections or the broker process.
"""

import struct

import pytest
import kafkawire as w
from conftest import unique
from helpers import consume_partitions, create_topic, producer, produce_sync

MAX_REQUEST = 104857600  # socket.request.max.bytes default


def assert_serving(broker, sock=None):
    """The broker process is alive and answers ApiVersions (on `sock` if
    given, else on a brand-new connection)."""
    assert broker.running(), "broker process died"
    if sock is None:
        with w.connect(broker.port) as s:
            _, err, keys = w.api_versions_v0(s, 4242)
    else:
        _, err, keys = w.api_versions_v0(sock, 4242)
    assert err == 0
    assert w.API_PRODUCE in keys and w.API_FETCH in keys


def assert_closed_without_response(sock):
    closed, got = w.wait_closed(sock, timeout=10)
    assert closed, "broker kept the connection open"
    assert got == b"", f"broker answered instead of closing: {got[:64]!r}"


def test_oversize_frame_closes_only_that_connection(broker):
    good = w.connect(broker.port)
    try:
        assert_serving(broker, good)
        bad = w.connect(broker.port)
        with bad:
            bad.sendall(struct.pack(">i", MAX_REQUEST + 1) + b"\x00\x12\x00\x00\x00\x00\x00\x01")
            assert_closed_without_response(bad)
        # The other, already-open connection keeps working, as do new ones.
        assert_serving(broker, good)
        assert_serving(broker)
    finally:
        good.close()


def test_huge_frame_size_closes(broker):
    with w.connect(broker.port) as bad:
        bad.sendall(struct.pack(">i", 0x7FFFFFFF))
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_negative_frame_size_closes(broker):
    with w.connect(broker.port) as bad:
        bad.sendall(struct.pack(">i", -1) + b"\x00" * 8)
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_http_request_closes(broker):
    # "GET " read as a frame length is 1195725856 bytes > socket.request.max.bytes.
    with w.connect(broker.port) as bad:
        bad.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_garbage_frame_closes(broker):
    # A well-framed request full of garbage: api key 0xdead is not an API.
    with w.connect(broker.port) as bad:
        payload = b"\xde\xad\xbe\xef" * 16
        bad.sendall(struct.pack(">i", len(payload)) + payload)
        assert_closed_without_response(bad)
    assert_serving(broker)


@pytest.mark.parametrize("api_key", [12345, 32767, -1])
def test_unknown_api_key_closes(broker, api_key):
    with w.connect(broker.port) as bad:
        bad.sendall(w.request_frame(api_key, 0, 7, b""))
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_unsupported_version_of_other_api_closes(broker):
    # Only ApiVersions gets an error response for an unsupported version;
    # Kafka closes the connection for any other API (InvalidRequestException).
    with w.connect(broker.port) as bad:
        bad.sendall(w.request_frame(w.API_METADATA, 999, 8, b"\x00\x00\x00\x00\x00",
                                    flexible_header=True))
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_truncated_request_body_closes(broker):
    # Metadata v4 header followed by half of the topics-array length.
    with w.connect(broker.port) as bad:
        bad.sendall(w.request_frame(w.API_METADATA, 4, 9, b"\x00\x00"))
        assert_closed_without_response(bad)
    assert_serving(broker)


def test_truncated_frame_then_disconnect(broker):
    # The client promises 100 bytes, sends 10 and goes away: nothing to answer,
    # but the broker must not be disturbed.
    with w.connect(broker.port) as bad:
        bad.sendall(struct.pack(">i", 100) + b"\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00")
    assert_serving(broker)


def test_api_versions_unsupported_version(broker):
    with w.connect(broker.port) as s:
        # A "future" ApiVersions request: flexible header, v3-shaped body.
        body = w.compact_string("strom-compat") + w.compact_string("1.0") + b"\x00"
        s.sendall(w.request_frame(w.API_API_VERSIONS, 99, 31337, body, flexible_header=True))
        frame = w.read_frame(s)
        # The response is ApiVersions v0 with a v0 response header:
        # correlation_id, error_code, [api_key, min_version, max_version].
        corr, err, keys = w.parse_api_versions_v0(frame)
        assert corr == 31337
        assert err == w.ERR_UNSUPPORTED_VERSION
        assert keys, "api_keys must list what the broker supports"
        assert w.API_API_VERSIONS in keys
        lo, hi = keys[w.API_API_VERSIONS]
        assert lo == 0 and hi >= 3
        assert len(frame) == 4 + 2 + 4 + 6 * len(keys), "trailing bytes after a v0 body"
        # The connection stays usable: the client retries with a version it knows.
        _, err, keys = w.api_versions_v0(s, 31338)
        assert err == 0 and w.API_PRODUCE in keys


def _produce_version(broker) -> int:
    with w.connect(broker.port) as s:
        _, _, keys = w.api_versions_v0(s)
    lo, hi = keys[w.API_PRODUCE]
    assert lo <= 8 <= hi or lo <= 3 <= hi, f"Produce versions {lo}-{hi}"
    return 8 if lo <= 8 <= hi else min(hi, 8)


def test_corrupt_crc_is_rejected(broker):
    topic = unique("crc")
    create_topic(broker.bootstrap, topic, partitions=1)
    version = _produce_version(broker)
    good = w.record_batch([(b"k1", b"value-one", [("h", b"v")]),
                           (b"k2", b"value-two", [])])
    # Flip one byte in the last record's value (covered by the CRC).
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    bad = bytes(bad)
    assert bad != good

    with w.connect(broker.port) as s:
        res = w.produce(s, version, 100, topic, {0: bad})
        assert res[(topic, 0)]["error_code"] == w.ERR_CORRUPT_MESSAGE, res
        assert res[(topic, 0)]["base_offset"] == -1, res

        # The same connection is still usable and nothing was appended.
        res = w.produce(s, version, 101, topic, {0: good})
        assert res[(topic, 0)]["error_code"] == 0, res
        assert res[(topic, 0)]["base_offset"] == 0, res

        # A corrupted CRC field itself (rather than the data) is caught too.
        bad_crc = bytearray(good)
        bad_crc[17] ^= 0x01  # byte 17..20 is the CRC
        res = w.produce(s, version, 102, topic, {0: bytes(bad_crc)})
        assert res[(topic, 0)]["error_code"] == w.ERR_CORRUPT_MESSAGE, res

        res = w.produce(s, version, 103, topic, {0: good})
        assert res[(topic, 0)]["error_code"] == 0, res
        assert res[(topic, 0)]["base_offset"] == 2, res

    msgs = consume_partitions(broker.bootstrap, topic, [0], 4)
    assert [(m.offset(), m.key(), m.value()) for m in msgs] == [
        (0, b"k1", b"value-one"), (1, b"k2", b"value-two"),
        (2, b"k1", b"value-one"), (3, b"k2", b"value-two")]
    assert msgs[0].headers() == [("h", b"v")]
    assert_serving(broker)


def test_produce_to_unknown_partition(broker):
    topic = unique("nopart")
    create_topic(broker.bootstrap, topic, partitions=1)
    version = _produce_version(broker)
    batch = w.record_batch([(None, b"x", [])])
    with w.connect(broker.port) as s:
        res = w.produce(s, version, 200, topic, {7: batch})
        assert res[(topic, 7)]["error_code"] == w.ERR_UNKNOWN_TOPIC_OR_PARTITION, res
        res = w.produce(s, version, 201, topic, {0: batch})
        assert res[(topic, 0)]["error_code"] == 0, res
        assert res[(topic, 0)]["base_offset"] == 0, res


def test_pipelined_requests_answered_in_order(broker):
    # Kafka answers requests on one connection strictly in order.
    with w.connect(broker.port) as s:
        s.sendall(b"".join(w.request_frame(w.API_API_VERSIONS, 0, corr, b"")
                           for corr in range(1000, 1010)))
        for corr in range(1000, 1010):
            got, err, _ = w.parse_api_versions_v0(w.read_frame(s))
            assert (got, err) == (corr, 0)


def test_normal_service_after_abuse(broker):
    """After everything above, ordinary clients still work."""
    topic = unique("after")
    create_topic(broker.bootstrap, topic, partitions=2)
    p = producer(broker.bootstrap, acks="all")
    produce_sync(p, topic, [{"key": f"k{i}".encode(), "value": f"v{i}".encode(),
                             "partition": i % 2} for i in range(50)])
    msgs = consume_partitions(broker.bootstrap, topic, [0, 1], 50)
    assert sorted(m.value() for m in msgs) == sorted(f"v{i}".encode() for i in range(50))
    assert_serving(broker)
