//! Config changes (AlterConfigs and IncrementalAlterConfigs) decided the way Kafka decides them: the operations are
//! applied to the resource's current dynamic configs (ConfigAdminManager.prepareIncrementalConfigs), the result is
//! validated (topic: ControllerConfigurationValidator; broker: DynamicBrokerConfig), and the difference becomes
//! metadata records, so the change is durable in the metadata log and every partition follows it live.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::defs::{broker_def, find, is_dynamic_broker_config, topic_def, validate_value, ConfigType};
use super::{validate_topic_configs, BrokerConfig};
use crate::controller::ApiError;
use crate::metadata::{MetadataImage, MetadataRecord};

/// DescribeConfigs / AlterConfigs resource types.
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;
pub const BROKER_LOGGER: i8 = 8;

/// IncrementalAlterConfigs operation types (AlterConfigOp.OpType ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpType {
    Set,
    Delete,
    Append,
    Subtract,
}

impl OpType {
    pub fn from_id(id: i8) -> Option<OpType> {
        match id {
            0 => Some(OpType::Set),
            1 => Some(OpType::Delete),
            2 => Some(OpType::Append),
            3 => Some(OpType::Subtract),
            _ => None,
        }
    }
}

/// One requested change: `op` is `None` for an id Kafka does not know.
#[derive(Clone, Debug)]
pub struct ConfigOp {
    pub name: String,
    pub op: Option<OpType>,
    pub value: Option<String>,
}

fn invalid_request(m: impl Into<String>) -> ApiError {
    ApiError::new(ResponseError::InvalidRequest, m)
}

fn invalid_config(m: impl Into<String>) -> ApiError {
    ApiError::new(ResponseError::InvalidConfig, m)
}

/// The request-level checks Kafka makes before looking at values: no duplicate keys, no null values except for
/// DELETE (`legacy`: AlterConfigs, where every value must be non-null), and known operation ids.
pub fn preprocess(ops: &[ConfigOp], legacy: bool) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    if !ops.iter().all(|o| seen.insert(o.name.as_str())) {
        return Err(invalid_request("Error due to duplicate config keys"));
    }
    let nulls: Vec<&str> = ops
        .iter()
        .filter(|o| o.value.is_none() && (legacy || o.op != Some(OpType::Delete)))
        .map(|o| o.name.as_str())
        .collect();
    if !nulls.is_empty() {
        return Err(invalid_request(format!("Null value not supported for : {}", nulls.join(", "))));
    }
    if let Some(o) = ops.iter().find(|o| o.op.is_none()) {
        return Err(invalid_request(format!("Unknown operation type for config {}", o.name)));
    }
    Ok(())
}

/// Applies incremental operations to a resource's current dynamic configs (Kafka's prepareIncrementalConfigs):
/// APPEND and SUBTRACT are allowed only on LIST configs and start from the config's default when it is unset.
pub fn apply_incremental(
    current: &BTreeMap<String, String>,
    ops: &[ConfigOp],
    resource_type: i8,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = current.clone();
    for o in ops {
        let value = o.value.clone().unwrap_or_default();
        match o.op {
            Some(OpType::Set) => {
                out.insert(o.name.clone(), value);
            }
            Some(OpType::Delete) => {
                out.remove(&o.name);
            }
            Some(op @ (OpType::Append | OpType::Subtract)) => {
                let def = match resource_type {
                    TOPIC => topic_def(&o.name),
                    _ => broker_def(&o.name),
                }
                .ok_or_else(|| invalid_config(format!("Unknown config name: {}", o.name)))?;
                let verb = if op == OpType::Append { "append" } else { "subtract" };
                if def.config_type != ConfigType::List {
                    return Err(invalid_config(format!(
                        "Config value {verb} is not allowed for config key: {}",
                        o.name
                    )));
                }
                let old: Vec<String> = out
                    .get(&o.name)
                    .map(String::as_str)
                    .or(def.default)
                    .unwrap_or("")
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let given: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
                let new: Vec<String> = if op == OpType::Append {
                    let mut v = old.clone();
                    v.extend(given.into_iter().filter(|g| !g.is_empty() && !old.contains(g)));
                    v
                } else {
                    old.into_iter().filter(|x| !given.contains(x)).collect()
                };
                out.insert(o.name.clone(), new.join(","));
            }
            None => return Err(invalid_request(format!("Unknown operation type for config {}", o.name))),
        }
    }
    Ok(out)
}

