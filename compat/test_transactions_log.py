"""Transactions, data side (issue 7), through the raw protocol: transactional batches, the COMMIT/ABORT markers
the transaction coordinator writes (WriteTxnMarkers), the last stable offset holding read_committed consumers
back, aborted_transactions in Fetch, ListOffsets with read_committed, TxnOffsetCommit made visible only by its
COMMIT marker, OffsetFetch require_stable, and all of it across a broker kill -9.

Producer ids come from InitProducerId (idempotent), so no transaction coordinator is involved: the test plays the
coordinator's part by sending the markers itself."""

from __future__ import annotations

import threading

import pytest

import kafkawire
from conftest import unique
from helpers import create_topic

# One __consumer_offsets partition, so a group's offsets partition is 0.
# These scenarios play the transaction coordinator themselves (WriteTxnMarkers by hand), so the broker must not
# check transactional writes with its own coordinator (KIP-890), as Kafka with this setting does not.
BROKER_OVERRIDES = {"offsets.topic.num.partitions": "1", "transaction.partition.verification.enable": "false"}

INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
TRANSACTION_COORDINATOR_FENCED = 52
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSTABLE_OFFSET_COMMIT = 88
READ_UNCOMMITTED, READ_COMMITTED = 0, 1
LATEST = -1


class Wire:
    """One connection with its own correlation ids."""

    def __init__(self, port: int):
        self.sock = kafkawire.connect(port)
        self.corr = 0

    def next(self) -> int:
        self.corr += 1
        return self.corr

    def close(self):
        self.sock.close()

    def producer(self) -> int:
        err, pid, epoch = kafkawire.init_producer_id(self.sock, self.next())
        assert (err, epoch) == (0, 0)
        return pid

    def produce(self, topic: str, batch: bytes, partition: int = 0, transactional_id: str | None = None):
        return kafkawire.produce(self.sock, 8, self.next(), topic, {partition: batch},
                                 transactional_id=transactional_id)[(topic, partition)]

    def marker(self, pid: int, commit: bool, topics: dict, epoch: int = 0, coordinator_epoch: int = 0):
        res = kafkawire.write_txn_markers(self.sock, self.next(), [dict(
            producer_id=pid, producer_epoch=epoch, commit=commit, coordinator_epoch=coordinator_epoch,
            topics=topics)])
        return res[pid]

    def fetch(self, topic: str, offset: int, isolation: int, max_wait_ms: int = 0):
        return kafkawire.fetch_v4(self.sock, self.next(), topic, {0: offset}, max_wait_ms=max_wait_ms,
                                  isolation_level=isolation)[(topic, 0)]

    def latest(self, topic: str, isolation: int) -> int:
        err, _, offset = kafkawire.list_offsets_v2(self.sock, self.next(), topic, {0: LATEST}, isolation)[0]
        assert err == 0
        return offset


def txn(pid: int, seq: int, *values: bytes) -> bytes:
    return kafkawire.transactional_batch(pid, 0, seq, list(values))


def offsets_of(part) -> list[tuple[int, int]]:
    return [(base, last) for base, last, _, _ in kafkawire.batch_offsets(part["records"])]


