"""Crash consistency under power loss, not just kill -9.

kill -9 leaves the page cache intact, so a broker that answered acks=all before its fsync would still pass a kill -9
test. Here the broker's data directory is on strom-powerloss, a FUSE filesystem that keeps apart what each file had
at its last fsync, and every directory's entries at its last fsync (POSIX's promise, no more): after the kill, a
"power cut" takes every file and directory back to that, and the restarted broker must still hold every record it
acknowledged with acks=all. The same run on a filesystem that ignores the log segments' fsyncs, or the directories'
(a deliberately missing fsync), must lose acknowledged records, which shows that this test can fail.

Needs /dev/fuse and root (mount(2)); skips with the reason otherwise.
"""

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import unique
from helpers import create_topic

PARTITIONS = 3
RECORDS = 3000


@contextmanager
def powerloss_mount(tmp_path, *extra):
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        pytest.skip("needs /dev/fuse and root to mount the power-loss filesystem")
    # compat/conftest.py's names are not importable when the differential suite's conftest is collected too.
    POWERLOSS_BIN = str(Path(os.environ.get("STROM_BIN", Path(__file__).resolve().parents[1] / "target/release/strom")).parent / "strom-powerloss")
    if not os.path.exists(POWERLOSS_BIN):
        pytest.skip(f"{POWERLOSS_BIN} not built")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "powerloss.log", "wb")
    proc = subprocess.Popen([POWERLOSS_BIN, str(mnt), *extra], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                pytest.skip(f"cannot mount FUSE here: {(tmp_path / 'powerloss.log').read_text()[-500:]}")
            assert time.monotonic() < deadline, "power-loss filesystem did not mount"
            time.sleep(0.02)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def read_all(bootstrap, topic, **conf):
    """Every record of every partition, as {(partition, offset): value}; a missing topic reads as empty."""
    out = {}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("g"), "enable.auto.commit": False,
                  "enable.partition.eof": True, **conf})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return out
        ends = {}
        for p in md.partitions:
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > 0:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        done, deadline = set(), time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        done.add(m.partition())
                        continue
                    raise AssertionError(m.error())
                out[(m.partition(), m.offset())] = m.value()
        return out
    finally:
        c.close()


def acked_then_power_cut(mnt, broker_class, config=None, pad=0):
    """Produces with acks=all, kills the broker, cuts the power, restarts; returns (acknowledged, read back)."""
    from confluent_kafka import Producer

    # The operator's data directory exists, durably, before the broker starts.
    durable_data_dir(mnt)
    broker = broker_class(mnt / "data", {"log.index.size.max.bytes": 1048576, "num.partitions": PARTITIONS,
                                         **(config or {})})
    broker.start()
    try:
        topic = unique("pl")
        create_topic(broker.bootstrap, topic, PARTITIONS)
        acked = {}

        def delivered(err, msg):
            if err is None:
                acked[(msg.partition(), msg.offset())] = msg.value()

        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 2})
        for i in range(RECORDS):
            p.produce(topic, value=f"record-{i}".encode() + b"x" * pad, partition=i % PARTITIONS, on_delivery=delivered)
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        assert len(acked) == RECORDS
        broker.kill9()
        (mnt / ".powercut").write_text("1")
        broker.start()
        return acked, read_all(broker.bootstrap, topic)
    finally:
        broker.close()


