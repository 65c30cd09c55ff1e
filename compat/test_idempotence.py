"""Idempotent producer (issue 7, first part): InitProducerId, dedupe of retried
batches with their original offsets, sequence gaps, epoch fencing, and dedupe
that survives kill -9. Real clients (confluent-kafka, kafka-python) plus raw
protocol for the cases a well-behaved client never produces on purpose."""

from __future__ import annotations

import struct

import pytest
from confluent_kafka import Producer

import kafkawire
from conftest import unique
from helpers import consume_partitions, create_topic

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
NOT_COORDINATOR = 16

PRODUCER_ID = kafkawire.BATCH_PRODUCER_ID
BASE_SEQUENCE = kafkawire.BATCH_BASE_SEQUENCE
init_producer_id = kafkawire.init_producer_id
idem_batch = kafkawire.idempotent_batch


def send(sock, corr: int, topic: str, batch: bytes, version: int = 8):
    return kafkawire.produce(sock, version, corr, topic, {0: batch})[(topic, 0)]


def batches_in_log(port: int, topic: str):
    """(base_offset, producer_id, base_sequence, record_count) of every batch in partition 0."""
    out, offset = [], 0
    with kafkawire.connect(port) as s:
        while True:
            part = kafkawire.fetch_v4(s, 1000 + offset, topic, {0: offset})[(topic, 0)]
            assert part["error_code"] == 0, part
            data = part["records"] or b""
            if not data:
                return out
            pos = 0
            while pos + 61 <= len(data):
                base, length = struct.unpack_from(">qi", data, pos)
                if pos + 12 + length > len(data):
                    break
                pid, = struct.unpack_from(">q", data, pos + PRODUCER_ID)
                seq, count = struct.unpack_from(">ii", data, pos + BASE_SEQUENCE)
                out.append((base, pid, seq, count))
                offset = base + count
                pos += 12 + length


def test_confluent_idempotent_producer_writes_each_record_once_in_order(broker):
    topic = unique("idem-ck")
    create_topic(broker.bootstrap, topic)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "max.in.flight.requests.per.connection": 5})
    n = 10_000
    errors = []
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=0,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]
    msgs = consume_partitions(broker.bootstrap, topic, [0], n, timeout=60)
    assert [m.value() for m in msgs] == [str(i).encode() for i in range(n)]
    assert [m.offset() for m in msgs] == list(range(n))
    batches = batches_in_log(broker.port, topic)
    assert batches and all(pid >= 0 for _, pid, _, _ in batches), batches[:3]
    assert len({pid for _, pid, _, _ in batches}) == 1
    # The sequences are contiguous: batch i starts where batch i-1 ended.
    seqs = [(seq, count) for _, _, seq, count in batches]
    assert all(s == ps + pc for (ps, pc), (s, _) in zip(seqs, seqs[1:]))


def test_kafka_python_default_producer_is_idempotent(broker):
    from kafka import KafkaProducer
    topic = unique("idem-kp")
    create_topic(broker.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, request_timeout_ms=20000)
    futures = [p.send(topic, value=f"v{i}".encode(), partition=0) for i in range(500)]
    p.flush(30)
    offsets = [f.get(timeout=30).offset for f in futures]
    p.close()
    assert offsets == list(range(500))
    batches = batches_in_log(broker.port, topic)
    assert all(pid >= 0 for _, pid, _, _ in batches), "kafka-python's default producer should be idempotent"
    msgs = consume_partitions(broker.bootstrap, topic, [0], 500)
    assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(500)]


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_init_producer_id_versions(broker, version):
    with kafkawire.connect(broker.port) as s:
        err, pid, epoch = init_producer_id(s, 1, version=version)
        assert (err, epoch) == (0, 0) and pid >= 0
        if version >= 3:
            # KIP-360: an idempotent producer may send its id and epoch; it gets a fresh id.
            err2, pid2, epoch2 = init_producer_id(s, 2, producer_id=pid, producer_epoch=epoch, version=version)
            assert (err2, epoch2) == (0, 0) and pid2 != pid
            # Only one of the two set is malformed.
            assert init_producer_id(s, 3, producer_id=pid, version=version)[0] == 42


