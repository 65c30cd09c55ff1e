//! Metadata: brokers, topics and partitions; creates unknown topics when `auto.create.topics.enable` allows it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::broker::Broker;
use crate::controller::{plan_create_topic, ApiError, NewTopic};
use crate::dispatch::ConnectionContext;
use crate::metadata::{MetadataImage, TopicImage};
use crate::topic_name::{self, GROUP_METADATA_TOPIC_NAME};

enum Wanted {
    Name(String),
    Id(Uuid),
}

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: MetadataRequest) -> MetadataResponse {
    let broker = &ctx.broker;
    let mut image = broker.image();
    // v0: an empty list means all topics; v1+: null means all topics.
    let wanted: Option<Vec<Wanted>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| match t.name {
                    Some(n) => Wanted::Name(n.to_string()),
                    None => Wanted::Id(t.topic_id),
                })
                .collect(),
        ),
    };
    let auto_create = broker.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let mut create_errors: BTreeMap<String, ApiError> = BTreeMap::new();
    if auto_create {
        let missing: Vec<String> = wanted
            .iter()
            .flatten()
            .filter_map(|w| match w {
                Wanted::Name(n) if image.topic(n).is_none() && topic_name::validate(n).is_ok() => Some(n.clone()),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let b = broker.clone();
            let result = tokio::task::spawn_blocking(move || auto_create_topics(&b, &missing)).await;
            match result {
                Ok(errors) => create_errors = errors,
                Err(e) => tracing::error!(error = %e, "auto-creation task failed"),
            }
            image = broker.image();
        }
    }

    let mut topics = Vec::new();
    match wanted {
        None => {
            for t in image.topics.values() {
                topics.push(describe_topic(version, t, broker));
            }
        }
        Some(list) => {
            for w in list {
                topics.push(match w {
                    Wanted::Name(n) => match image.topic(&n) {
                        Some(t) => describe_topic(version, t, broker),
                        None => {
                            let error = match (topic_name::validate(&n), create_errors.get(&n)) {
                                (Err(_), _) => ResponseError::InvalidTopicException,
                                (Ok(()), Some(e)) => e.error,
                                (Ok(()), None) => ResponseError::UnknownTopicOrPartition,
                            };
                            MetadataResponseTopic::default()
                                .with_error_code(error.code())
                                .with_is_internal(topic_name::is_internal(&n))
                                .with_name(Some(TopicName(StrBytes::from_string(n))))
                        }
                    },
                    Wanted::Id(id) => match image.topic_by_id(&id) {
                        Some(t) => describe_topic(version, t, broker),
                        None => MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_name(None)
                            .with_topic_id(id),
                    },
                });
            }
        }
    }
    let node_id = broker.config.node_id;
    let me = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node_id))
        .with_host(StrBytes::from_string(ctx.advertised.host.clone()))
        .with_port(ctx.advertised.port as i32)
        .with_rack(broker.config.rack.clone().map(StrBytes::from_string));
    MetadataResponse::default()
        .with_brokers(vec![me])
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(node_id))
        .with_topics(topics)
}

fn auto_create_topics(broker: &Broker, names: &[String]) -> BTreeMap<String, ApiError> {
    let mut errors = BTreeMap::new();
    for name in names {
        if name == GROUP_METADATA_TOPIC_NAME {
            // As Kafka's AutoTopicCreationManager: created as the coordinator creates it (its partition count,
            // compacted), never as a plain topic.
            if let Err(e) = broker.groups.ensure_topic(broker) {
                errors.insert(name.clone(), e);
            }
            continue;
        }
        let result = broker.commit(|image: &MetadataImage| {
            if image.topic(name).is_some() {
                return Ok((Vec::new(), ())); // created concurrently by another request
            }
            let planned = plan_create_topic(
                image,
                &broker.config,
                &NewTopic {
                    name,
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: Vec::new(),
                    configs: BTreeMap::new(),
                },
            )?;
            Ok((planned.records, ()))
        });
        match result {
            Ok(()) => tracing::info!(topic = %name, partitions = broker.config.num_partitions, "auto-created topic"),
            Err(crate::broker::CommitError::Rejected(e)) => {
                errors.insert(name.clone(), e);
            }
            Err(e) => {
                tracing::error!(topic = %name, error = %e, "auto-creating topic failed");
                errors.insert(name.clone(), ApiError::new(ResponseError::UnknownServerError, e.to_string()));
            }
        }
    }
    errors
}

pub(crate) fn describe_topic(version: i16, t: &TopicImage, broker: &Broker) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|(&index, p)| {
            let described = MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect());
            if p.leader == broker.config.node_id && broker.replicas.is_offline(&t.name, index) {
                // The leader's log could not be opened: no replica serves it, so clients see no leader (and do not
                // send it produce or fetch requests) and a retriable storage error, and refresh their metadata.
                described
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_leader_id(BrokerId(-1))
                    .with_offline_replicas(vec![BrokerId(p.leader)])
            } else {
                described
            }
        })
        .collect();
    let mut topic = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.topic_id)
        .with_is_internal(t.is_internal())
        .with_partitions(partitions);
    if version < 8 {
        topic.topic_authorized_operations = i32::MIN;
    }
    topic
}
