"""Differential scenarios for transactions (exactly-once, issue 7) with real
clients: confluent-kafka's read-process-write loop killed with SIGKILL and
restarted until all input is processed (each input exactly once in `out`, in
order per key), zombie fencing by a second producer with the same
transactional.id, aborted transactions and the last stable offset (LSO) seen
by read_committed and read_uncommitted consumers, a transactional batch
resent on a new connection (raw protocol: deduplicated, original offset), and
kafka-python's and aiokafka's transactional producers.

Only what should be equal on both brokers goes into an observation (error
names, records seen, offsets); producer ids and timings go into the notes of
the report (target/differential/report.md).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

import pytest

import kafkawire
import wire
from conftest import unique
from obs import both

HERE = Path(__file__).resolve().parent
WORKER = HERE / "txn_worker.py"

READ_UNCOMMITTED, READ_COMMITTED = 0, 1


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module", autouse=True)
def transaction_coordinators_ready(targets):
    """Wait until each broker's transaction coordinator has loaded all its __transaction_state partitions.

    The first FindCoordinator for a transactional id creates __transaction_state (50 partitions on Kafka),
    which Kafka then loads asynchronously; a transaction begun while partitions are still loading once got
    NOT_COORDINATOR / INVALID_PRODUCER_ID_MAPPING from a fresh Kafka on its second AddPartitionsToTxn.
    ListTransactions answers COORDINATOR_LOAD_IN_PROGRESS until every partition is loaded."""
    from kafka.protocol.admin.transactions import ListTransactionsRequest
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
    for t in targets:
        _retry(lambda: wire.request(t, FindCoordinatorRequest(key="warm-up", key_type=1), 3), timeout=30)
        if 66 in wire.api_versions(t):  # ListTransactions
            _retry(lambda: wire.request(t, ListTransactionsRequest(
                state_filters=[], producer_id_filters=[]), 0), timeout=60)


def make_topic(t, name, partitions=1):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions)])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)


def txn_producer(t, txn_id, **extra):
    return Producer({"bootstrap.servers": t.bootstrap, "transactional.id": txn_id,
                     "transaction.timeout.ms": 10000, "linger.ms": 5, **extra})


def read_all(t, topic, partitions=1, isolation="read_committed", timeout=20.0):
    """Everything a fresh assign()-only consumer reads from the beginning until it has reached the end of
    every partition (librdkafka's partition EOF: the high watermark, or the LSO for read_committed).
    Returns {partition: [(offset, key, value), ...]}."""
    c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 50})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    at_end = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(at_end) == partitions:
                    break
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                raise KafkaException(m.error())
            at_end.discard(m.partition())
            out[m.partition()].append((m.offset(), _s(m.key()), _s(m.value())))
        else:
            raise AssertionError(f"{t.name}: {topic} not read to the end in {timeout}s ({isolation})")
    finally:
        c.close()
    return out


def _s(b):
    return None if b is None else b.decode()


def values(recs):
    return [v for p in sorted(recs) for (_, _, v) in recs[p]]


def kafka_error(e: KafkaException) -> dict:
    """What librdkafka says about a failed transactional call."""
    ke = e.args[0]
    return {"name": ke.name(), "fatal": ke.fatal(), "retriable": ke.retriable(),
            "txn_requires_abort": ke.txn_requires_abort()}


def lso(t, topic, partition=0):
    """(high watermark, last stable offset) through ListOffsets latest at both isolation levels."""
    hw = wire.list_offsets(t, topic, {partition: -1}, isolation_level=READ_UNCOMMITTED)
    ls = wire.list_offsets(t, topic, {partition: -1}, isolation_level=READ_COMMITTED)
    return hw.topics[0].partitions[0].offset, ls.topics[0].partitions[0].offset


def wait_lso(t, topic, want, partition=0, timeout=15.0):
    """Wait until the LSO reaches `want` (Kafka writes the markers after EndTxn answers); returns seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if lso(t, topic, partition)[1] >= want:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{t.name}: LSO of {topic}-{partition} stuck at {lso(t, topic, partition)}, want {want}")


# ------------------------------------------------- read-process-write + SIGKILL
RPW_RECORDS = 2000
RPW_PARTITIONS = 3
RPW_KEYS = 40
RPW_KILLS = 9
RPW_SEED = 20261124


def _run_worker_until_done(t, in_topic, out_topic, group, txn_id, logdir: Path):
    """Start the worker, SIGKILL it after a seeded random delay, restart, ...; after RPW_KILLS kills let it
    finish. Returns (kills, failed exits [(run, last line)], transactions committed per run, seconds)."""
    rng = random.Random(RPW_SEED)
    kills, failures, run = 0, [], 0
    progress = []  # transactions committed by each run, for the notes
    t0 = time.monotonic()
    cmd = [sys.executable, str(WORKER), t.bootstrap, in_topic, out_topic, group, txn_id, "25"]
    while True:
        run += 1
        log = logdir / f"worker-{t.name}-{run}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        limit = rng.uniform(0.4, 2.5) if kills < RPW_KILLS else 40.0
        try:
            code = p.wait(limit)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if p.poll() is None:  # also when the test is interrupted (pytest-timeout): no orphaned worker
                p.kill()  # SIGKILL: no clean shutdown, the open transaction stays open
                p.wait()
        progress.append(log.read_text(errors="replace").count("committed "))
        if code is None:
            if kills >= RPW_KILLS:
                raise AssertionError(f"{t.name}: worker did not finish in 40s; log {log}:\n"
                                     f"{log.read_text(errors='replace')[-3000:]}")
            kills += 1
            continue
        if code == 0:
            return kills, failures, progress, time.monotonic() - t0
        lines = log.read_text(errors="replace").strip().splitlines()
        failures.append((run, lines[-1] if lines else f"exit {code}"))
        if len(failures) > 2:
            raise AssertionError(f"{t.name}: worker keeps failing: {failures}")


def test_read_process_write_sigkill_exactly_once(targets, differ, tmp_path):
    """Feed `in` with keyed records; the transactional worker consumes (read_committed, group offsets sent to
    the transaction), writes `out`, commits; it is killed with SIGKILL at random points and restarted until
    all input is processed. `out` read with read_committed holds each input exactly once, in order per key."""
    in_topic, out_topic, group, txn_id = unique("rpw-in"), unique("rpw-out"), unique("rpw-g"), unique("rpw-txn")
    notes = []

    def run(t):
        make_topic(t, in_topic, RPW_PARTITIONS)
        make_topic(t, out_topic, RPW_PARTITIONS)
        p = Producer({"bootstrap.servers": t.bootstrap, "linger.ms": 20})
        for i in range(RPW_RECORDS):
            p.produce(in_topic, key=f"k{i % RPW_KEYS:02d}", value=str(i))
        assert p.flush(30) == 0
        kills, failures, progress, secs = _run_worker_until_done(t, in_topic, out_topic, group, txn_id, tmp_path)
        committed = read_all(t, out_topic, RPW_PARTITIONS, "read_committed", timeout=30)
        uncommitted = read_all(t, out_topic, RPW_PARTITIONS, "read_uncommitted", timeout=30)
        seen = Counter()
        out_of_order = set()
        last = {}
        for part in committed.values():
            for _, key, value in part:
                i = int(value.removeprefix("out:"))
                seen[i] += 1
                if f"k{i % RPW_KEYS:02d}" != key:
                    out_of_order.add(key)
                if key in last and last[key] >= i:
                    out_of_order.add(key)
                last[key] = i
        # The group's committed offsets (sent in the transactions) are at the end of `in`.
        c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": group, "isolation.level": "read_committed"})
        offsets = c.committed([TopicPartition(in_topic, q) for q in range(RPW_PARTITIONS)], timeout=10)
        ends = [c.get_watermark_offsets(TopicPartition(in_topic, q), timeout=10)[1] for q in range(RPW_PARTITIONS)]
        c.close()
        n_unc = sum(len(v) for v in uncommitted.values())
        notes.append(f"{t.name}: {kills} SIGKILLs, {len(failures)} failed exits {failures}, {secs:.1f}s; "
                     f"transactions committed per run {progress}; "
                     f"read_uncommitted sees {n_unc} records in out (aborted duplicates included)")
        return {
            "input_records": RPW_RECORDS,
            "out_read_committed": sum(seen.values()),
            "missing": sum(1 for i in range(RPW_RECORDS) if seen[i] == 0),
            "duplicated": sum(1 for i in range(RPW_RECORDS) if seen[i] > 1),
            "keys_out_of_order": sorted(out_of_order),
            "read_uncommitted_at_least_committed": n_unc >= sum(seen.values()),
            "group_offsets_at_end": [o.offset for o in offsets] == ends,
            "failed_worker_exits": [line for _, line in failures],
        }

    k, s = both(targets, run)
    for n in notes:
        print(n)
    differ.check("txn-read-process-write-sigkill", k, s, notes=notes)
    assert k["missing"] == 0 and k["duplicated"] == 0 and not k["keys_out_of_order"], k


# ------------------------------------------------------------------- fencing
def test_fencing_confluent(targets, differ):
    """A second producer with the same transactional.id fences the first: the first's commit fails with a
    fencing error, its records are never visible to read_committed (read_uncommitted sees them)."""
    topic, txn_id = unique("fence"), unique("fence-txn")
    notes = []

    def run(t):
        make_topic(t, topic)
        first = txn_producer(t, txn_id)
        first.init_transactions(20)
        first.begin_transaction()
        for i in range(3):
            first.produce(topic, key=b"z", value=f"zombie-{i}".encode())
        assert first.flush(10) == 0
        second = txn_producer(t, txn_id)
        t0 = time.monotonic()
        second.init_transactions(20)  # bumps the epoch; the coordinator aborts the first's transaction
        init_secs = time.monotonic() - t0
        out = {}
        try:
            first.commit_transaction(10)
            out["first_commit"] = "committed"
        except KafkaException as e:
            out["first_commit"] = kafka_error(e)
            notes.append(f"{t.name}: first producer's commit: {e}")
        try:
            first.produce(topic, value=b"after-fence")
            first.flush(5)
            out["first_produce_after_fence"] = "accepted"
        except KafkaException as e:
            out["first_produce_after_fence"] = kafka_error(e)
        second.begin_transaction()
        for i in range(2):
            second.produce(topic, key=b"k", value=f"good-{i}".encode())
        second.commit_transaction(30)
        notes.append(f"{t.name}: second init_transactions took {init_secs:.2f}s")
        out["read_committed"] = values(read_all(t, topic, 1, "read_committed"))
        out["read_uncommitted"] = values(read_all(t, topic, 1, "read_uncommitted"))
        hw, ls = lso(t, topic)
        out["offsets"] = {"high_watermark": hw, "last_stable": ls}
        return out

    k, s = both(targets, run)
    differ.check("txn-fencing-confluent", k, s, notes=notes)
    assert k["read_committed"] == ["good-0", "good-1"], k


# ------------------------------------------------------ aborts and the LSO
def test_abort_visibility_and_lso_confluent(targets, differ):
    """Aborted transactions: invisible to read_committed, visible to read_uncommitted. An open transaction
    holds read_committed consumers back at its first offset (the LSO), also for later non-transactional
    records, until it commits."""
    topic, txn_id = unique("lso"), unique("lso-txn")
    notes = []

    def run(t):
        make_topic(t, topic)
        out = {}
        p = txn_producer(t, txn_id)
        p.init_transactions(20)
        p.begin_transaction()
        for i in range(4):
            p.produce(topic, value=f"aborted-{i}".encode())
        assert p.flush(10) == 0  # written to the log first (abort would otherwise just purge them)
        p.abort_transaction(30)
        p.begin_transaction()
        for i in range(3):
            p.produce(topic, value=f"committed-{i}".encode())
        p.commit_transaction(30)
        wait_lso(t, topic, 9)  # 4 aborted + marker + 3 committed + marker
        out["after_abort_and_commit"] = {
            "read_committed": read_all(t, topic, 1, "read_committed")[0],
            "read_uncommitted": read_all(t, topic, 1, "read_uncommitted")[0],
            "offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
        }

        # An open transaction, then plain records after it.
        p.begin_transaction()
        for i in range(2):
            p.produce(topic, value=f"open-{i}".encode())
        assert p.flush(10) == 0
        plain = Producer({"bootstrap.servers": t.bootstrap})
        for i in range(2):
            plain.produce(topic, value=f"plain-{i}".encode())
        assert plain.flush(10) == 0
        out["while_open"] = {
            "offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
            "fetch_read_committed": fetch_obs(t, topic, 9, READ_COMMITTED),
        }
        # A read_committed consumer subscribed from the committed end: nothing past the LSO while open.
        c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": unique("lso-reader"),
                      "enable.auto.commit": False, "isolation.level": "read_committed"})
        c.assign([TopicPartition(topic, 0, 9)])
        held = []
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            m = c.poll(0.1)
            if m is not None and not m.error():
                held.append(m.value().decode())
        out["while_open"]["read_committed_consumer_for_2s"] = held
        out["while_open"]["read_uncommitted"] = read_all(t, topic, 1, "read_uncommitted")[0][9:]
        t0 = time.monotonic()
        p.commit_transaction(30)
        commit_secs = time.monotonic() - t0
        released = []
        deadline = time.monotonic() + 15
        while len(released) < 4 and time.monotonic() < deadline:
            m = c.poll(0.05)
            if m is not None and not m.error():
                released.append((m.offset(), m.value().decode()))
        release_secs = time.monotonic() - t0
        c.close()
        notes.append(f"{t.name}: commit_transaction took {commit_secs:.3f}s; the held read_committed consumer "
                     f"got the released records {release_secs:.3f}s after commit was called")
        out["after_commit"] = {
            "released_to_held_consumer": released,
            "offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
            "read_committed": values(read_all(t, topic, 1, "read_committed")),
        }
        return out

    k, s = both(targets, run)
    differ.check("txn-abort-lso-confluent", k, s, notes=notes)
    assert k["while_open"]["read_committed_consumer_for_2s"] == [], k


