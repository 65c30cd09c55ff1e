"""A read-process-write worker for test_transactions.py (confluent-kafka).

Consumes from IN (a consumer group, enable.auto.commit=false,
isolation.level=read_committed), and for every poll produces the transformed
records to OUT and commits the consumed offsets inside one transaction
(send_offsets_to_transaction + commit_transaction). The test kills it with
SIGKILL at random points and starts it again with the same transactional.id
and group.instance.id: the new instance fences the old producer (its open
transaction is aborted) and takes over the old consumer's place in the group
without waiting for its session to expire.

Exits 0 once its position on every partition of IN has reached the end and
that position is committed; prints one line per committed transaction.

  txn_worker.py BOOTSTRAP IN OUT GROUP TRANSACTIONAL_ID [MAX_PER_TXN]
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main(argv):
    bootstrap, in_topic, out_topic, group, txn_id = argv[1:6]
    max_per_txn = int(argv[6]) if len(argv) > 6 else 50
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        # Static membership: a restarted worker replaces the killed one at once (no rebalance wait for the
        # old member's session to expire), which keeps the kill/restart loop short.
        "group.instance.id": f"{txn_id}-member",
        "session.timeout.ms": 6000,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 10000,
        "linger.ms": 5,
    })
    producer.init_transactions(30)
    print("initialized", flush=True)
    consumer.subscribe([in_topic])
    while True:
        msgs = consumer.consume(num_messages=max_per_txn, timeout=0.5)
        msgs = [m for m in msgs if m.error() is None]
        if msgs:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(out_topic, key=m.key(), value=b"out:" + m.value())
            # The consumed position of every partition read in this poll goes into the transaction.
            nxt = {}
            for m in msgs:
                nxt[m.partition()] = m.offset() + 1
            offsets = [TopicPartition(in_topic, p, o) for p, o in sorted(nxt.items())]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            print(f"committed {len(msgs)} offsets={sorted(nxt.items())}", flush=True)
            continue
        assignment = consumer.assignment()
        if not assignment:
            continue
        # Done when the worker owns every partition and each one's committed offset is at its high watermark.
        partitions = len(consumer.list_topics(in_topic, timeout=10).topics[in_topic].partitions)
        if len(assignment) < partitions:
            continue
        if all(tp.offset >= consumer.get_watermark_offsets(tp, timeout=10)[1]
               for tp in consumer.committed(assignment, timeout=10)):
            print("done", flush=True)
            consumer.close()
            return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KafkaException as e:
        print(f"ERROR {e.args[0].name()} {e}", flush=True)
        sys.exit(3)
