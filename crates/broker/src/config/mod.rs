//! Typed broker and topic configuration with Kafka's names, defaults, validation and sources.

pub mod alter;
pub mod defs;
mod listener;
mod topic;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use listener::{ListenerConfig, SecurityProtocol};
pub use topic::{describe_topic_config, validate_topic_configs, DescribedConfig, TopicConfig};

use defs::{broker_def, find, validate_value, INTERNAL_BROKER_KEYS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Broker configuration: the statically set values (properties file, then `--override`s) plus the
/// typed fields the broker uses. DescribeConfigs reports every known key with its source.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    static_values: BTreeMap<String, String>,
    /// Dynamic overrides for this broker (KIP-226 per-broker configs, from the metadata image).
    dynamic_node: BTreeMap<String, String>,
    /// Dynamic cluster-wide broker defaults (resource name "").
    dynamic_default: BTreeMap<String, String>,
    pub node_id: i32,
    pub rack: Option<String>,
    pub listeners: Vec<ListenerConfig>,
    pub advertised_listeners: Vec<ListenerConfig>,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub socket_request_max_bytes: usize,
    /// `max.connections`
    pub max_connections: usize,
    /// `max.connections.per.ip`
    pub max_connections_per_ip: usize,
    /// `max.connections.per.ip.overrides`, resolved to addresses at start.
    pub max_connections_per_ip_overrides: HashMap<IpAddr, usize>,
    /// `connections.max.idle.ms`; None (negative) never closes idle connections.
    pub connections_max_idle: Option<Duration>,
    /// `queued.max.requests`
    pub queued_max_requests: usize,
    /// `queued.max.request.bytes`; None (zero or negative) is unbounded.
    pub queued_max_request_bytes: Option<usize>,
    /// `fetch.max.bytes`
    pub fetch_max_bytes: usize,
    /// `log.segment.open.files.max` (Strom's own): files of inactive segments held open, broker-wide.
    pub segment_open_files_max: usize,
    pub retention_check_interval_ms: u64,
    /// `producer.id.expiration.check.interval.ms`
    pub producer_id_expiration_check_interval_ms: u64,
    /// Keys Strom does not use (Kafka settings for parts Strom lacks, or unknown keys); reported at start.
    pub ignored_keys: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::from_values(BTreeMap::new()).expect("defaults are valid")
    }
}

