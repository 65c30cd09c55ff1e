//! Request dispatch: API key and version → handler. The table of served APIs lives here, and ApiVersions is
//! generated from it, so the broker never advertises a version it does not handle.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::handlers;

/// Every API the broker serves, with the versions it serves. The floors are Kafka 4.x's; the ceilings are what
/// the handlers fill in correctly (the kafka-protocol crate is generated from Kafka 4.1's specs).
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 2),
    // Group coordinator (coordinator/group): classic protocol, offsets, admin, and KIP-848.
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    // Transaction coordinator (coordinator/txn).
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    // Transactions, data side: markers from the transaction coordinator, transactional offset commits.
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(k, _, _)| *k == key).map(|(_, min, max)| (*min, *max))
}

/// What a connection knows about itself; handlers get it with every request.
pub struct ConnectionContext {
    pub broker: Arc<Broker>,
    /// The advertised address of the listener this connection came in on (what Metadata returns).
    pub advertised: Arc<ListenerConfig>,
    pub peer: SocketAddr,
    /// Bytes of responses this connection may hold before they are written (`fetch.max.bytes`): a client that does
    /// not read its responses stops being read instead of filling the broker's memory.
    pub response_budget: Arc<Semaphore>,
}

impl ConnectionContext {
    pub fn new(broker: Arc<Broker>, advertised: Arc<ListenerConfig>, peer: SocketAddr) -> ConnectionContext {
        let response_budget = Arc::new(Semaphore::new(broker.config.fetch_max_bytes));
        ConnectionContext { broker, advertised, peer, response_budget }
    }
}

/// A response, ready now or computed by a task; `None` means no response on the wire (acks=0 produce).
pub enum Answer {
    Ready(Option<Bytes>),
    Deferred(JoinHandle<Option<Bytes>>),
}

pub struct Reply {
    pub answer: Answer,
    /// Room taken in the connection's response budget for an answer that may be large (a fetch's records), given
    /// back once the answer is written.
    pub budget: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("malformed request ({key:?} v{version}): {error}")]
    Malformed { key: ApiKey, version: i16, error: anyhow::Error },
    #[error("{0}")]
    Refused(String),
    #[error("cannot encode response to {key:?} v{version}: {error}")]
    Encode { key: ApiKey, version: i16, error: anyhow::Error },
}

