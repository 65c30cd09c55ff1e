"""Minimal hand-written Kafka wire protocol helpers (Python's struct only).

Used by conftest.py (readiness probe) and test_bad_input.py (malformed and
hand-built requests). Only the handful of request/response shapes the tests
need are implemented; field layouts follow apache/kafka
clients/src/main/resources/common/message/*.json.
"""

from __future__ import annotations

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DELETE_TOPICS = 20

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_UNSUPPORTED_VERSION = 35


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), table driven.
# --------------------------------------------------------------------------
def _make_crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # standard check value


# --------------------------------------------------------------------------
# Primitive encoders.
# --------------------------------------------------------------------------
def zigzag_varint(n: int) -> bytes:
    """Signed varint (zig-zag), as used inside record batches v2."""
    z = (n << 1) ^ (n >> 63)
    return uvarint(z & 0xFFFFFFFFFFFFFFFF)


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    raw = s.encode()
    return uvarint(len(raw) + 1) + raw


def nullable_bytes(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


# --------------------------------------------------------------------------
# Record batch v2 (magic 2).
# --------------------------------------------------------------------------
def encode_record(offset_delta: int, timestamp_delta: int, key: bytes | None,
                  value: bytes | None, headers=()) -> bytes:
    body = bytearray()
    body += b"\x00"  # attributes
    body += zigzag_varint(timestamp_delta)
    body += zigzag_varint(offset_delta)
    for part in (key, value):
        if part is None:
            body += zigzag_varint(-1)
        else:
            body += zigzag_varint(len(part)) + part
    body += zigzag_varint(len(headers))
    for hk, hv in headers:
        hk_raw = hk.encode()
        body += zigzag_varint(len(hk_raw)) + hk_raw
        if hv is None:
            body += zigzag_varint(-1)
        else:
            body += zigzag_varint(len(hv)) + hv
    return zigzag_varint(len(body)) + bytes(body)


def record_batch(records, base_timestamp: int | None = None) -> bytes:
    """Build an uncompressed magic-2 batch. records: list of (key, value, headers)."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    encoded = b"".join(
        encode_record(i, 0, k, v, h) for i, (k, v, h) in enumerate(records))
    after_crc = (
        struct.pack(">h", 0)                      # attributes: no compression, CreateTime
        + struct.pack(">i", len(records) - 1)     # lastOffsetDelta
        + struct.pack(">q", base_timestamp)       # baseTimestamp
        + struct.pack(">q", base_timestamp)       # maxTimestamp
        + struct.pack(">q", -1)                   # producerId
        + struct.pack(">h", -1)                   # producerEpoch
        + struct.pack(">i", -1)                   # baseSequence
        + struct.pack(">i", len(records))         # record count
        + encoded
    )
    crc = crc32c(after_crc)
    after_length = (
        struct.pack(">i", 0)       # partitionLeaderEpoch
        + b"\x02"                  # magic
        + struct.pack(">I", crc)
        + after_crc
    )
    return struct.pack(">qi", 0, len(after_length)) + after_length


# --------------------------------------------------------------------------
# Framing.
# --------------------------------------------------------------------------
def request_frame(api_key: int, api_version: int, correlation_id: int, body: bytes,
                  client_id: str | None = "strom-compat", flexible_header: bool = False) -> bytes:
    header = struct.pack(">hhi", api_key, api_version, correlation_id) + string(client_id)
    if flexible_header:
        header += b"\x00"  # empty tagged fields (request header v2)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, size)


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def wait_closed(sock: socket.socket, timeout: float = 10.0):
    """Wait for the peer to close the connection (EOF or reset).

    Returns (closed, received_bytes): closed is False if the connection was
    still open after `timeout` seconds.
    """
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    received = bytearray()
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True, bytes(received)
            received += data
    except (ConnectionResetError, BrokenPipeError):
        return True, bytes(received)
    except socket.timeout:
        return False, bytes(received)
    return False, bytes(received)


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, fmt: str):
        vals = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    def int8(self):
        return self.take(">b")

    def int16(self):
        return self.take(">h")

    def int32(self):
        return self.take(">i")

    def int64(self):
        return self.take(">q")

    def string(self):
        n = self.int16()
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def remaining(self) -> int:
        return len(self.data) - self.pos


# --------------------------------------------------------------------------
# ApiVersions.
# --------------------------------------------------------------------------
def api_versions_v0(sock: socket.socket, correlation_id: int = 1):
    """Send ApiVersions v0; return (correlation_id, error_code, {api_key: (min, max)})."""
    sock.sendall(request_frame(API_API_VERSIONS, 0, correlation_id, b""))
    return parse_api_versions_v0(read_frame(sock))


def parse_api_versions_v0(frame: bytes):
    r = Reader(frame)
    corr = r.int32()
    err = r.int16()
    n = r.int32()
    keys = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.take(">hhh")
        keys[k] = (lo, hi)
    return corr, err, keys


# --------------------------------------------------------------------------
# Metadata v4 (non-flexible): only the broker list is parsed.
# --------------------------------------------------------------------------
def metadata_v4_brokers(sock: socket.socket, correlation_id: int = 2):
    body = struct.pack(">i", 0) + b"\x00"  # no topics, allow_auto_topic_creation=false
    sock.sendall(request_frame(API_METADATA, 4, correlation_id, body))
    r = Reader(read_frame(sock))
    corr = r.int32()
    assert corr == correlation_id, (corr, correlation_id)
    r.int32()  # throttle_time_ms
    brokers = []
    for _ in range(r.int32()):
        node_id = r.int32()
        host = r.string()
        port = r.int32()
        r.string()  # rack
        brokers.append((node_id, host, port))
    return brokers


# --------------------------------------------------------------------------
# Produce v3..v8 (non-flexible).
# --------------------------------------------------------------------------
def produce_request_body(topic: str, partitions: dict, acks: int = -1, timeout_ms: int = 10000,
                         transactional_id: str | None = None) -> bytes:
    body = bytearray()
    body += string(transactional_id)
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1)
    body += string(topic)
    body += struct.pack(">i", len(partitions))
    for index, records in partitions.items():
        body += struct.pack(">i", index) + nullable_bytes(records)
    return bytes(body)


def parse_produce_response(frame: bytes, version: int):
    """Return (correlation_id, {(topic, partition): dict(error_code=..., base_offset=...)})."""
    r = Reader(frame)
    corr = r.int32()
    out = {}
    for _ in range(r.int32()):
        topic = r.string()
        for _ in range(r.int32()):
            index = r.int32()
            err = r.int16()
            base_offset = r.int64()
            entry = {"error_code": err, "base_offset": base_offset}
            if version >= 2:
                entry["log_append_time_ms"] = r.int64()
            if version >= 5:
                entry["log_start_offset"] = r.int64()
            if version >= 8:
                errors = []
                for _ in range(r.int32()):
                    errors.append((r.int32(), r.string()))
                entry["record_errors"] = errors
                entry["error_message"] = r.string()
            out[(topic, index)] = entry
    if version >= 1:
        r.int32()  # throttle_time_ms
    return corr, out


def produce(sock: socket.socket, version: int, correlation_id: int, topic: str,
            partitions: dict, acks: int = -1, transactional_id: str | None = None):
    sock.sendall(request_frame(API_PRODUCE, version, correlation_id,
                               produce_request_body(topic, partitions, acks,
                                                    transactional_id=transactional_id)))
    corr, result = parse_produce_response(read_frame(sock), version)
    assert corr == correlation_id, (corr, correlation_id)
    return result


# --------------------------------------------------------------------------
# Fetch v4 (non-flexible, topic names).
# --------------------------------------------------------------------------
def fetch_v4(sock: socket.socket, correlation_id: int, topic: str, partitions: dict,
             max_wait_ms: int = 100, min_bytes: int = 1, max_bytes: int = 1 << 20,
             partition_max_bytes: int = 1 << 20, isolation_level: int = 0):
    """partitions: {index: fetch_offset}. isolation_level 1 is read_committed. Returns
    {(topic, partition): dict(error_code, high_watermark, last_stable_offset, aborted (list of
    (producer_id, first_offset), None if null), records)}."""
    body = bytearray()
    body += struct.pack(">iiii", -1, max_wait_ms, min_bytes, max_bytes)
    body += struct.pack(">b", isolation_level)
    body += struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", len(partitions))
    for index, offset in partitions.items():
        body += struct.pack(">iqi", index, offset, partition_max_bytes)
    sock.sendall(request_frame(API_FETCH, 4, correlation_id, bytes(body)))
    r = Reader(read_frame(sock))
    corr = r.int32()
    assert corr == correlation_id, (corr, correlation_id)
    r.int32()  # throttle_time_ms
    out = {}
    for _ in range(r.int32()):
        name = r.string()
        for _ in range(r.int32()):
            index = r.int32()
            err = r.int16()
            hw = r.int64()
            lso = r.int64()
            n_aborted = r.int32()
            aborted = None if n_aborted < 0 else []
            for _ in range(max(n_aborted, 0)):
                aborted.append((r.int64(), r.int64()))
            size = r.int32()
            records = None
            if size >= 0:
                records = r.data[r.pos:r.pos + size]
                r.pos += size
            out[(name, index)] = {"error_code": err, "high_watermark": hw, "last_stable_offset": lso,
                                  "aborted": aborted, "records": records}
    return out


def fix_crc(batch: bytes) -> bytes:
    """Recompute the CRC of a (single, possibly edited) magic-2 batch."""
    b = bytearray(batch)
    struct.pack_into(">I", b, 17, crc32c(bytes(b[21:])))
    return bytes(b)


def patch(batch: bytes, offset: int, fmt: str, value, recrc: bool = True) -> bytes:
    """Overwrite a field of a batch (byte offset, struct format) and fix the CRC."""
    b = bytearray(batch)
    struct.pack_into(fmt, b, offset, value)
    return fix_crc(bytes(b)) if recrc else bytes(b)


# Byte offsets of the magic-2 batch header fields.
BATCH_BASE_OFFSET = 0
BATCH_LENGTH = 8
BATCH_MAGIC = 16
BATCH_CRC = 17
BATCH_ATTRIBUTES = 21
BATCH_LAST_OFFSET_DELTA = 23
BATCH_RECORD_COUNT = 57


# --------------------------------------------------------------------------
# Idempotent producer: InitProducerId v0 and batches carrying a producer id.
# --------------------------------------------------------------------------
API_INIT_PRODUCER_ID = 22
BATCH_PRODUCER_ID = 43
BATCH_PRODUCER_EPOCH = 51
BATCH_BASE_SEQUENCE = 53


def init_producer_id(sock: socket.socket, correlation_id: int, transactional_id: str | None = None,
                     producer_id: int = -1, producer_epoch: int = -1, version: int = 3):
    """InitProducerId v3 (flexible; v2 and below have no producer id/epoch fields, v0-1 are non-flexible).
    Returns (error_code, producer_id, producer_epoch)."""
    if version < 2:
        body = string(transactional_id) + struct.pack(">i", 60000)
        flexible = False
    else:
        body = compact_string(transactional_id) + struct.pack(">i", 60000)
        if version >= 3:
            body += struct.pack(">qh", producer_id, producer_epoch)
        body += b"\x00"
        flexible = True
    sock.sendall(request_frame(API_INIT_PRODUCER_ID, version, correlation_id, body, flexible_header=flexible))
    r = Reader(read_frame(sock))
    assert r.int32() == correlation_id
    if flexible:
        r.int8()  # response header tagged fields (empty)
    r.int32()  # throttle_time_ms
    return r.int16(), r.int64(), r.int16()


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int, values, base_timestamp: int | None = None):
    """An uncompressed batch of keyless records stamped with a producer id, epoch and base sequence."""
    b = record_batch([(None, v, ()) for v in values], base_timestamp)
    b = patch(b, BATCH_PRODUCER_ID, ">q", producer_id)
    b = patch(b, BATCH_PRODUCER_EPOCH, ">h", epoch)
    return patch(b, BATCH_BASE_SEQUENCE, ">i", base_sequence)


def batch_offsets(records: bytes | None):
    """[(base_offset, last_offset, attributes, producer_id)] of the batches in fetched bytes."""
    out = []
    pos = 0
    data = records or b""
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        attrs, delta = struct.unpack_from(">hi", data, pos + BATCH_ATTRIBUTES)
        pid = struct.unpack_from(">q", data, pos + BATCH_PRODUCER_ID)[0]
        out.append((base, base + delta, attrs, pid))
        pos += 12 + length
    return out


# --------------------------------------------------------------------------
# Transactions, data side: transactional batches, WriteTxnMarkers v1, ListOffsets v2 (isolation level),
# FindCoordinator v1, TxnOffsetCommit v3, OffsetFetch v7 (require_stable).
# --------------------------------------------------------------------------
API_FIND_COORDINATOR = 10
API_OFFSET_FETCH = 9
API_WRITE_TXN_MARKERS = 27
API_TXN_OFFSET_COMMIT = 28
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20


def transactional_batch(producer_id: int, epoch: int, base_sequence: int, values, base_timestamp: int | None = None):
    """An idempotent batch with the transactional attribute bit."""
    b = idempotent_batch(producer_id, epoch, base_sequence, values, base_timestamp)
    attrs = struct.unpack_from(">h", b, BATCH_ATTRIBUTES)[0]
    return patch(b, BATCH_ATTRIBUTES, ">h", attrs | ATTR_TRANSACTIONAL)


def _compact_array(items) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


class CompactReader(Reader):
    def uvarint(self) -> int:
        shift = n = 0
        while True:
            b = self.int8() & 0xFF
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def compact_string(self):
        n = self.uvarint() - 1
        if n < 0:
            return None
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def array_len(self) -> int:
        return self.uvarint() - 1

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def write_txn_markers(sock: socket.socket, correlation_id: int, markers):
    """WriteTxnMarkers v1. markers: list of dict(producer_id, producer_epoch, commit (bool), coordinator_epoch,
    topics={topic: [partitions]}). Returns {producer_id: {(topic, partition): error_code}}."""
    body = _compact_array([
        struct.pack(">qh?", m["producer_id"], m["producer_epoch"], m["commit"])
        + _compact_array([
            compact_string(t) + _compact_array([struct.pack(">i", p) for p in ps]) + b"\x00"
            for t, ps in m["topics"].items()])
        + struct.pack(">i", m["coordinator_epoch"]) + b"\x00"
        for m in markers]) + b"\x00"
    sock.sendall(request_frame(API_WRITE_TXN_MARKERS, 1, correlation_id, body, flexible_header=True))
    r = CompactReader(read_frame(sock))
    assert r.int32() == correlation_id
    r.tags()
    out = {}
    for _ in range(r.array_len()):
        pid = r.int64()
        res = out.setdefault(pid, {})
        for _ in range(r.array_len()):
            topic = r.compact_string()
            for _ in range(r.array_len()):
                p = r.int32()
                res[(topic, p)] = r.int16()
                r.tags()
            r.tags()
        r.tags()
    return out


def list_offsets_v2(sock: socket.socket, correlation_id: int, topic: str, partitions: dict,
                    isolation_level: int = 0):
    """ListOffsets v2. partitions: {index: timestamp (-1 latest, -2 earliest)}. Returns
    {partition: (error_code, timestamp, offset)}."""
    body = struct.pack(">ib", -1, isolation_level) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", len(partitions))
    for p, ts in partitions.items():
        body += struct.pack(">iq", p, ts)
    sock.sendall(request_frame(API_LIST_OFFSETS, 2, correlation_id, body))
    r = Reader(read_frame(sock))
    assert r.int32() == correlation_id
    r.int32()  # throttle
    out = {}
    for _ in range(r.int32()):
        r.string()
        for _ in range(r.int32()):
            p = r.int32()
            out[p] = (r.int16(), r.int64(), r.int64())
    return out


def find_coordinator(sock: socket.socket, correlation_id: int, key: str, key_type: int = 0, timeout: float = 30.0):
    """FindCoordinator v1, retried while the coordinator is loading. Returns the final error code."""
    deadline = time.monotonic() + timeout
    while True:
        body = string(key) + struct.pack(">b", key_type)
        sock.sendall(request_frame(API_FIND_COORDINATOR, 1, correlation_id, body))
        r = Reader(read_frame(sock))
        assert r.int32() == correlation_id
        r.int32()  # throttle
        err = r.int16()
        if err not in (14, 15) or time.monotonic() > deadline:  # COORDINATOR_LOAD_IN_PROGRESS / NOT_AVAILABLE
            return err
        time.sleep(0.1)


def txn_offset_commit(sock: socket.socket, correlation_id: int, transactional_id: str, group: str,
                      producer_id: int, producer_epoch: int, offsets: dict, generation_id: int = -1,
                      member_id: str = "", group_instance_id: str | None = None, version: int = 3):
    """TxnOffsetCommit v3+ (flexible). offsets: {(topic, partition): offset}. Returns {(topic, partition): error}."""
    by_topic: dict = {}
    for (t, p), o in offsets.items():
        by_topic.setdefault(t, []).append((p, o))
    body = compact_string(transactional_id) + compact_string(group) + struct.pack(">qhi", producer_id, producer_epoch,
                                                                                   generation_id)
    body += compact_string(member_id) + compact_string(group_instance_id)
    body += _compact_array([
        compact_string(t) + _compact_array([struct.pack(">iqi", p, o, -1)
                                            + compact_string("") + b"\x00" for p, o in ps]) + b"\x00"
        for t, ps in by_topic.items()]) + b"\x00"
    sock.sendall(request_frame(API_TXN_OFFSET_COMMIT, version, correlation_id, body, flexible_header=True))
    r = CompactReader(read_frame(sock))
    assert r.int32() == correlation_id
    r.tags()
    r.int32()  # throttle
    out = {}
    for _ in range(r.array_len()):
        t = r.compact_string()
        for _ in range(r.array_len()):
            p = r.int32()
            out[(t, p)] = r.int16()
            r.tags()
        r.tags()
    return out


def offset_fetch_v7(sock: socket.socket, correlation_id: int, group: str, topics: dict | None,
                    require_stable: bool = False):
    """OffsetFetch v7. topics: {topic: [partitions]} or None for all. Returns
    (error_code, {(topic, partition): (offset, error_code)})."""
    body = compact_string(group)
    if topics is None:
        body += uvarint(0)
    else:
        body += _compact_array([compact_string(t) + _compact_array([struct.pack(">i", p) for p in ps]) + b"\x00"
                                for t, ps in topics.items()])
    body += struct.pack(">?", require_stable) + b"\x00"
    sock.sendall(request_frame(API_OFFSET_FETCH, 7, correlation_id, body, flexible_header=True))
    r = CompactReader(read_frame(sock))
    assert r.int32() == correlation_id
    r.tags()
    r.int32()  # throttle
    out = {}
    for _ in range(r.array_len()):
        t = r.compact_string()
        for _ in range(r.array_len()):
            p = r.int32()
            offset = r.int64()
            r.int32()  # leader epoch
            r.compact_string()  # metadata
            out[(t, p)] = (offset, r.int16())
            r.tags()
        r.tags()
    err = r.int16()
    return err, out
