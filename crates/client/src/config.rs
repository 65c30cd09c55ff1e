//! Client, producer and consumer settings, with Kafka's property names (`set("linger.ms", "5")`) so the
//! command-line tools can take `--producer-props` exactly as Kafka's tools do.

use std::time::Duration;

use crate::error::{Error, Result};

/// Settings every client (producer, consumer, admin) shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`: host:port pairs tried in order until one answers.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`
    pub client_id: String,
    /// `request.timeout.ms`: how long one request may wait for its response.
    pub request_timeout: Duration,
    /// `socket.connection.setup.timeout.ms`
    pub connect_timeout: Duration,
    /// `max.in.flight.requests.per.connection`: requests pipelined on one connection before the next waits.
    pub max_in_flight: usize,
    /// `metadata.max.age.ms`: refresh the metadata cache at least this often.
    pub metadata_max_age: Duration,
    /// `retry.backoff.ms`
    pub retry_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: vec!["127.0.0.1:9092".into()],
            client_id: "strom-client".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_in_flight: 5,
            metadata_max_age: Duration::from_secs(300),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

impl ClientConfig {
    pub fn new(bootstrap: impl AsRef<str>) -> Self {
        ClientConfig { bootstrap_servers: split_list(bootstrap.as_ref()), ..Default::default() }
    }

    /// Applies one setting this struct knows; `Ok(false)` when the key belongs elsewhere.
    fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        match key {
            "bootstrap.servers" => self.bootstrap_servers = split_list(value),
            "client.id" => self.client_id = value.to_string(),
            "request.timeout.ms" => self.request_timeout = millis(key, value)?,
            "socket.connection.setup.timeout.ms" => self.connect_timeout = millis(key, value)?,
            "max.in.flight.requests.per.connection" => self.max_in_flight = number::<usize>(key, value)?.max(1),
            "metadata.max.age.ms" => self.metadata_max_age = millis(key, value)?,
            "retry.backoff.ms" => self.retry_backoff = millis(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec id in a record batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => {
                return Err(Error::Config(format!(
                    "compression.type '{s}' is not one of none, gzip, snappy, lz4, zstd"
                )))
            }
        })
    }
}

