"""Differential scenarios: offsets, watermarks, ListOffsets (offsets for
times, earliest/latest/max timestamp), Produce and Fetch error codes
(unknown topic, out-of-range partition and offset, oversize records against
max.message.bytes, timestamps out of bounds, bad acks).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import wire
from obs import both, error_notes, strip

TIMEOUT = 30

def recent_t0() -> int:
    """A base timestamp ten minutes ago, whole second. Records must be recent:
    old timestamps fall under time retention (7 days), which Strom applies
    sooner than Kafka's 5-minute retention check."""
    return (int(time.time()) - 600) * 1000


# Record timestamps for the time-index scenarios: not monotonic on purpose.
TS_OFFSETS = [0, 1000, 1000, 3000, 2000, 5000, 4000, 4000, 9000, 6000]


def make_topic(t, name, partitions=1, configs=None):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions, configs=configs or {})])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)


def produce_batches(t, topic, t0, per_batch=1, partition=0):
    """One record batch per `per_batch` records, timestamps t0 + TS_OFFSETS[i]."""
    offsets = []
    for i in range(0, len(TS_OFFSETS), per_batch):
        idx = range(i, min(i + per_batch, len(TS_OFFSETS)))
        recs = [(f"k{j}".encode(), f"v{j}".encode(), ()) for j in idx]
        b = timed_batch(recs, [t0 + TS_OFFSETS[j] for j in idx])
        r = wire.produce(t, topic, {partition: b})
        p = r.responses[0].partition_responses[0]
        assert p.error_code == 0, p
        offsets.append(p.base_offset)
    return offsets


def timed_batch(records, timestamps) -> bytes:
    """A v2 batch whose records carry the given timestamps (deltas from the first)."""
    import struct

    import kafkawire as kw
    base = timestamps[0]
    encoded = b"".join(kw.encode_record(i, ts - base, k, v, h)
                       for i, ((k, v, h), ts) in enumerate(zip(records, timestamps)))
    after_crc = (struct.pack(">h", 0) + struct.pack(">i", len(records) - 1)
                 + struct.pack(">q", base) + struct.pack(">q", max(timestamps))
                 + struct.pack(">q", -1) + struct.pack(">h", -1) + struct.pack(">i", -1)
                 + struct.pack(">i", len(records)) + encoded)
    crc = kw.crc32c(after_crc)
    after_len = struct.pack(">i", 0) + b"\x02" + struct.pack(">I", crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def lo_obs(resp):
    out = []
    for tp in resp.topics:
        for p in tp.partitions:
            d = p.to_dict()
            out.append({"partition": d["partition_index"], "error_code": wire.err(d["error_code"]),
                        "offset": d.get("offset"), "timestamp": d.get("timestamp"),
                        "leader_epoch": d.get("leader_epoch")})
    return out


# --------------------------------------------------------------- watermarks
def test_watermarks(targets, differ, topic):
    def run(t):
        make_topic(t, topic, partitions=3)
        empty = {}
        c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": "unused-differential"})
        try:
            for p in range(3):
                empty[p] = list(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10))
            t0 = int(time.time() * 1000) - 60_000
            produce_batches(t, topic, t0, per_batch=2, partition=1)
            produce_batches(t, topic, t0, per_batch=5, partition=2)
            after = {p: list(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10))
                     for p in range(3)}
        finally:
            c.close()
        return {"empty": empty, "after_produce": after}

    differ.check("watermarks-confluent", *both(targets, run))


# --------------------------------------------------------------- ListOffsets
SPECS = {"latest": -1, "earliest": -2, "max-timestamp": -3}


