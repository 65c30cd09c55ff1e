"""Differential scenarios for the transaction coordinator through the raw protocol: InitProducerId with a
transactional id (bad timeouts, epoch bumps, KIP-360 retries, fencing an ongoing transaction), EndTxn without a
transaction and with stale ids or epochs (each version's error), AddPartitionsToTxn with a stale epoch, an unknown
topic and the v4 verify-only form, and the shapes of DescribeTransactions and ListTransactions. Producer ids differ
between the brokers, so only whether one was given (and whether it changed) is compared; timestamps only as
"set or not".
"""

from __future__ import annotations

import time
import uuid

from kafka.protocol.admin.transactions import DescribeTransactionsRequest, ListTransactionsRequest
from kafka.protocol.metadata import FindCoordinatorRequest
from kafka.protocol.producer.transaction import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
)

import wire
from obs import both

TXN_ERRORS = {
    0: "NONE", 3: "UNKNOWN_TOPIC_OR_PARTITION", 14: "COORDINATOR_LOAD_IN_PROGRESS", 15: "COORDINATOR_NOT_AVAILABLE",
    16: "NOT_COORDINATOR", 42: "INVALID_REQUEST", 47: "INVALID_PRODUCER_EPOCH", 48: "INVALID_TXN_STATE",
    49: "INVALID_PRODUCER_ID_MAPPING", 50: "INVALID_TRANSACTION_TIMEOUT", 51: "CONCURRENT_TRANSACTIONS",
    55: "OPERATION_NOT_ATTEMPTED", 90: "PRODUCER_FENCED", 105: "TRANSACTIONAL_ID_NOT_FOUND",
    120: "TRANSACTION_ABORTABLE",
}


def e(code):
    return f"{TXN_ERRORS.get(code, wire.ERRORS.get(code, '?'))}({code})"


RETRIABLE = (14, 15, 16)


def retrying(fn, deadline_s=60.0):
    """Calls fn() -> (error_code, ...) again while the coordinator is loading or not there yet, as clients do."""
    deadline = time.monotonic() + deadline_s
    while True:
        out = fn()
        if out[0] not in RETRIABLE or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def find_txn_coordinator(t, txn_id):
    def go():
        r = wire.request(t, FindCoordinatorRequest(key_type=1, coordinator_keys=[txn_id]), 4)
        c = r.coordinators[0]
        return (c.error_code, c.node_id)
    return retrying(go)


def init(t, txn_id, timeout_ms=60000, version=4, producer_id=-1, epoch=-1):
    def go():
        r = wire.request(t, InitProducerIdRequest(transactional_id=txn_id, transaction_timeout_ms=timeout_ms,
                                                  producer_id=producer_id, producer_epoch=epoch), version)
        return (r.error_code, r.producer_id, r.producer_epoch)
    return retrying(go)


def add_partitions(t, txn_id, pid, epoch, topics: dict, version=3):
    T = AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
    topics_ = [T(name=n, partitions=ps) for n, ps in topics.items()]
    r = wire.request(t, AddPartitionsToTxnRequest(v3_and_below_transactional_id=txn_id, v3_and_below_producer_id=pid,
                                                  v3_and_below_producer_epoch=epoch,
                                                  v3_and_below_topics=topics_), version)
    return sorted((tr.name, p.partition_index, e(p.partition_error_code))
                  for tr in r.results_by_topic_v3_and_below for p in tr.results_by_partition)


def verify_partitions(t, txn_id, pid, epoch, topics: dict, verify_only=True, version=4):
    T = AddPartitionsToTxnRequest.AddPartitionsToTxnTopic
    X = AddPartitionsToTxnRequest.AddPartitionsToTxnTransaction
    r = wire.request(t, AddPartitionsToTxnRequest(transactions=[X(
        transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, verify_only=verify_only,
        topics=[T(name=n, partitions=ps) for n, ps in topics.items()])]), version)
    return {"error_code": e(r.error_code),
            "results": sorted((res.transactional_id, tr.name, p.partition_index, e(p.partition_error_code))
                              for res in r.results_by_transaction for tr in res.topic_results
                              for p in tr.results_by_partition)}