/// Decodes the header, checks the version, runs the handler. Errors close the connection, as Kafka does for
/// requests it cannot parse. `held` (the request's share of the broker's request budget) is dropped once the
/// response is computed.
pub async fn dispatch<H: Send + 'static>(
    ctx: &Arc<ConnectionContext>,
    frame: Bytes,
    held: H,
) -> Result<Reply, DispatchError> {
    let mut peek = &frame[..];
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let key = ApiKey::try_from(raw_key).map_err(|_| DispatchError::UnknownApiKey(raw_key))?;
    let Some((min, max)) = supported_range(key) else {
        return Err(DispatchError::UnknownApiKey(raw_key));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer with v0 and UNSUPPORTED_VERSION so the client can retry with a version we know.
            let resp = handlers::api_versions::unsupported_version_response();
            return encode(key, 0, correlation_id, &resp)
                .map(|b| Reply { answer: Answer::Ready(Some(b)), budget: None });
        }
        return Err(DispatchError::UnsupportedVersion { key, version });
    }
    let mut body = frame.clone();
    let header = RequestHeader::decode(&mut body, key.request_header_version(version))
        .map_err(|error| DispatchError::Malformed { key, version, error })?;
    let client_id = header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    tracing::trace!(peer = %ctx.peer, ?key, version, correlation_id, client_id, "request");

    macro_rules! decode {
        ($t:ty) => {
            <$t>::decode(&mut body, version).map_err(|error| DispatchError::Malformed { key, version, error })?
        };
    }
    // Coordinator requests wait on their shard (a JoinGroup for the whole join phase), so they run as tasks and the
    // connection keeps reading; the writer still answers in request order. Kafka also processes a connection's
    // requests in order, so the next request is not dispatched before this one is in its shard's queue
    // (`deferred!`) or, for requests that talk to several shards or none, done (`deferred_whole!`).
    macro_rules! deferred_as {
        ($turn:expr, $t:ty, $handler:path $(, $extra:expr)?) => {{
            let req = decode!($t);
            let ctx = ctx.clone();
            let (turn, handed_off) = $turn;
            let task = tokio::spawn(TURN.scope(turn, async move {
                let resp = $handler(&ctx, version, $($extra,)? req).await;
                drop(held);
                encode_or_log(key, version, correlation_id, &resp)
            }));
            // An error means the task ended (or failed) without handing off: either way it is past its sends.
            let _ = handed_off.await;
            Answer::Deferred(task)
        }};
    }
    macro_rules! deferred {
        ($($args:tt)*) => { deferred_as!(Turn::at_send(), $($args)*) };
    }
    macro_rules! deferred_whole {
        ($($args:tt)*) => { deferred_as!(Turn::whole(), $($args)*) };
    }
    macro_rules! ready {
        ($resp:expr) => {
            Answer::Ready(Some(encode(key, version, correlation_id, &$resp)?))
        };
    }
    let mut budget = None;
    let answer = match key {
        ApiKey::ApiVersions => {
            let req = decode!(ApiVersionsRequest);
            ready!(handlers::api_versions::handle(ctx, version, req))
        }
        ApiKey::Metadata => {
            let req = decode!(MetadataRequest);
            ready!(handlers::metadata::handle(ctx, version, req).await)
        }
        ApiKey::Produce => {
            let req = decode!(ProduceRequest);
            match handlers::produce::handle(ctx, version, &client_id, req).await {
                Respond::Now(resp) => ready!(resp),
                Respond::Nothing => Answer::Ready(None),
                Respond::Close(reason) => return Err(DispatchError::Refused(reason)),
                Respond::Later(fut) => Answer::Deferred(tokio::spawn(async move {
                    let resp = fut.await;
                    drop(held);
                    encode_or_log(key, version, correlation_id, &resp)
                })),
            }
        }
        ApiKey::Fetch => {
            let req = decode!(FetchRequest);
            // The records are read into memory and stay there until written: take room for them first, so the
            // connection stops reading requests while its unwritten responses are at the budget.
            let want = (req.max_bytes.max(0) as usize).min(ctx.broker.config.fetch_max_bytes).max(1);
            let permit = ctx.response_budget.clone().acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX)).await;
            budget = permit.ok();
            let ctx = ctx.clone();
            Answer::Deferred(tokio::spawn(async move {
                let resp = handlers::fetch::handle(&ctx, version, req).await;
                drop(held);
                encode_or_log(key, version, correlation_id, &resp)
            }))
        }
        ApiKey::ListOffsets => {
            let req = decode!(ListOffsetsRequest);
            ready!(handlers::list_offsets::handle(ctx, version, req).await)
        }
        ApiKey::CreateTopics => {
            let req = decode!(CreateTopicsRequest);
            ready!(handlers::create_topics::handle(ctx, version, req).await)
        }
        ApiKey::DeleteTopics => {
            let req = decode!(DeleteTopicsRequest);
            ready!(handlers::delete_topics::handle(ctx, version, req).await)
        }
        ApiKey::CreatePartitions => {
            let req = decode!(CreatePartitionsRequest);
            ready!(handlers::create_partitions::handle(ctx, version, req).await)
        }
        ApiKey::DescribeConfigs => {
            let req = decode!(DescribeConfigsRequest);
            ready!(handlers::describe_configs::handle(ctx, version, req))
        }
        ApiKey::DescribeCluster => {
            let req = decode!(DescribeClusterRequest);
            ready!(handlers::describe_cluster::handle(ctx, version, req))
        }
        ApiKey::FindCoordinator => deferred_whole!(FindCoordinatorRequest, handlers::find_coordinator::handle),
        ApiKey::JoinGroup => deferred!(JoinGroupRequest, handlers::join_group::handle, client_id),
        ApiKey::SyncGroup => deferred!(SyncGroupRequest, handlers::sync_group::handle),
        ApiKey::Heartbeat => deferred!(HeartbeatRequest, handlers::heartbeat::handle),
        ApiKey::LeaveGroup => deferred!(LeaveGroupRequest, handlers::leave_group::handle),
        ApiKey::OffsetCommit => deferred!(OffsetCommitRequest, handlers::offset_commit::handle),
        ApiKey::OffsetFetch => deferred_whole!(OffsetFetchRequest, handlers::offset_fetch::handle),
        ApiKey::OffsetDelete => deferred!(OffsetDeleteRequest, handlers::offset_delete::handle),
        ApiKey::DescribeGroups => deferred_whole!(DescribeGroupsRequest, handlers::describe_groups::handle),
        ApiKey::ListGroups => deferred_whole!(ListGroupsRequest, handlers::list_groups::handle),
        ApiKey::DeleteGroups => deferred_whole!(DeleteGroupsRequest, handlers::delete_groups::handle),
        ApiKey::ConsumerGroupHeartbeat => {
            deferred!(ConsumerGroupHeartbeatRequest, handlers::consumer_group_heartbeat::handle, client_id)
        }
        ApiKey::ConsumerGroupDescribe => {
            deferred_whole!(ConsumerGroupDescribeRequest, handlers::consumer_group_describe::handle)
        }
        ApiKey::DeleteRecords => {
            let req = decode!(DeleteRecordsRequest);
            ready!(handlers::delete_records::handle(ctx, version, req).await)
        }
        ApiKey::AlterConfigs => {
            let req = decode!(AlterConfigsRequest);
            ready!(handlers::alter_configs::handle(ctx, version, req).await)
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = decode!(IncrementalAlterConfigsRequest);
            ready!(handlers::incremental_alter_configs::handle(ctx, version, req).await)
        }
        // A transactional id waits on its coordinator shard.
        ApiKey::InitProducerId => deferred!(InitProducerIdRequest, handlers::init_producer_id::handle),
        ApiKey::AddPartitionsToTxn => deferred!(AddPartitionsToTxnRequest, handlers::add_partitions_to_txn::handle),
        ApiKey::AddOffsetsToTxn => deferred!(AddOffsetsToTxnRequest, handlers::add_offsets_to_txn::handle),
        ApiKey::EndTxn => deferred!(EndTxnRequest, handlers::end_txn::handle),
        ApiKey::DescribeTransactions => {
            deferred_whole!(DescribeTransactionsRequest, handlers::describe_transactions::handle)
        }
        ApiKey::ListTransactions => deferred_whole!(ListTransactionsRequest, handlers::list_transactions::handle),
        ApiKey::WriteTxnMarkers => deferred_whole!(WriteTxnMarkersRequest, handlers::write_txn_markers::handle),
        ApiKey::TxnOffsetCommit => deferred_whole!(TxnOffsetCommitRequest, handlers::txn_offset_commit::handle),
        ApiKey::DescribeProducers => {
            let req = decode!(DescribeProducersRequest);
            ready!(handlers::describe_producers::handle(ctx, version, req))
        }
        _ => return Err(DispatchError::UnknownApiKey(raw_key)),
    };
    Ok(Reply { answer, budget })
}