# ------------------------------------------------------------- raw protocol
def fetch_obs(t, topic, offset, isolation):
    """Fetch v12 at an isolation level: watermarks, aborted_transactions and the batches returned."""
    r = wire.fetch(t, topic, {0: offset}, isolation_level=isolation, max_wait_ms=0)
    p = r.responses[0].partitions[0]
    aborted = p.aborted_transactions
    return {
        "error_code": wire.err(p.error_code),
        "high_watermark": p.high_watermark,
        "last_stable_offset": p.last_stable_offset,
        "aborted_transactions": None if aborted is None else [
            {"first_offset": a.first_offset, "producer": "same" if a.producer_id == PIDS.get((t.name, topic)) else
             "other"} for a in aborted],
        "batches": parse_batches(p.records or b""),
    }


# (target name, topic) -> producer id used by the raw scenario, so fetch_obs can say whose aborted
# transaction an entry is without comparing the (broker-chosen) id itself.
PIDS: dict = {}


def parse_batches(data: bytes) -> list:
    """Magic-2 batch headers: base offset, record count, transactional/control flags, and for control batches
    the marker type (0 abort, 1 commit)."""
    import struct
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if end > len(data):
            break  # partial batch at the end of a fetch
        attrs = struct.unpack_from(">h", data, pos + kafkawire.BATCH_ATTRIBUTES)[0]
        count = struct.unpack_from(">i", data, pos + kafkawire.BATCH_RECORD_COUNT)[0]
        b = {"base_offset": base, "records": count, "transactional": bool(attrs & 0x10),
             "control": bool(attrs & 0x20)}
        if attrs & 0x20:
            r = kafkawire.Reader(data, pos + 61)
            _varint(r)  # record length
            r.int8()  # attributes
            _varint(r)  # timestamp delta
            _varint(r)  # offset delta
            _varint(r)  # key length (4)
            r.int16()  # control record version
            b["marker"] = {0: "ABORT", 1: "COMMIT"}.get(r.int16(), "?")
        out.append(b)
        pos = end
    return out


