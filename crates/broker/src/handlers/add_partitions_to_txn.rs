//! AddPartitionsToTxn, as Kafka's KafkaApis.handleAddPartitionsToTxnRequest: v0-v3 from producers (one transaction),
//! v4+ batched by transaction, which brokers send, also with `verify_only` to check partitions before a transactional
//! write (KIP-890). A partition of an unknown topic fails the whole transaction's request: it gets
//! UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::coordinator::txn::metadata::TopicPartition;
use crate::dispatch::ConnectionContext;

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if version < 4 {
        let result = add_one(
            ctx,
            version,
            &req.v3_and_below_transactional_id,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            false,
            &req.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(result);
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let topics =
            add_one(ctx, version, &t.transactional_id, t.producer_id.0, t.producer_epoch, t.verify_only, &t.topics)
                .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

async fn add_one(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    transactional_id: &TransactionalId,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let partitions: Vec<TopicPartition> =
        topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect();
    let image = ctx.broker.image();
    let unknown: BTreeSet<&TopicPartition> =
        partitions.iter().filter(|(t, p)| image.topic(t).is_none_or(|ti| !ti.partitions.contains_key(p))).collect();
    let errors: Vec<(TopicPartition, Option<ResponseError>)> = if !unknown.is_empty() {
        partitions
            .iter()
            .map(|tp| {
                let e = if unknown.contains(tp) {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::OperationNotAttempted
                };
                (tp.clone(), Some(e))
            })
            .collect()
    } else {
        let broker = &ctx.broker;
        let id = transactional_id.0.as_str();
        if verify_only {
            broker.txns.verify_partitions(broker, id, producer_id, producer_epoch, partitions).await
        } else {
            // v5 comes from brokers adding partitions implicitly for transactions v2 clients.
            let tv = if version >= 5 { 2 } else { 0 };
            let set: BTreeSet<TopicPartition> = partitions.iter().cloned().collect();
            let mut e = broker.txns.add_partitions(broker, id, producer_id, producer_epoch, set, tv, true).await;
            if e == Some(ResponseError::ProducerFenced) && version < 2 {
                // PRODUCER_FENCED exists from v2 (KIP-588); older clients know it as INVALID_PRODUCER_EPOCH.
                e = Some(ResponseError::InvalidProducerEpoch);
            }
            partitions.into_iter().map(|p| (p, e)).collect()
        }
    };
    group_by_topic(errors)
}

fn group_by_topic(errors: Vec<(TopicPartition, Option<ResponseError>)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, p), e) in errors {
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(e.map_or(0, |e| e.code()));
        match out.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    out
}
