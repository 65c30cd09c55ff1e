"""`strom server --config server.properties --override key=value`: Kafka
config names, file first, overrides win (as kafka-server-start.sh
config/server.properties --override k=v)."""

from __future__ import annotations

from conftest import unique
from helpers import admin, producer, produce_sync


def auto_created_partitions(b) -> int:
    topic = unique("cfg")
    produce_sync(producer(b.bootstrap, acks="all"), topic, [{"value": b"v"}])
    md = admin(b.bootstrap).list_topics(topic=topic, timeout=10)
    return len(md.topics[topic].partitions)


def test_config_file(make_broker, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("# comment line\n"
                     "num.partitions=2\n"
                     "auto.create.topics.enable=true\n"
                     "\n"
                     "log.retention.hours=48\n")
    b = make_broker(config_file=props)
    assert auto_created_partitions(b) == 2


def test_override_beats_config_file(make_broker, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text("num.partitions=2\n")
    b = make_broker(config_file=props, num_partitions="5")
    assert auto_created_partitions(b) == 5


# The settings of Apache Kafka 4's stock config/server.properties (KRaft,
# combined mode), less listeners/advertised.listeners/log.dirs/the quorum
# address, which the fixture sets. Kafka-compatible means this file works.
KAFKA_STOCK_PROPERTIES = """\
############################# Server Basics #############################
process.roles=broker,controller
node.id=1
############################# Socket Server Settings #############################
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
############################# Log Basics #############################
num.partitions=1
num.recovery.threads.per.data.dir=1
############################# Internal Topic Settings  #############################
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
############################# Log Retention Policy #############################
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""


def test_kafka_stock_server_properties(make_broker, tmp_path):
    props = tmp_path / "server.properties"
    props.write_text(KAFKA_STOCK_PROPERTIES)
    b = make_broker(config_file=props)
    assert auto_created_partitions(b) == 1


def test_unknown_config_keys_are_ignored(make_broker, tmp_path):
    """Kafka starts with keys it does not use (it logs them as unused): e.g.
    settings meant for plugins, or newer/older Kafka versions."""
    props = tmp_path / "server.properties"
    props.write_text("num.partitions=3\n"
                     "some.plugin.setting=42\n"
                     "log.initial.task.delay.ms=0\n")
    b = make_broker(config_file=props)
    assert auto_created_partitions(b) == 3
