//! CreateTopics: validated by the controller rules, committed to the metadata log, partitions opened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::CommitError;
use crate::config::defs::topic_defs;
use crate::config::describe_topic_config;
use crate::controller::{
    excessive_partitions, plan_create_topic, requested_partitions, ApiError, NewTopic, MAX_PARTITIONS_PER_REQUEST,
};
use crate::dispatch::ConnectionContext;

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.broker.clone();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *counts.entry(t.name.0.to_string()).or_default() += 1;
    }
    let validate_only = req.validate_only;
    // As Kafka's controller: a request over the partition limit is refused whole, validate_only or not.
    let too_many =
        requested_partitions(&broker.config, req.topics.iter().map(|t| (t.num_partitions, t.assignments.len())))
            > MAX_PARTITIONS_PER_REQUEST;
    // Kafka answers once per distinct name; a duplicated name gets one INVALID_REQUEST result.
    let mut seen = std::collections::HashSet::new();
    let topics: Vec<_> = req.topics.into_iter().filter(|t| seen.insert(t.name.0.to_string())).collect();
    let results = tokio::task::spawn_blocking(move || {
        topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let result = if too_many {
                    Err(excessive_partitions())
                } else if counts.get(&name).copied().unwrap_or(0) > 1 {
                    Err(ApiError::new(ResponseError::InvalidRequest, "Duplicate topic name."))
                } else {
                    let mut configs = BTreeMap::new();
                    let mut null_config = None;
                    for c in &t.configs {
                        match &c.value {
                            Some(v) => {
                                configs.insert(c.name.to_string(), v.to_string());
                            }
                            None => null_config = Some(c.name.to_string()),
                        }
                    }
                    let new = NewTopic {
                        name: &name,
                        num_partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        assignments: t
                            .assignments
                            .iter()
                            .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect()))
                            .collect(),
                        configs,
                    };
                    if let Some(c) = null_config {
                        Err(ApiError::new(
                            ResponseError::InvalidConfig,
                            format!("Null value not supported for topic configs: {c}"),
                        ))
                    } else {
                        broker
                            .commit(|image| {
                                let planned = plan_create_topic(image, &broker.config, &new)?;
                                let records = if validate_only { Vec::new() } else { planned.records.clone() };
                                Ok((records, planned))
                            })
                            .map_err(|e| match e {
                                CommitError::Rejected(e) => e,
                                CommitError::Io(e) => ApiError::new(ResponseError::KafkaStorageError, e.to_string()),
                            })
                            .map(|planned| (planned, new.configs.clone()))
                    }
                };
                let mut r = CreatableTopicResult::default().with_name(t.name.clone());
                match result {
                    Ok((planned, configs)) => {
                        if !validate_only {
                            tracing::info!(topic = %name, partitions = planned.num_partitions, "created topic");
                        }
                        r.error_message = None;
                        if version >= 5 {
                            r.num_partitions = planned.num_partitions;
                            r.replication_factor = planned.replication_factor;
                            let effective = broker.effective_config();
                            r.configs = Some(
                                topic_defs()
                                    .map(|def| {
                                        let d = describe_topic_config(&effective, &configs, def);
                                        CreatableTopicConfigs::default()
                                            .with_name(StrBytes::from_static_str(def.name))
                                            .with_value(d.value.map(StrBytes::from_string))
                                            .with_read_only(false)
                                            .with_config_source(d.source as i8)
                                            .with_is_sensitive(false)
                                    })
                                    .collect(),
                            );
                        }
                        if version >= 7 {
                            r.topic_id = planned.topic_id;
                        }
                    }
                    Err(e) => {
                        r.error_code = e.error.code();
                        r.error_message = Some(StrBytes::from_string(e.message));
                        if version >= 5 {
                            r.configs = None;
                        }
                    }
                }
                r
            })
            .collect::<Vec<_>>()
    })
    .await;
    match results {
        Ok(topics) => CreateTopicsResponse::default().with_topics(topics),
        Err(e) => {
            tracing::error!(error = %e, "create topics task failed");
            CreateTopicsResponse::default()
        }
    }
}