def _varint(r):
    shift = value = 0
    while True:
        byte = r.take(">B")
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1)


def txn_batch(pid, epoch, seq, values_, ts):
    b = kafkawire.idempotent_batch(pid, epoch, seq, values_, ts)
    attrs = 0x10  # isTransactional
    return kafkawire.patch(b, kafkawire.BATCH_ATTRIBUTES, ">h", attrs)


def _retry(send, retriable=(14, 15, 51), timeout=30.0):
    """Send until the error code is not a retriable coordinator one (load in progress, not available,
    concurrent transactions), as clients do."""
    deadline = time.monotonic() + timeout
    while True:
        r = send()
        if r.error_code not in retriable or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_transactional_duplicate_resent_on_new_connection(targets, differ, topic):
    """Raw protocol, transactions v1 path (AddPartitionsToTxn v3, Produce v9, EndTxn v3): a transactional
    batch produced before its partition was added; after AddPartitionsToTxn a batch, the same batch resent on
    a new connection (original offset, stored once), the next batch, an older one again; the LSO while the
    transaction is open; commit; a second transaction with a duplicate, aborted: aborted_transactions in
    read_committed fetches."""
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
    from kafka.protocol.producer.transaction import (AddPartitionsToTxnRequest, EndTxnRequest,
                                                     InitProducerIdRequest)
    ts = (int(time.time()) - 60) * 1000
    txn_id = f"raw-{uuid.uuid4().hex[:8]}"
    notes = []

    def run(t):
        make_topic(t, topic)
        out = {}
        fc = _retry(lambda: wire.request(t, FindCoordinatorRequest(key=txn_id, key_type=1), 3))
        out["find_coordinator"] = wire.err(fc.error_code)
        init = _retry(lambda: wire.request(t, InitProducerIdRequest(
            transactional_id=txn_id, transaction_timeout_ms=60000, producer_id=-1, producer_epoch=-1), 4))
        pid, epoch = init.producer_id, init.producer_epoch
        PIDS[(t.name, topic)] = pid
        out["init"] = {"error_code": wire.err(init.error_code), "epoch": epoch, "has_id": pid >= 0}

        def add_partitions():
            R = AddPartitionsToTxnRequest
            r = _retry(lambda: wire.request(t, R(
                v3_and_below_transactional_id=txn_id, v3_and_below_producer_id=pid,
                v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=[R.AddPartitionsToTxnTopic(name=topic, partitions=[0])]), 3))
            return {"error_code": wire.err(r.error_code),
                    "partitions": [(x.name, y.partition_index, wire.err(y.partition_error_code))
                                   for x in r.results_by_topic_v3_and_below for y in x.results_by_partition]}

        def produce(batch):
            r = wire.produce(t, topic, {0: batch}, version=9, transactional_id=txn_id)
            p = r.responses[0].partition_responses[0]
            return {"error_code": wire.err(p.error_code), "base_offset": p.base_offset}

        def end_txn(commit):
            r = _retry(lambda: wire.request(t, EndTxnRequest(
                transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=commit), 3))
            return wire.err(r.error_code)

        b = lambda seq, n: txn_batch(pid, epoch, seq, [f"v{seq + i}".encode() for i in range(n)], ts)  # noqa: E731
        out["produce_before_add_partitions"] = produce(b(0, 3))
        out["add_partitions"] = add_partitions()
        out["first"] = produce(b(0, 3))
        out["resent_new_connection"] = produce(b(0, 3))
        out["next"] = produce(b(3, 2))
        out["resent_older"] = produce(b(0, 3))
        out["open"] = {"list_offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
                       "fetch_read_committed": fetch_obs(t, topic, 0, READ_COMMITTED),
                       "fetch_read_uncommitted": fetch_obs(t, topic, 0, READ_UNCOMMITTED)}
        out["commit"] = end_txn(True)
        notes.append(f"{t.name}: LSO reached the commit marker {wait_lso(t, topic, 6):.3f}s after EndTxn answered")
        out["committed"] = {"list_offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
                            "fetch_read_committed": fetch_obs(t, topic, 0, READ_COMMITTED)}
        # A second transaction (same epoch on the v1 path): a batch and its duplicate, then abort.
        out["second_add_partitions"] = add_partitions()
        out["second"] = produce(b(5, 2))
        out["second_resent"] = produce(b(5, 2))
        out["abort"] = end_txn(False)
        wait_lso(t, topic, 9)
        out["aborted"] = {"list_offsets": dict(zip(("high_watermark", "last_stable"), lso(t, topic))),
                          "fetch_read_committed": fetch_obs(t, topic, 0, READ_COMMITTED),
                          "fetch_read_committed_from_7": fetch_obs(t, topic, 7, READ_COMMITTED)}
        out["produce_after_end"] = produce(b(7, 1))
        out["read_committed"] = values(read_all(t, topic, 1, "read_committed"))
        out["read_uncommitted"] = values(read_all(t, topic, 1, "read_uncommitted"))
        return out

    k, s = both(targets, run)
    differ.check("txn-raw-duplicate-lso-aborted-index", k, s, notes=notes)
    assert k["resent_new_connection"]["base_offset"] == k["first"]["base_offset"], k