@pytest.mark.parametrize("version", [1, 4, 7, 8, 10])
def test_list_offsets_specs(targets, differ, version):
    """Earliest/latest (and MAX_TIMESTAMP from v7, EARLIEST_LOCAL from v8)
    on an empty partition and after non-monotonic timestamps."""
    name = f"lo-v{version}-{time.time_ns() % 10**9}"
    specs = dict(SPECS)
    if version < 7:
        specs.pop("max-timestamp")
    if version >= 8:
        specs["earliest-local"] = -4

    t0 = recent_t0()

    def run(t):
        make_topic(t, name)
        empty = {k: lo_obs(wire.list_offsets(t, name, {0: ts}, version=version)) for k, ts in specs.items()}
        produce_batches(t, name, t0, per_batch=3)
        full = {k: lo_obs(wire.list_offsets(t, name, {0: ts}, version=version)) for k, ts in specs.items()}
        return {"empty": empty, "after_produce": full}

    differ.check(f"list-offsets-specs-v{version}", *both(targets, run))


@pytest.mark.parametrize("per_batch", [1, 3], ids=["batch1", "batch3"])
def test_offsets_for_times_raw(targets, differ, per_batch):
    name = f"oft-{per_batch}-{time.time_ns() % 10**9}"
    t0 = recent_t0()

    queries = sorted({t0 - 1, *[t0 + d for d in TS_OFFSETS], *[t0 + d + 1 for d in TS_OFFSETS],
                      t0 + 1500, t0 + 10_000, 0})

    def run(t):
        make_topic(t, name)
        produce_batches(t, name, t0, per_batch=per_batch)
        return {str(q - t0): lo_obs(wire.list_offsets(t, name, {0: q}, version=8)) for q in queries}

    differ.check(f"offsets-for-times-raw-{per_batch}-per-batch", *both(targets, run))


