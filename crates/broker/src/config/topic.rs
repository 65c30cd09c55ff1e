//! Effective topic configuration: per-topic overrides over the broker's defaults (Kafka's synonym chain).

use std::collections::BTreeMap;

use strom_log::{CleanupPolicy, LogConfig, TimestampType};

use super::defs::{self, topic_def, validate_value, ConfigDef, LONG_MAX};
use super::{BrokerConfig, ConfigSource};

/// One described config entry: value, source, and the synonym chain (most specific first).
#[derive(Clone, Debug)]
pub struct DescribedConfig {
    pub def: &'static ConfigDef,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub synonyms: Vec<(String, Option<String>, ConfigSource)>,
}

/// The typed settings a partition runs with.
#[derive(Clone, Debug)]
pub struct TopicConfig {
    pub log: LogConfig,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub min_insync_replicas: i32,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
}

/// The broker keys behind a topic config, most specific first (Kafka's synonym chain): e.g. `retention.ms` is
/// backed by `log.retention.ms`, then `log.retention.minutes`, then `log.retention.hours`.
fn broker_chain(def: &ConfigDef) -> &'static [(&'static str, i64)] {
    match def.name {
        "retention.ms" => {
            &[("log.retention.ms", 1), ("log.retention.minutes", 60_000), ("log.retention.hours", 3_600_000)]
        }
        "segment.ms" => &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
        "segment.jitter.ms" => &[("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", 3_600_000)],
        _ => &[],
    }
}

/// A config key set along a synonym chain: its value and where it was set.
type Synonym = (String, Option<String>, ConfigSource);

/// The broker-level value behind a topic config and where it comes from: the first key of the chain that is set
/// (key by key; for each key dynamic per-broker, then dynamic cluster default, then static, as Kafka merges
/// dynamic configs over the static ones), scaled to the topic config's unit, else the topic config's Kafka
/// default. The synonyms list every value set along the chain.
fn broker_default(broker: &BrokerConfig, def: &ConfigDef) -> (Option<String>, ConfigSource, Vec<Synonym>) {
    let synonym = def.broker_synonym.unwrap_or(def.name);
    let chain: Vec<(&str, i64)> = match broker_chain(def) {
        [] => vec![(synonym, 1)],
        c => c.to_vec(),
    };
    let mut set = Vec::new();
    let mut value = None;
    for (key, factor) in chain {
        for (v, source) in broker.set_values(key) {
            let scaled = if factor == 1 {
                v.clone()
            } else {
                v.trim().parse::<i64>().map(|n| n.saturating_mul(factor).to_string()).unwrap_or_else(|_| v.clone())
            };
            value.get_or_insert((scaled, source));
            set.push((key.to_string(), Some(v), source));
        }
    }
    match value {
        Some((v, source)) => (Some(v), source, set),
        None => (def.default.map(str::to_string), ConfigSource::Default, set),
    }
}

/// Describes every topic config (or one) with value, source and synonyms.
pub fn describe_topic_config(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
    def: &'static ConfigDef,
) -> DescribedConfig {
    let mut synonyms = Vec::new();
    if let Some(v) = overrides.get(def.name) {
        synonyms.push((def.name.to_string(), Some(v.clone()), ConfigSource::DynamicTopic));
    }
    let (bval, bsource, broker_synonyms) = broker_default(broker, def);
    synonyms.extend(broker_synonyms);
    // As Kafka: the primary broker synonym is listed with its default only when that default is not null
    // (so `retention.ms` lists no `log.retention.ms`, whose default is null).
    let primary = def.broker_synonym.unwrap_or(def.name);
    let primary_default = broker_chain(def).first().map_or(primary, |(k, _)| k);
    if let Some(d) = defs::broker_def(primary_default).and_then(|d| d.default) {
        synonyms.push((primary_default.to_string(), Some(d.to_string()), ConfigSource::Default));
    }
    let (value, source) = match overrides.get(def.name) {
        Some(v) => (Some(v.clone()), ConfigSource::DynamicTopic),
        None => (bval, bsource),
    };
    DescribedConfig { def, value, source, synonyms }
}