def test_raw_fencing_and_epochs(targets, differ, topic):
    """Raw protocol: a transaction is open (partition added, a batch written) when InitProducerId is sent
    again for the same transactional id: the open transaction is aborted and the epoch bumped. The old epoch
    then gets fencing errors from AddPartitionsToTxn, Produce and EndTxn (each version up to 3); the new epoch
    can run a transaction that commits, and read_committed fetches list the fenced one as aborted."""
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
    from kafka.protocol.producer.transaction import (AddPartitionsToTxnRequest, EndTxnRequest,
                                                     InitProducerIdRequest)
    ts = (int(time.time()) - 60) * 1000
    txn_id = f"raw-fence-{uuid.uuid4().hex[:8]}"
    notes = []

    def run(t):
        make_topic(t, topic)
        _retry(lambda: wire.request(t, FindCoordinatorRequest(key=txn_id, key_type=1), 3))

        def init(version=4):
            seen = []  # error codes until success (CONCURRENT_TRANSACTIONS while the old one is aborted)

            def send():
                r = wire.request(t, InitProducerIdRequest(
                    transactional_id=txn_id, transaction_timeout_ms=60000, producer_id=-1, producer_epoch=-1), version)
                if not seen or seen[-1] != r.error_code:
                    seen.append(r.error_code)
                return r
            r = _retry(send)
            notes.append(f"{t.name}: InitProducerId answers {[wire.err(c) for c in seen]}, "
                         f"epoch {r.producer_epoch}")
            return r.error_code, r.producer_id, r.producer_epoch

        def add_partitions(pid, epoch):
            R = AddPartitionsToTxnRequest
            r = _retry(lambda: wire.request(t, R(
                v3_and_below_transactional_id=txn_id, v3_and_below_producer_id=pid,
                v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=[R.AddPartitionsToTxnTopic(name=topic, partitions=[0])]), 3))
            return [wire.err(y.partition_error_code) for x in r.results_by_topic_v3_and_below
                    for y in x.results_by_partition]

        def produce(pid, epoch, seq, vals):
            r = wire.produce(t, topic, {0: txn_batch(pid, epoch, seq, vals, ts)}, version=9,
                             transactional_id=txn_id)
            p = r.responses[0].partition_responses[0]
            return {"error_code": wire.err(p.error_code), "base_offset": p.base_offset}

        def end_txn(pid, epoch, commit, version=3):
            r = _retry(lambda: wire.request(t, EndTxnRequest(
                transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=commit), version))
            return wire.err(r.error_code)

        out = {}
        err, pid, e0 = init()
        out["first_init"] = {"error_code": wire.err(err), "epoch": e0}
        out["add"] = add_partitions(pid, e0)
        out["zombie_write"] = produce(pid, e0, 0, [b"zombie-0", b"zombie-1"])
        out["open_lso"] = dict(zip(("high_watermark", "last_stable"), lso(t, topic)))
        err, pid2, e1 = init()
        out["second_init"] = {"error_code": wire.err(err), "same_producer_id": pid2 == pid,
                              "epoch_bump": e1 - e0}
        notes.append(f"{t.name}: producer id {pid}, epochs {e0} -> {e1}")
        wait_lso(t, topic, 3)
        out["after_fence_lso"] = dict(zip(("high_watermark", "last_stable"), lso(t, topic)))
        out["old_epoch"] = {
            "add_partitions": add_partitions(pid, e0),
            "produce": produce(pid, e0, 2, [b"zombie-2"]),
            "end_txn": {f"v{v}": end_txn(pid, e0, True, v) for v in range(0, 4)},
        }
        out["new_epoch"] = {
            "end_txn_without_partitions": end_txn(pid, e1, True),
            "add_partitions": add_partitions(pid, e1),
            "produce": produce(pid, e1, 0, [b"good-0", b"good-1"]),
            "commit": end_txn(pid, e1, True),
        }
        wait_lso(t, topic, 6)
        PIDS[(t.name, topic)] = pid
        out["fetch_read_committed"] = fetch_obs(t, topic, 0, READ_COMMITTED)
        out["read_committed"] = values(read_all(t, topic, 1, "read_committed"))
        return out

    k, s = both(targets, run)
    differ.check("txn-raw-fencing-epochs", k, s, notes=notes)
    assert k["read_committed"] == ["good-0", "good-1"], k


