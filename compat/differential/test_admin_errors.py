"""Differential scenarios with raw requests: topic administration, Metadata,
and the error codes for bad requests (same request, same version, both brokers).
"""

from __future__ import annotations

import time

import pytest

import wire
from conftest import unique
from obs import both, error_notes, metadata_obs, strip, uid


def created(resp) -> list[dict]:
    """CreateTopics response topics without the per-topic config list (compared elsewhere)."""
    out = []
    for t in resp.to_dict()["topics"]:
        out.append({"name": t["name"], "error_code": wire.err(t["error_code"]),
                    "topic_id": uid(t.get("topic_id")),
                    "num_partitions": t.get("num_partitions"),
                    "replication_factor": t.get("replication_factor")})
    return out


def create_and_compare(targets, differ, scenario, specs, version=7, validate_only=False):
    resps = {}

    def run(t):
        r = wire.create_topics(t, specs, version=version, validate_only=validate_only)
        resps[t.name] = r.to_dict()
        return {"topics": created(r)}

    k, s = both(targets, run)
    return differ.check(scenario, k, s, notes=error_notes(resps["kafka"], resps["strom"]))


# ------------------------------------------------------------- CreateTopics
def test_create_topic_ok(targets, differ, topic):
    create_and_compare(targets, differ, "create-topics-ok", [dict(name=topic, num_partitions=3)])


@pytest.mark.parametrize("partitions", [0, -5], ids=["zero", "minus5"])
def test_create_topic_bad_partition_count(targets, differ, partitions):
    name = unique("parts")
    create_and_compare(targets, differ, f"create-topics-partitions-{partitions}",
                       [dict(name=name, num_partitions=partitions)])

    # and the topic must not exist afterwards
    def after(t):
        return wire.err(wire.metadata(t, [name]).topics[0].error_code)

    differ.check(f"create-topics-partitions-{partitions}-not-created", *both(targets, after))


@pytest.mark.parametrize("rf", [0, 2, -5], ids=["zero", "two", "minus5"])
def test_create_topic_bad_replication_factor(targets, differ, rf):
    create_and_compare(targets, differ, f"create-topics-replication-factor-{rf}",
                       [dict(name=unique("rf"), num_partitions=1, replication_factor=rf)])


def test_create_topic_duplicate(targets, differ, topic):
    def run(t):
        first = wire.create_topics(t, [dict(name=topic, num_partitions=2)])
        second = wire.create_topics(t, [dict(name=topic, num_partitions=2)])
        return {"first": created(first), "second": created(second)}

    differ.check("create-topics-duplicate", *both(targets, run))


def test_create_topic_duplicate_in_one_request(targets, differ, topic):
    create_and_compare(targets, differ, "create-topics-duplicate-in-request",
                       [dict(name=topic), dict(name=topic)])


ILLEGAL_NAMES = {
    "slash": "bad/name",
    "len250": "a" * 250,
    "len249-legal": "b" * 249,
    "dot": ".",
    "dotdot": "..",
    "empty": "",
    "space": "has space",
    "unicode": "caf\u00e9",
}


@pytest.mark.parametrize("case", list(ILLEGAL_NAMES), ids=list(ILLEGAL_NAMES))
def test_create_topic_illegal_name(targets, differ, case):
    name = ILLEGAL_NAMES[case]
    if case == "len249-legal":
        name = unique("c")[:12] + "b" * 237  # fresh and 249 long
    create_and_compare(targets, differ, f"create-topics-name-{case}", [dict(name=name)])


def test_create_topic_name_collision(targets, differ):
    base = unique("coll")

    def run(t):
        a = wire.create_topics(t, [dict(name=f"{base}.x")])
        b = wire.create_topics(t, [dict(name=f"{base}_x")])
        return {"dot": created(a), "underscore": created(b)}

    differ.check("create-topics-name-collision", *both(targets, run))


@pytest.mark.parametrize("configs", [
    {"cleanup.policy": "bogus"},
    {"no.such.config": "1"},
    {"max.message.bytes": "-1"},
    {"retention.ms": "not-a-number"},
    {"min.insync.replicas": "2"},
], ids=["cleanup-policy-bogus", "unknown-name", "max-message-bytes-negative", "retention-nan",
        "min-isr-2"])
def test_create_topic_bad_config(targets, differ, configs):
    key = next(iter(configs))
    create_and_compare(targets, differ, f"create-topics-config-{key}={configs[key]}",
                       [dict(name=unique("cfg"), configs=configs)])


def test_create_topic_validate_only(targets, differ, topic):
    def run(t):
        r = wire.create_topics(t, [dict(name=topic, num_partitions=4)], validate_only=True)
        time.sleep(0.2)
        md = wire.metadata(t, [topic])
        return {"create": created(r), "metadata_after": wire.err(md.topics[0].error_code)}

    differ.check("create-topics-validate-only", *both(targets, run))


def test_create_topics_old_version(targets, differ, topic):
    """CreateTopics v2 (the oldest Kafka 4 accepts), non-flexible."""
    create_and_compare(targets, differ, "create-topics-v2", [dict(name=topic, num_partitions=2)],
                       version=2)


# ----------------------------------------------------------------- Metadata
def test_metadata_existing_topic(targets, differ, topic):
    def run(t):
        wire.create_topics(t, [dict(name=topic, num_partitions=3)])
        wire.wait_topic(t, topic, 3)
        return metadata_obs(wire.metadata(t, [topic]), t)

    differ.check("metadata-topic", *both(targets, run))