def end_txn(t, txn_id, pid, epoch, committed, version=3):
    r = wire.request(t, EndTxnRequest(transactional_id=txn_id, producer_id=pid, producer_epoch=epoch,
                                      committed=committed), version)
    out = {"error_code": e(r.error_code)}
    if version >= 5:
        out["epoch"] = r.producer_epoch
        out["same_id"] = r.producer_id == pid
    return out


def describe(t, txn_ids):
    r = wire.request(t, DescribeTransactionsRequest(transactional_ids=txn_ids), 0)
    return [{
        "transactional_id": s.transactional_id,
        "error_code": e(s.error_code),
        "state": s.transaction_state,
        "timeout_ms": s.transaction_timeout_ms,
        "start_time_set": s.transaction_start_time_ms > 0,
        "has_id": s.producer_id >= 0,
        "epoch": s.producer_epoch,
        "topics": sorted((tp.topic, sorted(tp.partitions)) for tp in s.topics),
    } for s in r.transaction_states]


def describe_until(t, txn_id, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        d = describe(t, [txn_id])[0]
        if d["state"] in states or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def list_txns(t, ids, version=1, **filters):
    r = wire.request(t, ListTransactionsRequest(**filters), version)
    return {"error_code": e(r.error_code),
            "unknown_state_filters": sorted(r.unknown_state_filters),
            "transactions": sorted((s.transactional_id, s.transaction_state)
                                   for s in r.transaction_states if s.transactional_id in ids)}


def make_topic(t, name, partitions=2):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions)])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)


def test_init_producer_id_with_transactional_id(targets, differ):
    txn = f"txn-init-{uuid.uuid4().hex[:8]}"

    def run(t):
        out = {"find": e(find_txn_coordinator(t, txn)[0])}
        out["timeout-zero"] = e(init(t, txn, timeout_ms=0)[0])
        out["timeout-over-max"] = e(init(t, txn, timeout_ms=900001)[0])
        out["timeout-max"] = e(init(t, txn + "-max", timeout_ms=900000)[0])
        out["empty-id"] = e(init(t, "", timeout_ms=1000)[0])
        err, pid, epoch = init(t, txn)
        out["first"] = (e(err), pid >= 0, epoch)
        err, pid2, epoch = init(t, txn)
        out["second"] = (e(err), pid2 == pid, epoch)
        # KIP-360 (v3+): the current id and epoch bump the epoch; a retry with the previous epoch keeps it; an older
        # one is fenced (v4+: PRODUCER_FENCED, v3: INVALID_PRODUCER_EPOCH); another id is fenced.
        err, pid3, epoch = init(t, txn, producer_id=pid, epoch=1, version=4)
        out["bump"] = (e(err), pid3 == pid, epoch)
        out["retry-of-bump"] = (lambda r: (e(r[0]), r[1] == pid, r[2]))(init(t, txn, producer_id=pid, epoch=1, version=4))
        out["stale-epoch-v4"] = e(init(t, txn, producer_id=pid, epoch=0, version=4)[0])
        out["stale-epoch-v3"] = e(init(t, txn, producer_id=pid, epoch=0, version=3)[0])
        out["other-id"] = e(init(t, txn, producer_id=pid + 100000, epoch=2, version=4)[0])
        out["describe"] = describe(t, [txn])
        return out

    differ.check("txn-init-producer-id", *both(targets, run))


def test_end_txn_without_a_transaction(targets, differ):
    txn = f"txn-end-{uuid.uuid4().hex[:8]}"

    def run(t):
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"init": (e(err), epoch)}
        for v in (0, 1, 3, 4):
            out[f"commit-v{v}"] = end_txn(t, txn, pid, epoch, True, v)
            out[f"abort-v{v}"] = end_txn(t, txn, pid, epoch, False, v)
        out["wrong-id"] = end_txn(t, txn, pid + 100000, epoch, True, 3)
        out["stale-epoch-v1"] = end_txn(t, txn, pid, epoch - 1, True, 1)
        out["stale-epoch-v3"] = end_txn(t, txn, pid, epoch - 1, True, 3)
        out["future-epoch-v3"] = end_txn(t, txn, pid, epoch + 1, True, 3)
        out["unknown-id"] = end_txn(t, txn + "-unknown", pid, epoch, True, 3)
        # Transactions v2: aborting an empty transaction bumps the epoch; committing one is INVALID_TXN_STATE.
        out["commit-v5"] = end_txn(t, txn, pid, epoch, True, 5)
        out["abort-v5"] = end_txn(t, txn, pid, epoch, False, 5)
        out["describe"] = describe_until(t, txn, ("CompleteAbort",))
        return out

    differ.check("txn-end-without-transaction", *both(targets, run))