/// Which partitioner a producer uses for records without an explicit partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionerKind {
    /// Java's default: murmur2 of the key; sticky batches for null keys.
    Default,
    /// Every record (keyed or not) to the next partition in turn.
    RoundRobin,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    /// `acks`: 0, 1 or -1 (`all`).
    pub acks: i16,
    /// `linger.ms`
    pub linger: Duration,
    /// `batch.size` in bytes.
    pub batch_size: usize,
    /// `buffer.memory` in bytes: records waiting to be sent; `send` blocks when full.
    pub buffer_memory: usize,
    /// `max.block.ms`: how long `send` waits for buffer space or metadata.
    pub max_block: Duration,
    /// `max.request.size`
    pub max_request_size: usize,
    /// `compression.type`
    pub compression: Compression,
    /// `retries`
    pub retries: u32,
    /// `delivery.timeout.ms`: upper bound from `send` to success or failure, retries included.
    pub delivery_timeout: Duration,
    /// `enable.idempotence`; `None` (not set) is Java's default: on, unless `acks`, `retries` or
    /// `max.in.flight.requests.per.connection` conflict with it, then off. See [`ProducerConfig::idempotence`].
    pub enable_idempotence: Option<bool>,
    /// `partitioner.class` as `default` or `round-robin`; a custom one is set with `Producer::with_partitioner`.
    pub partitioner: PartitionerKind,
    /// `allow.auto.create.topics`: ask the broker to create unknown topics on the first metadata request.
    pub allow_auto_create_topics: bool,
    /// `transactional.id`: makes the producer transactional (`init_transactions`, `begin_transaction`, ...).
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open before aborting it.
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client: ClientConfig::default(),
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 16384,
            buffer_memory: 32 << 20,
            max_block: Duration::from_secs(60),
            max_request_size: 1 << 20,
            compression: Compression::None,
            retries: i32::MAX as u32,
            delivery_timeout: Duration::from_secs(120),
            enable_idempotence: None,
            partitioner: PartitionerKind::Default,
            allow_auto_create_topics: true,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    pub fn new(bootstrap: impl AsRef<str>) -> Self {
        ProducerConfig { client: ClientConfig::new(bootstrap), ..Default::default() }
    }

    /// Whether the producer runs idempotent, as Java's ProducerConfig decides it: explicitly enabled with a
    /// conflicting `acks`, `retries` or `max.in.flight.requests.per.connection` is an error; left unset, idempotence
    /// is on unless one of them conflicts.
    pub fn idempotence(&self) -> Result<bool> {
        let conflict = if self.acks != -1 {
            Some("acks must be all (-1)")
        } else if self.retries == 0 {
            Some("retries must be greater than 0")
        } else if self.client.max_in_flight > 5 {
            Some("max.in.flight.requests.per.connection must be at most 5")
        } else {
            None
        };
        if self.transactional_id.is_some() {
            // Java: a transactional producer is idempotent; it cannot be turned off nor conflict.
            return match (self.enable_idempotence, conflict) {
                (Some(false), _) => Err(Error::Config("transactional.id needs enable.idempotence=true".into())),
                (_, Some(c)) => Err(Error::Config(format!("transactional.id: {c}"))),
                _ => Ok(true),
            };
        }
        match (self.enable_idempotence, conflict) {
            (Some(true), Some(c)) => Err(Error::Config(format!("enable.idempotence=true: {c}"))),
            (Some(enabled), _) => Ok(enabled),
            (None, c) => Ok(c.is_none()),
        }
    }

    /// Sets one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        if self.client.set(key, value)? {
            return Ok(self);
        }
        match key {
            "acks" => {
                self.acks = match value {
                    "all" | "-1" => -1,
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(Error::Config(format!("acks must be 0, 1, -1 or all, not '{value}'"))),
                }
            }
            "linger.ms" => self.linger = millis(key, value)?,
            "batch.size" => self.batch_size = number(key, value)?,
            "buffer.memory" => self.buffer_memory = number(key, value)?,
            "max.block.ms" => self.max_block = millis(key, value)?,
            "max.request.size" => self.max_request_size = number(key, value)?,
            "compression.type" => self.compression = value.parse()?,
            "retries" => self.retries = number(key, value)?,
            "delivery.timeout.ms" => self.delivery_timeout = millis(key, value)?,
            "enable.idempotence" => self.enable_idempotence = Some(boolean(key, value)?),
            "partitioner.class" => {
                self.partitioner = match value {
                    "default" | "org.apache.kafka.clients.producer.internals.DefaultPartitioner" => {
                        PartitionerKind::Default
                    }
                    "round-robin" | "org.apache.kafka.clients.producer.RoundRobinPartitioner" => {
                        PartitionerKind::RoundRobin
                    }
                    _ => return Err(Error::Config(format!("partitioner.class '{value}': use default or round-robin"))),
                }
            }
            "allow.auto.create.topics" => self.allow_auto_create_topics = boolean(key, value)?,
            "transactional.id" => self.transactional_id = Some(value.to_string()).filter(|v| !v.is_empty()),
            "transaction.timeout.ms" => self.transaction_timeout = millis(key, value)?,
            // Accepted for compatibility with Kafka's tools; the client has no use for them.
            "key.serializer" | "value.serializer" | "send.buffer.bytes" | "receive.buffer.bytes" => {}
            _ => return Err(Error::Config(format!("unknown producer property '{key}'"))),
        }
        Ok(self)
    }
}

/// What a consumer does when it has no valid position for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    None,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    /// `group.id`: needed to `subscribe` and to commit offsets.
    pub group_id: Option<String>,
    /// `group.instance.id`: static membership (KIP-345).
    pub group_instance_id: Option<String>,
    /// `enable.auto.commit`: commit the positions every `auto.commit.interval.ms` from `poll`, and before a
    /// rebalance revokes partitions.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`
    pub auto_commit_interval: Duration,
    /// `session.timeout.ms`
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`: the member leaves the group when `poll` is not called for this long.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in order of preference.
    pub assignors: Vec<crate::group::assignor::Assignor>,
    /// `auto.offset.reset`
    pub auto_offset_reset: OffsetReset,
    /// `max.poll.records`
    pub max_poll_records: usize,
    /// `fetch.min.bytes`
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes`
    pub fetch_max_bytes: i32,
    /// `fetch.max.wait.ms`
    pub fetch_max_wait: Duration,
    /// `max.partition.fetch.bytes`
    pub max_partition_fetch_bytes: i32,
    /// `isolation.level`: with `read_committed` fetches stop at the last stable offset and records of aborted
    /// transactions are dropped client-side (from the fetch response's aborted transactions). The Java consumer's
    /// default is `read_uncommitted`.
    pub read_committed: bool,
    /// `check.crcs`
    pub check_crcs: bool,
    /// `allow.auto.create.topics`: off by default so reading a missing topic is an error, not a new topic.
    pub allow_auto_create_topics: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client: ClientConfig::default(),
            group_id: None,
            group_instance_id: None,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_millis(5000),
            session_timeout: Duration::from_millis(45_000),
            heartbeat_interval: Duration::from_millis(3000),
            max_poll_interval: Duration::from_millis(300_000),
            // The Java client's default: range, with cooperative-sticky as the upgrade path.
            assignors: vec![
                crate::group::assignor::Assignor::Range,
                crate::group::assignor::Assignor::CooperativeSticky,
            ],
            auto_offset_reset: OffsetReset::Latest,
            max_poll_records: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 << 20,
            fetch_max_wait: Duration::from_millis(500),
            max_partition_fetch_bytes: 1 << 20,
            read_committed: false,
            check_crcs: true,
            allow_auto_create_topics: false,
        }
    }
}

