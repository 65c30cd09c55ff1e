//! The table of every config Strom knows, with Kafka's names, types, defaults and documentation.
//! Broker configs and topic configs live in one table so that DescribeConfigs, `strom server --help`,
//! validation and the topic→broker synonym chain all read the same facts.

/// Kafka's config types, numbered as DescribeConfigs v3+ reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Broker,
    Topic,
}

#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub scope: Scope,
    pub config_type: ConfigType,
    /// Default as Kafka prints it; `None` is Kafka's null.
    pub default: Option<&'static str>,
    /// For topic configs: the broker config that supplies the default (Kafka's synonym).
    pub broker_synonym: Option<&'static str>,
    pub doc: &'static str,
    /// Read-only at runtime (needs a restart), as Kafka marks it in DescribeConfigs.
    pub read_only: bool,
}

const fn broker(name: &'static str, t: ConfigType, default: Option<&'static str>, doc: &'static str) -> ConfigDef {
    ConfigDef { name, scope: Scope::Broker, config_type: t, default, broker_synonym: None, doc, read_only: true }
}

const fn topic(
    name: &'static str,
    t: ConfigType,
    default: Option<&'static str>,
    synonym: &'static str,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        scope: Scope::Topic,
        config_type: t,
        default,
        broker_synonym: Some(synonym),
        doc,
        read_only: false,
    }
}

use ConfigType::*;

pub const LONG_MAX: &str = "9223372036854775807";