def test_producer_ids_are_unique_and_transactional_ids_need_their_coordinator(make_broker):
    b = make_broker()
    with kafkawire.connect(b.port) as s:
        ids = [init_producer_id(s, i) for i in range(1, 4)]
        assert all(err == 0 and epoch == 0 for err, _, epoch in ids), ids
        assert len({pid for _, pid, _ in ids}) == 3
        # A transactional id goes to its transaction coordinator, which does not exist before a FindCoordinator
        # created __transaction_state: NOT_COORDINATOR, as Kafka answers (test_transactions.py covers the rest).
        err, pid, epoch = init_producer_id(s, 9, transactional_id="txn-1")
        assert (err, pid, epoch) == (NOT_COORDINATOR, -1, -1)
        assert init_producer_id(s, 10, transactional_id="")[0] == 42  # INVALID_REQUEST
    # Ids are never reused, even after a crash.
    b.restart(kill=True)
    with kafkawire.connect(b.port) as s:
        err, pid, _ = init_producer_id(s, 1)
    assert err == 0 and pid > max(p for _, p, _ in ids)


def test_resent_batch_gets_its_original_offset_and_is_stored_once(broker):
    topic = unique("idem-dup")
    create_topic(broker.bootstrap, topic)
    with kafkawire.connect(broker.port) as s:
        err, pid, epoch = init_producer_id(s, 1)
        assert err == 0
        first = idem_batch(pid, epoch, 0, [b"a", b"b", b"c"])
        assert send(s, 2, topic, first)["base_offset"] == 0
        assert send(s, 3, topic, idem_batch(pid, epoch, 3, [b"d"]))["base_offset"] == 3
    # A retry on a new connection, as after a lost response.
    with kafkawire.connect(broker.port) as s:
        for corr in (4, 5):
            r = send(s, corr, topic, first)
            assert (r["error_code"], r["base_offset"]) == (0, 0), r
        r = send(s, 6, topic, idem_batch(pid, epoch, 3, [b"d"]))
        assert (r["error_code"], r["base_offset"]) == (0, 3), r
        assert send(s, 7, topic, idem_batch(pid, epoch, 4, [b"e"]))["base_offset"] == 4
    assert [(o, c) for o, _, _, c in batches_in_log(broker.port, topic)] == [(0, 3), (3, 1), (4, 1)]


