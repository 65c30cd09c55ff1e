"""Broker-wide resource limits, with Kafka's configs (SocketServer / ConnectionQuotas).

- max.connections.per.ip (+ overrides): a connection over its address's limit
  is closed at once; the others keep working.
- max.connections: at the limit the broker stops accepting; a new connection
  waits in the listen backlog and is served once another one closes (Kafka
  blocks its acceptor the same way).
- connections.max.idle.ms: idle connections and half-sent frames (slowloris)
  are closed.
- fetch.max.bytes bounds the bytes of unwritten responses per connection: a
  client that pipelines large fetches and never reads does not take the
  broker's memory with it.
- Thousands of idle connections keep memory bounded and the broker serving.
"""

import resource
import socket
import struct
import time
from pathlib import Path

import pytest
import kafkawire as w
from conftest import unique
from helpers import create_topic

MiB = 1 << 20


def served(port: int, sock=None) -> bool:
    """ApiVersions answered (on `sock`, or on a new connection)."""
    s = sock or w.connect(port, timeout=30)
    try:
        _, err, _ = w.api_versions_v0(s, 7)
        return err == 0
    finally:
        if sock is None:
            s.close()


def eventually(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def connect_served(port: int, timeout: float = 30.0) -> socket.socket:
    """A connection the broker serves. Retried: the readiness probe's connection (or one the test closed) may still
    be counted against the per-IP limit for a moment after the client closed it."""
    deadline = time.monotonic() + timeout
    while True:
        s = w.connect(port, timeout=30)
        try:
            if served(port, s):
                return s
        except (ConnectionError, OSError, struct.error):
            pass
        s.close()
        assert time.monotonic() < deadline, "no connection was served"
        time.sleep(0.05)


def rss_bytes(broker) -> int:
    for line in Path(f"/proc/{broker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def closed_without_answer(sock, timeout: float = 30.0) -> bool:
    closed, got = w.wait_closed(sock, timeout=timeout)
    return closed and got == b""


def test_max_connections_per_ip_closes_the_extra_connection(make_broker):
    broker = make_broker({"max.connections.per.ip": "3"})
    held = [connect_served(broker.port) for _ in range(3)]
    try:
        extra = w.connect(broker.port)
        assert closed_without_answer(extra), "the connection over max.connections.per.ip was not closed"
        for s in held:
            assert served(broker.port, s)
        held.pop().close()
        held.append(connect_served(broker.port))
    finally:
        for s in held:
            s.close()
    assert "rejected connection" in broker.log_path.read_text()


def test_max_connections_per_ip_overrides(make_broker):
    broker = make_broker({"max.connections.per.ip": "0", "max.connections.per.ip.overrides": "127.0.0.1:2"})
    held = [connect_served(broker.port) for _ in range(2)]
    try:
        assert closed_without_answer(w.connect(broker.port))
    finally:
        for s in held:
            s.close()


def test_connection_limits_are_dynamic(make_broker):
    """As in Kafka, max.connections.per.ip is a dynamic broker config: lowering it applies to new connections
    at once (kafka-configs --alter --entity-type brokers), existing ones stay open; removing it restores the
    static value. Invalid values are INVALID_REQUEST."""
    from confluent_kafka import KafkaException, KafkaError
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                       ResourceType)

    broker = make_broker({"max.connections.per.ip": "100"})
    a = AdminClient({"bootstrap.servers": broker.bootstrap})

    def alter(key, value, op=AlterConfigOpType.SET):
        res = ConfigResource(ResourceType.BROKER, "1", incremental_configs=[
            ConfigEntry(key, value, incremental_operation=op)])
        return a.incremental_alter_configs([res])[res].result(30)

    with pytest.raises(KafkaException) as e:
        alter("max.connections.per.ip", "-1")
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    with pytest.raises(KafkaException) as e:
        alter("max.connections.per.ip.overrides", "127.0.0.1:x")
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    held = [connect_served(broker.port) for _ in range(2)]
    try:
        # The admin client holds connections of its own: the limit counts every connection from 127.0.0.1.
        alter("max.connections.per.ip", "2")
        eventually(lambda: closed_without_answer(w.connect(broker.port), timeout=5),
                   "a new connection over the lowered max.connections.per.ip")
        for s in held:
            assert served(broker.port, s), "an existing connection was closed by the lowered limit"
    finally:
        for s in held:
            s.close()
    # The admin client's own connection is still open: restore the limit through it.
    alter("max.connections.per.ip", None, AlterConfigOpType.DELETE)
    eventually(lambda: served(broker.port), "a new connection after the limit was removed")


def test_max_connections_waits_for_a_slot(make_broker):
    broker = make_broker({"max.connections": "2"})
    held = [w.connect(broker.port, timeout=30) for _ in range(2)]
    try:
        for s in held:
            assert served(broker.port, s)
        waiting = w.connect(broker.port, timeout=30)  # completes in the kernel's backlog
        held.append(waiting)
        waiting.sendall(w.request_frame(w.API_API_VERSIONS, 0, 9, b""))
        eventually(lambda: "max.connections reached" in broker.log_path.read_text(), "the limit to be reached")
        held.pop(0).close()
        # Accepted once a slot is free, and served.
        frame = w.read_frame(waiting)
        assert struct.unpack(">i", frame[:4])[0] == 9
        for s in held:
            assert served(broker.port, s)
    finally:
        for s in held:
            s.close()


def test_idle_connection_is_closed(make_broker):
    broker = make_broker({"connections.max.idle.ms": "300"})
    with w.connect(broker.port) as s:
        assert served(broker.port, s)
        assert closed_without_answer(s), "an idle connection stayed open"
    with w.connect(broker.port) as s:
        # Never sent anything.
        assert closed_without_answer(s)
    assert served(broker.port)


@pytest.mark.parametrize("partial", [b"\x00\x00", struct.pack(">i", 100) + b"\x00\x12\x00\x00"])
def test_half_sent_frame_is_closed(make_broker, partial):
    broker = make_broker({"connections.max.idle.ms": "300"})
    with w.connect(broker.port) as s:
        s.sendall(partial)
        assert closed_without_answer(s), "a half-sent frame kept the connection open"
    assert served(broker.port)


def fetch_v4_frame(correlation_id: int, topic: str, max_bytes: int) -> bytes:
    body = struct.pack(">iiii", -1, 0, 1, max_bytes) + struct.pack(">b", 0)
    body += struct.pack(">i", 1) + w.string(topic) + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, max_bytes)
    return w.request_frame(w.API_FETCH, 4, correlation_id, body)