/// Which broker resource a request names: the cluster default ("") or this node.
fn check_broker_resource(broker: &BrokerConfig, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Ok(());
    }
    let id: i32 =
        name.parse().map_err(|_| invalid_request(format!("Node id must be an integer, but it is: {name}")))?;
    if id != broker.node_id {
        return Err(invalid_request(format!("Unexpected broker id, expected {}, but received {name}", broker.node_id)));
    }
    Ok(())
}

/// Validates a resource's complete new set of dynamic configs and returns the records that turn the current set
/// into it. `broker` is the static broker config (the image supplies the dynamic layers).
pub fn plan_config_change(
    image: &MetadataImage,
    broker: &BrokerConfig,
    resource_type: i8,
    resource_name: &str,
    new: &BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    match resource_type {
        TOPIC => {
            let topic = image.topic(resource_name).ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("The topic '{resource_name}' does not exist."),
                )
            })?;
            let effective = crate::broker::effective_config(broker, image);
            validate_topic_configs(&effective, new).map_err(invalid_config)?;
            Ok(diff(&topic.configs, new)
                .map(|(name, value)| MetadataRecord::ConfigRecord { topic_id: topic.topic_id, name, value })
                .collect())
        }
        BROKER => {
            check_broker_resource(broker, resource_name)?;
            // Broker validation failures are INVALID_REQUEST in Kafka (KAFKA-13609 keeps it for compatibility).
            let current = image.broker_config(resource_name);
            let read_only: Vec<&str> = new
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .filter(|k| find(k).is_some() && !is_dynamic_broker_config(k))
                .collect();
            if !read_only.is_empty() {
                return Err(invalid_request(format!(
                    "Cannot update these configs dynamically: {}",
                    read_only.join(", ")
                )));
            }
            for (k, v) in new {
                let def = broker_def(k).ok_or_else(|| invalid_request(format!("Unknown broker config: {k}")))?;
                validate_value(def, v).map_err(invalid_request)?;
                check_broker_value(k, v).map_err(invalid_request)?;
            }
            let mut candidate = image.clone();
            if new.is_empty() {
                candidate.broker_configs.remove(resource_name);
            } else {
                candidate.broker_configs.insert(resource_name.to_string(), new.clone());
            }
            // The broker values are the defaults of every topic config: they must make valid topic configs.
            let effective = crate::broker::effective_config(broker, &candidate);
            validate_topic_configs(&effective, &BTreeMap::new()).map_err(invalid_request)?;
            Ok(diff(current, new)
                .map(|(name, value)| MetadataRecord::BrokerConfigRecord {
                    resource: resource_name.to_string(),
                    name,
                    value,
                })
                .collect())
        }
        BROKER_LOGGER => Err(invalid_request("BROKER_LOGGER resources are not supported by this Strom version")),
        other => Err(invalid_request(format!("Unknown resource type {other}"))),
    }
}

/// The current dynamic configs of a resource, or why it cannot be altered.
fn current_configs(image: &MetadataImage, resource_type: i8, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match resource_type {
        TOPIC => image.topic(name).map(|t| t.configs.clone()).ok_or_else(|| {
            ApiError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."))
        }),
        BROKER => Ok(image.broker_config(name).clone()),
        BROKER_LOGGER => Err(invalid_request("BROKER_LOGGER resources are not supported by this Strom version")),
        other => Err(invalid_request(format!("Unknown resource type {other}"))),
    }
}