def test_sequence_gap_is_out_of_order(broker):
    topic = unique("idem-gap")
    create_topic(broker.bootstrap, topic)
    with kafkawire.connect(broker.port) as s:
        _, pid, epoch = init_producer_id(s, 1)
        assert send(s, 2, topic, idem_batch(pid, epoch, 0, [b"a"]))["error_code"] == 0
        r = send(s, 3, topic, idem_batch(pid, epoch, 2, [b"c"]))
        assert r["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, r
        assert send(s, 4, topic, idem_batch(pid, epoch, 1, [b"b"]))["base_offset"] == 1
    assert len(batches_in_log(broker.port, topic)) == 2


def test_older_epoch_is_fenced(broker):
    topic = unique("idem-epoch")
    create_topic(broker.bootstrap, topic)
    with kafkawire.connect(broker.port) as s:
        _, pid, _ = init_producer_id(s, 1)
        assert send(s, 2, topic, idem_batch(pid, 1, 0, [b"new"]))["error_code"] == 0
        r = send(s, 3, topic, idem_batch(pid, 0, 1, [b"zombie"]))
        assert r["error_code"] == INVALID_PRODUCER_EPOCH, r
        # A bumped epoch must start again at sequence 0.
        r = send(s, 4, topic, idem_batch(pid, 2, 1, [b"x"]))
        assert r["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, r
        assert send(s, 5, topic, idem_batch(pid, 2, 0, [b"x"]))["base_offset"] == 1


def test_idempotent_batch_without_sequence_is_invalid(broker):
    topic = unique("idem-noseq")
    create_topic(broker.bootstrap, topic)
    with kafkawire.connect(broker.port) as s:
        _, pid, epoch = init_producer_id(s, 1)
        r = send(s, 2, topic, idem_batch(pid, epoch, -1, [b"a"]))
        assert r["error_code"] == 87, r  # INVALID_RECORD


@pytest.mark.parametrize("kill", [True, False], ids=["kill9", "clean-restart"])
def test_dedupe_survives_a_restart(make_broker, kill):
    b = make_broker()
    topic = unique("idem-crash")
    create_topic(b.bootstrap, topic)
    with kafkawire.connect(b.port) as s:
        _, pid, epoch = init_producer_id(s, 1)
        batches = [idem_batch(pid, epoch, i * 2, [b"x%d" % i, b"y%d" % i]) for i in range(3)]
        offsets = [send(s, 10 + i, topic, batch)["base_offset"] for i, batch in enumerate(batches)]
    assert offsets == [0, 2, 4]
    b.restart(kill=kill)
    with kafkawire.connect(b.port) as s:
        for i, batch in enumerate(batches):
            r = send(s, 20 + i, topic, batch)
            assert (r["error_code"], r["base_offset"]) == (0, offsets[i]), r
        r = send(s, 30, topic, idem_batch(pid, epoch, 7, [b"gap"]))
        assert r["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER, r
        assert send(s, 31, topic, idem_batch(pid, epoch, 6, [b"next"]))["base_offset"] == 6
    assert [o for o, _, _, _ in batches_in_log(b.port, topic)] == [0, 2, 4, 6]


def test_idle_producer_state_expires(make_broker):
    """producer.id.expiration.ms: an idle producer is forgotten, and its next batch is then accepted at any
    sequence, as Kafka accepts a producer it has no state for."""
    import time
    b = make_broker({"producer.id.expiration.ms": "1000", "producer.id.expiration.check.interval.ms": "100"})
    topic = unique("idem-expiry")
    create_topic(b.bootstrap, topic)
    with kafkawire.connect(b.port) as s:
        _, pid, epoch = init_producer_id(s, 1)
        assert send(s, 2, topic, idem_batch(pid, epoch, 0, [b"a"]))["error_code"] == 0
        assert send(s, 3, topic, idem_batch(pid, epoch, 5, [b"gap"]))["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER
        time.sleep(2.0)
        r = send(s, 4, topic, idem_batch(pid, epoch, 5, [b"after expiry"]))
        assert (r["error_code"], r["base_offset"]) == (0, 1), r


def test_producer_expiration_is_dynamic(make_broker):
    """producer.id.expiration.ms is a dynamic broker config in Kafka: lowering it at run time (per-broker
    IncrementalAlterConfigs) takes effect at the next expiry round, without a restart."""
    import time
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    b = make_broker({"producer.id.expiration.check.interval.ms": "100"})
    topic = unique("idem-expiry-dyn")
    create_topic(b.bootstrap, topic)
    with kafkawire.connect(b.port) as s:
        _, pid, epoch = init_producer_id(s, 1)
        assert send(s, 2, topic, idem_batch(pid, epoch, 0, [b"a"]))["error_code"] == 0
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        node = str(next(iter(admin.list_topics(timeout=10).brokers)))
        res = ConfigResource(ResourceType.BROKER, node, incremental_configs=[
            ConfigEntry("producer.id.expiration.ms", "500", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([res])[res].result(timeout=10)
        time.sleep(1.5)
        r = send(s, 4, topic, idem_batch(pid, epoch, 5, [b"after expiry"]))
        assert (r["error_code"], r["base_offset"]) == (0, 1), r


def test_confluent_idempotent_producer_across_broker_kill9_has_no_duplicates(make_broker):
    """librdkafka retries the batches in flight when the broker dies; after kill -9 and restart the broker rebuilds
    its producer state from the log, so a batch that was written before the crash is acknowledged, not written
    again: every record is in the log exactly once, in order."""
    import threading
    import time
    b = make_broker()
    topic = unique("idem-kill")
    create_topic(b.bootstrap, topic)
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2, "batch.num.messages": 200, "message.timeout.ms": 120000,
                  "retry.backoff.ms": 100, "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 500})
    n = 20_000
    errors = []
    sent = threading.Event()

    def produce_all():
        for i in range(n):
            while True:
                try:
                    p.produce(topic, value=str(i).encode(), partition=0,
                              on_delivery=lambda err, msg: err and errors.append(err))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            if i == n // 2:
                sent.set()
            if i % 1000 == 0:
                time.sleep(0.01)

    t = threading.Thread(target=produce_all)
    t.start()
    assert sent.wait(60)
    b.restart(kill=True)
    t.join(120)
    assert p.flush(120) == 0
    assert not errors, errors[:5]
    msgs = consume_partitions(b.bootstrap, topic, [0], n, timeout=60)
    values = [int(m.value()) for m in msgs]
    assert values == list(range(n)), f"{len(values)} records, first mismatch at " + str(
        next((i for i, (v, w) in enumerate(zip(values, range(n))) if v != w), None))
    assert [o for o, _, _, _ in batches_in_log(b.port, topic)][-1] < n