def test_acknowledged_records_survive_power_loss(tmp_path, broker_class):
    with powerloss_mount(tmp_path) as mnt:
        acked, got = acked_then_power_cut(mnt, broker_class)
    lost = [k for k, v in acked.items() if got.get(k) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost, e.g. {sorted(lost)[:5]}"


def test_acknowledged_records_survive_power_loss_across_segment_rolls(tmp_path, broker_class):
    """Segments roll all the time: every roll makes new files, whose directory entries must be durable too."""
    with powerloss_mount(tmp_path) as mnt:
        acked, got = acked_then_power_cut(mnt, broker_class, {"log.segment.bytes": 1048576}, pad=3000)
        segments = [f for f in (mnt / "data").glob("pl-*/*.log")]
    assert len(segments) > 2 * PARTITIONS, f"the segments did not roll: {segments}"
    lost = [k for k, v in acked.items() if got.get(k) != v]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost, e.g. {sorted(lost)[:5]}"


def test_power_loss_test_catches_a_missing_log_fsync(tmp_path, broker_class):
    with powerloss_mount(tmp_path, "--ignore-fsync-suffix", ".log") as mnt:
        acked, got = acked_then_power_cut(mnt, broker_class)
    lost = [k for k, v in acked.items() if got.get(k) != v]
    print(f"missing log fsync: {len(lost)} of {len(acked)} acknowledged records lost")
    assert lost, "with the segments' fsyncs ignored, the power cut should have lost acknowledged records"


def test_power_loss_test_catches_a_missing_directory_fsync(tmp_path, broker_class):
    with powerloss_mount(tmp_path, "--ignore-dir-fsync") as mnt:
        acked, got = acked_then_power_cut(mnt, broker_class)
    lost = [k for k, v in acked.items() if got.get(k) != v]
    print(f"missing directory fsync: {len(lost)} of {len(acked)} acknowledged records lost")
    assert lost, "with directory fsyncs ignored, the power cut should have lost acknowledged records"


def durable_data_dir(mnt):
    (mnt / "data").mkdir()
    fd = os.open(mnt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_committed_offsets_survive_power_loss(tmp_path, broker_class):
    """An offset commit the coordinator acknowledged is durable like an acks=all produce."""
    from confluent_kafka import Producer

    with powerloss_mount(tmp_path) as mnt:
        durable_data_dir(mnt)
        broker = broker_class(mnt / "data", {"num.partitions": PARTITIONS, "offsets.topic.num.partitions": 3})
        broker.start()
        try:
            topic, group = unique("pl"), unique("g")
            create_topic(broker.bootstrap, topic, PARTITIONS)
            p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
            for i in range(30):
                p.produce(topic, value=b"v", partition=i % PARTITIONS)
            assert p.flush(30) == 0
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
            want = [TopicPartition(topic, i, 5 + i) for i in range(PARTITIONS)]
            c.commit(offsets=want, asynchronous=False)
            c.close()
            broker.kill9()
            (mnt / ".powercut").write_text("1")
            broker.start()
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
            try:
                got = c.committed([TopicPartition(topic, i) for i in range(PARTITIONS)], timeout=30)
            finally:
                c.close()
        finally:
            broker.close()
    assert sorted((t.partition, t.offset) for t in got) == [(i, 5 + i) for i in range(PARTITIONS)]


def test_committed_transaction_survives_power_loss(tmp_path, broker_class):
    """A transaction whose commit was acknowledged is committed after the power cut: read_committed sees all of it
    (its markers and the coordinator's state are durable), and a new producer with the same id starts clean."""
    from confluent_kafka import Producer

    with powerloss_mount(tmp_path) as mnt:
        durable_data_dir(mnt)
        broker = broker_class(mnt / "data", {"num.partitions": PARTITIONS, "transaction.state.log.num.partitions": 3,
                                             "offsets.topic.num.partitions": 3})
        broker.start()
        try:
            topic, tid = unique("pl"), unique("tx")
            create_topic(broker.bootstrap, topic, PARTITIONS)
            p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
            p.init_transactions(30)
            p.begin_transaction()
            for i in range(60):
                p.produce(topic, value=f"r{i}".encode(), partition=i % PARTITIONS)
            p.commit_transaction(30)
            broker.kill9()
            (mnt / ".powercut").write_text("1")
            broker.start()
            p2 = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": tid})
            p2.init_transactions(30)
            got = set(read_all(broker.bootstrap, topic, **{"isolation.level": "read_committed"}).values())
        finally:
            broker.close()
    assert got == {f"r{i}".encode() for i in range(60)}, f"{len(got)} of 60 committed records read back"
