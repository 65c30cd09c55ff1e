//! TEMPORARY (txn-coord branch only): a minimal marker writer with the signature agreed with the txn-data branch,
//! so the transaction coordinator can be built and tested before that branch lands. It appends a real control batch
//! (Kafka's EndTransactionMarker) to each partition and waits until it is durable, but none of the partition-side
//! bookkeeping (LSO, aborted index, producer state checks) that txn-data implements. Replaced by txn-data's
//! `txn_markers.rs` on merge.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::clock::now_ms;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionResult {
    Abort,
    Commit,
}

pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    result: TransactionResult,
    partitions: &[(String, i32)],
) -> Vec<((String, i32), Option<ResponseError>)> {
    let mut out = Vec::new();
    for (topic, index) in partitions {
        let Some(p) = broker.replicas.get(topic, *index) else {
            out.push(((topic.clone(), *index), Some(ResponseError::UnknownTopicOrPartition)));
            continue;
        };
        let mut key = BytesMut::new();
        key.put_i16(0);
        key.put_i16(if result == TransactionResult::Commit { 1 } else { 0 });
        let mut value = BytesMut::new();
        value.put_i16(0);
        value.put_i32(coordinator_epoch);
        let rec = Record {
            transactional: true,
            control: true,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: now_ms(),
            key: Some(key.freeze()),
            value: Some(value.freeze()),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        let encoded = RecordEncodeOptions { version: 2, compression: Compression::None };
        if RecordBatchEncoder::encode(&mut buf, [rec].iter(), &encoded).is_err() {
            out.push(((topic.clone(), *index), Some(ResponseError::UnknownServerError)));
            continue;
        }
        let p2 = p.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let mut buf = buf.to_vec();
            let headers = strom_log::validate_batches(&buf, u32::MAX).map_err(|e| crate::errors::log_error_code(&e))?;
            p2.append(&mut buf, headers).map_err(|e| crate::errors::log_error_code(&e))
        })
        .await;
        match appended {
            Ok(Ok(info)) => {
                p.wait_durable(info.last_offset + 1).await;
                out.push(((topic.clone(), *index), None));
            }
            Ok(Err(e)) => out.push(((topic.clone(), *index), Some(e))),
            Err(_) => out.push(((topic.clone(), *index), Some(ResponseError::UnknownServerError))),
        }
    }
    out
}