def test_lso_holds_read_committed_back_and_aborted_data_is_listed(broker):
    topic = unique("txn")
    create_topic(broker.bootstrap, topic, 1)
    w = Wire(broker.port)
    a, b = w.producer(), w.producer()
    assert w.produce(topic, kafkawire.record_batch([(None, b"plain", ())]))["base_offset"] == 0
    assert w.produce(topic, txn(a, 0, b"a1", b"a2"), transactional_id="ta")["error_code"] == 0  # 1-2
    assert w.produce(topic, txn(b, 0, b"b1"), transactional_id="tb")["error_code"] == 0  # 3
    assert w.produce(topic, txn(a, 2, b"a3"), transactional_id="ta")["base_offset"] == 4

    # Two open transactions: the LSO is the first offset of the oldest.
    uncommitted = w.fetch(topic, 0, READ_UNCOMMITTED)
    assert (uncommitted["high_watermark"], uncommitted["last_stable_offset"]) == (5, 1)
    assert offsets_of(uncommitted)[-1] == (4, 4)
    committed = w.fetch(topic, 0, READ_COMMITTED)
    assert committed["last_stable_offset"] == 1
    assert offsets_of(committed) == [(0, 0)]
    assert committed["aborted"] == []
    assert (w.latest(topic, READ_COMMITTED), w.latest(topic, READ_UNCOMMITTED)) == (1, 5)

    # A plain write from a producer with an open transaction would interleave with it.
    assert w.produce(topic, kafkawire.idempotent_batch(a, 0, 3, [b"x"]))["error_code"] == INVALID_TXN_STATE

    # A read_committed long-poll at the LSO is woken by the marker that moves it.
    woken = {}

    def poll():
        other = Wire(broker.port)
        try:
            woken["part"] = other.fetch(topic, 1, READ_COMMITTED, max_wait_ms=20_000)
        finally:
            other.close()

    t = threading.Thread(target=poll)
    t.start()
    assert w.marker(a, False, {topic: [0]}) == {(topic, 0): 0}  # ABORT at 5
    t.join(15)
    assert not t.is_alive(), "the marker did not wake the read_committed long-poll"
    part = woken["part"]
    # b's transaction (from 3) still holds the LSO.
    assert part["last_stable_offset"] == 3
    assert offsets_of(part) == [(1, 2)]
    assert part["aborted"] == [(a, 1)]

    assert w.marker(b, True, {topic: [0]}) == {(topic, 0): 0}  # COMMIT at 6
    full = w.fetch(topic, 0, READ_COMMITTED)
    assert (full["high_watermark"], full["last_stable_offset"]) == (7, 7)
    batches = kafkawire.batch_offsets(full["records"])
    assert [(base, last) for base, last, _, _ in batches] == [(0, 0), (1, 2), (3, 3), (4, 4), (5, 5), (6, 6)]
    control = [(base, pid) for base, _, attrs, pid in batches if attrs & kafkawire.ATTR_CONTROL]
    assert control == [(5, a), (6, b)]
    assert full["aborted"] == [(a, 1)]
    assert w.fetch(topic, 0, READ_UNCOMMITTED)["aborted"] is None
    assert w.latest(topic, READ_COMMITTED) == 7
    w.close()


def test_marker_epochs_are_checked(broker):
    topic = unique("txn")
    create_topic(broker.bootstrap, topic, 1)
    w = Wire(broker.port)
    pid = w.producer()
    assert w.produce(topic, txn(pid, 0, b"v"), transactional_id="t")["error_code"] == 0
    # The coordinator bumped the epoch (KIP-890): the marker with epoch 1 ends the transaction and fences epoch 0.
    assert w.marker(pid, True, {topic: [0, 9]}, epoch=1, coordinator_epoch=3) == {
        (topic, 0): 0, (topic, 9): UNKNOWN_TOPIC_OR_PARTITION}
    assert w.marker(pid, True, {topic: [0]}, epoch=1, coordinator_epoch=2) == {
        (topic, 0): TRANSACTION_COORDINATOR_FENCED}
    assert w.marker(pid, False, {topic: [0]}, epoch=0, coordinator_epoch=3) == {(topic, 0): INVALID_PRODUCER_EPOCH}
    assert w.produce(topic, txn(pid, 1, b"late"), transactional_id="t")["error_code"] == INVALID_PRODUCER_EPOCH
    # A marker for a producer the partition never saw is written (an empty transaction here).
    assert w.marker(pid + 1000, False, {topic: [0]}) == {(topic, 0): 0}
    part = w.fetch(topic, 0, READ_COMMITTED)
    assert (part["high_watermark"], part["last_stable_offset"], part["aborted"]) == (3, 3, [])
    w.close()