def test_raw_transactional_offset_commit(targets, differ, topic):
    """Raw protocol: group offsets sent in a transaction (AddOffsetsToTxn v3 + TxnOffsetCommit v3, generation
    -1 as an assign()-only consumer sends) are pending until the transaction ends: OffsetFetch v7 with
    require_stable answers UNSTABLE_OFFSET_COMMIT, without it the last committed offset; after commit the
    new offset, after abort the old one stays. Also TxnOffsetCommit before AddOffsetsToTxn."""
    from kafka.protocol.consumer import OffsetFetchRequest
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
    from kafka.protocol.producer.transaction import (AddOffsetsToTxnRequest, EndTxnRequest, InitProducerIdRequest,
                                                     TxnOffsetCommitRequest)
    txn_id, group = f"raw-offsets-{uuid.uuid4().hex[:8]}", f"raw-offsets-g-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic)
        _retry(lambda: wire.request(t, FindCoordinatorRequest(key=txn_id, key_type=1), 3))
        _retry(lambda: wire.request(t, FindCoordinatorRequest(key=group, key_type=0), 3))
        init = _retry(lambda: wire.request(t, InitProducerIdRequest(
            transactional_id=txn_id, transaction_timeout_ms=60000, producer_id=-1, producer_epoch=-1), 4))
        pid, epoch = init.producer_id, init.producer_epoch

        def add_offsets():
            return wire.err(_retry(lambda: wire.request(t, AddOffsetsToTxnRequest(
                transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, group_id=group), 3)).error_code)

        def txn_offset_commit(offset):
            R = TxnOffsetCommitRequest
            r = wire.request(t, R(
                transactional_id=txn_id, group_id=group, producer_id=pid, producer_epoch=epoch, generation_id=-1,
                member_id="", group_instance_id=None, topics=[R.TxnOffsetCommitRequestTopic(name=topic, partitions=[
                    R.TxnOffsetCommitRequestTopic.TxnOffsetCommitRequestPartition(
                        partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                        committed_metadata="m")])]), 3)
            return [wire.err(p.error_code) for tp in r.topics for p in tp.partitions]

        def offset_fetch(require_stable):
            R = OffsetFetchRequest
            r = wire.request(t, R(group_id=group, topics=[R.OffsetFetchRequestTopic(
                name=topic, partition_indexes=[0])], require_stable=require_stable), 7)
            p = r.topics[0].partitions[0]
            return {"error_code": wire.err(r.error_code), "partition_error": wire.err(p.error_code),
                    "offset": p.committed_offset, "metadata": p.metadata}

        def end_txn(commit):
            return wire.err(_retry(lambda: wire.request(t, EndTxnRequest(
                transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=commit), 3)).error_code)


        out = {"txn_offset_commit_before_add_offsets": txn_offset_commit(3)}
        out["first"] = {"add_offsets": add_offsets(), "txn_offset_commit": txn_offset_commit(5),
                        "fetch_stable": offset_fetch(True), "fetch_unstable": offset_fetch(False),
                        "end": end_txn(True)}
        out["after_commit"] = {"fetch_stable": _retry(lambda: _Err(offset_fetch(True)), (88,)).value,
                               "fetch_unstable": offset_fetch(False)}
        out["second"] = {"add_offsets": add_offsets(), "txn_offset_commit": txn_offset_commit(9),
                         "fetch_stable": offset_fetch(True), "fetch_unstable": offset_fetch(False),
                         "end": end_txn(False)}
        out["after_abort"] = {"fetch_stable": _retry(lambda: _Err(offset_fetch(True)), (88,)).value,
                              "fetch_unstable": offset_fetch(False)}
        return out

    k, s = both(targets, run)
    differ.check("txn-raw-offset-commit", k, s)
    assert k["after_commit"]["fetch_stable"]["offset"] == 5, k