pub static CONFIG_DEFS: &[ConfigDef] = &[
    // ---- broker: identity and network
    broker("node.id", Int, Some("1"), "The node id of this broker."),
    broker("broker.rack", String, None, "Rack of the broker, reported in metadata."),
    broker(
        "listeners",
        List,
        Some("PLAINTEXT://127.0.0.1:9092"),
        "Comma-separated listeners, NAME://host:port. Each name maps to a protocol (listener.security.protocol.map).",
    ),
    broker(
        "advertised.listeners",
        List,
        None,
        "Listeners to publish to clients in Metadata, if different from `listeners`.",
    ),
    broker(
        "listener.security.protocol.map",
        List,
        Some("PLAINTEXT:PLAINTEXT"),
        "Map of listener names to security protocols. Only PLAINTEXT is served so far.",
    ),
    broker("socket.request.max.bytes", Int, Some("104857600"), "The maximum size of a request; bigger frames close the connection."),
    broker(
        "max.connections",
        Int,
        Some("2147483647"),
        "The most connections the broker holds at once; at the limit listeners stop accepting (new connections wait in the listen backlog) until one closes.",
    ),
    broker(
        "max.connections.per.ip",
        Int,
        Some("2147483647"),
        "The most connections from one IP address; a connection over it is closed at once. 0 is allowed with overrides.",
    ),
    broker(
        "max.connections.per.ip.overrides",
        String,
        Some(""),
        "Per-IP or hostname overrides of max.connections.per.ip, e.g. `hostName:100,127.0.0.1:200`.",
    ),
    broker(
        "connections.max.idle.ms",
        Long,
        Some("600000"),
        "A connection with no request in flight that reads nothing for this long is closed, as is one whose request frame does not complete within it. Negative: never.",
    ),
    broker(
        "queued.max.requests",
        Int,
        Some("500"),
        "Requests read but not yet processed, across the broker; at the limit connections stop reading until one is done.",
    ),
    broker(
        "queued.max.request.bytes",
        Long,
        Some("-1"),
        "Bytes of requests read but not yet processed, across the broker; connections wait for room before reading a request. -1: unbounded.",
    ),
    broker(
        "fetch.max.bytes",
        Int,
        Some("57671680"),
        "The most record bytes one fetch response carries (the lower of this and the request's max_bytes); also the bytes of responses a connection may have waiting to be written.",
    ),
    broker("log.dirs", String, Some("./strom-data"), "The directory where the log data and metadata are kept."),
    broker("num.partitions", Int, Some("1"), "Default number of partitions for auto-created and default-sized topics."),
    broker("default.replication.factor", Int, Some("1"), "Default replication factor for auto-created topics."),
    broker("auto.create.topics.enable", Boolean, Some("true"), "Create a topic when a client asks for its metadata."),
    broker("delete.topic.enable", Boolean, Some("true"), "Allow topics to be deleted through DeleteTopics."),
    broker("message.max.bytes", Int, Some("1048588"), "Largest record batch size allowed (broker default of max.message.bytes)."),
    broker("log.segment.bytes", Int, Some("1073741824"), "Maximum size of a single log segment file."),
    broker("log.roll.ms", Long, None, "Maximum time before a new segment is rolled; if unset log.roll.hours is used."),
    broker("log.roll.hours", Int, Some("168"), "Maximum time in hours before a new segment is rolled."),
    broker("log.retention.ms", Long, None, "Time to keep a segment before deleting it; if unset log.retention.minutes is used. -1 keeps forever."),
    broker("log.retention.minutes", Int, None, "Retention in minutes; if unset log.retention.hours is used."),
    broker("log.retention.hours", Int, Some("168"), "Retention in hours."),
    broker("log.retention.bytes", Long, Some("-1"), "Maximum size of a partition before old segments are deleted. -1 is unlimited."),
    broker("log.retention.check.interval.ms", Long, Some("300000"), "How often retention is checked."),
    broker("log.index.interval.bytes", Int, Some("4096"), "Bytes of log between offset index entries."),
    broker("log.flush.interval.messages", Long, Some(LONG_MAX), "Messages accumulated on a partition before it is fsynced."),
    broker("log.flush.interval.ms", Long, None, "Maximum time data waits in the page cache before an fsync; if unset, never (acks=all still fsyncs)."),
    broker("log.message.timestamp.type", String, Some("CreateTime"), "CreateTime or LogAppendTime."),
    broker(
        "log.message.timestamp.before.max.ms",
        Long,
        Some(LONG_MAX),
        "Allowed age of a record's timestamp versus the broker's clock (CreateTime only).",
    ),
    broker(
        "log.message.timestamp.after.max.ms",
        Long,
        Some("3600000"),
        "Allowed lead of a record's timestamp over the broker's clock (CreateTime only).",
    ),
    broker("log.cleanup.policy", List, Some("delete"), "Default cleanup policy: `delete`, `compact`, or `compact,delete`."),
    broker("min.insync.replicas", Int, Some("1"), "Minimum in-sync replicas for an acks=all write."),
    broker("compression.type", String, Some("producer"), "Broker compression; only `producer` (keep the producer's codec) is served."),
    broker("unclean.leader.election.enable", Boolean, Some("false"), "Allow out-of-sync replicas to become leader."),
    broker("log.cleaner.delete.retention.ms", Long, Some("86400000"), "How long tombstones are kept on compacted topics."),
    broker("log.cleaner.min.compaction.lag.ms", Long, Some("0"), "Minimum time a record stays uncompacted."),
    broker("log.cleaner.max.compaction.lag.ms", Long, Some(LONG_MAX), "Maximum time a record stays uncompacted."),
    broker("log.cleaner.min.cleanable.ratio", Double, Some("0.5"), "Dirty ratio above which a log is cleaned."),
    broker("log.cleaner.enable", Boolean, Some("true"), "Run the log cleaner, which compacts `compact` topics."),
    broker("log.cleaner.threads", Int, Some("1"), "Number of log cleaner threads."),
    broker(
        "log.cleaner.io.max.bytes.per.second",
        Double,
        Some("1.7976931348623157E308"),
        "The log cleaner's I/O (bytes read plus written per second, all cleaner threads together) is throttled to this.",
    ),
    broker(
        "log.cleaner.dedupe.buffer.size",
        Long,
        Some("134217728"),
        "Memory for the key→offset map of one cleaning pass, across all cleaner threads.",
    ),
    broker("log.cleaner.io.buffer.size", Int, Some("524288"), "Read buffer of the log cleaner, across all cleaner threads."),
    broker("log.cleaner.backoff.ms", Long, Some("15000"), "How long the cleaner sleeps when no log needs cleaning."),
    broker("producer.id.expiration.ms", Int, Some("86400000"), "Time a partition keeps an idle idempotent producer's state (for dedupe and sequence checks)."),
    broker("log.segment.delete.delay.ms", Long, Some("60000"), "Delay before a deleted segment's file is removed."),
    broker("log.roll.jitter.ms", Long, None, "Jitter subtracted from the roll time; if unset log.roll.jitter.hours is used."),
    broker("log.roll.jitter.hours", Int, Some("0"), "Jitter in hours subtracted from the roll time."),
    broker("log.index.size.max.bytes", Int, Some("10485760"), "Maximum size of an offset index file."),
    broker("compression.gzip.level", Int, Some("-1"), "Compression level for gzip when the broker compresses."),
    broker("compression.lz4.level", Int, Some("9"), "Compression level for lz4 when the broker compresses."),
    broker("compression.zstd.level", Int, Some("3"), "Compression level for zstd when the broker compresses."),
    broker("log.preallocate", Boolean, Some("false"), "Preallocate segment files."),
    broker("log.local.retention.ms", Long, Some("-2"), "Local retention for tiered storage (-2: use retention.ms)."),
    broker("log.local.retention.bytes", Long, Some("-2"), "Local retention bytes for tiered storage (-2: use retention.bytes)."),
    // ---- group coordinator (classic protocol) and committed offsets
    broker("group.min.session.timeout.ms", Int, Some("6000"), "The minimum session timeout a classic group member may ask for."),
    broker("group.max.session.timeout.ms", Int, Some("1800000"), "The maximum session timeout a classic group member may ask for."),
    broker(
        "group.initial.rebalance.delay.ms",
        Int,
        Some("3000"),
        "How long the coordinator waits for more members to join a new (empty) classic group before the first rebalance.",
    ),
    broker("group.max.size", Int, Some("2147483647"), "The maximum number of members in one classic group."),
    broker(
        "group.coordinator.rebalance.protocols",
        List,
        Some("classic,consumer"),
        "The group protocols served: `classic` (JoinGroup/SyncGroup) and `consumer` (KIP-848 ConsumerGroupHeartbeat).",
    ),
    broker(
        "offsets.retention.minutes",
        Int,
        Some("10080"),
        "How long committed offsets are kept after their group became empty (or, for standalone consumers, after the last commit).",
    ),
    broker("offsets.retention.check.interval.ms", Long, Some("600000"), "How often the coordinator looks for expired offsets."),
    broker(
        "offsets.topic.num.partitions",
        Int,
        Some("50"),
        "Partitions of __consumer_offsets (fixed once the topic exists); the group id's hash picks its coordinator partition.",
    ),
    broker("offsets.topic.segment.bytes", Int, Some("104857600"), "Segment size of __consumer_offsets."),
    broker("offset.metadata.max.bytes", Int, Some("4096"), "The largest metadata string a committed offset may carry."),
    // ---- transaction coordinator (Kafka's TransactionLogConfig and TransactionStateManagerConfig)
    broker(
        "transaction.state.log.num.partitions",
        Int,
        Some("50"),
        "Partitions of __transaction_state (fixed once the topic exists); the transactional id's hash picks its coordinator partition.",
    ),
    broker(
        "transaction.state.log.replication.factor",
        Short,
        Some("3"),
        "Replication factor of __transaction_state (a single node uses 1, as Kafka does when fewer brokers are alive).",
    ),
    broker("transaction.state.log.segment.bytes", Int, Some("104857600"), "Segment size of __transaction_state."),
    broker("transaction.state.log.min.isr", Int, Some("2"), "min.insync.replicas of __transaction_state (capped by its replication factor)."),
    broker(
        "transaction.max.timeout.ms",
        Int,
        Some("900000"),
        "The largest transaction.timeout.ms a producer may ask for; InitProducerId with more is INVALID_TRANSACTION_TIMEOUT.",
    ),
    broker(
        "transactional.id.expiration.ms",
        Int,
        Some("604800000"),
        "How long the coordinator keeps a transactional id without any transaction status update before expiring it.",
    ),
    broker(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Int,
        Some("10000"),
        "How often ongoing transactions past their timeout are looked for and aborted.",
    ),
    broker(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        Int,
        Some("3600000"),
        "How often transactional ids past transactional.id.expiration.ms are removed.",
    ),
    broker(
        "transaction.partition.verification.enable",
        Boolean,
        Some("true"),
        "KIP-890: before the first transactional write to a partition, check with the coordinator that the partition is in the transaction.",
    ),
    // ---- group coordinator (KIP-848 consumer protocol)
    broker("group.consumer.session.timeout.ms", Int, Some("45000"), "Session timeout of consumer-protocol members."),
    broker("group.consumer.min.session.timeout.ms", Int, Some("45000"), "Minimum consumer-protocol session timeout."),
    broker("group.consumer.max.session.timeout.ms", Int, Some("60000"), "Maximum consumer-protocol session timeout."),
    broker("group.consumer.heartbeat.interval.ms", Int, Some("5000"), "Heartbeat interval given to consumer-protocol members."),
    broker("group.consumer.min.heartbeat.interval.ms", Int, Some("5000"), "Minimum consumer-protocol heartbeat interval."),
    broker("group.consumer.max.heartbeat.interval.ms", Int, Some("15000"), "Maximum consumer-protocol heartbeat interval."),
    broker("group.consumer.max.size", Int, Some("2147483647"), "The maximum number of members in one consumer-protocol group."),
    broker(
        "group.consumer.migration.policy",
        String,
        Some("bidirectional"),
        "Converting groups between protocols: `upgrade` (a classic group to a consumer group when a consumer-protocol member joins), `downgrade`, `bidirectional` or `disabled`.",
    ),
    broker(
        "group.consumer.assignors",
        List,
        Some("uniform,range"),
        "Server-side assignors, the first being the default: `uniform` and `range`.",
    ),
    // ---- topic configs, each with its broker synonym
    topic(
        "cleanup.policy",
        List,
        Some("delete"),
        "log.cleanup.policy",
        "`delete` removes old segments by retention.ms/bytes; `compact` keeps the latest record per key; both may be set.",
    ),
    topic("compression.gzip.level", Int, Some("-1"), "compression.gzip.level", "Level for gzip if the broker compressed (it does not: stored only)."),
    topic("compression.lz4.level", Int, Some("9"), "compression.lz4.level", "Level for lz4 if the broker compressed (it does not: stored only)."),
    topic("compression.zstd.level", Int, Some("3"), "compression.zstd.level", "Level for zstd if the broker compressed (it does not: stored only)."),
    topic("compression.type", String, Some("producer"), "compression.type", "Only `producer` is served: batches are stored as produced."),
    topic("delete.retention.ms", Long, Some("86400000"), "log.cleaner.delete.retention.ms", "How long tombstones are kept on compacted topics."),
    topic("file.delete.delay.ms", Long, Some("60000"), "log.segment.delete.delay.ms", "Delay before a deleted segment's file is removed."),
    topic(
        "follower.replication.throttled.replicas",
        List,
        Some(""),
        "follower.replication.throttled.replicas",
        "Replicas throttled on the follower side (stored; throttling arrives with replication).",
    ),
    topic("flush.messages", Long, Some(LONG_MAX), "log.flush.interval.messages", "Messages accumulated before the partition is fsynced."),
    topic("flush.ms", Long, Some(LONG_MAX), "log.flush.interval.ms", "Maximum time before the partition is fsynced."),
    topic("index.interval.bytes", Int, Some("4096"), "log.index.interval.bytes", "Bytes of log between offset index entries."),
    topic(
        "leader.replication.throttled.replicas",
        List,
        Some(""),
        "leader.replication.throttled.replicas",
        "Replicas throttled on the leader side (stored; throttling arrives with replication).",
    ),
    topic("local.retention.bytes", Long, Some("-2"), "log.local.retention.bytes", "Tiered storage local retention bytes (not used)."),
    topic("local.retention.ms", Long, Some("-2"), "log.local.retention.ms", "Tiered storage local retention ms (not used)."),
    topic("max.compaction.lag.ms", Long, Some(LONG_MAX), "log.cleaner.max.compaction.lag.ms", "Maximum time a record stays uncompacted."),
    topic("max.message.bytes", Int, Some("1048588"), "message.max.bytes", "Largest record batch size allowed for this topic."),
    topic(
        "message.timestamp.after.max.ms",
        Long,
        Some("3600000"),
        "log.message.timestamp.after.max.ms",
        "Allowed lead of a record timestamp over the broker clock.",
    ),
    topic(
        "message.timestamp.before.max.ms",
        Long,
        Some(LONG_MAX),
        "log.message.timestamp.before.max.ms",
        "Allowed age of a record timestamp versus the broker clock.",
    ),
    topic("message.timestamp.type", String, Some("CreateTime"), "log.message.timestamp.type", "CreateTime or LogAppendTime."),
    topic("min.cleanable.dirty.ratio", Double, Some("0.5"), "log.cleaner.min.cleanable.ratio", "Dirty ratio above which a log is cleaned."),
    topic("min.compaction.lag.ms", Long, Some("0"), "log.cleaner.min.compaction.lag.ms", "Minimum time a record stays uncompacted."),
    topic("min.insync.replicas", Int, Some("1"), "min.insync.replicas", "Minimum in-sync replicas for an acks=all write."),
    topic("preallocate", Boolean, Some("false"), "log.preallocate", "Preallocate segment files."),
    topic("remote.log.copy.disable", Boolean, Some("false"), "remote.log.copy.disable", "Tiered storage: stop copying segments (no tiered storage here)."),
    topic("remote.log.delete.on.disable", Boolean, Some("false"), "remote.log.delete.on.disable", "Tiered storage: delete remote data on disable (no tiered storage here)."),
    topic("remote.storage.enable", Boolean, Some("false"), "remote.storage.enable", "Tiered storage; not available in Strom, so only false is accepted."),
    topic("retention.bytes", Long, Some("-1"), "log.retention.bytes", "Maximum partition size before old segments are deleted."),
    topic("retention.ms", Long, Some("604800000"), "log.retention.ms", "Time to keep a segment before deleting it; -1 keeps forever."),
    topic("segment.bytes", Int, Some("1073741824"), "log.segment.bytes", "Maximum size of a segment file."),
    topic("segment.index.bytes", Int, Some("10485760"), "log.index.size.max.bytes", "Maximum size of a segment's offset index."),
    topic("segment.jitter.ms", Long, Some("0"), "log.roll.jitter.ms", "Jitter subtracted from segment.ms."),
    topic("segment.ms", Long, Some("604800000"), "log.roll.ms", "Time after which a segment is rolled even if not full."),
    topic(
        "unclean.leader.election.enable",
        Boolean,
        Some("false"),
        "unclean.leader.election.enable",
        "Allow out-of-sync replicas to become leader.",
    ),
];

