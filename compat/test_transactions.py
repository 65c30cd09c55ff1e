"""Transactions with confluent-kafka's transactional producer (issue 7): commit and abort as read_committed and
read_uncommitted consumers see them, send_offsets_to_transaction with a consumer group, fencing by a second
producer with the same transactional.id, the coordinator aborting a transaction past its timeout, and a broker
kill -9 in the middle of a transaction (an ongoing one is aborted after the restart, a committed one stays
committed). The coordinator's state is checked with DescribeTransactions on the wire."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka.protocol.admin.transactions import DescribeTransactionsRequest

import kafkawire
from conftest import unique
from helpers import consume_partitions, create_topic, produce_sync

BROKER_OVERRIDES = {
    "transaction.state.log.num.partitions": "4",
    "offsets.topic.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}


def txn_producer(bootstrap: str, txn_id: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5,
            "transaction.timeout.ms": 60000}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    p = Producer(base)
    p.init_transactions(30)
    return p


def read(bootstrap, topic, partitions, isolation, expected, timeout=15.0):
    return [m.value() for m in consume_partitions(bootstrap, topic, partitions, expected, timeout,
                                                  **{"isolation.level": isolation})]


def describe(port: int, txn_id: str) -> dict:
    req = DescribeTransactionsRequest(transactional_ids=[txn_id])
    req.with_header(correlation_id=1, client_id="strom-compat")
    with kafkawire.connect(port) as s:
        s.sendall(req.encode(version=0, header=True, framed=True))
        frame = kafkawire.read_frame(s)
    resp = req.header.get_response_class().decode(frame, version=0, header=True)
    st = resp.transaction_states[0]
    return {"error_code": st.error_code, "state": st.transaction_state, "producer_id": st.producer_id,
            "epoch": st.producer_epoch,
            "partitions": sorted((t.topic, p) for t in st.topics for p in t.partitions)}


def wait_state(port, txn_id, states, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = describe(port, txn_id)
        if d["state"] in states or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def last_stable_offset(bootstrap, topic, partition=0) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lso-probe", "isolation.level": "read_committed"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


def test_commit_is_visible_to_read_committed(broker):
    topic = unique("txn-commit")
    create_topic(broker.bootstrap, topic, partitions=2)
    txn = unique("tid")
    p = txn_producer(broker.bootstrap, txn)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    d = describe(broker.port, txn)
    assert d["state"] in ("Ongoing", "Empty"), d  # librdkafka adds partitions as it sends
    p.commit_transaction(30)
    got = read(broker.bootstrap, topic, [0, 1], "read_committed", 10)
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(10))
    d = wait_state(broker.port, txn, ("CompleteCommit",))
    assert d["state"] == "CompleteCommit" and d["partitions"] == [], d
    # A second transaction on the same producer: same producer id, the epoch of librdkafka's transactions v1.
    p.begin_transaction()
    p.produce(topic, value=b"second", partition=0)
    p.commit_transaction(30)
    assert b"second" in read(broker.bootstrap, topic, [0, 1], "read_committed", 11)
    assert describe(broker.port, txn)["producer_id"] == d["producer_id"]


def test_abort_is_invisible_to_read_committed_only(broker):
    topic = unique("txn-abort")
    create_topic(broker.bootstrap, topic)
    p = txn_producer(broker.bootstrap, unique("tid"))
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, value=f"aborted{i}".encode())
    p.flush(10)
    # The open transaction holds read_committed consumers back (the last stable offset stays at its start).
    assert last_stable_offset(broker.bootstrap, topic) == 0
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, value=f"committed{i}".encode())
    p.commit_transaction(30)
    assert read(broker.bootstrap, topic, [0], "read_committed", 3) == [f"committed{i}".encode() for i in range(3)]
    uncommitted = read(broker.bootstrap, topic, [0], "read_uncommitted", 8)
    assert uncommitted == [f"aborted{i}".encode() for i in range(5)] + [f"committed{i}".encode() for i in range(3)]


def test_send_offsets_to_transaction_commits_them_with_it(broker):
    src, dst, group = unique("txn-in"), unique("txn-out"), unique("g")
    create_topic(broker.bootstrap, src)
    create_topic(broker.bootstrap, dst)
    produce_sync(Producer({"bootstrap.servers": broker.bootstrap}), src, [{"value": f"in{i}".encode()} for i in range(10)])
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "session.timeout.ms": 6000})
    c.subscribe([src])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen.append(m)
    assert len(seen) == 10
    p = txn_producer(broker.bootstrap, unique("tid"))

    def process(first_n, commit):
        p.begin_transaction()
        for m in seen[:first_n]:
            p.produce(dst, value=m.value().upper())
        offsets = [TopicPartition(src, 0, seen[first_n - 1].offset() + 1)]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)

    process(4, commit=False)  # aborted: neither the output nor the offsets count
    assert c.committed([TopicPartition(src, 0)], timeout=10)[0].offset < 0
    process(10, commit=True)
    committed = c.committed([TopicPartition(src, 0)], timeout=10)[0].offset
    assert committed == 10
    assert read(broker.bootstrap, dst, [0], "read_committed", 10) == [f"IN{i}".encode() for i in range(10)]
    c.close()


def test_second_producer_fences_the_first(broker):
    topic = unique("txn-fence")
    create_topic(broker.bootstrap, topic)
    txn = unique("tid")
    p1 = txn_producer(broker.bootstrap, txn)
    p1.begin_transaction()
    p1.produce(topic, value=b"zombie")
    p1.flush(10)
    before = describe(broker.port, txn)
    assert before["state"] == "Ongoing", before
    # The second producer's InitProducerId aborts the first one's transaction and bumps the epoch.
    p2 = txn_producer(broker.bootstrap, txn)
    after = describe(broker.port, txn)
    assert after["producer_id"] == before["producer_id"] and after["epoch"] >= before["epoch"] + 2, (before, after)
    with pytest.raises(KafkaException) as exc:
        p1.produce(topic, value=b"zombie-2")
        p1.commit_transaction(10)
    err = exc.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err
    p2.begin_transaction()
    p2.produce(topic, value=b"live")
    p2.commit_transaction(30)
    assert read(broker.bootstrap, topic, [0], "read_committed", 1) == [b"live"]


def test_coordinator_aborts_a_transaction_past_its_timeout(broker):
    topic = unique("txn-timeout")
    create_topic(broker.bootstrap, topic)
    txn = unique("tid")
    p = txn_producer(broker.bootstrap, txn, transaction_timeout_ms=1500)
    p.begin_transaction()
    p.produce(topic, value=b"too-slow")
    p.flush(10)
    epoch = describe(broker.port, txn)["epoch"]
    d = wait_state(broker.port, txn, ("CompleteAbort",), timeout=15)
    # Aborted by the coordinator with a bumped epoch: the producer that let it time out is fenced.
    assert d["state"] == "CompleteAbort" and d["epoch"] > epoch, d
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    assert last_stable_offset(broker.bootstrap, topic) == 2  # the data batch and the abort marker
    assert read(broker.bootstrap, topic, [0], "read_committed", 0, timeout=2) == []


def test_kill9_mid_transaction_aborts_ongoing_and_keeps_committed(make_broker):
    b = make_broker({**BROKER_OVERRIDES})
    topic = unique("txn-crash")
    create_topic(b.bootstrap, topic)
    committed_txn, open_txn = unique("tid-c"), unique("tid-o")
    pc = txn_producer(b.bootstrap, committed_txn)
    pc.begin_transaction()
    for i in range(3):
        pc.produce(topic, value=f"kept{i}".encode())
    pc.commit_transaction(30)
    po = txn_producer(b.bootstrap, open_txn, transaction_timeout_ms=3000)
    po.begin_transaction()
    po.produce(topic, value=b"lost")
    po.flush(10)
    assert describe(b.port, open_txn)["state"] == "Ongoing"
    b.kill9()
    b.start()
    # The reloaded coordinator finds the ongoing transaction and aborts it when it times out.
    d = wait_state(b.port, open_txn, ("CompleteAbort",), timeout=30)
    assert d["state"] == "CompleteAbort", d
    assert wait_state(b.port, committed_txn, ("CompleteCommit",))["state"] == "CompleteCommit"
    assert read(b.bootstrap, topic, [0], "read_committed", 3) == [f"kept{i}".encode() for i in range(3)]
    # The restarted broker serves the same transactional id again.
    p = txn_producer(b.bootstrap, committed_txn)
    p.begin_transaction()
    p.produce(topic, value=b"after")
    p.commit_transaction(30)
    assert read(b.bootstrap, topic, [0], "read_committed", 4)[-1] == b"after"


def test_idle_transactional_id_expires(make_broker):
    b = make_broker({**BROKER_OVERRIDES, "transactional.id.expiration.ms": "1000",
                     "transaction.remove.expired.transaction.cleanup.interval.ms": "300"})
    topic = unique("txn-expire")
    create_topic(b.bootstrap, topic)
    txn = unique("tid")
    p = txn_producer(b.bootstrap, txn)
    p.begin_transaction()
    p.produce(topic, value=b"x")
    p.commit_transaction(30)
    first = wait_state(b.port, txn, ("CompleteCommit",))
    deadline = time.monotonic() + 15
    while describe(b.port, txn)["error_code"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert describe(b.port, txn)["error_code"] == 105  # TRANSACTIONAL_ID_NOT_FOUND
    # A producer coming back with the expired id starts afresh, with a new producer id.
    p2 = txn_producer(b.bootstrap, txn)
    again = describe(b.port, txn)
    assert again["error_code"] == 0 and again["producer_id"] != first["producer_id"] and again["epoch"] == 0, again
    p2.begin_transaction()
    p2.produce(topic, value=b"y")
    p2.commit_transaction(30)


def test_kafka_python_admin_describes_producers_and_aborts_a_hanging_transaction(broker):
    """kafka-transactions.sh's describe-producers and abort, through kafka-python's admin client: the partition
    leader lists the confluent producer with its open transaction's start offset; an admin abort (WriteTxnMarkers
    to the leader) ends it there, so read_committed consumers move past the aborted records."""
    from kafka import KafkaAdminClient
    from kafka.admin import AbortTransactionSpec
    from kafka.structs import TopicPartition as KTopicPartition

    topic = unique("txn-hanging")
    create_topic(broker.bootstrap, topic)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    produce_sync(plain, topic, [{"value": b"before"}])
    p = txn_producer(broker.bootstrap, unique("tid"))
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, value=f"stuck{i}".encode())
    p.flush(10)
    assert last_stable_offset(broker.bootstrap, topic) == 1

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        tp = KTopicPartition(topic, 0)
        state = admin.describe_producers([tp])[tp].active_producers
        open_txns = [s for s in state if s.current_transaction_start_offset >= 0]
        assert len(open_txns) == 1, state
        hanging = open_txns[0]
        assert (hanging.current_transaction_start_offset, hanging.last_sequence) == (1, 3), hanging
        admin.abort_transaction(AbortTransactionSpec(tp, hanging.producer_id, hanging.producer_epoch,
                                                     hanging.coordinator_epoch))
        after = {s.producer_id: s for s in admin.describe_producers([tp])[tp].active_producers}
        assert after[hanging.producer_id].current_transaction_start_offset == -1, after
    finally:
        admin.close()
    # The abort marker sits at offset 5: the last stable offset is past it, and the stuck records are skipped.
    assert last_stable_offset(broker.bootstrap, topic) == 6
    produce_sync(plain, topic, [{"value": b"after"}])
    assert read(broker.bootstrap, topic, [0], "read_committed", 2) == [b"before", b"after"]