/// Decides and commits one resource's change: `change` maps the current dynamic configs (read under the metadata
/// lock, so concurrent alters cannot lose each other's updates) to the new ones. With `validate_only` nothing is
/// written. Blocking (metadata log fsync).
pub fn alter_resource(
    broker: &crate::Broker,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError>,
) -> Result<(), ApiError> {
    let result = broker.commit(|image| {
        let current = current_configs(image, resource_type, name)?;
        let new = change(&current)?;
        let records = plan_config_change(image, &broker.config, resource_type, name, &new)?;
        Ok::<_, ApiError>((if validate_only { Vec::new() } else { records }, ()))
    });
    match result {
        Ok(()) => {
            if !validate_only {
                tracing::info!(resource_type, resource = name, "altered configs");
            }
            Ok(())
        }
        Err(crate::broker::CommitError::Rejected(e)) => Err(e),
        Err(crate::broker::CommitError::Io(e)) => Err(ApiError::new(ResponseError::KafkaStorageError, e.to_string())),
    }
}

/// One resource of an AlterConfigs / IncrementalAlterConfigs request.
pub struct ResourceChange {
    pub resource_type: i8,
    pub name: String,
    pub ops: Vec<ConfigOp>,
}

/// Both config APIs: each resource is checked and committed on its own (one failing resource leaves the others
/// applied, as in Kafka). `legacy` (AlterConfigs) replaces the resource's whole dynamic config set with the given
/// SETs; otherwise the operations apply incrementally.
pub fn alter_resources(
    broker: &crate::Broker,
    resources: &[ResourceChange],
    legacy: bool,
    validate_only: bool,
) -> Vec<Result<(), ApiError>> {
    let dups = duplicate_resources(resources.iter().map(|r| (r.resource_type, r.name.as_str())));
    resources
        .iter()
        .map(|res| {
            if dups.contains(&(res.resource_type, res.name.clone())) {
                return Err(invalid_request("Each resource must appear at most once."));
            }
            preprocess(&res.ops, legacy)?;
            alter_resource(broker, res.resource_type, &res.name, validate_only, |current| {
                if legacy {
                    Ok(res.ops.iter().map(|o| (o.name.clone(), o.value.clone().unwrap_or_default())).collect())
                } else {
                    apply_incremental(current, &res.ops, res.resource_type)
                }
            })
        })
        .collect()
}

/// `alter_resources` on a blocking thread (it commits to the metadata log), as each resource's error code and
/// message for the response.
pub async fn alter_resources_outcome(
    broker: std::sync::Arc<crate::Broker>,
    resources: Vec<ResourceChange>,
    legacy: bool,
    validate_only: bool,
) -> Vec<(i16, Option<kafka_protocol::protocol::StrBytes>)> {
    let n = resources.len();
    match tokio::task::spawn_blocking(move || alter_resources(&broker, &resources, legacy, validate_only)).await {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(()) => (0, None),
                Err(e) => (e.error.code(), Some(kafka_protocol::protocol::StrBytes::from_string(e.message))),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "config change task failed");
            vec![(ResponseError::UnknownServerError.code(), None); n]
        }
    }
}

/// Keys of resources that appear more than once in one request: Kafka answers each of them with INVALID_REQUEST.
fn duplicate_resources<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> std::collections::HashSet<(i8, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut dups = std::collections::HashSet::new();
    for (t, n) in resources {
        if !seen.insert((t, n.to_string())) {
            dups.insert((t, n.to_string()));
        }
    }
    dups
}

/// Range checks for broker-only settings (Kafka's ConfigDef validators for them).
fn check_broker_value(key: &str, value: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("Invalid value {value} for configuration {key}: {why}"));
    let num = value.trim().parse::<f64>().ok();
    let at_least = |min: f64| num.is_some_and(|n| n >= min);
    match key {
        "log.cleaner.threads" if !at_least(0.0) => bad("Value must be at least 0"),
        "producer.id.expiration.ms" if !at_least(1.0) => bad("Value must be at least 1"),
        "log.cleaner.io.max.bytes.per.second" if !num.is_some_and(|n| n > 0.0) => bad("Value must be greater than 0"),
        "log.cleaner.dedupe.buffer.size" if !at_least(1024.0 * 1024.0) => bad("Value must be at least 1048576"),
        "log.cleaner.io.buffer.size" if !at_least(1024.0) => bad("Value must be at least 1024"),
        "log.cleaner.backoff.ms" if !at_least(0.0) => bad("Value must be at least 0"),
        "max.connections" | "max.connections.per.ip" if !at_least(0.0) => bad("Value must be at least 0"),
        "max.connections.per.ip.overrides" => crate::config::check_ip_overrides(value),
        _ => Ok(()),
    }
}

