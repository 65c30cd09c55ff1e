//! WriteTxnMarkers (v1, the only version Kafka 4.x serves): the transaction coordinator's request to end a
//! transaction on the partitions of this broker. Each marker is written by `txn_markers::write_txn_markers` and
//! answered per partition once durable. Without an authorizer no CLUSTER_ACTION check applies, as in Kafka.

use std::sync::Arc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::dispatch::ConnectionContext;
use crate::txn_markers::{write_txn_markers, TransactionResult};

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    _version: i16,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    if req.markers.iter().any(|m| m.producer_id.0 < 0 || m.producer_epoch < 0) {
        // Kafka cannot build a marker batch without a producer id and epoch: the request fails as a whole with
        // UNKNOWN_SERVER_ERROR on every partition (its generic error response), and nothing is written.
        return failed(&req, ResponseError::UnknownServerError);
    }
    // Markers of one request are independent (different producers): write them concurrently.
    let tasks = req.markers.into_iter().map(|m| {
        let broker = ctx.broker.clone();
        async move {
            let partitions: Vec<(String, i32)> = m
                .topics
                .iter()
                .flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.0.to_string(), *p)))
                .collect();
            let results = write_txn_markers(
                &broker,
                m.producer_id.0,
                m.producer_epoch,
                m.coordinator_epoch,
                TransactionResult::from_wire(m.transaction_result),
                partitions,
            )
            .await;
            // Answer in the request's topic order.
            let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
            for ((topic, partition), r) in results {
                let p = WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(partition)
                    .with_error_code(r.err().map_or(0, |e| e.code()));
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        WritableTxnMarkerTopicResult::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics)
        }
    });
    let markers = futures_util::future::join_all(tasks).await;
    WriteTxnMarkersResponse::default().with_markers(markers)
}

fn failed(req: &WriteTxnMarkersRequest, e: ResponseError) -> WriteTxnMarkersResponse {
    WriteTxnMarkersResponse::default().with_markers(
        req.markers
            .iter()
            .map(|m| {
                WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(
                    m.topics
                        .iter()
                        .map(|t| {
                            WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|p| {
                                        WritableTxnMarkerPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_error_code(e.code())
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}
