//! Produce: validate and append each partition's batches, then answer by `acks`: 0 never, 1 once written to the
//! OS, all once fsynced (group commit in the partition's flusher).

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_log::{validate_batches, BatchHeader, LogError};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::dispatch::{ConnectionContext, Respond};
use crate::errors::log_error_code;
use crate::partition::Partition;
use crate::record_validation;
use crate::topic_name;

struct Work {
    topic: usize,
    index: i32,
    partition: Option<Arc<Partition>>,
    /// This broker should host the partition but its log is offline.
    offline: bool,
    /// The partition belongs to an internal topic this client may not write.
    internal: bool,
    records: Option<bytes::Bytes>,
}

struct Outcome {
    topic: usize,
    response: PartitionProduceResponse,
    /// For acks=all: wait until this offset (exclusive) is durable.
    durable_at: Option<(Arc<Partition>, i64)>,
}

pub async fn handle(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    client_id: &str,
    req: ProduceRequest,
) -> Respond<ProduceResponse> {
    let acks = req.acks;
    // Internal topics are written by their coordinators only (Kafka: "Cannot append to internal topic"), except by
    // Kafka's admin client id.
    let internal_allowed = client_id == topic_name::ADMIN_CLIENT_ID;
    let image = ctx.broker.image();
    let mut topics: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut work = Vec::new();
    for (ti, t) in req.topic_data.into_iter().enumerate() {
        // v13 names topics by id (KIP-516); older versions by name.
        let (name, id) = if version >= 13 {
            (image.topic_by_id(&t.topic_id).map(|i| i.name.clone()), t.topic_id)
        } else {
            let n = t.name.0.to_string();
            let id = image.topic(&n).map(|i| i.topic_id).unwrap_or(Uuid::nil());
            (Some(n), id)
        };
        topics.push(
            TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_string(name.clone().unwrap_or_default())))
                .with_topic_id(id),
        );
        let internal = !internal_allowed && name.as_deref().is_some_and(topic_name::is_internal);
        for p in t.partition_data {
            let partition = name.as_deref().and_then(|n| ctx.broker.replicas.get(n, p.index));
            let offline =
                partition.is_none() && name.as_deref().is_some_and(|n| ctx.broker.replicas.is_offline(n, p.index));
            work.push(Work { topic: ti, index: p.index, partition, offline, internal, records: p.records });
        }
    }
    let unknown = if version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
    let transactional_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
    // `_guards` keep the verified producers' markers out until these batches are appended.
    let (refused, _guards) = verify_transactional_partitions(ctx, version, transactional_id.as_deref(), &work).await;
    // The common case (no transactional batch refused) keeps `work` as it is: no copy on the produce path.
    let (work, mut refused_outcomes): (Vec<Work>, Vec<Outcome>) = if refused.is_empty() {
        (work, Vec::new())
    } else {
        let mut kept = Vec::with_capacity(work.len());
        let mut out = Vec::new();
        for (i, w) in work.into_iter().enumerate() {
            match refused.iter().find(|(j, _)| *j == i) {
                Some((_, e)) => {
                    out.push(Outcome { topic: w.topic, response: error_response(w.index, *e, None), durable_at: None })
                }
                None => kept.push(w),
            }
        }
        (kept, out)
    };

    let mut outcomes: Vec<Outcome> = if !(-1..=1).contains(&acks) {
        work.into_iter()
            .map(|w| Outcome {
                topic: w.topic,
                response: error_response(w.index, ResponseError::InvalidRequiredAcks, None),
                durable_at: None,
            })
            .collect()
    } else {
        let appended = tokio::task::spawn_blocking(move || {
            work.into_iter().map(|w| append_one(w, acks, unknown)).collect::<Vec<_>>()
        })
        .await;
        match appended {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "produce task failed");
                return Respond::Now(ProduceResponse::default().with_responses(topics));
            }
        }
    };

    outcomes.append(&mut refused_outcomes);

    if acks == 0 {
        // Kafka sends no response for acks=0; on an error it closes the connection, so the client notices and
        // refreshes its metadata.
        if let Some(o) = outcomes.iter().find(|o| o.response.error_code != 0) {
            return Respond::Close(format!(
                "acks=0 produce to partition {} failed with error code {}",
                o.response.index, o.response.error_code
            ));
        }
        return Respond::Nothing;
    }

    let needs_wait = outcomes.iter().any(|o| o.durable_at.is_some());
    if !needs_wait {
        return Respond::Now(assemble(topics, outcomes.into_iter().map(|o| (o.topic, o.response)).collect()));
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    Respond::Later(Box::pin(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut done = Vec::with_capacity(outcomes.len());
        for mut o in outcomes {
            if let Some((p, end)) = o.durable_at.take() {
                if tokio::time::timeout_at(deadline, p.wait_durable(end)).await.is_err() {
                    o.response.error_code = ResponseError::RequestTimedOut.code();
                    o.response.error_message = Some(StrBytes::from_static_str("timed out waiting for the fsync"));
                }
            }
            done.push((o.topic, o.response));
        }
        assemble(topics, done)
    }))
}