/// Kafka's internal broker configs (defined with `defineInternal`, so DescribeConfigs never lists them) that Strom
/// reads too, with their defaults; tests shorten them.
pub static INTERNAL_BROKER_KEYS: &[(&str, &str)] = &[
    // How often idle producer state is expired (`producer.id.expiration.ms`).
    ("producer.id.expiration.check.interval.ms", "600000"),
    // The finalized level of the `transaction.version` feature that ApiVersions advertises (a Kafka cluster sets it
    // with `kafka-storage format --feature transaction.version=N` or `kafka-features downgrade`): clients use
    // transactions v2 (KIP-890 part 2) at 2, v1 below. As in Kafka, requests are served by their version whatever
    // the level.
    ("transaction.version", "2"),
    // Strom's own, so not listed by DescribeConfigs (Kafka has no such key): how many files of inactive (not
    // active) log segments the broker keeps open, across all partitions; beyond it the least recently used are
    // closed and opened again on the next read. Read at start.
    ("log.segment.open.files.max", "1024"),
];

/// Kafka broker keys Strom accepts in a server.properties but does not use (they tune parts of Kafka that Strom
/// does not have, such as thread pools or ZooKeeper). They are reported at start, not silently applied.
pub static IGNORED_KAFKA_KEYS: &[&str] = &[
    "process.roles",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
    "inter.broker.listener.name",
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "offsets.topic.replication.factor",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
    "log.dir",
];