class _Err:
    """Adapts an offset_fetch() observation to _retry(): retried while the partition is UNSTABLE_OFFSET_COMMIT
    (the markers of the transaction that just ended are still being written)."""

    def __init__(self, value):
        self.value = value
        self.error_code = int(value["partition_error"].split("(")[1].rstrip(")"))


class RawTxn:
    """A transactional id driven through raw requests at the versions the Java client uses on the v1 path."""

    def __init__(self, t, txn_id, timeout_ms=60000):
        from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
        self.t, self.txn_id = t, txn_id
        _retry(lambda: wire.request(t, FindCoordinatorRequest(key=txn_id, key_type=1), 3))
        self.init_codes = []
        r = self.init(timeout_ms)
        self.pid, self.epoch = r.producer_id, r.producer_epoch

    def init(self, timeout_ms=60000, producer_id=-1, producer_epoch=-1, version=4):
        from kafka.protocol.producer.transaction import InitProducerIdRequest
        self.init_codes = []

        def send():
            r = wire.request(self.t, InitProducerIdRequest(
                transactional_id=self.txn_id, transaction_timeout_ms=timeout_ms, producer_id=producer_id,
                producer_epoch=producer_epoch), version)
            if not self.init_codes or self.init_codes[-1] != r.error_code:
                self.init_codes.append(r.error_code)
            return r
        return _retry(send)

    def add_partitions(self, topic, partitions=(0,), pid=None, epoch=None):
        from kafka.protocol.producer.transaction import AddPartitionsToTxnRequest as R
        r = _retry(lambda: wire.request(self.t, R(
            v3_and_below_transactional_id=self.txn_id,
            v3_and_below_producer_id=self.pid if pid is None else pid,
            v3_and_below_producer_epoch=self.epoch if epoch is None else epoch,
            v3_and_below_topics=[R.AddPartitionsToTxnTopic(name=topic, partitions=list(partitions))]), 3))
        return {f"{x.name}-{y.partition_index}": wire.err(y.partition_error_code)
                for x in r.results_by_topic_v3_and_below for y in x.results_by_partition}

    def produce(self, topic, seq, values_, epoch=None, transactional_id="same", ts=None):
        ts = (int(time.time()) - 60) * 1000 if ts is None else ts
        batch = txn_batch(self.pid, self.epoch if epoch is None else epoch, seq, values_, ts)
        r = wire.produce(self.t, topic, {0: batch}, version=9,
                         transactional_id=self.txn_id if transactional_id == "same" else transactional_id)
        p = r.responses[0].partition_responses[0]
        return {"error_code": wire.err(p.error_code), "base_offset": p.base_offset}

    def end(self, commit, epoch=None, pid=None, version=3):
        from kafka.protocol.producer.transaction import EndTxnRequest
        return wire.err(_retry(lambda: wire.request(self.t, EndTxnRequest(
            transactional_id=self.txn_id, producer_id=self.pid if pid is None else pid,
            producer_epoch=self.epoch if epoch is None else epoch, committed=commit), version)).error_code)