/// The changes between two config maps: `(name, Some(value))` to set, `(name, None)` to remove.
fn diff<'a>(
    old: &'a BTreeMap<String, String>,
    new: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = (String, Option<String>)> + 'a {
    let removed = old.keys().filter(|k| !new.contains_key(*k)).map(|k| (k.clone(), None));
    let set = new.iter().filter(|(k, v)| old.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), Some(v.clone())));
    removed.chain(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, op: i8, value: Option<&str>) -> ConfigOp {
        ConfigOp { name: name.into(), op: OpType::from_id(op), value: value.map(str::to_string) }
    }

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn preprocess_rejects_duplicates_nulls_and_unknown_ops() {
        let e = preprocess(&[op("a", 0, Some("1")), op("a", 1, None)], false).unwrap_err();
        assert_eq!(e.error, ResponseError::InvalidRequest);
        assert!(preprocess(&[op("a", 1, None)], false).is_ok());
        assert_eq!(preprocess(&[op("a", 0, None)], false).unwrap_err().error, ResponseError::InvalidRequest);
        assert_eq!(preprocess(&[op("a", 9, Some("x"))], false).unwrap_err().error, ResponseError::InvalidRequest);
    }

    #[test]
    fn incremental_ops_follow_kafka() {
        let cur = map(&[("retention.ms", "5"), ("segment.bytes", "1000")]);
        let out = apply_incremental(
            &cur,
            &[
                op("retention.ms", 1, None),
                op("max.message.bytes", 0, Some("10")),
                op("cleanup.policy", 2, Some("compact")),
            ],
            TOPIC,
        )
        .unwrap();
        assert_eq!(
            out,
            map(&[("segment.bytes", "1000"), ("max.message.bytes", "10"), ("cleanup.policy", "delete,compact")])
        );
        // SUBTRACT starts from the current value; APPEND does not duplicate.
        let out = apply_incremental(&out, &[op("cleanup.policy", 3, Some("delete"))], TOPIC).unwrap();
        assert_eq!(out.get("cleanup.policy").map(String::as_str), Some("compact"));
        let out = apply_incremental(&out, &[op("cleanup.policy", 2, Some("compact"))], TOPIC).unwrap();
        assert_eq!(out.get("cleanup.policy").map(String::as_str), Some("compact"));
        // APPEND / SUBTRACT on a non-list config.
        let e = apply_incremental(&cur, &[op("retention.ms", 2, Some("1"))], TOPIC).unwrap_err();
        assert_eq!(e.error, ResponseError::InvalidConfig);
        let e = apply_incremental(&cur, &[op("nope", 3, Some("1"))], TOPIC).unwrap_err();
        assert_eq!(e.error, ResponseError::InvalidConfig);
    }

    #[test]
    fn broker_changes_are_validated() {
        let b = BrokerConfig::default();
        let img = MetadataImage::default();
        let recs = plan_config_change(&img, &b, BROKER, "", &map(&[("log.retention.ms", "1000")])).unwrap();
        assert_eq!(recs.len(), 1);
        let recs = plan_config_change(&img, &b, BROKER, "1", &map(&[("log.cleanup.policy", "compact")])).unwrap();
        assert_eq!(recs.len(), 1);
        for (k, v) in [("node.id", "7"), ("log.retention.ms", "x"), ("log.cleanup.policy", "bogus"), ("no.such", "1")] {
            let e = plan_config_change(&img, &b, BROKER, "", &map(&[(k, v)])).unwrap_err();
            assert_eq!(e.error, ResponseError::InvalidRequest, "{k}={v}");
        }
        let e = plan_config_change(&img, &b, BROKER, "2", &map(&[])).unwrap_err();
        assert_eq!(e.error, ResponseError::InvalidRequest);
        let e = plan_config_change(&img, &b, TOPIC, "missing", &map(&[])).unwrap_err();
        assert_eq!(e.error, ResponseError::UnknownTopicOrPartition);
    }
}
