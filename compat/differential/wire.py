"""Raw Kafka requests for the differential suite.

Encoding and decoding come from kafka-python's protocol classes, which are
generated from Apache Kafka's own message JSON specs (any version of any API),
so a scenario can send exactly the same request, at the same version, to both
brokers and compare the decoded responses field by field.
"""

from __future__ import annotations

import socket
import struct
import time

from kafka.protocol.admin import (  # noqa: F401  (re-exported for scenarios)
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest,
)
from kafka.protocol.consumer import FetchRequest, ListOffsetsRequest  # noqa: F401
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest  # noqa: F401
from kafka.protocol.producer import ProduceRequest  # noqa: F401

import kafkawire  # compat/kafkawire.py: record batch builder, CRC-32C

API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit", 9: "OffsetFetch",
    10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup",
    15: "DescribeGroups", 16: "ListGroups", 17: "SaslHandshake", 18: "ApiVersions",
    19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId",
    23: "OffsetForLeaderEpoch", 24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn",
    27: "WriteTxnMarkers", 28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls",
    31: "DeleteAcls", 32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions", 38: "CreateDelegationToken",
    39: "RenewDelegationToken", 40: "ExpireDelegationToken", 41: "DescribeDelegationToken",
    42: "DeleteGroups", 43: "ElectLeaders", 44: "IncrementalAlterConfigs",
    45: "AlterPartitionReassignments", 46: "ListPartitionReassignments", 47: "OffsetDelete",
    48: "DescribeClientQuotas", 49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 55: "DescribeQuorum", 57: "UpdateFeatures",
    60: "DescribeCluster", 61: "DescribeProducers", 64: "UnregisterBroker",
    65: "DescribeTransactions", 66: "ListTransactions", 68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
    74: "ListConfigResources", 75: "DescribeTopicPartitions", 76: "ShareGroupHeartbeat",
    77: "ShareGroupDescribe", 78: "ShareFetch", 79: "ShareAcknowledge", 80: "AddRaftVoter",
    81: "RemoveRaftVoter", 83: "InitializeShareGroupState", 84: "ReadShareGroupState",
    85: "WriteShareGroupState", 86: "DeleteShareGroupState", 87: "ReadShareGroupStateSummary",
    88: "StreamsGroupHeartbeat", 89: "StreamsGroupDescribe", 90: "DescribeShareGroupOffsets",
    91: "AlterShareGroupOffsets", 92: "DeleteShareGroupOffsets",
}

# Error codes the scenarios mention by name (clients/src/main/java/.../protocol/Errors.java).
ERRORS = {
    -1: "UNKNOWN_SERVER_ERROR", 0: "NONE", 1: "OFFSET_OUT_OF_RANGE", 2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION", 4: "INVALID_FETCH_SIZE", 5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 10: "MESSAGE_TOO_LARGE",
    17: "INVALID_TOPIC_EXCEPTION", 18: "RECORD_LIST_TOO_LARGE", 19: "NOT_ENOUGH_REPLICAS",
    21: "INVALID_REQUIRED_ACKS", 32: "INVALID_TIMESTAMP", 35: "UNSUPPORTED_VERSION",
    36: "TOPIC_ALREADY_EXISTS", 37: "INVALID_PARTITIONS", 38: "INVALID_REPLICATION_FACTOR",
    39: "INVALID_REPLICA_ASSIGNMENT", 40: "INVALID_CONFIG", 41: "NOT_CONTROLLER",
    42: "INVALID_REQUEST", 43: "UNSUPPORTED_FOR_MESSAGE_FORMAT", 44: "POLICY_VIOLATION",
    45: "OUT_OF_ORDER_SEQUENCE_NUMBER", 47: "INVALID_PRODUCER_EPOCH", 56: "KAFKA_STORAGE_ERROR",
    74: "FENCED_LEADER_EPOCH", 75: "UNKNOWN_LEADER_EPOCH", 78: "MEMBER_ID_REQUIRED",
    87: "INVALID_RECORD", 100: "UNKNOWN_TOPIC_ID", 106: "INCONSISTENT_TOPIC_ID",
}


def err(code) -> str:
    """An error code as 'NAME(code)' so diffs read well."""
    if code is None:
        return None
    name = ERRORS.get(code)
    if name is None:
        # Codes the table above does not list: kafka-python's error classes carry Kafka's names.
        import kafka.errors
        cls = kafka.errors.for_code(code)
        name = cls.message if cls is not kafka.errors.UnknownError else "?"
    return f"{name}({code})"


