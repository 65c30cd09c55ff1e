"""Differential scenarios: DescribeConfigs (topic defaults and overrides,
synonyms, selected keys, unknown topics, the broker resource), the config list
CreateTopics v5+ returns, and ApiVersions ranges.

Config names: only the names both brokers list are compared field by field
(value, read_only, config_source, is_sensitive, config_type); names Strom lists
and Kafka does not are a compared difference; names Kafka lists and Strom does
not are reported as notes (Strom implements a subset).
"""

from __future__ import annotations

import pytest

import wire
from conftest import unique
from obs import both

TOPIC = 2
BROKER = 4
# DescribeConfigsResponse ConfigSource ids (clients/.../DescribeConfigsResponse.java).
SOURCES = {0: "UNKNOWN", 1: "TOPIC_CONFIG", 2: "DYNAMIC_BROKER_CONFIG",
           3: "DYNAMIC_DEFAULT_BROKER_CONFIG", 4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG",
           6: "DYNAMIC_BROKER_LOGGER_CONFIG", 7: "CLIENT_METRICS_CONFIG", 8: "GROUP_CONFIG"}
TYPES = {0: "UNKNOWN", 1: "BOOLEAN", 2: "STRING", 3: "INT", 4: "SHORT", 5: "LONG", 6: "DOUBLE",
         7: "LIST", 8: "CLASS", 9: "PASSWORD"}

# Broker settings that depend on how each broker was started (ports, paths,
# roles), not on behaviour: left out of the broker-resource comparison.
BROKER_ENVIRONMENT = {"listeners", "advertised.listeners", "log.dirs", "log.dir", "node.id",
                      "broker.id", "process.roles", "controller.quorum.voters",
                      "controller.listener.names", "listener.security.protocol.map",
                      "inter.broker.listener.name", "metadata.log.dir"}


def make_topic(t, name, configs=None, partitions=1):
    r = wire.create_topics(t, [dict(name=name, num_partitions=partitions, configs=configs or {})])
    assert r.topics[0].error_code == 0, r
    wire.wait_topic(t, name, partitions)
    return r


def config_entries(resp) -> tuple[dict, str]:
    res = resp.results[0]
    out = {}
    for c in res.configs:
        d = c.to_dict()
        e = {"value": d["value"], "read_only": d["read_only"],
             "config_source": SOURCES.get(d.get("config_source"), d.get("config_source")),
             "is_sensitive": d["is_sensitive"]}
        if "config_type" in d:
            e["config_type"] = TYPES.get(d["config_type"], d["config_type"])
        if d.get("synonyms"):
            e["synonyms"] = [[s["name"], s["value"], SOURCES.get(s["source"], s["source"])]
                             for s in d["synonyms"]]
        out[d["name"]] = e
    return out, wire.err(res.error_code)


def compare_configs(differ, scenario, k_resp, s_resp, skip=()):
    kc, kerr = config_entries(k_resp)
    sc, serr = config_entries(s_resp)
    common = sorted((set(kc) & set(sc)) - set(skip))
    only_kafka = sorted(set(kc) - set(sc) - set(skip))
    only_strom = sorted(set(sc) - set(kc) - set(skip))
    notes = []
    if only_kafka:
        notes.append(f"{len(only_kafka)} name(s) only Kafka lists: {', '.join(only_kafka)}")
    notes.append(f"{len(common)} name(s) compared")
    k_obs = {"error_code": kerr, "configs": {n: kc[n] for n in common}, "names_only_strom_lists": []}
    s_obs = {"error_code": serr, "configs": {n: sc[n] for n in common},
             "names_only_strom_lists": only_strom}
    return differ.check(scenario, k_obs, s_obs, notes=notes)


