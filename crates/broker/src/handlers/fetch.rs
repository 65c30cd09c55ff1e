//! Fetch: stored batches returned as they are (below the high watermark, or below the last stable offset with
//! isolation_level=1, read_committed, which also gets the aborted transactions of the range it reads), with long-polling on `max.wait.ms` / `min.bytes`, the request's
//! `max.bytes` and per-partition limits (KIP-74: the first batch is returned whole even if larger).
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells clients to keep sending
//! full fetch requests, as Kafka does when its session cache is full.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::dispatch::ConnectionContext;
use crate::errors::log_error_code;
use crate::partition::Partition;

struct Wanted {
    topic: usize,
    index: i32,
    partition: Result<Arc<Partition>, ResponseError>,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
}

pub async fn handle(ctx: &Arc<ConnectionContext>, version: i16, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 {
        return FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    if req.session_epoch > 0 {
        return FetchResponse::default().with_error_code(ResponseError::InvalidFetchSessionEpoch.code());
    }
    let image = ctx.broker.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (ti, t) in req.topics.into_iter().enumerate() {
        // v13+ names topics by id (KIP-516).
        let (name, id, unknown) = if version >= 13 {
            (image.topic_by_id(&t.topic_id).map(|i| i.name.clone()), t.topic_id, ResponseError::UnknownTopicId)
        } else {
            let n = t.topic.0.to_string();
            let id = image.topic(&n).map(|i| i.topic_id).unwrap_or(Uuid::nil());
            (Some(n), id, ResponseError::UnknownTopicOrPartition)
        };
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name.clone().unwrap_or_default())))
                .with_topic_id(id),
        );
        for p in t.partitions {
            let partition = name.as_deref().and_then(|n| ctx.broker.replicas.get(n, p.partition)).ok_or_else(|| {
                match name.as_deref() {
                    Some(n) => ctx.broker.replicas.not_served_error(n, p.partition),
                    None => unknown,
                }
            });
            wanted.push(Wanted {
                topic: ti,
                index: p.partition,
                partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    let wanted = Arc::new(wanted);
    // As Kafka's: the broker's fetch.max.bytes caps what one response reads into memory.
    let max_bytes = (req.max_bytes.max(0) as usize).min(ctx.broker.config.fetch_max_bytes);
    let min_bytes = req.min_bytes.max(0) as usize;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let read_committed = req.isolation_level == 1;

    let results = loop {
        // Subscribe before reading, so an append between the read and the wait is not missed.
        let mut watchers: Vec<_> =
            wanted.iter().filter_map(|w| w.partition.as_ref().ok().map(|p| p.subscribe_end_offset())).collect();
        // Tail reads (consumers keeping up) hit the page cache and the in-memory index of the active segment:
        // read on this runtime thread. That saves a thread hop per fetch, and the read buffers no longer come from
        // the blocking threads' allocator arenas (the broker's RSS after scripts/bench was lower). They read only
        // what is in the page cache, though: if a byte would have to come from the disk, the whole read is redone
        // on the blocking pool, as reads of older segments always are, so no runtime thread waits for the disk.
        let inline = if wanted.iter().all(reads_tail) {
            strom_log::without_blocking(|| read_all(&wanted, max_bytes, read_committed, true))
        } else {
            None
        };
        let results = match inline {
            Some(r) => r,
            None => {
                let w = wanted.clone();
                match tokio::task::spawn_blocking(move || read_all(&w, max_bytes, read_committed, false)).await {
                    Ok(Some(r)) => r,
                    Ok(None) | Err(_) => {
                        tracing::error!("fetch read task failed");
                        return FetchResponse::default().with_error_code(ResponseError::UnknownServerError.code());
                    }
                }
            }
        };
        let bytes: usize = results.iter().map(|r| r.records.as_ref().map_or(0, |b| b.len())).sum();
        let has_error = results.iter().any(|r| r.error_code != 0);
        if bytes >= min_bytes.max(1) || has_error || tokio::time::Instant::now() >= deadline || watchers.is_empty() {
            break results;
        }
        let changes = watchers.iter_mut().map(|rx| Box::pin(rx.changed()));
        if tokio::time::timeout_at(deadline, select_all(changes)).await.is_err() {
            // Timed out with less than min.bytes: answer with what there is.
            break results;
        }
    };
    for (w, r) in wanted.iter().zip(results) {
        topics[w.topic].partitions.push(r);
    }
    FetchResponse::default().with_responses(topics).with_session_id(0)
}

/// The partition's read starts in its active segment (or there is nothing to read: an unresolved partition).
fn reads_tail(w: &Wanted) -> bool {
    match &w.partition {
        Ok(p) => w.fetch_offset >= p.log().active_segment_base_offset(),
        Err(_) => true,
    }
}

/// Reads every partition once, sharing the request's byte budget in order. With `page_cache_only` (inside
/// `strom_log::without_blocking`), None as soon as a read would wait for the disk.
fn read_all(
    wanted: &[Wanted],
    max_bytes: usize,
    read_committed: bool,
    page_cache_only: bool,
) -> Option<Vec<PartitionData>> {
    let mut remaining = max_bytes;
    let mut any_data = false;
    wanted
        .iter()
        .map(|w| {
            let base = PartitionData::default()
                .with_partition_index(w.index)
                .with_aborted_transactions(if read_committed { Some(Vec::new()) } else { None })
                .with_records(Some(Bytes::new()));
            // As Kafka's ReplicaManager: an error answer carries unknown (-1) offsets. Partitions the request could
            // not resolve get an empty aborted list, read errors the isolation level's usual one.
            let failed = |e: ResponseError, resolved: bool| {
                PartitionData::default()
                    .with_partition_index(w.index)
                    .with_error_code(e.code())
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_aborted_transactions(if resolved && !read_committed { None } else { Some(Vec::new()) })
                    .with_records(Some(Bytes::new()))
            };
            let p = match &w.partition {
                Ok(p) => p,
                Err(e) => return Some(failed(*e, false)),
            };
            let hw = p.high_watermark();
            let base = base
                .with_high_watermark(hw)
                .with_last_stable_offset(p.last_stable_offset())
                .with_log_start_offset(p.log_start_offset());
            if let Some(e) = crate::handlers::leader_epoch_error(w.current_leader_epoch, p.leader_epoch()) {
                return Some(failed(e, true));
            }
            let limit = w.max_bytes.min(remaining);
            // KIP-74: the first batch of the first partition with data comes back whole, so progress is always made.
            // read_committed (isolation level 1) stops at the LSO and names the aborted transactions to skip.
            let read = if read_committed {
                p.read_committed(w.fetch_offset, limit, !any_data).map(|(r, aborted)| (r, Some(aborted)))
            } else {
                p.read(w.fetch_offset, limit, !any_data).map(|r| (r, None))
            };
            match read {
                Ok((r, aborted)) => {
                    remaining = remaining.saturating_sub(r.records.len());
                    any_data |= !r.records.is_empty();
                    let base = match aborted {
                        Some(a) => base.with_aborted_transactions(Some(
                            a.into_iter()
                                .map(|t| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(t.producer_id))
                                        .with_first_offset(t.first_offset)
                                })
                                .collect(),
                        )),
                        None => base,
                    };
                    Some(base.with_records(Some(r.records)))
                }
                Err(e) if page_cache_only && strom_log::would_block(&e) => None,
                Err(e) => Some(failed(log_error_code(&e), true)),
            }
        })
        .collect()
}