/// KIP-890: before a transactional batch is appended, the transaction coordinator confirms that the partition is in
/// the producer's ongoing transaction (Produce v12+ under transactions v2: adds it), so a late or retried write
/// cannot land outside its transaction or in the next one. Returns the work items (indexes into `work`) to refuse,
/// with the error Kafka's AddPartitionsToTxnManager answers: INVALID_PRODUCER_EPOCH for a fenced producer,
/// TRANSACTION_ABORTABLE (v11+) or INVALID_TXN_STATE for a partition not in the transaction, NOT_ENOUGH_REPLICAS
/// while the coordinator is unavailable (producers retry it). The guards returned must be held until the batches
/// are appended (see `TransactionCoordinator::guard_append`).
async fn verify_transactional_partitions(
    ctx: &Arc<ConnectionContext>,
    version: i16,
    transactional_id: Option<&str>,
    work: &[Work],
) -> (Vec<(usize, ResponseError)>, Vec<crate::coordinator::txn::AppendGuard>) {
    let transactional: Vec<(usize, i64, i16)> = work
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let h = BatchHeader::parse(w.records.as_deref()?).ok()?;
            (h.is_transactional() && w.partition.is_some()).then_some((i, h.producer_id, h.producer_epoch))
        })
        .collect();
    if transactional.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let Some(transactional_id) = transactional_id else {
        // Kafka: transactional records need a transactional id the client may write for.
        let refused =
            transactional.iter().map(|(i, _, _)| (*i, ResponseError::TransactionalIdAuthorizationFailed)).collect();
        return (refused, Vec::new());
    };
    let broker = &ctx.broker;
    let add = version >= 12 && crate::coordinator::txn::TRANSACTION_VERSION >= 2;
    if !add && !broker.txns.partition_verification() {
        return (Vec::new(), Vec::new());
    }
    // One producer per request in practice; group by (id, epoch) all the same.
    let mut by_producer: std::collections::BTreeMap<(i64, i16), Vec<usize>> = std::collections::BTreeMap::new();
    for (i, pid, epoch) in &transactional {
        by_producer.entry((*pid, *epoch)).or_default().push(*i);
    }
    // `transactional` holds only items with a partition, so each list of partitions lines up with its items.
    let checks: Vec<(i64, i16, Vec<crate::coordinator::txn::metadata::TopicPartition>)> = by_producer
        .iter()
        .map(|((pid, epoch), items)| {
            let partitions =
                items.iter().filter_map(|i| work[*i].partition.as_ref().map(|p| (p.topic.clone(), p.index))).collect();
            (*pid, *epoch, partitions)
        })
        .collect();
    let (results, guards) = broker.txns.verify_for_append(broker, transactional_id, &checks, add).await;
    let mut refused = Vec::new();
    for ((_, items), result) in by_producer.iter().zip(results) {
        for (i, (_, e)) in items.iter().zip(result) {
            if let Some(e) = e {
                refused.push((*i, crate::coordinator::txn::produce_error(e, version >= 11)));
            }
        }
    }
    (refused, guards)
}

