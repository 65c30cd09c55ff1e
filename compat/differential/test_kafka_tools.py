"""Apache Kafka's own command-line tools against Strom, as a user runs them
(and against Kafka as a sanity check), started through their Java main
classes from the jars scripts/reference-kafka fetched:

  kafka-topics            org.apache.kafka.tools.TopicCommand (create, list, describe)
  kafka-console-producer  org.apache.kafka.tools.ConsoleProducer
  kafka-console-consumer  org.apache.kafka.tools.consumer.ConsoleConsumer (--partition, no group)
  kafka-configs           kafka.admin.ConfigCommand (--describe)
  kafka-get-offsets       org.apache.kafka.tools.GetOffsetShell

Each tool must exit 0 on both brokers; its standard output (topic ids
normalized) is compared between the two.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REFERENCE, REPO, unique

LOG4J = REPO / "reference" / "log4j2.properties"


@pytest.fixture(scope="session")
def kafka_classpath():
    r = subprocess.run([sys.executable, str(REFERENCE), "classpath"], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Tool:
    def __init__(self, cp):
        self.cp = cp

    def run(self, main, *args, stdin=None, timeout=90):
        cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
               f"-Dlog4j2.configurationFile={LOG4J}", "-cp", self.cp, main, *map(str, args)]
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        return r


@pytest.fixture(scope="session")
def tool(kafka_classpath):
    return Tool(kafka_classpath)


def norm(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"TopicId: \S+", "TopicId: <uuid>", line)
        if line.strip():
            out.append(line.rstrip())
    return out


def ok(r, target, what):
    assert r.returncode == 0, (f"{what} against {target.name} exited {r.returncode}\n"
                               f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


TOPICS = "org.apache.kafka.tools.TopicCommand"
PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONFIGS = "kafka.admin.ConfigCommand"
OFFSETS = "org.apache.kafka.tools.GetOffsetShell"

LINES = "k1:v1\nk2:v2\nk3:v3\nk4:v4\nk5:v5\nk6:v6\n"


def setup_topic(tool, t, name, partitions=3, *extra):
    import wire
    r = ok(tool.run(TOPICS, "--bootstrap-server", t.bootstrap, "--create", "--topic", name,
                    "--partitions", partitions, "--replication-factor", 1, *extra), t, "kafka-topics --create")
    wire.wait_topic(t, name, partitions)
    return r


def produce_lines(tool, t, name, lines=LINES, *extra):
    return ok(tool.run(PRODUCER, "--bootstrap-server", t.bootstrap, "--topic", name,
                       "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
                       "--command-property", "enable.idempotence=false", *extra, stdin=lines),
              t, "kafka-console-producer")


def test_kafka_topics(tool, targets, differ):
    name = unique("tools")

    def run(t):
        create = setup_topic(tool, t, name, 3, "--config", "retention.ms=3600000")
        listed = ok(tool.run(TOPICS, "--bootstrap-server", t.bootstrap, "--list"), t, "kafka-topics --list")
        desc = ok(tool.run(TOPICS, "--bootstrap-server", t.bootstrap, "--describe", "--topic", name),
                  t, "kafka-topics --describe")
        dup = tool.run(TOPICS, "--bootstrap-server", t.bootstrap, "--create", "--topic", name,
                       "--partitions", 3)
        alter = ok(tool.run(TOPICS, "--bootstrap-server", t.bootstrap, "--alter", "--topic", name,
                            "--partitions", 5), t, "kafka-topics --alter --partitions")
        return {"create": norm(create.stdout), "listed": name in listed.stdout.split(),
                "describe": norm(desc.stdout),
                "create-again-exit": dup.returncode,
                "create-again-error": [ln for ln in norm(dup.stdout + dup.stderr) if "already exists" in ln][:1],
                "alter": norm(alter.stdout)}

    differ.check("tool-kafka-topics", *[run(t) for t in targets])


def test_console_producer_and_consumer(tool, targets, differ):
    name = unique("tools")

    def run(t):
        setup_topic(tool, t, name, 1)
        produce_lines(tool, t, name)
        c = ok(tool.run(CONSUMER, "--bootstrap-server", t.bootstrap, "--topic", name, "--partition", 0,
                        "--offset", "earliest", "--max-messages", 6, "--timeout-ms", 15000,
                        "--formatter-property", "print.key=true", "--formatter-property", "print.offset=true",
                        "--formatter-property", "print.partition=true",
                        "--formatter-property", "print.headers=true"), t, "kafka-console-consumer")
        processed = [ln for ln in c.stderr.splitlines() if "Processed a total" in ln]
        return {"consumed": norm(c.stdout), "summary": processed}

    differ.check("tool-console-producer-consumer", *[run(t) for t in targets])


def test_console_consumer_from_offset(tool, targets, differ):
    name = unique("tools")

    def run(t):
        setup_topic(tool, t, name, 1)
        produce_lines(tool, t, name)
        c = ok(tool.run(CONSUMER, "--bootstrap-server", t.bootstrap, "--topic", name, "--partition", 0,
                        "--offset", 4, "--max-messages", 2, "--timeout-ms", 15000,
                        "--formatter-property", "print.offset=true"), t, "kafka-console-consumer --offset 4")
        return norm(c.stdout)

    differ.check("tool-console-consumer-offset", *[run(t) for t in targets])


def test_console_producer_defaults_against_strom(tool, strom):
    name = unique("tools")
    setup_topic(tool, strom, name, 1)
    ok(tool.run(PRODUCER, "--bootstrap-server", strom.bootstrap, "--topic", name, stdin="a\nb\n"),
       strom, "kafka-console-producer (defaults)")


def test_console_producer_defaults_against_kafka(tool, kafka):
    name = unique("tools")
    setup_topic(tool, kafka, name, 1)
    ok(tool.run(PRODUCER, "--bootstrap-server", kafka.bootstrap, "--topic", name, stdin="a\nb\n"),
       kafka, "kafka-console-producer (defaults)")


def test_kafka_configs_describe(tool, targets, differ):
    name = unique("tools")

    def run(t):
        setup_topic(tool, t, name, 1, "--config", "retention.ms=3600000", "--config", "max.message.bytes=5000")
        topic = ok(tool.run(CONFIGS, "--bootstrap-server", t.bootstrap, "--describe", "--entity-type", "topics",
                            "--entity-name", name), t, "kafka-configs --describe topic")
        everything = ok(tool.run(CONFIGS, "--bootstrap-server", t.bootstrap, "--describe", "--entity-type",
                                 "topics", "--entity-name", name, "--all"), t, "kafka-configs --describe --all")
        # --all: compare the names both list, as the raw DescribeConfigs scenarios do
        return {"dynamic": norm(topic.stdout), "all": {
            ln.split("=", 1)[0].strip(): ln.strip() for ln in everything.stdout.splitlines()[1:] if "=" in ln}}

    k, s = (run(t) for t in targets)
    common = sorted(set(k["all"]) & set(s["all"]))
    notes = [f"--all: {len(common)} names compared, only Kafka lists: "
             f"{', '.join(sorted(set(k['all']) - set(s['all'])))}"]
    k_obs = {"dynamic": k["dynamic"], "all": {n: k["all"][n] for n in common}, "only_strom": []}
    s_obs = {"dynamic": s["dynamic"], "all": {n: s["all"][n] for n in common},
             "only_strom": sorted(set(s["all"]) - set(k["all"]))}
    differ.check("tool-kafka-configs-describe", k_obs, s_obs, notes=notes)


def test_kafka_configs_describe_broker(tool, targets):
    """kafka-configs --describe --entity-type brokers: runs on both (broker
    configs differ by design; not compared)."""
    for t in targets:
        r = ok(tool.run(CONFIGS, "--bootstrap-server", t.bootstrap, "--describe", "--entity-type", "brokers",
                        "--entity-name", 1), t, "kafka-configs --describe brokers")
        assert "configs for broker 1" in r.stdout, r.stdout


def test_kafka_get_offsets(tool, targets, differ):
    """Records with known, non-monotonic timestamps (written raw, so both
    brokers hold the same), then kafka-get-offsets for each spec."""
    import time as _time

    import wire
    from test_offsets import timed_batch

    name = unique("tools")
    now = int(_time.time() * 1000)
    stamps = {0: [now - 5000, now - 1000, now - 3000], 1: [now - 4000, now - 4000, now - 2000, now - 2500]}

    def run(t):
        setup_topic(tool, t, name, 2)
        for p, ts in stamps.items():
            r = wire.produce(t, name, {p: timed_batch([(b"k", b"v", ())] * len(ts), ts)})
            assert r.responses[0].partition_responses[0].error_code == 0
        out = {}
        for spec in ("-1", "-2", "-3", "latest", "earliest", "max-timestamp", str(now - 3500), str(now)):
            r = ok(tool.run(OFFSETS, "--bootstrap-server", t.bootstrap, "--topic", name, "--time", spec),
                   t, f"kafka-get-offsets --time {spec}")
            out[spec if not spec.isdigit() else f"now{int(spec) - now}"] = norm(r.stdout)
        r = ok(tool.run(OFFSETS, "--bootstrap-server", t.bootstrap, "--topic-partitions", f"{name}:0"),
               t, "kafka-get-offsets --topic-partitions")
        out["topic-partitions"] = norm(r.stdout)
        return out

    differ.check("tool-kafka-get-offsets", *[run(t) for t in targets])
