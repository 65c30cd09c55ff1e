"""Transactions across a broker kill -9 and restart (issue 7).

Before the kill: transaction B is open (its records are in the log, its
offsets sent to group GB, not committed) with transaction.timeout.ms=3000, and
transaction A has just committed (records and group GA's offsets; the kill
follows the acknowledged commit at once, so its markers may still be in
flight). After a restart on the same data directory:

  * A is visible to read_committed, GA's offset is committed (the coordinator
    recovered A and completed it);
  * B is aborted once its timeout has passed (the broker checks every
    transaction.abort.timed.out.transaction.cleanup.interval.ms, set small
    here): the LSO moves past it to the high watermark, read_committed never
    shows its records (read_uncommitted does), GB has no committed offset;
  * the old producer B can no longer commit, and a new producer with B's
    transactional.id can run a transaction that commits.

`scenario()` takes any broker with .bootstrap, .kill9() and .start(), so the
same steps can be run by hand against Apache Kafka (see the module's
__main__). Apache Kafka 4.3.1 (one combined KRaft node) passes when the
restart waits out its broker session (RESTART_DELAY=12). Restarted at once,
its partitions are leaderless for a few seconds (the controller fences the
stale broker registration) and the transaction coordinator drops the markers
of the transactions it recovers ("Couldn't find leader endpoint for
partitions ... likely deleted already and hence can be skipped"): A's commit
marker is never written, the LSO stays at A's first offset for good and the
transactional offsets stay pending. Strom must not copy that.
"""

from __future__ import annotations

import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

from conftest import unique
from helpers import create_topic

TXN_TIMEOUT_MS = 3000
BROKER_OVERRIDES = {
    # Kafka's name and default (10000) for how often the coordinator looks for timed-out transactions.
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}


def txn_producer(bootstrap, txn_id):
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                     "transaction.timeout.ms": TXN_TIMEOUT_MS, "linger.ms": 5})


def offsets(bootstrap, topic, isolation):
    """Latest offset of partition 0 at an isolation level: the high watermark or the LSO."""
    a = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    fut = a.list_offsets({tp: OffsetSpec.latest()}, isolation_level=isolation, request_timeout=10)
    return fut[tp].result(15).offset


def lso_and_hw(bootstrap, topic):
    return (offsets(bootstrap, topic, IsolationLevel.READ_COMMITTED),
            offsets(bootstrap, topic, IsolationLevel.READ_UNCOMMITTED))