@pytest.mark.parametrize("version", [0, 1, 4, 9, 12, 13])
def test_metadata_versions(targets, differ, version):
    name = unique("mdv")

    def run(t):
        wire.create_topics(t, [dict(name=name, num_partitions=2)])
        wire.wait_topic(t, name, 2)
        return metadata_obs(wire.metadata(t, [name], version=version), t)

    differ.check(f"metadata-v{version}", *both(targets, run))


def test_metadata_unknown_topic_no_autocreate(targets, differ, topic):
    """allow_auto_topic_creation=false: the topic must not be created."""
    def run(t):
        first = metadata_obs(wire.metadata(t, [topic], allow_auto_create=False), t)["topics"]
        time.sleep(0.3)
        second = metadata_obs(wire.metadata(t, [topic], allow_auto_create=False), t)["topics"]
        return {"first": first, "second": second}

    differ.check("metadata-unknown-topic-no-autocreate", *both(targets, run))


def test_metadata_auto_create(targets, differ, topic):
    """allow_auto_topic_creation=true on a broker with auto-create on: compare
    the first answer and the settled state."""
    def run(t):
        first = metadata_obs(wire.metadata(t, [topic], allow_auto_create=True), t)["topics"]
        settled = wire.wait_topic(t, topic, 1)
        return {"first_response": first,
                "settled": metadata_obs(wire.metadata(t, [topic]), t)["topics"],
                "settled_partitions": len(settled.partitions)}

    differ.check("metadata-auto-create", *both(targets, run))


@pytest.mark.parametrize("name", ["bad/name", ".", "x" * 250], ids=["slash", "dot", "len250"])
def test_metadata_auto_create_illegal_name(targets, differ, name):
    def run(t):
        return metadata_obs(wire.metadata(t, [name], allow_auto_create=True), t)["topics"]

    differ.check(f"metadata-auto-create-illegal-{name[:8]}", *both(targets, run))


def test_metadata_no_topics(targets, differ):
    def run(t):
        return metadata_obs(wire.metadata(t, [], version=12), t)

    differ.check("metadata-empty-topic-list", *both(targets, run))


def test_describe_cluster(targets, differ):
    def run(t):
        r = wire.request(t, wire.DescribeClusterRequest(include_cluster_authorized_operations=False,
                                                        endpoint_type=1,
                                                        include_fenced_brokers=False), 1)
        d = strip(r.to_dict())
        d["cluster_id"] = "<set>" if d.get("cluster_id") else d.get("cluster_id")
        for b in d.get("brokers", []):
            if b.get("port") == t.port:
                b["port"] = "<own port>"
        return d

    differ.check("describe-cluster-v1", *both(targets, run))


# ------------------------------------------------------- CreatePartitions
@pytest.mark.parametrize("new_count,case", [(2, "decrease"), (3, "same"), (5, "increase")])
def test_create_partitions(targets, differ, new_count, case):
    name = unique("cp")
    resps = {}

    def run(t):
        wire.create_topics(t, [dict(name=name, num_partitions=3)])
        wire.wait_topic(t, name, 3)
        r = wire.create_partitions(t, name, new_count)
        resps[t.name] = r.to_dict()
        time.sleep(0.3 if case == "increase" else 0)
        if case == "increase":
            wire.wait_topic(t, name, new_count)
        md = wire.metadata(t, [name])
        return {"results": [{"name": x.name, "error_code": wire.err(x.error_code)} for x in r.results],
                "partitions_after": len(md.topics[0].partitions)}

    k, s = both(targets, run)
    differ.check(f"create-partitions-{case}", k, s, notes=error_notes(resps["kafka"], resps["strom"]))


def test_create_partitions_unknown_topic(targets, differ, topic):
    def run(t):
        r = wire.create_partitions(t, topic, 4)
        return [{"name": x.name, "error_code": wire.err(x.error_code)} for x in r.results]

    differ.check("create-partitions-unknown-topic", *both(targets, run))


def test_create_partitions_validate_only(targets, differ, topic):
    def run(t):
        wire.create_topics(t, [dict(name=topic, num_partitions=1)])
        wire.wait_topic(t, topic, 1)
        r = wire.create_partitions(t, topic, 4, validate_only=True)
        time.sleep(0.3)
        md = wire.metadata(t, [topic])
        return {"results": [wire.err(x.error_code) for x in r.results],
                "partitions_after": len(md.topics[0].partitions)}

    differ.check("create-partitions-validate-only", *both(targets, run))


# ------------------------------------------------------------ DeleteTopics
def test_delete_topics(targets, differ, topic):
    def run(t):
        wire.create_topics(t, [dict(name=topic, num_partitions=2)])
        wire.wait_topic(t, topic, 2)
        r = wire.delete_topics(t, [topic, topic + "-missing"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            md = wire.metadata(t, [topic])
            if md.topics[0].error_code != 0:
                break
            time.sleep(0.1)
        return {"responses": sorted(
                    [{"name": x.name, "error_code": wire.err(x.error_code), "topic_id": uid(x.topic_id)}
                     for x in r.responses], key=lambda d: d["name"]),
                "metadata_after": wire.err(md.topics[0].error_code)}

    differ.check("delete-topics", *both(targets, run))
