"""Differential scenarios for the data side of transactions through the raw protocol: WriteTxnMarkers (the
transaction coordinator's request; no ACL without an authorizer) on a partition an idempotent producer writes to,
with its producer-epoch and coordinator-epoch checks, what the markers do to later writes of that producer, and
how Fetch (read_uncommitted and read_committed: control batches, last_stable_offset, aborted_transactions) and
ListOffsets (both isolation levels) show them.

Kafka verifies transactional batches and TxnOffsetCommit with its transaction coordinator (KIP-890) and refuses
them without one (NOT_ENOUGH_REPLICAS / COORDINATOR_NOT_AVAILABLE): transactional data runs on a second pair with
transaction.partition.verification.enable=false; TxnOffsetCommit comes with the coordinator's scenarios. Producer
ids differ between the brokers, so they are replaced by names.
"""

from __future__ import annotations

import time

import kafkawire
import wire
from obs import both
from test_idempotence import init_producer_id, make_topic


def test_txn_markers_on_an_idempotent_producers_partition(targets, differ, topic):
    ts = (int(time.time()) - 60) * 1000

    def run(t):
        make_topic(t, topic)
        err, pid, _ = init_producer_id(t)
        assert err == 0
        names = {pid: "P", pid + 1000: "Q"}
        out = {}
        with kafkawire.connect(t.port) as s:
            corr = iter(range(1, 1000))

            def produce(epoch, seq, n=1):
                r = kafkawire.produce(s, 8, next(corr), topic, {0: kafkawire.idempotent_batch(pid, epoch, seq, [b"v"] * n, ts)})
                p = r[(topic, 0)]
                return {"error_code": wire.err(p["error_code"]), "base_offset": p["base_offset"]}

            def marker(producer, epoch, commit, coordinator_epoch, partitions=(0,)):
                res = kafkawire.write_txn_markers(s, next(corr), [dict(
                    producer_id=producer, producer_epoch=epoch, commit=commit,
                    coordinator_epoch=coordinator_epoch, topics={topic: list(partitions)})])
                return {f"{names[p]}/{tp[1]}": wire.err(e) for p, r in res.items() for tp, e in sorted(r.items())}

            def fetch(isolation, offset=0):
                f = kafkawire.fetch_v4(s, next(corr), topic, {0: offset}, isolation_level=isolation)[(topic, 0)]
                return {
                    "error_code": wire.err(f["error_code"]),
                    "high_watermark": f["high_watermark"],
                    "last_stable_offset": f["last_stable_offset"],
                    "aborted": None if f["aborted"] is None else [(names.get(p, p), o) for p, o in f["aborted"]],
                    "batches": [(b, l, a, names.get(p, p)) for b, l, a, p in kafkawire.batch_offsets(f["records"])],
                }

            def latest(isolation):
                return kafkawire.list_offsets_v2(s, next(corr), topic, {0: -1}, isolation)[0]

            out["produce"] = produce(0, 0, 2)
            out["abort"] = marker(pid, 0, False, 5, partitions=(0, 7))
            out["older-coordinator-epoch"] = marker(pid, 0, True, 4)
            out["bumped-epoch-commit"] = marker(pid, 1, True, 5)
            out["older-producer-epoch"] = marker(pid, 0, True, 5)
            out["negative-producer-epoch"] = marker(pid, -1, True, 5)
            out["unknown-producer"] = marker(pid + 1000, 0, False, 0)
            out["produce-old-epoch"] = produce(0, 2)
            out["produce-new-epoch-nonzero-sequence"] = produce(1, 2)
            out["produce-new-epoch"] = produce(1, 0)
            out["fetch-read-uncommitted"] = fetch(0)
            out["fetch-read-committed"] = fetch(1)
            out["fetch-read-committed-from-marker"] = fetch(1, 2)
            out["latest-read-uncommitted"] = latest(0)
            out["latest-read-committed"] = latest(1)
        return out

    differ.check("txn-markers-idempotent-partition", *both(targets, run))