impl BrokerConfig {
    /// Parses a Kafka-style `server.properties` text (`key=value`, `#` comments, `\` continuations are not used by
    /// Kafka's sample files and are not supported).
    pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = line
                .split_once(['=', ':'])
                .ok_or_else(|| ConfigError::Invalid(format!("line {}: expected key=value, got `{line}`", n + 1)))?;
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(out)
    }

    /// Builds the config from a properties file (optional) and `key=value` overrides applied on top.
    pub fn load(file: Option<&std::path::Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut values = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::Io { path: p.display().to_string(), source: e })?;
                Self::parse_properties(&text)?
            }
            None => BTreeMap::new(),
        };
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("--override expects key=value, got `{o}`")))?;
            values.insert(k.trim().to_string(), v.trim().to_string());
        }
        Self::from_values(values)
    }

    pub fn from_values(mut values: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut ignored = Vec::new();
        // Kafka's `log.dir` (singular) is the fallback for `log.dirs`.
        if let Some(dir) = values.get("log.dir").cloned() {
            values.entry("log.dirs".into()).or_insert(dir);
        }
        for (k, v) in &values {
            // Kafka starts with keys it does not use (plugin settings, other versions' keys) and logs them as
            // unused; Strom does the same and reports them at start.
            let Some(def) = broker_def(k) else {
                if INTERNAL_BROKER_KEYS.iter().any(|(name, _)| name == k) {
                    continue;
                }
                ignored.push(k.clone());
                continue;
            };
            validate_value(def, v).map_err(ConfigError::Invalid)?;
        }
        let get = |k: &str| -> Option<String> {
            values.get(k).cloned().or_else(|| find(k).and_then(|d| d.default.map(str::to_string))).or_else(|| {
                INTERNAL_BROKER_KEYS.iter().find(|(name, _)| *name == k).map(|(_, default)| default.to_string())
            })
        };
        let int = |k: &str| -> i64 { get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
        let boolean = |k: &str| get(k).map(|v| v.eq_ignore_ascii_case("true")).unwrap_or(false);

        let protocol_map = get("listener.security.protocol.map").unwrap_or_default();
        let listeners = ListenerConfig::parse_list(&get("listeners").unwrap_or_default(), &protocol_map)
            .map_err(ConfigError::Invalid)?;
        if listeners.is_empty() {
            return Err(ConfigError::Invalid("`listeners` must name at least one listener".into()));
        }
        let advertised_listeners = match get("advertised.listeners") {
            Some(a) => ListenerConfig::parse_list(&a, &protocol_map).map_err(ConfigError::Invalid)?,
            None => listeners.clone(),
        };
        for l in &advertised_listeners {
            if !listeners.iter().any(|x| x.name == l.name) {
                return Err(ConfigError::Invalid(format!(
                    "advertised listener {} has no matching entry in `listeners`",
                    l.name
                )));
            }
        }
        let num_partitions = int("num.partitions") as i32;
        if num_partitions < 1 {
            return Err(ConfigError::Invalid("num.partitions must be at least 1".into()));
        }
        let socket_request_max_bytes = int("socket.request.max.bytes");
        if socket_request_max_bytes < 1 {
            return Err(ConfigError::Invalid("socket.request.max.bytes must be at least 1".into()));
        }
        let at_least = |k: &str, min: i64| -> Result<i64, ConfigError> {
            let v = int(k);
            if v < min {
                return Err(ConfigError::Invalid(format!(
                    "Invalid value {v} for configuration {k}: Value must be at least {min}"
                )));
            }
            Ok(v)
        };
        let max_connections = at_least("max.connections", 0)?;
        let max_connections_per_ip = at_least("max.connections.per.ip", 0)?;
        let overrides = parse_ip_overrides(&get("max.connections.per.ip.overrides").unwrap_or_default())?;
        if max_connections_per_ip == 0 && overrides.is_empty() {
            // As Kafka's KafkaConfig: 0 only makes sense as "nobody but the overrides".
            return Err(ConfigError::Invalid(
                "max.connections.per.ip can be set to zero only if max.connections.per.ip.overrides property is set."
                    .into(),
            ));
        }
        let idle_ms = int("connections.max.idle.ms");
        let queued_max_request_bytes = int("queued.max.request.bytes");
        if queued_max_request_bytes > 0 && queued_max_request_bytes < socket_request_max_bytes {
            return Err(ConfigError::Invalid(
                "queued.max.request.bytes must be larger or equal to socket.request.max.bytes".into(),
            ));
        }
        let open_files = get("log.segment.open.files.max").unwrap_or_default();
        let segment_open_files_max = match open_files.trim().parse::<i64>() {
            Ok(v) if v >= 1 => v as usize,
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "Invalid value {open_files} for configuration log.segment.open.files.max: Value must be an integer of at least 1"
                )))
            }
        };
        let cfg = BrokerConfig {
            segment_open_files_max,
            max_connections: max_connections as usize,
            max_connections_per_ip: max_connections_per_ip as usize,
            max_connections_per_ip_overrides: overrides,
            connections_max_idle: (idle_ms >= 0).then(|| Duration::from_millis(idle_ms as u64)),
            queued_max_requests: at_least("queued.max.requests", 1)? as usize,
            queued_max_request_bytes: (queued_max_request_bytes > 0).then_some(queued_max_request_bytes as usize),
            fetch_max_bytes: at_least("fetch.max.bytes", 1024)? as usize,
            node_id: int("node.id") as i32,
            rack: get("broker.rack"),
            listeners,
            advertised_listeners,
            log_dir: PathBuf::from(get("log.dirs").unwrap_or_else(|| "./strom-data".into())),
            num_partitions,
            default_replication_factor: int("default.replication.factor") as i16,
            auto_create_topics_enable: boolean("auto.create.topics.enable"),
            delete_topic_enable: boolean("delete.topic.enable"),
            socket_request_max_bytes: socket_request_max_bytes as usize,
            retention_check_interval_ms: int("log.retention.check.interval.ms").max(1) as u64,
            producer_id_expiration_check_interval_ms: int("producer.id.expiration.check.interval.ms").max(1) as u64,
            ignored_keys: ignored,
            static_values: values,
            dynamic_node: BTreeMap::new(),
            dynamic_default: BTreeMap::new(),
        };
        // The topic defaults must themselves be valid topic configs.
        validate_topic_configs(&cfg, &BTreeMap::new()).map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// The value set statically (file or override) for a broker key, if any.
    pub fn static_value(&self, key: &str) -> Option<&str> {
        self.static_values.get(key).map(String::as_str)
    }

    /// This config with the dynamic broker configs of the metadata image layered over the static ones
    /// (`node`: this broker's overrides, `default`: the cluster-wide defaults), as Kafka's DynamicBrokerConfig does.
    pub fn with_dynamic(&self, node: &BTreeMap<String, String>, default: &BTreeMap<String, String>) -> BrokerConfig {
        let mut c = self.clone();
        c.dynamic_node = node.clone();
        c.dynamic_default = default.clone();
        c
    }

    /// The dynamic overrides currently layered in: (this broker's, the cluster default's).
    pub fn dynamic_values(&self) -> (&BTreeMap<String, String>, &BTreeMap<String, String>) {
        (&self.dynamic_node, &self.dynamic_default)
    }

    /// Every value set for a broker key, most specific first: dynamic per-broker, dynamic cluster default,
    /// static (file or override). The default from the table is not included.
    pub fn set_values(&self, key: &str) -> Vec<(String, ConfigSource)> {
        [
            (self.dynamic_node.get(key), ConfigSource::DynamicBroker),
            (self.dynamic_default.get(key), ConfigSource::DynamicDefaultBroker),
            (self.static_values.get(key), ConfigSource::StaticBroker),
        ]
        .into_iter()
        .filter_map(|(v, s)| v.map(|v| (v.clone(), s)))
        .collect()
    }

    /// The effective value of a broker key (dynamic over static over default) and its source.
    pub fn broker_value(&self, key: &str) -> (Option<String>, ConfigSource) {
        match self.set_values(key).into_iter().next() {
            Some((v, s)) => (Some(v), s),
            None => (find(key).and_then(|d| d.default.map(str::to_string)), ConfigSource::Default),
        }
    }

    /// The effective value parsed as a number (for broker settings read at run time, e.g. the cleaner's).
    pub fn broker_f64(&self, key: &str) -> f64 {
        self.broker_value(key).0.and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    }
}

