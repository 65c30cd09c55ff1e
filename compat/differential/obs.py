"""Turning responses into observations (plain data) that can be compared.

Normalizations applied everywhere, so that random or per-process values do
not show up as differences (they are not behaviour):
  * topic ids: "<uuid>" when set and non-zero, "<zero>" for the all-zero id, None when absent
  * cluster id: "<set>" when a non-empty string
  * a broker's own port: "<own port>"
  * throttle_time_ms and free-text error_message fields are dropped (error
    messages are kept as notes in the report, not compared)
"""

from __future__ import annotations

from wire import err

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def uid(v):
    if v is None:
        return None
    s = str(v)
    if s in (ZERO_UUID, "AAAAAAAAAAAAAAAAAAAAAA"):
        return "<zero>"
    return "<uuid>"


def both(targets, fn):
    """Run fn(target) on each broker; returns (kafka_obs, strom_obs)."""
    k, s = targets
    return fn(k), fn(s)


def metadata_topic(t: dict) -> dict:
    return {
        "name": t["name"],
        "error_code": err(t["error_code"]),
        "topic_id": uid(t.get("topic_id")),
        "is_internal": t.get("is_internal"),
        "partitions": [
            {k: (err(p.get(k)) if k == "error_code" else p.get(k))
             for k in ("partition_index", "error_code", "leader_id", "leader_epoch",
                       "replica_nodes", "isr_nodes", "offline_replicas")}
            for p in sorted(t["partitions"], key=lambda p: p["partition_index"])
        ],
    }


def metadata_obs(resp, target) -> dict:
    d = resp.to_dict()
    return {
        "brokers": [{"node_id": b["node_id"], "host": b["host"],
                     "port": "<own port>" if b["port"] == target.port else b["port"],
                     "rack": b.get("rack")} for b in d["brokers"]],
        "cluster_id": "<set>" if d.get("cluster_id") else d.get("cluster_id"),
        "controller_id": d.get("controller_id"),
        "topics": [metadata_topic(t) for t in d["topics"]],
    }


def strip(d, drop=("throttle_time_ms", "error_message")):
    """Recursively drop keys (free text, throttling)."""
    if isinstance(d, dict):
        return {k: strip(v, drop) for k, v in d.items() if k not in drop}
    if isinstance(d, list):
        return [strip(v, drop) for v in d]
    return d


def messages(d, path="") -> list[str]:
    """Collect error_message fields as 'path: text' notes."""
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "error_message" and v:
                out.append(f"{path or '.'}: {v}")
            else:
                out += messages(v, f"{path}.{k}" if path else k)
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += messages(v, f"{path}[{i}]")
    return out


def error_notes(k_resp_dict, s_resp_dict) -> list[str]:
    notes = [f"kafka {m}" for m in messages(k_resp_dict)]
    notes += [f"strom {m}" for m in messages(s_resp_dict)]
    return notes
