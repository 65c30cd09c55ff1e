//! The admin client: topics, partitions, configs, cluster description and offsets. Results are per topic where the
//! protocol answers per topic, so one bad name does not hide the others.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{BrokerInfo, Cluster, TopicInfo};
use crate::config::ClientConfig;
use crate::error::{check, Error, Result};
use crate::offsets::{self, OffsetAndTimestamp};
use crate::record::TopicPartition;

pub use crate::cluster::PartitionInfo;

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> Self {
        NewTopic { name: name.into(), partitions, replication_factor, configs: Vec::new() }
    }
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic,
    Broker,
}

impl ResourceType {
    fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Broker => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigResource {
    pub kind: ResourceType,
    /// Topic name, or broker id as a string ("" for the cluster-wide broker default).
    pub name: String,
}

impl ConfigResource {
    pub fn topic(name: impl Into<String>) -> Self {
        ConfigResource { kind: ResourceType::Topic, name: name.into() }
    }
    pub fn broker(id: impl ToString) -> Self {
        ConfigResource { kind: ResourceType::Broker, name: id.to_string() }
    }
}

/// Where a config value comes from (DescribeConfigs' config_source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
    Other(i8),
}

impl ConfigSource {
    fn from_code(c: i8) -> Self {
        match c {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            c => ConfigSource::Other(c),
        }
    }
    /// Kafka's names, as kafka-configs.sh prints them.
    pub fn name(self) -> &'static str {
        match self {
            ConfigSource::DynamicTopic => "DYNAMIC_TOPIC_CONFIG",
            ConfigSource::DynamicBroker => "DYNAMIC_BROKER_CONFIG",
            ConfigSource::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG",
            ConfigSource::StaticBroker => "STATIC_BROKER_CONFIG",
            ConfigSource::Default => "DEFAULT_CONFIG",
            ConfigSource::Other(_) => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
}

/// An IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    Set(String, String),
    Delete(String),
}

#[derive(Debug, Clone)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// A topic as listed: name, internal flag and partition count.
#[derive(Debug, Clone)]
pub struct TopicListing {
    pub name: String,
    pub internal: bool,
    pub partitions: usize,
}

pub struct Admin {
    cluster: Arc<Cluster>,
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn timeout_ms(c: &ClientConfig) -> i32 {
    c.request_timeout.as_millis().min(i32::MAX as u128) as i32
}

impl Admin {
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub async fn new(config: ClientConfig) -> Result<Admin> {
        let cluster = Cluster::new(config)?;
        cluster.fetch_metadata(Some(&[]), false).await?;
        Ok(Admin { cluster })
    }

    /// Creates topics; one result per topic, in request order.
    pub async fn create_topics(&self, topics: &[NewTopic], validate_only: bool) -> Result<Vec<(String, Result<()>)>> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(timeout_ms(self.cluster.config()))
            .with_validate_only(validate_only)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(name(&t.name))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let conn = self.cluster.controller_connection().await?;
        let resp = conn.call(&req).await?;
        let mut by_name: HashMap<String, Result<()>> = resp
            .topics
            .iter()
            .map(|t| {
                let n = t.name.0.to_string();
                let r = check(t.error_code, || format!("create topic '{n}'"), t.error_message.as_deref());
                (n, r)
            })
            .collect();
        Ok(topics
            .iter()
            .map(|t| {
                let r = by_name
                    .remove(&t.name)
                    .unwrap_or_else(|| Err(Error::Protocol(format!("no result for topic '{}'", t.name))));
                (t.name.clone(), r)
            })
            .collect())
    }