def test_open_transaction_and_aborted_index_survive_kill9(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic = unique("txn")
    create_topic(b.bootstrap, topic, 1)
    w = Wire(b.port)
    a, c = w.producer(), w.producer()
    w.produce(topic, txn(a, 0, b"a1"), transactional_id="ta")  # 0
    w.produce(topic, txn(c, 0, b"c1"), transactional_id="tc")  # 1
    assert w.marker(a, False, {topic: [0]}) == {(topic, 0): 0}  # ABORT at 2, c still open
    w.close()
    b.restart(kill=True)

    w = Wire(b.port)
    part = w.fetch(topic, 0, READ_COMMITTED)
    assert (part["high_watermark"], part["last_stable_offset"]) == (3, 1)
    assert offsets_of(part) == [(0, 0)]
    assert part["aborted"] == [(a, 0)]
    # The open transaction was restored: the marker still closes it.
    assert w.produce(topic, kafkawire.idempotent_batch(c, 0, 1, [b"x"]))["error_code"] == INVALID_TXN_STATE
    assert w.marker(c, True, {topic: [0]}) == {(topic, 0): 0}
    part = w.fetch(topic, 0, READ_COMMITTED)
    assert (part["last_stable_offset"], part["aborted"]) == (4, [(a, 0)])
    w.close()
    # A clean restart loads the snapshot and the .txnindex files instead of replaying.
    b.restart()
    w = Wire(b.port)
    part = w.fetch(topic, 0, READ_COMMITTED)
    assert (part["high_watermark"], part["last_stable_offset"], part["aborted"]) == (4, 4, [(a, 0)])
    w.close()


def group_offsets(w: Wire, group: str, topic: str, require_stable: bool):
    err, out = kafkawire.offset_fetch_v7(w.sock, w.next(), group, {topic: [0]}, require_stable)
    assert err == 0
    return out[(topic, 0)]


def test_txn_offset_commit_is_visible_only_after_commit_and_survives_kill9(make_broker):
    b = make_broker(BROKER_OVERRIDES)
    topic, group = unique("in"), unique("g")
    create_topic(b.bootstrap, topic, 1)
    w = Wire(b.port)
    assert kafkawire.find_coordinator(w.sock, w.next(), group) == 0
    pid = w.producer()

    def commit_offset(offset: int):
        errs = kafkawire.txn_offset_commit(w.sock, w.next(), "tx", group, pid, 0, {(topic, 0): offset})
        assert errs == {(topic, 0): 0}

    offsets_partition = {"__consumer_offsets": [0]}
    commit_offset(5)
    assert group_offsets(w, group, topic, require_stable=True) == (-1, UNSTABLE_OFFSET_COMMIT)
    assert group_offsets(w, group, topic, require_stable=False) == (-1, 0)
    assert w.marker(pid, True, offsets_partition) == {("__consumer_offsets", 0): 0}
    assert group_offsets(w, group, topic, require_stable=True) == (5, 0)

    commit_offset(9)
    assert w.marker(pid, False, offsets_partition) == {("__consumer_offsets", 0): 0}
    assert group_offsets(w, group, topic, require_stable=True) == (5, 0)

    # An unknown partition is refused per partition.
    errs = kafkawire.txn_offset_commit(w.sock, w.next(), "tx", group, pid, 0, {(topic, 3): 1})
    assert errs == {(topic, 3): UNKNOWN_TOPIC_OR_PARTITION}

    commit_offset(12)  # left open across the crash
    w.close()
    b.restart(kill=True)
    w = Wire(b.port)
    assert kafkawire.find_coordinator(w.sock, w.next(), group) == 0
    assert group_offsets(w, group, topic, require_stable=True) == (-1, UNSTABLE_OFFSET_COMMIT)
    assert group_offsets(w, group, topic, require_stable=False) == (5, 0)
    assert w.marker(pid, True, offsets_partition) == {("__consumer_offsets", 0): 0}
    assert group_offsets(w, group, topic, require_stable=True) == (12, 0)
    w.close()
    # The markers and the transactional records load the same way after a clean restart.
    b.restart()
    w = Wire(b.port)
    assert kafkawire.find_coordinator(w.sock, w.next(), group) == 0
    assert group_offsets(w, group, topic, require_stable=True) == (12, 0)
    w.close()


@pytest.mark.parametrize("generation, member, expected", [(-1, "", 0), (3, "nobody", 22)])
def test_txn_offset_commit_checks_the_group_generation(broker, generation, member, expected):
    """v3+: a commit naming a generation needs a group that has it (ILLEGAL_GENERATION for an unknown group)."""
    topic, group = unique("in"), unique("g")
    create_topic(broker.bootstrap, topic, 1)
    w = Wire(broker.port)
    assert kafkawire.find_coordinator(w.sock, w.next(), group) == 0
    pid = w.producer()
    errs = kafkawire.txn_offset_commit(w.sock, w.next(), "tx", group, pid, 0, {(topic, 0): 1},
                                       generation_id=generation, member_id=member)
    assert errs == {(topic, 0): expected}
    w.close()


def test_txn_offset_commit_from_a_fenced_epoch_is_refused_and_leaves_nothing_pending(broker):
    topic, group = unique("in"), unique("g")
    create_topic(broker.bootstrap, topic, 1)
    w = Wire(broker.port)
    assert kafkawire.find_coordinator(w.sock, w.next(), group) == 0
    pid = w.producer()
    assert kafkawire.txn_offset_commit(w.sock, w.next(), "tx", group, pid, 0, {(topic, 0): 3}) == {(topic, 0): 0}
    # KIP-890: the coordinator ends the transaction with the bumped epoch 1.
    assert w.marker(pid, True, {"__consumer_offsets": [0]}, epoch=1) == {("__consumer_offsets", 0): 0}
    errs = kafkawire.txn_offset_commit(w.sock, w.next(), "tx", group, pid, 0, {(topic, 0): 8})
    assert errs == {(topic, 0): INVALID_PRODUCER_EPOCH}
    assert group_offsets(w, group, topic, require_stable=True) == (3, 0)
    w.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_real_consumers_skip_aborted_and_unstable_records(broker, client):
    """librdkafka and kafka-python filter with our aborted_transactions and stop at the LSO."""
    topic = unique("txn")
    create_topic(broker.bootstrap, topic, 1)
    w = Wire(broker.port)
    a, b, c = w.producer(), w.producer(), w.producer()
    w.produce(topic, txn(a, 0, b"a1", b"a2"), transactional_id="ta")  # 0-1
    w.produce(topic, txn(b, 0, b"b1"), transactional_id="tb")  # 2
    w.marker(a, False, {topic: [0]})  # 3
    w.produce(topic, kafkawire.record_batch([(None, b"p", ())]))  # 4
    w.marker(b, True, {topic: [0]})  # 5
    w.produce(topic, txn(c, 0, b"c1"), transactional_id="tc")  # 6: open, holds the LSO
    w.close()

    def read(isolation: str, expected: int) -> list[bytes]:
        if client == "confluent":
            from helpers import consume_partitions
            msgs = consume_partitions(broker.bootstrap, topic, [0], expected, timeout=15, isolation_level=isolation)
            return [m.value() for m in msgs]
        from kafka import KafkaConsumer, TopicPartition
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level=isolation,
                                 auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
        try:
            consumer.assign([TopicPartition(topic, 0)])
            return [m.value for m in consumer]
        finally:
            consumer.close()

    assert read("read_committed", 2) == [b"b1", b"p"]
    assert read("read_uncommitted", 5) == [b"a1", b"a2", b"b1", b"p", b"c1"]
