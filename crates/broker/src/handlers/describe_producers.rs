//! DescribeProducers (KIP-664): the producers with state on each asked-for partition, with the start offset of any
//! open transaction. This is how `kafka-transactions.sh describe-producers` and `find-hanging` spot a transaction
//! that holds back the last stable offset.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;
use crate::topic_name;

pub fn handle(ctx: &Arc<ConnectionContext>, _version: i16, req: DescribeProducersRequest) -> DescribeProducersResponse {
    let broker = &ctx.broker;
    let image = broker.image();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.as_str();
            // As Kafka's KafkaApis: a topic-level error applies to every partition asked for.
            let topic_error = match topic_name::validate(name) {
                Err(why) => Some((ResponseError::InvalidTopicException, Some(why))),
                // Kafka's ApiError carries the error's default message here.
                Ok(()) if image.topic(name).is_none() => Some((
                    ResponseError::UnknownTopicOrPartition,
                    Some("This server does not host this topic-partition.".to_string()),
                )),
                Ok(()) => None,
            };
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let resp = PartitionResponse::default().with_partition_index(index);
                    if let Some((error, message)) = &topic_error {
                        return resp
                            .with_error_code(error.code())
                            .with_error_message(message.clone().map(StrBytes::from_string));
                    }
                    match broker.replicas.get(name, index) {
                        None => resp.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                        Some(partition) => resp.with_active_producers(
                            partition
                                .log()
                                .active_producers()
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(p.producer_epoch.into())
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(p.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