def test_pipelined_large_fetches_never_read_keep_memory_bounded(make_broker):
    broker = make_broker()
    topic = unique("slow-reader")
    create_topic(broker.bootstrap, topic, partitions=1)
    value = b"x" * (1000 * 1000)
    with w.connect(broker.port, timeout=60) as p:
        for i in range(24):
            res = w.produce(p, 3, 100 + i, topic, {0: w.record_batch([(None, value, ())])}, acks=1)
            assert res[(topic, 0)]["error_code"] == 0
    baseline = rss_bytes(broker)
    # About 24 MB per fetch: 40 of them, computed at once, would be about a gigabyte.
    slow = socket.create_connection(("127.0.0.1", broker.port), timeout=30)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        slow.sendall(b"".join(fetch_v4_frame(1000 + i, topic, 100 * MiB) for i in range(40)))
        # Another client keeps being served meanwhile.
        with w.connect(broker.port, timeout=60) as c:
            got = w.fetch_v4(c, 5, topic, {0: 23}, max_bytes=2 * MiB, partition_max_bytes=2 * MiB)
            assert got[(topic, 0)]["error_code"] == 0 and got[(topic, 0)]["records"]
        # The broker's memory stays bounded whatever it gets to while the reader does not read.
        deadline = time.monotonic() + 5
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(broker))
            time.sleep(0.1)
        assert peak - baseline < 150 * MiB, f"RSS grew by {(peak - baseline) // MiB} MiB"
        assert broker.running()
    finally:
        slow.close()
    assert served(broker.port)


def test_thousands_of_idle_connections(make_broker):
    wanted = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The broker inherits the raised limit; it needs a descriptor per connection too.
    need = wanted + 500
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors this needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        broker = make_broker()
        baseline = rss_bytes(broker)
        conns = []
        try:
            for _ in range(wanted):
                conns.append(socket.create_connection(("127.0.0.1", broker.port), timeout=60))
            # All accepted: the last one is served, in order, after the others were accepted.
            assert served(broker.port, conns[-1])
            assert served(broker.port)
            topic = unique("many-conns")
            create_topic(broker.bootstrap, topic, partitions=1)
            with w.connect(broker.port, timeout=60) as p:
                res = w.produce(p, 3, 1, topic, {0: w.record_batch([(None, b"v", ())])}, acks=-1)
                assert res[(topic, 0)]["error_code"] == 0
            grown = rss_bytes(broker) - baseline
            assert grown < 150 * MiB, f"RSS grew by {grown // MiB} MiB for {wanted} idle connections"
        finally:
            for s in conns:
                s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