/// `max.connections.per.ip.overrides`: `host:count,...`, hosts being addresses or names (resolved now, as Kafka
/// resolves them when the config is read).
/// The connection quotas' limits, which are dynamic broker configs (Kafka's DynamicConnectionQuota).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub per_ip_overrides: HashMap<IpAddr, usize>,
}

impl BrokerConfig {
    /// The connection limits with dynamic values layered in. A dynamic value was validated when it was altered;
    /// one that no longer parses (a hostname that stopped resolving) keeps the static value.
    pub fn connection_limits(&self) -> ConnectionLimits {
        let count = |key: &str, fallback: usize| {
            self.broker_value(key)
                .0
                .and_then(|v| v.trim().parse::<i32>().ok())
                .filter(|n| *n >= 0)
                .map_or(fallback, |n| n as usize)
        };
        let per_ip_overrides = self
            .broker_value("max.connections.per.ip.overrides")
            .0
            .and_then(|v| parse_ip_overrides(&v).ok())
            .unwrap_or_else(|| self.max_connections_per_ip_overrides.clone());
        ConnectionLimits {
            max_connections: count("max.connections", self.max_connections),
            max_per_ip: count("max.connections.per.ip", self.max_connections_per_ip),
            per_ip_overrides,
        }
    }
}

/// Checks a `max.connections.per.ip.overrides` value; the message says what is wrong.
pub fn check_ip_overrides(value: &str) -> Result<(), String> {
    parse_ip_overrides(value).map(|_| ()).map_err(|e| e.to_string())
}

fn parse_ip_overrides(value: &str) -> Result<HashMap<IpAddr, usize>, ConfigError> {
    let mut out = HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| {
            ConfigError::Invalid(format!("Invalid value {entry} in max.connections.per.ip.overrides: {why}"))
        };
        let (host, count) = entry.rsplit_once(':').ok_or_else(|| bad("expected host:count"))?;
        let count: i32 = count.trim().parse().map_err(|_| bad("the count is not a number"))?;
        if count < 0 {
            return Err(bad("the count must be at least 0"));
        }
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
                .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        for ip in addrs {
            out.insert(ip, count as usize);
        }
    }
    Ok(out)
}