TOPIC_CONFIG_CASES = {
    "compression.type=zstd": ("compression.type", "zstd"),
    "compression.type=gzip": ("compression.type", "gzip"),
    "compression.type=producer": ("compression.type", "producer"),
    "compression.type=uncompressed": ("compression.type", "uncompressed"),
    "cleanup.policy=compact": ("cleanup.policy", "compact"),
    "cleanup.policy=compact,delete": ("cleanup.policy", "compact,delete"),
    "compression.zstd.level=3": ("compression.zstd.level", "3"),
    "segment.bytes=1000": ("segment.bytes", "1000"),
    "message.timestamp.type=Bogus": ("message.timestamp.type", "Bogus"),
    "max.message.bytes=0": ("max.message.bytes", "0"),
    "retention.ms=-1": ("retention.ms", "-1"),
    "retention.ms=-2": ("retention.ms", "-2"),
}


@pytest.mark.parametrize("case", list(TOPIC_CONFIG_CASES))
def test_create_topic_config_values(targets, differ, case):
    """Which topic config values each broker accepts at creation."""
    key, value = TOPIC_CONFIG_CASES[case]
    name = unique("cv")

    def run(t):
        r = wire.create_topics(t, [dict(name=name, configs={key: value})])
        return {"error_code": wire.err(r.topics[0].error_code)}

    differ.check(f"create-topics-config-value-{case}", *both(targets, run))


@pytest.mark.parametrize("version", [1, 3, 4])
def test_describe_configs_topic_defaults(targets, differ, version):
    name = unique("cfgd")

    def run(t):
        make_topic(t, name)
        return wire.describe_configs(t, TOPIC, name, version=version)

    compare_configs(differ, f"describe-configs-topic-defaults-v{version}", *both(targets, run))


OVERRIDES = {"retention.ms": "3600000", "retention.bytes": "10000000", "max.message.bytes": "2000",
             "message.timestamp.type": "LogAppendTime", "segment.bytes": "1048576",
             "segment.ms": "600000", "min.insync.replicas": "1", "compression.type": "producer",
             "cleanup.policy": "delete"}


def test_describe_configs_topic_overrides(targets, differ):
    name = unique("cfgo")

    def run(t):
        make_topic(t, name, OVERRIDES)
        return wire.describe_configs(t, TOPIC, name)

    compare_configs(differ, "describe-configs-topic-overrides", *both(targets, run))


def test_describe_configs_synonyms(targets, differ):
    name = unique("cfgs")

    def run(t):
        make_topic(t, name, {"retention.ms": "3600000", "max.message.bytes": "5000"})
        return wire.describe_configs(t, TOPIC, name, include_synonyms=True)

    compare_configs(differ, "describe-configs-topic-synonyms", *both(targets, run))


def test_describe_configs_selected_keys(targets, differ):
    name = unique("cfgk")

    def run(t):
        make_topic(t, name, {"retention.ms": "3600000"})
        r = wire.describe_configs(t, TOPIC, name, keys=["retention.ms", "cleanup.policy", "no.such.key"])
        d, e = config_entries(r)
        return {"error_code": e, "names": sorted(d), "configs": d}

    differ.check("describe-configs-selected-keys", *both(targets, run))


def test_describe_configs_unknown_topic(targets, differ):
    name = unique("cfgu")

    def run(t):
        d, e = config_entries(wire.describe_configs(t, TOPIC, name))
        return {"error_code": e, "configs": d}

    differ.check("describe-configs-unknown-topic", *both(targets, run))


@pytest.mark.parametrize("name", ["bad/name", ""], ids=["slash", "empty"])
def test_describe_configs_invalid_topic_name(targets, differ, name):
    def run(t):
        d, e = config_entries(wire.describe_configs(t, TOPIC, name))
        return {"error_code": e, "configs": d}

    differ.check(f"describe-configs-invalid-topic-{name or 'empty'}", *both(targets, run))


def test_describe_configs_broker(targets, differ):
    def run(t):
        return wire.describe_configs(t, BROKER, "1")

    compare_configs(differ, "describe-configs-broker", *both(targets, run), skip=BROKER_ENVIRONMENT)


