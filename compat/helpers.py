"""Shared client-side helpers (confluent-kafka based) for the compat suite."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                 timeout: float = 30.0):
    """Create a topic and wait until its metadata shows every partition with a leader."""
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, config=config or {})],
                          operation_timeout=timeout, request_timeout=timeout)
    fut[name].result(timeout)
    wait_for_topic(bootstrap, name, partitions, timeout)
    return a


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0):
    """Wait until metadata shows every partition with a leader, and the
    leader serves ListOffsets for each (topic creation is asynchronous in
    Kafka: the metadata can show a leader slightly before the partition is
    writable, and an acks=0 record sent then is silently dropped)."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
                p.leader >= 0 and p.error is None for p in t.partitions.values()):
            break
        last = t
        time.sleep(0.1)
    else:
        raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last!r}")
    wait_partitions_writable(bootstrap, name, partitions, deadline - time.monotonic())
    return t


def wait_partitions_writable(bootstrap: str, name: str, partitions: int, timeout: float = 30.0):
    c = consumer(bootstrap)
    try:
        for p in range(partitions):
            watermarks(c, TopicPartition(name, p), max(timeout, 1.0))
    finally:
        c.close()


def producer(bootstrap: str, **conf) -> Producer:
    base = {"bootstrap.servers": bootstrap, "enable.idempotence": False, "linger.ms": 5}
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Producer(base)


def consumer(bootstrap: str, **conf) -> Consumer:
    """An assign()-only consumer: group.id is required by librdkafka but no
    group coordinator is ever contacted (no subscribe, no commits)."""
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": "strom-compat-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    base.update({k.replace("_", "."): v for k, v in conf.items()})
    return Consumer(base)


def produce_sync(p: Producer, topic: str, records, timeout: float = 30.0):
    """Produce dicts of Producer.produce kwargs; return the delivered Message objects in order."""
    results = [None] * len(records)

    def cb_for(i):
        def cb(err, msg):
            results[i] = (err, msg)
        return cb

    for i, r in enumerate(records):
        while True:
            try:
                p.produce(topic, on_delivery=cb_for(i), **r)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages not delivered within {timeout}s"
    errors = [(i, e) for i, (e, _) in enumerate(results) if e is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    return [m for _, m in results]


def consume_partitions(bootstrap: str, topic: str, partitions, expected: int,
                       timeout: float = 30.0, start=None, **conf):
    """assign() the given partitions from `start` (default OFFSET_BEGINNING)
    and read until `expected` messages arrived. Returns the list of Messages."""
    from confluent_kafka import OFFSET_BEGINNING
    start = OFFSET_BEGINNING if start is None else start
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, start) for p in partitions])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            msgs = c.consume(num_messages=1000, timeout=0.5)
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
                out.append(m)
        assert len(out) >= expected, f"consumed {len(out)} of {expected} records from {topic}"
        # Any extra record would be a bug (duplicates): give it a moment to show up.
        for m in c.consume(num_messages=1000, timeout=0.3):
            if not m.error():
                out.append(m)
        return out
    finally:
        c.close()


RETRIABLE = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
             KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
             KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


def watermarks(c, tp: TopicPartition, timeout: float = 15.0):
    """get_watermark_offsets, retrying the retriable errors a broker may
    legitimately return for a while after it (re)started."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.get_watermark_offsets(tp, timeout=10)
        except KafkaException as e:
            if e.args[0].code() not in RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def is_error(err, code) -> bool:
    return isinstance(err, KafkaError) and err.code() == code


class KafkaPythonMember(threading.Thread):
    """A kafka-python group consumer polling in its own thread, committing after each processed batch."""

    def __init__(self, bootstrap, group, topic, poll_ms=500, heartbeat_ms=1000):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer
        self.c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                               enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=heartbeat_ms)
        self.poll_ms = poll_ms
        self.values: list[str] = []
        self.partitions: set[int] = set()
        self.stop_flag = threading.Event()
        self.start()

    def run(self):
        while not self.stop_flag.is_set():
            batch = self.c.poll(timeout_ms=self.poll_ms)
            for records in batch.values():
                self.values.extend(r.value.decode() for r in records)
            if batch:
                self.c.commit()
            self.partitions = {tp.partition for tp in self.c.assignment()}

    def close(self):
        self.stop_flag.set()
        self.join(10)
        self.c.close()