/// Where a config value comes from, numbered as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kafka() {
        let c = BrokerConfig::default();
        assert_eq!(c.listeners[0].port, 9092);
        assert_eq!(c.listeners[0].host, "127.0.0.1");
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.socket_request_max_bytes, 104857600);
        assert_eq!(c.log_dir, PathBuf::from("./strom-data"));
    }

    #[test]
    fn connection_limits() {
        let c = BrokerConfig::default();
        assert_eq!(c.max_connections, i32::MAX as usize);
        assert_eq!(c.max_connections_per_ip, i32::MAX as usize);
        assert!(c.max_connections_per_ip_overrides.is_empty());
        assert_eq!(c.connections_max_idle, Some(Duration::from_millis(600_000)));
        assert_eq!(c.queued_max_requests, 500);
        assert_eq!(c.queued_max_request_bytes, None);
        assert_eq!(c.fetch_max_bytes, 57_671_680);
        assert_eq!(c.segment_open_files_max, strom_log::DEFAULT_OPEN_FILES_MAX);
        let with = |pairs: &[(&str, &str)]| {
            BrokerConfig::from_values(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        // As Kafka's KafkaConfig checks.
        assert!(with(&[("max.connections.per.ip", "0")]).is_err());
        let c = with(&[("max.connections.per.ip", "0"), ("max.connections.per.ip.overrides", "127.0.0.1:5, ::1:2")])
            .unwrap();
        assert_eq!(c.max_connections_per_ip_overrides.get(&"127.0.0.1".parse().unwrap()), Some(&5));
        assert_eq!(c.max_connections_per_ip_overrides.get(&"::1".parse().unwrap()), Some(&2));
        assert!(with(&[("max.connections.per.ip.overrides", "127.0.0.1")]).is_err());
        assert!(with(&[("queued.max.request.bytes", "1000")]).is_err());
        assert_eq!(
            with(&[("queued.max.request.bytes", "104857600")]).unwrap().queued_max_request_bytes,
            Some(104857600)
        );
        assert!(with(&[("queued.max.requests", "0")]).is_err());
        assert!(with(&[("fetch.max.bytes", "100")]).is_err());
        assert_eq!(with(&[("connections.max.idle.ms", "-1")]).unwrap().connections_max_idle, None);
        assert_eq!(with(&[("log.segment.open.files.max", "64")]).unwrap().segment_open_files_max, 64);
        assert!(with(&[("log.segment.open.files.max", "0")]).is_err());
        assert!(with(&[("log.segment.open.files.max", "many")]).is_err());
        assert!(with(&[("log.segment.open.files.max", "64")]).unwrap().ignored_keys.is_empty());
    }

    #[test]
    fn properties_and_overrides() {
        let props = "# a comment\nnum.partitions=3\nlog.dirs = /tmp/x\nnum.network.threads=3\n";
        let values = BrokerConfig::parse_properties(props).unwrap();
        let mut c = BrokerConfig::from_values(values.clone()).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.ignored_keys, vec!["num.network.threads".to_string()]);
        let mut v2 = values;
        v2.insert("num.partitions".into(), "5".into());
        c = BrokerConfig::from_values(v2).unwrap();
        assert_eq!(c.num_partitions, 5);
        assert_eq!(c.broker_value("num.partitions"), (Some("5".into()), ConfigSource::StaticBroker));
        assert_eq!(c.broker_value("log.segment.bytes").1, ConfigSource::Default);
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        let mut v = BTreeMap::new();
        v.insert("num.partitionz".to_string(), "3".to_string());
        assert_eq!(BrokerConfig::from_values(v).unwrap().ignored_keys, vec!["num.partitionz".to_string()]);
        let mut v = BTreeMap::new();
        v.insert("num.partitions".to_string(), "three".to_string());
        assert!(matches!(BrokerConfig::from_values(v), Err(ConfigError::Invalid(_))));
        let mut v = BTreeMap::new();
        v.insert("num.partitions".to_string(), "0".to_string());
        assert!(BrokerConfig::from_values(v).is_err());
    }
}