impl TopicConfig {
    pub fn resolve(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> TopicConfig {
        let value = |name: &str| -> String {
            let def = topic_def(name).expect("known topic config");
            describe_topic_config(broker, overrides, def).value.unwrap_or_else(|| LONG_MAX.to_string())
        };
        let long = |name: &str| value(name).trim().parse::<i64>().unwrap_or(i64::MAX);
        let log = LogConfig {
            segment_bytes: long("segment.bytes").max(1) as u64,
            segment_ms: long("segment.ms"),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            index_interval_bytes: long("index.interval.bytes").clamp(0, u32::MAX as i64) as u32,
            max_message_bytes: long("max.message.bytes").clamp(0, u32::MAX as i64) as u32,
            message_timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            cleanup_policy: value("cleanup.policy").parse().unwrap_or_default(),
            min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio").trim().parse().unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            delete_retention_ms: long("delete.retention.ms"),
        };
        TopicConfig {
            log,
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            min_insync_replicas: long("min.insync.replicas") as i32,
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
        }
    }
}

/// Validates topic config overrides as Kafka does for CreateTopics/AlterConfigs; the error text goes back to the
/// client with INVALID_CONFIG.
pub fn validate_topic_configs(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in overrides {
        let def = topic_def(k).ok_or_else(|| format!("Unknown topic config name: {k}"))?;
        validate_value(def, v)?;
    }
    // Check the effective values, so bad broker defaults are caught too.
    for def in defs::topic_defs() {
        let d = describe_topic_config(broker, overrides, def);
        let v = d.value.unwrap_or_default();
        let num = || v.trim().parse::<i64>().unwrap_or(0);
        let bad = |why: &str| Err(format!("Invalid value {v} for configuration {}: {why}", def.name));
        match def.name {
            "cleanup.policy" if v.parse::<CleanupPolicy>().is_err() => {
                return bad("String must be one of: compact, delete")
            }
            "min.cleanable.dirty.ratio" => match v.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => {}
                _ => return bad("Value must be no less than 0 and no more than 1"),
            },
            "delete.retention.ms" | "min.compaction.lag.ms" if num() < 0 => return bad("Value must be at least 0"),
            "max.compaction.lag.ms" if num() < 1 => return bad("Value must be at least 1"),
            "compression.type" if v != "producer" => {
                return bad("only `producer` is supported: Strom stores batches as the producer compressed them")
            }
            "message.timestamp.type" if v != "CreateTime" && v != "LogAppendTime" => {
                return bad("String must be one of: CreateTime, LogAppendTime")
            }
            // Kafka 4 requires at least 1 MiB.
            "segment.bytes" if num() < 1024 * 1024 => return bad("Value must be at least 1048576"),
            "remote.storage.enable" if v.trim().eq_ignore_ascii_case("true") => {
                return bad("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.")
            }
            "max.message.bytes" | "index.interval.bytes" | "segment.ms" | "flush.messages" | "flush.ms"
                if num() < if def.name == "flush.messages" || def.name == "segment.ms" { 1 } else { 0 } =>
            {
                return bad("Value is out of range")
            }
            "min.insync.replicas" if num() < 1 => return bad("Value must be at least 1"),
            "retention.ms" | "retention.bytes" if num() < -1 => return bad("Value must be at least -1"),
            "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" if num() < 0 => {
                return bad("Value must be at least 0")
            }
            _ => {}
        }
    }
    // Kafka's LogConfig.validateValues cross-check.
    let long = |name: &str| {
        let def = topic_def(name).expect("known topic config");
        describe_topic_config(broker, overrides, def)
            .value
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(i64::MAX)
    };
    let (min_lag, max_lag) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms"));
    if min_lag > max_lag {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn synonym_chain_and_sources() {
        let mut values = BTreeMap::new();
        values.insert("log.retention.hours".to_string(), "1".to_string());
        let broker = BrokerConfig::from_values(values).unwrap();
        let def = topic_def("retention.ms").unwrap();
        let d = describe_topic_config(&broker, &BTreeMap::new(), def);
        assert_eq!(d.value.as_deref(), Some("3600000"));
        assert_eq!(d.source, ConfigSource::StaticBroker);
        let d = describe_topic_config(&broker, &overrides(&[("retention.ms", "5")]), def);
        assert_eq!(d.value.as_deref(), Some("5"));
        assert_eq!(d.source, ConfigSource::DynamicTopic);
        // The override, then log.retention.hours as set; log.retention.ms has no default so it is not listed.
        assert_eq!(d.synonyms.len(), 2);
        assert_eq!(d.synonyms[1].0, "log.retention.hours");
        let t = TopicConfig::resolve(&broker, &overrides(&[("segment.bytes", "2000000")]));
        assert_eq!(t.log.segment_bytes, 2000000);
        assert_eq!(t.log.retention_ms, 3_600_000);
    }

    #[test]
    fn dynamic_broker_layers_take_precedence_key_by_key() {
        let mut values = BTreeMap::new();
        values.insert("log.retention.hours".to_string(), "1".to_string());
        let broker = BrokerConfig::from_values(values).unwrap();
        let def = topic_def("retention.ms").unwrap();
        // A dynamic default for `log.retention.minutes` beats the static hours (minutes come first in Kafka's chain),
        // and a dynamic per-broker `log.retention.ms` beats both.
        let dynamic = broker.with_dynamic(&BTreeMap::new(), &overrides(&[("log.retention.minutes", "2")]));
        let d = describe_topic_config(&dynamic, &BTreeMap::new(), def);
        assert_eq!((d.value.as_deref(), d.source), (Some("120000"), ConfigSource::DynamicDefaultBroker));
        let dynamic = broker
            .with_dynamic(&overrides(&[("log.retention.ms", "7")]), &overrides(&[("log.retention.minutes", "2")]));
        let d = describe_topic_config(&dynamic, &BTreeMap::new(), def);
        assert_eq!((d.value.as_deref(), d.source), (Some("7"), ConfigSource::DynamicBroker));
        let names: Vec<(&str, ConfigSource)> = d.synonyms.iter().map(|(n, _, s)| (n.as_str(), *s)).collect();
        assert_eq!(
            names,
            vec![
                ("log.retention.ms", ConfigSource::DynamicBroker),
                ("log.retention.minutes", ConfigSource::DynamicDefaultBroker),
                ("log.retention.hours", ConfigSource::StaticBroker),
            ]
        );
        assert_eq!(TopicConfig::resolve(&dynamic, &BTreeMap::new()).log.retention_ms, 7);
    }

    #[test]
    fn validation() {
        let b = BrokerConfig::default();
        assert!(validate_topic_configs(&b, &overrides(&[("retention.ms", "100")])).is_ok());
        assert!(validate_topic_configs(&b, &overrides(&[("nope", "1")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("retention.ms", "abc")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("cleanup.policy", "bogus")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("segment.bytes", "1000")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("compression.zstd.level", "3")])).is_ok());
        assert!(validate_topic_configs(&b, &overrides(&[("message.timestamp.type", "LogAppendTime")])).is_ok());
        assert!(validate_topic_configs(&b, &overrides(&[("cleanup.policy", "compact,delete")])).is_ok());
        assert!(validate_topic_configs(&b, &overrides(&[("cleanup.policy", "")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("min.cleanable.dirty.ratio", "1.5")])).is_err());
        assert!(validate_topic_configs(&b, &overrides(&[("max.compaction.lag.ms", "0")])).is_err());
        let conflict = overrides(&[("min.compaction.lag.ms", "10"), ("max.compaction.lag.ms", "5")]);
        assert!(validate_topic_configs(&b, &conflict).is_err());
        let t = TopicConfig::resolve(
            &b,
            &overrides(&[("cleanup.policy", "compact"), ("min.cleanable.dirty.ratio", "0.1")]),
        );
        assert_eq!(t.log.cleanup_policy, CleanupPolicy::COMPACT);
        assert_eq!(t.log.min_cleanable_dirty_ratio, 0.1);
    }
}