def test_read_committed_with_transactional_data(make_pair, differ, topic):
    """Transactional batches written straight to the partition (Kafka's KIP-890 partition verification is
    switched off on this pair, as no transaction coordinator is involved; the test writes the markers itself):
    the LSO held by the oldest open transaction, read_committed fetches stopping there, INVALID_TXN_STATE for a
    plain write from a producer with an open transaction, aborted_transactions, and ListOffsets read_committed."""
    pair = make_pair({"transaction.partition.verification.enable": "false"})

    def run(t):
        ts = int(time.time() * 1000)
        make_topic(t, topic)
        (err_a, a, _), (err_b, b, _) = init_producer_id(t), init_producer_id(t)
        assert (err_a, err_b) == (0, 0)
        names = {a: "A", b: "B"}
        out = {}
        with kafkawire.connect(t.port) as s:
            corr = iter(range(1, 1000))

            def produce(batch, transactional_id=None):
                r = kafkawire.produce(s, 8, next(corr), topic, {0: batch}, transactional_id=transactional_id)[(topic, 0)]
                return {"error_code": wire.err(r["error_code"]), "base_offset": r["base_offset"]}

            def marker(pid, commit):
                res = kafkawire.write_txn_markers(s, next(corr), [dict(
                    producer_id=pid, producer_epoch=0, commit=commit, coordinator_epoch=0, topics={topic: [0]})])
                return {str(tp[1]): wire.err(e) for tp, e in res[pid].items()}

            def fetch(isolation, offset=0):
                f = kafkawire.fetch_v4(s, next(corr), topic, {0: offset}, isolation_level=isolation)[(topic, 0)]
                return {
                    "high_watermark": f["high_watermark"],
                    "last_stable_offset": f["last_stable_offset"],
                    "aborted": None if f["aborted"] is None else [(names.get(p, p), o) for p, o in f["aborted"]],
                    "batches": [(x, y, attrs, names.get(p, p)) for x, y, attrs, p in kafkawire.batch_offsets(f["records"])],
                }

            def latest(isolation):
                return kafkawire.list_offsets_v2(s, next(corr), topic, {0: -1}, isolation)[0]

            def by_time(spec, isolation):
                p = wire.list_offsets(t, topic, {0: spec}, version=8, isolation_level=isolation).topics[0].partitions[0]
                return (wire.err(p.error_code), p.offset, p.timestamp - ts if p.timestamp >= 0 else p.timestamp)

            out["plain"] = produce(kafkawire.record_batch([(None, b"p", ())], ts))
            out["a-1"] = produce(kafkawire.transactional_batch(a, 0, 0, [b"a1", b"a2"], ts), "ta")
            # B's record is the partition's latest timestamp (later than the markers too): what MAX_TIMESTAMP finds.
            out["b-1"] = produce(kafkawire.transactional_batch(b, 0, 0, [b"b1"], ts + 60000), "tb")
            out["a-2"] = produce(kafkawire.transactional_batch(a, 0, 2, [b"a3"], ts), "ta")
            out["a-plain-while-open"] = produce(kafkawire.idempotent_batch(a, 0, 3, [b"x"], ts))
            out["open-read-uncommitted"] = fetch(0)
            out["open-read-committed"] = fetch(1)
            out["open-read-committed-at-lso"] = fetch(1, 1)
            out["open-latest"] = [latest(0), latest(1)]
            out["open-max-timestamp"] = [by_time(-3, 0), by_time(-3, 1)]
            out["open-by-time"] = [by_time(ts + 30000, 0), by_time(ts + 30000, 1)]
            out["abort-a"] = marker(a, False)
            out["after-abort-read-committed"] = fetch(1)
            out["commit-b"] = marker(b, True)
            out["end-read-committed"] = fetch(1)
            out["end-read-committed-from-4"] = fetch(1, 4)
            out["end-read-uncommitted"] = fetch(0)
            out["end-latest"] = [latest(0), latest(1)]
            out["end-max-timestamp"] = [by_time(-3, 0), by_time(-3, 1)]
            out["a-next-transaction"] = produce(kafkawire.transactional_batch(a, 0, 3, [b"a4"], ts), "ta")
            out["a-plain-while-open-again"] = produce(kafkawire.idempotent_batch(a, 0, 4, [b"x"], ts))
            out["final-read-committed"] = fetch(1)
        return out

    differ.check("read-committed-transactional-data", *both(pair, run))