def test_offsets_for_times_clients(targets, differ, topic):
    """offsets_for_times through confluent-kafka, kafka-python and aiokafka."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    t0 = recent_t0()
    queries = [t0 - 1, t0, t0 + 1500, t0 + 4000, t0 + 8999, t0 + 9000, t0 + 9001]

    def run(t):
        make_topic(t, topic)
        produce_batches(t, topic, t0, per_batch=2)
        out = {}
        c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": "unused-differential"})
        try:
            out["confluent"] = {
                str(q - t0): c.offsets_for_times([TopicPartition(topic, 0, q)], timeout=10)[0].offset
                for q in queries}
        finally:
            c.close()
        kc = KafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, request_timeout_ms=20000)
        try:
            kp = {}
            for q in queries:
                r = kc.offsets_for_times({KTP(topic, 0): q})[KTP(topic, 0)]
                kp[str(q - t0)] = None if r is None else [r.offset, r.timestamp]
            out["kafka-python"] = kp
            out["kafka-python-beginning"] = kc.beginning_offsets([KTP(topic, 0)])[KTP(topic, 0)]
            out["kafka-python-end"] = kc.end_offsets([KTP(topic, 0)])[KTP(topic, 0)]
        finally:
            kc.close()

        async def aio():
            from aiokafka import AIOKafkaConsumer
            from aiokafka import TopicPartition as ATP
            ac = AIOKafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, request_timeout_ms=20000)
            await ac.start()
            try:
                res = {}
                for q in queries:
                    r = (await ac.offsets_for_times({ATP(topic, 0): q}))[ATP(topic, 0)]
                    res[str(q - t0)] = None if r is None else [r.offset, r.timestamp]
                return res
            finally:
                await ac.stop()

        out["aiokafka"] = asyncio.run(aio())
        return out

    differ.check("offsets-for-times-clients", *both(targets, run))


def test_list_offsets_errors(targets, differ, topic):
    def run(t):
        make_topic(t, topic)
        return {
            "unknown-topic": lo_obs(wire.list_offsets(t, topic + "-nope", {0: -1})),
            "partition-out-of-range": lo_obs(wire.list_offsets(t, topic, {5: -1})),
            "negative-partition": lo_obs(wire.list_offsets(t, topic, {-1: -2})),
            "bogus-spec-minus-7": lo_obs(wire.list_offsets(t, topic, {0: -7})),
            "max-timestamp-at-v6": lo_obs(wire.list_offsets(t, topic, {0: -3}, version=6)),
            "earliest-local-at-v7": lo_obs(wire.list_offsets(t, topic, {0: -4}, version=7)),
            "latest-tiered-at-v8": lo_obs(wire.list_offsets(t, topic, {0: -5}, version=8)),
            "latest-tiered-at-v10": lo_obs(wire.list_offsets(t, topic, {0: -5}, version=10)),
        }

    differ.check("list-offsets-errors", *both(targets, run))


# ------------------------------------------------------------------ Produce
def pr_obs(resp):
    out = []
    for tr in resp.responses:
        for p in tr.partition_responses:
            d = p.to_dict()
            out.append({"topic": tr.name, "partition": d["index"], "error_code": wire.err(d["error_code"]),
                        "base_offset": d["base_offset"], "log_append_time_ms": d.get("log_append_time_ms"),
                        "log_start_offset": d.get("log_start_offset"),
                        # batch_index only: the message is free text
                        "record_errors": None if d.get("record_errors") is None else
                        [e["batch_index"] for e in d["record_errors"]]})
    return out


def test_produce_offsets_raw(targets, differ, topic):
    """base_offset, log_start_offset, log_append_time over several batches and partitions."""
    def run(t):
        make_topic(t, topic, partitions=2)
        out = []
        for i in range(4):
            recs = [(f"k{i}-{j}".encode(), b"v" * (i * 10), ()) for j in range(i + 1)]
            out.append(pr_obs(wire.produce(t, topic, {i % 2: wire.batch(recs)})))
        both_parts = wire.produce(t, topic, {0: wire.batch([(b"a", b"1", ())]),
                                              1: wire.batch([(b"b", b"2", ()), (b"c", b"3", ())])})
        out.append(sorted(pr_obs(both_parts), key=lambda d: d["partition"]))
        return out

    differ.check("produce-offsets-raw", *both(targets, run))


@pytest.mark.parametrize("version", [3, 7, 8, 9, 11])
def test_produce_versions(targets, differ, version):
    name = f"pv{version}-{time.time_ns() % 10**9}"

    def run(t):
        make_topic(t, name)
        return [pr_obs(wire.produce(t, name, {0: wire.batch([(b"k", b"v", ())] * 3)}, version=version))
                for _ in range(2)]

    differ.check(f"produce-v{version}", *both(targets, run))


def test_produce_errors(targets, differ, topic):
    resps = {}

    def run(t):
        make_topic(t, topic)
        b = wire.batch([(b"k", b"v", ())])
        out = {
            "unknown-topic": pr_obs(wire.produce(t, topic + "-nope", {0: b})),
            "partition-out-of-range": pr_obs(wire.produce(t, topic, {3: b})),
            "acks-2": pr_obs(wire.produce(t, topic, {0: b}, acks=2)),
        }
        # after the errors the partition must still be at offset 0
        out["next-offset"] = pr_obs(wire.produce(t, topic, {0: b}))
        return out

    differ.check("produce-errors", *both(targets, run))


@pytest.mark.parametrize("limit", [1000, 4096])
def test_produce_oversize_topic_limit(targets, differ, limit):
    """A batch of exactly max.message.bytes is accepted, one byte more is not
    (Kafka compares the whole batch, log overhead included)."""
    name = f"big{limit}-{time.time_ns() % 10**9}"
    empty = wire.batch([(b"k", b"", ())], base_timestamp=0)
    overhead = len(empty)

    def sized(n):
        # value of length v grows the batch by v plus varint growth: search.
        for v in range(max(0, n - overhead - 8), n):
            b = wire.batch([(b"k", b"x" * v, ())])
            if len(b) == n:
                return b
        raise AssertionError(f"cannot build a batch of {n} bytes")

    def run(t):
        make_topic(t, name, configs={"max.message.bytes": str(limit)})
        out = {}
        for label, size in (("at-limit", limit), ("limit+1", limit + 1), ("limit+100", limit + 100)):
            out[label] = pr_obs(wire.produce(t, name, {0: sized(size)}))
        return out

    differ.check(f"produce-oversize-topic-max-message-bytes-{limit}", *both(targets, run))


def test_produce_oversize_client(targets, differ, topic):
    """librdkafka sees the broker's MESSAGE_TOO_LARGE for a record above the topic limit."""
    from confluent_kafka import Producer

    def run(t):
        make_topic(t, topic, configs={"max.message.bytes": "2000"})
        p = Producer({"bootstrap.servers": t.bootstrap, "enable.idempotence": False})
        res = []
        p.produce(topic, value=b"x" * 1500, partition=0, on_delivery=lambda e, m: res.append(
            ("small", e.name() if e else None, m.offset())))
        p.produce(topic, value=b"y" * 5000, partition=0, on_delivery=lambda e, m: res.append(
            ("large", e.name() if e else None, m.offset())))
        p.flush(TIMEOUT)
        return sorted(res)

    differ.check("produce-oversize-confluent", *both(targets, run))