def test_add_partitions_and_end(targets, differ, topic):
    txn = f"txn-add-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic)
        find_txn_coordinator(t, txn)
        init(t, txn)
        err, pid, epoch = init(t, txn)  # epoch 1: epoch 0 is stale from here on
        out = {"init": (e(err), epoch)}
        out["stale-epoch-v3"] = add_partitions(t, txn, pid, epoch - 1, {topic: [0]}, 3)
        out["stale-epoch-v1"] = add_partitions(t, txn, pid, epoch - 1, {topic: [0]}, 1)
        out["wrong-id"] = add_partitions(t, txn, pid + 100000, epoch, {topic: [0]}, 3)
        out["unknown-id"] = add_partitions(t, txn + "-unknown", pid, epoch, {topic: [0]}, 3)
        out["unknown-topic"] = add_partitions(t, txn, pid, epoch, {topic: [0], "no-such-topic-x": [0]}, 3)
        out["unknown-partition"] = add_partitions(t, txn, pid, epoch, {topic: [0, 7]}, 3)
        out["add"] = add_partitions(t, txn, pid, epoch, {topic: [0]}, 3)
        out["add-again"] = add_partitions(t, txn, pid, epoch, {topic: [0]}, 3)
        out["verify"] = verify_partitions(t, txn, pid, epoch, {topic: [0, 1]})
        out["verify-stale"] = verify_partitions(t, txn, pid, epoch - 1, {topic: [0]})
        out["verify-unknown-id"] = verify_partitions(t, txn + "-unknown", pid, epoch, {topic: [0]})
        r = wire.request(t, AddOffsetsToTxnRequest(transactional_id=txn, producer_id=pid, producer_epoch=epoch,
                                                   group_id="g-" + txn), 3)
        out["add-offsets"] = e(r.error_code)
        r = wire.request(t, AddOffsetsToTxnRequest(transactional_id=txn, producer_id=pid, producer_epoch=epoch - 1,
                                                   group_id="g-" + txn), 1)
        out["add-offsets-stale-v1"] = e(r.error_code)
        d = describe(t, [txn, txn + "-unknown", ""])
        for x in d:  # the group's __consumer_offsets partition number depends on the group id only
            x["topics"] = [(n, ps if n != "__consumer_offsets" else len(ps)) for n, ps in x["topics"]]
        out["describe-ongoing"] = d
        out["list-ongoing"] = list_txns(t, [txn], state_filters=["Ongoing", "NoSuchState"])
        out["list-all"] = list_txns(t, [txn])
        out["list-unknown-state-only"] = list_txns(t, [txn], state_filters=["NoSuchState"])
        out["list-by-producer"] = list_txns(t, [txn], producer_id_filters=[pid])
        out["list-other-producer"] = list_txns(t, [txn], producer_id_filters=[pid + 100000])
        out["list-duration-long"] = list_txns(t, [txn], duration_filter=3_600_000)
        out["list-duration-zero"] = list_txns(t, [txn], duration_filter=0)
        out["list-pattern-match"] = list_txns(t, [txn], version=2, transactional_id_pattern="txn-a.d-.*|x")
        out["list-pattern-partial"] = list_txns(t, [txn], version=2, transactional_id_pattern="txn-add")
        out["list-pattern-bad"] = list_txns(t, [txn], version=2, transactional_id_pattern="txn-(")
        out["end-abort-while-ongoing-wrong-epoch"] = end_txn(t, txn, pid, epoch - 1, False, 3)
        out["commit"] = end_txn(t, txn, pid, epoch, True, 3)
        # Retries once the markers are written (before, both answer CONCURRENT_TRANSACTIONS, timing-dependent).
        out["describe-done"] = describe_until(t, txn, ("CompleteCommit",))
        out["commit-again"] = end_txn(t, txn, pid, epoch, True, 3)
        out["abort-after-commit"] = end_txn(t, txn, pid, epoch, False, 3)
        out["list-done"] = list_txns(t, [txn], state_filters=["CompleteCommit"])
        return out

    differ.check("txn-add-partitions-and-end", *both(targets, run))


