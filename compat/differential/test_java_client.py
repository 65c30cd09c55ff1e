"""The Java reference client (reference/java-client, Apache Kafka's
kafka-clients): a produce/consume round trip with the Java producer's defaults
(acks=all, idempotence on, murmur2 partitioner) and an assign()-only consumer.
"""

from __future__ import annotations

import os
import subprocess

from conftest import unique


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