def test_produce_oversize_broker_default(targets, differ, topic):
    """No topic override: the broker default message.max.bytes (1048588)."""
    def run(t):
        make_topic(t, topic)
        out = {}
        for label, size in (("1048588", 1048588), ("1048589", 1048589)):
            overhead = len(wire.batch([(b"k", b"", ())]))
            b = None
            for v in range(size - overhead - 8, size):
                cand = wire.batch([(b"k", b"x" * v, ())])
                if len(cand) == size:
                    b = cand
                    break
            assert b is not None
            out[label] = pr_obs(wire.produce(t, topic, {0: b}))
        return out

    differ.check("produce-oversize-broker-default", *both(targets, run))


def test_produce_timestamp_bounds(targets, differ, topic):
    """message.timestamp.before/after.max.ms defaults (Kafka 4: after = 1 hour)."""
    def run(t):
        make_topic(t, topic)
        now = int(time.time() * 1000)
        out = {}
        for label, ts in (("now", now), ("minus-1-day", now - 86_400_000),
                          ("plus-10-min", now + 600_000), ("plus-2-hours", now + 7_200_000),
                          ("minus-30-years", now - 30 * 365 * 86_400_000)):
            out[label] = pr_obs(wire.produce(t, topic, {0: timed_batch([(b"k", b"v", ())], [ts])}))
        return out

    differ.check("produce-timestamp-bounds", *both(targets, run))


def test_produce_timestamp_bounds_topic_config(targets, differ, topic):
    def run(t):
        make_topic(t, topic, configs={"message.timestamp.after.max.ms": "1000",
                                      "message.timestamp.before.max.ms": "60000"})
        now = int(time.time() * 1000)
        out = {}
        for label, ts in (("now", now), ("minus-2-min", now - 120_000), ("plus-1-min", now + 60_000)):
            out[label] = pr_obs(wire.produce(t, topic, {0: timed_batch([(b"k", b"v", ())], [ts])}))
        return out

    differ.check("produce-timestamp-bounds-topic-config", *both(targets, run))


# -------------------------------------------------------------------- Fetch
def f_obs(resp, with_records=False):
    out = []
    for tr in resp.responses:
        for p in tr.partitions:
            d = p.to_dict()
            e = {"partition": d["partition_index"], "error_code": wire.err(d["error_code"]),
                 "high_watermark": d["high_watermark"], "last_stable_offset": d.get("last_stable_offset"),
                 "log_start_offset": d.get("log_start_offset"),
                 "aborted_transactions": d.get("aborted_transactions"),
                 "preferred_read_replica": d.get("preferred_read_replica"),
                 "has_records": bool(p.records)}
            if with_records:
                e["records"] = [
                    {"offset": r.offset, "key": r.key, "value": r.value, "timestamp": r.timestamp,
                     "headers": [list(h) for h in r.headers]}
                    for r in decode_records(p.records)]
            out.append(e)
    return {"error_code": wire.err(resp.error_code) if hasattr(resp, "error_code") else None,
            "partitions": out}