/// Broker configs that can be changed at run time through AlterConfigs / IncrementalAlterConfigs (Kafka's
/// DynamicLogConfig and LogCleaner reconfigurable sets, restricted to the keys Strom knows; as in Kafka the hour and
/// minute variants of retention and roll are not among them). Every other broker config is read-only and needs a
/// restart.
pub static DYNAMIC_BROKER_KEYS: &[&str] = &[
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "message.max.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.roll.jitter.ms",
    "log.retention.ms",
    "log.retention.bytes",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.message.timestamp.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.max.compaction.lag.ms",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.threads",
    "log.cleaner.io.max.bytes.per.second",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.io.buffer.size",
    "log.cleaner.backoff.ms",
    "log.segment.delete.delay.ms",
    "log.preallocate",
    "log.local.retention.ms",
    "log.local.retention.bytes",
    "min.insync.replicas",
    "compression.type",
    "unclean.leader.election.enable",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.zstd.level",
    "log.index.size.max.bytes",
    "producer.id.expiration.ms",
    "transaction.partition.verification.enable",
];

/// Whether a broker config may be altered without a restart.
pub fn is_dynamic_broker_config(name: &str) -> bool {
    DYNAMIC_BROKER_KEYS.contains(&name)
}

pub fn find(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|d| d.name == name)
}

