"""A confluent-kafka group member in a process of its own, so that a test can kill it with SIGKILL (no LeaveGroup,
no last commit): the broker only learns of its death when its session times out.

    python group_member.py '<json consumer config>' <topic>

Config keys starting with "_" are for this script: "_commit" (commit each record after processing it),
"_delay" (seconds spent processing each record). Every event is printed as one JSON line:
{"event": "assigned"|"revoked", "partitions": [...]}, {"event": "record", "partition", "offset", "value"},
{"event": "committed", "partition", "offset"}.
"""

import json
import sys
import time

from confluent_kafka import Consumer


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    conf = json.loads(sys.argv[1])
    topic = sys.argv[2]
    commit = conf.pop("_commit", False)
    delay = conf.pop("_delay", 0.0)
    c = Consumer(conf)
    c.subscribe([topic],
                on_assign=lambda _, ps: emit(event="assigned", partitions=sorted(p.partition for p in ps)),
                on_revoke=lambda _, ps: emit(event="revoked", partitions=sorted(p.partition for p in ps)))
    while True:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        emit(event="record", partition=m.partition(), offset=m.offset(), value=m.value().decode())
        if delay:
            time.sleep(delay)
        if commit:
            c.commit(message=m, asynchronous=False)
            emit(event="committed", partition=m.partition(), offset=m.offset() + 1)


if __name__ == "__main__":
    main()