def test_init_fences_an_ongoing_transaction(targets, differ, topic):
    txn = f"txn-fence-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic, 1)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"add": add_partitions(t, txn, pid, epoch, {topic: [0]})}
        # The new producer is told to retry while the old transaction is aborted with a bumped epoch.
        r = wire.request(t, InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=60000,
                                                  producer_id=-1, producer_epoch=-1), 4)
        out["init-while-ongoing"] = e(r.error_code)
        out["after-fence"] = describe_until(t, txn, ("CompleteAbort",))
        err, pid2, epoch2 = init(t, txn)
        out["init-retry"] = (e(err), pid2 == pid, epoch2)
        out["old-producer-end"] = end_txn(t, txn, pid, epoch, True, 3)
        out["old-producer-add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["describe"] = describe(t, [txn])
        return out

    differ.check("txn-init-fences-ongoing", *both(targets, run))


def test_transactions_v2_end_bumps_the_epoch(targets, differ, topic):
    txn = f"txn-v2-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic, 1)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn, version=5)
        out = {"init": (e(err), epoch)}
        # A transactions v2 producer adds partitions through AddPartitionsToTxn v5 from brokers, but a client's v4
        # add with EndTxn v5 is the same state machine.
        out["add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["commit-v5"] = end_txn(t, txn, pid, epoch, True, 5)
        out["describe"] = describe_until(t, txn, ("CompleteCommit",))
        out["commit-v5-retry"] = end_txn(t, txn, pid, epoch, True, 5)
        out["abort-v5-retry-of-commit"] = end_txn(t, txn, pid, epoch, False, 5)
        out["old-epoch-add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["new-epoch-add"] = add_partitions(t, txn, pid, epoch + 1, {topic: [0]})
        out["abort-v5"] = end_txn(t, txn, pid, epoch + 1, False, 5)
        out["describe-aborted"] = describe_until(t, txn, ("CompleteAbort",))
        return out

    differ.check("txn-v2-end-bumps-epoch", *both(targets, run))


def test_transactions_v2_fence_and_timeout(targets, differ, topic):
    """A transaction that a broker added partitions to for a transactions v2 producer (AddPartitionsToTxn v5, as
    Produce v12 does): fencing it by InitProducerId, and the epochs that result."""
    txn = f"txn-v2f-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic, 1)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn, version=5)
        out = {"init": (e(err), epoch)}
        out["add-v5"] = verify_partitions(t, txn, pid, epoch, {topic: [0]}, verify_only=False, version=5)
        out["describe-ongoing"] = describe(t, [txn])
        r = wire.request(t, InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=60000,
                                                  producer_id=-1, producer_epoch=-1), 5)
        out["init-while-ongoing"] = e(r.error_code)
        out["after-fence"] = describe_until(t, txn, ("CompleteAbort",))
        err, pid2, epoch2 = init(t, txn, version=5)
        out["init-retry"] = (e(err), pid2 == pid, epoch2)
        out["old-end-v5"] = end_txn(t, txn, pid, epoch, True, 5)
        return out

    differ.check("txn-v2-fence", *both(targets, run))


def test_transaction_version_feature(targets, differ):
    """ApiVersions v3+: the finalized transaction.version (2: clients use transactions v2, KIP-890 part 2)."""
    def run(t):
        r = wire.request(t, wire.ApiVersionsRequest(client_software_name="strom-differential",
                                                    client_software_version="1"), 3).to_dict()
        fin = [f for f in r.get("finalized_features") or [] if f["name"] == "transaction.version"]
        return {"finalized": fin, "epoch_set": (r.get("finalized_features_epoch") or -1) >= 0}

    differ.check("txn-transaction-version-feature", *both(targets, run))


def txn_batch(pid, epoch, seq, values, ts):
    import kafkawire
    b = kafkawire.idempotent_batch(pid, epoch, seq, values, ts)
    return kafkawire.patch(b, kafkawire.BATCH_ATTRIBUTES, ">h", 0x10)  # transactional


def txn_produce(t, txn_id, topic, batch, version, partition=0):
    R = wire.ProduceRequest
    req = R(transactional_id=txn_id, acks=-1, timeout_ms=10000, topic_data=[
        R.TopicProduceData(name=topic, topic_id=None, partition_data=[
            R.TopicProduceData.PartitionProduceData(index=partition, records=batch)])])
    p = wire.request(t, req, version).responses[0].partition_responses[0]
    return {"error_code": e(p.error_code), "base_offset": p.base_offset}


def test_transactional_produce_is_verified_with_the_coordinator(targets, differ, topic):
    """KIP-890: a transactional write to a partition that is not in the producer's transaction is refused
    (INVALID_TXN_STATE before Produce v11, TRANSACTION_ABORTABLE from v11); a stale epoch is
    INVALID_PRODUCER_EPOCH; Produce v12 under transactions v2 adds the partition to the transaction itself."""
    txn = f"txn-prod-{uuid.uuid4().hex[:8]}"
    ts = (int(time.time()) - 60) * 1000

    def run(t):
        make_topic(t, topic, 1)
        find_txn_coordinator(t, txn)
        init(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"init": (e(err), epoch)}
        out["not-added-v9"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"a"], ts), 9)
        out["not-added-v11"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"a"], ts), 11)
        out["add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["stale-epoch"] = txn_produce(t, txn, topic, txn_batch(pid, epoch - 1, 0, [b"a"], ts), 9)
        out["added"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"a", b"b"], ts), 9)
        out["commit"] = end_txn(t, txn, pid, epoch, True, 3)
        out["after-commit"] = describe_until(t, txn, ("CompleteCommit",))
        out["late-write-v9"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 2, [b"late"], ts), 9)
        # Produce v12 (transactions v2): the partition joins a new transaction implicitly.
        out["implicit-add-v12"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 2, [b"c"], ts), 12)
        out["describe-implicit"] = describe(t, [txn])
        out["abort-v5"] = end_txn(t, txn, pid, epoch, False, 5)
        out["after-abort"] = describe_until(t, txn, ("CompleteAbort",))
        # The epoch moved on with the abort: a retried write of the aborted transaction is fenced.
        out["retried-old-epoch-v12"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 3, [b"retry"], ts), 12)
        return out

    differ.check("txn-produce-verified", *both(targets, run))