def test_raw_transaction_errors(targets, differ, topic):
    """Raw protocol error answers: a transaction timeout above transaction.max.timeout.ms, requests for an
    unknown transactional id or with the wrong producer id, AddPartitionsToTxn with an unknown topic among
    known ones, a transactional batch in a Produce request without transactional_id, EndTxn with nothing
    added."""
    missing = unique("no-such-topic")
    txn_id = f"raw-errors-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic)
        out = {}
        x = RawTxn(t, txn_id)
        r = x.init(timeout_ms=900001)  # Kafka's transaction.max.timeout.ms default is 900000
        out["init_timeout_above_max"] = {"error_code": wire.err(r.error_code), "epoch": r.producer_epoch}
        r = x.init(timeout_ms=60000)
        x.epoch = r.producer_epoch
        out["init_again"] = {"error_code": wire.err(r.error_code), "epoch_bump": r.producer_epoch}
        out["end_txn_nothing_added"] = {"commit": x.end(True), "abort": x.end(False)}
        out["add_partitions_wrong_producer_id"] = x.add_partitions(topic, pid=x.pid + 1000)
        out["add_partitions_old_epoch"] = x.add_partitions(topic, epoch=x.epoch - 1) if x.epoch > 0 else None
        out["add_partitions_unknown_topic"] = x.add_partitions(missing) | x.add_partitions(topic, (0, 7))
        out["after_failed_add_produce"] = x.produce(topic, 0, [b"a"])
        out["add_partitions"] = x.add_partitions(topic)
        out["produce_without_transactional_id"] = x.produce(topic, 0, [b"a"], transactional_id=None)
        out["produce_other_transactional_id"] = x.produce(topic, 0, [b"a"], transactional_id=txn_id + "-other")
        out["produce"] = x.produce(topic, 0, [b"a"])
        out["end_txn_wrong_producer_id"] = x.end(True, pid=x.pid + 1000)
        out["end_txn_commit"] = x.end(True)
        unknown = RawTxn.__new__(RawTxn)
        unknown.t, unknown.txn_id, unknown.pid, unknown.epoch = t, f"{txn_id}-never-initialized", x.pid, 0
        out["unknown_transactional_id"] = {"add_partitions": unknown.add_partitions(topic),
                                           "end_txn": unknown.end(True)}
        return out

    differ.check("txn-raw-errors", *both(targets, run))


def test_raw_transaction_timeout_abort(targets, differ, topic):
    """A transaction left open past its transaction.timeout.ms (1000 ms) is aborted by the coordinator on its
    own (Kafka checks every transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by default):
    the abort marker releases the LSO, and the producer's old epoch is fenced afterwards; InitProducerId with
    the old producer id and epoch (KIP-360) recovers the producer."""
    txn_id = f"raw-timeout-{uuid.uuid4().hex[:8]}"
    notes = []

    def run(t):
        make_topic(t, topic)
        out = {}
        x = RawTxn(t, txn_id, timeout_ms=1000)
        e0 = x.epoch
        out["add_partitions"] = x.add_partitions(topic)
        out["produce"] = x.produce(topic, 0, [b"x0", b"x1"])
        out["open"] = dict(zip(("high_watermark", "last_stable"), lso(t, topic)))
        t0 = time.monotonic()
        wait_lso(t, topic, 3, timeout=30)
        notes.append(f"{t.name}: the timed-out transaction was aborted {time.monotonic() - t0:.1f}s after its "
                     f"first write (transaction.timeout.ms=1000)")
        PIDS[(t.name, topic)] = x.pid
        out["aborted"] = fetch_obs(t, topic, 0, READ_COMMITTED)
        out["old_epoch"] = {"produce": x.produce(topic, 2, [b"x2"]), "add_partitions": x.add_partitions(topic),
                            "end_txn_commit": x.end(True)}
        r = x.init(timeout_ms=1000, producer_id=x.pid, producer_epoch=e0)
        notes.append(f"{t.name}: InitProducerId(producer id, old epoch {e0}) answers "
                     f"{[wire.err(c) for c in x.init_codes]}, epoch {r.producer_epoch}")
        out["recover_with_old_epoch"] = {"error_code": wire.err(r.error_code), "same_producer_id": r.producer_id == x.pid,
                                         "epoch_bump": r.producer_epoch - e0}
        return out

    differ.check("txn-raw-timeout-abort", *both(targets, run), notes=notes)