pub fn topic_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|d| d.name == name && d.scope == Scope::Topic)
}

pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    CONFIG_DEFS.iter().find(|d| d.name == name && d.scope == Scope::Broker)
}

pub fn topic_defs() -> impl Iterator<Item = &'static ConfigDef> {
    CONFIG_DEFS.iter().filter(|d| d.scope == Scope::Topic)
}

pub fn broker_defs() -> impl Iterator<Item = &'static ConfigDef> {
    CONFIG_DEFS.iter().filter(|d| d.scope == Scope::Broker)
}

/// Checks that `value` parses as the config's type; returns a message for INVALID_CONFIG otherwise.
pub fn validate_value(def: &ConfigDef, value: &str) -> Result<(), std::string::String> {
    let bad = |what: &str| Err(format!("Invalid value {value} for configuration {}: {what}", def.name));
    match def.config_type {
        Boolean => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => bad("Expected value to be either true or false"),
        },
        Int => value.trim().parse::<i32>().map(|_| ()).or_else(|_| bad("Not a number of type INT")),
        Short => value.trim().parse::<i16>().map(|_| ()).or_else(|_| bad("Not a number of type SHORT")),
        Long => value.trim().parse::<i64>().map(|_| ()).or_else(|_| bad("Not a number of type LONG")),
        Double => value.trim().parse::<f64>().map(|_| ()).or_else(|_| bad("Not a number of type DOUBLE")),
        String | List => Ok(()),
    }
}