impl ConsumerConfig {
    pub fn new(bootstrap: impl AsRef<str>) -> Self {
        ConsumerConfig { client: ClientConfig::new(bootstrap), ..Default::default() }
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        if self.client.set(key, value)? {
            return Ok(self);
        }
        match key {
            "group.id" => self.group_id = Some(value.to_string()),
            "group.instance.id" => self.group_instance_id = Some(value.to_string()),
            "enable.auto.commit" => self.enable_auto_commit = boolean(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval = millis(key, value)?,
            "session.timeout.ms" => self.session_timeout = millis(key, value)?,
            "heartbeat.interval.ms" => self.heartbeat_interval = millis(key, value)?,
            "max.poll.interval.ms" => self.max_poll_interval = millis(key, value)?,
            "partition.assignment.strategy" => {
                self.assignors = split_list(value)
                    .iter()
                    .map(|n| {
                        crate::group::assignor::Assignor::parse(n)
                            .ok_or_else(|| Error::Config(format!("unknown assignor '{n}'")))
                    })
                    .collect::<Result<_>>()?;
            }
            "group.protocol" if value == "classic" => {}
            "auto.offset.reset" => {
                self.auto_offset_reset = match value {
                    "earliest" => OffsetReset::Earliest,
                    "latest" => OffsetReset::Latest,
                    "none" => OffsetReset::None,
                    _ => {
                        return Err(Error::Config(format!(
                            "auto.offset.reset must be earliest, latest or none, not '{value}'"
                        )))
                    }
                }
            }
            "max.poll.records" => self.max_poll_records = number::<usize>(key, value)?.max(1),
            "fetch.min.bytes" => self.fetch_min_bytes = number(key, value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = number(key, value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = millis(key, value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = number(key, value)?,
            "isolation.level" => {
                self.read_committed = match value {
                    "read_committed" => true,
                    "read_uncommitted" => false,
                    _ => return Err(Error::Config(format!("isolation.level '{value}'"))),
                }
            }
            "check.crcs" => self.check_crcs = boolean(key, value)?,
            "allow.auto.create.topics" => self.allow_auto_create_topics = boolean(key, value)?,
            "key.deserializer" | "value.deserializer" | "receive.buffer.bytes" => {}
            _ => return Err(Error::Config(format!("unknown consumer property '{key}'"))),
        }
        Ok(self)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Config(format!("{key}: '{value}' is not a valid number")))
}

fn millis(key: &str, value: &str) -> Result<Duration> {
    Ok(Duration::from_millis(number(key, value)?))
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Config(format!("{key}: '{value}' is not true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotence_defaults_like_java() {
        let mut c = ProducerConfig::default();
        assert!(c.idempotence().unwrap());
        c.set("acks", "1").unwrap();
        assert!(!c.idempotence().unwrap(), "an unset default yields to a conflicting acks");
        c.set("enable.idempotence", "true").unwrap();
        assert!(c.idempotence().is_err(), "an explicit request with a conflicting acks is an error");
        c.set("acks", "all").unwrap();
        c.set("retries", "0").unwrap();
        assert!(c.idempotence().is_err());
        c.set("enable.idempotence", "false").unwrap();
        assert!(!c.idempotence().unwrap());
    }

    #[test]
    fn a_transactional_producer_is_idempotent() {
        let mut c = ProducerConfig::default();
        c.set("transactional.id", "tx").unwrap().set("transaction.timeout.ms", "15000").unwrap();
        assert_eq!((c.transactional_id.as_deref(), c.transaction_timeout), (Some("tx"), Duration::from_secs(15)));
        assert!(c.idempotence().unwrap());
        c.set("enable.idempotence", "false").unwrap();
        assert!(c.idempotence().is_err(), "transactional.id needs idempotence");
        c.set("enable.idempotence", "true").unwrap().set("acks", "1").unwrap();
        assert!(c.idempotence().is_err(), "and acks=all");
    }

    #[test]
    fn properties_by_kafka_name() {
        let mut c = ProducerConfig::default();
        c.set("acks", "all").unwrap().set("linger.ms", "7").unwrap().set("compression.type", "zstd").unwrap();
        c.set("bootstrap.servers", "a:1, b:2").unwrap();
        assert_eq!((c.acks, c.linger, c.compression), (-1, Duration::from_millis(7), Compression::Zstd));
        assert_eq!(c.client.bootstrap_servers, vec!["a:1", "b:2"]);
        assert!(c.set("acks", "2").is_err());
        assert!(c.set("no.such.thing", "1").is_err());
        let mut k = ConsumerConfig::default();
        k.set("auto.offset.reset", "none").unwrap();
        assert_eq!(k.auto_offset_reset, OffsetReset::None);
    }
}