def test_describe_configs_other_broker_id(targets, differ):
    def run(t):
        d, e = config_entries(wire.describe_configs(t, BROKER, "7"))
        return {"error_code": e, "configs_listed": len(d)}

    differ.check("describe-configs-broker-wrong-id", *both(targets, run))


def test_create_topics_config_list(targets, differ):
    """CreateTopics v5+ answers with the new topic's configs."""
    name = unique("cfgc")
    resps = {}

    def run(t):
        r = make_topic(t, name, {"retention.ms": "3600000"})
        out = {}
        for c in r.topics[0].configs:
            out[c.name] = {"value": c.value, "read_only": c.read_only,
                           "config_source": SOURCES.get(c.config_source, c.config_source),
                           "is_sensitive": c.is_sensitive}
        resps[t.name] = out
        return out

    both(targets, run)
    k, s = resps["kafka"], resps["strom"]
    common = sorted(set(k) & set(s))
    notes = [f"{len(set(k) - set(s))} name(s) only Kafka lists: {', '.join(sorted(set(k) - set(s)))}"]
    differ.check("create-topics-v7-config-list",
                 {"configs": {n: k[n] for n in common}, "names_only_strom_lists": []},
                 {"configs": {n: s[n] for n in common}, "names_only_strom_lists": sorted(set(s) - set(k))},
                 notes=notes)


# -------------------------------------------------------------- ApiVersions
def test_api_versions_ranges(targets, differ):
    """Every API Strom advertises: Strom's [min, max] must lie within Kafka's.
    A range inside Kafka's shows as equal; one reaching outside shows both."""
    kafka, strom = targets
    kv, sv = wire.api_versions(kafka), wire.api_versions(strom)
    k_obs, s_obs, notes = {}, {}, []
    for key in sorted(sv):
        name = wire.API_NAMES.get(key, str(key))
        smin, smax = sv[key]
        if key not in kv:
            k_obs[name], s_obs[name] = "not served", f"{smin}-{smax}"
            continue
        kmin, kmax = kv[key]
        k_obs[name] = f"within {kmin}-{kmax}"
        s_obs[name] = f"within {kmin}-{kmax}" if kmin <= smin and smax <= kmax else f"{smin}-{smax}"
        if (smin, smax) != (kmin, kmax):
            notes.append(f"{name}: strom {smin}-{smax}, kafka {kmin}-{kmax}")
    missing = [wire.API_NAMES.get(k, str(k)) for k in sorted(kv) if k not in sv]
    notes.append(f"{len(missing)} API(s) Kafka serves and Strom does not: {', '.join(missing)}")
    differ.check("api-versions-ranges", k_obs, s_obs, notes=notes)


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_request_versions(targets, differ, version):
    """Each ApiVersions version answers without error (ranges compared above)."""
    def run(t):
        r = wire.request(t, wire.ApiVersionsRequest(client_software_name="strom-differential",
                                                    client_software_version="1"), version)
        d = r.to_dict()
        return {"error_code": wire.err(d["error_code"]), "lists_itself": any(
            k["api_key"] == 18 for k in d["api_keys"]),
                "has_throttle": "throttle_time_ms" in d}

    differ.check(f"api-versions-v{version}", *both(targets, run))


def test_api_versions_unsupported_version(targets, differ):
    """ApiVersions v99: a v0-shaped answer with UNSUPPORTED_VERSION and the ranges."""
    import struct

    import kafkawire

    def run(t):
        with wire.Conn(t.port) as c:
            frame = c.send_raw(kafkawire.request_frame(18, 99, 7, b"", flexible_header=True))
        corr, err, keys = kafkawire.parse_api_versions_v0(frame)
        return {"correlation_id": corr, "error_code": wire.err(err),
                "apiversions_range": list(keys.get(18, (None, None)))}

    differ.check("api-versions-v99", *both(targets, run))
    struct  # noqa: B018