fn assemble(
    mut topics: Vec<TopicProduceResponse>,
    partitions: Vec<(usize, PartitionProduceResponse)>,
) -> ProduceResponse {
    for (t, p) in partitions {
        topics[t].partition_responses.push(p);
    }
    ProduceResponse::default().with_responses(topics)
}

fn error_response(index: i32, error: ResponseError, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Blocking: validates and appends one partition's record set.
fn append_one(w: Work, acks: i16, unknown: ResponseError) -> Outcome {
    let Some(partition) = w.partition.clone() else {
        let error = if w.offline { ResponseError::KafkaStorageError } else { unknown };
        return Outcome { topic: w.topic, response: error_response(w.index, error, None), durable_at: None };
    };
    let fail = |e: ResponseError, m: Option<String>| Outcome {
        topic: w.topic,
        response: error_response(w.index, e, m),
        durable_at: None,
    };
    if w.internal {
        return fail(ResponseError::InvalidTopicException, None);
    }
    let Some(records) = w.records.as_ref().filter(|r| !r.is_empty()) else {
        return fail(ResponseError::InvalidRecord, Some("produce request has no records".into()));
    };
    let config = partition.config();
    if acks == -1 && config.min_insync_replicas > 1 {
        // One replica is all this broker has.
        return fail(
            ResponseError::NotEnoughReplicas,
            Some(format!(
                "min.insync.replicas={} but the in-sync replica set has 1 member",
                config.min_insync_replicas
            )),
        );
    }
    let headers = match validate_batches(records, config.log.max_message_bytes) {
        Ok(h) => h,
        Err(e) => return fail(log_error_code(&e), Some(e.to_string())),
    };
    if let Err((e, m)) = check_producer(&headers) {
        // Kafka answers these from the log's append path, which reports the log start offset.
        let mut out = fail(e, Some(m));
        out.response.log_start_offset = partition.log_start_offset();
        return out;
    }
    if let Err(r) = record_validation::validate(records, &headers, &config, now_ms()) {
        // Record-level rejections carry the partition's log start offset, as Kafka's do.
        let mut out = fail(r.error, Some(r.message));
        out.response.log_start_offset = partition.log_start_offset();
        out.response.record_errors = r
            .record_errors
            .into_iter()
            .map(|(i, m)| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(i)
                    .with_batch_index_error_message(Some(StrBytes::from_string(m)))
            })
            .collect();
        return out;
    }
    let mut buf = records.to_vec();
    match partition.append(&mut buf, headers) {
        Ok(info) => Outcome {
            topic: w.topic,
            response: PartitionProduceResponse::default()
                .with_index(w.index)
                .with_base_offset(info.first_offset)
                .with_log_append_time_ms(info.log_append_time)
                .with_log_start_offset(info.log_start_offset),
            durable_at: (acks == -1).then(|| (partition.clone(), info.last_offset + 1)),
        },
        Err(e) => {
            if matches!(e, LogError::Io(_)) {
                tracing::error!(topic = %partition.topic, partition = w.index, error = %e, "append failed");
            }
            let mut out = fail(log_error_code(&e), Some(e.to_string()));
            if matches!(e, LogError::OutOfOrderSequence(_) | LogError::InvalidProducerEpoch(_)) {
                // Kafka's ReplicaManager reports the log start offset with producer-state errors.
                out.response.log_start_offset = partition.log_start_offset();
            }
            out
        }
    }
}

/// What can be refused before the log looks at the batch: an idempotent or transactional batch without a sequence
/// (Kafka's LogValidator: INVALID_RECORD), and control batches, which clients never produce. Sequence, epoch and
/// transaction-state checks run in the log, under its append lock.
fn check_producer(headers: &[BatchHeader]) -> Result<(), (ResponseError, String)> {
    for h in headers {
        if h.producer_id >= 0 && h.base_sequence < 0 {
            return Err((
                ResponseError::InvalidRecord,
                format!(
                    "Invalid sequence number {} in record batch with producerId {}",
                    h.base_sequence, h.producer_id
                ),
            ));
        }
        if h.is_control() {
            return Err((ResponseError::InvalidRecord, "clients may not produce control batches".into()));
        }
    }
    Ok(())
}
