"""The Java reference client (reference/java-client, Apache Kafka's
kafka-clients): a produce/consume round trip with the Java producer's defaults
(acks=all, idempotence on, murmur2 partitioner) and an assign()-only consumer;
and the Java group consumer (GroupConsumer: subscribe, poll, commitSync, close;
a second run resumes from the commits) with group.protocol=classic and
group.protocol=consumer, compared between Kafka and Strom.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import unique
from obs import both


@pytest.fixture(scope="session")
def java_group_consumer(java_client):
    return [*java_client[:-1], "dev.strom.reference.GroupConsumer"]


def roundtrip(java_client, target, *extra, records=200, partitions=3):
    cmd = [*java_client, "--bootstrap", target.bootstrap, "--topic", unique("java"),
           "--records", str(records), "--partitions", str(partitions), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={**os.environ, "JAVA_TOOL_OPTIONS": ""})
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{target.name}: java round trip exited {r.returncode}:\n{out[-4000:]}"
    assert "OK topic=" in r.stdout
    return r.stdout


def test_java_defaults_against_kafka(java_client, kafka):
    roundtrip(java_client, kafka)


def test_java_no_idempotence_against_kafka(java_client, kafka):
    roundtrip(java_client, kafka, "--producer-prop", "enable.idempotence=false")


def test_java_no_idempotence_against_strom(java_client, strom):
    roundtrip(java_client, strom, "--producer-prop", "enable.idempotence=false")


def test_java_no_idempotence_acks1_lz4_against_strom(java_client, strom):
    roundtrip(java_client, strom, "--producer-prop", "enable.idempotence=false",
              "--producer-prop", "acks=1", "--producer-prop", "compression.type=lz4",
              "--producer-prop", "linger.ms=20", records=2000, partitions=8)


def test_java_defaults_against_strom(java_client, strom):
    roundtrip(java_client, strom)


def group_run(cmd, target, topic, group, protocol, records) -> dict:
    """One GroupConsumer run; what it observed."""
    r = subprocess.run([*cmd, "--bootstrap", target.bootstrap, "--topic", topic, "--group", group,
                        "--records", str(records), "--protocol", protocol, "--timeout-ms", "45000"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "JAVA_TOOL_OPTIONS": ""})
    assert r.returncode == 0, f"{target.name}: GroupConsumer exited {r.returncode}:\n{(r.stdout + r.stderr)[-4000:]}"
    out = {"assigned": [], "consumed": [], "extra": None, "committed": {}}
    for line in r.stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "ASSIGNED":
            out["assigned"].append(rest)
        elif word == "CONSUMED":
            p, o, v = rest.split(" ", 2)
            out["consumed"].append((int(p), int(o), v))
        elif word == "EXTRA":
            out["extra"] = int(rest)
        elif word == "COMMITTED":
            p, o = rest.split()
            out["committed"][int(p)] = int(o)
    out["consumed"].sort()
    # The consumer protocol may hand out a single member's partitions over more than one heartbeat; what is
    # compared is the final assignment and that every callback was non-empty.
    out["final_assignment"] = out["assigned"][-1] if out["assigned"] else None
    out["empty_assignments"] = sum(1 for a in out["assigned"] if a == "[]")
    out["assign_callbacks"] = len(out["assigned"])
    del out["assigned"]
    return out


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_java_group_consumer_resumes_from_commits(java_group_consumer, targets, differ, protocol):
    from test_groups import make_topic, produce  # raw-request helpers shared with the group scenarios

    topic, group = unique("jg"), unique("jgroup")

    def run(t):
        make_topic(t, topic, 3)
        produce(t, topic, 30, 3)
        first = group_run(java_group_consumer, t, topic, group, protocol, 30)
        produce(t, topic, 15, 3)  # values v0..v14 again, at offsets 10..14 of each partition
        second = group_run(java_group_consumer, t, topic, group, protocol, 15)
        return {"first": first, "second": second}

    differ.check(f"java-group-consumer-{protocol}", *both(targets, run))