def test_init_with_current_epoch_aborts_the_ongoing_transaction(targets, differ, topic):
    """KIP-360: a producer whose sequence is in doubt re-initialises with its own producer id and epoch while its
    transaction is open (the Strom client's abort after a failed batch); the coordinator aborts the transaction and
    the producer continues with a bumped epoch, not fenced."""
    txn = f"txn-kip360-{uuid.uuid4().hex[:8]}"

    def run(t):
        make_topic(t, topic, 1)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"add": add_partitions(t, txn, pid, epoch, {topic: [0]})}
        r = wire.request(t, InitProducerIdRequest(transactional_id=txn, transaction_timeout_ms=60000,
                                                  producer_id=pid, producer_epoch=epoch), 4)
        out["first-answer"] = e(r.error_code)
        out["aborted"] = describe_until(t, txn, ("CompleteAbort",))
        err2, pid2, epoch2 = init(t, txn, producer_id=pid, epoch=epoch)
        out["retry"] = (e(err2), pid2 == pid, epoch2 - epoch)
        out["old-epoch-add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["new-epoch-add"] = add_partitions(t, txn, pid, epoch2, {topic: [0]})
        return out

    differ.check("txn-kip360-init-while-ongoing", *both(targets, run))


def describe_producers(t, topics: dict, pid=None, batch_ts=None):
    """DescribeProducers v0; producer ids differ between the brokers, so `pid` is shown as "P", and a last
    timestamp is the batch's (`batch_ts`) or "now" (a marker's wall-clock time)."""
    from kafka.protocol.admin.transactions import DescribeProducersRequest
    R = DescribeProducersRequest
    r = wire.request(t, R(topics=[R.TopicRequest(name=n, partition_indexes=ps) for n, ps in topics.items()]), 0)

    def when(ts):
        if ts == batch_ts or ts < 0:
            return ts
        return "now" if abs(ts - time.time() * 1000) < 60_000 else ts
    return sorted((tr.name, p.partition_index, e(p.error_code), p.error_message,
                   [("P" if s.producer_id == pid else s.producer_id, s.producer_epoch, s.last_sequence,
                     when(s.last_timestamp), s.coordinator_epoch, s.current_txn_start_offset)
                    for s in p.active_producers])
                  for tr in r.topics for p in tr.partitions)


def test_describe_producers_and_admin_abort_of_an_open_transaction(targets, differ, topic):
    """KIP-664 (kafka-transactions.sh describe-producers / abort): DescribeProducers lists a partition's producers
    with the start offset of an open transaction, and unknown topics, partitions and invalid names get their errors;
    an admin's WriteTxnMarkers abort (what `kafka-transactions.sh abort` sends to the partition leader) ends the
    open transaction there, so the last stable offset moves on and the producer shows no open transaction."""
    txn = f"txn-producers-{uuid.uuid4().hex[:8]}"
    ts = (int(time.time()) - 60) * 1000

    def run(t):
        make_topic(t, topic, 2)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"init": e(err)}
        out["empty"] = describe_producers(t, {topic: [0, 1]}, pid)
        out["add"] = add_partitions(t, txn, pid, epoch, {topic: [0]})
        out["write"] = txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"a", b"b", b"c"], ts), 9)
        out["open"] = describe_producers(t, {topic: [0, 1, 9], "no-such-topic-dp": [0], "bad/name": [0]}, pid, ts)
        out["lso-before"] = lso_of(t, topic)
        import kafkawire
        with kafkawire.connect(t.port) as s:
            res = kafkawire.write_txn_markers(s, 1, [dict(
                producer_id=pid, producer_epoch=epoch, commit=False, coordinator_epoch=-1, topics={topic: [0]})])
        out["admin-abort"] = sorted((tp[1], wire.err(c)) for r in res.values() for tp, c in r.items())
        out["after-abort"] = describe_producers(t, {topic: [0]}, pid, ts)
        out["lso-after"] = lso_of(t, topic)
        return out

    differ.check("txn-describe-producers-admin-abort", *both(targets, run))