tokio::task_local! {
    /// The connection's turn, held by the deferred request being dispatched.
    static TURN: Turn;
}

/// A connection dispatches its next request once the current one has handed off its turn: once its request is in
/// its coordinator shard's queue, so pipelined requests reach a shard in arrival order while their answers are
/// awaited concurrently. Dropped with the request's task, which hands off too.
struct Turn {
    next: Cell<Option<oneshot::Sender<()>>>,
    /// Held until the request is done: it sends to several shards (or to none), and the next request must not
    /// overtake any of its sends.
    whole: bool,
}

impl Turn {
    fn at_send() -> (Turn, oneshot::Receiver<()>) {
        Self::new(false)
    }

    fn whole() -> (Turn, oneshot::Receiver<()>) {
        Self::new(true)
    }

    fn new(whole: bool) -> (Turn, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Turn { next: Cell::new(Some(tx)), whole }, rx)
    }
}

/// Called by a coordinator once a request is in its shard's queue: the connection may dispatch its next request.
/// Outside a deferred request (timers, the produce path) it does nothing.
pub fn handed_off() {
    let _ = TURN.try_with(|t| {
        if !t.whole {
            if let Some(tx) = t.next.take() {
                let _ = tx.send(());
            }
        }
    });
}

/// A handler's answer when part of the work happens after the request is read (acks=all waits for the fsync).
pub enum Respond<T> {
    Now(T),
    Later(futures_util::future::BoxFuture<'static, T>),
    /// acks=0: Kafka sends nothing back.
    Nothing,
    /// acks=0 with an error: no response, but the connection is closed so the client notices.
    Close(String),
}

fn encode<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, resp: &R) -> Result<Bytes, DispatchError> {
    let header_version = key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let map = |error| DispatchError::Encode { key, version, error };
    let size = header.compute_size(header_version).map_err(map)? + resp.compute_size(version).map_err(map)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(map)?;
    resp.encode(&mut buf, version).map_err(map)?;
    Ok(buf.freeze())
}

/// Deferred replies cannot return an error to the reader; an encoding failure is a bug, logged loudly, and the
/// connection is closed by the writer when it sees `None` for a request that needed an answer.
fn encode_or_log<R: Encodable>(key: ApiKey, version: i16, correlation_id: i32, resp: &R) -> Option<Bytes> {
    match encode(key, version, correlation_id, resp) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "response encoding failed");
            None
        }
    }
}