def read_values(bootstrap, topic, isolation, timeout=20.0):
    """Values of partition 0 from the beginning to its end (the LSO for read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False,
                  "isolation.level": isolation, "enable.partition.eof": True, "fetch.wait.max.ms": 50})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(m.error())
            out.append(m.value().decode())
    finally:
        c.close()
    raise AssertionError(f"{topic}: end not reached in {timeout}s ({isolation}); read {out}")


def committed_offset(bootstrap, group, topic, timeout=30.0):
    """The group's committed offset (require_stable: waits out pending transactional offsets); coordinator
    errors right after a restart (NOT_COORDINATOR, load in progress) are retried as an application would."""
    deadline = time.monotonic() + timeout
    while True:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_committed"})
        try:
            return c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        except KafkaException as e:
            if time.monotonic() > deadline or e.args[0].fatal():
                raise
        finally:
            c.close()
        time.sleep(0.2)


def wait_until(cond, timeout, what):
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            last = cond()
            if last:
                return time.monotonic() - t0
        except KafkaException as e:  # the broker may still be loading its state
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def scenario(broker, report=print):
    bootstrap = broker.bootstrap
    topic, source = unique("txn-restart"), unique("txn-restart-src")
    group_a, group_b = unique("ga"), unique("gb")
    create_topic(bootstrap, topic)
    create_topic(bootstrap, source)

    # B: open transaction, records flushed to the log and offsets sent, never committed.
    b = txn_producer(bootstrap, unique("txn-b"))
    b.init_transactions(30)
    b.begin_transaction()
    for i in range(2):
        b.produce(topic, value=f"open-{i}".encode())
    assert b.flush(10) == 0
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group_b})
    b.send_offsets_to_transaction([TopicPartition(source, 0, 7)], probe.consumer_group_metadata(), 30)
    probe.close()
    lso, hw = lso_and_hw(bootstrap, topic)
    assert (lso, hw) == (0, 2), f"open transaction at offsets 0-1: want LSO 0 and high watermark 2, got {lso, hw}"

    # A: a transaction committed (records + group offsets); the kill follows the acknowledgement at once.
    a_txn_id = unique("txn-a")
    a = txn_producer(bootstrap, a_txn_id)
    a.init_transactions(30)
    a.begin_transaction()
    for i in range(3):
        a.produce(topic, value=f"committed-{i}".encode())
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group_a})
    a.send_offsets_to_transaction([TopicPartition(source, 0, 42)], probe.consumer_group_metadata(), 30)
    probe.close()
    a.commit_transaction(30)
    t_kill = time.monotonic()
    broker.kill9()
    broker.start()
    report(f"restarted {time.monotonic() - t_kill:.1f}s after the kill")

    # A is complete after the restart: its records and its group offset.
    secs = wait_until(lambda: "committed-2" in read_values(bootstrap, topic, "read_uncommitted"), 30,
                      "A's records readable")
    report(f"A's records readable {secs:.2f}s after restart")
    assert committed_offset(bootstrap, group_a, source) == 42

    # B is aborted once its timeout has passed: the LSO reaches the high watermark (B's abort marker written).
    t0 = time.monotonic()
    while True:
        lso, hw = lso_and_hw(bootstrap, topic)
        rc = read_values(bootstrap, topic, "read_committed")
        assert not any(v.startswith("open-") for v in rc), f"B's uncommitted records visible to read_committed: {rc}"
        if lso == hw:
            break
        assert lso == 0, f"while B is open the LSO stays at its first offset 0, got {lso} (high watermark {hw})"
        assert time.monotonic() - t0 < 30, f"B not aborted 30s after restart (LSO {lso}, high watermark {hw})"
        time.sleep(0.2)
    report(f"LSO released {time.monotonic() - t0:.2f}s after restart checks began "
           f"({time.monotonic() - t_kill:.2f}s after the kill; transaction.timeout.ms={TXN_TIMEOUT_MS})")
    # Offsets 0-1 B's records, 2-4 A's records, then A's commit and B's abort markers (either order). When the kill
    # lands after A's marker was written but before CompleteCommit was logged, the recovered coordinator writes A's
    # marker again (as Kafka's does): one more control batch, never more data (checked below).
    assert hw in (7, 8), f"want B's 2 + A's 3 records and two or three markers (high watermark 7 or 8), got {hw}"
    assert read_values(bootstrap, topic, "read_committed") == ["committed-0", "committed-1", "committed-2"]
    assert read_values(bootstrap, topic, "read_uncommitted") == [
        "open-0", "open-1", "committed-0", "committed-1", "committed-2"]
    assert committed_offset(bootstrap, group_b, source) < 0, "B's transactional offset commit must not be visible"

    # The old producer B cannot commit the aborted transaction.
    try:
        b.commit_transaction(15)
        raise AssertionError("the timed-out (aborted) transaction B committed after the restart")
    except KafkaException as e:
        report(f"old producer B's commit after the restart: {e}")
    assert read_values(bootstrap, topic, "read_committed") == ["committed-0", "committed-1", "committed-2"]

    # A new producer with A's transactional id works on the recovered coordinator.
    a2 = txn_producer(bootstrap, a_txn_id)
    a2.init_transactions(30)
    a2.begin_transaction()
    a2.produce(topic, value=b"after-restart")
    a2.commit_transaction(30)
    assert read_values(bootstrap, topic, "read_committed")[-1] == "after-restart"


def test_transactions_survive_kill9(make_broker):
    broker = make_broker(BROKER_OVERRIDES)
    scenario(broker)


if __name__ == "__main__":
    # By hand against a broker started with scripts/reference-kafka (e.g. Apache Kafka):
    #   [RESTART_DELAY=12] test_transactions_restart.py TARGET PORT CONTROLLER_PORT DATA_DIR
    # kill -9 of the pid in DATA_DIR/broker.pid, then `reference-kafka start` again on the same directory
    # (started with --override transaction.abort.timed.out.transaction.cleanup.interval.ms=500).
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    target, port, cport, data_dir = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    script = Path(__file__).resolve().parent.parent / "scripts" / "reference-kafka"

    class ByHand:
        bootstrap = f"127.0.0.1:{port}"

        def kill9(self):
            pid = int((data_dir / "broker.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
                time.sleep(0.05)
            (data_dir / "broker.pid").unlink()
            import socket
            while True:  # the listener goes with the process; wait until nothing answers on the port
                try:
                    socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
                    time.sleep(0.1)
                except OSError:
                    break

        def start(self):
            time.sleep(float(os.environ.get("RESTART_DELAY", "0")))
            cmd = [sys.executable, str(script), "start", "--target", target, "--port", port, "--data-dir",
                   str(data_dir)]
            if target == "kafka":
                cmd += ["--controller-port", cport]
            for k, v in BROKER_OVERRIDES.items():
                cmd += ["--override", f"{k}={v}"]
            subprocess.run(cmd, check=True)

    scenario(ByHand())
    print("OK")