    /// Creates one topic, as an error if it fails.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        self.create_topics(&[topic], false).await?.pop().map_or(Ok(()), |(_, r)| r)
    }

    pub async fn delete_topics(&self, topics: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(timeout_ms(self.cluster.config()))
            .with_topic_names(topics.iter().map(|t| name(t)).collect())
            .with_topics(topics.iter().map(|t| DeleteTopicState::default().with_name(Some(name(t)))).collect());
        let conn = self.cluster.controller_connection().await?;
        let resp = conn.call(&req).await?;
        let mut by_name: HashMap<String, Result<()>> = resp
            .responses
            .iter()
            .filter_map(|t| {
                let n = t.name.as_ref()?.0.to_string();
                let r = match t.error_code {
                    3 => Err(Error::UnknownTopic(n.clone())),
                    c => check(c, || format!("delete topic '{n}'"), t.error_message.as_deref()),
                };
                Some((n, r))
            })
            .collect();
        for t in topics {
            self.cluster.invalidate(t);
        }
        Ok(topics
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    by_name.remove(t).unwrap_or_else(|| Err(Error::Protocol(format!("no result for topic '{t}'")))),
                )
            })
            .collect())
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.delete_topics(&[topic.to_string()]).await?.pop().map_or(Ok(()), |(_, r)| r)
    }

    /// All topics, sorted by name (internal ones only when `include_internal`).
    pub async fn list_topics(&self, include_internal: bool) -> Result<Vec<TopicListing>> {
        let resp = self.cluster.fetch_metadata(None, false).await?;
        let mut out: Vec<TopicListing> = resp
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && (include_internal || !t.is_internal))
            .filter_map(|t| {
                Some(TopicListing {
                    name: t.name.as_ref()?.0.to_string(),
                    internal: t.is_internal,
                    partitions: t.partitions.len(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Describes topics; an unknown one is an `Error::UnknownTopic`.
    pub async fn describe_topics(&self, topics: &[String]) -> Result<Vec<TopicInfo>> {
        let resp = self.cluster.fetch_metadata(Some(topics), false).await?;
        let mut out = Vec::new();
        for t in topics {
            let r = resp.topics.iter().find(|x| x.name.as_ref().is_some_and(|n| n.0.as_str() == t));
            match r {
                Some(x) if x.error_code == 0 => {}
                Some(x) if x.error_code == 3 => return Err(Error::UnknownTopic(t.clone())),
                Some(x) => return Err(Error::kafka(x.error_code, format!("describe topic '{t}'"), None)),
                None => return Err(Error::UnknownTopic(t.clone())),
            }
            match self.cluster.cached_topic(t) {
                Some(info) => out.push((*info).clone()),
                None => return Err(Error::UnknownTopic(t.clone())),
            }
        }
        Ok(out)
    }

    /// Raises the partition count of `topic` to `total`.
    pub async fn create_partitions(&self, topic: &str, total: i32, validate_only: bool) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms(self.cluster.config()))
            .with_validate_only(validate_only)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name(topic))
                .with_count(total)
                .with_assignments(None)]);
        let conn = self.cluster.controller_connection().await?;
        let resp = conn.call(&req).await?;
        self.cluster.invalidate(topic);
        let r = resp.results.first().ok_or_else(|| Error::Protocol("empty CreatePartitions response".into()))?;
        match r.error_code {
            3 => Err(Error::UnknownTopic(topic.to_string())),
            c => check(c, || format!("create partitions for '{topic}'"), r.error_message.as_deref()),
        }
    }

    /// Every config of a resource (or only `keys`), with its source.
    pub async fn describe_configs(
        &self,
        resource: &ConfigResource,
        keys: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>> {
        let req = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource.kind.code())
            .with_resource_name(StrBytes::from_string(resource.name.clone()))
            .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| StrBytes::from_string(k.clone())).collect()))]);
        let conn = self.resource_connection(resource).await?;
        let resp = conn.call(&req).await?;
        let r = resp.results.first().ok_or_else(|| Error::Protocol("empty DescribeConfigs response".into()))?;
        if r.error_code == 3 {
            return Err(Error::UnknownTopic(resource.name.clone()));
        }
        check(
            r.error_code,
            || format!("describe configs of {:?} '{}'", resource.kind, resource.name),
            r.error_message.as_deref(),
        )?;
        let mut out: Vec<ConfigEntry> = r
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: ConfigSource::from_code(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Broker configs go to that broker; everything else to any broker.
    async fn resource_connection(&self, r: &ConfigResource) -> Result<Arc<crate::connection::Connection>> {
        if r.kind == ResourceType::Broker {
            if let Ok(id) = r.name.parse::<i32>() {
                if self.cluster.brokers().iter().any(|b| b.id == id) {
                    return self.cluster.connection(id).await;
                }
            }
        }
        self.cluster.any_connection().await
    }

    /// Changes configs with IncrementalAlterConfigs (set or delete single keys, others untouched).
    pub async fn incremental_alter_configs(
        &self,
        resource: &ConfigResource,
        ops: &[AlterOp],
        validate_only: bool,
    ) -> Result<()> {
        use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let configs = ops
            .iter()
            .map(|op| match op {
                AlterOp::Set(k, v) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone()))),
                AlterOp::Delete(k) => {
                    AlterableConfig::default().with_name(StrBytes::from_string(k.clone())).with_config_operation(1)
                }
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource.kind.code())
                .with_resource_name(StrBytes::from_string(resource.name.clone()))
                .with_configs(configs),
        ]);
        let conn = self.resource_connection(resource).await?;
        let resp = conn.call(&req).await?;
        let r =
            resp.responses.first().ok_or_else(|| Error::Protocol("empty IncrementalAlterConfigs response".into()))?;
        check(
            r.error_code,
            || format!("alter configs of {:?} '{}'", resource.kind, resource.name),
            r.error_message.as_deref(),
        )
    }

    /// Replaces the whole dynamic config of a resource with AlterConfigs (the legacy API: unlisted keys are reset).
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<()> {
        use alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let req = AlterConfigsRequest::default().with_validate_only(validate_only).with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource.kind.code())
                .with_resource_name(StrBytes::from_string(resource.name.clone()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                ),
        ]);
        let conn = self.resource_connection(resource).await?;
        let resp = conn.call(&req).await?;
        let r = resp.responses.first().ok_or_else(|| Error::Protocol("empty AlterConfigs response".into()))?;
        check(
            r.error_code,
            || format!("alter configs of {:?} '{}'", resource.kind, resource.name),
            r.error_message.as_deref(),
        )
    }

    /// Cluster id, controller and brokers: DescribeCluster where the broker has it, Metadata otherwise.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let conn = self.cluster.any_connection().await?;
        if conn.supports(ApiKey::DescribeCluster) {
            let resp = conn.call(&DescribeClusterRequest::default().with_endpoint_type(1)).await?;
            check(resp.error_code, || "describe cluster".into(), resp.error_message.as_deref())?;
            let mut brokers: Vec<BrokerInfo> = resp
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(|r| r.to_string()),
                })
                .collect();
            brokers.sort_by_key(|b| b.id);
            return Ok(ClusterDescription {
                cluster_id: Some(resp.cluster_id.to_string()),
                controller_id: resp.controller_id.0,
                brokers,
            });
        }
        self.cluster.fetch_metadata(Some(&[]), false).await?;
        Ok(ClusterDescription {
            cluster_id: self.cluster.cluster_id(),
            controller_id: self.cluster.controller_id(),
            brokers: self.cluster.brokers(),
        })
    }

    /// Offsets by timestamp per partition (`offsets::EARLIEST`, `LATEST`, `MAX_TIMESTAMP` or a time in ms).
    pub async fn list_offsets(
        &self,
        queries: &[(TopicPartition, i64)],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        offsets::list_offsets(&self.cluster, queries, false).await
    }
}