class Conn:
    """One TCP connection speaking raw Kafka requests."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, req, version: int):
        """Send `req` at `version`; return the decoded response (DataContainer)."""
        self.corr += 1
        req.with_header(correlation_id=self.corr, client_id="strom-differential")
        data = req.encode(version=version, header=True, framed=True)
        self.sock.sendall(data)
        if not req.expect_response():
            return None
        frame = kafkawire.read_frame(self.sock)
        resp_cls = req.header.get_response_class()
        resp = resp_cls.decode(frame, version=version, header=True)
        assert resp.header.correlation_id == self.corr, (resp.header.correlation_id, self.corr)
        return resp

    def send_raw(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        return kafkawire.read_frame(self.sock)


def request(target, req, version: int):
    with Conn(target.port) as c:
        return c.send(req, version)


def to_dict(msg):
    return None if msg is None else msg.to_dict()


# ----------------------------------------------------------------- helpers
def api_versions(target, version: int = 3) -> dict:
    """{api_key: (min, max)} advertised by the broker."""
    r = request(target, ApiVersionsRequest(client_software_name="strom-differential",
                                           client_software_version="1"), version)
    assert r.error_code == 0, r
    return {k.api_key: (k.min_version, k.max_version) for k in r.api_keys}


def metadata(target, topics, version: int = 12, allow_auto_create: bool = False):
    T = MetadataRequest.MetadataRequestTopic
    req = MetadataRequest(
        topics=None if topics is None else [T(topic_id=None, name=t) for t in topics],
        allow_auto_topic_creation=allow_auto_create,
        include_topic_authorized_operations=False)
    return request(target, req, version)


def create_topics(target, topics, version: int = 7, timeout_ms: int = 30000, validate_only=False):
    """topics: list of dicts(name, num_partitions=1, replication_factor=-1, configs={})."""
    R = CreateTopicsRequest
    ts = []
    for t in topics:
        ts.append(R.CreatableTopic(
            name=t["name"], num_partitions=t.get("num_partitions", 1),
            replication_factor=t.get("replication_factor", -1),
            assignments=[],
            configs=[R.CreatableTopic.CreatableTopicConfig(name=k, value=v)
                     for k, v in (t.get("configs") or {}).items()]))
    return request(target, R(topics=ts, timeout_ms=timeout_ms, validate_only=validate_only), version)


def produce(target, topic: str, partition_batches: dict, version: int = 9, acks: int = -1,
            timeout_ms: int = 10000, transactional_id: str | None = None):
    """partition_batches: {partition: record batch bytes}."""
    R = ProduceRequest
    req = R(transactional_id=transactional_id, acks=acks, timeout_ms=timeout_ms, topic_data=[
        R.TopicProduceData(name=topic, topic_id=None, partition_data=[
            R.TopicProduceData.PartitionProduceData(index=p, records=b)
            for p, b in partition_batches.items()])])
    return request(target, req, version)


def fetch(target, topic: str, partitions: dict, version: int = 12, max_wait_ms: int = 0,
          topic_id=None, max_bytes: int = 1 << 20, isolation_level: int = 0):
    """partitions: {partition: fetch_offset}. version <= 12 addresses the topic
    by name, >= 13 by topic_id. isolation_level 1 is READ_COMMITTED."""
    R = FetchRequest
    req = R(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes,
            isolation_level=isolation_level, session_id=0, session_epoch=-1,
            topics=[R.FetchTopic(topic=topic, topic_id=topic_id, partitions=[
                R.FetchTopic.FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=o,
                                            last_fetched_epoch=-1, log_start_offset=-1,
                                            partition_max_bytes=max_bytes)
                for p, o in partitions.items()])],
            forgotten_topics_data=[], rack_id="")
    return request(target, req, version)


def list_offsets(target, topic: str, partitions: dict, version: int = 8, isolation_level: int = 0):
    """partitions: {partition: timestamp spec}."""
    R = ListOffsetsRequest
    req = R(replica_id=-1, isolation_level=isolation_level, topics=[
        R.ListOffsetsTopic(name=topic, partitions=[
            R.ListOffsetsTopic.ListOffsetsPartition(partition_index=p, current_leader_epoch=-1,
                                                    timestamp=ts)
            for p, ts in partitions.items()])],
        timeout_ms=10000)
    return request(target, req, version)


def describe_configs(target, resource_type: int, name: str, version: int = 4,
                     include_synonyms=False, include_documentation=False, keys=None):
    R = DescribeConfigsRequest
    req = R(resources=[R.DescribeConfigsResource(resource_type=resource_type, resource_name=name,
                                                 configuration_keys=keys)],
            include_synonyms=include_synonyms, include_documentation=include_documentation)
    return request(target, req, version)


def create_partitions(target, topic, count: int, version: int = 3, validate_only=False):
    """`topic` a name, or a list of (name, count) to grow several in one request."""
    R = CreatePartitionsRequest
    wanted = [(topic, count)] if isinstance(topic, str) else topic
    req = R(topics=[R.CreatePartitionsTopic(name=n, count=c, assignments=None) for n, c in wanted],
            timeout_ms=30000, validate_only=validate_only)
    return request(target, req, version)


def delete_topics(target, names, version: int = 6):
    R = DeleteTopicsRequest
    req = R(topics=[R.DeleteTopicState(name=n, topic_id=None) for n in names],
            topic_names=list(names), timeout_ms=30000)
    return request(target, req, version)


def batch(records, base_timestamp: int | None = None) -> bytes:
    """An uncompressed v2 record batch: records = [(key, value, headers)]."""
    return kafkawire.record_batch(records, base_timestamp)


def wait_topic(target, name: str, partitions: int, timeout: float = 30.0):
    """Wait until the topic is usable: Metadata shows every partition with a
    leader and ListOffsets answers for each (Kafka opens partitions
    asynchronously)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = metadata(target, [name])
        t = md.topics[0]
        if t.error_code == 0 and len(t.partitions) == partitions and all(
                p.error_code == 0 and p.leader_id >= 0 for p in t.partitions):
            # Kafka's metadata cache can show a leader before the partition is
            # open on the broker (Produce then answers NOT_LEADER_OR_FOLLOWER):
            # wait until ListOffsets answers for every partition too.
            lo = list_offsets(target, name, {p.partition_index: -1 for p in t.partitions})
            if all(p.error_code == 0 for tp in lo.topics for p in tp.partitions):
                return t
        last = t
        time.sleep(0.05)
    raise AssertionError(f"{target.name}: topic {name} not ready: {last!r}")


def batch_size(records, base_timestamp: int = 0) -> int:
    """Size in bytes of the batch (without the 12-byte offset+length prefix? no:
    the whole batch as Kafka's sizeInBytes counts it)."""
    return len(batch(records, base_timestamp))


__all__ = [n for n in dir() if not n.startswith("_")]
struct  # keep import (used by scenarios through wire.struct)