def lso_of(t, topic):
    r = wire.list_offsets(t, topic, {0: -1}, version=8, isolation_level=1)
    return r.topics[0].partitions[0].offset


def test_partition_verification_is_a_dynamic_broker_config(targets, differ, topic):
    """transaction.partition.verification.enable can be switched at run time (IncrementalAlterConfigs on the
    broker): off, a transactional write to a partition outside the transaction is accepted; on again, a write to
    another partition outside the transaction is refused."""
    from kafka.protocol.admin import IncrementalAlterConfigsRequest as R
    txn = f"txn-verif-{uuid.uuid4().hex[:8]}"
    ts = (int(time.time()) - 60) * 1000
    key = "transaction.partition.verification.enable"

    def alter(t, value):
        op = 0 if value is not None else 1  # SET / DELETE
        res = R.AlterConfigsResource(resource_type=4, resource_name="1", configs=[
            R.AlterConfigsResource.AlterableConfig(name=key, config_operation=op, value=value)])
        return wire.err(wire.request(t, R(resources=[res], validate_only=False), 1).responses[0].error_code)

    def run(t):
        make_topic(t, topic, 8)
        find_txn_coordinator(t, txn)
        err, pid, epoch = init(t, txn)
        out = {"init": e(err), "before": txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"a"], ts), 9)}
        seq = 0
        try:
            out["disable"] = alter(t, "false")
            deadline = time.monotonic() + 15
            while True:  # the broker takes the change up from its metadata a moment later
                r = txn_produce(t, txn, topic, txn_batch(pid, epoch, seq, [b"a"], ts), 9)
                if r["error_code"] == e(0) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            out["disabled"] = r
            seq += 1
        finally:
            # Set back explicitly: Kafka 4.3 keeps the live value when the override is deleted (until a restart).
            out["enable"] = alter(t, "true")
        # A fresh partition per attempt: one a write reached before the change took hold has the transaction open,
        # and Kafka does not ask the coordinator about such a partition again.
        for partition in range(1, 8):
            r = txn_produce(t, txn, topic, txn_batch(pid, epoch, 0, [b"b"], ts), 9, partition=partition)
            if r["error_code"] != e(0):
                break
            time.sleep(0.5)
        out["enabled-again"] = r["error_code"]
        out["remove-override"] = alter(t, None)
        return out

    differ.check("txn-partition-verification-dynamic", *both(targets, run))