def decode_records(raw):
    from kafka.record import MemoryRecords
    out = []
    if not raw:
        return out
    mr = MemoryRecords(bytes(raw))
    while True:
        batch = mr.next_batch()
        if batch is None:
            break
        out.extend(batch)
    return out


@pytest.mark.parametrize("version", [4, 11, 12])
def test_fetch_offsets(targets, differ, version):
    """Fetch at start, mid-batch, at the high watermark, past it, negative."""
    name = f"f{version}-{time.time_ns() % 10**9}"
    t0 = recent_t0()

    def run(t):
        make_topic(t, name)
        produce_batches(t, name, t0, per_batch=5)  # offsets 0-4, 5-9
        cases = {"0": 0, "mid-batch-3": 3, "7": 7, "hw-10": 10, "hw+1": 11, "hw+100": 110, "minus-1": -1}
        return {k: f_obs(wire.fetch(t, name, {0: o}, version=version), with_records=True)
                for k, o in cases.items()}

    differ.check(f"fetch-offsets-v{version}", *both(targets, run))


def test_fetch_errors(targets, differ, topic):
    t0 = recent_t0()

    def run(t):
        make_topic(t, topic)
        produce_batches(t, topic, t0, per_batch=5)
        md = wire.metadata(t, [topic])
        tid = md.topics[0].topic_id
        import uuid as _uuid
        return {
            "unknown-topic-v12": f_obs(wire.fetch(t, topic + "-nope", {0: 0}, version=12)),
            "partition-out-of-range-v12": f_obs(wire.fetch(t, topic, {7: 0}, version=12)),
            "topic-id-v13": f_obs(wire.fetch(t, "", {0: 0}, version=13, topic_id=tid)),
            "unknown-topic-id-v13": f_obs(wire.fetch(t, "", {0: 0}, version=13, topic_id=_uuid.uuid4())),
            "topic-id-v18-hw": f_obs(wire.fetch(t, "", {0: 10}, version=18, topic_id=tid)),
            "topic-id-v18-out-of-range": f_obs(wire.fetch(t, "", {0: 11}, version=18, topic_id=tid)),
        }

    differ.check("fetch-errors", *both(targets, run))


def test_fetch_out_of_range_clients(targets, differ, topic):
    """What clients do with an out-of-range position: confluent with
    auto.offset.reset=error reports it; kafka-python with reset=earliest
    resets to the log start."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    t0 = recent_t0()

    def run(t):
        make_topic(t, topic)
        produce_batches(t, topic, t0, per_batch=5)
        c = Consumer({"bootstrap.servers": t.bootstrap, "group.id": "unused-differential",
                      "auto.offset.reset": "error", "enable.auto.commit": False})
        errs = []
        try:
            c.assign([TopicPartition(topic, 0, 50)])
            deadline = time.monotonic() + 10
            while not errs and time.monotonic() < deadline:
                for m in c.consume(num_messages=10, timeout=0.5):
                    if m.error():
                        errs.append(m.error().name())
                    else:
                        errs.append(f"record@{m.offset()}")
        finally:
            c.close()
        kc = KafkaConsumer(bootstrap_servers=t.bootstrap, group_id=None, auto_offset_reset="earliest",
                           enable_auto_commit=False, request_timeout_ms=20000)
        try:
            tp = KTP(topic, 0)
            kc.assign([tp])
            kc.seek(tp, 50)
            got = []
            deadline = time.monotonic() + 10
            while len(got) < 10 and time.monotonic() < deadline:
                for recs in kc.poll(timeout_ms=300).values():
                    got.extend(r.offset for r in recs)
        finally:
            kc.close()
        return {"confluent-reset-error": errs[:1], "kafka-python-reset-earliest": got}

    differ.check("fetch-out-of-range-clients", *both(targets, run))