# -------------------------------------------------------------- kafka-python
def test_kafka_python_transactions(targets, differ):
    """kafka-python's transactional producer: committed records visible, aborted ones not (read_committed);
    a read-process-write pass with send_offsets_to_transaction where one transaction is aborted and redone:
    the group's offsets move only with committed transactions; a second producer with the same
    transactional id fences the first (its commit fails, its record stays invisible)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata
    topic, in_topic, out_topic = unique("kp-txn"), unique("kp-in"), unique("kp-out")
    txn_id, group = unique("kp-txn-id"), unique("kp-group")
    fence_topic, fence_id = unique("kp-fence"), unique("kp-fence-id")

    def committed_values(t, name, isolation):
        c = KafkaConsumer(bootstrap_servers=t.bootstrap, isolation_level=isolation, enable_auto_commit=False,
                          consumer_timeout_ms=1000, fetch_max_wait_ms=50, auto_offset_reset="earliest")
        c.assign([KTP(name, 0)])
        c.seek_to_beginning()
        got = [(m.offset, m.value.decode()) for m in c]
        c.close()
        return got

    def run(t):
        make_topic(t, topic)
        make_topic(t, in_topic)
        make_topic(t, out_topic)
        make_topic(t, fence_topic)
        out = {}
        p = KafkaProducer(bootstrap_servers=t.bootstrap, transactional_id=txn_id, transaction_timeout_ms=10000,
                          max_block_ms=20000)
        p.init_transactions()
        p.begin_transaction()
        for i in range(3):
            p.send(topic, f"c1-{i}".encode())
        p.commit_transaction()
        p.begin_transaction()
        for i in range(2):
            p.send(topic, f"a-{i}".encode())
        p.flush()  # written to the log first (abort would otherwise just drop them)
        p.abort_transaction()
        p.begin_transaction()
        p.send(topic, b"c2-0")
        p.commit_transaction()
        wait_lso(t, topic, 9)
        out["read_committed"] = committed_values(t, topic, "read_committed")
        out["read_uncommitted"] = committed_values(t, topic, "read_uncommitted")

        # read-process-write: 30 input records, transactions of 10, the second one aborted and redone.
        feed = KafkaProducer(bootstrap_servers=t.bootstrap)
        for i in range(30):
            feed.send(in_topic, f"{i}".encode())
        feed.flush()
        feed.close()
        c = KafkaConsumer(bootstrap_servers=t.bootstrap, group_id=group, enable_auto_commit=False,
                          isolation_level="read_committed", auto_offset_reset="earliest")
        tp = KTP(in_topic, 0)
        c.assign([tp])
        steps = []
        aborted_once = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=10).get(tp, [])
            if not batch:
                if c.position(tp) >= 30:
                    break
                continue
            p.begin_transaction()
            for m in batch:
                p.send(out_topic, b"out:" + m.value)
            p.send_offsets_to_transaction({tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1)},
                                          c.group_metadata())
            if batch[0].offset == 10 and not aborted_once:
                p.abort_transaction()
                aborted_once = True
                steps.append(("abort", batch[0].offset, len(batch)))
                # The aborted transaction's offsets were not committed: resume from the group's offset.
                committed = c.committed(tp)
                steps.append(("committed_after_abort", committed))
                c.seek(tp, committed)
                continue
            p.commit_transaction()
            steps.append(("commit", batch[0].offset, len(batch)))
        out["steps"] = steps
        out["group_offset"] = c.committed(tp)
        c.close()
        p.close()
        out["out_read_committed"] = [v for _, v in committed_values(t, out_topic, "read_committed")]

        # Fencing: a second producer with the same transactional id; the first's commit fails.
        zombie = KafkaProducer(bootstrap_servers=t.bootstrap, transactional_id=fence_id,
                               transaction_timeout_ms=10000, max_block_ms=20000)
        zombie.init_transactions()
        zombie.begin_transaction()
        zombie.send(fence_topic, b"zombie")
        zombie.flush()
        fresh = KafkaProducer(bootstrap_servers=t.bootstrap, transactional_id=fence_id,
                              transaction_timeout_ms=10000, max_block_ms=20000)
        fresh.init_transactions()
        try:
            zombie.commit_transaction()
            out["fenced_commit"] = "committed"
        except Exception as e:  # noqa: BLE001 (the exception class is the observation)
            out["fenced_commit"] = type(e).__name__
        zombie.close(timeout=2)
        fresh.begin_transaction()
        fresh.send(fence_topic, b"good")
        fresh.commit_transaction()
        fresh.close()
        out["fence_read_committed"] = [v for _, v in committed_values(t, fence_topic, "read_committed")]
        return out

    k, s = both(targets, run)
    differ.check("txn-kafka-python", k, s)
    assert [v for _, v in k["read_committed"]] == ["c1-0", "c1-1", "c1-2", "c2-0"], k


# ------------------------------------------------------------------- aiokafka
def test_aiokafka_transactions(targets, differ):
    """aiokafka's transactional producer: a committed and an aborted transaction, read back with
    read_committed and read_uncommitted aiokafka consumers."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as ATP
    topic, txn_id = unique("aio-txn"), unique("aio-txn-id")

    async def scenario(t):
        p = AIOKafkaProducer(bootstrap_servers=t.bootstrap, transactional_id=txn_id, transaction_timeout_ms=10000)
        await p.start()
        try:
            async with p.transaction():
                for i in range(3):
                    await p.send_and_wait(topic, f"c-{i}".encode())
            await p.begin_transaction()
            for i in range(2):
                await p.send_and_wait(topic, f"a-{i}".encode())
            await p.abort_transaction()
            async with p.transaction():
                await p.send_and_wait(topic, b"c-3")
        finally:
            await p.stop()
        out = {}
        for iso in ("read_committed", "read_uncommitted"):
            c = AIOKafkaConsumer(bootstrap_servers=t.bootstrap, isolation_level=iso, enable_auto_commit=False,
                                 auto_offset_reset="earliest")
            await c.start()
            try:
                tp = ATP(topic, 0)
                c.assign([tp])
                await c.seek_to_beginning(tp)
                got = []
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    res = await c.getmany(tp, timeout_ms=300)
                    for m in res.get(tp, []):
                        got.append((m.offset, m.value.decode()))
                    if not res and await c.position(tp) >= (await c.end_offsets([tp]))[tp]:
                        break
                out[iso] = got
            finally:
                await c.stop()
        return out

    def run(t):
        make_topic(t, topic)
        return asyncio.run(asyncio.wait_for(scenario(t), 45))

    k, s = both(targets, run)
    differ.check("txn-aiokafka", k, s)
    assert [v for _, v in k["read_committed"]] == ["c-0", "c-1", "c-2", "c-3"], k


